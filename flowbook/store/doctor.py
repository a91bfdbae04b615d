"""``flowbook doctor``: what a store holds, whether it is intact, what was lost; and a repair.

The doctor never opens a store the way a run does (no migration, no process record, no crash
recovery): a damaged store is looked at as it is, and a healthy one is left as it was. It
reports

- the store: where it is, its schema version, its size, and how many flow runs, task runs,
  log lines and cache entries it holds;
- its integrity: SQLite's ``PRAGMA integrity_check``; on a database server, that it answers,
  that its schema version is one this flowbook reads, that every table and column is there,
  and that no index was left invalid;
- the records writers could not write (``write_drops``): how many, of which kind, and the
  most recent reasons (not a problem of the store: a history of what it missed);
- the results directory: files no row points at (orphans, left by a process killed between
  writing a file and committing its row) and rows whose file is gone. Files younger than
  ``RECENT_S`` are not judged: their rows may be on their way.

``repair`` copies every row that can still be read from a damaged SQLite store into a fresh
file next to it, keeps the damaged file as ``flowbook.db.corrupt-<time>`` (with its ``-wal``)
and puts the fresh one in its place. Rows are read by ranges of rowids; a range that cannot be
read is halved until the unreadable rows are isolated, so a damaged page costs its own rows
only. It also removes orphan files. It refuses while another process has the store open.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.engine import make_url

from flowbook.store import results, schema
from flowbook.store.drops import reason

__all__ = ["DoctorError", "Repair", "Report", "diagnose", "repair"]

RECENT_S = 60.0
RECENT_DROPS = 10
_COUNTED = ("flow_runs", "task_runs", "logs", "cache_entries")
_CHUNK = 1000  # rows read at a time when copying
_MAX_FAILED_READS = 20_000  # per table; beyond that the rest of the table is given up
_STALE_AFTER_S = 120.0  # as the store's crash detection: a heartbeat older than this is dead
_LABELS = {
    "flow_runs": "flow runs",
    "task_runs": "task runs",
    "logs": "log lines",
    "states": "states",
    "task_run_edges": "task dependencies",
    "cache_entries": "cache entries",
    "cache_misses": "cache misses",
    "processes": "process records",
    "write_drops": "records of dropped rows",
}


class DoctorError(RuntimeError):
    """The doctor cannot do what was asked; the message says why and what to do."""


@dataclass
class Report:
    """What ``diagnose`` found. ``problems`` decides the command's exit status."""

    store: str
    backend: str
    results_dir: str
    schema_version: int | None = None
    size_bytes: int | None = None  # SQLite: the file and its -wal; PostgreSQL: the tables'
    wal_bytes: int | None = None  # SQLite's -wal file (part of size_bytes)
    relation_bytes: dict[str, int] = field(default_factory=dict)  # PostgreSQL, per table
    results_bytes: int = 0  # the files in the results directory
    results_files: int = 0
    # what `flowbook gc` would free: runs chosen by FLOWBOOK_RUN_RETENTION_DAYS (if set),
    # expired cache entries, and SQLite's free pages
    reclaimable: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int | None] = field(default_factory=dict)
    integrity: list[str] = field(default_factory=list)  # what the checks found; empty: intact
    damaged: bool = False  # the database itself is damaged (a repair copies what it can read)
    drops_total: int = 0
    drops_by_kind: dict[str, int] = field(default_factory=dict)
    recent_drops: list[dict[str, Any]] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    recent_files: int = 0
    missing: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = list(self.integrity)
        if self.orphans:
            found.append(
                f"{len(self.orphans)} file(s) in {self.results_dir} that no row points at "
                "(`flowbook doctor --repair` removes them)"
            )
        if self.missing:
            found.append(f"{len(self.missing)} row(s) whose result file is missing")
        return found

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = self.problems
        data["ok"] = not self.problems
        return data


