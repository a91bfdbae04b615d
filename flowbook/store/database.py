"""Opening a store: the engine, SQLite's settings, schema migration, crash recovery.

SQLite is tuned for one writer thread per process and many processes on one file:

- ``journal_mode=WAL``: readers never block the writer and the writer never blocks readers,
  so a notebook listing runs does not stall a flow that is writing them.
- ``busy_timeout``: a writer that finds the database locked by another process waits (up to
  60 s) instead of failing with "database is locked".
- ``synchronous=NORMAL``: with WAL, a commit survives a crash of the process (what ``kill -9``
  does); only a power loss can drop the last transactions, never corrupt the file.
- ``foreign_keys`` stays off: rows arrive from a queue in batches and the writer does not
  order them by dependency.

Opening also marks as ``Crashed`` the runs of processes that died without finishing them:
a process on this host whose pid is gone (or reused, told by the pid's start time), or on
another host whose heartbeat is older than ``STALE_AFTER_S``.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select, text, update
from sqlalchemy.engine import make_url

from flowbook.store import schema
from flowbook.store.schema import flow_runs, meta, processes, states, task_runs

__all__ = ["StoreError", "connect", "pid_start_time"]

# a process whose heartbeat is older than this is taken as dead (other hosts only)
STALE_AFTER_S = 120.0
HEARTBEAT_EVERY_S = 15.0
_FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message says why and what to do."""


