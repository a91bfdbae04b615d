"""``async def`` flows and tasks (SPEC F9).

An async flow called at top level returns a coroutine to await; anything called from a sync
flow, and a sync flow called from inside a running event loop (the notebook-cell situation),
returns its value, never a coroutine.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.engine.events import FlowRunFinished
from flowbook.exceptions import RunTimeoutError
from flowbook.runtime import flow_run, task_run
from flowbook.states import State, StateType


@task
async def double(x: int) -> int:
    await asyncio.sleep(0.01)
    return 2 * x


@task
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def test_async_flow_returns_a_coroutine_that_gives_its_value() -> None:
    @flow
    async def async_flow(x: int) -> int:
        return x + 1

    call = async_flow(1)
    assert inspect.iscoroutine(call)
    assert asyncio.run(call) == 2


def test_awaiting_an_async_task_inside_an_async_flow(events: Any) -> None:
    @flow
    async def async_flow(x: int) -> int:
        y = await double(x)
        return y + 1

    assert asyncio.run(async_flow(3)) == 7
    assert events.states("double-0") == ["Pending", "Running", "Completed"]


def test_awaiting_a_submitted_future_inside_an_async_flow() -> None:
    @flow
    async def async_flow() -> int:
        future = double.submit(5)
        return await future

    assert asyncio.run(async_flow()) == 10


def test_async_tasks_submitted_on_the_sequential_runner_in_an_async_flow(events: Any) -> None:
    """Each runs at once, to its end, on a loop of its own (the flow's loop is busy with the
    flow's body); before, ``asyncio.run()`` was called inside the flow's running loop and the
    submit raised ``RuntimeError``."""
    from flowbook.task_runners import SequentialTaskRunner

    order: list[str] = []

    @task
    async def slow_async(i: int) -> int:
        order.append(f"start {i}")
        await asyncio.sleep(0.05)
        order.append(f"end {i}")
        assert task_run.name.startswith("slow_async")  # (in the task run's context)
        return i

    @flow(task_runner=SequentialTaskRunner())
    async def async_flow() -> list[int]:
        first = slow_async.submit(1)
        order.append("after the first submit")
        mapped = slow_async.map([2, 3])
        return [first.result(), *mapped.result(), await slow_async(4)]

    assert asyncio.run(async_flow()) == [1, 2, 3, 4]
    assert order == [
        "start 1", "end 1", "after the first submit",
        "start 2", "end 2", "start 3", "end 3", "start 4", "end 4",
    ]  # fmt: skip
    (finished,) = events.of(FlowRunFinished)
    assert finished.state.is_completed()
    assert [r.state.name for r in finished.flow_run.task_runs] == ["Completed"] * 4


def _cancel_once_started(flow_: Any, started: Any) -> None:
    """Run ``flow_`` in the background, cancel it once ``started`` is set, and check that it
    ends ``Cancelled`` within 2 s of the cancel."""
    handle = flow_.run_background()
    assert started.wait(5)
    began = time.monotonic()
    assert handle.cancel()
    assert handle.wait(10)
    assert time.monotonic() - began < 2.0
    assert handle.state.is_cancelled()


def test_an_async_flows_timeout_stops_an_async_task_on_the_sequential_runner(
    events: Any,
) -> None:
    """The task runs on a loop of its own while the flow's loop waits for it, so the flow's
    deadline cannot fire in its loop: the wait watches it, cancels the task at its next
    ``await`` and gives the flow its timeout (before, the flow waited the task's 5 s out).
    On its way the stop is no ``Exception``: the body's ``except Exception`` (meant for the
    task's own errors) does not take it."""
    from flowbook.task_runners import SequentialTaskRunner

    cancelled: list[bool] = []

    @task
    async def long_async() -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return 1

    @flow(name="timed-sequential", task_runner=SequentialTaskRunner(), timeout_seconds=1)
    async def timed_flow() -> int:
        try:
            return long_async.submit().result()
        except Exception:
            return -1

    started = time.monotonic()
    state = asyncio.run(timed_flow(return_state=True))
    assert time.monotonic() - started < 5.0
    assert state.name == "TimedOut"
    assert "exceeded its timeout of 1 second(s)" in (state.message or "")
    assert cancelled == [True]
    (finished,) = [
        e for e in events.of(FlowRunFinished) if e.flow_run.flow.name == "timed-sequential"
    ]
    (record,) = finished.flow_run.task_runs
    assert record.state is not None
    assert record.state.is_cancelled()


def test_a_timeout_reaches_a_wait_nested_on_the_loop_of_a_waiting_task(events: Any) -> None:
    """Two loops blocked in turn: the flow's (waiting for task ``a`` on the sequential runner)
    and ``a``'s own (its subflow ``g`` waits there for task ``b``). The flow's deadline stops
    the outer wait, which stops the inner one, and both tasks end ``Cancelled``."""
    from flowbook.task_runners import SequentialTaskRunner

    @task
    async def b() -> int:
        await asyncio.sleep(10)
        return 1

    @flow(name="nested-g", task_runner=SequentialTaskRunner())
    async def g() -> int:
        return b.submit().result()

    @task
    async def a() -> int:
        return await g()

    @flow(name="nested-f", task_runner=SequentialTaskRunner(), timeout_seconds=1)
    async def f() -> int:
        return a.submit().result()

    started = time.monotonic()
    state = asyncio.run(f(return_state=True))
    assert time.monotonic() - started < 5.0
    assert state.name == "TimedOut"
    runs = {
        r.name: r.state.name
        for e in events.of(FlowRunFinished)
        for r in e.flow_run.task_runs
        if r.state is not None and r.subflow_run is None
    }
    assert runs == {"a-0": "Cancelled", "b-0": "Cancelled"}


def test_a_cancel_of_an_async_flow_stops_its_async_task_on_the_sequential_runner() -> None:
    """A background run's cancel while its body waits for an async task on the sequential
    runner: the cancel ends the task run and cancels its body on the task's own loop (the
    flow's loop is blocked), the wait ends, and the flow ends ``Cancelled``."""
    import threading

    from flowbook.task_runners import SequentialTaskRunner

    started = threading.Event()

    @task
    async def long_async() -> int:
        started.set()
        await asyncio.sleep(5)
        return 1

    @flow(task_runner=SequentialTaskRunner())
    async def cancelled_flow() -> int:
        return long_async.submit().result()

    _cancel_once_started(cancelled_flow, started)


def test_an_interrupt_of_a_task_body_reaches_the_wait_that_blocks_its_loop(events: Any) -> None:
    """An async task's body calls a sync subflow, which calls an async task (run on a loop
    of its own while the task's loop waits). A cancel interrupts the task's body, which the
    blocked loop cannot deliver: the wait sees it, cancels the inner task and stops the body
    (a ``RunInterrupted`` on its way, named so in the states it ends)."""
    import threading

    from flowbook.exceptions import RunInterrupted
    from flowbook.task_runners import SequentialTaskRunner

    started = threading.Event()
    seen: list[str] = []

    @task
    async def inner() -> int:
        started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            seen.append("inner cancelled")
            raise
        return 1

    @flow(name="sync-between")
    def sync_between() -> int:
        return inner()

    @task
    async def outer() -> int:
        try:
            return sync_between()
        except RunInterrupted:
            seen.append("outer's body stopped")
            raise

    @flow(name="interrupted-outer", task_runner=SequentialTaskRunner())
    async def top() -> int:
        return outer.submit().result()

    _cancel_once_started(top, started)
    assert seen == ["inner cancelled", "outer's body stopped"]
    (between,) = [
        e.flow_run for e in events.of(FlowRunFinished) if e.flow_run.flow.name == "sync-between"
    ]
    assert between.state is not None
    assert between.state.is_cancelled()
    assert between.state.message == "Flow run was interrupted (RunInterrupted)."


def test_a_ctrl_c_under_asyncio_run_stops_a_wait_that_blocks_the_loop() -> None:
    """``asyncio.run`` answers a Ctrl-C by cancelling its main task, which a wait that blocks
    the loop would never let happen: the wait sees the task cancelled, cancels the task run on
    its own loop, and the flow's body stops; the task's cancel is taken where the body stops,
    so the flow's async ``on_cancellation`` hook runs to its end, and ``asyncio.run`` raises
    ``KeyboardInterrupt`` (3.11+: ``Task.cancelling``)."""
    import os
    import signal
    import sys
    import threading

    from flowbook.task_runners import SequentialTaskRunner

    if sys.version_info < (3, 11):
        pytest.skip("Task.cancelling() is new in Python 3.11")
    # asyncio.run answers SIGINT itself only in place of Python's default handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    log: list[str] = []

    async def hook(flow_: Any, run: Any, state: Any) -> None:
        log.append("hook start")
        await asyncio.sleep(0.05)
        log.append("hook end")

    running = threading.Event()
    done = threading.Event()

    @task
    async def long_async() -> int:
        running.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append("task cancelled")
            raise
        return 1

    @flow(task_runner=SequentialTaskRunner(), on_cancellation=[hook])
    async def interrupted_flow() -> int:
        return long_async.submit().result()

    async def main() -> int:
        return await interrupted_flow()

    def ctrl_c_once_the_task_runs() -> None:
        if running.wait(10):
            time.sleep(0.05)  # (the flow's body waits for the task by now)
            if not done.is_set():
                os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=ctrl_c_once_the_task_runs, daemon=True)
    began = time.monotonic()
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(main())
    finally:
        done.set()
        running.set()
        sender.join()
    assert time.monotonic() - began < 5.0
    assert log == ["task cancelled", "hook start", "hook end"]


@pytest.mark.parametrize("group", ["anyio", "asyncio"])
def test_a_timeout_reaches_a_wait_in_the_host_body_of_a_task_group(group: str) -> None:
    """A task group wraps what its host body raises in an exception group: the stop is taken
    out of it, and the flow ends ``TimedOut`` as with an ``await`` there (not ``Cancelled`` by
    a group holding flowbook's private stop)."""
    import anyio

    from flowbook.task_runners import SequentialTaskRunner

    @task
    async def long_async() -> int:
        await asyncio.sleep(10)
        return 1

    @flow(task_runner=SequentialTaskRunner(), timeout_seconds=0.5)
    async def in_a_group() -> int:
        if group == "anyio":
            async with anyio.create_task_group():
                return long_async.submit().result()
        async with asyncio.TaskGroup():  # type: ignore[attr-defined,unused-ignore]
            return long_async.submit().result()

    if group == "asyncio" and not hasattr(asyncio, "TaskGroup"):
        pytest.skip("asyncio.TaskGroup is new in Python 3.11")
    started = time.monotonic()
    state = asyncio.run(in_a_group(return_state=True))
    assert time.monotonic() - started < 5.0
    assert state.name == "TimedOut"


def test_a_run_the_stop_passes_through_in_a_task_group_is_named_interrupted(
    events: Any,
) -> None:
    """The outer flow's timeout stops a wait inside an inner flow (awaited in the outer's
    body, the same asyncio task) whose body hosts a task group: the group wraps the stop on its
    way out, the inner flow run's message still names a ``RunInterrupted`` (not the group),
    and the outer flow ends ``TimedOut``."""
    import anyio

    from flowbook.task_runners import SequentialTaskRunner

    @task
    async def long_async() -> int:
        await asyncio.sleep(10)
        return 1

    @flow(name="grouped-inner", task_runner=SequentialTaskRunner())
    async def inner() -> int:
        async with anyio.create_task_group():
            return long_async.submit().result()

    @flow(task_runner=SequentialTaskRunner(), timeout_seconds=0.5)
    async def outer() -> int:
        return await inner()

    state = asyncio.run(outer(return_state=True))
    assert state.name == "TimedOut"
    (grouped,) = [
        e.flow_run for e in events.of(FlowRunFinished) if e.flow_run.flow.name == "grouped-inner"
    ]
    assert grouped.state is not None
    assert grouped.state.message == "Flow run was interrupted (RunInterrupted)."


def test_a_cancel_pending_when_the_wait_starts_stops_it_before_the_task_runs() -> None:
    """A cancel of the flow's asyncio task requested while the body was in flowbook's own
    code (a Ctrl-C between two submits) is still pending when the next wait starts: the wait
    stops at once and the task never runs (before, it ran to its end first)."""
    from flowbook.task_runners import SequentialTaskRunner

    ran: list[int] = []

    @task
    async def step(i: int) -> int:
        ran.append(i)
        await asyncio.sleep(0.2)
        return i

    @flow(task_runner=SequentialTaskRunner())
    async def steps() -> list[int]:
        first = step.submit(0).result()
        me = asyncio.current_task()
        assert me is not None
        me.cancel()  # (as asyncio.run's SIGINT handler does, between two bytecodes)
        return [first, step.submit(1).result()]

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(steps())
    assert ran == [0]


def test_a_shielded_cleanup_after_the_flows_timeout_still_runs_its_task() -> None:
    """anyio's way to clean up after a cancel: a shielded scope. The wait for a task on the
    sequential runner inside it is out of the flow's deadline's reach, as an ``await`` there
    would be, so the cleanup task runs to its end and the flow still ends ``TimedOut``."""
    import anyio

    from flowbook.task_runners import SequentialTaskRunner

    log: list[str] = []

    @task
    async def cleanup() -> int:
        await asyncio.sleep(0.1)
        log.append("cleanup ran")
        return 1

    @flow(task_runner=SequentialTaskRunner(), timeout_seconds=0.3)
    async def timed() -> int:
        try:
            await asyncio.sleep(5)
        finally:
            with anyio.CancelScope(shield=True):
                cleanup.submit().result()
        return 1

    state = asyncio.run(timed(return_state=True))
    assert state.name == "TimedOut"
    assert log == ["cleanup ran"]


def test_submitted_async_tasks_run_concurrently() -> None:
    @flow
    async def async_flow() -> list[float]:
        first = nap.submit(0.3)
        second = nap.submit(0.3)
        return [await first, await second]

    started = time.monotonic()
    assert asyncio.run(async_flow()) == [0.3, 0.3]
    assert time.monotonic() - started < 0.5


def test_gathered_async_task_calls_run_concurrently() -> None:
    @flow
    async def async_flow() -> list[float]:
        return list(await asyncio.gather(nap(0.3), nap(0.3)))

    started = time.monotonic()
    assert asyncio.run(async_flow()) == [0.3, 0.3]
    assert time.monotonic() - started < 0.5


# -- async inside sync -------------------------------------------------------------------------


def test_async_task_called_in_a_sync_flow_returns_its_value() -> None:
    @flow
    def sync_flow(x: int) -> Any:
        value = double(x)
        assert not inspect.isawaitable(value)
        return value

    assert sync_flow(4) == 8


def test_async_subflow_called_in_a_sync_flow_returns_its_value() -> None:
    @flow
    async def child(x: int) -> int:
        return await double(x) + 1

    @flow
    def parent(x: int) -> Any:
        value = child(x)
        assert not inspect.isawaitable(value)
        return value

    assert parent(10) == 21


def test_sync_flow_called_inside_a_running_event_loop_returns_its_value() -> None:
    @flow
    def my_sync_flow(x: int) -> int:
        return x * 3

    async def main() -> Any:
        return my_sync_flow(5)

    value = asyncio.run(main())
    assert not inspect.isawaitable(value)
    assert value == 15


def test_sync_flow_with_async_parts_inside_a_running_event_loop() -> None:
    """A notebook cell: the kernel runs a loop, the cell calls a sync flow that uses async."""

    @flow
    async def child(x: int) -> int:
        return await double(x)

    @flow
    def my_sync_flow(x: int) -> tuple[Any, Any]:
        return double(x), child(x + 1)

    async def main() -> Any:
        return my_sync_flow(1)

    assert asyncio.run(main()) == (2, 4)


def test_sync_task_and_sync_subflow_in_an_async_flow_return_values() -> None:
    @task
    def plus_one(x: int) -> int:
        return x + 1

    @flow
    def sync_child(x: int) -> Any:
        return double(x)

    @flow
    async def async_flow() -> tuple[Any, Any, Any]:
        direct = plus_one(1)
        child = sync_child(5)
        submitted = await plus_one.submit(10)
        return direct, child, submitted

    assert asyncio.run(async_flow()) == (2, 10, 11)


# -- timeouts and retries --------------------------------------------------------------------


def test_async_task_timeout() -> None:
    seen: dict[str, Any] = {}

    @task(timeout_seconds=0.1)
    async def sleepy() -> str:
        await asyncio.sleep(1)
        return "woke up"

    @flow
    async def async_flow() -> None:
        started = time.monotonic()
        seen["state"] = await sleepy(return_state=True)
        seen["elapsed"] = time.monotonic() - started

    asyncio.run(async_flow(return_state=True))
    state: State = seen["state"]
    assert state.name == "TimedOut"
    assert state.type is StateType.FAILED
    assert isinstance(state.data, RunTimeoutError)
    assert seen["elapsed"] < 0.4


def test_async_task_timeout_raises_from_the_async_flow() -> None:
    @task(timeout_seconds=0.1)
    async def sleepy() -> str:
        await asyncio.sleep(1)
        return "woke up"

    @flow
    async def async_flow() -> str:
        return await sleepy()

    started = time.monotonic()
    with pytest.raises(RunTimeoutError):
        asyncio.run(async_flow())
    assert time.monotonic() - started < 0.4


def test_async_flow_timeout() -> None:
    @flow(timeout_seconds=0.1)
    async def sleepy_flow() -> str:
        await asyncio.sleep(1)
        return "woke up"

    started = time.monotonic()
    state = asyncio.run(sleepy_flow(return_state=True))
    assert time.monotonic() - started < 0.4
    assert state.name == "TimedOut"
    assert state.type is StateType.FAILED


def test_async_flow_timeout_cancels_the_awaited_task(events: Any) -> None:
    @task
    async def slow() -> int:
        await asyncio.sleep(0.5)
        return 1

    @flow(name="async-timed-flow", timeout_seconds=0.2)
    async def timed_flow() -> int:
        return await slow()

    state = asyncio.run(timed_flow(return_state=True))
    assert state.name == "TimedOut"
    (finished,) = [
        e for e in events.of(FlowRunFinished) if e.flow_run.flow.name == "async-timed-flow"
    ]
    (record,) = finished.flow_run.task_runs
    assert record.state is not None
    assert record.state.is_cancelled()


def test_async_flow_retries() -> None:
    attempts: list[int] = []

    @flow(retries=2)
    async def async_flow() -> str:
        attempts.append(flow_run.run_count)
        await asyncio.sleep(0)
        if len(attempts) < 3:
            raise ValueError("again")
        return "ok"

    assert asyncio.run(async_flow()) == "ok"
    assert attempts == [1, 2, 3]


def test_async_task_retries(events: Any) -> None:
    counts: list[int] = []

    @task(retries=2, retry_delay_seconds=0.01)
    async def flaky() -> str:
        counts.append(task_run.run_count)
        await asyncio.sleep(0)
        if len(counts) < 3:
            raise ValueError("not yet")
        return "ok"

    @flow
    async def async_flow() -> str:
        return await flaky()

    assert asyncio.run(async_flow()) == "ok"
    assert counts == [1, 2, 3]
    assert events.states("flaky-0") == [
        "Pending",
        "Running",
        "AwaitingRetry",
        "Retrying",
        "Running",
        "AwaitingRetry",
        "Retrying",
        "Running",
        "Completed",
    ]


def test_async_task_called_outside_any_flow_returns_a_coroutine() -> None:
    call = double(21)
    assert inspect.iscoroutine(call)
    assert asyncio.run(call) == 42
