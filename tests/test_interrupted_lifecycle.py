"""A run's end is never cut short: an interrupt (a second Ctrl-C while a cancel goes on, a
subscriber's or hook's ``KeyboardInterrupt``, an event loop's cancel) that reaches the
lifecycle outside the body still leaves the flow run final, every task run final and every
future resolved; the interrupt goes on to the caller afterwards. And a Ctrl-C is never held
while user code or a wait for it runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flowbook.exceptions
from flowbook import flow, task
from flowbook.engine import flow_engine, interrupts
from flowbook.engine.events import Event, FlowRunFinished, StateChanged, bus
from flowbook.engine.runs import FlowRun, TaskRun
from flowbook.task_runners import SequentialTaskRunner, ThreadPoolTaskRunner


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


def _run_script(home: Path, script: str, *args: str, timeout: float = 120) -> str:
    """``script`` in a process of its own (``FLOWBOOK_HOME`` ``home``): its output; it must
    end with status 0."""
    env = {**os.environ, "FLOWBOOK_HOME": str(home), "FLOWBOOK_LOGGING_LEVEL": "CRITICAL"}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


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


def test_the_guard_stands_in_front_of_asyncios_handler_and_hands_it_held_interrupts() -> None:
    reached: list[str] = []

    async def main() -> None:
        runners = signal.getsignal(signal.SIGINT)  # asyncio.run's own
        assert interrupts.sigint_guard()
        try:
            assert signal.getsignal(signal.SIGINT) is interrupts._on_sigint
            interrupts.shield()
            _send_sigint()
            time.sleep(0.01)  # (held: asyncio's handler would cancel the task here)
            reached.append("held")
            assert interrupts.unshield() is False  # handed to asyncio's handler instead
        finally:
            interrupts.release_sigint()
        assert signal.getsignal(signal.SIGINT) is runners
        await asyncio.sleep(5)  # asyncio's handler cancelled the main task: ends here
        reached.append("slept")

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert reached == ["held"]
    assert time.monotonic() - t0 < 4


def test_a_callback_that_blocks_while_a_run_is_cancelled_stops_at_ctrl_c(
    events: Any, gate: threading.Event
) -> None:
    started = threading.Event()

    @task
    def waits(x: int) -> int:
        gate.wait(30)
        return x

    def blocks(future: Any) -> None:  # user code, called as the run is cancelled
        started.set()
        gate.wait(30)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def cancelled() -> None:
        futures = waits.map(range(3))
        futures[2].add_done_callback(blocks)
        time.sleep(30)

    def interrupts_twice() -> None:
        time.sleep(0.3)
        _send_sigint()  # the body stops; the cancel runs the callback
        if started.wait(10):
            time.sleep(0.1)
            _send_sigint()  # and this one stops the callback

    threading.Thread(target=interrupts_twice, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        cancelled()
    assert started.is_set()
    assert time.monotonic() - t0 < 10, "the callback was not interrupted"
    run = _ended(events)
    assert run.state.is_cancelled()


def test_a_second_interrupt_under_asyncio_run_still_ends_every_run(
    events: Any, gate: threading.Event, at_first_cancelled_task_run: Any
) -> None:
    # asyncio.run has its own SIGINT handler: the first interrupt cancels the main task,
    # the next ones raise wherever the main thread is
    fired = at_first_cancelled_task_run(_send_sigint)

    @task
    def waits(x: int) -> int:
        gate.wait(30)
        return x

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    async def many_queued() -> None:
        waits.map(range(50))
        await asyncio.sleep(30)

    _sigint_later(0.3)
    with pytest.raises((KeyboardInterrupt, asyncio.CancelledError)):
        asyncio.run(many_queued())
    assert fired
    run = _ended(events)
    assert run.state.is_cancelled()


BURST = """
import signal, sys, time
from flowbook import flow, task
from flowbook.engine import flow_engine, interrupts
from flowbook.engine.events import FlowRunFinished, bus
from flowbook.engine.flow_engine import FlowRunEngine
from flowbook.task_runners import SequentialTaskRunner, ThreadPoolTaskRunner

