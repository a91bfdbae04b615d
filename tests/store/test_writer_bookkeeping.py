"""The store writer forgets what it no longer needs: nothing per subflow call is kept after
the flow run ends, and a journalled run leaves the journal's waiting set once its rows are
written, whether or not its caller still waits for them."""

from __future__ import annotations

import pytest
from store_under_test import StoreUnderTest

from flowbook import flow, task
from flowbook.store import get_store


@task
def one() -> int:
    return 1


@flow
def child(x: int) -> int:
    return one() + x


@flow
def parent(n: int) -> int:
    return sum(child(i) for i in range(n))


def test_subflow_calls_leave_nothing_behind_in_the_writer(store: StoreUnderTest) -> None:
    writer = get_store().writer
    for _ in range(3):
        assert parent(50) == sum(range(50)) + 50
    assert writer._finished == {}  # one event per top-level run, popped by its barrier
    journal = writer.journal
    if journal is not None:
        assert journal._waiting == set()


def test_a_run_is_taken_off_the_journal_by_the_writer_even_when_nobody_waits(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller whose wait for its rows timed out does not tell the journal; the writer does,
    once the rows are written."""
    writer = get_store().writer
    journal = writer.journal
    assert journal is not None
    # the caller gives up waiting at once
    monkeypatch.setattr(type(writer), "barrier", lambda self, flow_run, timeout=60.0: None)
    assert child(1) == 2
    assert writer.flush(30)
    assert journal._waiting == set()
    writer._finished.clear()  # (what the skipped barrier would have popped)


def test_a_batch_sent_again_after_its_commit_succeeded_loses_nothing(
    store: StoreUnderTest,
) -> None:
    """A server that goes away between COMMIT and its reply leaves the writer not knowing the
    batch was committed; it sends the batch again. The runs' own rows are then already there:
    they count as written, and the result files they point at are kept."""
    from flowbook.engine.events import (
        FlowRunCreated,
        FlowRunFinished,
        StateChanged,
        TaskRunCreated,
        bus,
    )

    @task(persist_result=True)
    def big(i: int) -> bytes:
        return bytes([i]) * 100_000  # kept in a file of its own

    @flow
    def makes_files() -> int:
        return len(big.map(range(3)).result())

    seen: list[object] = []

    def keep(event: object) -> None:  # what the writer queues (StoreWriter.on_event)
        first = isinstance(event, StateChanged) and event.previous is None
        if not (first and type(event.run).__name__ == "TaskRun"):  # (told by TaskRunCreated)
            seen.append(event)

    bus.subscribe((FlowRunCreated, TaskRunCreated, StateChanged, FlowRunFinished), keep)
    try:
        assert makes_files() == 3
    finally:
        bus.unsubscribe(keep)
    writer = get_store().writer
    files = sorted((store.home / "results" / "runs").iterdir())
    assert len(files) == 3
    with store.engine.connect() as conn:
        count = conn.exec_driver_sql("SELECT count(*) FROM task_runs").scalar()
    dropped = sum(writer.drops.counts.values())

    writer._write_batch(list(seen))  # the same batch, sent again

    assert sum(writer.drops.counts.values()) == dropped
    assert sorted((store.home / "results" / "runs").iterdir()) == files
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM task_runs").scalar() == count
