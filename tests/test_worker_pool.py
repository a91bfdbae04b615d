"""The task runners' thread pool, the collector freeze during flow runs, and task-run ids."""

from __future__ import annotations

import gc
import re
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from flowbook import flow, task
from flowbook.engine.runs import new_id, new_ordered_id
from flowbook.settings import reload_settings
from flowbook.task_runners import ConcurrentTaskRunner
from flowbook.task_runners._pool import PoolClosedError, WorkerPool


class Call:
    """A queued call as the pool takes it: an object with ``run()`` (a task run's engine)."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn

    def run(self) -> None:
        self.fn()


def test_threads_start_only_when_no_idle_worker_can_take_a_call() -> None:
    pool = WorkerPool(4, "t-pool")
    done = threading.Event()
    for _ in range(20):
        finished = threading.Event()
        pool.submit(Call(finished.set))
        assert finished.wait(5)
        time.sleep(0.005)  # the worker is back in the queue: it takes the next call
    assert len(pool._threads) == 1
    gate = threading.Barrier(4, timeout=5)
    for _ in range(4):
        pool.submit(Call(gate.wait))  # four calls that only finish together need four threads
    pool.submit(Call(done.set))
    assert done.wait(5)
    assert len(pool._threads) == 4
    assert {t.name for t in pool._threads} == {f"t-pool_{i}" for i in range(4)}
    pool.shutdown(wait=True)
    assert not any(t.is_alive() for t in pool._threads)


def test_errors_and_interrupts_of_a_call_leave_the_worker_running() -> None:
    pool = WorkerPool(1, "t-err")
    ran: list[int] = []

    def boom() -> None:
        raise KeyboardInterrupt  # a BaseException, like RunInterrupted raised into the thread

    pool.submit(Call(boom))
    pool.submit(Call(lambda: ran.append(1)))
    pool.shutdown(wait=True)
    assert ran == [1]
    assert len(pool._threads) == 1


def test_shutdown_with_cancel_pending_returns_the_calls_not_started() -> None:
    pool = WorkerPool(1, "t-cancel")
    started = threading.Event()
    release = threading.Event()

    def first() -> None:
        started.set()
        release.wait(5)

    pool.submit(Call(first))
    assert started.wait(5)
    later = [Call(lambda: None), Call(lambda: None)]
    for fn in later:
        pool.submit(fn)
    dropped = pool.shutdown(wait=False, cancel_pending=True)
    assert dropped == later
    with pytest.raises(PoolClosedError, match="t-cancel pool is shut down"):
        pool.submit(Call(lambda: None))
    release.set()
    pool._threads[0].join(5)
    assert not pool._threads[0].is_alive()


def test_sleeping_tasks_run_at_once_on_the_default_runner() -> None:
    @task
    def nap(i: int) -> str:
        time.sleep(0.3)
        return threading.current_thread().name

    @flow(task_runner=ConcurrentTaskRunner(max_workers=3))
    def naps() -> list[str]:
        return nap.map(range(3)).result()

    start = time.perf_counter()
    names = naps()
    assert time.perf_counter() - start < 0.55
    assert len(set(names)) == 3
    assert all(re.fullmatch(r"flowbook-task_\d", n) for n in names)


def test_objects_older_than_a_flow_run_are_frozen_while_it_runs() -> None:
    seen: list[int] = []

    @flow
    def inner() -> None:
        seen.append(gc.get_freeze_count())

    @flow
    def outer() -> None:
        seen.append(gc.get_freeze_count())
        inner()  # a subflow: no second freeze
        seen.append(gc.get_freeze_count())

    assert gc.get_freeze_count() == 0
    outer()
    assert len(seen) == 3
    assert all(count > 0 for count in seen)  # (frozen objects freed meanwhile leave the count)
    assert gc.get_freeze_count() == 0


def test_the_freeze_can_be_turned_off_and_leaves_a_freeze_made_by_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts: list[int] = []

    @flow
    def probe() -> None:
        counts.append(gc.get_freeze_count())

    monkeypatch.setenv("FLOWBOOK_GC_FREEZE", "off")
    reload_settings()
    try:
        probe()
    finally:
        monkeypatch.delenv("FLOWBOOK_GC_FREEZE")
        reload_settings()
    assert counts == [0]

    gc.freeze()  # somebody else's freeze (a fork server preloading modules, say)
    try:
        before = gc.get_freeze_count()
        probe()
        # neither frozen again by the run (objects made since would join) nor undone at its end
        assert before - 100 < counts[1] <= before
        assert before - 100 < gc.get_freeze_count() <= before
    finally:
        gc.unfreeze()


def test_bad_gc_freeze_setting_names_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWBOOK_GC_FREEZE", "sometimes")
    try:
        with pytest.raises(
            ValueError,
            match=re.escape(
                "environment variable FLOWBOOK_GC_FREEZE='sometimes' is not valid; use one of "
                "on, off"
            ),
        ):
            reload_settings()
    finally:
        monkeypatch.delenv("FLOWBOOK_GC_FREEZE")
        reload_settings()


def test_task_run_ids_are_time_ordered_and_flow_run_ids_random() -> None:
    ids = []
    for _ in range(3):
        ids.append(new_ordered_id())
        time.sleep(0.002)
    assert ids == sorted(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert abs((parsed.int >> 80) / 1000 - time.time()) < 5
    random_id = uuid.UUID(new_id())
    assert random_id.version == 4
    assert random_id.variant == uuid.RFC_4122
    assert len({new_ordered_id() for _ in range(10_000)}) == 10_000