def pid_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` as the kernel counts it (None where unknown)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return start is None or pid_start_time(pid) in (None, start)


def _prepare_home(home: Path, results_dir: Path) -> None:
    for path, what in ((home, "FLOWBOOK_HOME"), (results_dir, "FLOWBOOK_RESULTS_DIR")):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{what}={str(path)!r} cannot be created ({exc.strerror}); set {what} to a "
                "writable directory"
            ) from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise StoreError(
                f"{what}={str(path)!r} is not writable; set {what} to a writable directory "
                "(or FLOWBOOK_STORE=off to keep runs in memory only)"
            )


def connect(url: str, home: Path, results_dir: Path) -> Engine:
    """An engine on the store at ``url``, created or migrated to the current schema."""
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    _prepare_home(home, results_dir)
    kwargs: dict[str, Any] = {}
    if is_sqlite:
        kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except Exception as exc:
        raise StoreError(
            f"FLOWBOOK_DATABASE_URL={_safe(url)!r} cannot be used: {exc}; give a SQLAlchemy "
            "URL such as postgresql+psycopg://user@host/db"
        ) from None
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    for attempt in range(20):
        try:
            _migrate(engine, url)
            break
        except StoreError:
            raise
        except _Racing:
            time.sleep(0.05 * (attempt + 1))  # another process is creating the store
        except Exception as exc:
            if attempt < 19 and _created_meanwhile(exc):
                time.sleep(0.05 * (attempt + 1))
                continue
            raise StoreError(f"the store at {_safe(url)!r} cannot be opened: {exc}") from exc
    else:
        raise StoreError(
            f"the store at {_safe(url)!r} cannot be opened: another process kept creating it"
        )
    return engine


class _Racing(Exception):
    """The store's tables exist but its version row is not written yet."""


def _created_meanwhile(exc: Exception) -> bool:
    text_ = str(exc).lower()
    return "already exists" in text_ or "duplicate" in text_ or "unique" in text_


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # the busy timeout first: switching a new file to WAL needs a lock that another process
    # creating the same store may hold for a moment
    cursor.execute("PRAGMA busy_timeout=60000")
    # WAL is a property of the file: set once, it stays. Setting it can fail at once with
    # "database is locked" (SQLite does not always wait for the busy timeout there) while
    # another process creates the same store, so that case is retried for a while.
    deadline = time.monotonic() + 60
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            break
        except Exception as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _migrate(engine: Engine, url: str) -> None:
    with engine.begin() as conn:
        if not inspect(conn).has_table("flowbook_meta"):
            schema.metadata.create_all(conn)
            conn.execute(
                meta.insert().values(key="schema_version", value=str(schema.SCHEMA_VERSION))
            )
            return
        row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
        if row is None:
            raise _Racing()
        version = int(row[0])
        if version > schema.SCHEMA_VERSION:
            raise StoreError(
                f"the store at {_safe(url)!r} was written by a newer flowbook (schema version "
                f"{version}; this flowbook reads up to {schema.SCHEMA_VERSION}); upgrade "
                "flowbook, or point FLOWBOOK_HOME / FLOWBOOK_DATABASE_URL at another store"
            )
        for step in range(version, schema.SCHEMA_VERSION):
            schema.MIGRATIONS[step](conn)
        if version != schema.SCHEMA_VERSION:
            conn.execute(
                update(meta)
                .where(meta.c.key == "schema_version")
                .values(value=str(schema.SCHEMA_VERSION))
            )


def register_process(engine: Engine, process_id: str) -> None:
    now = time.time()
    pid = os.getpid()
    with engine.begin() as conn:
        conn.execute(
            processes.insert().values(
                id=process_id,
                host=socket.gethostname(),
                pid=pid,
                pid_start=pid_start_time(pid),
                started_at=now,
                heartbeat_at=now,
            )
        )


def recover_crashed(engine: Engine, own_process_id: str) -> int:
    """Mark the unfinished runs of dead processes ``Crashed``; returns how many flow runs."""
    host = socket.gethostname()
    now = time.time()
    with engine.begin() as conn:
        rows = conn.execute(
            select(
                processes.c.id,
                processes.c.host,
                processes.c.pid,
                processes.c.pid_start,
                processes.c.heartbeat_at,
            ).where(processes.c.id != own_process_id)
        ).all()
        dead = [
            r.id
            for r in rows
            if (r.host == host and not _pid_alive(r.pid, r.pid_start))
            or (r.host != host and now - r.heartbeat_at > STALE_AFTER_S)
        ]
        if not dead:
            return 0
        unfinished = (
            conn.execute(
                select(flow_runs.c.id).where(
                    flow_runs.c.process_id.in_(dead),
                    (flow_runs.c.state_type.is_(None)) | (flow_runs.c.state_type.not_in(_FINAL)),
                )
            )
            .scalars()
            .all()
        )
        message = "The process running this flow run ended before the run finished."
        crashed_tasks: list[str] = []
        if unfinished:
            crashed_tasks = list(
                conn.execute(
                    select(task_runs.c.id).where(
                        task_runs.c.flow_run_id.in_(unfinished),
                        (task_runs.c.state_type.is_(None))
                        | (task_runs.c.state_type.not_in(_FINAL)),
                    )
                )
                .scalars()
                .all()
            )
            for table, ids, kind in (
                (flow_runs, unfinished, "flow"),
                (task_runs, crashed_tasks, "task"),
            ):
                if not ids:
                    continue
                conn.execute(
                    update(table)
                    .where(table.c.id.in_(ids))
                    .values(
                        state_type="CRASHED",
                        state_name="Crashed",
                        state_message=message,
                        end_time=now,
                    )
                )
                conn.execute(
                    states.insert(),
                    [
                        {
                            "run_id": i,
                            "run_kind": kind,
                            "type": "CRASHED",
                            "name": "Crashed",
                            "message": message,
                            "timestamp": now,
                        }
                        for i in ids
                    ],
                )
        conn.execute(processes.delete().where(processes.c.id.in_(dead)))
        return len(unfinished)


def heartbeat(engine: Engine, process_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(processes).where(processes.c.id == process_id).values(heartbeat_at=time.time())
        )


def unregister_process(engine: Engine, process_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(processes.delete().where(processes.c.id == process_id))


def prune_logs(engine: Engine, retention_days: float | None) -> None:
    if retention_days is None:
        return
    cutoff = time.time() - retention_days * 86400
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM logs WHERE timestamp < :cutoff"), {"cutoff": cutoff})
