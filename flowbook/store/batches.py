"""Writing one batch of rows: one transaction when all goes well, smaller ones when it fails.

The store writer hands over a batch as ``Part`` objects, one per statement (the flow runs to
insert, the task runs to update with one set of columns, the logs, the cache entries to
upsert...), each with its rows. The fast path is unchanged from a writer that knows no
faults: every part in one transaction, through the driver's ``executemany``.

When that transaction fails, what happens depends on the failure (``drops.classify``):

- transient (a locked database, a lost connection): the same transaction again, for up to
  ``RETRY_FOR_S`` seconds from the start of the batch (once the store is known to be
  unwritable, a batch is tried once, so that flow runs do not each wait that long);
- a row the database refuses: each part in a transaction of its own, and a part that fails
  is halved again and again, down to single rows (at most ``NARROWING_BUDGET`` failed
  attempts per batch; beyond that the groups still failing are dropped whole). One bad row
  in 20,000 costs about 30 small transactions; every other row is written;
- a full disk: the files the batch wrote are removed, and the batch is tried once more
  without stored values (task results, cache entries), so that the runs are recorded even
  when their results cannot be;
- a store that cannot be written at all (read-only, damaged, unreachable, still full): the
  batch is dropped, with one warning per kind of failure, and the result files written for
  its rows are removed, so that no file is left that no row points at.

Rows that could not be written are counted and reported by ``drops.Drops``.
"""

from __future__ import annotations

import contextlib
import operator
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from flowbook.store import drops as _drops
from flowbook.store.checkpoints import DEFAULT_PAGES, Checkpointer
from flowbook.store.database import heartbeat
from flowbook.store.drops import Drops, classify, reason
from flowbook.store.schema import cache_entries

__all__ = [
    "BatchWriter",
    "Part",
    "count_hits",
    "delete_rows",
    "insert",
    "insert_rows",
    "update_rows",
    "upsert_rows",
]

RETRY_FOR_S = 15.0
NARROWING_BUDGET = 200

Row = Any  # a tuple for inserts and upserts, a dict (with "_id") for updates
Execute = Callable[[Any, Sequence[Row]], None]


def _no_run(_row: Row) -> str | None:
    return None


class Part:
    """One statement of a batch and its rows.

    ``run_of(row)`` names the run a row belongs to (for the record of a drop); ``file_of(row)``
    the result file it points at, if any, removed when the row is not written (``shared``
    files may be pointed at by another process's row too: removed only when no row does);
    ``strip(rows)`` gives the rows without stored values, for a retry on a full disk, and the
    runs whose value was left out (None: the part stores no values; no rows back: without
    their values the rows are useless, as cache entries are).
    """

    __slots__ = ("execute", "file_of", "rows", "run_of", "shared", "strip", "what")

    def __init__(
        self,
        what: str,
        rows: Sequence[Row],
        execute: Execute,
        run_of: Callable[[Row], str | None] = _no_run,
        *,
        file_of: Callable[[Row], str | None] | None = None,
        shared: bool = False,
        strip: Callable[[Sequence[Row]], tuple[list[Row], list[str | None]]] | None = None,
    ) -> None:
        self.what = what
        self.rows = rows
        self.execute = execute
        self.run_of = run_of
        self.file_of = file_of
        self.shared = shared
        self.strip = strip

    def with_rows(self, rows: Sequence[Row]) -> Part:
        return Part(
            self.what,
            rows,
            self.execute,
            self.run_of,
            file_of=self.file_of,
            shared=self.shared,
            strip=self.strip,
        )


class Written:
    """What became of a batch: the parts whose every row was committed, and the store-wide
    failure that stopped it, if any."""

    __slots__ = ("complete", "wide")

    def __init__(self, complete: set[int], wide: str | None = None) -> None:
        self.complete = complete
        self.wide = wide