signal.signal(signal.SIGINT, signal.default_int_handler)  # (as in a kernel, or a terminal)
finished = []
bus.subscribe((FlowRunFinished,), lambda event: finished.append(event.flow_run))
start = FlowRunEngine.handle_exception.__code__
k = 0
while True:

    @task(retries=1, retry_delay_seconds=30)
    def fails(x):
        raise ValueError(x)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def stopped():
        futures = fails.map(range(4))
        while futures[0].state.name != "AwaitingRetry":
            time.sleep(0.001)
        raise KeyboardInterrupt  # the first Ctrl-C, in the body

    calls, ending = [0], [False]

    def tracer(frame, event, arg, k=k, calls=calls, ending=ending):
        if frame.f_code is start:
            ending[0] = True
        if ending[0]:
            calls[0] += 1
            if calls[0] > k:
                signal.raise_signal(signal.SIGINT)  # handled as this function starts

    finished.clear()
    sys.settrace(tracer)
    try:
        stopped()
        outcome = "returned"
    except KeyboardInterrupt:
        outcome = "KeyboardInterrupt"
    finally:
        sys.settrace(None)
    (run,) = finished
    assert outcome == "KeyboardInterrupt", (k, outcome)
    assert run.state.is_cancelled(), (k, run.state)
    for record in run.task_runs:
        assert record.state.is_final(), (k, record.name, record.state)
        assert record.future.done(), (k, record.name)
    assert not flow_engine._active, k
    assert interrupts.shields.stack == [] and not interrupts.shields.stack.held, k
    if calls[0] <= k:
        break
    k += 1
