"""Why a cached call missed: ``flowbook.cache.why_missed`` on a real store, the explanation
rules on plain data, and the schema migration that records what keys are made of.

The store tests run on SQLite and on a throwaway PostgreSQL cluster. Bodies count their real
executions, so every "missed" below is a call that really ran.
"""

from __future__ import annotations

import itertools
import linecache
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import flowbook.cache
import flowbook.runs
from flowbook import flow, task
from flowbook.caching.keys import CacheKeyContext, KeyParts
from flowbook.caching.misses import MissHistory, MissRecord, StoredEntry, explain
from flowbook.settings import reload_settings
from flowbook.store import StoreError, close_store, get_store, schema
from flowbook.tasks import task_input_hash

V1_DUMP = Path(__file__).parent / "data" / "store_v1.sql"
# the task key prefix of the tasks in V1_DUMP (written by a script at that path)
V1_PREFIX = "script:/tmp/v1gen/gen.py:"


@dataclass
class StoreUnderTest:
    backend: str
    home: Path
    url: str
    engine: sa.Engine

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[StoreUnderTest]:
    home = tmp_path / "home"
    monkeypatch.setenv("FLOWBOOK_HOME", str(home))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    if request.param == "postgresql":
        monkeypatch.setenv("FLOWBOOK_DATABASE_URL", request.getfixturevalue("postgres_url"))
    reload_settings()
    opened = get_store()
    assert opened is not None
    engine = sa.create_engine(opened.url)
    yield StoreUnderTest(request.param, home, opened.url, engine)
    close_store()
    engine.dispose()


_cells = itertools.count(1)


def run_cell(source: str) -> dict[str, Any]:
    """Run ``source`` as a notebook runs a cell: module ``__main__``, source in linecache."""
    source = textwrap.dedent(source)
    filename = f"<notebook-cell-{next(_cells)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace


SHOUT = """
from flowbook import task
from flowbook.tasks import task_input_hash

RAN = []

@task(cache_key_fn=task_input_hash)
def shout(word, times=2):
    RAN.append(word)
    return (word.upper() + "{mark}") * times
"""


# -- flowbook.cache.why_missed on a real store -----------------------------------------------------


def test_a_first_call_misses_because_nothing_was_ever_stored(store: StoreUnderTest) -> None:
    @task(cache_key_fn=task_input_hash)
    def double(x: int) -> int:
        return 2 * x

    assert double(1) == 2
    why = flowbook.cache.why_missed(double)
    assert why.cause == "first_call"
    assert why.reason == "no entry was ever stored for this task before this call"
    assert (why.task_name, why.flow_name, why.task_run) == ("double", None, "double-0")
    assert why.key == flowbook.cache.entries(task="double")[0].key
    assert why.input_preview == '{"x": "1"}'


def test_a_changed_input_is_named(store: StoreUnderTest) -> None:
    ran: list[tuple[int, int]] = []

    @task(cache_key_fn=task_input_hash)
    def area(width: int, height: int = 3) -> int:
        ran.append((width, height))
        return width * height

    @flow
    def shapes(width: int, height: int = 3) -> int:
        return area(width, height)

    assert shapes(2) == 6
    assert shapes(2) == 6  # a hit
    assert shapes(5) == 15
    assert ran == [(2, 3), (5, 3)]

    why = flowbook.cache.why_missed("area")
    assert why.cause == "changed"
    assert why.changed_inputs == ["width"]
    assert why.source_changed is False
    assert (why.added_inputs, why.removed_inputs) == ([], [])
    assert why.reason.startswith("input 'width' changed (width was 2, now 5; compared with the")
    assert why.flow_name == "shapes"
    (compared,) = [e for e in flowbook.cache.entries(task="area") if e.key == why.compared_key]
    assert compared.input_preview == '{"width": "2", "height": "3"}'

    # the closest entry is the one that differs least: (5, 3) -> (5, 4) changed only height
    assert shapes(5, 4) == 20
    why = flowbook.cache.why_missed("area")
    assert why.changed_inputs == ["height"]
    assert "height was 3, now 4" in why.reason

    assert shapes(7, 7) == 49
    why = flowbook.cache.why_missed("area")
    assert why.changed_inputs == ["height", "width"]  # by name
    assert why.reason.startswith("inputs 'height' and 'width' changed (")