class BatchWriter:
    """Writes batches of ``Part`` objects to one store, on the store writer's thread."""

    def __init__(
        self,
        engine: Engine,
        drops: Drops,
        results_dir: Path,
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self.engine = engine
        self.drops = drops
        self.results_dir = results_dir
        self._removed = 0
        # SQLite: one connection kept for the writer's life (taking one from the pool and
        # giving it back, with the pool's rollback, cost more than a small batch's rows); a
        # server's connections are taken per batch, checked by the pool's ping
        self._keep = engine.dialect.name == "sqlite"
        self._conn: Connection | None = None
        # a SQLite file's WAL checkpoints, made on a thread of their own (checkpoints.py)
        self.checkpointer = checkpointer if self._keep else None

    def close(self) -> None:
        """Give back the kept connection (the writer is stopping)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                if self.checkpointer is not None:
                    # back in the pool, it checkpoints as any connection does
                    Checkpointer.configure(conn.connection.dbapi_connection, DEFAULT_PAGES)
                conn.close()

    def _connect(self) -> Connection:
        conn = self._conn = self.engine.connect()
        if self.checkpointer is not None:
            Checkpointer.configure(conn.connection.dbapi_connection)
        return conn

    def heartbeat(self, process_id: str) -> None:
        """Mark this process alive in the store (on the kept connection, when there is one);
        raises what the database raised."""
        if not self._keep:
            heartbeat(self.engine, process_id)
            return
        kept = self._conn if self._conn is not None else self._connect()
        try:
            with kept.begin():
                execute_many(
                    kept,
                    "UPDATE processes SET heartbeat_at = {0} WHERE id = {0}",
                    [(time.time(), process_id)],
                )
        except Exception:
            self.close()  # (a fresh connection for the next batch)
            raise

    def write(self, parts: list[Part]) -> Written:
        if not parts:
            return Written(set())
        self._removed = 0  # result files removed for this batch
        deadline = time.monotonic() + RETRY_FOR_S
        exc = self._transaction(parts, deadline)
        if exc is None:
            self.drops.recovered()
            return Written(set(range(len(parts))))
        kind = _kind(exc)
        if kind in _drops.STORE_WIDE:
            return self._store_wide(parts, kind, exc, deadline)
        return self._narrow(parts, deadline)

    # -- transactions ---------------------------------------------------------------------------
    def _transaction(self, parts: Sequence[Part], deadline: float) -> Exception | None:
        """Write ``parts`` in one transaction; the error if it could not be committed."""
        delay = 0.05
        while True:
            try:
                if not self._keep:
                    with self.engine.begin() as conn:
                        for part in parts:
                            part.execute(conn, part.rows)
                    return None
                kept = self._conn
                if kept is None:
                    kept = self._connect()
                with kept.begin():
                    for part in parts:
                        part.execute(kept, part.rows)
                if self.checkpointer is not None:
                    self.checkpointer.committed()
                return None
            except Exception as exc:  # the store must never stop a run: the caller decides
                self.close()  # (a fresh connection for the next try)
                if classify(exc) != _drops.TRANSIENT or self.drops.outage is not None:
                    return exc
                if time.monotonic() + delay > deadline:
                    return exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _narrow(self, parts: list[Part], deadline: float) -> Written:
        """Each part on its own, halving the groups that fail down to single rows."""
        complete: set[int] = set()
        budget = NARROWING_BUDGET
        for index, part in enumerate(parts):
            stack = [part.rows]
            whole = True
            while stack:
                chunk = stack.pop()
                exc = self._transaction([part.with_rows(chunk)], deadline)
                if exc is None:
                    continue
                kind = _kind(exc)
                if kind in _drops.STORE_WIDE:
                    # the store itself failed meanwhile: the rest of the batch is lost
                    rest = [part.with_rows([r for c in (chunk, *stack) for r in c])]
                    rest += parts[index + 1 :]
                    self._remove_files(rest, shared=kind != _drops.UNAVAILABLE)
                    told = self.drops.store_wide(kind, reason(exc), _counts(rest))
                    self._lose(rest, reason(exc), told=told, wide=True)
                    return Written(complete, kind)
                if len(chunk) > 1 and budget > 0:
                    budget -= 1
                    half = len(chunk) // 2
                    stack.append(chunk[half:])
                    stack.append(chunk[:half])
                    continue
                if len(chunk) == 1 and part.what in _OWN_KEYS and _duplicate_key(exc):
                    # this writer's own row, already there: a commit whose answer was lost
                    # (a server gone between COMMIT and its reply) did succeed, and the batch
                    # was sent again. The row is written; its file is the row's.
                    continue
                whole = False
                self._remove_files([part.with_rows(chunk)])
                self._lose([part.with_rows(chunk)], reason(exc))
            if whole:
                complete.add(index)
        self.drops.recovered()
        return Written(complete)

    def _store_wide(self, parts: list[Part], kind: str, exc: Exception, deadline: float) -> Written:
        why = reason(exc)
        # (a store out of reach cannot say whether another process's entry points at a
        # cache file: those are kept, and `flowbook doctor` finds them if none does)
        self._remove_files(parts, shared=kind != _drops.UNAVAILABLE)
        if kind == _drops.FULL and any(p.strip is not None for p in parts):
            # the runs themselves are small: try them without the values that filled the disk
            stripped: list[Part] = []
            values: list[tuple[str, str | None]] = []  # (what, run id) of each value left out
            for part in parts:
                if part.strip is None:
                    stripped.append(part)
                    continue
                rows, lost = part.strip(part.rows)
                stripped.append(part.with_rows(rows))
                what = "result" if part.what == "task_run" else part.what
                values += [(what, run_id) for run_id in lost]
            again = self._transaction([p for p in stripped if p.rows], deadline)
            if again is None:
                kept_out = Counter(what for what, _ in values)
                told = self.drops.short_of_space(why, kept_out, self._removed)
                for what, run_id in values:
                    self.drops.add(what, run_id, why, told=told)
                self.drops.recovered()
                return Written({i for i, p in enumerate(stripped) if p.rows})
            why, kind = reason(again), _kind(again)
            if kind not in _drops.STORE_WIDE:
                kind = _drops.FULL
        told = self.drops.store_wide(kind, why, _counts(parts))
        self._lose(parts, why, told=told, wide=True)
        return Written(set(), kind)

    # -- what was not written -------------------------------------------------------------------
    def _lose(
        self, parts: Sequence[Part], why: str, *, told: bool = False, wide: bool = False
    ) -> None:
        """Record the rows of ``parts`` as dropped (``wide``: the store cannot be written)."""
        for part in parts:
            if part.what == "write_drop" and wide:
                continue  # still pending: written with a later batch that commits
            for row in part.rows:
                self.drops.add(part.what, part.run_of(row), why, told=told)

    def _remove_files(self, parts: Sequence[Part], *, shared: bool = True) -> None:
        """Remove the files the rows of ``parts`` point at (``shared``: also those another
        row may point at, when no committed row does)."""
        for part in parts:
            if part.file_of is None or (part.shared and not shared):
                continue
            for row in part.rows:
                name = part.file_of(row)
                if name and self._remove(name, part.shared):
                    self._removed += 1

    def _remove(self, name: str, shared: bool) -> bool:
        if shared and self._referenced(name):
            return False
        try:
            (self.results_dir / name).unlink()
        except FileNotFoundError:
            return False
        except OSError:
            return False  # a read-only results directory: nothing was written there either
        return True

    def _referenced(self, name: str) -> bool:
        """Whether a committed cache entry (another process's) points at file ``name``."""
        try:
            with self.engine.connect() as conn:
                found = conn.execute(
                    select(cache_entries.c.key).where(cache_entries.c.result_file == name).limit(1)
                ).first()
        except Exception:  # an unreadable store: no entry can be served from the file either
            return False
        return found is not None


def _kind(exc: BaseException) -> str:
    kind = classify(exc)
    # a transient error that lasted past the retries: the store is out of reach
    return _drops.UNAVAILABLE if kind == _drops.TRANSIENT else kind


def _counts(parts: Sequence[Part]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for part in parts:
        if part.what != "write_drop":
            counts[part.what] += len(part.rows)
    return counts


# Rows keyed by ids this process makes (random or time-ordered UUIDs): a duplicate key can
# only be this process's own earlier write of the same row.
_OWN_KEYS = frozenset({"flow_run", "task_run"})


def _duplicate_key(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code == "23505":  # unique_violation
        return True
    name = getattr(orig, "sqlite_errorname", None)
    return name in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")


# -- statements -----------------------------------------------------------------------------------
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def execute_many(conn: Any, template: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``template`` (with ``{0}`` for each placeholder) once per row, in the driver."""
    mark = _PLACEHOLDERS.get(conn.dialect.paramstyle)
    if mark is None:
        names = iter(range(1000))
        sql = template.replace("{0}", "?")
        while "?" in sql:
            sql = sql.replace("?", f":p{next(names)}", 1)
        conn.execute(text(sql), [{f"p{i}": v for i, v in enumerate(row)} for row in rows])
        return
    run_many(conn, template.format(mark), rows)


def run_many(conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``executemany`` of ``sql`` (the driver's own placeholders) on ``conn``'s DBAPI connection.

    On SQLite, through one cursor kept with the connection: the sqlite3 module keeps a weak
    reference to every cursor a connection makes until 200 more have been made, and those
    left from a long run's batches, scattered through memory, keep whole blocks of it from
    being given back once the run is over. Other databases go through SQLAlchemy.
    """
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql(sql, list(rows))
        return
    fairy = conn.connection
    kept = fairy.info.get(_CURSOR)
    dbapi = fairy.dbapi_connection
    if kept is None or kept[0] is not dbapi:
        kept = fairy.info[_CURSOR] = (dbapi, dbapi.cursor())
    kept[1].executemany(sql, rows)


_CURSOR = "flowbook.batches.cursor"


def insert(
    conn: Any,
    table: Any,
    columns: tuple[str, ...],
    rows: Sequence[Sequence[Any]],
    *,
    without_nulls: bool = False,
) -> None:
    """INSERT many rows through the driver's own ``executemany``.

    The bulk of a batch (task runs, states, logs) goes this way: SQLAlchemy's per-row
    parameter processing would cost more than the database's work. ``without_nulls``: on
    SQLite, runs of rows with the same NULL columns are inserted without those columns (for
    tables whose rows have many: ``_insert_without_nulls``).
    """
    mark = _PLACEHOLDERS.get(conn.dialect.paramstyle)
    if mark is None:  # a driver with named parameters: let SQLAlchemy translate
        conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    if without_nulls and conn.dialect.name == "sqlite":
        _insert_without_nulls(conn, table, columns, rows)
        return
    run_many(conn, _insert_sql(table.name, columns, mark), rows)


def _insert_sql(table: str, columns: Sequence[str], mark: str) -> str:
    names, marks = ", ".join(columns), ", ".join([mark] * len(columns))
    return f"INSERT INTO {table} ({names}) VALUES ({marks})"


def _insert_without_nulls(
    conn: Any, table: Any, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]
) -> None:
    """SQLite: INSERT each run of consecutive rows with the same NULL columns without them.

    The sqlite3 module binds ``None`` (and ``bytes``) through its adapter look-up, about a
    microsecond a value on a slow machine; a task-run row has five or so ``None`` columns, so
    leaving them out of the statement (a column left out is NULL: a column with a default in
    the database is never left out) takes about a fifth off the insert. Rows keep their
    order: a statement takes consecutive rows only. Where shapes alternate, runs shorter than
    ``_SHAPED_RUN`` rows go with their neighbours through the statement with every column
    (one ``executemany`` per alternation would cost more than the look-ups it saves), and so
    does a row of the wrong length (which the database then refuses, as before).
    """
    if not rows:
        return
    n = len(columns)
    plain = (None,) * n
    is_ = operator.is_
    runs: list[tuple[tuple[bool, ...] | None, int, int]] = []  # (NULL columns, start, end)
    shape: tuple[bool, ...] | None = None
    start = 0
    for i, row in enumerate(rows):
        nulls = tuple(map(is_, row, plain)) if len(row) == n else None
        if nulls != shape:
            if i:
                runs.append((shape, start, i))
            shape, start = nulls, i
    runs.append((shape, start, len(rows)))
    if len(runs) == 1 and shape is not None:  # one shape (a map's rows, a flow call's row)
        _insert_shape(conn, table, columns, shape, rows)
        return
    pending = -1  # where the rows for the statement with every column start
    for shape, start, end in runs:
        if shape is not None and end - start >= _SHAPED_RUN:
            if pending >= 0:
                run_many(conn, _insert_sql(table.name, columns, "?"), rows[pending:start])
                pending = -1
            _insert_shape(conn, table, columns, shape, rows[start:end])
        elif pending < 0:
            pending = start
    if pending >= 0:
        run_many(conn, _insert_sql(table.name, columns, "?"), rows[pending:])


def _insert_shape(
    conn: Any,
    table: Any,
    columns: tuple[str, ...],
    nulls: tuple[bool, ...],
    rows: Sequence[Sequence[Any]],
) -> None:
    key = (table, columns, nulls)
    plan = _SHAPES.get(key)
    if plan is None:
        defaults = {c.name for c in table.columns if c.server_default is not None}
        keep = [i for i, null in enumerate(nulls) if not null or columns[i] in defaults]
        if len(keep) == len(columns) or not keep:
            plan = (_insert_sql(table.name, columns, "?"), None)
        else:
            sql = _insert_sql(table.name, [columns[i] for i in keep], "?")
            plan = (sql, operator.itemgetter(*keep) if len(keep) > 1 else _one(keep[0]))
        if len(_SHAPES) >= 256:
            _SHAPES.clear()
        _SHAPES[key] = plan
    sql, pick = plan
    run_many(conn, sql, rows if pick is None else list(map(pick, rows)))


def _one(i: int) -> Callable[[Sequence[Any]], tuple[Any]]:
    def pick(row: Sequence[Any]) -> tuple[Any]:
        return (row[i],)

    return pick


# runs of rows shorter than this go through the statement with every column
_SHAPED_RUN = 4
# (table, columns, NULL columns) -> (statement, what each row gives it), for the few shapes
# of row each table has
_SHAPES: dict[tuple[Any, tuple[str, ...], tuple[bool, ...]], Any] = {}


def insert_rows(table: Any, columns: tuple[str, ...], *, without_nulls: bool = False) -> Execute:
    def execute(conn: Any, rows: Sequence[Row]) -> None:
        insert(conn, table, columns, rows, without_nulls=without_nulls)

    return execute


def update_rows(table: Any) -> Execute:
    """UPDATE by ``_id`` with the columns of the rows (every row has the same keys)."""

    def execute(conn: Any, rows: Sequence[Row]) -> None:
        keys = [k for k in rows[0] if k != "_id"]
        mark = _PLACEHOLDERS.get(conn.dialect.paramstyle)
        if mark is None:  # a driver with named parameters: let SQLAlchemy translate
            stmt = (
                update(table)
                .where(table.c.id == bindparam("_id"))
                .values({k: bindparam(k) for k in keys})
            )
            conn.execute(stmt, list(rows))
            return
        # through the driver's own executemany, as inserts: SQLAlchemy's per-row parameter
        # processing cost more than the UPDATE itself (a long run's task runs that end in a
        # later batch than they started in are written this way)
        assignments = ", ".join(f"{k} = {mark}" for k in keys)
        run_many(
            conn,
            f"UPDATE {table.name} SET {assignments} WHERE id = {mark}",
            [(*(row[k] for k in keys), row["_id"]) for row in rows],
        )

    return execute


def upsert_rows(
    table: Any, columns: tuple[str, ...], keys: tuple[str, ...], newer: str | None = None
) -> Execute:
    """INSERT, or UPDATE the row with the same ``keys``: ``INSERT ... ON CONFLICT DO UPDATE``.

    An upsert, not DELETE + INSERT: processes writing the same key at the same moment would
    otherwise make each other's transaction fail on the primary key (PostgreSQL checks it
    against rows other transactions are inserting). With ``newer``, an existing row is only
    replaced by a row whose ``newer`` column is at least as large.
    """
    values = [c for c in columns if c not in keys]

    def execute(conn: Any, rows: Sequence[Row]) -> None:
        dialect = conn.dialect.name
        mark = _PLACEHOLDERS.get(conn.dialect.paramstyle)
        if dialect not in ("sqlite", "postgresql"):
            # no portable upsert: the other databases get the old DELETE + INSERT
            where = " AND ".join(f"{k} = {{0}}" for k in keys)
            key_at = [columns.index(k) for k in keys]
            execute_many(
                conn,
                f"DELETE FROM {table.name} WHERE {where}",
                [tuple(row[i] for i in key_at) for row in rows],
            )
            insert(conn, table, columns, rows)
            return
        if mark is None:
            make = postgresql.insert if dialect == "postgresql" else sqlite.insert
            stmt = make(table)
            stmt = stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={c: stmt.excluded[c] for c in values},
                where=(stmt.excluded[newer] >= table.c[newer]) if newer else None,
            )
            conn.execute(stmt, [dict(zip(columns, row, strict=True)) for row in rows])
            return
        updates = ", ".join(f"{c} = excluded.{c}" for c in values)
        condition = f" WHERE excluded.{newer} >= {table.name}.{newer}" if newer else ""
        sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "
            f"VALUES ({', '.join([mark] * len(columns))}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}{condition}"
        )
        run_many(conn, sql, rows)

    return execute


def delete_rows(table: Any, keys: tuple[str, ...]) -> Execute:
    where = " AND ".join(f"{k} = {{0}}" for k in keys)

    def execute(conn: Any, rows: Sequence[Row]) -> None:
        execute_many(conn, f"DELETE FROM {table.name} WHERE {where}", rows)

    return execute


def count_hits(conn: Any, rows: Sequence[Row]) -> None:
    """Add hits to cache entries: rows of ``(hits, task_key, key)``."""
    execute_many(
        conn, "UPDATE cache_entries SET hits = hits + {0} WHERE task_key = {0} AND key = {0}", rows
    )
