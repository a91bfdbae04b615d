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