def test_an_edited_cell_misses_because_the_source_changed(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "analysis.ipynb"))
    first = run_cell(SHOUT.format(mark="!"))
    assert first["shout"]("hi") == "HI!HI!"

    rerun = run_cell(SHOUT.format(mark="!"))  # the same cell again: a hit
    assert rerun["shout"]("hi") == "HI!HI!"
    assert rerun["RAN"] == []

    edited = run_cell(SHOUT.format(mark="?"))  # the body edited, the call unchanged
    assert edited["shout"]("hi") == "HI?HI?"
    assert edited["RAN"] == ["hi"]
    assert edited["shout"].task_key == first["shout"].task_key

    why = flowbook.cache.why_missed("shout")
    assert why.cause == "changed"
    assert why.source_changed is True
    assert why.changed_inputs == []
    assert why.reason.startswith("the task's source changed (compared with the entry stored at")
    assert why.task_key == f"notebook:{tmp_path / 'analysis.ipynb'}:shout"

    # source and an input at once
    assert edited["shout"]("hi", times=3) == "HI?HI?HI?"
    again = run_cell(SHOUT.format(mark="."))
    assert again["shout"]("hi", times=3) == "HI.HI.HI."
    why = flowbook.cache.why_missed(again["shout"])
    assert (why.source_changed, why.changed_inputs) == (True, [])  # closest: "hi", 3 with "?"
    assert again["shout"]("yo", times=4) == "YO.YO.YO.YO."
    why = flowbook.cache.why_missed("shout")
    assert (why.source_changed, why.changed_inputs) == (False, ["times", "word"])
    another = run_cell(SHOUT.format(mark="#"))
    assert another["shout"]("yo", times=5) == "YO#" * 5
    why = flowbook.cache.why_missed("shout")
    assert (why.source_changed, why.changed_inputs) == (True, ["times"])
    assert why.reason.startswith("the task's source and input 'times' changed (times was 4, now 5")


def test_an_expired_entry_is_named_with_its_expiry(store: StoreUnderTest) -> None:
    ran: list[str] = []

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(milliseconds=200))
    def hello(name: str) -> str:
        ran.append(name)
        return f"hello {name}"

    hello("Marvin")
    (entry,) = flowbook.cache.entries(task="hello")
    time.sleep(0.25)
    hello("Marvin")
    assert ran == ["Marvin", "Marvin"]

    why = flowbook.cache.why_missed("hello")
    assert why.cause == "expired"
    assert why.expired_at == entry.expires
    assert entry.expires is not None
    expiry = entry.expires.replace("T", " ")[:19]
    assert why.reason == f"the entry for these inputs expired at {expiry} UTC"


def test_refresh_cache_is_named(store: StoreUnderTest) -> None:
    @task(cache_key_fn=task_input_hash)
    def fetch(url: str) -> str:
        return url.upper()

    fetch("a")
    fetch.with_options(refresh_cache=True)("a")
    why = flowbook.cache.why_missed("fetch")
    assert why.cause == "refresh_cache"
    assert why.reason.startswith("refresh_cache=True: the call ran without looking up its entry")


def test_a_cleared_or_invalidated_entry_is_named(store: StoreUnderTest) -> None:
    ran: list[int] = []

    @task(cache_key_fn=task_input_hash)
    def square(x: int) -> int:
        ran.append(x)
        return x * x

    square(3)
    square(4)
    assert flowbook.cache.clear(task="square") == 2
    square(3)
    why = flowbook.cache.why_missed("square")
    assert why.cause == "removed"
    assert why.reason.startswith("an entry for these inputs was stored at ")
    assert why.reason.endswith("is gone: it was cleared, invalidated, or removed as unreadable")

    (entry,) = flowbook.cache.entries(task="square")
    assert flowbook.cache.invalidate([entry]) == 1
    assert flowbook.cache.invalidate([entry]) == 0
    square(3)
    assert flowbook.cache.why_missed("square").cause == "removed"
    assert ran == [3, 4, 3, 3]


