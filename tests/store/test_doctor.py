"""``flowbook doctor``: a healthy store, dropped records, stray and missing files, a damaged
SQLite file (bytes overwritten on disk) and ``--repair`` recovering the rows that can be read.

Stores are written by real processes running flows, damaged by writing into the real file,
and checked with the real command (``python -m flowbook.cli doctor``).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flowbook.store.schema import SCHEMA_VERSION

pytestmark = pytest.mark.slow

WRITE_RUNS = """\
    import sys

    from flowbook import flow, get_run_logger, task
    from flowbook.tasks import task_input_hash


    @task
    def big(i):
        return bytes([i]) * 100_000  # more than 64 KiB: kept in a result file


    @task(cache_key_fn=task_input_hash)
    def cached(i):
        return [i] * 50_000  # a cache entry kept in a file


    @task
    def chatty(n):
        logger = get_run_logger()
        for i in range(n):
            logger.info("marker-%05d", i)
        return n


    @flow(name="stored")
    def stored(n):
        return [len(big(1)), len(cached(2)), chatty(n)]


    print(stored(int(sys.argv[1])))
"""


def _env(home: Path, url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.pop("JPY_SESSION_NAME", None)
    env.update({"FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"})
    if url is not None:
        env["FLOWBOOK_DATABASE_URL"] = url
    return env


def _python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120
    )


def _doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return _python(env, "-m", "flowbook.cli", "doctor", *args)


def _write_runs(tmp_path: Path, env: dict[str, str], lines: int = 10) -> None:
    script = tmp_path / "write_runs.py"
    script.write_text(textwrap.dedent(WRITE_RUNS))
    done = _python(env, str(script), str(lines))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"[100000, 50000, {lines}]"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _url(backend: str, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("postgres_url") if backend == "postgresql" else None


def test_a_healthy_store_is_reported_with_its_contents(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    home = tmp_path / "home"
    url = _url(backend, request)
    env = _env(home, url)
    _write_runs(tmp_path, env)
    done = _doctor(env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    if backend == "sqlite":
        assert lines[0].startswith(f"store:      {home / 'flowbook.db'} (sqlite, ")
    else:
        assert lines[0].startswith(f"store:      {url} (postgresql, ")
    assert lines[0].endswith(f", schema version {SCHEMA_VERSION})")
    assert lines[1:] == [
        f"results:    {home / 'results'}",
        "records:    flow runs: 1, task runs: 3, log lines: 10, cache entries: 1",
        "integrity:  ok",
        "dropped:    none",
        "files:      ok",
        "flowbook doctor: no problem found",
    ]
    report = json.loads(_doctor(env, "--json").stdout)
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["counts"] == {"flow_runs": 1, "task_runs": 3, "logs": 10, "cache_entries": 1}
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["size_bytes"] > 0


DROPPING = """\
    from flowbook import flow, get_run_logger, task


    @task
    def odd():
        get_run_logger().info("%d items", "many")  # a line that cannot be made
        return 1


    @flow(name="dropping")
    def dropping():
        return odd()


    print(dropping())
