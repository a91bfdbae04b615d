"""State hooks, behaviour by behaviour as Prefect 3's docs describe them.

Pages followed (paths in the PrefectHQ/prefect repository):
- HOOKS: docs/v3/how-to-guides/workflows/state-change-hooks.mdx ("How to respond to state
  changes")
- STATES: docs/v3/concepts/states.mdx, section "State change hooks"

Where flowbook decides what the docs leave open (which thread, Dask, cache hits), the test
names docs/behaviour.md, section "State hooks".
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from functools import partial
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.engine.events import LogEmitted
from flowbook.exceptions import MissingContextError
from flowbook.logging import flow_run_logger, get_run_logger, task_run_logger
from flowbook.states import Cancelled, Crashed, State

Calls = list[tuple[Any, ...]]


def recorder(calls: Calls, label: str = "") -> Any:
    def hook(owner: Any, run: Any, state: State) -> None:
        calls.append((label, owner, run, state))

    return hook


# -- which hooks exist (HOOKS: "Available state change hooks") ---------------------------------


def test_flows_take_five_hooks_as_options_and_as_decorators() -> None:
    calls: Calls = []
    options = ("on_completion", "on_failure", "on_cancellation", "on_crashed", "on_running")

    @flow(**{o: [recorder(calls, o)] for o in options})
    def f() -> int:
        return 1

    for option in options:
        assert len(getattr(f, f"{option}_hooks")) == 1
        added = getattr(f, option)(recorder(calls, "decorated"))
        assert callable(added)
        assert len(getattr(f, f"{option}_hooks")) == 2


def test_tasks_take_completion_failure_and_running_hooks_only() -> None:
    @task(on_completion=[print], on_failure=[print], on_running=[print])
    def t() -> int:
        return 1

    assert (t.on_completion_hooks, t.on_failure_hooks, t.on_running_hooks) == (
        [print],
        [print],
        [print],
    )
    for option in ("on_crashed", "on_cancellation"):
        with pytest.raises(TypeError, match=f"@task\\(\\) got an unknown option '{option}'"):
            task(lambda: 1, **{option: [print]})
        assert not hasattr(t, option)


def test_a_flow_or_task_without_hooks_has_nothing_for_the_lifecycle_to_call() -> None:
    @task
    def t() -> int:
        return 1

    @flow
    def f() -> int:
        return t()

    assert t._state_hooks is None
    assert f._state_hooks is None
    assert f() == 1


# -- when each hook runs (HOOKS table; STATES: "State change hooks") ----------------------------


def test_flow_on_completion_gets_the_flow_its_run_and_the_completed_state() -> None:
    # STATES: def my_flow_state_hook(flow: Flow, run: FlowRun, state: State)
    calls: Calls = []

    @flow(on_completion=[recorder(calls)], on_failure=[recorder(calls, "failure")])
    def f() -> int:
        return 7

    state = f(return_state=True)
    [(label, owner, run, seen)] = calls
    assert (label, owner, seen) == ("", f, state)
    assert run.id == state.run_id
    assert run.state is state
    assert seen.is_completed()
    assert seen.result() == 7


def test_task_hooks_get_the_task_its_run_and_the_state() -> None:
    # STATES: def my_task_state_hook(task: Task, run: TaskRun, state: State)
    calls: Calls = []

    @task(on_completion=[recorder(calls, "done")], on_failure=[recorder(calls, "failed")])
    def t(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return x

    @flow
    def f() -> tuple[str, State, State]:
        return "states", t(1, return_state=True), t(-1, return_state=True)

    _, ok, bad = f()
    assert [(c[0], c[1], c[2].state, c[3]) for c in calls] == [
        ("done", t, ok, ok),
        ("failed", t, bad, bad),
    ]
    assert isinstance(bad.result(raise_on_failure=False), ValueError)


def test_flow_on_failure_runs_once_after_all_retries() -> None:
    # HOOKS "Send a notification when a workflow run fails": with retries the on_failure
    # hook does not run until all retries have completed and the run enters Failed
    attempts: list[int] = []
    seen: list[tuple[str, str, str, tuple[str, ...]]] = []

    @flow(retries=1, tags=["nightly"])
    def failing_flow() -> None:
        attempts.append(1)
        raise ValueError("oops!")

    @failing_flow.on_failure
    def notify(flow: Any, flow_run: Any, state: State) -> None:
        seen.append((flow_run.name, flow_run.id, state.name, flow_run.tags))

    state = failing_flow(return_state=True)
    assert len(attempts) == 2
    assert seen == [(seen[0][0], state.run_id, "Failed", ("nightly",))]
    with pytest.raises(ValueError, match="oops!"):
        failing_flow()


def test_task_on_failure_runs_once_after_all_retries() -> None:
    attempts: list[int] = []
    calls: Calls = []

    @task(retries=2, on_failure=[recorder(calls)])
    def t() -> None:
        attempts.append(1)
        raise ValueError("still broken")

    state = t(return_state=True)
    assert len(attempts) == 3
    assert [c[3] for c in calls] == [state]


def test_task_on_running_runs_before_the_body_as_option_and_as_decorator() -> None:
    # HOOKS "Execute code when a task starts running": both forms, before the body executes
    order: list[str] = []

    def record_start_time(task: Any, task_run: Any, state: State) -> None:
        order.append(f"hook {task.name} {state.name} {task_run.state.name}")

    @task(on_running=[record_start_time])
    def my_task() -> str:
        order.append("my_task body")
        return "hello"

    @task
    def another_task() -> str:
        order.append("another_task body")
        return "world"

    @another_task.on_running
    def log_start(task: Any, task_run: Any, state: State) -> None:
        order.append(f"decorated hook {task.name}")

    @flow
    def my_flow() -> tuple[str, str]:
        return my_task(), another_task()

    assert my_flow() == ("hello", "world")
    assert order == [
        "hook my_task Running Running",
        "my_task body",
        "decorated hook another_task",
        "another_task body",
    ]


def test_on_running_is_synchronous_the_body_waits_for_it() -> None:
    # HOOKS: "If your hook takes 10 seconds, the task waits 10 seconds before starting"
    times: dict[str, float] = {}

    def slow(task: Any, task_run: Any, state: State) -> None:
        time.sleep(0.2)
        times["hook done"] = time.perf_counter()

    @task(on_running=[slow])
    def t() -> None:
        times["body"] = time.perf_counter()

    t.submit().wait()
    assert times["body"] >= times["hook done"]


def test_on_running_fires_on_every_attempt() -> None:
    # HOOKS: retries=2 triggers on_running up to three times
    calls: Calls = []

    @task(retries=2, on_running=[recorder(calls)])
    def t() -> None:
        raise ValueError("no")

    t(return_state=True)
    assert [c[3].name for c in calls] == ["Running", "Retrying", "Retrying"]

    flow_calls: Calls = []

    @flow(retries=1, on_running=[recorder(flow_calls)])
    def f() -> None:
        raise ValueError("no")

    f(return_state=True)
    assert [c[3].name for c in flow_calls] == ["Running", "Retrying"]


def test_on_cancellation_runs_when_a_flow_run_is_cancelled() -> None:
    # HOOKS table: on_cancellation, flows only (flowbook has no Cancelling: docs/behaviour.md)
    calls: Calls = []
    started = threading.Event()

    @flow(on_cancellation=[recorder(calls)], on_failure=[recorder(calls, "failure")])
    def waits() -> None:
        started.set()
        for _ in range(500):
            time.sleep(0.01)

    handle = waits.run_background()
    assert started.wait(5)
    handle.cancel("stop it")
    assert handle.wait(5)
    [(label, _, run, state)] = calls
    assert (label, state.name, run.state) == ("", "Cancelled", state)

    @flow
    def returns_cancelled() -> State:
        return Cancelled("nothing to do")

    returns_cancelled.on_cancellation(recorder(calls, "returned"))
    returns_cancelled(return_state=True)
    assert calls[-1][0] == "returned"
    assert calls[-1][3].message == "nothing to do"


def test_on_crashed_runs_when_a_flow_run_crashes() -> None:
    calls: Calls = []

    @flow(on_crashed=[recorder(calls)], on_failure=[recorder(calls, "failure")])
    def crashes() -> State:
        return Crashed("the machine went away")

    state = crashes(return_state=True)
    assert [(c[0], c[3]) for c in calls] == [("", state)]
    assert state.is_crashed()


def test_timed_out_runs_call_on_failure() -> None:
    calls: Calls = []

    @task(timeout_seconds=0.05, on_failure=[recorder(calls)])
    def slow() -> None:
        time.sleep(2)

    state = slow(return_state=True)
    assert [c[3] for c in calls] == [state]
    assert state.name == "TimedOut"


# -- several hooks (STATES: "multiple state change hooks for the same state transition, or the
#    same state change hook for different transitions") ---------------------------------------


def test_several_hooks_for_one_state_and_one_hook_for_several_states() -> None:
    calls: Calls = []
    shared = recorder(calls, "shared")

    @task(on_completion=[recorder(calls, "first"), recorder(calls, "second"), shared])
    def ok() -> int:
        return 1

    @task(on_failure=[shared])
    def bad() -> None:
        raise ValueError("x")

    @flow(on_completion=[shared])
    def f() -> None:
        ok()
        bad(return_state=True)

    f()
    assert [(c[0], c[3].name) for c in calls] == [
        ("first", "Completed"),
        ("second", "Completed"),
        ("shared", "Completed"),
        ("shared", "Failed"),
        ("shared", "Completed"),
    ]
    assert calls[-1][1] is f
    assert calls[3][1] is bad


# -- logging from hooks (HOOKS "Log from state change hooks") -----------------------------------


def test_get_run_logger_raises_in_hooks() -> None:
    errors: list[BaseException] = []

    def hook(owner: Any, run: Any, state: State) -> None:
        try:
            get_run_logger()
        except MissingContextError as exc:
            errors.append(exc)

    @task(on_completion=[hook])
    def t() -> int:
        return 1

    @flow(on_completion=[hook])
    def f() -> int:
        return t()

    assert f() == 1
    assert len(errors) == 2


def test_flow_run_logger_and_task_run_logger_log_to_the_run(events: Any) -> None:
    def flow_hook(flow: Any, flow_run: Any, state: State) -> None:
        flow_run_logger(flow_run, flow).info(f"Flow {flow_run.name} entered state {state.name}")

    def task_hook(task: Any, task_run: Any, state: State) -> None:
        task_run_logger(task_run, task).warning("task %s %s", task_run.name, state.name)

    @task(on_failure=[task_hook])
    def t() -> None:
        raise ValueError("x")

    @flow(on_failure=[flow_hook])
    def failing_flow() -> None:
        t()

    state = failing_flow(return_state=True)
    logs = events.of(LogEmitted)
    flow_lines = [e for e in logs if e.record.getMessage().startswith("Flow ")]
    task_lines = [e for e in logs if e.record.getMessage().startswith("task t-0")]
    [flow_line] = flow_lines
    assert flow_line.flow_run_id == state.run_id
    assert flow_line.task_run_id is None
    assert flow_line.record.getMessage().endswith("entered state Failed")
    [task_line] = task_lines
    assert task_line.flow_run_id == state.run_id
    assert task_line.task_run_id is not None
    assert task_line.record.levelno == logging.WARNING


def test_the_run_loggers_import_from_prefects_path() -> None:
    from flowbook.logging.loggers import flow_run_logger as by_path

    assert by_path is flow_run_logger


def test_run_loggers_refuse_what_is_not_a_run() -> None:
    with pytest.raises(
        TypeError, match=r"flow_run_logger\(\) takes a FlowRun .* not 'x' of type str"
    ):
        flow_run_logger("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"task_run_logger\(\) takes a TaskRun .* type NoneType"):
        task_run_logger(None)  # type: ignore[arg-type]


# -- arguments through with_options (HOOKS "Pass kwargs to state change hooks") ----------------


def test_kwargs_reach_a_hook_through_partial_and_with_options() -> None:
    data: dict[str, Any] = {}

    def my_hook(task: Any, task_run: Any, state: State, **kwargs: Any) -> None:
        data.update(state=state, **kwargs)

    @task
    def bad_task() -> None:
        raise ValueError("meh")

    @flow
    def ok_with_failure_flow(x: str = "foo", y: int = 42) -> tuple[str, State]:
        with_hook = bad_task.with_options(on_failure=[partial(my_hook, x=x, y=y)])
        return "bar", with_hook(return_state=True)

    _, task_run_state = ok_with_failure_flow()
    assert data == {"x": "foo", "y": 42, "state": task_run_state}
    assert bad_task.on_failure_hooks == []  # the original task is unchanged


def test_with_options_keeps_decorated_hooks_and_copies_do_not_share_them() -> None:
    calls: Calls = []

    @flow
    def f() -> int:
        return 1

    f.on_completion(recorder(calls, "original"))
    copy = f.with_options(name="copy")
    copy.on_completion(recorder(calls, "copy only"))
    copy()
    f()
    assert [c[0] for c in calls] == ["original", "copy only", "original"]
    replaced = f.with_options(on_completion=[recorder(calls, "replaced")])
    replaced()
    assert calls[-1][0] == "replaced"
    assert len(calls) == 4


# -- how hooks run (docs/behaviour.md "State hooks") -------------------------------------------


def test_a_hook_that_raises_is_logged_by_name_and_does_not_change_the_state(
    events: Any,
) -> None:
    calls: Calls = []

    def broken_hook(owner: Any, run: Any, state: State) -> None:
        raise RuntimeError("the hook broke")

    @task(on_completion=[broken_hook, recorder(calls, "next")])
    def t() -> int:
        return 3

    @flow(on_completion=[broken_hook])
    def f() -> int:
        return t()

    state = f(return_state=True)
    assert state.is_completed()
    assert state.result() == 3
    assert [c[0] for c in calls] == ["next"]
    assert calls[0][3].is_completed()
    errors = [e for e in events.of(LogEmitted) if e.record.levelno == logging.ERROR]
    assert [e.record.getMessage() for e in errors] == [
        "An error was encountered while running hook 'broken_hook'"
    ] * 2
    assert {e.task_run_id is None for e in errors} == {True, False}
    exc_info = errors[0].record.exc_info
    assert exc_info is not None
    assert str(exc_info[1]) == "the hook broke"
    messages = [e.record.getMessage() for e in events.of(LogEmitted)]
    assert "Running hook 'hook' in response to entering state 'Completed'" in messages
    assert "Hook 'hook' finished running successfully" in messages


def test_task_hooks_run_on_the_runs_thread_before_its_future_resolves() -> None:
    threads: dict[str, int] = {}

    def hook(task: Any, task_run: Any, state: State) -> None:
        time.sleep(0.1)
        threads["hook"] = threading.get_ident()

    @task(on_completion=[hook])
    def t() -> int:
        threads["body"] = threading.get_ident()
        return 1

    @flow
    def f() -> int:
        value: int = t.submit().result()
        assert "hook" in threads  # the future resolved after the hook returned
        return value

    assert f() == 1
    assert threads["hook"] == threads["body"] != threading.get_ident()


def test_flow_hooks_run_on_the_flows_thread_before_the_call_returns() -> None:
    seen: list[int] = []

    @flow(on_completion=[lambda flow, run, state: seen.append(threading.get_ident())])
    def f() -> int:
        return 1

    assert f() == 1
    assert seen == [threading.get_ident()]


def test_async_hooks_are_awaited_and_async_runs_call_hooks() -> None:
    calls: Calls = []

    async def async_hook(owner: Any, run: Any, state: State) -> None:
        await asyncio.sleep(0.01)
        calls.append(("async", owner, run, state))

    @task(on_completion=[async_hook])
    async def t() -> int:
        return 2

    @flow(on_completion=[async_hook], on_running=[recorder(calls, "running")])
    async def f() -> int:
        return await t()

    assert asyncio.run(f()) == 2
    assert [(c[0], c[3].name) for c in calls] == [
        ("running", "Running"),
        ("async", "Completed"),
        ("async", "Completed"),
    ]
    assert calls[1][1] is t
    assert calls[2][1] is f


def test_a_cache_hit_calls_on_completion_with_cached_and_not_on_running() -> None:
    from flowbook.tasks import task_input_hash

    calls: Calls = []

    @task(
        cache_key_fn=task_input_hash,
        on_completion=[recorder(calls, "done")],
        on_running=[recorder(calls, "running")],
    )
    def t(x: int) -> int:
        return x * 2

    @flow
    def f() -> tuple[int, int]:
        return t(21), t(21)

    assert f() == (42, 42)
    assert [(c[0], c[3].name) for c in calls] == [
        ("running", "Running"),
        ("done", "Completed"),
        ("done", "Cached"),
    ]


def test_subflow_hooks_run_and_know_their_parent() -> None:
    calls: Calls = []

    @flow(on_completion=[recorder(calls)])
    def child() -> int:
        return 5

    @flow
    def parent() -> int:
        return child()

    state = parent(return_state=True)
    [(_, owner, run, child_state)] = calls
    assert owner is child
    assert run.parent_flow_run_id == state.run_id
    assert child_state.result() == 5


def test_prefect1_on_failure_function_is_called_with_task_and_state() -> None:
    seen: list[tuple[Any, State]] = []

    @task(on_failure=lambda task, state: seen.append((task, state)))
    def t() -> None:
        raise ValueError("p1")

    state = t(return_state=True)
    assert seen == [(t, state)]


# -- bad input --------------------------------------------------------------------------------


def my_hook(owner: Any, run: Any, state: State) -> None:
    pass


def test_a_hook_option_that_is_not_a_list_is_refused_naming_it() -> None:
    with pytest.raises(
        TypeError,
        match=r"^@flow\(on_failure=<function my_hook at .*>\): on_failure must be a list of "
        r"functions \(flow, flow_run, state\), not function; give a list, e\.g\. "
        r"@flow\(on_failure=\[my_hook\]\)$",
    ):
        flow(on_failure=my_hook)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^@task\(on_running='my_hook'\): on_running must be"):
        task(lambda: 1, on_running="my_hook")


def test_a_hook_that_is_not_callable_is_refused_naming_it() -> None:
    with pytest.raises(
        TypeError,
        match=r"^@flow\(on_completion=\[<function my_hook .*>, 3\]\): on_completion\[1\] is 3 "
        r"of type int; each hook must be a function \(flow, flow_run, state\)$",
    ):
        flow(lambda: 1, on_completion=[my_hook, 3])

    @task
    def t() -> None:
        pass

    with pytest.raises(
        TypeError, match=r"^@task\(on_failure=\['oops'\]\): on_failure\[0\] is 'oops'"
    ):
        t.on_failure("oops")  # type: ignore[arg-type]
    assert t.on_failure_hooks == []
    assert t._state_hooks is None
    with pytest.raises(TypeError, match=r"on_running\[0\] is None of type NoneType"):
        t.with_options(on_running=[None])


# the hook decorators are one implementation for flows and tasks: a bad hook is refused
# naming the flow or task's option, and leaves no hook behind
def test_a_bad_decorated_hook_is_refused_for_flows_and_tasks_alike() -> None:
    @flow
    def f() -> None:
        pass

    @task
    def t() -> None:
        pass

    for target, kind in ((f, "flow"), (t, "task")):
        for option in ("on_completion", "on_failure", "on_running"):
            with pytest.raises(TypeError, match=rf"^@{kind}\({option}=\[3\]\): {option}\[0\] is 3"):
                getattr(target, option)(3)
            assert getattr(target, f"{option}_hooks") == []
        assert target._state_hooks is None
    for option in ("on_cancellation", "on_crashed"):
        with pytest.raises(TypeError, match=rf"^@flow\({option}=\[3\]\): {option}\[0\] is 3"):
            getattr(f, option)(3)
    assert not hasattr(t, "on_cancellation")


# -- Dask (docs/behaviour.md "State hooks": task hooks run in the kernel) -----------------------


@pytest.mark.slow
def test_on_dask_task_hooks_run_in_the_kernel_not_on_the_worker() -> None:
    pytest.importorskip("distributed")
    import os

    from flowbook.task_runners import DaskTaskRunner
    from flowbook.task_runners import dask as fb_dask

    seen: list[tuple[str, int]] = []
    lock = threading.Lock()  # a hook may hold what cannot travel to a worker process

    def hook(task: Any, task_run: Any, state: State) -> None:
        with lock:
            seen.append((state.name, os.getpid()))

    @task(on_running=[hook], on_completion=[hook], on_failure=[hook])
    def where(fail: bool) -> int:
        if fail:
            raise ValueError("on the worker")
        return os.getpid()

    runner = DaskTaskRunner(
        cluster_kwargs={"n_workers": 1, "threads_per_worker": 1, "dashboard_address": ":0"}
    )

    @flow(task_runner=runner)
    def f() -> tuple[int, State]:
        ok = where.submit(False)
        bad = where.submit(True)
        bad.wait()
        return ok.result(), bad.state

    try:
        worker_pid, bad_state = f()
    finally:
        fb_dask.close_cluster()
    assert worker_pid != os.getpid()
    assert bad_state.is_failed()
    assert sorted(seen) == sorted(
        [("Running", os.getpid())] * 2 + [("Completed", os.getpid()), ("Failed", os.getpid())]
    )


def test_a_pickled_task_leaves_its_hooks_behind_and_a_copy_keeps_them() -> None:
    import copy

    import cloudpickle  # type: ignore[import-untyped]

    lock = threading.Lock()

    @task(on_completion=[lambda task, run, state: lock.acquire(blocking=False)])
    def t() -> int:
        return 1

    travelled = cloudpickle.loads(cloudpickle.dumps(t))
    assert travelled._state_hooks is None
    assert travelled.on_completion_hooks == []
    assert travelled.fn() == 1
    assert t._state_hooks is not None
    assert copy.copy(t).on_completion_hooks == t.on_completion_hooks


def test_a_task_run_not_started_for_a_failed_upstream_calls_on_failure() -> None:
    # docs/behaviour.md "State hooks": it ends Failed in flowbook (Prefect leaves it Pending)
    calls: Calls = []

    @task
    def broken() -> int:
        raise ValueError("upstream")

    @task(on_failure=[recorder(calls)], on_running=[recorder(calls, "running")])
    def downstream(x: int) -> int:
        return x

    @flow
    def f() -> None:
        downstream.submit(broken.submit()).wait()

    f(return_state=True)
    assert [(c[0], c[3].name) for c in calls] == [("", "Failed")]  # never Running


# -- a hook that does not return normally (docs/behaviour.md "State hooks": "A hook that raises")


def test_a_task_hook_raising_system_exit_still_resolves_the_run() -> None:
    import sys

    def exits(task: Any, task_run: Any, state: State) -> None:
        sys.exit(3)

    @task(on_completion=[exits])
    def t() -> int:
        return 1

    @flow
    def f() -> int:
        return t.submit().result(timeout=10)

    assert f() == 1


def test_a_flow_hook_interrupted_leaves_the_flow_run_ended(events: Any) -> None:
    from flowbook.engine import flow_engine
    from flowbook.engine.events import FlowRunFinished

    def interrupted(flow: Any, flow_run: Any, state: State) -> None:
        raise KeyboardInterrupt

    @flow(on_completion=[interrupted])
    def child() -> int:
        return 1

    @flow(on_completion=[interrupted])
    def parent() -> int:
        try:
            child()
        except KeyboardInterrupt:
            pass
        return 2

    with pytest.raises(KeyboardInterrupt):
        parent()
    finished = events.of(FlowRunFinished)
    assert [(e.flow_run.flow, e.state.name) for e in finished] == [
        (child, "Completed"),
        (parent, "Completed"),
    ]
    record = finished[0].flow_run.parent_task_run
    assert record is not None
    assert record.state.is_completed()
    assert not flow_engine._active


def test_async_hooks_of_async_runs_are_awaited_on_the_runs_loop_without_blocking_it() -> None:
    # docs/behaviour.md "State hooks": awaited on the run's own event loop
    loops: list[Any] = []
    ticks: list[int] = []
    ticked_meanwhile: list[bool] = []

    async def async_hook(owner: Any, run: Any, state: State) -> None:
        loops.append(asyncio.get_running_loop())
        before = len(ticks)
        await asyncio.sleep(0.2)
        ticked_meanwhile.append(len(ticks) > before)

    @task(on_running=[async_hook], on_completion=[async_hook])
    async def t() -> int:
        return 2

    @flow(on_running=[async_hook], on_completion=[async_hook])
    async def f() -> int:
        return await t()

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0.01)

    async def main() -> tuple[int, Any]:
        ticking = asyncio.create_task(ticker())
        try:
            return await f(), asyncio.get_running_loop()
        finally:
            ticking.cancel()

    value, loop = asyncio.run(main())
    assert value == 2
    assert loops == [loop] * 4
    assert ticked_meanwhile == [True] * 4
