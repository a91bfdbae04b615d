"""States (immutable values with a type, a name and data) and futures of submitted task runs."""

from __future__ import annotations

import datetime
import re
import threading
import time
from typing import Any

import pytest

import flowbook
import flowbook.runs
from flowbook import FutureList, TaskRunFuture, flow, task
from flowbook.engine.events import TaskRunCreated
from flowbook.exceptions import RunFailedError, UnfinishedRunError, UpstreamTaskError
from flowbook.settings import reload_settings
from flowbook.states import (
    AwaitingRetry,
    Cached,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Pending,
    Retrying,
    Running,
    Scheduled,
    State,
    StateType,
    TimedOut,
)
from flowbook.task_runners import ConcurrentTaskRunner

# -- states ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "type_", "name"),
    [
        (Scheduled(), StateType.SCHEDULED, "Scheduled"),
        (AwaitingRetry(), StateType.SCHEDULED, "AwaitingRetry"),
        (Pending(), StateType.PENDING, "Pending"),
        (Running(), StateType.RUNNING, "Running"),
        (Retrying(), StateType.RUNNING, "Retrying"),
        (Completed(), StateType.COMPLETED, "Completed"),
        (Cached(), StateType.COMPLETED, "Cached"),
        (Failed(), StateType.FAILED, "Failed"),
        (TimedOut(), StateType.FAILED, "TimedOut"),
        (Crashed(), StateType.CRASHED, "Crashed"),
        (Cancelled(), StateType.CANCELLED, "Cancelled"),
    ],
)
def test_constructor_gives_type_and_name(state: State, type_: StateType, name: str) -> None:
    assert state.type is type_
    assert state.name == name


def _predicates(state: State) -> tuple[bool, ...]:
    return (
        state.is_scheduled(),
        state.is_pending(),
        state.is_running(),
        state.is_completed(),
        state.is_failed(),
        state.is_crashed(),
        state.is_cancelled(),
        state.is_final(),
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (Scheduled(), (1, 0, 0, 0, 0, 0, 0, 0)),
        (AwaitingRetry(), (1, 0, 0, 0, 0, 0, 0, 0)),
        (Pending(), (0, 1, 0, 0, 0, 0, 0, 0)),
        (Running(), (0, 0, 1, 0, 0, 0, 0, 0)),
        (Retrying(), (0, 0, 1, 0, 0, 0, 0, 0)),
        (Completed(), (0, 0, 0, 1, 0, 0, 0, 1)),
        (Cached(data=1), (0, 0, 0, 1, 0, 0, 0, 1)),
        (Failed(), (0, 0, 0, 0, 1, 0, 0, 1)),
        (TimedOut(), (0, 0, 0, 0, 1, 0, 0, 1)),
        (Crashed(), (0, 0, 0, 0, 0, 1, 0, 1)),
        (Cancelled(), (0, 0, 0, 0, 0, 0, 1, 1)),
    ],
    ids=lambda v: v.name if isinstance(v, State) else "",
)
def test_predicates_follow_the_type_not_the_name(state: State, expected: tuple[int, ...]) -> None:
    assert _predicates(state) == tuple(bool(x) for x in expected)


def test_short_form() -> None:
    assert Completed().short() == "Completed()"
    assert Cached().short() == "Cached(type=COMPLETED)"
    assert Failed("msg").short() == "Failed('msg')"
    assert AwaitingRetry("later").short() == "AwaitingRetry('later', type=SCHEDULED)"
    assert TimedOut().short() == "TimedOut(type=FAILED)"


def test_repr_shows_message_type_and_result() -> None:
    assert repr(Completed(data=[1, 2])) == "Completed(message=None, type=COMPLETED, result=[1, 2])"
    assert repr(Failed("boom", ValueError("bad"))) == (
        "Failed(message='boom', type=FAILED, result=ValueError('bad'))"
    )
    assert repr(Cached(data=1)) == "Cached(message=None, type=COMPLETED, result=1)"
    assert repr(Running()) == "Running(message=None, type=RUNNING)"


def test_repr_truncates_long_results() -> None:
    text = repr(Completed(data="x" * 200))
    assert text.endswith("...)")
    assert len(text) < 130


def test_repr_survives_a_broken_repr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert repr(Completed(data=Broken())) == (
        "Completed(message=None, type=COMPLETED, result=<Broken object>)"
    )


def test_result_of_a_completed_state_is_its_data() -> None:
    payload = {"a": 1}
    assert Completed(data=payload).result() is payload
    assert Cached(data=3).result() == 3


def test_result_of_a_failed_state_raises_the_stored_exception() -> None:
    exc = ValueError("stored")
    state = Failed("failed", exc)
    with pytest.raises(ValueError, match="stored") as info:
        state.result()
    assert info.value is exc
    assert state.result(raise_on_failure=False) is exc


def test_result_of_a_failed_state_without_exception() -> None:
    with pytest.raises(
        RunFailedError, match=re.escape("Run ended in state Failed('msg') with no exception")
    ):
        Failed("msg").result()


def test_result_of_an_unfinished_state() -> None:
    with pytest.raises(
        UnfinishedRunError,
        match=re.escape(
            "The run is in state Running(), which has no result yet; wait for it to finish"
        ),
    ):
        Running().result()
    with pytest.raises(UnfinishedRunError, match=re.escape("state AwaitingRetry(")):
        AwaitingRetry().result(raise_on_failure=False)


def test_timestamp_is_timezone_aware_utc() -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    state = Completed()
    after = datetime.datetime.now(datetime.timezone.utc)
    stamp = state.timestamp
    assert stamp.tzinfo is not None
    assert stamp.utcoffset() == datetime.timedelta(0)
    assert before <= stamp <= after


def test_copy_changes_fields_and_leaves_the_original() -> None:
    state = Completed("done", 1)
    other = state.copy(message="again")
    assert (other.message, other.data, other.name) == ("again", 1, "Completed")
    assert state.message == "done"


# -- futures ---------------------------------------------------------------------------------


def test_submit_returns_a_future_and_its_state_follows_the_run() -> None:
    started, release = threading.Event(), threading.Event()

    @task
    def gated() -> str:
        started.set()
        release.wait(1)
        return "done"

    @flow
    def observing() -> tuple[Any, ...]:
        future = gated.submit()
        assert started.wait(1)
        running = future.state
        was_done = future.done()
        release.set()
        assert future.wait(1) is True
        return future, running, was_done, future.state

    future, running, was_done, final = observing()
    assert isinstance(future, TaskRunFuture)
    assert running.name == "Running"
    assert was_done is False
    assert final.name == "Completed"
    assert future.result() == "done"


def test_wait_with_timeout_returns_false_while_running() -> None:
    release = threading.Event()

    @task
    def gated() -> int:
        release.wait(1)
        return 1

    @flow
    def observing() -> tuple[bool, bool]:
        future = gated.submit()
        early = future.wait(0.05)
        release.set()
        return early, future.wait()

    assert observing() == (False, True)


def test_module_wait_returns_done_and_not_done() -> None:
    release = threading.Event()

    @task
    def quick() -> int:
        return 1

    @task
    def gated() -> int:
        release.wait(1)
        return 2

    @flow
    def observing() -> tuple[bool, bool, bool]:
        fast, slow = quick.submit(), gated.submit()
        fast.wait()
        done, not_done = flowbook.wait([fast, slow], timeout=0.05)
        partial = done == {fast} and not_done == {slow}
        release.set()
        done, not_done = flowbook.wait([fast, slow])
        complete = done == {fast, slow} and not_done == set()
        return partial, complete, slow.result() == 2

    assert observing() == (True, True, True)


def test_as_completed_yields_the_fast_one_first() -> None:
    @task
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @flow
    def racing() -> list[float]:
        slow, fast = nap.submit(0.2), nap.submit(0.0)
        return [f.result() for f in flowbook.as_completed([slow, fast])]

    assert racing() == [0.0, 0.2]


def test_as_completed_raises_on_timeout() -> None:
    release = threading.Event()

    @task
    def gated() -> int:
        release.wait(1)
        return 1

    @task
    def quick() -> int:
        return 0

    @flow
    def racing() -> tuple[list[int], BaseException]:
        fast, slow = quick.submit(), gated.submit()
        seen = []
        try:
            for f in flowbook.as_completed([fast, slow], timeout=0.1):
                seen.append(f.result())
        except TimeoutError as exc:
            caught: BaseException = exc
        release.set()
        return seen, caught

    seen, caught = racing()
    assert seen == [0]
    assert type(caught) is TimeoutError
    assert str(caught) == "1 of 2 futures unfinished after 0.1 s"


def test_future_list_result() -> None:
    @task
    def square(x: int) -> int:
        return x * x

    @flow
    def squares() -> tuple[Any, list[int], bool]:
        futures = square.map([1, 2, 3])
        return futures, futures.result(), futures.wait()

    futures, values, waited = squares()
    assert isinstance(futures, FutureList)
    assert all(isinstance(f, TaskRunFuture) for f in futures)
    assert values == [1, 4, 9]
    assert waited is True


def test_futures_inside_collections_are_resolved_and_recorded(events: Any) -> None:
    received = []

    @task
    def make(x: int) -> int:
        return x

    @task
    def collect(items: list[int], named: dict[str, int]) -> int:
        received.append((items, named))
        return sum(items) + sum(named.values())

    @flow
    def gathering() -> tuple[int, list[str]]:
        f1, f2, f3 = make.submit(1), make.submit(2), make.submit(3)
        total = collect.submit([f1, f2], {"c": f3}).result()
        return total, [f.task_run_id for f in (f1, f2, f3)]

    total, ids = gathering()
    assert total == 6
    assert received == [([1, 2], {"c": 3})]
    created = {e.task_run.name: e for e in events.of(TaskRunCreated)}
    assert created["collect-0"].upstream == tuple(ids)
    assert created["make-0"].upstream == ()