@dataclass
class Repair:
    """What ``repair`` did."""

    store: str
    copied: bool = False  # a fresh file was put in place of the damaged one
    kept_as: str | None = None  # where the damaged file is now
    tables: dict[str, dict[str, int]] = field(default_factory=dict)  # copied / unreadable rows
    not_copied: list[str] = field(default_factory=list)  # what could not be copied, and why
    orphans_removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- diagnosis -------------------------------------------------------------------------------------
def diagnose(url: str, results_dir: Path) -> Report:
    """Look at the store at ``url`` and the results directory; change nothing."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DoctorError(
            f"FLOWBOOK_DATABASE_URL={url!r} is not a database URL ({exc}); give one such as "
            "postgresql+psycopg://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    path = _sqlite_path(url)
    where = str(path) if path is not None else parsed.render_as_string(hide_password=True)
    report = Report(store=where, backend=backend, results_dir=str(results_dir))
    if path is not None:
        if not path.is_file():
            raise DoctorError(
                f"there is no run store at {path}: nothing has been recorded there (check "
                "FLOWBOOK_HOME, or FLOWBOOK_DATABASE_URL for a database server)"
            )
        report.size_bytes = sum(
            p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.is_file()
        )
        wal = Path(f"{path}-wal")
        report.wal_bytes = wal.stat().st_size if wal.is_file() else 0
    try:
        engine = _engine(url)
    except Exception as exc:
        raise DoctorError(f"the store at {where} cannot be used: {reason(exc)}") from None
    referenced: dict[str, tuple[str, str]] | None = None
    try:
        with engine.connect() as conn:
            if _check_schema(conn, report):
                _check_integrity(conn, report)
                _count(conn, report)
                _sizes(conn, report, results_dir)
                _dropped(conn, report)
                referenced = _referenced(conn, report)
    except Exception as exc:  # the store cannot even be opened: that is the finding
        report.integrity.append(f"the store cannot be read: {reason(exc)}")
        report.damaged = True
    finally:
        engine.dispose()
    if referenced is not None:
        _check_files(report, results_dir, referenced)
    else:
        report.notes.append("result files not checked: the store's rows could not be read")
    return report


def _engine(url: str) -> Any:
    if _sqlite_path(url) is not None:
        return create_engine(url, connect_args={"timeout": 10})
    return create_engine(url, pool_pre_ping=True)


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database)).expanduser().absolute()  # as the store opens it


def _check_schema(conn: Connection, report: Report) -> bool:
    """Tables, columns and schema version; False if the store cannot be read further."""
    try:
        tables = set(inspect(conn).get_table_names())
    except Exception as exc:
        report.integrity.append(f"the store's list of tables cannot be read: {reason(exc)}")
        report.damaged = True
        return False
    if "flowbook_meta" not in tables:
        report.integrity.append(
            "this is not a flowbook store: it has no flowbook_meta table (FLOWBOOK_HOME or "
            "FLOWBOOK_DATABASE_URL may point at the wrong place)"
        )
        return False
    try:
        value = conn.execute(
            text("SELECT value FROM flowbook_meta WHERE key = 'schema_version'")
        ).scalar()
        report.schema_version = int(value) if value is not None else None
    except Exception as exc:
        report.integrity.append(f"the schema version cannot be read: {reason(exc)}")
        report.damaged = True
        return False
    version = report.schema_version
    if version is None:
        report.integrity.append("the store has no schema version: it was never fully created")
        return False
    if version > schema.SCHEMA_VERSION:
        report.integrity.append(
            f"the store was written by a newer flowbook (schema version {version}; this one "
            f"reads up to {schema.SCHEMA_VERSION}): upgrade flowbook to check it"
        )
        return False
    if version < schema.SCHEMA_VERSION:
        report.notes.append(
            f"schema version {version}: the next run that opens the store upgrades it to "
            f"version {schema.SCHEMA_VERSION}"
        )
        return True
    for table in schema.metadata.sorted_tables:
        if table.name not in tables:
            report.integrity.append(f"the table {table.name} is missing")
            continue
        try:
            have = {c["name"] for c in inspect(conn).get_columns(table.name)}
        except Exception as exc:
            report.integrity.append(f"the columns of {table.name} cannot be read: {reason(exc)}")
            continue
        lacking = [c.name for c in table.columns if c.name not in have]
        if lacking:
            report.integrity.append(f"the table {table.name} lacks column(s) {', '.join(lacking)}")
    return True


def _check_integrity(conn: Connection, report: Report) -> None:
    if conn.dialect.name == "sqlite":
        try:
            found = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check(50)")]
        except Exception as exc:
            found = [reason(exc)]
        if found != ["ok"]:
            report.damaged = True
            report.integrity += [f"integrity_check: {line}" for line in found]
        return
    if conn.dialect.name == "postgresql":
        try:
            report.size_bytes = int(
                conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
            )
            invalid = conn.execute(
                text(
                    "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE NOT i.indisvalid AND n.nspname = current_schema()"
                )
            ).all()
        except Exception as exc:
            report.integrity.append(f"the server's catalog cannot be read: {reason(exc)}")
            return
        for (name,) in invalid:
            report.integrity.append(f"the index {name} is invalid: run REINDEX INDEX {name}")


def _count(conn: Connection, report: Report) -> None:
    for table in _COUNTED:
        try:
            report.counts[table] = int(
                conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            )
        except Exception as exc:
            report.counts[table] = None
            report.integrity.append(f"the rows of {table} cannot be counted: {reason(exc)}")
            report.damaged = report.damaged or conn.dialect.name == "sqlite"


def _sizes(conn: Connection, report: Report, results_dir: Path) -> None:
    """Table sizes (PostgreSQL), the results directory, and what gc would free."""
    from flowbook.settings import get_settings
    from flowbook.store.gc import choose_runs, reclaimable_sqlite_bytes

    try:
        if conn.dialect.name == "postgresql":
            for table in schema.metadata.tables:
                size = conn.execute(
                    text("SELECT pg_total_relation_size(to_regclass(:t))"), {"t": table}
                ).scalar_one()
                report.relation_bytes[table] = int(size or 0)
            report.size_bytes = sum(report.relation_bytes.values())
        for _, info in results.files(results_dir):
            report.results_bytes += info.st_size
            report.results_files += 1
        days = get_settings().run_retention_days
        if days is not None:
            runs, _ = choose_runs(conn, days, None)
            report.reclaimable["runs_older_than_retention"] = len(runs)
            report.reclaimable["retention_days"] = days
        report.reclaimable["expired_cache_entries"] = int(
            conn.execute(
                text(
                    "SELECT count(*) FROM cache_entries WHERE expires IS NOT NULL "
                    "AND expires <= :now"
                ),
                {"now": time.time()},
            ).scalar_one()
        )
        if conn.dialect.name == "sqlite":
            report.reclaimable["free_page_bytes"] = reclaimable_sqlite_bytes(conn)
    except Exception as exc:
        report.notes.append(f"the store's size could not be read in full: {reason(exc)}")


def _dropped(conn: Connection, report: Report) -> None:
    if not inspect(conn).has_table("write_drops"):
        return
    try:
        kinds = conn.execute(
            text("SELECT what, count(*) FROM write_drops GROUP BY what ORDER BY what")
        ).all()
        recent = conn.execute(
            text(
                "SELECT at, process_id, run_id, what, reason FROM write_drops "
                "ORDER BY at DESC, id DESC LIMIT :n"
            ),
            {"n": RECENT_DROPS},
        ).all()
    except Exception as exc:
        report.integrity.append(f"the records of dropped rows cannot be read: {reason(exc)}")
        return
    report.drops_by_kind = {str(what): int(n) for what, n in kinds}
    report.drops_total = sum(report.drops_by_kind.values())
    report.recent_drops = [
        {"at": at, "process_id": process, "run_id": run, "what": what, "reason": why}
        for at, process, run, what, why in recent
    ]


def _referenced(conn: Connection, report: Report) -> dict[str, tuple[str, str]] | None:
    """Every file a row points at: ``{name: (kind, which row)}``."""
    found: dict[str, tuple[str, str]] = {}
    try:
        for run_id, name in conn.execute(
            text("SELECT id, result_file FROM task_runs WHERE result_file IS NOT NULL")
        ):
            found[str(name)] = ("task run", str(run_id))
        for task_name, key, name in conn.execute(
            text(
                "SELECT task_name, key, result_file FROM cache_entries "
                "WHERE result_file IS NOT NULL"
            )
        ):
            found[str(name)] = ("cache entry", f"{task_name} {str(key)[:16]}")
    except Exception as exc:
        report.integrity.append(f"the rows that point at result files cannot be read: {exc}")
        return None
    return found


def _check_files(report: Report, results_dir: Path, referenced: dict[str, tuple[str, str]]) -> None:
    present = _files(results_dir)
    now = time.time()
    for name, mtime in sorted(present.items()):
        if name in referenced:
            continue
        if now - mtime < RECENT_S:
            report.recent_files += 1
        else:
            report.orphans.append(name)
    for name, (kind, which) in sorted(referenced.items()):
        if name not in present:
            report.missing.append({"kind": kind, "row": which, "file": name})
    if report.recent_files:
        report.notes.append(
            f"{report.recent_files} file(s) younger than {RECENT_S:g} s not judged (a run may "
            "be writing their rows)"
        )


def _files(results_dir: Path) -> dict[str, float]:
    """The files the store writes in the results directory, with their modification times."""
    return {name: info.st_mtime for name, info in results.files(results_dir)}


# -- repair ----------------------------------------------------------------------------------------
def repair(url: str, results_dir: Path) -> Repair:
    """Copy what can be read of a damaged SQLite store into a fresh one; remove orphan files."""
    path = _sqlite_path(url)
    report = diagnose(url, results_dir)
    result = Repair(store=report.store)
    if path is not None:
        users = _users(path)
        if users:
            raise DoctorError(
                f"{len(users)} process(es) still use the store at {path} "
                f"({', '.join(users)}): stop them (or their notebook kernels), then run "
                "flowbook doctor --repair again"
            )
    if report.damaged and path is not None:
        _copy_store(path, result)
        report = diagnose(url, results_dir)  # orphans are judged against the rows kept
    elif report.damaged:
        result.notes.append(
            "a database server's storage is repaired with its own tools (pg_dump and restore, "
            "REINDEX): flowbook copies SQLite stores only"
        )
    elif not report.integrity:
        result.notes.append("the database is intact: nothing to copy")
    for name in report.orphans:
        try:
            (results_dir / name).unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            result.notes.append(f"{name} could not be removed: {exc.strerror or exc}")
            continue
        result.orphans_removed.append(name)
    return result


def _users(path: Path) -> list[str]:
    """The processes recorded as using the store that still run (as "pid N on host")."""
    from flowbook.store.database import pid_start_time

    try:
        conn = sqlite3.connect(str(path), timeout=10)
        try:
            rows = list(conn.execute("SELECT host, pid, pid_start, heartbeat_at FROM processes"))
        finally:
            conn.close()
    except sqlite3.Error:
        return []  # unreadable: no run can be using it either
    host = socket.gethostname()
    now = time.time()
    alive: list[str] = []
    for row_host, pid, pid_start, heartbeat_at in rows:
        if row_host == host:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass  # alive, someone else's
            if pid_start is not None and pid_start_time(int(pid)) not in (None, pid_start):
                continue  # the pid was reused
        elif now - float(heartbeat_at or 0) > _STALE_AFTER_S:
            continue
        alive.append(f"pid {pid} on {row_host}")
    return alive


def _copy_store(path: Path, result: Repair) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fresh = path.with_name(f"{path.name}.repair-{stamp}")
    kept = path.with_name(f"{path.name}.corrupt-{stamp}")
    fresh.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{fresh}")
    try:
        with engine.begin() as conn:
            schema.metadata.create_all(conn)
            conn.execute(
                schema.meta.insert().values(key="schema_version", value=str(schema.SCHEMA_VERSION))
            )
    finally:
        engine.dispose()
    source = sqlite3.connect(str(path), timeout=10)
    target = sqlite3.connect(str(fresh))
    try:
        for table in schema.metadata.sorted_tables:
            if table.name == "flowbook_meta":
                continue
            _copy_table(source, target, table, result)
        # rows copied from a store older than version 6 get their flow-run keys
        for statement in schema.flow_key_fills("sqlite"):
            target.execute(statement)
        target.commit()
        check = [r[0] for r in target.execute("PRAGMA integrity_check")]
        if check != ["ok"]:  # pragma: no cover - a file this process just wrote
            raise DoctorError(f"the copy {fresh} is not intact either ({check[0]}); kept apart")
    finally:
        source.close()
        target.close()
    os.chmod(fresh, path.stat().st_mode & 0o777)
    os.replace(path, kept)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{kept}{suffix}"))
    os.replace(fresh, path)
    result.copied = True
    result.kept_as = str(kept)


def _copy_table(
    source: sqlite3.Connection, target: sqlite3.Connection, table: Any, result: Repair
) -> None:
    name = table.name
    try:
        have = {row[1] for row in source.execute(f"PRAGMA table_info({name})")}
    except sqlite3.Error:
        have = {c.name for c in table.columns}  # the schema is unreadable: try every column
    columns = [c.name for c in table.columns if c.name in have]
    if not columns:
        return  # an older store without this table
    read = f"SELECT {', '.join(columns)} FROM {name} WHERE rowid BETWEEN ? AND ?"
    write = (
        f"INSERT OR IGNORE INTO {name} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
    )
    low, high = _rowid_bounds(source, name)
    ranges = [(a, min(a + _CHUNK - 1, high)) for a in range(low, high + 1, _CHUNK)]
    ranges.reverse()
    copied = unreadable = failures = 0
    first_error = ""
    lost: list[tuple[int, int]] = []
    while ranges:
        a, b = ranges.pop()
        try:
            rows = source.execute(read, (a, b)).fetchall()
        except sqlite3.DatabaseError as exc:
            failures += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            if a < b and failures < _MAX_FAILED_READS:
                middle = (a + b) // 2
                ranges += [(middle + 1, b), (a, middle)]
            else:
                lost.append((a, b))
                unreadable += b - a + 1
            continue
        target.executemany(write, rows)
        copied += len(rows)
    target.commit()
    result.tables[name] = {"copied": copied, "unreadable": unreadable}
    if lost:
        spans = _merged(lost)
        shown = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans[:5])
        more = ", ..." if len(spans) > 5 else ""
        result.not_copied.append(
            f"{_LABELS.get(name, name)}: up to {unreadable} row(s) could not be read (rowids "
            f"{shown}{more}; {first_error})"
        )


def _rowid_bounds(source: sqlite3.Connection, name: str) -> tuple[int, int]:
    """The smallest and largest rowid of table ``name``, as far as they can be read."""
    try:
        low, high = source.execute(f"SELECT min(rowid), max(rowid) FROM {name}").fetchone()
        if low is None:
            return 1, 0  # empty
        return int(low), int(high)
    except sqlite3.DatabaseError:
        pass
    seen = 0
    try:  # walk as far as the table can be walked, then guess the rest is as long again
        for (rowid,) in source.execute(f"SELECT rowid FROM {name} ORDER BY rowid"):
            seen = int(rowid)
    except sqlite3.DatabaseError:
        pass
    return 1, max(seen * 2, seen + 100_000)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged
