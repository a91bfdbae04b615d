"""The throwaway PostgreSQL server of the test suite, used through SQLAlchemy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from postgres_server import PostgresServer, find_bin_dir, require_bin_dir
from sqlalchemy import create_engine, make_url, text

# Names of the databases handed to test_each_test_gets_a_fresh_empty_database so far.
seen_databases: list[str] = []


def test_version_says_postgresql(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version()")).scalar_one()
    finally:
        engine.dispose()
    assert version.startswith("PostgreSQL ")


def test_rows_written_by_one_engine_are_read_by_another(postgres_url: str) -> None:
    writer = create_engine(postgres_url)
    reader = create_engine(postgres_url)
    try:
        with writer.begin() as conn:
            conn.execute(text("CREATE TABLE runs (id serial PRIMARY KEY, name text NOT NULL)"))
            conn.execute(
                text("INSERT INTO runs (name) VALUES (:name)"),
                [{"name": "extract"}, {"name": "load"}],
            )
        with reader.connect() as conn:
            rows = conn.execute(text("SELECT id, name FROM runs ORDER BY id")).all()
            other_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with writer.connect() as conn:
            writer_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert [tuple(row) for row in rows] == [(1, "extract"), (2, "load")]
        assert other_pid != writer_pid  # two server sessions, not one shared connection

        with reader.begin() as conn:
            conn.execute(text("UPDATE runs SET name = 'transform' WHERE id = 2"))
        with writer.connect() as conn:
            names = conn.execute(text("SELECT name FROM runs ORDER BY id")).scalars().all()
        assert names == ["extract", "transform"]
    finally:
        writer.dispose()
        reader.dispose()


@pytest.mark.parametrize("run", ["first", "second"])
def test_each_test_gets_a_fresh_empty_database(
    postgres_url: str, postgres_server: Any, run: str
) -> None:
    url = make_url(postgres_url)
    assert url.drivername == "postgresql+psycopg"
    assert url.host == "127.0.0.1"
    assert url.database not in seen_databases

    engine = create_engine(postgres_url)
    admin = create_engine(postgres_server.url)
    try:
        with engine.begin() as conn:
            tables = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).all()
            assert tables == []
            # Leave a table behind: the next test's database must not have it.
            conn.execute(text("CREATE TABLE leftover (x int)"))
        with admin.connect() as conn:
            existing = set(conn.execute(text("SELECT datname FROM pg_database")).scalars())
    finally:
        engine.dispose()
        admin.dispose()

    assert url.database in existing
    # The databases of earlier tests were dropped when those tests ended.
    assert existing.isdisjoint(seen_databases)
    seen_databases.append(url.database)


def test_server_listens_on_loopback_only_with_durability_off(postgres_server: Any) -> None:
    engine = create_engine(postgres_server.url)
    try:
        with engine.connect() as conn:
            settings = {
                name: conn.execute(text(f"SHOW {name}")).scalar_one()
                for name in (
                    "listen_addresses",
                    "fsync",
                    "synchronous_commit",
                    "full_page_writes",
                    "max_connections",
                )
            }
    finally:
        engine.dispose()
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "100",
    }


def test_a_second_server_starts_and_stops_cleanly() -> None:
    server = PostgresServer(require_bin_dir())
    server.start()
    try:
        assert server.running
        data_dir = server.data_dir
        url = server.create_database("scratch")
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT current_database()")).scalar_one() == "scratch"
        finally:
            engine.dispose()
    finally:
        server.stop()
    assert not server.running
    assert not data_dir.exists()
    server.stop()  # a second stop does nothing


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_missing_binaries_fail_under_ci_and_skip_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="scripts/install-test-services"):
        require_bin_dir(str(tmp_path / "no-such-postgresql" / "*" / "bin"))


def test_find_bin_dir_finds_debian_binaries(postgres_server: Any) -> None:
    assert find_bin_dir() == postgres_server.bin_dir
    assert (postgres_server.bin_dir / "initdb").exists()
