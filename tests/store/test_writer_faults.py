"""The store writer under faults: it loses nothing it can write, and says what it could not.

- processes that write the same cache keys at the same moment record every run, task run and
  log line (SQLite and PostgreSQL);
- a batch with rows the database refuses keeps every other row, and each refused row is
  counted, reported and recorded in ``write_drops``;
- a full disk (a small tmpfs mounted by the test) and a read-only store: the flow returns its
  result, one message says what was not recorded and where, and no file is left that no row
  points at.

Every test reads what was written through an engine of its own (and the results directory
itself); processes are real processes.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from store_under_test import (  # the fixture and helpers of every store test
    StoreUnderTest,
    child_env,
    store_env,
)

from flowbook import flow, get_run_logger, task
from flowbook.store import get_store

pytestmark = pytest.mark.slow


def _run(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=90,
    )


# -- 1. processes writing the same cache keys at once -------------------------------------------
SHARED_KEYS = """\
    import sys
    import time
    from pathlib import Path

    from flowbook import flow, get_run_logger, task
    from flowbook.tasks import task_input_hash


    @task(cache_key_fn=task_input_hash, refresh_cache=True)
    def square(x):
        get_run_logger().info("squared %d", x)
        return x * x


    @flow(name="shared")
    def shared(n):
        return sum(square.map(range(n)).result())


    ready, go = Path(sys.argv[1]), Path(sys.argv[2])
    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    print([shared(20) for _ in range(5)])
