"""Prefect 3's small API in flowbook: tags, annotations, exponential_backoff, custom state
names, runtime.deployment and the future names, as Prefect's documentation describes them.

Each test names the page of Prefect's documentation (in the PrefectHQ/prefect repository)
whose behaviour it checks.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import pytest
import sqlalchemy as sa

import flowbook
import flowbook.runs
from flowbook import flow, tags, task
from flowbook.exceptions import UpstreamTaskError
from flowbook.futures import FutureList, PrefectFuture, PrefectFutureList, TaskRunFuture
from flowbook.runtime import deployment
from flowbook.runtime import task_run as runtime_task_run
from flowbook.states import Cancelled, Completed, Crashed, Failed, Running, StateType
from flowbook.store import get_store, schema
from flowbook.tasks import exponential_backoff
from flowbook.utilities.annotations import allow_failure, opaque, quote, unmapped

# -- tags --------------------------------------------------------------------------------------


@task
def _tagged() -> tuple[str, ...]:
    return tuple(runtime_task_run.tags)


def _stored_tags(table: sa.Table, run_id: str) -> list[str]:
    store = get_store()
    assert store is not None
    store.flush()
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(table.c.tags).where(table.c.id == run_id)).one()
    return sorted(json.loads(row.tags or "[]"))


def test_tags_apply_to_task_runs_inside_and_nest() -> None:
    # docs/v3/api-ref/python/prefect-context.mdx (tags: "Run a task with tags", "Run a task
    # with nested tag contexts")
    @flow
    def my_flow() -> list[tuple[str, ...]]:
        seen = []
        with tags("a", "b"):
            seen.append(_tagged())
            with tags("c", "d"):
                seen.append(_tagged())
            seen.append(_tagged())
        seen.append(_tagged())
        return seen

    assert my_flow() == [("a", "b"), ("a", "b", "c", "d"), ("a", "b"), ()]


def test_tags_apply_to_flow_runs_and_are_stored() -> None:
    # docs/v3/api-ref/python/prefect-context.mdx ("Run a flow with tags");
    # docs/v3/examples/hello-world.mdx (with tags("test"): hello() tags the flow run)
    @flow
    def hello() -> str:
        return flowbook.runtime.flow_run.id  # type: ignore[no-any-return]

    with tags("test"):
        state = hello(return_state=True)
    run_id = state.result()
    assert _stored_tags(schema.flow_runs, run_id) == ["test"]
    assert flowbook.runs.get(run_id).tags == ["test"]
    # outside the block the flow run has none
    assert _stored_tags(schema.flow_runs, hello()) == []


def test_tags_combine_with_the_tasks_own_and_are_stored() -> None:
    # docs/v3/api-ref/python/prefect-context.mdx ("Tags are always combined with any existing
    # tags")
    @task(tags=["own"])
    def own() -> str:
        return flowbook.runtime.task_run.id  # type: ignore[no-any-return]

    @flow
    def my_flow() -> str:
        with tags("ctx"):
            return own()

    assert _stored_tags(schema.task_runs, my_flow()) == ["ctx", "own"]


def test_tags_yields_the_tags_in_force_and_reaches_submitted_runs() -> None:
    # docs/v3/api-ref/python/prefect-context.mdx ("Yields: The current set of tags")
    @flow
    def my_flow() -> tuple[set[str], tuple[str, ...], tuple[str, ...]]:
        with tags("a"), tags("b") as current:
            submitted = _tagged.submit()
        return current, submitted.result(), _tagged()

    current, submitted, after = my_flow()
    assert current == {"a", "b"}
    assert submitted == ("a", "b")
    assert after == ()


def test_tags_across_threads_do_not_leak() -> None:
    # docs/v3/api-ref/python/prefect-context.mdx (tags apply to runs created inside the block)
    inside = threading.Event()
    leave = threading.Event()
    seen: list[tuple[str, ...]] = []

    def other_thread() -> None:
        with tags("elsewhere"):
            inside.set()
            leave.wait(5)

    thread = threading.Thread(target=other_thread)
    thread.start()
    assert inside.wait(5)
    try:

        @flow
        def plain() -> None:
            seen.append(_tagged())

        plain()
    finally:
        leave.set()
        thread.join()
    assert seen == [()]


def test_tags_refuses_a_tag_that_is_not_a_string() -> None:
    with (
        pytest.raises(TypeError, match=r"each tag must be a string; got 3 of type int"),
        tags("a", 3),  # type: ignore[arg-type]
    ):
        pass  # pragma: no cover


# -- allow_failure -----------------------------------------------------------------------------


@task
def _boom() -> int:
    raise ValueError("upstream broke")


@task
def _double(x: int) -> int:
    return 2 * x


@task
def _echo(x: Any) -> Any:
    return x


def test_allow_failure_runs_downstream_with_the_upstream_exception() -> None:
    # docs/v3/api-ref/python/prefect-utilities-annotations.mdx (allow_failure: "If the input
    # is from a failed run, the attached exception will be passed to your function")
    @flow
    def my_flow() -> Any:
        failed = _boom.submit()
        return _echo.submit(allow_failure(failed)).result()

    value = my_flow()
    assert isinstance(value, ValueError)
    assert str(value) == "upstream broke"


def test_without_allow_failure_downstream_does_not_run() -> None:
    # docs/v3/api-ref/python/prefect-utilities-annotations.mdx (allow_failure: "Generally,
    # Prefect will not allow a downstream run to start if any of its inputs are failed")
    calls: list[Any] = []

    @task
    def record(x: Any) -> None:
        calls.append(x)

    seen: list[Any] = []

    @flow
    def my_flow() -> None:
        downstream = record.submit(_boom.submit())
        downstream.wait()
        seen.append(downstream.state)

    my_flow(return_state=True)
    (state,) = seen
    assert state.is_failed()
    assert isinstance(state.data, UpstreamTaskError)
    assert calls == []


def test_allow_failure_passes_a_completed_upstream_value() -> None:
    # docs/v3/api-ref/python/prefect-utilities-annotations.mdx (allow_failure wraps states or
    # futures; a completed one gives its value)
    @flow
    def my_flow() -> int:
        return _echo(allow_failure(_double.submit(4)))  # type: ignore[no-any-return]

    assert my_flow() == 8


def test_allow_failure_in_wait_for_and_nested_in_a_list() -> None:
    # docs/v3/api-ref/python/prefect-task_runners.mdx (map/submit take allow_failure inputs)
    @flow
    def my_flow() -> tuple[Any, Any]:
        failed = _boom.submit()
        after = _double.submit(1, wait_for=[allow_failure(failed)])
        nested = _echo.submit([allow_failure(failed), _double.submit(2)])
        return after.result(), nested.result()

    after, nested = my_flow()
    assert after == 2
    assert isinstance(nested[0], ValueError)
    assert nested[1] == 4


def test_allow_failure_does_not_excuse_the_same_future_given_plainly() -> None:
    # docs/v3/api-ref/python/prefect-utilities-annotations.mdx (only the wrapped input may
    # fail)
    @task
    def two(a: Any, b: Any) -> None:
        raise AssertionError("must not run")  # pragma: no cover

    seen: list[Any] = []

    @flow
    def my_flow() -> None:
        failed = _boom.submit()
        downstream = two.submit(allow_failure(failed), failed)
        downstream.wait()
        seen.append(downstream.state)

    my_flow(return_state=True)
    (state,) = seen
    assert state.is_failed()
    assert isinstance(state.data, UpstreamTaskError)


def test_allow_failure_does_not_start_after_a_cancelled_or_crashed_upstream() -> None:
    # prefect utilities/engine resolve_to_final_result: allow_failure admits failed upstream
    # runs only (docs/v3/api-ref/python/prefect-utilities-annotations.mdx: "can be failed")
    made: list[TaskRunFuture[Any]] = []

    @flow
    def finished() -> None:
        made.append(_double.submit(1))
        made[0].wait()

    finished()
    record = made[0].task_run
    for state in (Cancelled("stopped", RuntimeError("x")), Crashed("died", RuntimeError("x"))):
        future: TaskRunFuture[Any] = TaskRunFuture(record)
        future._set_final(state)

        seen: list[Any] = []

        @flow
        def my_flow() -> None:
            downstream = _echo.submit(allow_failure(future))  # noqa: B023
            downstream.wait()
            seen.append(downstream.state)  # noqa: B023

        my_flow(return_state=True)
        assert seen[0].is_failed(), state
        assert isinstance(seen[0].data, UpstreamTaskError)


# -- quote and opaque --------------------------------------------------------------------------


@dataclasses.dataclass
class _Pipeline:
    base_rate: float
    adjusted_rate: float = 0.0
    inits: int = 0

    def __post_init__(self) -> None:
        self.adjusted_rate = self.base_rate * 1.5
        self.inits += 1


def test_quote_passes_the_object_unchanged() -> None:
    # docs/v3/concepts/tasks.mdx ("Skip resolution with quote": "The task receives the
    # original object unchanged")
    pipeline = _Pipeline(base_rate=100.0)

    @flow
    def my_flow() -> Any:
        return _echo(quote(pipeline))

    received = my_flow()
    assert received is pipeline
    assert received.inits == 1
    assert received.adjusted_rate == 150.0


def test_quote_does_not_resolve_or_wait_for_futures_inside() -> None:
    # docs/v3/concepts/tasks.mdx (quote "disables automatic resolution of any PrefectFuture
    # ... nested inside the wrapped value, and disables task dependency tracking")
    release = threading.Event()

    @task
    def slow() -> int:
        release.wait(5)
        return 1

    @task
    def look(value: Any) -> tuple[bool, bool]:
        return isinstance(value[0], TaskRunFuture), value[0].done()

    @flow
    def my_flow() -> tuple[bool, bool]:
        pending = slow.submit()
        try:
            return look.submit(quote([pending])).result(timeout=5)
        finally:
            release.set()

    assert my_flow() == (True, False)


def test_quote_unquote_and_repr() -> None:
    # docs/v3/api-ref/python/prefect-utilities-annotations.mdx (quote.unquote, unwrap)
    wrapped = quote({"a": 1})
    assert wrapped.unquote() == {"a": 1}
    assert wrapped.unwrap() == {"a": 1}
    assert repr(wrapped) == "quote({'a': 1})"
    assert quote(1) == quote(1)
    assert quote(1) != allow_failure(1)


def test_opaque_resolves_the_future_without_rebuilding_its_result() -> None:
    # docs/v3/concepts/tasks.mdx ("Resolve without traversal using opaque")
    @task
    def build() -> _Pipeline:
        return _Pipeline(base_rate=100.0)

    @flow
    def my_flow() -> tuple[Any, Any]:
        future = build.submit()
        return future.result(), _echo.submit(opaque(future)).result()

    built, received = my_flow()
    assert received is built
    assert received.inits == 1


# -- unmapped ----------------------------------------------------------------------------------


def test_unmapped_is_flowbooks_and_gives_the_value_to_every_run() -> None:
    # docs/v3/api-ref/python/prefect-utilities-annotations.mdx (unmapped: "sent as-is to all
    # runs created during a mapping operation")
    assert unmapped is flowbook.unmapped

    @task
    def add(x: int, extra: list[int]) -> int:
        return x + len(extra)

    @flow
    def my_flow() -> list[int]:
        return add.map([1, 2], unmapped([7, 7, 7])).result()  # type: ignore[no-any-return]

    assert my_flow() == [4, 5]


# -- exponential_backoff -----------------------------------------------------------------------


def test_exponential_backoff_gives_delays_doubling_from_the_factor() -> None:
    # docs/v3/how-to-guides/workflows/retries.mdx ("use the exponential_backoff utility to
    # generate a list of retry delays"); docs/v3/api-ref/python/prefect-tasks.mdx
    @task(retries=4, retry_delay_seconds=exponential_backoff(backoff_factor=2))
    def melancholic() -> None:
        raise RuntimeError("again")  # pragma: no cover

    assert melancholic.retry_delay_seconds == [2, 4, 8, 16]
    assert exponential_backoff(backoff_factor=10)(3) == [10, 20, 40]
    assert len(exponential_backoff(1)(80)) == 50  # no more than 50 delays


def test_exponential_backoff_retries_the_task() -> None:
    # docs/v3/how-to-guides/workflows/retries.mdx (retries with exponential_backoff and
    # retry_jitter_factor)
    calls: list[int] = []

    @task(
        retries=2,
        retry_delay_seconds=exponential_backoff(backoff_factor=0.001),
        retry_jitter_factor=1,
    )
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("not yet")
        return "done"

    @flow
    def my_flow() -> str:
        return flaky()  # type: ignore[no-any-return]

    assert my_flow() == "done"
    assert len(calls) == 3


def test_exponential_backoff_without_retries_and_through_with_options() -> None:
    # docs/v3/api-ref/python/prefect-tasks.mdx (with_options takes retry_delay_seconds)
    @task(retry_delay_seconds=exponential_backoff(1))
    def no_retries() -> None:
        pass

    assert no_retries.retries == 0
    again = no_retries.with_options(retries=3, retry_delay_seconds=exponential_backoff(3))
    assert again.retry_delay_seconds == [3, 6, 12]


def test_exponential_backoff_bad_input() -> None:
    with pytest.raises(ValueError, match=r"exponential_backoff\(backoff_factor='2'\): give a"):
        exponential_backoff("2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"backoff_factor=-1\)"):
        exponential_backoff(-1)

    def broken(retries: int) -> list[float]:
        raise KeyError(retries)

    with pytest.raises(ValueError, match=r"the function raised KeyError: 2 when called"):
        task(retries=2, retry_delay_seconds=broken)(lambda: None)


# -- custom state names ------------------------------------------------------------------------


def test_custom_named_state_returned_by_a_flow() -> None:
    # docs/v3/concepts/flows.mdx ("Custom named states": Completed(message=..., name="Skipped"))
    @flow
    def my_flow(work_to_do: bool) -> Any:
        if not work_to_do:
            return Completed(message="No work to do", name="Skipped")
        return Completed(message="Work was done")

    skipped = my_flow(work_to_do=False, return_state=True)
    assert skipped.name == "Skipped"
    assert skipped.type is StateType.COMPLETED
    assert skipped.is_completed()
    assert skipped.message == "No work to do"
    done = my_flow(work_to_do=True, return_state=True)
    assert done.name == "Completed"


def test_state_constructors_take_a_name() -> None:
    # docs/v3/concepts/states.mdx (a state's name is for people, its type for the engine)
    for make, kind in (
        (Failed, StateType.FAILED),
        (Crashed, StateType.CRASHED),
        (Cancelled, StateType.CANCELLED),
        (Running, StateType.RUNNING),
    ):
        state = make(name="Custom")
        assert (state.name, state.type) == ("Custom", kind)
    assert Completed(data=3, name="Skipped").result() == 3


# -- runtime.deployment ------------------------------------------------------------------------


def test_runtime_deployment_without_a_deployment() -> None:
    # docs/v3/how-to-guides/workflows/access-runtime-info.mdx and
    # docs/v3/api-ref/python/prefect-runtime-deployment.mdx ("if a deployment is not currently
    # being run, all attributes will return empty values")
    assert (deployment.id, deployment.name, deployment.version) == (None, None, None)
    assert deployment.flow_run_id is None
    assert deployment.parameters == {}

    @flow
    def my_flow(x: int) -> tuple[Any, ...]:
        return (
            deployment.id,
            deployment.name,
            deployment.version,
            deployment.flow_run_id == flowbook.runtime.flow_run.id,
            deployment.parameters,
        )

    assert my_flow(3) == (None, None, None, True, {"x": 3})


def test_runtime_deployment_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match=r"has no attribute 'nmae'; available: flow_run_id"):
        deployment.nmae  # noqa: B018


# -- future names ------------------------------------------------------------------------------


def test_prefect_future_names() -> None:
    # docs/v3/concepts/task-runners.mdx ("the task runner creates a PrefectFuture");
    # docs/v3/api-ref/python/prefect-futures.mdx (PrefectFutureList.result / wait)
    assert PrefectFuture is TaskRunFuture
    assert PrefectFutureList is FutureList

    @flow
    def my_flow() -> tuple[bool, bool, list[int]]:
        one = _double.submit(1)
        many = _double.map([1, 2, 3])
        many.wait()
        return isinstance(one, PrefectFuture), isinstance(many, PrefectFutureList), many.result()

    assert my_flow() == (True, True, [2, 4, 6])


def test_top_level_exports() -> None:
    # docs/v3/examples/hello-world.mdx (from prefect import flow, tags)
    assert flowbook.tags is tags
    assert flowbook.allow_failure is allow_failure
    assert {"tags", "allow_failure"} <= set(flowbook.__all__)


# -- TaskRun.flow_run_id -----------------------------------------------------------------------


def test_task_run_has_its_flow_runs_id() -> None:
    # Prefect's TaskRun.flow_run_id, as a cache_key_fn reads it from its context: the flow
    # run's id inside a flow, None for a task called outside any flow
    seen: list[str | None] = []

    def key_fn(context: Any, parameters: dict[str, Any]) -> str:
        seen.append(context.task_run.flow_run_id)
        return "k"

    @task(cache_key_fn=key_fn)
    def step() -> int:
        return 1

    @flow
    def my_flow() -> str:
        step()
        return str(flowbook.runtime.flow_run.id)

    flow_run_id = my_flow()
    step()
    assert seen == [flow_run_id, None]


# -- result_storage_key ------------------------------------------------------------------------


def test_result_storage_key_is_accepted_with_a_warning_naming_it() -> None:
    # results are kept by run id in flowbook's store; the option is taken so that Prefect 3
    # code runs as written, and said to do nothing
    expected = (
        r"@task\(result_storage_key=\.\.\.\): the option 'result_storage_key' does nothing in "
        r"flowbook \(flowbook keeps each task run's result in its run store under the run's id"
    )
    with pytest.warns(UserWarning, match=expected):

        @task(result_storage_key="double-{parameters[x]}")
        def double(x: int) -> int:
            return 2 * x

    assert double(2) == 4
    with pytest.warns(UserWarning, match=expected):
        again = double.with_options(result_storage_key="other")
    assert again(3) == 6
