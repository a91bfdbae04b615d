"""A store whose creator was stopped half-way: its tables exist, its version row does not.

SQLite through pysqlite commits each CREATE TABLE at once, so an interrupt or a kill between
creating the tables and writing the version row leaves such a store. Every later open used to
wait for "another process" to finish creating it, and then refused it for good.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

import flowbook.runs
from flowbook import flow
from flowbook.store import StoreError, close_store
from flowbook.store.database import connect
from flowbook.store.schema import flow_runs, metadata


def _half_created(home: Path) -> Path:
    home.mkdir(mode=0o700)
    database = home / "flowbook.db"
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        metadata.create_all(conn)  # the tables, and no schema_version row
    engine.dispose()
    database.chmod(0o600)
    return database


def test_a_half_created_store_is_created_again_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    database = _half_created(home)
    monkeypatch.setenv("FLOWBOOK_HOME", str(home))
    from flowbook.settings import reload_settings

    close_store()
    reload_settings()

    @flow(flow_run_name="after-the-half-created-store")
    def works() -> int:
        return 7

    started = time.monotonic()
    assert works() == 7
    assert time.monotonic() - started < 10
    assert [r.name for r in flowbook.runs.list()] == ["after-the-half-created-store"]
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        version = conn.execute(
            sa.text("SELECT value FROM flowbook_meta WHERE key = 'schema_version'")
        ).scalar()
    engine.dispose()
    assert version is not None
    close_store()


def test_a_store_with_rows_but_no_version_is_refused_naming_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "home"
    database = _half_created(home)
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.execute(
            flow_runs.insert().values(
                id="11111111-1111-1111-1111-111111111111",
                name="kept",
                flow_name="f",
                created_at=time.time(),
            )
        )
    engine.dispose()
    with pytest.raises(StoreError, match="has no schema version but its table 'flow_runs'"):
        connect(f"sqlite:///{database}", home, home / "results")
    # nothing was dropped
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM flow_runs")).scalars().all() == ["kept"]
    engine.dispose()