"""


@pytest.mark.parametrize("processes", [4])
def test_processes_writing_the_same_cache_keys_lose_nothing(
    store: StoreUnderTest, tmp_path: Path, processes: int
) -> None:
    script = tmp_path / "shared.py"
    script.write_text(textwrap.dedent(SHARED_KEYS))
    go = tmp_path / "go"
    started = []
    for i in range(processes):
        ready = tmp_path / f"ready-{i}"
        proc = subprocess.Popen(
            [sys.executable, str(script), str(ready), str(go)],
            env=child_env(store.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((ready, proc))
    deadline = time.monotonic() + 60
    while not all(r.exists() for r, _ in started) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    for _, proc in started:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == str([2470] * 5)
        assert err == "", err  # no message: nothing was dropped
    runs = processes * 5
    assert store.rows("SELECT state_type, count(*) FROM flow_runs GROUP BY state_type") == [
        ("COMPLETED", runs)
    ]
    assert store.rows(
        "SELECT state_type, count(*) FROM task_runs WHERE task_name = 'square' GROUP BY state_type"
    ) == [("COMPLETED", runs * 20)]
    assert store.rows("SELECT count(*) FROM logs WHERE message LIKE 'squared %'") == [(runs * 20,)]
    assert store.count("cache_entries") == 20
    assert store.count("write_drops") == 0


# -- 2. rows the database refuses ----------------------------------------------------------------
def _where(store: StoreUnderTest) -> str:
    if store.backend == "sqlite":
        return str(store.home / "flowbook.db")
    return sa.make_url(store.url).render_as_string(hide_password=True)


def _flushed(run: Any) -> Any:
    """Call a flow, then wait until everything its process queued for the store is written."""
    value = run()
    opened = get_store()
    assert opened is not None
    assert opened.writer.flush()
    return value


def _run_messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_a_refused_row_is_dropped_alone_counted_and_recorded(store: StoreUnderTest) -> None:
    @task
    def step(i: int) -> int:
        get_run_logger().info("line %d", i)
        if i == 7:
            # a level no INTEGER column holds: the database refuses the row
            get_run_logger().log(2**70, "bad level")
        return i

    @flow(flow_run_name="with-a-bad-line")
    def mixed() -> int:
        return sum(step.map(range(30)).result())

    opened = get_store()
    assert opened is not None
    with pytest.warns(RuntimeWarning) as caught:
        # (the record of the drop goes with the next batch, which the flush writes)
        assert _flushed(mixed) == 435
    bad_run = store.rows("SELECT id FROM task_runs WHERE dynamic_key = 7")[0][0]
    [why] = [r for (r,) in store.rows("SELECT reason FROM write_drops")]
    assert "too large" in why or "out of range" in why
    assert _run_messages(caught) == [
        f"the run store at {_where(store)} could not write a log line of run {bad_run} "
        f"({why}); it was dropped and the other records were written "
        "(`flowbook doctor` lists dropped records)"
    ]
    # every other row of the batch is there
    assert store.rows("SELECT state_type, count(*) FROM task_runs GROUP BY state_type") == [
        ("COMPLETED", 30)
    ]
    assert store.rows("SELECT name, state_type FROM flow_runs") == [
        ("with-a-bad-line", "COMPLETED")
    ]
    assert store.count("logs") == 30
    assert store.rows("SELECT count(*) FROM logs WHERE message LIKE 'bad%'") == [(0,)]
    # counted in the process, and recorded in the store
    assert opened.dropped == {"log": 1}
    assert store.rows("SELECT process_id, run_id, what, reason FROM write_drops") == [
        (opened.process_id, bad_run, "log", why)
    ]


def test_many_refused_rows_are_told_three_times_then_summed_up(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbook.store import drops

    monkeypatch.setattr(drops, "SUMMARY_EVERY_S", 0.0)  # sum up after every batch

    @task
    def noisy(i: int) -> int:
        get_run_logger().log(2**70, "bad line %d", i)
        get_run_logger().info("good line %d", i)
        return i

    @flow
    def many_bad() -> int:
        return sum(noisy.map(range(10)).result())

    opened = get_store()
    assert opened is not None
    start = time.monotonic()
    with pytest.warns(RuntimeWarning) as caught:
        assert _flushed(many_bad) == 45
    assert time.monotonic() - start < 10  # narrowing 10 bad rows among 60 is quick
    messages = _run_messages(caught)
    assert len(messages) == 4, messages
    assert all("could not write a log line of run" in m for m in messages[:3])
    assert messages[2].endswith("further drops are summed up at most every 0 s")
    assert messages[3].startswith(
        f"7 more record(s) could not be written to the run store at {_where(store)} in the last "
    )
    assert messages[3].endswith("s (log lines: 7); `flowbook doctor` lists them")
    assert store.rows("SELECT count(*) FROM logs WHERE message LIKE 'good line %'") == [(10,)]
    assert store.rows("SELECT what, count(*) FROM write_drops GROUP BY what") == [("log", 10)]
    assert store.rows("SELECT count(*) FROM task_runs WHERE state_type = 'COMPLETED'") == [(10,)]


# -- 3. a full disk and a read-only store ----------------------------------------------------------
@contextlib.contextmanager
def _small_disk(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted for the test (tests run as root)."""
    base = Path(tempfile.mkdtemp(prefix="flowbook-disk-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(base)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); run the tests as root")
    try:
        yield base
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


FILLING = """\
    import os
    import sys
    from pathlib import Path

    import flowbook.store
    from flowbook import flow, get_run_logger, task

    disk = Path(sys.argv[1])
    filler = disk / "filler"


    def fill(leave):
        # take every free byte of the disk, then give back `leave` bytes (whole pages)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        for chunk in (b"\\0" * 65536, b"\\0" * 4096):
            try:
                while True:
                    os.write(fd, chunk)
            except OSError:
                pass
        os.close(fd)
        os.truncate(filler, max(0, filler.stat().st_size - leave))


    def phase(name):
        print(f"== {name}", file=sys.stderr, flush=True)


    @task
    def big(i):
        return bytes([i]) * 200_000  # more than 64 KiB: kept in a result file


    @task
    def small(i):
        get_run_logger().info("small %d", i)
        return i


    @flow(name="files")
    def files(leave=None):
        if leave is not None:
            # the store's checkpoints let new rows reuse the WAL's space; emptied, the WAL must
            # grow on the disk for this run's rows
            with flowbook.store.get_store().engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            # room for the result files, not more
            fill(leave)
        return [len(b) for b in big.map(range(3)).result()]


    @flow(name="tiny")
    def tiny():
        return sum(small.map(range(200)).result())


    phase("warm")
    print(files(), tiny(), flush=True)
    phase("no room for the rows")  # the result files fit, the database's rows do not
    print(files(leave=3 * 49 * 4096), flush=True)
    phase("no room at all")
    fill(leave=0)
    print(tiny(), flush=True)
    phase("room again")
    filler.unlink()
    print(tiny(), flush=True)
    flowbook.store.get_store().flush()
"""


def _phases(stderr: str) -> dict[str, list[str]]:
    """The warnings printed in each phase of a child script, by phase name."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in stderr.splitlines():
        if line.startswith("== "):
            current = line[3:]
            found[current] = []
        elif "RuntimeWarning: " in line:
            found.setdefault(current, []).append(line.split("RuntimeWarning: ", 1)[1])
    return found


def _result_files(results: Path) -> set[str]:
    return {str(p.relative_to(results)) for p in results.rglob("*") if p.is_file()}


def test_a_full_disk_loses_no_run_that_fits_and_leaves_no_orphan_file(tmp_path: Path) -> None:
    with _small_disk("4m") as disk:
        home = disk / "home"
        script = tmp_path / "filling.py"
        script.write_text(textwrap.dedent(FILLING))
        env = store_env(home, None)
        start = time.monotonic()
        done = _run(script, env, str(disk))
        elapsed = time.monotonic() - start
        assert done.returncode == 0, done.stderr
        # every flow returned its result
        assert done.stdout.split("\n")[:4] == [
            "[200000, 200000, 200000] 19900",
            "[200000, 200000, 200000]",
            "19900",
            "19900",
        ]
        assert elapsed < 30  # no flow end waited for rows that could not be written
        db = home / "flowbook.db"
        results = home / "results"
        phases = _phases(done.stderr)
        assert phases["warm"] == []
        [values] = phases["no room for the rows"]
        assert values == (
            f"the disk holding the run store at {db} is full (OperationalError: database or disk "
            "is full [SQLITE_FULL]): the runs are recorded, but not these values (task results: "
            f"3); 3 result file(s) were removed from {results}. Later values are kept again "
            "once there is space; until then they are dropped and counted (`flowbook doctor` "
            "lists them)"
        )
        [full] = phases["no room at all"]
        assert re.fullmatch(
            f"the run store at {re.escape(str(db))} cannot be written: the disk is full "
            r"\(OperationalError: database or disk is full \[SQLITE_FULL\]\)\. Runs go on and "
            r"return their results, but these records \(flow runs: 1(, log lines: \d+)?(, states: "
            r"\d)?(, task runs: \d+)?\) and later ones are not recorded until the store can be "
            "written again; the result files of "
            f"records not written are removed from {re.escape(str(results))}",
            full,
        ), full
        [again] = phases["room again"]
        recovered = re.fullmatch(
            f"the run store at {re.escape(str(db))} can be written again; "
            r"(\d+) record\(s\) were not recorded meanwhile \(`flowbook doctor` lists them\)",
            again,
        )
        assert recovered, again

        engine = sa.create_engine(f"sqlite:///{db}")
        try:
            with engine.connect() as conn:
                runs = conn.execute(
                    sa.text("SELECT flow_name, state_type FROM flow_runs ORDER BY created_at")
                ).all()
                files = conn.execute(
                    sa.text("SELECT result_file FROM task_runs WHERE result_file IS NOT NULL")
                ).all()
                kept = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM task_runs t JOIN flow_runs f ON t.flow_run_id = f.id"
                        " WHERE f.flow_name = 'files' AND t.state_type = 'COMPLETED'"
                    )
                ).scalar()
                drops = conn.execute(
                    sa.text("SELECT what, count(*) FROM write_drops GROUP BY what ORDER BY what")
                ).all()
        finally:
            engine.dispose()
        # the run that did not fit whole is recorded without its results; the one written
        # while nothing fitted is not recorded at all
        assert [tuple(r) for r in runs] == [
            ("files", "COMPLETED"),
            ("tiny", "COMPLETED"),
            ("files", "COMPLETED"),
            ("tiny", "COMPLETED"),
        ]
        assert kept == 6
        dropped = dict(tuple(r) for r in drops)
        # (the flow run's row, and the update of its state, which the early failure left
        # without a row)
        assert dropped.pop("flow_run") in (1, 2)
        # (its plain history is told by its row: no state rows to drop)
        assert dropped == {"log": 200, "result": 3, "task_run": 200}
        # every record of the run while nothing fitted is counted once the store is back
        assert int(recovered.group(1)) == sum(r[1] for r in drops) - 3
        # no file without a row, no row without its file, no temporary file
        assert _result_files(results) == {f"{r[0]}" for r in files}
        assert len(files) == 3


TURNED_AWAY = """\
    import sys
    import time
    from pathlib import Path

    import flowbook.store
    from flowbook import flow, task

    ready, go, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]


    @task
    def big(i):
        return bytes([i]) * 200_000  # more than 64 KiB: kept in a result file


    @flow(name="files")
    def files():
        return [len(b) for b in big.map(range(3)).result()]


    print(files(), flush=True)
    if how == "query_only":
        from sqlalchemy import event

        # from now on SQLite refuses every write, as it does on a file it opened read-only
        @event.listens_for(flowbook.store.get_store().engine, "begin")
        def read_only(conn):
            conn.connection.dbapi_connection.execute("PRAGMA query_only = ON")

    print("== turned away", file=sys.stderr, flush=True)
    ready.touch()
    while not go.exists():
        time.sleep(0.01)
    start = time.monotonic()
    print(files(), flush=True)
    print(round(time.monotonic() - start, 1), flush=True)
