"""``flowbook gc``: delete old runs (and, when asked, expired cache entries) in small batches.

What goes: top-level flow runs chosen by age (``older_than_days``) and/or rank
(``keep_last``: the newest N top-level runs stay), with their subflow runs, task runs,
dependencies, states, log lines and result files. What stays, whatever the options:

- a run that has not finished (no final state: Running, Pending, Scheduled, Paused...). The
  store's opening marks the runs of dead processes ``Crashed`` first, so what is still
  unfinished here belongs to a live process;
- every cache entry that is still valid, and every file a cache entry points at;
  ``expired_cache=True`` deletes the entries whose expiry has passed, with their files.

Why batches: SQLite has one writer at a time, and a run in another process waits for gc's
transaction to end before its own batch commits. So rows go ``BATCH`` task runs (or log
lines) per transaction, children before parents: a kill between two transactions leaves a
flow run with fewer task runs, still chosen by the next gc, which finishes it. Files are
removed after the transaction that deleted their rows commits; a kill in between leaves files
no row points at, which the next gc removes (those older than ``ORPHAN_AGE_S``: a younger one
may belong to a row on its way).

Keys: rows that a process still running an older flowbook wrote after the store was upgraded
to schema 6 lack their flow run's key (``schema``, "Finding a flow run's rows"); they are found
all the same, and gc fills the keys in first (``keys_filled``; not in a dry run).

Space: deleted rows leave free pages in a SQLite file. A store created with
``auto_vacuum=INCREMENTAL`` gives them back here (``PRAGMA incremental_vacuum``); otherwise
the report says how many bytes ``VACUUM`` would free, and ``vacuum=True`` runs it (it rewrites
the whole file: slow on a big store, needs as much free disk as the file, and holds the write
lock throughout). PostgreSQL reuses the space of deleted rows after its autovacuum.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, or_, select, text

from flowbook.store import results, schema
from flowbook.store.schema import (
    cache_entries,
    flow_runs,
    logs,
    of_flow_runs,
    states,
    task_run_edges,
    task_runs,
)

__all__ = ["BATCH", "GcReport", "collect", "reclaimable_sqlite_bytes"]

BATCH = 1000  # task runs, log lines or cache entries deleted per transaction
ORPHAN_AGE_S = 3600.0
_IN_CHUNK = 500  # ids per IN (...) list
_FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@dataclass
class GcReport:
    """What ``collect`` deleted (or, with ``dry_run``, would delete)."""

    dry_run: bool
    flow_runs: int = 0  # top-level runs and their subflow runs
    task_runs: int = 0
    log_lines: int = 0
    states: int = 0
    cache_entries: int = 0
    files: int = 0
    file_bytes: int = 0
    orphan_files: int = 0
    keys_filled: int = 0  # rows given their flow run's key (written by an older flowbook)
    unfinished_kept: int = 0  # chosen by age or rank, but not finished: kept
    transactions: int = 0
    longest_transaction_ms: float = 0.0
    vacuum: str | None = None  # what was done about the free space, or what could be
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(older_than_days: float | None, keep_last: int | None) -> None:
    if older_than_days is not None and not (older_than_days >= 0 and older_than_days < 1e7):
        raise ValueError(
            f"--older-than {older_than_days!r} is not valid; give a number of days >= 0"
        )
    if keep_last is not None and keep_last < 0:
        raise ValueError(f"--keep-last {keep_last!r} is not valid; give a number of runs >= 0")


def collect(
    engine: Engine,
    results_dir: Path,
    *,
    older_than_days: float | None = None,
    keep_last: int | None = None,
    expired_cache: bool = False,
    dry_run: bool = False,
    vacuum: bool = False,
    batch: int = BATCH,
) -> GcReport:
    """Delete what the options choose (see the module docstring); returns what it did."""
    _check(older_than_days, keep_last)
    report = GcReport(dry_run=dry_run)
    if not dry_run:
        with _Timed(engine, report) as conn:
            for statement in schema.flow_key_fills(engine.dialect.name):
                report.keys_filled += _rowcount(conn, text(statement))
    if older_than_days is not None or keep_last is not None:
        with engine.connect() as conn:
            doomed, report.unfinished_kept = choose_runs(conn, older_than_days, keep_last)
        for top in doomed:
            _delete_run(engine, results_dir, top, report, batch)
    if expired_cache:
        _delete_expired_cache(engine, results_dir, report, batch)
    if not dry_run:
        report.orphan_files = _remove_orphans(engine, results_dir)
    _space(engine, report, vacuum=vacuum and not dry_run)
    return report


def choose_runs(
    conn: Connection, older_than_days: float | None, keep_last: int | None
) -> tuple[list[str], int]:
    """The finished top-level runs the options choose, oldest first, and how many unfinished
    ones they would have chosen (kept)."""
    fr = flow_runs.c
    query = (
        select(fr.id, fr.state_type)
        .where(fr.parent_task_run_id.is_(None))
        .order_by(fr.created_at.desc(), fr.id)
    )
    if keep_last is not None:
        query = query.offset(keep_last)
    if older_than_days is not None:
        query = query.where(fr.created_at < time.time() - older_than_days * 86400)
    chosen: list[str] = []
    unfinished = 0
    for run_id, state_type in conn.execute(query):
        if state_type in _FINAL:
            chosen.append(str(run_id))
        else:
            unfinished += 1
    chosen.reverse()  # the oldest go first
    return chosen, unfinished


def _chunks(items: Sequence[str], n: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _subflows(conn: Connection, top: str) -> list[str]:
    doomed = [top]
    frontier = [top]
    while frontier:
        children: list[str] = []
        for part in _chunks(frontier):
            children.extend(
                conn.execute(
                    select(task_runs.c.subflow_run_id).where(
                        of_flow_runs(task_runs, part), task_runs.c.subflow_run_id.is_not(None)
                    )
                ).scalars()
            )
        frontier = [c for c in dict.fromkeys(children) if c not in doomed]
        doomed.extend(frontier)
    return doomed


class _Timed:
    """A transaction whose duration goes into the report."""

    def __init__(self, engine: Engine, report: GcReport) -> None:
        self.engine = engine
        self.report = report

    def __enter__(self) -> Connection:
        self.started = time.perf_counter()
        self.cm = self.engine.begin()
        return self.cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.cm.__exit__(*exc)
        ms = (time.perf_counter() - self.started) * 1000
        self.report.transactions += 1
        self.report.longest_transaction_ms = max(self.report.longest_transaction_ms, ms)


def _delete_run(engine: Engine, results_dir: Path, top: str, report: GcReport, batch: int) -> None:
    with engine.connect() as conn:
        flows = _subflows(conn, top)
    if report.dry_run:
        _count_run(engine, results_dir, flows, report)
        return
    tr = task_runs.c
    while True:  # task runs, with their states, edges and log lines, a batch at a time
        with _Timed(engine, report) as conn:
            rows = conn.execute(
                select(tr.id, tr.result_file).where(of_flow_runs(task_runs, flows)).limit(batch)
            ).all()
            if not rows:
                break
            ids = [r.id for r in rows]
            report.states += _rowcount(conn, delete(states).where(states.c.run_id.in_(ids)))
            e = task_run_edges.c
            conn.execute(
                delete(task_run_edges).where(or_(e.upstream_id.in_(ids), e.downstream_id.in_(ids)))
            )
            report.task_runs += _rowcount(conn, delete(task_runs).where(tr.id.in_(ids)))
            files = [r.result_file for r in rows if r.result_file]
            kept = _cached_files(conn, files)
        _unlink(results_dir, [f for f in files if f not in kept], report)
    while True:  # log lines, by flow run (their index)
        with _Timed(engine, report) as conn:
            some = select(logs.c.id).where(of_flow_runs(logs, flows)).limit(batch)
            n = _rowcount(conn, delete(logs).where(logs.c.id.in_(some.scalar_subquery())))
        report.log_lines += n
        if n == 0:
            break
    with _Timed(engine, report) as conn:  # last, the flow runs: a kill before leaves them chosen
        report.states += _rowcount(conn, delete(states).where(states.c.run_id.in_(flows)))
        report.flow_runs += _rowcount(conn, delete(flow_runs).where(flow_runs.c.id.in_(flows)))


def _rowcount(conn: Connection, stmt: Any) -> int:
    return max(int(conn.execute(stmt).rowcount), 0)


def _count_run(engine: Engine, results_dir: Path, flows: list[str], report: GcReport) -> None:
    tr = task_runs.c
    with engine.connect() as conn:
        report.flow_runs += len(flows)
        for part in _chunks(flows):
            report.task_runs += int(
                conn.execute(select(func.count()).where(of_flow_runs(task_runs, part))).scalar_one()
            )
            report.log_lines += int(
                conn.execute(select(func.count()).where(of_flow_runs(logs, part))).scalar_one()
            )
            task_ids = select(tr.id).where(of_flow_runs(task_runs, part)).scalar_subquery()
            report.states += int(
                conn.execute(
                    select(func.count()).where(
                        or_(states.c.run_id.in_(part), states.c.run_id.in_(task_ids))
                    )
                ).scalar_one()
            )
            files = list(
                conn.execute(
                    select(tr.result_file).where(
                        of_flow_runs(task_runs, part), tr.result_file.is_not(None)
                    )
                ).scalars()
            )
            kept = _cached_files(conn, files)
            _unlink(results_dir, [f for f in files if f not in kept], report)


def _cached_files(conn: Connection, files: list[str]) -> set[str]:
    """Those of ``files`` a cache entry points at: they stay."""
    kept: set[str] = set()
    for part in _chunks(files):
        kept.update(
            conn.execute(
                select(cache_entries.c.result_file).where(cache_entries.c.result_file.in_(part))
            ).scalars()
        )
    return kept


def _unlink(results_dir: Path, names: list[str], report: GcReport) -> None:
    for name in names:
        path = results_dir / name
        try:
            size = path.stat().st_size
            if not report.dry_run:
                path.unlink()
        except FileNotFoundError:
            continue
        report.files += 1
        report.file_bytes += size


def _delete_expired_cache(engine: Engine, results_dir: Path, report: GcReport, batch: int) -> None:
    c = cache_entries.c
    now = time.time()
    expired = and_(c.expires.is_not(None), c.expires <= now)
    if report.dry_run:
        with engine.connect() as conn:
            rows = conn.execute(select(c.result_file).where(expired)).all()
        report.cache_entries += len(rows)
        _unlink(results_dir, [r.result_file for r in rows if r.result_file], report)
        return
    while True:
        with _Timed(engine, report) as conn:
            rows = conn.execute(
                select(c.task_key, c.key, c.result_file).where(expired).limit(batch)
            ).all()
            for row in rows:
                conn.execute(
                    delete(cache_entries).where(
                        c.task_key == row.task_key, c.key == row.key, expired
                    )
                )
        report.cache_entries += len(rows)
        _unlink(results_dir, [r.result_file for r in rows if r.result_file], report)
        if len(rows) < batch:
            break


def _remove_orphans(engine: Engine, results_dir: Path) -> int:
    """Remove files no row points at, older than ``ORPHAN_AGE_S`` (left by a kill)."""
    present = {
        name: info.st_mtime
        for name, info in results.files(results_dir)
        if not name.split("/", 1)[1].startswith(".")  # a file being written (atomic rename)
    }
    cutoff = time.time() - ORPHAN_AGE_S
    old = [name for name, mtime in present.items() if mtime < cutoff]
    if not old:
        return 0
    referenced: set[str] = set()
    with engine.connect() as conn:
        for part in _chunks(old):
            referenced.update(
                conn.execute(
                    select(task_runs.c.result_file).where(task_runs.c.result_file.in_(part))
                ).scalars()
            )
            referenced.update(
                conn.execute(
                    select(cache_entries.c.result_file).where(cache_entries.c.result_file.in_(part))
                ).scalars()
            )
    removed = 0
    for name in old:
        if name not in referenced:
            try:
                (results_dir / name).unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def reclaimable_sqlite_bytes(conn: Connection) -> int:
    """The bytes of a SQLite file's free pages: what ``VACUUM`` would give back."""
    free = int(conn.execute(text("PRAGMA freelist_count")).scalar_one())
    page = int(conn.execute(text("PRAGMA page_size")).scalar_one())
    return free * page


def _space(engine: Engine, report: GcReport, *, vacuum: bool) -> None:
    if engine.dialect.name != "sqlite":
        report.vacuum = "PostgreSQL reuses the space of deleted rows after its autovacuum"
        return
    with engine.connect() as conn:
        free = reclaimable_sqlite_bytes(conn)
        mode = int(conn.execute(text("PRAGMA auto_vacuum")).scalar_one())
    if report.dry_run:
        report.vacuum = f"{free} bytes of free pages before gc"
        return
    if mode == 2 and free:  # INCREMENTAL: give pages back a few at a time
        with engine.connect() as conn:
            while reclaimable_sqlite_bytes(conn):
                conn.execute(text("PRAGMA incremental_vacuum(256)"))
                conn.commit()
        report.vacuum = f"incremental_vacuum gave back {free} bytes"
    elif vacuum and free:
        with engine.connect() as conn:
            conn.execute(text("VACUUM"))
        report.vacuum = f"VACUUM gave back about {free} bytes"
    elif free:
        report.vacuum = (
            f"{free} bytes of free pages: the store reuses them; `flowbook gc --vacuum` gives "
            "them back to the disk (it rewrites the file, and needs that much free disk)"
        )
    else:
        report.vacuum = "no free pages"
