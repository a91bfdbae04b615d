"""What the store's threads leave behind while runs go on: nothing that outlives its batch.

A long run's memory is given back once it is over only if nothing made during it stays: a
single object left in a block of the run's task runs keeps the whole block. The store writer
and the checkpoint thread each keep one connection and one cursor for their life (the sqlite3
module keeps a weak reference to every cursor a connection makes until 200 more have been
made), and the heartbeat goes through the writer's connection.
"""

from __future__ import annotations

import gc
import time
import weakref

import pytest
from store_under_test import StoreUnderTest, store

from flowbook import flow, task
from flowbook.store import get_store

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