"""


def _start_turned_away(
    store: StoreUnderTest, tmp_path: Path, how: str
) -> tuple[subprocess.Popen[str], Path, Path]:
    script = tmp_path / "turned_away.py"
    script.write_text(textwrap.dedent(TURNED_AWAY))
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ready), str(go), how],
        env=child_env(store.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc, ready, go


def _admin(postgres_server: Any, sql: str) -> None:
    """Run ``sql`` on the server's ``postgres`` database (not the store's)."""
    engine = sa.create_engine(postgres_server.url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


def _kick_out(postgres_server: Any, database: str) -> None:
    """End every session on ``database``: its clients must connect again."""
    _admin(
        postgres_server,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()",
    )


def test_a_read_only_store_returns_results_says_so_once_and_leaves_no_file(
    store: StoreUnderTest, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    how = "query_only" if store.backend == "sqlite" else "read_only_database"
    proc, _, go = _start_turned_away(store, tmp_path, how)
    results = store.home / "results"
    before = _result_files(results)
    assert len(before) == 3
    database = sa.make_url(store.url).database
    if store.backend == "postgresql":
        # what a database switched to read-only (or a standby after a failover) does
        server = request.getfixturevalue("postgres_server")
        _admin(server, f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        _kick_out(server, str(database))
    go.touch()
    out, err = proc.communicate(timeout=60)
    try:
        assert proc.returncode == 0, err
        lines = out.split("\n")
        assert lines[:2] == ["[200000, 200000, 200000]"] * 2
        assert float(lines[2]) < 5  # the flow's end did not wait for rows never written
        if store.backend == "sqlite":
            why = "OperationalError: attempt to write a readonly database [SQLITE_READONLY]"
        else:
            why = "ReadOnlySqlTransaction: cannot execute INSERT in a read-only transaction"
        [told] = _phases(err)["turned away"]
        assert re.fullmatch(
            f"the run store at {re.escape(_where(store))} cannot be written: it is read-only "
            rf"\({re.escape(why)}\)\. Runs go on and return their results, but these records "
            r"\(flow runs: 1(, states: \d)?(, task runs: \d+)?\) and later ones are not recorded "
            "until the store can "
            "be written again; the result files of records not written are removed from "
            f"{re.escape(str(results))}",
            told,
        ), told
        assert _result_files(results) == before  # the second run's files are gone
        assert store.rows("SELECT count(*) FROM flow_runs") == [(1,)]
        assert store.rows("SELECT count(*) FROM task_runs") == [(3,)]
    finally:
        if store.backend == "postgresql":
            _admin(server, f'ALTER DATABASE "{database}" RESET default_transaction_read_only')


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_a_lost_connection_is_retried_and_nothing_is_dropped(
    store: StoreUnderTest, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("postgres_server")
    database = str(sa.make_url(store.url).database)
    proc, _, go = _start_turned_away(store, tmp_path, "refused")
    # the server turns the store's clients away for a while (as during a restart)
    _admin(server, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    _kick_out(server, database)
    go.touch()
    try:
        time.sleep(1.5)
        assert proc.poll() is None  # the flow's end waits for its rows
    finally:
        _admin(server, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.split("\n")[:2] == ["[200000, 200000, 200000]"] * 2
    assert 1.0 < float(out.split("\n")[2]) < 15
    assert _phases(err)["turned away"] == []
    assert store.rows("SELECT state_type, count(*) FROM flow_runs GROUP BY state_type") == [
        ("COMPLETED", 2)
    ]
    assert store.rows("SELECT count(*) FROM task_runs WHERE result_file IS NOT NULL") == [(6,)]
    assert len(_result_files(store.home / "results")) == 6