def test_nothing_left_to_compare_with_after_a_clear(store: StoreUnderTest) -> None:
    @task(cache_key_fn=task_input_hash)
    def cube(x: int) -> int:
        return x**3

    cube(2)
    flowbook.cache.clear(all=True)
    cube(5)
    why = flowbook.cache.why_missed("cube")
    assert why.cause == "no_entries"
    assert why.reason == (
        "no entry of this task was left to compare with: the earlier ones were cleared or "
        "invalidated"
    )


def test_a_custom_key_function_misses_without_parts(store: StoreUnderTest) -> None:
    def by_sum(context: CacheKeyContext, parameters: dict[str, Any]) -> int:
        return sum(parameters["nums"])

    @task(cache_key_fn=by_sum)
    def total(nums: list[int]) -> int:
        return sum(nums)

    total([1, 1])
    total([2, 3])
    why = flowbook.cache.why_missed("total")
    assert why.cause == "unknown"
    assert why.reason == (
        "the cache_key_fn returned the key '5', which has no entry; the part of a key that "
        "changed is known only for keys made by task_input_hash"
    )
    assert {e.source_hash for e in flowbook.cache.entries(task="total")} == {None}

    # a key function that returns task_input_hash's key unchanged keeps its parts
    def wrapped(context: CacheKeyContext, parameters: dict[str, Any]) -> str | None:
        return task_input_hash(context, parameters)

    @task(cache_key_fn=wrapped)
    def wrapped_total(nums: list[int]) -> int:
        return sum(nums)

    wrapped_total([1])
    wrapped_total([2])
    assert flowbook.cache.why_missed("wrapped_total").changed_inputs == ["nums"]
    (latest, _) = flowbook.cache.entries(task="wrapped_total")
    assert latest.source_hash is not None
    assert latest.input_hashes is not None
    assert list(latest.input_hashes) == ["nums"]


def test_hits_after_the_miss_are_counted_and_record_no_miss(store: StoreUnderTest) -> None:
    @task(cache_key_fn=task_input_hash)
    def inc(x: int) -> int:
        return x + 1

    inc(1)
    flowbook.cache.misses()  # waits for the writer
    before = store.rows("SELECT missed_at, task_run_id FROM cache_misses")
    assert len(before) == 1
    inc(1)
    inc(1)
    assert flowbook.cache.why_missed("inc").hits_since == 2
    assert store.rows("SELECT missed_at, task_run_id FROM cache_misses") == before


def test_the_latest_miss_per_task_is_kept(store: StoreUnderTest) -> None:
    @task(cache_key_fn=task_input_hash)
    def a(x: int) -> int:
        return x

    @task(cache_key_fn=task_input_hash)
    def b(x: int) -> int:
        return x

    @flow
    def both() -> None:
        a.map(range(20)).result()
        b(1)

    both()
    rows = store.rows("SELECT task_name, key FROM cache_misses ORDER BY task_name")
    assert [r.task_name for r in rows] == ["a", "b"]
    misses = flowbook.cache.misses()
    assert {m.task_name for m in misses} == {"a", "b"}
    assert [m.task_name for m in flowbook.cache.misses(task="b")] == ["b"]
    assert flowbook.cache.misses(flow="nope") == []
    # the latest of 20 concurrent misses: compared with the siblings stored before it, if any
    (miss_a,) = flowbook.cache.misses(task="a")
    assert miss_a.cause in ("first_call", "changed")
    assert miss_a.changed_inputs in ([], ["x"])


def test_why_missed_names_what_it_cannot_find(store: StoreUnderTest) -> None:
    @task
    def plain() -> int:
        return 1

    plain()
    with pytest.raises(LookupError) as missing:
        flowbook.cache.why_missed(plain)
    message = str(missing.value)
    assert f"no cache miss of task {plain.task_key!r} is recorded" in message
    assert "misses are recorded for tasks with a cache_key_fn" in message
    with pytest.raises(LookupError, match="no cache miss of task 'nope'"):
        flowbook.cache.why_missed("nope")
    with pytest.raises(TypeError, match="got 3 of type int"):
        flowbook.cache.why_missed(3)
    with pytest.raises(ValueError, match="got ''"):
        flowbook.cache.why_missed("")
    with pytest.raises(TypeError, match=r"\(task_key, key\) pairs of strings; got 'ab'"):
        flowbook.cache.invalidate(["ab"])