def test_map_result_passed_whole_to_a_task_is_resolved(events: Any) -> None:
    received = []

    @task
    def square(x: int) -> int:
        return x * x

    @task
    def total(values: list[int]) -> int:
        received.append(values)
        return sum(values)

    @flow
    def pipeline() -> tuple[int, list[str]]:
        squares = square.map([1, 2, 3])
        return total.submit(squares).result(), [f.task_run_id for f in squares]

    value, ids = pipeline()
    assert received == [[1, 4, 9]]
    assert value == 14
    created = {e.task_run.name: e for e in events.of(TaskRunCreated)}
    assert created["total-0"].upstream == tuple(ids)


def test_wait_for_orders_execution_and_is_an_edge(events: Any) -> None:
    order = []

    @task
    def first() -> None:
        order.append("first-start")
        time.sleep(0.1)
        order.append("first-end")

    @task
    def second() -> str:
        order.append("second-start")
        return "second"

    @flow
    def ordered() -> tuple[str, str]:
        up = first.submit()
        down = second.submit(wait_for=[up])
        return down.result(), up.task_run_id

    value, up_id = ordered()
    assert value == "second"
    assert order == ["first-start", "first-end", "second-start"]
    created = {e.task_run.name: e for e in events.of(TaskRunCreated)}
    assert created["second-0"].upstream == (up_id,)


def test_upstream_failure_skips_the_downstream(events: Any) -> None:
    ran = []
    futures: list[TaskRunFuture[Any]] = []

    @task
    def broken() -> int:
        raise ValueError("upstream broke")

    @task
    def downstream(x: int) -> int:
        ran.append(x)
        return x

    @flow
    def chained() -> None:
        up = broken.submit()
        futures.append(downstream.submit(up))

    # nothing is looked at or returned, so (Prefect 3) the flow itself completes
    assert chained() is None
    assert ran == []
    state = futures[0].state
    assert state.is_failed()
    assert events.states("downstream-0") == ["Pending", "Failed"]
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, UpstreamTaskError)
    assert str(exc) == (
        "task run 'downstream-0' did not start: upstream task run 'broken-0' ended in state "
        "Failed('Task run encountered an exception ValueError: upstream broke')"
    )


def test_upstream_failure_through_wait_for(events: Any) -> None:
    ran = []

    @task
    def broken() -> None:
        raise KeyError("k")

    @task
    def after() -> None:
        ran.append(1)

    @flow
    def chained() -> None:
        up = broken.submit()
        after.submit(wait_for=[up])

    assert chained() is None  # (Prefect 3: the flow did not look at them)
    assert ran == []
    assert events.states("after-0") == ["Pending", "Failed"]


# -- scale -----------------------------------------------------------------------------------


def test_long_chain_of_dependent_submits_does_not_block_workers() -> None:
    release = threading.Event()

    @task
    def gate() -> bool:
        return release.wait(2)

    @task
    def step(previous: int, _gate: bool) -> int:
        return previous + 1

    @task
    def opener() -> None:
        release.set()

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2))
    def chain() -> int:
        g = gate.submit()
        f = step.submit(0, g)
        for _ in range(199):
            f = step.submit(f, g)
        # with one worker held by the gate, the opener needs the other: a worker parked on an
        # upstream future would deadlock here
        opener.submit()
        return f.result()

    started = time.monotonic()
    assert chain() == 200
    assert time.monotonic() - started < 1.5


def test_chain_of_200_on_the_default_runner() -> None:
    @task
    def inc(x: int) -> int:
        return x + 1

    @flow
    def chain() -> int:
        f = inc.submit(0)
        for _ in range(199):
            f = inc.submit(f)
        return f.result()

    assert chain() == 200


def test_map_of_2000(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    reload_settings()

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def mapping() -> list[int]:
        return double.map(range(2000)).result()

    started = time.monotonic()
    assert mapping() == [2 * i for i in range(2000)]
    assert time.monotonic() - started < 1.0


def test_states_carry_the_id_of_their_run() -> None:
    from flowbook.runtime import flow_run as current_flow

    seen: dict[str, str] = {}

    @task
    def ok(x: int) -> int:
        return x

    @task
    def boom() -> None:
        raise ValueError("no")

    @flow(flow_run_name="ids-run")
    def ids() -> dict[str, tuple[Any, Any, Any]]:
        seen["flow"] = current_flow.id
        # in a dict: states returned bare would decide the flow's own state (Prefect 3)
        return {"states": (ok(1, return_state=True), boom(return_state=True), ok.submit(2).state)}

    state = ids(return_state=True)
    assert state.run_id == seen["flow"]
    completed, failed, submitted = state.result()["states"]
    assert completed.is_completed()
    assert failed.is_failed()
    assert submitted.is_completed()
    ids_ = {completed.run_id, failed.run_id, submitted.run_id}
    assert None not in ids_
    assert len(ids_) == 3
    stored = flowbook.runs.get(state.run_id)
    assert stored.name == "ids-run"
    assert ids_ == {t["id"] for t in stored.task_run_list}
