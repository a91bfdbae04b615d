"""Opening the store safely: read-only stores, and the permissions of the home and its files.

A store that exists but cannot be written (a read-only SQLite file, a read-only mount of the
home, a PostgreSQL database in read-only mode) leaves the flows of a script running: they
return their results unrecorded and one warning names the store. Readers (the command line,
``flowbook.runs``) get one message naming it. The home flowbook creates is 0700, its SQLite
file 0600, and a home that other users can write to is refused.

Tests run as root, whom file modes do not stop: read-only means a read-only bind mount of the
file or directory there (a chmod elsewhere), and a PostgreSQL database set read-only.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from store_under_test import read_only

import flowbook.runs
from flowbook import flow
from flowbook.settings import reload_settings
from flowbook.store import StoreError, StoreReadOnlyError, close_store, get_store

SCRIPT = """\
from flowbook import flow

@flow
def answer():
    return 42

print("first", answer())
print("second", answer())
"""
FIX = (
    "so runs cannot be recorded in it; make it writable, or point FLOWBOOK_HOME (or "
    "FLOWBOOK_DATABASE_URL) at another store, or set FLOWBOOK_STORE=off to run without one"
)


def _env(flowbook_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.update(flowbook_env)
    return env


def run(flowbook_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=_env(flowbook_env),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class ReadOnlyCase:
    env: dict[str, str]
    where: str  # how messages name the store
    reason: str  # what they say is read-only
    engine: sa.Engine

    def flow_runs(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM flow_runs")).scalar_one())


@pytest.fixture(params=["sqlite-file", "sqlite-home", "postgresql"])
def read_only_store(request: pytest.FixtureRequest) -> Iterator[ReadOnlyCase]:
    """A store with two recorded runs, made read-only for the test's duration."""
    # under /tmp, not pytest's tmp_path: a mount point must not be inside another test's tree
    base = Path(tempfile.mkdtemp(prefix="flowbook-ro-"))
    home = base / "home"
    env = {"FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"}
    url = f"sqlite:///{home / 'flowbook.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        env["FLOWBOOK_DATABASE_URL"] = url
    done = run(env, "-c", SCRIPT)
    assert done.returncode == 0, done.stderr
    # the test reads SQLite as immutable: in a read-only directory, SQLite cannot make the
    # -shm file a reader of a WAL database needs otherwise. No pooled connection keeps the
    # file open (a mount in use cannot be undone).
    reader = url if request.param == "postgresql" else f"sqlite:///file:{home}/flowbook.db"
    if request.param != "postgresql":
        reader += "?immutable=1&uri=true"
    engine = sa.create_engine(reader, poolclass=sa.pool.NullPool)
    try:
        if request.param == "postgresql":
            dbname = sa.engine.make_url(url).database
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(
                    sa.text(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
                )
            where = sa.engine.make_url(url).render_as_string(hide_password=True)
            reason = "ReadOnlySqlTransaction: cannot execute INSERT in a read-only transaction"
            yield ReadOnlyCase(env, where, reason, engine)
            return
        database = home / "flowbook.db"
        if request.param == "sqlite-file":
            target, reason = database, "the file is not writable"
        else:
            target, reason = home, f"the directory {home} is not writable"
        with read_only(target):
            yield ReadOnlyCase(env, str(database), reason, engine)
    finally:
        engine.dispose()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_a_read_only_store_is_named_and_flows_still_return(
    read_only_store: ReadOnlyCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = read_only_store
    message = f"the run store {case.where} is read-only ({case.reason}), {FIX}"
    assert case.flow_runs() == 2

    # a script: both flow calls return, one warning names the store, nothing is written
    script = run(case.env, "-c", SCRIPT)
    assert script.returncode == 0, script.stderr
    assert script.stdout == "first 42\nsecond 42\n"
    warning = f"RuntimeWarning: runs in this process are not recorded: {message}"
    assert script.stderr.count(warning) == 1, script.stderr
    assert "Traceback" not in script.stderr

    # the command line: one line on stderr, exit status 1
    listed = run(case.env, "-m", "flowbook.cli", "runs")
    assert (listed.returncode, listed.stdout) == (1, "")
    assert listed.stderr == f"flowbook: {message}\n"

    # in this process: the flow returns with the warning; readers get the error
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    try:
        with pytest.warns(RuntimeWarning) as warned:
            reload_settings()
        assert [str(w.message) for w in warned] == [
            f"runs in this process are not recorded: {message}"
        ]
        assert flow(lambda: 7, name="in-process")() == 7
        with pytest.raises(StoreReadOnlyError) as info:
            flowbook.runs.list()
        assert str(info.value) == message
    finally:
        close_store()
    assert case.flow_runs() == 2


def test_the_home_and_database_are_private_to_their_owner(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "made" / "on" / "the" / "way" / "home"
    monkeypatch.setenv("FLOWBOOK_HOME", str(home))
    reload_settings()
    try:
        assert flow(lambda: 1, name="private")() == 1
        store = get_store()
        assert store is not None
        store.flush()
        journal = home / "journal"
        entries = (home, *home.iterdir(), *journal.iterdir())
        mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in entries}
        # -wal and -shm exist while the store is open, with the database's mode; so does
        # the run journal of this process
        assert mode == {
            "home": 0o700,
            "results": 0o700,
            "journal": 0o700,
            f"{store.process_id}.jsonl": 0o600,
            "flowbook.db": 0o600,
            "flowbook.db-wal": 0o600,
            "flowbook.db-shm": 0o600,
        }
        # directories made on the way to the home get the usual mode
        umask = os.umask(0o022)
        os.umask(umask)
        assert stat.S_IMODE((tmp_path / "made").stat().st_mode) == 0o777 & ~umask
    finally:
        close_store()


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777], ids=oct)
def test_a_home_others_can_write_to_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: int
) -> None:
    home = tmp_path / "shared"
    home.mkdir()
    home.chmod(mode)
    monkeypatch.setenv("FLOWBOOK_HOME", str(home))
    shown = stat.filemode(stat.S_IFDIR | mode)
    message = (
        f"the flowbook home {home} (FLOWBOOK_HOME) is writable by other users (mode {shown}); "
        "results are loaded from it with pickle, so anyone who can write there could make "
        f"flowbook run their code as you; run chmod 700 {home}, or set FLOWBOOK_HOME to a "
        "directory only you can write to"
    )
    try:
        with pytest.raises(StoreError) as info:
            reload_settings()
        assert str(info.value) == message
        assert not (home / "flowbook.db").exists()  # no store was made there
    finally:
        close_store()
    listed = run({"FLOWBOOK_HOME": str(home)}, "-m", "flowbook.cli", "runs")
    assert (listed.returncode, listed.stdout, listed.stderr) == (1, "", f"flowbook: {message}\n")

    home.chmod(0o700)  # what the message says to do
    assert flow(lambda: 2, name="after-chmod")() == 2
    close_store()
    assert (home / "flowbook.db").is_file()


def test_an_older_home_that_only_its_owner_can_write_to_is_used_as_it_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "older"
    home.mkdir()
    home.chmod(0o755)  # ~/.flowbook as earlier versions made it
    monkeypatch.setenv("FLOWBOOK_HOME", str(home))
    reload_settings()
    try:
        assert flow(lambda: 3, name="older-home")() == 3
    finally:
        close_store()
    assert stat.S_IMODE(home.stat().st_mode) == 0o755