def test_the_in_memory_cache_still_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWBOOK_STORE", "off")
    reload_settings()
    ran: list[int] = []

    @task(cache_key_fn=task_input_hash)
    def neg(x: int) -> int:
        ran.append(x)
        return -x

    assert [neg(1), neg(1), neg(2)] == [-1, -1, -2]
    assert ran == [1, 2]
    with pytest.raises(StoreError, match="FLOWBOOK_STORE=off"):
        flowbook.cache.why_missed("neg")


# -- the explanation rules on plain data -----------------------------------------------------------


def parts(key: str, source: str = "s1", **inputs: str) -> KeyParts:
    return KeyParts(key, source, tuple(sorted(inputs.items())))


def miss(key_parts: KeyParts | None, key: str = "k-new", **kw: Any) -> MissRecord:
    fields: dict[str, Any] = {
        "task_key": "m:t",
        "key": key,
        "task_name": "t",
        "flow_name": None,
        "missed_at": 1000.0,
        "cause": None,
        "expired_at": None,
        "key_parts": key_parts,
    }
    fields.update(kw)
    return MissRecord(**fields)


def test_rules_precedence_and_closest_entry() -> None:
    new = parts("k-new", x="1", y="2")
    older = StoredEntry("k-old", 10.0, parts("k-old", x="9", y="9"))
    closer = StoredEntry("k-close", 5.0, parts("k-close", x="1", y="3"))
    later = StoredEntry("k-later", 2000.0, parts("k-later", x="1", y="2", z="0"))
    why = explain(miss(new), [older, closer, later], MissHistory())
    assert (why.cause, why.compared_key, why.changed_inputs) == ("changed", "k-close", ["y"])

    # refresh, expiry and a removed entry come before comparing
    assert explain(miss(new, cause="refresh"), [closer], MissHistory()).cause == "refresh_cache"
    expired = explain(miss(new, cause="expired", expired_at=900.0), [closer], MissHistory())
    assert (expired.cause, expired.reason) == (
        "expired",
        "the entry for these inputs expired at 1970-01-01 00:15:00 UTC",
    )
    removed = explain(miss(new), [closer], MissHistory(same_key_stored_at=500.0))
    assert removed.cause == "removed"

    # among equally close entries, the newest
    twin = StoredEntry("k-twin", 7.0, parts("k-twin", x="1", y="4"))
    assert explain(miss(new), [closer, twin], MissHistory()).compared_key == "k-twin"


def test_rules_for_signatures_and_unknown_parts() -> None:
    new = parts("k-new", "s2", x="1", z="5")
    old = StoredEntry("k-old", 10.0, parts("k-old", "s1", x="1", y="2"))
    why = explain(miss(new), [old], MissHistory())
    assert (why.source_changed, why.added_inputs, why.removed_inputs) == (True, ["z"], ["y"])
    assert why.reason.startswith(
        "the task's source changed; input 'z' is new; input 'y' is gone (compared with"
    )

    unrecorded = StoredEntry("k-v1", 10.0, None)
    why = explain(miss(new), [unrecorded], MissHistory(stored_before=1))
    assert why.cause == "unknown"
    assert "stored before flowbook recorded what keys are made of" in why.reason

    same = StoredEntry("k-same", 10.0, parts("k-same", "s2", x="1", z="5"))
    why = explain(miss(new), [same], MissHistory())
    assert why.cause == "unknown"
    assert "has the same source and inputs" in why.reason

    assert explain(miss(new), [], MissHistory()).cause == "first_call"
    assert explain(miss(new), [], MissHistory(stored_before=3)).cause == "no_entries"


def test_key_parts_round_trip_through_json() -> None:
    p = parts("k", "src", b="2", a="1")
    assert KeyParts.from_json("k", p.to_json()) == p
    for bad in (None, "", "nope", "[]", '{"source": 1, "inputs": {}}', '{"source": "s"}'):
        assert KeyParts.from_json("k", bad) is None


# -- schema version 2 ------------------------------------------------------------------------------


