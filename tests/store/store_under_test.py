"""The store a store test runs against: a fixture that opens a store of the test's own, on
SQLite and on the real PostgreSQL server of the test session, and the helpers around it.

Test modules use it with ``from store_under_test import StoreUnderTest, store, ...`` (the
fixture is found by pytest once imported into the module).
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowbook.settings import reload_settings
from flowbook.store import close_store, get_store


@dataclass
class StoreUnderTest:
    """A store of this test's own: its backend, home, URL and the ``FLOWBOOK_*`` variables
    that point a process at it; it is read and changed through an engine of the test's own."""

    backend: str
    home: Path
    url: str
    env: dict[str, str]
    engine: sa.Engine

    @property
    def results(self) -> Path:
        return self.home / "results"

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql), params)]

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT count(*) FROM {table}")[0][0])

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)


def store_env(home: Path, url: str | None) -> dict[str, str]:
    env = {"FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"}
    if url is not None:
        env["FLOWBOOK_DATABASE_URL"] = url
    return env


def child_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a child process that uses the store ``env`` names."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    child.pop("JPY_SESSION_NAME", None)
    child.update(env)
    return child


def check_no_sqlite_fallback(backend: str, home: Path) -> None:
    # a process or kernel that missed FLOWBOOK_DATABASE_URL would have written SQLite here
    if backend == "postgresql":
        assert not (home / "flowbook.db").exists(), "a process used SQLite, not PostgreSQL"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StoreUnderTest]:
    """A store of this test's own, opened by the test process."""
    home = tmp_path / "home"
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    env = store_env(home, url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    reload_settings()
    opened = get_store()
    assert opened is not None
    engine = sa.create_engine(opened.url)
    yield StoreUnderTest(request.param, home, opened.url, env, engine)
    close_store()
    engine.dispose()
    check_no_sqlite_fallback(request.param, home)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make the file or directory ``path`` unwritable, also for root (a read-only bind mount:
    root ignores modes)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield
        finally:
            path.chmod(mode)
        return
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(path)], check=True)  # still held open


def back_to_version_6(engine: sa.Engine) -> None:
    """Undo what schema version 7 did: the index of flow runs by state back in its place."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE INDEX ix_flow_runs_state_type ON flow_runs (state_type)"))
        conn.execute(sa.text("UPDATE flowbook_meta SET value = '6' WHERE key = 'schema_version'"))


def back_to_version_5(engine: sa.Engine) -> None:
    """Undo what schema versions 7 and 6 did: the index by state back, the flow-run key columns
    and their indexes gone (the indexes by flow-run id back in their place)."""
    back_to_version_6(engine)
    with engine.begin() as conn:
        for index in ("ix_task_runs_flow_run_created_us", "ix_logs_flow_run_created_us"):
            conn.execute(sa.text(f"DROP INDEX {index}"))
        for table, column in (
            ("flow_runs", "created_us"),
            ("task_runs", "flow_run_created_us"),
            ("logs", "flow_run_created_us"),
        ):
            conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        for table in ("task_runs", "logs"):
            conn.execute(sa.text(f"CREATE INDEX ix_{table}_flow_run_id ON {table} (flow_run_id)"))
        conn.execute(sa.text("UPDATE flowbook_meta SET value = '5' WHERE key = 'schema_version'"))