handler = signal.getsignal(signal.SIGINT)
assert handler is signal.default_int_handler, handler
print("bursts", k)
"""


def test_a_burst_of_ctrl_c_from_any_moment_of_a_runs_end_leaves_every_run_final(
    tmp_path: Path,
) -> None:
    """The first interrupt stops the body; from the k-th Python call the run's end makes on,
    a SIGINT arrives at every call (where CPython handles signals: as a Python function
    starts), for every k until the end makes fewer calls than k: Ctrl-C mashed from any
    moment. Every run ends, and the SIGINT handler and the shield are left as they were.

    In a process of its own, with a trace function set (which calls a function at each
    Python call) and SIGINTs sent to itself; the runs here wait for a retry, so no body is
    interrupted."""
    stdout = _run_script(tmp_path, BURST, timeout=300)
    bursts = int(stdout.split()[-1])
    assert bursts > 50  # (the end makes that many calls: a burst started at each)


def test_runs_still_going_at_exit_all_end_when_one_cancel_is_interrupted(
    events: Any, gate: threading.Event, at_first_cancelled_task_run: Any
) -> None:
    @task
    def waits() -> None:
        gate.wait(30)

    @flow
    def background() -> None:
        waits.submit()
        gate.wait(30)

    first, second = background.run_background(), background.run_background()
    deadline = time.monotonic() + 10
    while not all(r._engine.run.task_runs for r in (first, second)):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    fired = at_first_cancelled_task_run(_raise_keyboard_interrupt)
    flow_engine.end_active_runs()
    assert fired
    for handle in (first, second):
        run = handle._engine.run
        assert run.state.is_cancelled(), run.state
        assert all(r.state.is_final() for r in run.task_runs)
    gate.set()
    assert first.wait(10)
    assert second.wait(10)


def test_ctrl_c_stops_a_subflow_with_a_timeout_at_once(events: Any) -> None:
    ticks: list[int] = []

    @flow(timeout_seconds=30)
    def ticking() -> None:
        while True:
            time.sleep(0.01)
            ticks.append(1)

    @flow
    def parent() -> None:
        ticking()

    _sigint_later(0.3)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        parent()
    assert time.monotonic() - t0 < 5
    time.sleep(0.2)
    stopped_at = len(ticks)
    time.sleep(0.5)
    assert len(ticks) == stopped_at, "the subflow's body kept running after Ctrl-C"
    runs = [e.flow_run for e in events.of(FlowRunFinished)]
    assert [r.flow.name for r in runs] == ["ticking", "parent"]
    assert all(r.state.is_cancelled() for r in runs)


class _Ping(Event):
    __slots__ = ()


def test_a_subscribers_interrupt_leaves_the_later_subscribers_told() -> None:
    told: list[Any] = []

    def interrupts_first(event: Any) -> None:
        raise KeyboardInterrupt

    bus.subscribe((_Ping,), interrupts_first)
    bus.subscribe((_Ping,), told.append)
    try:
        with pytest.raises(KeyboardInterrupt):
            bus.emit(_Ping())
    finally:
        bus.unsubscribe(interrupts_first)
        bus.unsubscribe(told.append)
    assert len(told) == 1


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_run_cancelled_while_awaiting_a_retry_keeps_the_reason(
    events: Any, is_async: bool
) -> None:
    def fails() -> None:
        raise ValueError("first attempt fails")

    async def fails_async() -> None:
        raise ValueError("first attempt fails")

    fails_once = flow(retries=1, retry_delay_seconds=60)(fails_async if is_async else fails)
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
    with pytest.raises(flowbook.exceptions.RunCancelledError):
        background.result()
    _ended(events)


def test_an_interrupt_while_a_background_run_is_created_ends_it(events: Any) -> None:
    def at_pending(event: Any) -> None:
        if isinstance(event.run, FlowRun) and event.state.name == "Pending":
            raise KeyboardInterrupt

    @flow
    def quick() -> int:
        return 1

    bus.subscribe((StateChanged,), at_pending)
    try:
        with pytest.raises(KeyboardInterrupt):
            quick.run_background()
    finally:
        bus.unsubscribe(at_pending)
    run = _ended(events)
    assert run.state.is_cancelled()
    assert not flow_engine._active


@pytest.mark.parametrize("kind", ["task", "subflow", "subflow with a timeout"])
def test_a_ctrl_c_while_a_call_is_set_up_stops_it_before_its_body(kind: str) -> None:
    started: list[float] = []

    def busy() -> None:
        started.append(time.monotonic())
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:
            time.sleep(0.01)

    child = {
        "task": task(name="child")(busy),
        "subflow": flow(name="child")(busy),
        "subflow with a timeout": flow(name="child", timeout_seconds=30)(busy),
    }[kind]

    def at_pending(event: Any) -> None:  # (the parent's body is in flowbook code)
        run = event.run
        owner = run.task if isinstance(run, TaskRun) else run.flow
        if owner is not None and owner.name == "child" and event.state.name == "Pending":
            _send_sigint()

    @flow
    def parent() -> None:
        child()

    bus.subscribe((StateChanged,), at_pending)
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            parent()
    finally:
        bus.unsubscribe(at_pending)
    assert time.monotonic() - t0 < 2
    assert started == []  # the child's body never started


def test_a_ctrl_c_while_runs_end_at_exit_is_held_and_every_run_is_announced(
    events: Any, gate: threading.Event
) -> None:
    @flow
    def background() -> None:
        gate.wait(30)

    first, second = background.run_background(), background.run_background()
    deadline = time.monotonic() + 10
    while not all(h.state.is_running() for h in (first, second)):
        assert time.monotonic() < deadline
        time.sleep(0.01)

    def at_first_finish(event: Any) -> None:
        if isinstance(event.run, FlowRun) and event.state.is_final():
            bus.unsubscribe(at_first_finish)
            _send_sigint()  # a Ctrl-C while the process exits

    bus.subscribe((StateChanged,), at_first_finish)
    try:
        flow_engine.end_active_runs()  # (held, then dropped: exiting)
    finally:
        bus.unsubscribe(at_first_finish)
    announced = [e.flow_run for e in events.of(FlowRunFinished)]
    for handle in (first, second):
        assert handle._engine.run.state.is_cancelled()
        assert handle._engine.run in announced
    assert interrupts.shields.stack == []
    assert interrupts._signal.getsignal(signal.SIGINT) is interrupts._default_int_handler
    gate.set()
    assert first.wait(10)
    assert second.wait(10)


def test_a_ctrl_c_inside_a_submit_on_the_sequential_runner_reaches_the_caller(
    events: Any,
) -> None:
    after: list[str] = []

    @task
    def one(x: int) -> int:
        return x

    def at_pending(event: Any) -> None:  # (the body is inside .submit(): flowbook code)
        if isinstance(event.run, TaskRun) and event.state.name == "Pending" and not after:
            after.append("sent")
            _send_sigint()

    @flow(task_runner=SequentialTaskRunner())
    def submits() -> int:
        one.submit(1)
        after.append("body went on")
        return 1

    bus.subscribe((StateChanged,), at_pending)
    try:
        with pytest.raises(KeyboardInterrupt):
            submits()
    finally:
        bus.unsubscribe(at_pending)
    assert after == ["sent"]
    (run,) = [e.flow_run for e in events.of(FlowRunFinished)]
    assert run.state.is_cancelled()


@pytest.mark.parametrize("how", ["submit", "map"])
def test_a_ctrl_c_in_a_task_body_on_the_sequential_runner_stops_the_flow_there(
    events: Any, how: str
) -> None:
    """As when the task is called: the run ends Cancelled, the interrupt reaches the flow's
    body (no later task starts) and the flow run ends Cancelled. Before, the runner kept it:
    the flow went on with its next tasks and was cancelled only when it read a result."""
    started: list[int] = []

    @task
    def slow(i: int) -> int:
        started.append(i)
        if i == 0:
            _send_sigint()
            time.sleep(5)  # (the SIGINT lands here)
        return i

    @flow(task_runner=SequentialTaskRunner())
    def runs_three() -> list[int]:
        if how == "map":
            return slow.map(range(3)).result()  # type: ignore[no-any-return]
        futures = [slow.submit(i) for i in range(3)]
        return [f.result() for f in futures]

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runs_three()
    assert time.monotonic() - t0 < 4
    assert started == [0]
    (run,) = [e.flow_run for e in events.of(FlowRunFinished)]
    assert run.state.is_cancelled()
    assert [(r.name, r.state.name) for r in run.task_runs] == [("slow-0", "Cancelled")]


def test_a_top_level_run_inside_another_leaves_the_outer_runs_guard(events: Any) -> None:
    seen: dict[str, bool] = {}

    @flow
    def inner() -> int:
        return 1

    def hook(flow_: Any, run: Any, state: Any) -> None:
        inner()  # a top-level run: hooks run outside any run context

    @flow(on_running=[hook])
    def outer() -> int:
        seen["outer body"] = signal.getsignal(signal.SIGINT) is interrupts._on_sigint
        return 2

    @flow
    def values() -> Iterator[int]:
        yield 1
        seen["between values"] = signal.getsignal(signal.SIGINT) is interrupts._on_sigint
        yield 2

    assert outer() == 2
    for _ in values():
        inner()
    assert seen == {"outer body": True, "between values": True}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert interrupts._previous is None


TRACED_CANCEL = """
import json, sys, threading, time
from flowbook import flow, task

