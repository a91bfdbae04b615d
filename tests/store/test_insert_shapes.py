"""Bulk inserts on SQLite leave out the NULL columns of each run of rows (``batches.insert``).

What is checked: every row reads back exactly as given, NULLs where ``None`` was given, in the
order given (rows with different NULL columns interleaved, a row of NULLs only); a column with
a default in the database still gets the NULL it was given; and a flow's task runs, written
this way, read back with their NULLs (both backends: PostgreSQL's inserts are unchanged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, create_engine, text
from store_under_test import StoreUnderTest, store

from flowbook import flow, task
from flowbook.store import batches

__all__ = ["store"]


def _table(metadata: MetaData) -> Table:
    return Table(
        "shapes",
        metadata,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("a", String(10)),
        Column("b", Integer),
        Column("c", LargeBinary),
        Column("d", String(10), server_default="filled"),
    )


COLUMNS = ("a", "b", "c", "d")

ROWS: list[tuple[Any, ...]] = [
    ("x", 1, b"one", "d1"),
    ("y", None, b"two", None),  # d: NULL given, the default not taken
    ("z", None, b"three", None),
    (None, 4, None, "d4"),
    (None, None, None, None),  # NULLs only
    ("w", 6, b"", "d6"),
    ("v", None, b"seven", None),
    ("u", 8, bytes(range(256)), "d8"),
]

LONG_RUNS: list[tuple[Any, ...]] = [
    *((f"a{i}", i, None, None) for i in range(5)),
    ("short", None, b"x", "d"),
    *((None, i, b"y", None) for i in range(6)),
    *((f"b{i}", None, None, f"d{i}") for i in range(3)),
]


def test_rows_read_back_as_given_in_their_order(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'shapes.db'}")
    metadata = MetaData()
    table = _table(metadata)
    metadata.create_all(engine)
    with engine.begin() as conn:
        batches.insert(conn, table, COLUMNS, ROWS, without_nulls=True)
        batches.insert(conn, table, COLUMNS, ROWS[:1], without_nulls=True)  # a single row
        batches.insert(conn, table, COLUMNS, [], without_nulls=True)  # no rows: nothing
        # long runs of one shape between short ones: each long run without its NULL columns
        batches.insert(conn, table, COLUMNS, LONG_RUNS, without_nulls=True)
    with engine.connect() as conn:
        got = conn.execute(text("SELECT a, b, c, d FROM shapes ORDER BY seq")).all()
    assert [tuple(row) for row in got] == [*ROWS, ROWS[0], *LONG_RUNS]


def test_a_refused_row_fails_the_insert_as_before(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'refused.db'}")
    metadata = MetaData()
    table = Table(
        "strict",
        metadata,
        Column("id", String(10), primary_key=True),
        Column("note", String(10)),
    )
    metadata.create_all(engine)
    with pytest.raises(Exception, match="UNIQUE"), engine.begin() as conn:
        batches.insert(
            conn, table, ("id", "note"), [("a", None), ("b", "x"), ("a", "y")], without_nulls=True
        )
    with engine.connect() as conn:  # the transaction rolled back whole
        assert conn.execute(text("SELECT count(*) FROM strict")).scalar() == 0


@pytest.mark.parametrize("bad", [("x", None), ("x", None, b"c", "d", "extra")])
def test_a_row_of_the_wrong_length_is_refused_as_before(
    tmp_path: Path, bad: tuple[Any, ...]
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'length.db'}")
    metadata = MetaData()
    table = _table(metadata)
    metadata.create_all(engine)
    for rows in ([bad], [ROWS[0], bad, ROWS[0]], [ROWS[0]] * 5 + [bad]):
        with pytest.raises(Exception, match="bindings"), engine.begin() as conn:
            batches.insert(conn, table, COLUMNS, rows, without_nulls=True)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM shapes")).scalar() == 0


def test_tables_of_the_same_name_keep_their_own_defaults(tmp_path: Path) -> None:
    # the statement for a shape is kept per table: one with a default for ``d`` must not
    # lend its plan (which leaves ``d`` out) to one without, or the other way round
    for name, default in (("one", None), ("two", "filled")):
        engine = create_engine(f"sqlite:///{tmp_path / name}.db")
        metadata = MetaData()
        table = Table(
            "same",
            metadata,
            Column("a", String(10)),
            Column("d", String(10), server_default=default),
        )
        metadata.create_all(engine)
        with engine.begin() as conn:
            batches.insert(conn, table, ("a", "d"), [("x", None)], without_nulls=True)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT a, d FROM same")).one() == ("x", None)


def test_a_flows_task_runs_keep_their_nulls(store: StoreUnderTest) -> None:
    @task
    def plain(x: int) -> int:
        return x

    @task
    def broken(x: int) -> int:
        raise ValueError(f"bad {x}")

    @flow
    def mixed() -> list[int]:
        values = [plain(i) for i in range(3)]
        broken.submit(7).wait()
        values.extend(plain.map(range(3, 6)).result())
        return values

    assert mixed() == [0, 1, 2, 3, 4, 5]
    rows = store.rows(
        "SELECT name, subflow_run_id, input_hash, state_type, state_message,"
        " result IS NULL, result_file, end_time IS NULL FROM task_runs"
    )
    by_name = {row[0]: row[1:] for row in rows}
    assert len(rows) == 7
    for name in ("plain-0", "plain-2", "plain-3", "plain-5"):
        assert by_name[name] == (None, None, "COMPLETED", None, False, None, False), name
    *nulls, message, no_result, result_file, no_end = by_name["broken-0"]
    assert (*nulls, no_result, result_file, no_end) == (None, None, "FAILED", True, None, False)
    assert "bad 7" in message
