"""A large ``.map()`` keeps the runs queued ahead of its workers few (flowbook.engine.pacing),
and never hangs or loses a run for it."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.engine import pacing
from flowbook.engine.events import FlowRunFinished
from flowbook.engine.runs import current_flow_run
from flowbook.task_runners import SequentialTaskRunner, ThreadPoolTaskRunner
from flowbook.task_runners.base import SubmittedCall
from flowbook.task_runners.thread_pool import _refuse


class Gate:
    """A call for the pool that blocks its worker until ``release`` is set."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def run(self) -> None:
        self.release.wait(30)


@pytest.fixture
def small_ahead(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(pacing, "AHEAD", 300)
    return 300


def _queue_seen(seen: list[int]) -> None:
    runner = current_flow_run.get().task_runner  # type: ignore[union-attr]
    seen.append(runner.queued_calls())  # type: ignore[union-attr]


def _queue_sizes_seen(n: int) -> list[int]:
    """Map a task over ``n`` inputs; the length of the pool's queue each run saw."""
    seen: list[int] = []

    @task
    def work(x: int) -> int:
        _queue_seen(seen)
        return x * 2

    @flow
    def big(n: int) -> list[int]:
        return work.map(range(n)).result()

    assert big(n) == [x * 2 for x in range(n)]
    assert len(seen) == n
    return seen


def test_a_large_map_keeps_its_queue_short_and_every_run_ends(small_ahead: int) -> None:
    seen = _queue_sizes_seen(20_000)
    # checked every CHECK_EVERY submitted runs: at most that many more than AHEAD queued
    assert max(seen) <= small_ahead + pacing.CHECK_EVERY


def test_without_pacing_the_same_map_queues_thousands(monkeypatch: pytest.MonkeyPatch) -> None:
    # the measurement above can fail: unpaced, the flow's thread runs far ahead of the workers
    monkeypatch.setattr(pacing, "AHEAD", 10**9)
    assert max(_queue_sizes_seen(20_000)) > 300 + pacing.CHECK_EVERY


def test_runs_that_wait_for_the_flow_past_the_map_do_not_hang_it(
    small_ahead: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pacing, "STALL_S", 0.2)
    go = threading.Event()
    returned_after: list[float] = []

    @task
    def waits(x: int) -> int:
        assert go.wait(30), "the flow never went past the map"
        return x

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def gated(n: int) -> list[int]:
        t0 = time.monotonic()
        futures = waits.map(range(n))
        returned_after.append(time.monotonic() - t0)
        go.set()  # only now can the runs end
        return futures.result()

    assert gated(5_000) == list(range(5_000))
    # the workers took nothing: the map stopped waiting after STALL_S, once
    assert returned_after[0] < 5


def test_slow_runs_hold_the_map_back_for_a_bounded_time(
    small_ahead: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pacing, "BUDGET", 1.0)
    returned_after: list[float] = []

    @task
    def slow(x: int) -> int:
        time.sleep(0.005)  # 4 workers: 800 runs a second, never a stall
        return x

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def slow_map(n: int) -> int:
        t0 = time.monotonic()
        futures = slow.map(range(n))
        returned_after.append(time.monotonic() - t0)
        return len(futures.result())

    t0 = time.monotonic()
    assert slow_map(2_000) == 2_000
    total = time.monotonic() - t0
    # the runs take about 2.5 s; the map waited at most as long as it spent submitting
    # (well under a second), so it returned long before the runs ended
    assert returned_after[0] < total / 2


def test_small_maps_maps_in_tasks_and_runners_without_a_queue_are_not_paced(
    small_ahead: int,
) -> None:
    made: list[pacing.MapPacer | None] = []

    @flow
    def pool_flow() -> None:
        run = current_flow_run.get()
        made.append(pacing.MapPacer.for_map(small_ahead, run, in_task=False))
        made.append(pacing.MapPacer.for_map(small_ahead + 1, run, in_task=True))
        made.append(pacing.MapPacer.for_map(small_ahead + 1, run, in_task=False))

    @flow(task_runner=SequentialTaskRunner())
    def sequential_flow() -> None:
        made.append(pacing.MapPacer.for_map(10**6, current_flow_run.get(), in_task=False))

    pool_flow()
    sequential_flow()
    assert made[0] is None
    assert made[1] is None
    assert made[3] is None
    assert isinstance(made[2], pacing.MapPacer)
    assert pacing.MapPacer.for_map(10**6, None, in_task=False) is None


def _pool_runner_with_queue(n_queued: int, release: threading.Event) -> Any:
    runner = ThreadPoolTaskRunner(max_workers=1)
    runner.start()
    for _ in range(n_queued + 1):  # the first one occupies the only worker
        runner._execute(Gate(release))  # type: ignore[arg-type]
    deadline = time.monotonic() + 5
    while runner.queued_calls() != n_queued and time.monotonic() < deadline:
        time.sleep(0.001)
    assert runner.queued_calls() == n_queued
    return runner


def test_a_cancelled_flow_run_ends_the_wait_at_once(
    small_ahead: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pacing, "STALL_S", 60.0)
    release, cancel = threading.Event(), threading.Event()
    runner = _pool_runner_with_queue(small_ahead + 50, release)
    try:
        pacer = pacing.MapPacer(runner, cancel)
        pacer._started -= 60  # a budget of minutes: only the cancel can end this wait
        threading.Timer(0.2, cancel.set).start()
        t0 = time.monotonic()
        pacer.pace()
        waited = time.monotonic() - t0
        assert 0.15 < waited < 5
        assert pacer.stopped
        assert pacer.waits == 1
        t0 = time.monotonic()
        pacer.pace()  # stopped: no more waiting for this map
        assert time.monotonic() - t0 < 0.1
    finally:
        release.set()
        runner.shutdown()


def test_a_stalled_queue_ends_the_wait_and_the_budget_bounds_it(
    small_ahead: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, cancel = threading.Event(), threading.Event()
    runner = _pool_runner_with_queue(small_ahead + 50, release)
    try:
        monkeypatch.setattr(pacing, "STALL_S", 0.3)
        pacer = pacing.MapPacer(runner, cancel)
        pacer._started -= 60
        t0 = time.monotonic()
        pacer.pace()
        assert 0.25 < time.monotonic() - t0 < 5  # nothing taken for STALL_S: it gave up
        assert pacer.stopped

        monkeypatch.setattr(pacing, "STALL_S", 60.0)
        monkeypatch.setattr(pacing, "BUDGET", 3.0)
        pacer = pacing.MapPacer(runner, cancel)  # a map that has submitted for about 0.1 s
        time.sleep(0.1)
        t0 = time.monotonic()
        pacer.pace()
        waited = time.monotonic() - t0
        assert 0.2 < waited < 3  # BUDGET times its submitting time
        assert not pacer.stopped  # it waits again once it has submitted more
        t0 = time.monotonic()
        pacer.pace()  # no budget left (but what the moment between the calls earned)
        assert time.monotonic() - t0 < 0.05
    finally:
        release.set()
        runner.shutdown()


def _blocked_map_flow(go: threading.Event, **flow_options: Any) -> Any:
    @task
    def waits(x: int) -> int:
        go.wait(30)
        return x

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2), **flow_options)
    def blocked(n: int) -> int:
        return len(waits.map(range(n)).result())

    return blocked