trace_all = sys.argv[1] == "all"
started, release, body_ended = threading.Event(), threading.Event(), []

@task
def blocked_in_c():
    started.set()
    try:
        release.wait(60)  # (blocked in C: an asynchronous exception waits for it to return)
    except BaseException as exc:
        body_ended.append(type(exc).__name__)
        raise
    body_ended.append("returned")

@flow
def cancelled():
    blocked_in_c.submit()
    started.wait(10)
    raise KeyboardInterrupt

def traced_call():
    return 1

tracer = lambda *a: None  # noqa: E731
if trace_all:
    threading.settrace(tracer)
sys.settrace(tracer)
t0 = time.perf_counter()
try:
    cancelled()
except KeyboardInterrupt:
    pass
returned = time.perf_counter() - t0
release.set()  # the body's exception is delivered now; then its end takes it back
deadline = time.monotonic() + 10
while not body_ended and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.1)  # (the body's end is done)
t0 = time.perf_counter()
for _ in range(1000):
    traced_call()
after = time.perf_counter() - t0
sys.settrace(None)
print(json.dumps({"returned": returned, "body_ended": body_ended, "after": after}))
"""


@pytest.mark.parametrize("traced", ["main", "all"])
def test_a_cancel_under_a_trace_function_neither_spins_nor_hangs(
    tmp_path: Path, traced: str
) -> None:
    """A debugger or coverage sets a trace function. A flow cancelled while its task is
    blocked in C returns at once, the task's body still gets its interrupt when it wakes,
    and traced calls go on afterwards. Before: CPython 3.11 left the main thread looping at
    its next call until the task woke (the exception's flag stayed set), and for good once
    the body's end took its exception back."""
    stdout = _run_script(tmp_path, TRACED_CANCEL, traced)
    outcome = json.loads(stdout.splitlines()[-1])
    assert outcome["returned"] < 5, outcome  # (the task waits up to 60 s)
    assert outcome["body_ended"] == ["RunInterrupted"], outcome
    assert outcome["after"] < 5, outcome


def test_a_background_runs_cancel_from_a_task_body_is_flowbook_code(
    events: Any, gate: threading.Event
) -> None:
    """``BackgroundRun.cancel()`` called from a body is flowbook's bookkeeping: an interrupt
    of that body waits until the cancel is done (depth > 0 while it runs), as for any other
    flowbook call made from user code."""
    depths: list[int | None] = []

    @task
    def waits() -> None:
        gate.wait(30)

    @flow
    def in_background() -> None:
        waits.submit().wait()

    def on_cancelled(event: Any) -> None:
        # (the waiting task run is ended by the cancel, on the thread that cancels)
        if event.run.name.startswith("waits") and event.state.is_cancelled():
            body = interrupts.current_body()
            depths.append(None if body is None else body.depth)

    handle = in_background.run_background()

    @task
    def cancels() -> bool:
        return handle.cancel("from a task")

    @flow
    def canceller() -> bool:
        return cancels()

    bus.subscribe((StateChanged,), on_cancelled)
    try:
        assert canceller() is True
    finally:
        bus.unsubscribe(on_cancelled)
    assert handle.wait(10)
    assert handle.state.is_cancelled()
    assert depths == [1], depths  # (one level: the cancel, called from the task's body)


FORK_AFTER_INTERRUPT = """
import os, sys, threading, time
from flowbook.engine.interrupts import call_body, interrupt

class Stop(BaseException):
    pass

def traced_child():
    sys.settrace(lambda *a: None)  # (coverage in a forked child, say)
    def f():
        return 1
    f()
    os._exit(0)

outcomes = []
for _ in range(2):  # the process's first interrupt, then with the settler running
    registered, ready, gate = [], threading.Event(), threading.Event()
    def body():
        ready.set()
        gate.wait(5)  # (blocked in C: the exception waits for it)
    def target():
        try:
            call_body(body, (), {}, registered.append)
        except Stop:
            pass
    thread = threading.Thread(target=target)
    thread.start()
    ready.wait()
    time.sleep(0.01)
    interrupt(registered[0], Stop)
    pid = os.fork()  # (before the settler has had the GIL)
    if pid == 0:
        traced_child()
    deadline = time.monotonic() + 5
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            outcomes.append("looped")
            break
        time.sleep(0.02)
    else:
        outcomes.append("returned")
    gate.set()
    thread.join()
print(outcomes)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork: POSIX only")
def test_a_child_forked_right_after_an_interrupt_does_not_loop_under_a_trace_function(
    tmp_path: Path,
) -> None:
    """The flag a send sets is cleared before a fork: the child has neither the settler nor
    the target to clear it, and on CPython 3.11 its traced thread looped at its first call."""
    stdout = _run_script(tmp_path, FORK_AFTER_INTERRUPT)
    assert stdout.split("\n")[-2] == "['returned', 'returned']", stdout


CHILD_LEAVES_AN_INTERRUPTED_BODY = """
import os, signal, sys, threading, time
from flowbook.engine.interrupts import call_body, interrupt

class Stop(Exception):
    pass

registered, ready, forked = [], threading.Event(), []

def body():
    ready.set()
    try:
        time.sleep(1)  # (blocked in C: the exception arrives as it returns)
    except Stop:  # the body handles its interrupt, and forks (a clean-up worker, say)
        pid = os.fork()
        if pid:
            forked.append(pid)
            return
        signal.setitimer(signal.ITIMER_REAL, 5.0)  # (a child that loops dies of SIGALRM)
        sys.settrace(lambda *a: None)  # (coverage in the child, say)
        sys.exit(0)  # through call_body's finally

def target():
    try:
        call_body(body, (), {}, registered.append)
    finally:
        if not forked:  # the child, after call_body's finally
            (lambda: 1)()  # a traced call
            os._exit(0)

thread = threading.Thread(target=target)
thread.start()
ready.wait()
time.sleep(0.01)
interrupt(registered[0], Stop)
thread.join()
_, status = os.waitpid(forked[0], 0)
print("looped" if os.WIFSIGNALED(status) else "returned")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork: POSIX only")
def test_a_forked_child_leaving_an_interrupted_body_does_not_loop_under_a_trace_function(
    tmp_path: Path,
) -> None:
    """The body's exception was sent in the parent: the child has no settler, and taking it
    back there would set the flag for good, so the child leaves it."""
    stdout = _run_script(tmp_path, CHILD_LEAVES_AN_INTERRUPTED_BODY)
    assert stdout.split() == ["returned"], stdout


NO_THREAD_FOR_THE_SETTLER = """
import os, queue, resource, threading, time
from flowbook.engine.interrupts import call_body, interrupt

class Stop(BaseException):
    pass

registered, log = [], []

def body():
    queue.SimpleQueue().get(timeout=0.3)  # (ends with Empty: the exception has not arrived)

def target():
    try:
        try:
            call_body(body, (), {}, registered.append)
        except queue.Empty:
            log.append("body ended")
            for _ in range(3):  # the caller's own code after the body
                (lambda: None)()
            log.append("caller went on")
    except Stop:
        log.append("Stop raised in the caller's code")

thread = threading.Thread(target=target)
thread.start()
while not registered:
    time.sleep(0.01)
time.sleep(0.02)
# no room for another thread's stack: the settler cannot start
used = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (used + (2 << 20), resource.RLIM_INFINITY))
try:
    sent = interrupt(registered[0], Stop)
finally:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
thread.join()
print(sent, log)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_an_exception_sent_when_no_settler_can_start_is_still_taken_back(
    tmp_path: Path,
) -> None:
    """The body ended (by itself) before its exception arrived: it is taken back, as ever,
    even though no thread could be started to clear CPython's flag afterwards."""
    stdout = _run_script(tmp_path, NO_THREAD_FOR_THE_SETTLER)
    assert stdout.splitlines()[-1] == "True ['body ended', 'caller went on']", stdout


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="a new thread has no id before it runs")
def test_an_interrupt_waits_while_a_thread_is_being_started() -> None:
    """On 3.10 and 3.11 a thread being started has its creator's id until it runs: a send
    then could reach it instead of the body (which would wait in ``Thread.start`` for good).
    So while ``threading`` starts a thread, the send waits (a second at most)."""
    registered: list[interrupts.Body | None] = []
    outcome: list[str] = []
    looping = threading.Event()

    def body() -> None:
        looping.set()
        while True:  # (the user's own code, in Python: stopped at its next instruction)
            pass

    def target() -> None:
        try:
            interrupts.call_body(body, (), {}, registered.append)
        except flowbook.exceptions.RunInterrupted:
            outcome.append("stopped")

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert looping.wait(5)
    being_started = threading.Thread(target=lambda: None)  # (stands for one in Thread.start)
    threading._limbo[being_started] = being_started  # type: ignore[attr-defined]
    try:
        assert interrupts.interrupt(registered[0], flowbook.exceptions.RunInterrupted)
        time.sleep(0.1)
        assert outcome == []  # not sent yet
    finally:
        del threading._limbo[being_started]  # type: ignore[attr-defined]
    thread.join(0.8)  # (the send is made once no thread is being started, not at the second)
    assert outcome == ["stopped"]


