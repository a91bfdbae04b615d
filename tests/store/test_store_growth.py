"""What keeps writing into a grown store as cheap as into a fresh one: WAL checkpoints on a
thread of their own (``checkpoints.py``), and no state rows for a flow run whose history is
the plain one (Pending, Running, Completed), told by its row's times as a task run's is.

Each test reads what flowbook wrote through an engine of its own, or the SQLite file from
another process.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from store_under_test import StoreUnderTest, child_env, store

import flowbook.runs
from flowbook import flow, task
from flowbook.store import close_store, get_store
from flowbook.store.checkpoints import DEFAULT_PAGES, SAFETY_PAGES
from flowbook.store.database import FORK_GUARD
from flowbook.store.queries import iso

__all__ = ["store"]

PLAIN = ["Pending", "Running", "Completed"]


def _run_id(f: Any, *args: Any) -> str:
    """Call flow ``f`` and give the id of its run (from its final state)."""
    state = f(*args, return_state=True)
    return str(state.run_id)


def _flow_states(store: StoreUnderTest, run_id: str) -> list[str]:
    return [
        r[0]
        for r in store.rows("SELECT name FROM states WHERE run_id = :id ORDER BY id", id=run_id)
    ]


# -- flow-run state rows ---------------------------------------------------------------------------
def test_a_plain_flow_run_is_stored_without_state_rows_and_read_back_whole(
    store: StoreUnderTest,
) -> None:
    @task
    def inc(x: int) -> int:
        return x + 1

    @flow
    def plain(x: int) -> int:
        return inc(x)

    run_id = _run_id(plain, 1)
    assert _flow_states(store, str(run_id)) == []
    detail = flowbook.runs.get(str(run_id))
    assert [s["name"] for s in detail.states] == PLAIN
    [row] = store.rows(
        "SELECT created_at, start_time, end_time FROM flow_runs WHERE id = :id", id=str(run_id)
    )
    # told from the row's own times, in order
    assert [s["timestamp"] for s in detail.states] == [iso(t) for t in row]
    assert row[0] <= row[1] <= row[2]
    assert detail.logs[-1]["message"].startswith("Finished in state Completed(")


def test_a_flow_run_that_is_not_plain_keeps_every_state_row(store: StoreUnderTest) -> None:
    @flow
    def fails() -> None:
        raise ValueError("boom")

    @flow(retries=1, retry_delay_seconds=0)
    def flaky() -> int:
        flaky.calls += 1  # type: ignore[attr-defined]
        if flaky.calls == 1:  # type: ignore[attr-defined]
            raise ValueError("once")
        return 1

    flaky.calls = 0  # type: ignore[attr-defined]
    failed = _run_id(fails)
    retried = _run_id(flaky)
    assert _flow_states(store, failed) == [
        "Pending",
        "Running",
        "Failed",
    ]
    names = _flow_states(store, retried)
    assert names[0] == "Pending"
    assert names[-1] == "Completed"
    assert "Retrying" in names
    detail = flowbook.runs.get(retried)
    assert [s["name"] for s in detail.states] == names


def test_a_flow_run_that_outlives_a_batch_has_its_states_in_the_store_while_it_runs(
    store: StoreUnderTest,
) -> None:
    seen: dict[str, list[str]] = {}

    @flow
    def long() -> int:
        from flowbook.runtime import flow_run

        writer = get_store()
        assert writer is not None
        writer.flush()  # a batch is written while this run goes on
        run_id = str(flow_run.id)
        seen["during"] = _flow_states(store, run_id)
        seen["id"] = [run_id]
        return 1

    assert long() == 1
    assert seen["during"] == ["Pending", "Running"]
    # its history is in the store as it went, and so is its end
    assert _flow_states(store, seen["id"][0]) == PLAIN
    assert [s["name"] for s in flowbook.runs.get(seen["id"][0]).states] == PLAIN


def test_many_plain_flow_runs_and_a_subflow_each_read_back_their_history(
    store: StoreUnderTest,
) -> None:
    @flow
    def child(x: int) -> int:
        return x

    @flow
    def parent(x: int) -> int:
        return child(x) + 1

    ids = [_run_id(parent, i) for i in range(20)]
    assert store.count("states") == 0
    for run_id in ids:
        assert [s["name"] for s in flowbook.runs.get(run_id).states] == PLAIN
    child_ids = [r[0] for r in store.rows("SELECT id FROM flow_runs WHERE flow_name = 'child'")]
    assert len(child_ids) == 20
    assert [s["name"] for s in flowbook.runs.get(child_ids[0]).states] == PLAIN


# -- checkpoints -----------------------------------------------------------------------------------
# the checkpoints are SQLite's: these tests run on the SQLite store only
on_sqlite = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def test_a_server_store_has_no_checkpoint_thread(store: StoreUnderTest) -> None:
    opened = get_store()
    assert opened is not None
    assert (opened.checkpointer is None) == (store.backend == "postgresql")
    assert opened.writer._batches.checkpointer is opened.checkpointer


def _writer_autocheckpoint() -> int:
    opened = get_store()
    assert opened is not None
    conn = opened.writer._batches._conn
    assert conn is not None
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        return int(cursor.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    finally:
        cursor.close()


@on_sqlite
def test_the_wal_is_checkpointed_off_the_writer_and_stays_bounded(
    store: StoreUnderTest,
) -> None:
    opened = get_store()
    assert opened is not None
    assert opened.checkpointer is not None
    checkpointer = opened.checkpointer

    @task
    def inc(x: int) -> int:
        return x + 1

    @flow
    def many() -> list[int]:
        return inc.map(range(5000)).result()

    # maps until the WAL has passed the threshold and the checkpoint thread copied it back
    deadline = time.monotonic() + 60
    rounds = 0
    while checkpointer.runs == 0 and time.monotonic() < deadline:
        assert many() == list(range(1, 5001))
        rounds += 1
        assert _writer_autocheckpoint() == SAFETY_PAGES
        wait = time.monotonic() + 2
        while checkpointer.runs == 0 and time.monotonic() < wait:
            time.sleep(0.02)
    assert checkpointer.runs >= 1
    assert checkpointer.failures == 0
    last = checkpointer.last
    assert last is not None
    busy, frames, copied = last
    assert busy == 0
    assert frames - copied < DEFAULT_PAGES
    names = {t.name for t in threading.enumerate()}
    assert "flowbook-store-checkpoint" in names
    # nothing the thread left behind: a checkpoint now copies every frame there is
    with sqlite3.connect(store.home / "flowbook.db") as conn:
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0
    assert frames == copied
    assert store.count("task_runs") == 5000 * rounds


@on_sqlite
def test_the_writer_connection_it_gives_back_checkpoints_again_and_close_ends_the_thread(
    store: StoreUnderTest,
) -> None:
    opened = get_store()
    assert opened is not None
    assert opened.checkpointer is not None

    @flow
    def one() -> int:
        return 1

    assert one() == 1
    opened.flush()
    kept = opened.writer._batches._conn
    assert kept is not None
    dbapi = kept.connection.dbapi_connection
    assert dbapi is not None
    # given back to the pool (as after a failed transaction), it checkpoints as any connection
    opened.writer._batches.close()
    cursor = dbapi.cursor()
    try:
        assert int(cursor.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == DEFAULT_PAGES
    finally:
        cursor.close()
    assert one() == 1  # the next batch takes a connection again, with the safety net
    assert _writer_autocheckpoint() == SAFETY_PAGES
    close_store()
    assert not opened.checkpointer._thread.is_alive()


def _hold_guard(seconds: float, left: list[bool] | None = None) -> threading.Thread:
    """A thread inside the store's fork guard for ``seconds`` (as a checkpoint of a grown store
    is for 10 to 25 ms), once it is inside; ``left`` gets True as its last step inside."""
    inside = threading.Event()

    def hold() -> None:
        with FORK_GUARD:
            inside.set()
            time.sleep(seconds)
            if left is not None:
                left.append(True)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert inside.wait(5)
    return holder


def _identity_flow() -> Any:
    """A one-line flow, called once (the store is open and its writer running)."""

    @flow
    def one(x: int) -> int:
        return x

    assert one(0) == 0
    return one


@on_sqlite
def test_a_checkpoint_under_way_does_not_hold_up_the_writer_nor_a_flow_call(
    store: StoreUnderTest,
) -> None:
    one = _identity_flow()
    holder = _hold_guard(3.0)
    started = time.monotonic()
    for i in range(20):
        assert one(i) == i  # each call returns once its rows are committed
    took = time.monotonic() - started
    assert holder.is_alive()
    assert took < 2.0, f"20 flow calls took {took:.2f} s while another store thread was inside"
    assert store.count("flow_runs") == 21
    holder.join()


@on_sqlite
def test_a_fork_waits_for_the_store_threads_inside_the_database_and_the_child_starts_clean(
    store: StoreUnderTest,
) -> None:
    one = _identity_flow()
    left: list[bool] = []
    holder = _hold_guard(0.5, left)
    pid = os.fork()
    if pid == 0:  # the child: nobody inside the guard, and a thread of its own can enter it
        entered = threading.Event()

        def enter() -> None:
            with FORK_GUARD:
                entered.set()

        threading.Thread(target=enter, daemon=True).start()
        os._exit(0 if entered.wait(10) and FORK_GUARD.inside() == 0 else 3)
    # the fork went ahead only once the holder had done its last step inside
    assert left == [True]
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    holder.join(5)
    assert FORK_GUARD.inside() == 0
    assert one(1) == 1  # the parent's writer goes on after the fork


KILLED = """
    import os
    from flowbook import flow, task

    @task
    def inc(x):
        return x + 1

    @flow
    def one(x):
        return inc(x)

    for i in range(300):
        one(i)
    print("returned", flush=True)
    os._exit(0)  # no exit handler: no close, no last checkpoint
"""


@on_sqlite
def test_a_process_that_dies_after_its_flows_return_loses_none_of_their_rows(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    done = subprocess.run(
        [sys.executable, str(script)],
        env=child_env(store.env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "returned"
    # rows committed to the WAL and not yet checkpointed are read back from it
    with sqlite3.connect(store.home / "flowbook.db") as conn:
        flows = conn.execute("SELECT count(*) FROM flow_runs WHERE flow_name = 'one'").fetchone()
        tasks = conn.execute("SELECT count(*) FROM task_runs WHERE task_name = 'inc'").fetchone()
        done_rows = conn.execute(
            "SELECT count(*) FROM flow_runs WHERE flow_name = 'one' AND state_type = 'COMPLETED'"
        ).fetchone()
    assert (flows[0], tasks[0], done_rows[0]) == (300, 300, 300)
    assert os.path.exists(store.home / "flowbook.db")