"""


def test_dropped_records_stray_files_and_missing_files_are_problems_named(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    home = tmp_path / "home"
    env = _env(home, _url(backend, request))
    _write_runs(tmp_path, env)
    script = tmp_path / "dropping.py"
    script.write_text(textwrap.dedent(DROPPING))
    dropped = _python(env, str(script))
    assert dropped.returncode == 0, dropped.stderr
    assert "could not write a log line" in dropped.stderr
    results = home / "results"
    run_file = sorted((results / "runs").iterdir())[0]
    run_file.unlink()  # a row whose file is gone
    stray = results / "runs" / "0190c0de-0000-7000-8000-000000000000.pkl"
    stray.write_bytes(b"left by a process killed before its row was committed")
    old = time.time() - 3600
    os.utime(stray, (old, old))
    fresh = results / "cache" / "being-written.pkl"
    fresh.write_bytes(b"its row may be on its way")

    report = json.loads(_doctor(env, "--json").stdout)
    assert report["ok"] is False
    assert report["drops_total"] == 1
    assert report["drops_by_kind"] == {"log": 1}
    [drop] = report["recent_drops"]
    why = "it cannot be stored: TypeError: %d format: a real number is required, not str"
    assert (drop["what"], drop["reason"]) == ("log", why)
    assert report["orphans"] == [f"runs/{stray.name}"]
    assert [m["file"] for m in report["missing"]] == [f"runs/{run_file.name}"]

    done = _doctor(env)
    assert done.returncode == 1
    out = done.stdout
    assert "dropped:    1 record(s) could not be written (log lines: 1);\n" in out
    assert f"  log line of run {drop['run_id']}: {why}\n" in out
    assert (
        "files:      1 file(s) no row points at (`flowbook doctor --repair` removes them):\n"
        f"  runs/{stray.name}\n"
    ) in out
    assert "files:      1 row(s) whose result file is missing:\n  task run " in out
    assert f": runs/{run_file.name}\n" in out
    assert "note:       1 file(s) younger than 60 s not judged" in out
    assert out.endswith("flowbook doctor: 2 problem(s) found\n")

    repaired = _doctor(env, "--repair")
    assert "repair:     the database is intact: nothing to copy" in repaired.stdout
    assert "repair:     removed 1 file(s) no row pointed at" in repaired.stdout
    assert not stray.exists()
    assert fresh.exists()  # too young to judge
    assert repaired.returncode == 1  # the missing file cannot be brought back
    assert repaired.stdout.endswith("flowbook doctor: 1 problem(s) found\n")


def _damage_page_holding(db: Path, marker: bytes) -> int:
    """Overwrite the page of ``db`` that holds ``marker`` (as a disk fault would); its number."""
    data = db.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    at = data.index(marker)
    page = at // page_size
    assert page > 0  # not the header page
    with open(db, "r+b") as f:
        f.seek(page * page_size)
        f.write(b"\xff" * page_size)
    return page + 1


def _runs_of_3000_lines(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """A SQLite store in ``tmp_path`` with a run that logged 3,000 lines: home, env, file."""
    home = tmp_path / "home"
    env = _env(home, None)
    _write_runs(tmp_path, env, lines=3000)
    return home, env, home / "flowbook.db"


def test_a_damaged_sqlite_store_is_found_and_repair_keeps_every_readable_row(
    tmp_path: Path,
) -> None:
    home, env, db = _runs_of_3000_lines(tmp_path)
    assert not Path(f"{db}-wal").exists()  # the last process folded the log into the file
    page = _damage_page_holding(db, b"marker-01500")

    done = _doctor(env)
    assert done.returncode == 1
    assert "integrity:  " in done.stdout
    assert "integrity_check: " in done.stdout
    assert f"Page {page}" in done.stdout or "malformed" in done.stdout
    assert done.stdout.endswith(" problem(s) found\n")

    repaired = _doctor(env, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    out = repaired.stdout
    [kept] = home.glob("flowbook.db.corrupt-*")
    assert kept.name.startswith("flowbook.db.corrupt-")
    assert f"repair:     copied the readable rows into a fresh {db}\n" in out
    assert f"            the damaged file is kept as {kept}\n" in out
    [not_copied] = [line for line in out.splitlines() if "not copied:" in line]
    assert "not copied: log lines: up to " in not_copied
    assert "database disk image is malformed" in not_copied
    assert "integrity:  ok" in out
    assert out.endswith("flowbook doctor: no problem found\n")

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        messages = {m for (m,) in conn.execute("SELECT message FROM logs")}
        assert conn.execute("SELECT count(*) FROM flow_runs").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM task_runs").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM cache_entries").fetchone() == (1,)
    lost = {f"marker-{i:05d}" for i in range(3000)} - messages
    # the damaged page's rows, and only those, are lost
    assert "marker-01500" in lost
    assert 0 < len(lost) < 200
    numbers = sorted(int(m.split("-")[1]) for m in lost)
    assert numbers == list(range(numbers[0], numbers[-1] + 1))
    # the repaired store is used as any other: runs are recorded in it
    _write_runs(tmp_path, env)
    assert _doctor(env).returncode == 0


def test_repair_of_an_older_store_gives_the_rows_it_copies_their_flow_run_keys(
    tmp_path: Path,
) -> None:
    import sqlalchemy as sa
    from store_under_test import back_to_version_5

    _, env, db = _runs_of_3000_lines(tmp_path)
    engine = sa.create_engine(f"sqlite:///{db}")
    back_to_version_5(engine)  # the store as version 5 wrote it
    engine.dispose()
    _damage_page_holding(db, b"marker-01500")

    repaired = _doctor(env, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"schema version {SCHEMA_VERSION}" in repaired.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM flowbook_meta").fetchone() == (str(SCHEMA_VERSION),)
        (run_id, key, created_at) = conn.execute(
            "SELECT id, created_us, created_at FROM flow_runs"
        ).fetchone()
        assert key == int(created_at * 1_000_000)
        for table in ("task_runs", "logs"):
            by_id = conn.execute(
                f"SELECT count(*) FROM {table} WHERE flow_run_id = ?", (run_id,)
            ).fetchone()
            by_key = conn.execute(
                f"SELECT count(*) FROM {table} WHERE flow_run_created_us = ?", (key,)
            ).fetchone()
            assert by_id == by_key, table
            assert by_id[0] > 0, table
    shown = _python(env, "-m", "flowbook.cli", "runs", "show", run_id[:8])
    assert shown.returncode == 0, shown.stderr
    assert "marker-00000" in shown.stdout


WAITING = """\
    import sys
    import time
    from pathlib import Path

    import flowbook.store

    flowbook.store.get_store()
    Path(sys.argv[1]).touch()
    time.sleep(60)
"""


def test_repair_refuses_while_another_process_uses_the_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home, None)
    _write_runs(tmp_path, env)
    script = tmp_path / "waiting.py"
    script.write_text(textwrap.dedent(WAITING))
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, str(script), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.01)
        done = _doctor(env, "--repair")
    finally:
        proc.kill()
        proc.wait()
    assert done.returncode == 1
    assert done.stderr == (
        f"flowbook: 1 process(es) still use the store at {home / 'flowbook.db'} (pid {proc.pid} "
        f"on {socket.gethostname()}): stop them (or their notebook kernels), then run flowbook "
        "doctor --repair again\n"
    )
    assert list(home.glob("flowbook.db.*")) == []


def test_doctor_without_a_store_says_where_it_looked(tmp_path: Path) -> None:
    home = tmp_path / "nothing-here"
    done = _doctor(_env(home, None))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"flowbook: there is no run store at {home / 'flowbook.db'}: nothing has been recorded "
        "there (check FLOWBOOK_HOME, or FLOWBOOK_DATABASE_URL for a database server)\n"
    )
    assert not home.exists()  # looking created nothing