@pytest.fixture
def waits_end_only_by_interrupts(monkeypatch: pytest.MonkeyPatch) -> None:
    """No stall limit and a budget of minutes: only an interrupt ends a map's wait."""
    monkeypatch.setattr(pacing, "STALL_S", 60.0)
    monkeypatch.setattr(pacing, "BUDGET", 1000.0)


@pytest.mark.usefixtures("waits_end_only_by_interrupts")
def test_a_kernel_interrupt_stops_a_waiting_map_at_once(small_ahead: int, events: Any) -> None:
    go = threading.Event()
    blocked = _blocked_map_flow(go)

    def interrupt_then_release() -> None:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)  # as a kernel interrupts its main thread
        time.sleep(0.5)
        go.set()

    threading.Thread(target=interrupt_then_release, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        blocked(50_000)
    assert time.monotonic() - t0 < 5
    go.set()
    (run,) = _flow_runs(events)
    _all_runs_end(run)
    assert run.state.is_cancelled()
    assert len(run.task_runs) < 50_000  # the map stopped submitting


@pytest.mark.usefixtures("waits_end_only_by_interrupts")
def test_a_flow_timeout_stops_a_waiting_map(small_ahead: int, events: Any) -> None:
    go = threading.Event()
    blocked = _blocked_map_flow(go, timeout_seconds=0.5)
    t0 = time.monotonic()
    state = blocked(50_000, return_state=True)
    took = time.monotonic() - t0
    go.set()
    assert took < 5
    assert state.is_failed() or state.is_cancelled(), state
    assert "timed out" in (state.message or "").lower() or "timeout" in repr(state).lower()
    (run,) = _flow_runs(events)
    _all_runs_end(run)
    assert len(run.task_runs) < 50_000


def _flow_runs(events: Any) -> list[Any]:
    return [e.flow_run for e in events.of(FlowRunFinished)]


def _all_runs_end(run: Any) -> None:
    deadline = time.monotonic() + 30
    while any(r.state is None or not r.state.is_final() for r in run.task_runs):
        assert time.monotonic() < deadline, "a task run never ended"
        time.sleep(0.01)


class Recorded(SubmittedCall):
    """A call for the pool that records whether it ran or was cancelled."""

    upstream = ()

    def __init__(self, log: list[str], i: int) -> None:
        self.log, self.i = log, i

    def run(self) -> None:
        self.log.append(f"ran {self.i}")

    def cancel(self, reason: str) -> None:
        self.log.append(f"cancelled {self.i}: {reason}")


def _task_threads() -> int:
    return sum(t.name.startswith("flowbook-task_") for t in threading.enumerate())


def test_a_call_given_after_a_cancelling_shutdown_ends_cancelled_at_once() -> None:
    release, log = threading.Event(), []
    runner = _pool_runner_with_queue(2, release)  # a busy worker, two calls queued behind it
    runner.shutdown(cancel_pending=True)
    release.set()
    threads = _task_threads()
    for i in range(3):
        runner._execute(Recorded(log, i))
    assert log == [
        f"cancelled {i}: The flow run's task runner shut down before this task run started."
        for i in range(3)
    ]
    assert _task_threads() <= threads  # no new pool, no new worker thread
    runner.start()  # started again (as a fresh runner is), it runs calls again
    try:
        done = threading.Event()
        runner._execute(Recorded(log, 9))
        runner._execute(Gate(done))  # type: ignore[arg-type]
        done.set()
        deadline = time.monotonic() + 5
        while "ran 9" not in log:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        runner.shutdown()


def test_queued_runs_of_a_timed_out_flow_say_why_they_never_started(events: Any) -> None:
    @task
    def slow() -> None:
        time.sleep(2)

    @task
    def later() -> None:
        pass

    @flow(timeout_seconds=0.3, task_runner=ThreadPoolTaskRunner(max_workers=1))
    def bounded() -> None:
        slow.submit()
        later.submit().wait()  # queued behind slow-0 on the only worker

    state = bounded(return_state=True)
    assert state.name == "TimedOut"
    (run,) = _flow_runs(events)
    by_name = {r.name: r.state for r in run.task_runs}
    assert by_name["later-0"].message == "The flow run timed out before this task run started."
    assert by_name["slow-0"].message == "The flow run timed out while this task run was running."


def test_a_timeout_in_the_middle_of_a_large_map_leaves_no_run_pending(
    monkeypatch: pytest.MonkeyPatch, events: Any
) -> None:
    # pacing off: the map goes on submitting after the flow run was cancelled (its timeout
    # is held back while the map's own code runs); the runs it queued after the cancel must
    # still end when the flow run does
    monkeypatch.setattr(pacing, "AHEAD", 10**9)
    go = threading.Event()
    blocked = _blocked_map_flow(go, timeout_seconds=0.05)
    threads = _task_threads()
    state = blocked(60_000, return_state=True)
    go.set()
    assert state.is_failed(), state
    (run,) = _flow_runs(events)
    deadline = time.monotonic() + 60
    while len(run.task_runs) < 60_000:  # the timed-out body goes on until the map returns
        assert time.monotonic() < deadline, "the map never finished submitting"
        time.sleep(0.01)
    _all_runs_end(run)
    deadline = time.monotonic() + 10
    while _task_threads() > threads:  # the flow run's workers end; no pool is left behind
        assert time.monotonic() < deadline, "a pool's worker threads were left running"
        time.sleep(0.01)


def test_an_async_subflows_map_leaves_its_callers_timeout_to_its_caller(
    small_ahead: int, events: Any
) -> None:
    after: list[str] = []

    @task
    def work(x: int) -> int:
        return x

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    async def child(n: int) -> int:
        return len(work.map(range(n)))

    @flow(timeout_seconds=0.3)
    def parent(n: int) -> None:
        state = child(n, return_state=True)
        after.append(state.name)  # the timeout is raised here, once the subflow call returns
        after.append("the parent body went on")

    state = parent(60_000, return_state=True)
    assert state.name == "TimedOut"
    deadline = time.monotonic() + 60
    while not (children := [r for r in _flow_runs(events) if r.flow.name == "child"]):
        assert time.monotonic() < deadline, "the subflow never ended"
        time.sleep(0.01)
    time.sleep(0.3)  # the parent's body, back from the subflow call, gets its timeout now
    assert [r.state.name for r in children] == ["Completed"]  # not failed by it
    assert after == []


def test_a_cancel_ends_a_long_chain_of_waiting_runs_with_its_reason(events: Any) -> None:
    # cancelling the running root ends each waiting run in turn, through the callbacks of
    # the one before: iteratively, not one stack frame per link
    go = threading.Event()

    @task
    def root() -> int:
        go.wait(30)
        return 0

    @task
    def step(x: int) -> int:
        return x + 1

    @flow(timeout_seconds=0.5)
    def chain(n: int) -> int:
        f = root.submit()
        for _ in range(n):
            f = step.submit(f)
        return f.result()

    state = chain(2_000, return_state=True)
    go.set()
    assert state.name == "TimedOut", state
    (run,) = _flow_runs(events)
    _all_runs_end(run)
    messages = {r.state.message for r in run.task_runs if r.name.startswith("step")}
    assert messages == {"The flow run timed out before this task run started."}
    (root_run,) = [r for r in run.task_runs if r.name.startswith("root")]
    assert root_run.state.message == "The flow run timed out while this task run was running."


class Link(SubmittedCall):
    """A call whose cancel releases the next link (as a run's end calls its dependents'
    callbacks, which give them to the runner) and may raise."""

    upstream = ()

    def __init__(self, log: list[int], i: int, last: int, raises: set[int]) -> None:
        self.log, self.i, self.last, self.raises = log, i, last, raises

    def run(self) -> None:
        raise AssertionError("a refused call never runs")

    def cancel(self, reason: str) -> None:
        self.log.append(self.i)
        if self.i < self.last:
            _refuse(Link(self.log, self.i + 1, self.last, self.raises), reason)
        if self.i in self.raises:
            raise RuntimeError(f"link {self.i}")


def test_refusing_a_long_chain_ends_every_link_and_raises_the_first_error() -> None:
    log: list[int] = []
    with pytest.raises(RuntimeError, match="link 40"):
        _refuse(Link(log, 0, 5_000, {40, 3_000}), "stop")
    assert log == list(range(5_001))  # every link, in order, none lost to the errors
    log.clear()
    _refuse(Link(log, 0, 10, set()), "stop")  # the thread's state was reset after the error
    assert log == list(range(11))
