"""What keeps writing into a grown store as cheap as into a fresh one: WAL checkpoints on a
thread of their own (``checkpoints.py``), no state rows for a flow run whose history is
the plain one (Pending, Running, Completed), told by its row's times as a task run's is, and
task runs and log lines indexed by their flow run's creation time (``schema.of_flow_run``),
which grows with time, instead of by its random id (schema version 6, and its migration).

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
import sqlalchemy as sa
from store_under_test import (
    StoreUnderTest,
    back_to_version_5,
    back_to_version_6,
    child_env,
    store,
)

import flowbook.runs
from flowbook import flow, get_run_logger, task
from flowbook.store import close_store, get_store, schema
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


# -- a flow run's rows, by its creation time -------------------------------------------------------
@task
def _step(x: int) -> int:
    get_run_logger().info("step %d", x)
    return x + 1


@flow
def _inner(x: int) -> int:
    return _step(x)


@flow
def _outer(n: int) -> int:
    get_run_logger().info("outer of %d", n)
    return sum(_step(i) for i in range(n)) + _inner(n)


def _keys_consistent(store: StoreUnderTest) -> None:
    """Every row with a flow run has that run's key; every flow run has its created_at's."""
    for table in ("task_runs", "logs"):
        wrong = store.rows(
            f"SELECT count(*) FROM {table} t JOIN flow_runs f ON f.id = t.flow_run_id "
            "WHERE t.flow_run_created_us IS NULL OR t.flow_run_created_us != f.created_us"
        )
        assert wrong == [(0,)], table
    for created_at, key in store.rows("SELECT created_at, created_us FROM flow_runs"):
        assert key == schema.created_us(created_at)


def _indexes(store: StoreUnderTest, table: str) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(store.engine).get_indexes(table)}


def test_a_flow_runs_rows_carry_its_key_and_are_read_back_through_it(
    store: StoreUnderTest,
) -> None:
    ids = [_run_id(_outer, n) for n in (2, 3)]
    get_store().flush()  # type: ignore[union-attr]
    _keys_consistent(store)
    # each outer run's steps and subflow call, and its subflow's step
    assert store.count("task_runs") == (2 + 1 + 1) + (3 + 1 + 1)
    for run_id, n in zip(ids, (2, 3), strict=True):
        detail = flowbook.runs.get(run_id)
        steps = [t for t in detail.task_run_list if not t.get("subflow_run_id")]
        assert len(steps) == n
        messages = [line["message"] for line in detail.logs]
        assert f"outer of {n}" in messages
        assert [m for m in messages if m.startswith("step ")] == [f"step {i}" for i in range(n)]
    listed = {r.id: r.task_runs for r in flowbook.runs.list()}
    assert (listed[ids[0]], listed[ids[1]]) == (3, 4)
    # the indexes are the keys', not the ids'
    assert "ix_task_runs_flow_run_created_us" in _indexes(store, "task_runs")
    assert "ix_task_runs_flow_run_id" not in _indexes(store, "task_runs")
    assert "ix_logs_flow_run_created_us" in _indexes(store, "logs")
    assert "ix_logs_flow_run_id" not in _indexes(store, "logs")


def test_two_flow_runs_created_in_the_same_microsecond_keep_their_rows_apart(
    store: StoreUnderTest,
) -> None:
    a, b = _run_id(_outer, 2), _run_id(_outer, 3)
    get_store().flush()  # type: ignore[union-attr]
    # b's key made a's, as for two runs created in the same microsecond (two processes)
    (key,) = store.rows("SELECT created_us FROM flow_runs WHERE id = :a", a=a)[0]
    store.execute("UPDATE flow_runs SET created_us = :k WHERE id = :b", k=key, b=b)
    for table in ("task_runs", "logs"):
        store.execute(
            f"UPDATE {table} SET flow_run_created_us = :k WHERE flow_run_id = :b", k=key, b=b
        )
    steps_a = [t["name"] for t in flowbook.runs.get(a).task_run_list]
    steps_b = [t["name"] for t in flowbook.runs.get(b).task_run_list]
    assert (len(steps_a), len(steps_b)) == (3, 4)
    assert "outer of 2" in [line["message"] for line in flowbook.runs.get(a).logs]
    assert "outer of 3" not in [line["message"] for line in flowbook.runs.get(a).logs]
    listed = {r.id: r.task_runs for r in flowbook.runs.list()}
    assert (listed[a], listed[b]) == (3, 4)
    # deleting one leaves the other whole
    flowbook.runs.delete(a)
    assert len(flowbook.runs.get(b).task_run_list) == 4
    assert "outer of 3" in [line["message"] for line in flowbook.runs.get(b).logs]
    assert store.rows("SELECT count(*) FROM logs WHERE flow_run_id = :a", a=a) == [(0,)]


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_sqlite_finds_a_flow_runs_rows_through_the_key_index(store: StoreUnderTest) -> None:
    run_id = _run_id(_outer, 2)
    get_store().flush()  # type: ignore[union-attr]
    for table, index in (
        (schema.task_runs, "ix_task_runs_flow_run_created_us"),
        (schema.logs, "ix_logs_flow_run_created_us"),
    ):
        for where in (schema.of_flow_run(table, run_id), schema.of_flow_runs(table, [run_id])):
            query = sa.select(table.c.id).where(where)
            sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(row[-1]) for row in store.rows("EXPLAIN QUERY PLAN " + sql))
            assert f"USING INDEX {index}" in plan, plan
            assert f"SCAN {table.name}" not in plan, plan


def test_a_line_of_a_run_the_writer_forgot_gets_its_key_from_the_store(
    store: StoreUnderTest,
) -> None:
    go = threading.Event()

    def later(logger: Any) -> None:
        go.wait(10)
        logger.info("a late line")

    @flow
    def leaves_a_thread() -> threading.Thread:
        thread = threading.Thread(target=later, args=(get_run_logger(),))
        thread.start()
        return thread

    state = leaves_a_thread(return_state=True)
    thread = state.result()
    opened = get_store()
    assert opened is not None
    del opened.writer.flow_keys[str(state.run_id)]  # as after many later flow runs ended
    go.set()
    thread.join()
    opened.flush()
    _keys_consistent(store)
    messages = [line["message"] for line in flowbook.runs.get(str(state.run_id)).logs]
    assert "a late line" in messages


def test_the_writer_keeps_the_keys_of_the_last_flow_runs_only_and_every_line_has_its_key(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbook.store import writer

    monkeypatch.setattr(writer, "_KEPT_KEYS", 8)

    @flow
    def child(i: int) -> int:
        get_run_logger().info("child %d", i)
        return i

    @flow
    def parent(n: int) -> int:
        total = sum(child(i) for i in range(n))  # subflow runs: they never end a batch alone
        get_run_logger().info("parent after %d children", n)  # its key went long ago
        return total

    run_id = _run_id(parent, 40)
    opened = get_store()
    assert opened is not None
    opened.flush()
    assert len(opened.writer.flow_keys) <= 8
    assert None in opened.writer.flow_keys
    _keys_consistent(store)
    messages = [line["message"] for line in flowbook.runs.get(run_id).logs]
    assert "parent after 40 children" in messages


def test_a_version_5_store_gains_the_keys_and_keeps_every_row_findable(
    store: StoreUnderTest,
) -> None:
    ids = [_run_id(_outer, n) for n in (2, 3)]
    close_store()
    back_to_version_5(store.engine)
    assert "ix_task_runs_flow_run_id" in _indexes(store, "task_runs")
    before = {t: store.count(t) for t in ("flow_runs", "task_runs", "logs", "states")}
    details = {run_id: flowbook.runs.get(run_id) for run_id in ids}

    assert get_store() is not None  # migrated on open
    assert store.rows("SELECT value FROM flowbook_meta") == [(str(schema.SCHEMA_VERSION),)]
    assert {t: store.count(t) for t in before} == before
    _keys_consistent(store)
    assert store.rows("SELECT count(*) FROM task_runs WHERE flow_run_created_us IS NULL") == [(0,)]
    assert _indexes(store, "task_runs") >= {"ix_task_runs_flow_run_created_us"}
    assert "ix_task_runs_flow_run_id" not in _indexes(store, "task_runs")
    assert "ix_logs_flow_run_id" not in _indexes(store, "logs")
    for run_id in ids:
        again = flowbook.runs.get(run_id)
        assert again.task_run_list == details[run_id].task_run_list
        assert again.logs == details[run_id].logs
    # the migrated store records new runs and deletes old ones whole
    new = _run_id(_outer, 1)
    assert len(flowbook.runs.get(new).task_run_list) == 2
    flowbook.runs.delete(ids[0])
    assert store.rows("SELECT count(*) FROM task_runs WHERE flow_run_id = :i", i=ids[0]) == [(0,)]
    assert store.rows("SELECT count(*) FROM logs WHERE flow_run_id = :i", i=ids[0]) == [(0,)]
    assert len(flowbook.runs.get(ids[1]).task_run_list) == 4


def test_a_version_6_store_loses_the_index_by_state_and_keeps_its_rows(
    store: StoreUnderTest,
) -> None:
    ids = [_run_id(_outer, n) for n in (1, 2)]
    listed = [(r.id, r.state) for r in flowbook.runs.list()]
    assert {i for i, state in listed if state == "Completed"} >= set(ids)
    close_store()
    back_to_version_6(store.engine)
    assert "ix_flow_runs_state_type" in _indexes(store, "flow_runs")
    before = {t: store.count(t) for t in ("flow_runs", "task_runs", "logs", "states")}

    assert get_store() is not None  # migrated on open
    assert store.rows("SELECT value FROM flowbook_meta") == [(str(schema.SCHEMA_VERSION),)]
    assert "ix_flow_runs_state_type" not in _indexes(store, "flow_runs")
    assert {t: store.count(t) for t in before} == before
    assert [(r.id, r.state) for r in flowbook.runs.list()] == listed
    completed = {i for i, state in listed if state == "Completed"}
    assert {r.id for r in flowbook.runs.list(state="completed")} == completed
    new = _run_id(_outer, 1)
    assert flowbook.runs.get(new).state == "Completed"


def test_an_upgrade_stopped_after_its_columns_were_added_is_finished_at_the_next_open(
    store: StoreUnderTest,
) -> None:
    run_id = _run_id(_outer, 2)
    close_store()
    back_to_version_5(store.engine)
    # what a process stopped in the middle of the upgrade leaves on SQLite (an ALTER TABLE is
    # committed at once): the columns, empty, and the version row still at 5
    store.execute("ALTER TABLE flow_runs ADD COLUMN created_us BIGINT")
    store.execute("ALTER TABLE task_runs ADD COLUMN flow_run_created_us BIGINT")

    assert get_store() is not None
    assert store.rows("SELECT value FROM flowbook_meta") == [(str(schema.SCHEMA_VERSION),)]
    _keys_consistent(store)
    assert len(flowbook.runs.get(run_id).task_run_list) == 3
    assert "outer of 2" in [line["message"] for line in flowbook.runs.get(run_id).logs]


def test_rows_an_older_flowbook_writes_after_the_upgrade_are_found_and_gc_keys_them(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    import flowbook.cli

    _run_id(_outer, 1)
    # what a process that opened the store at schema 5 goes on writing after another one
    # upgraded it: its rows name the columns version 5 knew, and no key
    old = "0ld-wr1t3r-flow-run"
    now = time.time()
    store.execute(
        "INSERT INTO flow_runs (id, name, flow_name, state_type, state_name, run_count, "
        "created_at, start_time, end_time) VALUES (:i, 'old-writer', 'legacy', 'COMPLETED', "
        "'Completed', 1, :t, :t, :t)",
        i=old,
        t=now,
    )
    for n in range(3):
        store.execute(
            "INSERT INTO task_runs (id, flow_run_id, name, task_name, dynamic_key, state_type, "
            "state_name, run_count, created_at) VALUES (:i, :f, :n, 'legacy_task', :k, "
            "'COMPLETED', 'Completed', 1, :t)",
            i=f"{old}-task-{n}",
            f=old,
            n=f"legacy_task-{n}",
            k=n,
            t=now + n,
        )
        store.execute(
            "INSERT INTO logs (flow_run_id, task_run_id, level, logger, message, timestamp) "
            "VALUES (:f, :i, 20, 'legacy', :m, :t)",
            f=old,
            i=f"{old}-task-{n}",
            m=f"legacy line {n}",
            t=now + n,
        )

    detail = flowbook.runs.get(old)
    assert [t["name"] for t in detail.task_run_list] == [f"legacy_task-{n}" for n in range(3)]
    assert [line["message"] for line in detail.logs if line["logger"] == "legacy"] == [
        f"legacy line {n}" for n in range(3)
    ]
    assert {r.id: r.task_runs for r in flowbook.runs.list()}[old] == 3

    assert flowbook.cli.main(["gc", "--older-than", "3650"]) == 0
    out = capsys.readouterr().out
    assert "gc: filled in the flow-run keys of 7 row(s) written by an older flowbook" in out
    _keys_consistent(store)
    assert len(flowbook.runs.get(old).task_run_list) == 3
    assert flowbook.cli.main(["gc", "--older-than", "3650"]) == 0
    assert "filled in" not in capsys.readouterr().out  # nothing left to fill
    flowbook.runs.delete(old)
    assert store.rows("SELECT count(*) FROM task_runs WHERE flow_run_id = :i", i=old) == [(0,)]
    assert store.rows("SELECT count(*) FROM logs WHERE flow_run_id = :i", i=old) == [(0,)]


def test_a_task_called_outside_any_flow_has_the_key_of_no_flow_run(
    store: StoreUnderTest,
) -> None:
    assert _step(1) == 2
    get_store().flush()  # type: ignore[union-attr]
    assert store.rows("SELECT flow_run_id, flow_run_created_us FROM task_runs") == [
        (None, schema.NO_FLOW_RUN)
    ]
    assert store.rows("SELECT flow_run_id, flow_run_created_us FROM logs") == [
        (None, schema.NO_FLOW_RUN)
    ]


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
    # nothing left counted inside (the store's own threads may be inside for a moment: the
    # writer, the checkpoint thread after the flow's commit)
    deadline = time.monotonic() + 5
    while FORK_GUARD.inside() and time.monotonic() < deadline:
        time.sleep(0.01)
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
