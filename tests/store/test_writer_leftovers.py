"""What the store keeps while runs go on: nothing that outlives its batch, and no event of a
task run waiting for the writer.

A long run's memory is given back once it is over only if nothing made during it stays: a
single object left in a block of the run's task runs keeps the whole block. The store writer
and the checkpoint thread each keep one connection and one cursor for their life (the sqlite3
module keeps a weak reference to every cursor a connection makes until 200 more have been
made), and the heartbeat goes through the writer's connection. A task run that changes is
marked for the writer, which builds its row from the run itself: a writer that falls behind a
large map holds one entry per run, not the events (and the states they hold) of each change.
"""

from __future__ import annotations

import gc
import threading
import time
import warnings
import weakref
from typing import Any

import pytest
from store_under_test import StoreUnderTest, store

from flowbook import flow, task
from flowbook.engine.events import StateChanged, TaskRunCreated
from flowbook.store import get_store
from flowbook.store import writer as writer_module

__all__ = ["store"]

on_sqlite = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def _dead_weak_references() -> set[int]:
    gc.collect()
    return {id(o) for o in gc.get_objects() if type(o) is weakref.ref and o() is None}


@on_sqlite
def test_batches_checkpoints_and_heartbeats_leave_no_dead_references(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flowbook.store.writer.HEARTBEAT_EVERY_S", 0.05)

    @task
    def inc(x: int) -> int:
        return x + 1

    @flow
    def one(x: int) -> int:
        return inc(x)

    one(0)  # the store is open, its threads started
    opened = get_store()
    assert opened is not None
    assert opened.checkpointer is not None
    before = _dead_weak_references()
    checkpoints = opened.checkpointer.runs
    # each flow call is a batch of its own (the call waits for its commit): 120 batches of
    # several statements each, with checkpoints and heartbeats between them
    deadline = time.monotonic() + 30
    calls = 0
    while calls < 120 or opened.checkpointer.runs < checkpoints + 3:
        assert one(calls) == calls + 1
        calls += 1
        assert time.monotonic() < deadline, "no checkpoint in 30 s"
    left = len(_dead_weak_references() - before)
    # a cursor per statement left a dead reference per statement (a hundred and more here)
    assert left < 10, f"{left} dead weak references left by {calls} batches"


def test_the_heartbeat_keeps_the_process_record_fresh(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flowbook.store.writer.HEARTBEAT_EVERY_S", 0.05)

    @flow
    def noop() -> None:
        return None

    noop()
    opened = get_store()
    assert opened is not None

    def beat() -> float:
        [(at,)] = store.rows(
            "SELECT heartbeat_at FROM processes WHERE id = :id", id=opened.process_id
        )
        return float(at)

    first = beat()
    deadline = time.monotonic() + 10
    while beat() <= first:
        assert time.monotonic() < deadline, "the heartbeat did not move in 10 s"
        time.sleep(0.05)
    # and the store still writes runs after heartbeats on the same connection
    noop()
    assert store.count("flow_runs") == 2
    assert opened.writer.drops.counts == {}


def test_a_map_keeps_no_events_waiting_for_a_writer_that_is_behind(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    @task
    def inc(x: int) -> int:
        return x + 1

    @task(retries=1, retry_delay_seconds=0)
    def flaky(x: int) -> int:
        if x not in tried:
            tried.add(x)
            raise ValueError(f"first try of {x}")
        return x

    tried: set[int] = set()

    @flow
    def mapped(n: int) -> list[int]:
        return inc.map(range(n)).result() + flaky.map(range(3)).result()

    assert mapped(1) == [1, 0, 1, 2]  # the store is open, its writer running
    opened = get_store()
    assert opened is not None
    writer = opened.writer
    # the writer is held inside its next batch, as by a slow disk, until the map is over
    entered, go_on = threading.Event(), threading.Event()
    write = writer._batches.write

    def held(parts: Any) -> Any:
        entered.set()
        go_on.wait(60)
        return write(parts)

    monkeypatch.setattr(writer._batches, "write", held)
    # and the rows it builds at a time are bounded: 500 runs a transaction here
    monkeypatch.setattr("flowbook.store.writer._BATCH_MAX", 500)
    sizes: list[int] = []
    taken = writer_module._Rows.task_runs

    def counted(rows: Any, new: Any, changed: Any, edges: Any = None) -> None:
        sizes.append(len(new) + len(changed))
        taken(rows, new, changed, edges)

    monkeypatch.setattr(writer_module._Rows, "task_runs", counted)
    tried.clear()
    results: list[list[int]] = []
    caller = threading.Thread(target=lambda: results.append(mapped(3000)), daemon=True)
    caller.start()
    try:
        assert entered.wait(30), "the writer wrote no batch"
        deadline = time.monotonic() + 60
        while not writer._finished:  # the flow run ended and waits for its rows
            assert time.monotonic() < deadline, "the flow run did not end"
            time.sleep(0.01)
        gc.collect()
        events = sum(1 for o in gc.get_objects() if type(o) in (StateChanged, TaskRunCreated))
        # 3,003 task runs made three events each: only the retried runs' states are queued
        assert events < 50, f"{events} task-run events kept while the writer was held"
        assert len(writer._changed) <= 3003
    finally:
        go_on.set()
        caller.join(60)
    assert results == [[x + 1 for x in range(3000)] + [0, 1, 2]]
    assert writer.flush()
    runs = store.rows(
        "SELECT t.state_name, t.start_time, t.end_time, t.run_count FROM task_runs t "
        "JOIN flow_runs f ON f.id = t.flow_run_id WHERE f.id = ("
        "SELECT id FROM flow_runs ORDER BY created_at DESC LIMIT 1)"
    )
    assert len(runs) == 3003
    assert all(r[0] == "Completed" and r[1] <= r[2] for r in runs)
    assert sorted(r[3] for r in runs)[-3:] == [2, 2, 2]
    # the plain runs have no state rows; each retried one its whole history, in order
    retried = store.rows(
        "SELECT s.run_id, s.name FROM states s JOIN task_runs t ON t.id = s.run_id "
        "WHERE t.task_name = 'flaky' AND t.run_count = 2 ORDER BY s.id"
    )
    by_run: dict[str, list[str]] = {}
    for run_id, name in retried:
        by_run.setdefault(run_id, []).append(name)
    expected = ["Pending", "Running", "AwaitingRetry", "Retrying", "Running", "Completed"]
    assert all(history == expected for history in by_run.values())
    assert len(by_run) == 6  # three in the first call, three in this one
    assert max(sizes) <= 500
    assert sum(sizes) >= 3003


def test_a_run_that_ends_while_its_row_is_built_is_written_once(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    release_task, in_rows, go_on = threading.Event(), threading.Event(), threading.Event()

    @task
    def slow(x: int) -> int:
        assert release_task.wait(30)
        return x * 10

    @flow
    def one(x: int) -> int:
        return slow.submit(x).result()

    release_task.set()
    assert one(0) == 0  # the store is open
    release_task.clear()
    opened = get_store()
    assert opened is not None
    writer = opened.writer
    seen: list[Any] = []
    build = writer_module._Rows._task_rows

    def held(rows: Any) -> Any:
        for run in rows.task_new.values():
            if run.task is not None and run.task.name == "slow" and not seen:
                seen.append(run)  # taken while it runs: hold the writer here until it ended
                in_rows.set()
                assert go_on.wait(30)
        return build(rows)

    results: dict[str, int] = {}
    store_result = writer_module._Rows._task_result

    def counted(rows: Any, run: Any, state: Any) -> Any:
        results[run.id] = results.get(run.id, 0) + 1
        return store_result(rows, run, state)

    monkeypatch.setattr(writer_module._Rows, "_task_rows", held)
    monkeypatch.setattr(writer_module._Rows, "_task_result", counted)
    answers: list[int] = []
    caller = threading.Thread(target=lambda: answers.append(one(7)), daemon=True)
    caller.start()
    try:
        assert in_rows.wait(30), "the writer did not take the running task run"
        [run] = seen
        release_task.set()
        deadline = time.monotonic() + 30
        while run.id not in writer._changed:  # its final state is announced: marked again
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert run.state.is_completed()
    finally:
        go_on.set()
        release_task.set()
        caller.join(30)
    assert answers == [70]
    assert writer.flush()
    # built once with its final state (the mark of that state asked for nothing more)
    assert results[run.id] == 1
    assert run.id not in writer._changed
    [(state, value)] = store.rows(
        "SELECT state_name, result FROM task_runs WHERE id = :i", i=run.id
    )
    assert state == "Completed"
    assert value is not None


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_failing_heartbeat_is_told_and_the_runs_are_still_written(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flowbook.store.writer.HEARTBEAT_EVERY_S", 0.05)

    @flow
    def noop(x: int) -> int:
        return x

    noop(0)  # the store is open, its writer beating through its kept connection
    opened = get_store()
    assert opened is not None
    # the table the heartbeat updates is gone: the store is taken as damaged, and said so
    store.execute("ALTER TABLE processes RENAME TO processes_elsewhere")
    try:
        with warnings.catch_warnings(record=True) as told:
            warnings.simplefilter("always")
            deadline = time.monotonic() + 10
            while not any("no such table: processes" in str(w.message) for w in told):
                assert time.monotonic() < deadline, "the failed heartbeat was not told"
                time.sleep(0.05)
        # the writer goes on, on a fresh connection: the next runs are recorded
        assert [noop(x) for x in range(1, 4)] == [1, 2, 3]
        assert store.count("flow_runs") == 4
        assert opened.writer._thread.is_alive()
    finally:
        store.execute("ALTER TABLE processes_elsewhere RENAME TO processes")