# bodies on threads of their own, for the scripts below: ``spawn(fn)`` gives the body, what
# became of it ("stopped" by ``Stop``, or "never stopped") and its thread
SPAWN = """
import os, sys, threading, time
from flowbook.engine import interrupts

class Stop(BaseException):
    pass

def spawn(fn):
    registered, outcome = [], []
    def target():
        try:
            interrupts.call_body(fn, (), {}, registered.append)
            outcome.append("never stopped")
        except Stop:
            outcome.append("stopped")
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    while not registered:
        time.sleep(0.001)
    return registered[0], outcome, thread
"""

STARTS_THREADS = (
    SPAWN
    + """
os.sched_setaffinity(0, {0})  # (one core: a new thread seldom runs at once)

def starts_threads():
    while True:  # the user's code starts threads (a small pool of its own, say)
        threading.Thread(target=lambda: None).start()

def trial():
    body, outcome, thread = spawn(starts_threads)
    time.sleep(0.02)
    interrupts.interrupt(body, Stop)
    thread.join(2)
    return outcome[0] if outcome else "not stopped"

results = [trial() for _ in range(30)]
print(results.count("stopped"))
"""
)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="sched_setaffinity: Linux")
def test_a_body_that_keeps_starting_threads_is_stopped(tmp_path: Path) -> None:
    """30 interrupts of a body that starts threads in a loop, on one core: each stops it
    (before, about one in 15 reached a thread being started, and the body hung)."""
    assert _run_script(tmp_path, STARTS_THREADS).split()[-1] == "30"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="a new thread has no id before it runs")
