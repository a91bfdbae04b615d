"""A run's end is never cut short: an interrupt (a second Ctrl-C while a cancel goes on, a
subscriber's or hook's ``KeyboardInterrupt``, an event loop's cancel) that reaches the
lifecycle outside the body still leaves the flow run final, every task run final and every
future resolved; the interrupt goes on to the caller afterwards."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.engine import interrupts
from flowbook.engine.events import FlowRunFinished, StateChanged, bus
from flowbook.engine.runs import FlowRun, TaskRun
from flowbook.task_runners import ThreadPoolTaskRunner


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Task runs block on it; set at the end, so no worker thread outlives the test."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def at_first_cancelled_task_run() -> Iterator[Callable[[Callable[[], None]], list[TaskRun]]]:
    """``arm(action)``: ``action()`` runs inside the announcement of the first task run's
    ``Cancelled`` state (on the thread that cancels it); returns the runs it fired for."""
    subscribers: list[Callable[[Any], None]] = []

    def arm(action: Callable[[], None]) -> list[TaskRun]:
        fired: list[TaskRun] = []

        def subscriber(event: Any) -> None:
            if (
                isinstance(event, StateChanged)
                and isinstance(event.run, TaskRun)
                and event.state.is_cancelled()
                and not fired
            ):
                fired.append(event.run)
                action()

        bus.subscribe((StateChanged,), subscriber)
        subscribers.append(subscriber)
        return fired

    yield arm
    for subscriber in subscribers:
        bus.unsubscribe(subscriber)


def _send_sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # as a kernel interrupts its main thread


def _sigint_later(seconds: float) -> None:
    def send() -> None:
        time.sleep(seconds)
        _send_sigint()

    threading.Thread(target=send, daemon=True).start()


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _ended(events: Any) -> FlowRun:
    """The one flow run that finished; every task run of it is final and resolved."""
    (run,) = [e.flow_run for e in events.of(FlowRunFinished)]
    assert run.state is not None
    assert run.state.is_final(), run.state
    for record in run.task_runs:
        assert record.state is not None, record.name
        assert record.state.is_final(), (record.name, record.state)
        assert record.future is None or record.future.done(), record.name
    return run


def _blocked(gate: threading.Event, **flow_options: Any) -> Any:
    @task
    def waits(x: int) -> int:
        gate.wait(30)
        return x

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1), **flow_options)
    def many_queued() -> None:
        waits.map(range(20))
        time.sleep(30)  # (the first interrupt lands here: in the body's own code)

    return many_queued


def test_a_second_ctrl_c_during_the_cancel_still_ends_every_run(
    events: Any, gate: threading.Event, at_first_cancelled_task_run: Any
) -> None:
    fired = at_first_cancelled_task_run(_send_sigint)
    _sigint_later(0.3)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _blocked(gate)()
    assert time.monotonic() - t0 < 10
    assert fired, "the second Ctrl-C was never sent"
    run = _ended(events)
    assert run.state.is_cancelled()
    assert len(run.task_runs) == 20
    assert all(r.state.is_cancelled() for r in run.task_runs)
    assert interrupts._signal.getsignal(signal.SIGINT) is interrupts._default_int_handler


def test_a_subscribers_keyboard_interrupt_during_the_cancel_resolves_that_run(
    events: Any, gate: threading.Event, at_first_cancelled_task_run: Any
) -> None:
    fired = at_first_cancelled_task_run(_raise_keyboard_interrupt)
    _sigint_later(0.3)
    with pytest.raises(KeyboardInterrupt):
        _blocked(gate)()
    run = _ended(events)
    (first,) = fired
    assert first.future is not None
    assert first.future.done()
    assert first.future.state.is_cancelled()
    assert all(r.state.is_cancelled() for r in run.task_runs)


def test_an_interrupt_in_the_flows_timeout_cancel_ends_the_run(
    events: Any, gate: threading.Event, at_first_cancelled_task_run: Any
) -> None:
    at_first_cancelled_task_run(_raise_keyboard_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _blocked(gate, timeout_seconds=0.3)()
    run = _ended(events)
    assert run.state.is_cancelled()
    assert "interrupted (KeyboardInterrupt)" in (run.state.message or "")


def test_an_interrupt_while_the_flow_run_starts_ends_it(events: Any) -> None:
    def at_running(event: Any) -> None:
        if isinstance(event.run, FlowRun) and event.state.is_running():
            raise KeyboardInterrupt

    @flow
    def never_runs() -> int:
        raise AssertionError("the body must not start")

    bus.subscribe((StateChanged,), at_running)
    try:
        with pytest.raises(KeyboardInterrupt):
            never_runs()
    finally:
        bus.unsubscribe(at_running)
    run = _ended(events)
    assert run.state.is_cancelled()


def test_an_interrupt_while_the_final_state_is_announced_still_records_the_end(
    events: Any,
) -> None:
    def at_final(event: Any) -> None:
        if isinstance(event.run, FlowRun) and event.state.is_final():
            raise KeyboardInterrupt

    @task
    def one() -> int:
        return 1

    @flow
    def inner() -> int:
        return one()

    @flow
    def outer() -> int:
        return inner()

    bus.subscribe((StateChanged,), at_final)
    try:
        with pytest.raises(KeyboardInterrupt):
            outer()
    finally:
        bus.unsubscribe(at_final)
    inner_run, outer_run = [e.flow_run for e in events.of(FlowRunFinished)]
    assert inner_run.state.is_completed()  # its body returned: its state stands
    record = inner_run.parent_task_run
    assert record is not None
    assert record.state.is_completed()  # the subflow's record ended with it
    # the interrupt went on into outer's body, which ended interrupted (and raised again)
    assert outer_run.state.is_cancelled()
    for run in (inner_run, outer_run):
        assert all(r.state.is_final() for r in run.task_runs)


def test_a_generator_flows_interrupted_cancel_ends_the_run(
    events: Any, gate: threading.Event, at_first_cancelled_task_run: Any
) -> None:
    at_first_cancelled_task_run(_raise_keyboard_interrupt)

    @task
    def waits(x: int) -> int:
        gate.wait(30)
        return x

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1), timeout_seconds=0.3)
    def values() -> Iterator[int]:
        waits.map(range(20))
        yield 1
        time.sleep(30)
        yield 2

    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        seen.extend(values())
    assert seen == [1]
    run = _ended(events)
    assert run.state.is_cancelled()


def test_ctrl_c_stops_the_body_of_a_flow_with_a_timeout(events: Any) -> None:
    ticks: list[int] = []

    @flow(timeout_seconds=60)
    def ticking() -> None:  # runs on a thread of its own (the timeout's)
        while True:
            time.sleep(0.01)
            ticks.append(1)

    _sigint_later(0.3)
    with pytest.raises(KeyboardInterrupt):
        ticking()
    run = _ended(events)
    assert run.state.is_cancelled()
    time.sleep(0.2)  # (a tick in flight when the interrupt arrived)
    stopped_at = len(ticks)
    time.sleep(0.5)
    assert len(ticks) == stopped_at, "the body kept running after Ctrl-C"


def test_an_async_run_cancelled_while_awaiting_a_retry_keeps_the_reason(events: Any) -> None:
    @flow(retries=1, retry_delay_seconds=60)
    async def fails_once() -> None:
        raise ValueError("first attempt fails")

    background = fails_once.run_background()
    deadline = time.monotonic() + 10
    while background.state.name != "AwaitingRetry":
        assert time.monotonic() < deadline, background.state
        time.sleep(0.01)
    assert background.cancel("Stopped from the notebook.")
    assert background.wait(10)
    state = background.result(raise_on_failure=False)
    assert state.is_cancelled()
    assert state.message == "Stopped from the notebook."
    _ended(events)


def test_the_shield_holds_a_sigint_until_it_ends() -> None:
    previous = signal.signal(signal.SIGINT, interrupts._on_sigint)
    try:
        interrupts.shield()
        interrupts.shield()
        _send_sigint()
        time.sleep(0.01)  # (a SIGINT raised here would fail the test)
        assert interrupts.unshield() is False  # the inner end: still held
        assert interrupts.unshield() is True
        interrupts.shield()
        assert interrupts.unshield() is False  # held once, told once
    finally:
        signal.signal(signal.SIGINT, previous)