def test_a_version_1_store_is_migrated_and_keeps_its_rows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    @task(cache_key_fn=task_input_hash)
    def double(x: int) -> int:
        return 2 * x

    # a store written by flowbook at schema version 1, its tasks renamed to this test's task
    home = tmp_path / "home"
    home.mkdir()
    db = sqlite3.connect(home / "flowbook.db")
    dump = V1_DUMP.read_text().replace(V1_PREFIX + "double", double.task_key)
    db.executescript(dump)
    db.close()

    monkeypatch.setenv("FLOWBOOK_HOME", str(home))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    reload_settings()
    try:
        assert get_store() is not None
        db = sqlite3.connect(home / "flowbook.db")
        try:
            (version,) = db.execute("SELECT value FROM flowbook_meta").fetchone()
            entries = db.execute(
                "SELECT task_name, hits, input_preview, key_parts FROM cache_entries "
                "ORDER BY task_name, created"
            ).fetchall()
            task_runs = db.execute("SELECT count(*) FROM task_runs").fetchone()
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        finally:
            db.close()
        assert version == str(schema.SCHEMA_VERSION)
        assert entries == [
            ("double", 0, '{"x": "1"}', None),
            ("double", 1, '{"x": "2"}', None),
            ("greet", 0, '{"name": "\'Marvin\'", "punctuation": "\'!\'"}', None),
        ]
        assert task_runs == (4,)
        assert "cache_misses" in tables
        assert [r.name for r in flowbook.runs.list()] == ["v1-run"]

        # a miss next to the old entries is explained as far as they allow
        assert double(3) == 6
        why = flowbook.cache.why_missed(double)
        assert why.cause == "unknown"
        assert "stored before flowbook recorded what keys are made of" in why.reason
        assert double(4) == 8
        assert flowbook.cache.why_missed(double).changed_inputs == ["x"]
    finally:
        close_store()


def test_migration_on_postgresql_keeps_rows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres_url: str
) -> None:
    monkeypatch.setenv("FLOWBOOK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    monkeypatch.setenv("FLOWBOOK_DATABASE_URL", postgres_url)
    reload_settings()

    @task(cache_key_fn=task_input_hash)
    def double(x: int) -> int:
        return 2 * x

    double(1)
    close_store()
    # back to version 1: without the column and the table version 2 added, the columns
    # version 3 added, the columns and the table version 4 added, the table version 5 added
    # and the flow-run keys version 6 added
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            for index in ("ix_task_runs_flow_run_created_us", "ix_logs_flow_run_created_us"):
                conn.execute(sa.text(f"DROP INDEX {index}"))
            conn.execute(sa.text("ALTER TABLE flow_runs DROP COLUMN created_us"))
            for table in ("task_runs", "logs"):
                conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN flow_run_created_us"))
                conn.execute(
                    sa.text(f"CREATE INDEX ix_{table}_flow_run_id ON {table} (flow_run_id)")
                )
            conn.execute(sa.text("ALTER TABLE cache_entries DROP COLUMN key_parts"))
            conn.execute(sa.text("DROP TABLE cache_misses"))
            conn.execute(sa.text("ALTER TABLE flow_runs DROP COLUMN notebook"))
            conn.execute(sa.text("ALTER TABLE flow_runs DROP COLUMN cell_id"))
            conn.execute(sa.text("ALTER TABLE task_runs DROP COLUMN result_checksum"))
            conn.execute(sa.text("ALTER TABLE cache_entries DROP COLUMN checksum"))
            conn.execute(sa.text("DROP TABLE write_drops"))
            conn.execute(sa.text("DROP TABLE flows"))
            conn.execute(sa.text("UPDATE flowbook_meta SET value = '1'"))
        reload_settings()
        assert get_store() is not None
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT value FROM flowbook_meta")).scalar()
            rows = conn.execute(sa.text("SELECT task_name, key_parts FROM cache_entries")).all()
        assert version == str(schema.SCHEMA_VERSION)
        assert [tuple(r) for r in rows] == [("double", None)]
        assert double(1) == 2  # served by the old entry
        assert double(2) == 4
        assert flowbook.cache.why_missed(double).cause == "unknown"
    finally:
        close_store()
        engine.dispose()
