"""The store's tables (SQLAlchemy Core) and its schema versions.

Times are stored as UNIX epoch seconds (floats): the same on SQLite and PostgreSQL, cheap to
write, and exact enough (microseconds). Run states are denormalised onto the run rows (the
latest state) and kept in full in ``states`` (the history).

``SCHEMA_VERSION`` is written in ``flowbook_meta``. Opening a store runs the migrations from
its version up to this one, in one transaction; a store written by a newer flowbook is refused
with an error rather than misread.

Versions: 1, the first; 2 adds ``cache_entries.key_parts`` and the ``cache_misses`` table,
which explain cache misses (rows of version 1 keep NULL ``key_parts``: their misses are
explained with less detail); 3 adds ``flow_runs.notebook`` and ``flow_runs.cell_id``, where a
top-level flow run started in a Jupyter kernel came from (NULL elsewhere, and for older rows);
4 adds ``task_runs.result_checksum`` and ``cache_entries.checksum`` (NULL for older rows, which
are read unchecked) and the ``write_drops`` table of records the store could not write; 5 adds
the ``flows`` table of registered flows (``flowbook.registry``); 6 indexes task runs and log
lines by their flow run's creation time (below) in place of its id; 7 drops the index of flow
runs by state, which no query used (the run list matches states case-blind, crash recovery
looks for the states a run has not ended in) and which every flow call's commit wrote.

**Finding a flow run's rows.** Flow-run ids are random (people shorten them to 8 digits), so an
index on ``task_runs.flow_run_id`` would take each new flow run's rows at a random place: in a
store of a million task runs, every flow call would read and rewrite index pages scattered over
the file. Task runs and log lines are indexed instead by ``flow_run_created_us``, their flow
run's ``flow_runs.created_us`` (its creation time in whole microseconds, ``created_us``), which
grows with time: a new flow run's rows land at the end of the index. Two flow runs created in
the same microsecond share the value, so a query for a flow run's rows names both the value
(looked up in ``flow_runs`` by id) and the id: ``of_flow_run`` and ``of_flow_runs`` build that
condition; every query for a flow run's rows goes through them.

A row without a flow run (a task called outside any flow) has the key ``NO_FLOW_RUN`` (0), so
that NULL means only "not filled in": the rows a process still running an older flowbook
(schema 5, opened before another process upgraded the store) goes on writing, without the
key. The lookups also take the rows of the flow run whose key is NULL (a search of the NULL
entries of the same index: normally none), so that those rows are never lost from view, and
``flowbook gc`` fills their keys in (``flow_key_fills``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    inspect,
    or_,
    select,
    text,
)

__all__ = [
    "MIGRATIONS",
    "NO_FLOW_RUN",
    "SCHEMA_VERSION",
    "created_us",
    "flow_key_fills",
    "metadata",
    "of_flow_run",
    "of_flow_runs",
]

SCHEMA_VERSION = 7

metadata = MetaData()

meta = Table(
    "flowbook_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

processes = Table(
    "processes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    # the kernel's start time of the process, to tell a live pid from a reused one
    Column("pid_start", String(64)),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

flow_runs = Table(
    "flow_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("flow_name", String(255), nullable=False),
    Column("flow_version", String(255)),
    Column("project", String(255)),
    Column("process_id", String(36)),
    Column("parent_task_run_id", String(36)),
    Column("resumed_from", String(36)),
    Column("tags", Text),
    Column("parameters", LargeBinary),
    Column("parameters_preview", Text),
    Column("state_type", String(16)),
    Column("state_name", String(32)),
    Column("state_message", Text),
    Column("run_count", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("start_time", Float),
    Column("end_time", Float),
    # where a top-level run started in a Jupyter kernel came from (schema >= 3): the notebook's
    # path as the kernel was told it (JPY_SESSION_NAME) and the id of the cell that started it
    Column("notebook", Text),
    Column("cell_id", Text),
    # created_at in whole microseconds (``created_us``): the key its task runs and log lines
    # are indexed by (schema >= 6; filled in for older rows by the migration)
    Column("created_us", BigInteger),
    Index("ix_flow_runs_flow_name", "flow_name"),
    Index("ix_flow_runs_created_at", "created_at"),
)

task_runs = Table(
    "task_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("flow_run_id", String(36)),
    Column("name", String(255), nullable=False),
    Column("task_name", String(255), nullable=False),
    Column("task_key", Text),
    Column("dynamic_key", Integer, nullable=False),
    Column("subflow_run_id", String(36)),
    Column("tags", Text),
    Column("parameters_preview", Text),
    Column("input_hash", String(64)),
    Column("cache_key", Text),
    Column("state_type", String(16)),
    Column("state_name", String(32)),
    Column("state_message", Text),
    Column("run_count", Integer, nullable=False, default=0),
    # the return value: pickled inline when small, else the name of a file in the results dir
    Column("result", LargeBinary),
    Column("result_file", String(255)),
    # CRC-32 (8 hex digits) of the pickled result (in the row or its file), checked on every read
    # (schema >= 4; NULL for older rows, which are read unchecked)
    Column("result_checksum", String(64)),
    Column("created_at", Float, nullable=False),
    Column("start_time", Float),
    Column("end_time", Float),
    # the flow run's created_us, NO_FLOW_RUN without one, NULL when not filled in yet (see
    # "Finding a flow run's rows")
    Column("flow_run_created_us", BigInteger),
    Index("ix_task_runs_flow_run_created_us", "flow_run_created_us"),
)

task_run_edges = Table(
    "task_run_edges",
    metadata,
    Column("upstream_id", String(36), primary_key=True),
    Column("downstream_id", String(36), primary_key=True),
    Index("ix_task_run_edges_downstream", "downstream_id"),
)

states = Table(
    "states",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(36), nullable=False),
    Column("run_kind", String(4), nullable=False),  # "flow" or "task"
    Column("type", String(16), nullable=False),
    Column("name", String(32), nullable=False),
    Column("message", Text),
    Column("timestamp", Float, nullable=False),
    Index("ix_states_run_id", "run_id"),
)

logs = Table(
    "logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow_run_id", String(36)),
    Column("task_run_id", String(36)),
    Column("level", Integer, nullable=False),
    Column("logger", String(255), nullable=False),
    Column("message", Text, nullable=False),
    Column("timestamp", Float, nullable=False),
    # the flow run's created_us, NO_FLOW_RUN without one, NULL when not filled in yet (see
    # "Finding a flow run's rows")
    Column("flow_run_created_us", BigInteger),
    Index("ix_logs_flow_run_created_us", "flow_run_created_us"),
    Index("ix_logs_timestamp", "timestamp"),
)

cache_entries = Table(
    "cache_entries",
    metadata,
    Column("task_key", String(512), primary_key=True),
    Column("key", String(512), primary_key=True),
    Column("task_name", String(255), nullable=False),
    Column("flow_name", String(255)),
    # the pickled value when small, else the name of its file in the results dir
    Column("value", LargeBinary),
    Column("result_file", String(255)),
    Column("size", Integer, nullable=False),
    Column("created", Float, nullable=False),
    Column("expires", Float),
    Column("hits", Integer, nullable=False, default=0),
    Column("input_preview", Text),
    # what the key is made of (task_input_hash only), as JSON: {"source": hash of the task's
    # source, "inputs": {argument name: content hash}}; NULL for other keys (schema >= 2)
    Column("key_parts", Text),
    # CRC-32 (8 hex digits) of the pickled value (in the row or its file), checked on every read
    # (schema >= 4; NULL for older rows, which are read unchecked)
    Column("checksum", String(64)),
    Index("ix_cache_entries_task_name", "task_name"),
)

# The latest cache miss of each task (schema >= 2): compared with the task's entries, it says
# which part of the key changed. One row per task, replaced at each miss.
cache_misses = Table(
    "cache_misses",
    metadata,
    Column("task_key", String(512), primary_key=True),
    Column("key", String(512), nullable=False),
    Column("task_name", String(255), nullable=False),
    Column("flow_name", String(255)),
    Column("task_run_id", String(36)),
    Column("missed_at", Float, nullable=False),
    # what the process saw: "refresh" (refresh_cache=True, no look-up), "expired" (an entry
    # under this key had expired at expired_at), or NULL (no entry under this key)
    Column("cause", String(16)),
    Column("expired_at", Float),
    Column("key_parts", Text),
)

# Records the store could not write (schema >= 4): one row per dropped record, written when the
# store is writable again (a row that breaks a constraint, a value that cannot be stored), so
# that `flowbook doctor` can say what was lost, when and why.
write_drops = Table(
    "write_drops",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("process_id", String(36)),
    Column("run_id", String(36)),
    # what was dropped: "flow_run", "task_run", "state", "log", "edge", "cache_entry", "result"
    Column("what", String(32), nullable=False),
    Column("reason", Text, nullable=False),
)

# Registered flows (schema >= 5): one row per flow name and project, written by
# ``flowbook.registry.register_flow`` and read by ``flowbook flows`` and ``flowbook run``.
flows = Table(
    "flows",
    metadata,
    # a hash of the name and the project: the same id each time the flow is registered
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("project", String(255)),
    # 1 at the first registration, one more each time the fingerprint changes
    Column("version", Integer, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    # where it is defined: a script's absolute path, or a notebook's path and cell id
    Column("script", Text),
    Column("notebook", Text),
    Column("cell_id", Text),
    # the script's (or the cell's) source at registration
    Column("code", Text),
    # JSON: [{"name", "required", "default", "jsonable", "repr"}, ...]
    Column("parameters", Text, nullable=False),
    # JSON: the run config's and the executor's describe(), or NULL
    Column("run_config", Text),
    Column("executor", Text),
    Column("labels", Text, nullable=False),  # JSON list
    Column("registered_at", Float, nullable=False),
    Index("ix_flows_name", "name"),
)

Migration = Callable[[Connection], None]


NO_FLOW_RUN = 0  # the key of a task run or log line without a flow run


def created_us(created_at: float) -> int:
    """A flow run's key in the indexes of its task runs and log lines: its creation time
    (epoch seconds) in whole microseconds."""
    return int(created_at * 1_000_000)


def of_flow_run(table: Table, run_id: str) -> ColumnElement[bool]:
    """The rows of ``table`` (``task_runs`` or ``logs``) of flow run ``run_id``, found through
    the index of ``flow_run_created_us`` (with those whose key is not filled in yet)."""
    key = select(flow_runs.c.created_us).where(flow_runs.c.id == run_id).scalar_subquery()
    column = table.c.flow_run_created_us
    return and_(table.c.flow_run_id == run_id, or_(column == key, column.is_(None)))


def of_flow_runs(table: Table, run_ids: Collection[str]) -> ColumnElement[bool]:
    """The rows of ``table`` (``task_runs`` or ``logs``) of the flow runs ``run_ids``, found
    through the index of ``flow_run_created_us`` (with those whose key is not filled in yet)."""
    ids = list(run_ids)
    keys = select(flow_runs.c.created_us).where(flow_runs.c.id.in_(ids))
    column = table.c.flow_run_created_us
    return and_(table.c.flow_run_id.in_(ids), or_(column.in_(keys), column.is_(None)))


def _add_column(conn: Connection, column: Column[Any]) -> None:
    """``ALTER TABLE ... ADD COLUMN``, unless the table has the column already.

    A migration step is run again when its store's version row still says the version before
    it: SQLite (through pysqlite) commits an ``ALTER TABLE`` at once, so a process stopped in
    the middle of a step leaves the columns it added without the new version. Every step is
    written to be run again: columns and tables added if missing, rows filled if empty."""
    table = column.table.name
    if column.name in {c["name"] for c in inspect(conn).get_columns(table)}:
        return
    column_type = column.type.compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column.name} {column_type}"))


def _v1_to_v2(conn: Connection) -> None:
    """Record what cache keys are made of: a nullable column and a new table."""
    _add_column(conn, cache_entries.c.key_parts)
    cache_misses.create(conn, checkfirst=True)


def _v2_to_v3(conn: Connection) -> None:
    """Record where a flow run came from: two nullable columns."""
    _add_column(conn, flow_runs.c.notebook)
    _add_column(conn, flow_runs.c.cell_id)


def _v3_to_v4(conn: Connection) -> None:
    """Checksums of stored values (two nullable columns) and the table of dropped records."""
    _add_column(conn, task_runs.c.result_checksum)
    _add_column(conn, cache_entries.c.checksum)
    write_drops.create(conn, checkfirst=True)


def _v4_to_v5(conn: Connection) -> None:
    """Registered flows: a new table."""
    flows.create(conn, checkfirst=True)


def flow_key_fills(dialect: str) -> list[str]:
    """SQL that fills in the flow-run keys rows lack (``created_us`` from ``created_at``, the
    others from their flow run's row, ``NO_FLOW_RUN`` without one): run by the migration to
    version 6, by ``flowbook doctor --repair`` after it copies rows of an older store, and by
    ``flowbook gc`` (rows a process of an older flowbook wrote after the upgrade). Those of
    task runs and log lines find their rows through the NULL entries of the key's index; that
    of flow runs reads the table whole (one row per flow run)."""
    # rounded down, as created_us() makes it: SQLite's CAST rounds towards zero, PostgreSQL's
    # to the nearest (and SQLite may lack FLOOR)
    product = "created_at * 1000000" if dialect == "sqlite" else "FLOOR(created_at * 1000000)"
    return [
        f"UPDATE flow_runs SET created_us = CAST({product} AS BIGINT) WHERE created_us IS NULL",
        *(
            # (a row whose flow run is not in the store stays NULL, and is not counted)
            f"UPDATE {table} SET flow_run_created_us = CASE WHEN flow_run_id IS NULL "
            f"THEN {NO_FLOW_RUN} ELSE (SELECT created_us FROM flow_runs "
            f"WHERE flow_runs.id = {table}.flow_run_id) END "
            "WHERE flow_run_created_us IS NULL AND (flow_run_id IS NULL OR EXISTS "
            f"(SELECT 1 FROM flow_runs WHERE flow_runs.id = {table}.flow_run_id))"
            for table in ("task_runs", "logs")
        ),
    ]


def _v5_to_v6(conn: Connection) -> None:
    """Task runs and log lines indexed by their flow run's creation time, not by its id: the
    key column in the three tables, filled in for every row, the new indexes for the old.

    A store of 1,000,000 task runs takes about 4 s, once (SQLite). A row whose flow run is not in
    the store keeps a NULL key (found by its flow run's id all the same)."""
    _add_column(conn, flow_runs.c.created_us)
    _add_column(conn, task_runs.c.flow_run_created_us)
    _add_column(conn, logs.c.flow_run_created_us)
    for statement in flow_key_fills(conn.dialect.name):
        conn.execute(text(statement))
    for table in ("task_runs", "logs"):
        conn.execute(text(f"DROP INDEX IF EXISTS ix_{table}_flow_run_id"))
    for index in task_runs.indexes | logs.indexes:
        if index.name in ("ix_task_runs_flow_run_created_us", "ix_logs_flow_run_created_us"):
            index.create(conn, checkfirst=True)


def _v6_to_v7(conn: Connection) -> None:
    """The index of flow runs by state dropped: no query reads through it, and each flow
    run's row written cost a page of it."""
    conn.execute(text("DROP INDEX IF EXISTS ix_flow_runs_state_type"))


# MIGRATIONS[n] upgrades an existing store from version n to n + 1 (a new store is created at
# SCHEMA_VERSION directly). Each step must keep every row it finds.
MIGRATIONS: dict[int, Migration] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
    6: _v6_to_v7,
}