def test_a_thread_start_cut_short_holds_up_interrupts_once() -> None:
    """A start cut short leaves its entry among the threads being started for good: the send
    made while it is there waits its second once; later ones are made at once."""
    left_behind = threading.Thread(target=lambda: None)
    threading._limbo[left_behind] = left_behind  # type: ignore[attr-defined]
    try:
        waits = []
        for _ in range(2):
            registered: list[interrupts.Body | None] = []
            stopped = threading.Event()

            def body() -> None:
                while True:
                    pass

            def target(registered: list[Any] = registered, stopped: Any = stopped) -> None:
                try:
                    interrupts.call_body(body, (), {}, registered.append)
                except flowbook.exceptions.RunInterrupted:
                    stopped.set()

            threading.Thread(target=target, daemon=True).start()
            while not registered:
                time.sleep(0.001)
            t0 = time.monotonic()
            interrupts.interrupt(registered[0], flowbook.exceptions.RunInterrupted)
            assert stopped.wait(5)
            waits.append(time.monotonic() - t0)
    finally:
        del threading._limbo[left_behind]  # type: ignore[attr-defined]
    assert 0.9 < waits[0] < 3, waits
    assert waits[1] < 0.5, waits


FORKS_WHILE_A_SEND_WAITS = (
    SPAWN
    + """
def spin():
    while True:
        pass

fork_now = threading.Event()
def forks():
    while not fork_now.is_set():
        pass
    pid = os.fork()  # (the user's own code: multiprocessing, say)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    end = time.monotonic() + 1.5  # and goes on
    while time.monotonic() < end:
        pass

forker, forker_outcome, forker_thread = spawn(forks)
other, other_outcome, other_thread = spawn(spin)
being_started = threading.Thread(target=lambda: None)
threading._limbo[being_started] = being_started
interrupts.interrupt(forker, Stop)  # put off: a thread is being started
del threading._limbo[being_started]
interrupts.interrupt(other, Stop)  # sent now: a clearing of the flag is still to come
threading._limbo[being_started] = being_started
fork_now.set()  # the fork waits for that clearing; the put-off send may come meanwhile
time.sleep(0.2)
del threading._limbo[being_started]
forker_thread.join(3)
other_thread.join(3)
print(forker_outcome, other_outcome)
"""
)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="a new thread has no id before it runs")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork: POSIX only")
def test_a_send_made_while_the_body_waits_in_the_fork_hook_is_kept(tmp_path: Path) -> None:
    """Raised in a fork hook, CPython drops an exception: one sent to a body waiting in
    flowbook's own hook is kept, and made again after the fork."""
    stdout = _run_script(tmp_path, FORKS_WHILE_A_SEND_WAITS)
    assert stdout.splitlines()[-1] == "['stopped'] ['stopped']", stdout
