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

The home directory is created 0700 and a new SQLite file 0600 (SQLite gives its ``-wal`` and
``-shm`` files the mode of the database), and a home that other users can write to is refused:
results are pickles, and loading a pickle someone else put there would run their code.
A store that exists but cannot be written (a read-only file, directory, mount, database or
role) is a ``StoreReadOnlyError`` naming it; ``flowbook.store.configure`` then leaves the
process without a store, so runs go on unrecorded, while readers get the error.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from flowbook.store import schema
from flowbook.store.schema import flow_runs, meta, processes, states, task_runs

__all__ = [
    "StoreError",
    "StoreReadOnlyError",
    "as_store_error",
    "connect",
    "location",
    "pid_start_time",
    "sqlite_file",
]

# a process whose heartbeat is older than this is taken as dead (other hosts only)
STALE_AFTER_S = 120.0
HEARTBEAT_EVERY_S = 15.0


class ForkGuard:
    """Held by the store's own threads (the writer, the checkpoint thread) while they are inside
    the database library, any number of them at once, and taken whole before this process
    forks: SQLite is not fork-safe while another thread is inside it (a mutex it held stays
    held in the child, whose first connection then waits for ever). A fork waits for the
    batches and checkpoints under way and holds off new ones until it is done.

    The store's threads never wait for each other here: a checkpoint of a grown store takes
    10 to 25 ms, and a writer waiting for it made the flow call waiting for its rows wait too
    (`with FORK_GUARD:` around each piece of database work)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0  # threads inside the database library
        self._forks = 0  # forks under way (from more than one thread at once, possibly)
        self._counted = threading.local()  # this thread's fork was counted in _forks

    def __enter__(self) -> None:
        with self._cond:
            while self._forks:
                self._cond.wait()
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._inside -= 1
            if not self._inside:
                self._cond.notify_all()

    def inside(self) -> int:
        """How many threads are inside the guard now."""
        with self._cond:
            return self._inside

    def before_fork(self) -> None:
        with self._cond:
            self._forks += 1
            self._counted.fork = True
            while self._inside:
                try:
                    self._cond.wait()
                except BaseException:
                    # an interrupt while waiting: Python ignores whatever a fork hook raises
                    # and forks anyway, so the wait goes on (the child must not start with a
                    # thread inside SQLite); the interrupt is lost, as any in a fork hook
                    continue

    def after_fork_in_parent(self) -> None:
        if not getattr(self._counted, "fork", False):
            return  # interrupted before it was counted: nothing to take back
        self._counted.fork = False
        with self._cond:
            self._forks -= 1
            if not self._forks:
                self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        # the threads that were inside it or waiting for it are not in the child
        self._reset()


FORK_GUARD = ForkGuard()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=FORK_GUARD.before_fork,
        after_in_parent=FORK_GUARD.after_fork_in_parent,
        after_in_child=FORK_GUARD.after_fork_in_child,
    )
_FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message says why and what to do."""


class StoreReadOnlyError(StoreError):
    """The store exists but cannot be written: runs cannot be recorded in it."""


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


def _prepare_home(home: Path, results_dir: Path, database: Path | None) -> None:
    """Create the home (0700) and results directories; refuse a home others can write to.

    ``database`` is the SQLite file of the store (None for a database server): when it
    exists, a home that cannot be written is a read-only store rather than a bad setting.
    """
    for path, what in ((home, "FLOWBOOK_HOME"), (results_dir, "FLOWBOOK_RESULTS_DIR")):
        read_only_store = path == home and database is not None and database.exists()
        try:
            # only the directory itself is 0700; parents made on the way get the usual mode
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            if read_only_store and exc.errno in _READ_ONLY_ERRNOS:
                raise _read_only(str(database), exc.strerror or str(exc)) from None
            raise StoreError(
                f"{what}={str(path)!r} cannot be created ({exc.strerror}); set {what} to a "
                "writable directory"
            ) from None
        if path == home:
            _refuse_shared_home(home)
        if not os.access(path, os.W_OK | os.X_OK):
            if read_only_store:
                raise _read_only(str(database), f"the directory {path} is not writable")
            raise StoreError(
                f"{what}={str(path)!r} is not writable; set {what} to a writable directory "
                "(or FLOWBOOK_STORE=off to keep runs in memory only)"
            )


def _refuse_shared_home(home: Path) -> None:
    mode = home.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StoreError(
            f"the flowbook home {home} (FLOWBOOK_HOME) is writable by other users (mode "
            f"{stat.filemode(mode)}); results are loaded from it with pickle, so anyone who can "
            f"write there could make flowbook run their code as you; run chmod 700 {home}, or "
            "set FLOWBOOK_HOME to a directory only you can write to"
        )


def _create_database_file(database: Path) -> None:
    """Create a new SQLite file 0600 (an empty file is an empty database), or check an old one."""
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if not os.access(database, os.R_OK | os.W_OK):
            raise _read_only(str(database), "the file is not writable") from None
        return
    except OSError as exc:
        raise StoreError(
            f"the run store file {database} cannot be created ({exc.strerror}); make its "
            "directory writable, or point FLOWBOOK_HOME (or FLOWBOOK_DATABASE_URL) at a "
            "writable place"
        ) from None
    os.close(fd)


_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
# how the drivers say that a write was refused: SQLite (a read-only file, or a directory where
# the -wal/-shm files cannot be made), PostgreSQL (a read-only transaction or server, a role
# without the right to write)
_READ_ONLY_MESSAGES = (
    "readonly database",
    "read-only database",
    "unable to open database file",
    "read-only transaction",
    "in recovery",
    "permission denied",
)


def _read_only(where: str, reason: str) -> StoreReadOnlyError:
    return StoreReadOnlyError(
        f"the run store {where} is read-only ({reason}), so runs cannot be recorded in it; "
        "make it writable, or point FLOWBOOK_HOME (or FLOWBOOK_DATABASE_URL) at another "
        "store, or set FLOWBOOK_STORE=off to run without one"
    )


def _reason(exc: BaseException) -> str:
    """The driver's own message, on one line (SQLAlchemy's adds the SQL and a link)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {first[0] if first else ''}".rstrip(": ")


def as_store_error(exc: Exception, url: str | URL) -> StoreError:
    """A ``StoreError`` for a failed database call, read-only ones named as such."""
    reason = _reason(exc)
    where = location(url)
    if any(m in reason.lower() for m in _READ_ONLY_MESSAGES):
        return _read_only(where, reason)
    return StoreError(f"the run store {where} cannot be used: {reason}")


def location(url: str | URL) -> str:
    """The SQLite file of a store, or its URL without the password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return str(parsed.database)
    return parsed.render_as_string(hide_password=True)


def sqlite_file(url: str) -> Path | None:
    """The SQLite file of a store URL (None for a server, memory or a URI filename)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # a URI filename: left to SQLite
        return None
    return Path(parsed.database).expanduser().absolute()


def connect(url: str, home: Path, results_dir: Path) -> Engine:
    """An engine on the store at ``url``, created or migrated to the current schema."""
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    database = sqlite_file(url)
    _prepare_home(home, results_dir, database)
    if database is not None:
        _create_database_file(database)
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
            engine.dispose()
            raise
        except _Racing:
            if attempt == _HALF_CREATED_AFTER:
                _create_again_if_empty(engine, url)
                continue
            time.sleep(0.05 * (attempt + 1))  # another process is creating the store
        except Exception as exc:
            if attempt < 19 and _created_meanwhile(exc):
                time.sleep(0.05 * (attempt + 1))
                continue
            engine.dispose()
            raise as_store_error(exc, url) from exc
    else:
        engine.dispose()
        raise StoreError(
            f"the store at {_safe(url)!r} cannot be opened: another process kept creating it"
        )
    return engine


class _Racing(Exception):
    """The store's tables exist but its version row is not written yet."""


# After this many waits (about 2.75 s) for another process to finish creating the store, the
# store is taken to be half-created: its creator was stopped (an interrupt, a kill) between
# creating the tables and writing the version row, which SQLite cannot do in one
# transaction through pysqlite (it commits each CREATE TABLE at once).
_HALF_CREATED_AFTER = 10


def _create_again_if_empty(engine: Engine, url: str) -> None:
    """Create a half-created store again: its tables exist, its version row does not. Such a
    store holds no runs (nothing is written before the version row), so nothing is lost; one
    whose tables hold rows is refused with what to do."""
    with engine.begin() as conn:
        found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
        if found is not None:
            return  # its creator finished meanwhile
        existing = set(inspect(conn).get_table_names())
        for table in schema.metadata.sorted_tables:
            if table.name in existing and conn.execute(select(table).limit(1)).first():
                raise StoreError(
                    f"the store at {_safe(url)!r} has no schema version but its table "
                    f"{table.name!r} holds rows; move the store aside (or point "
                    "FLOWBOOK_HOME / FLOWBOOK_DATABASE_URL at another store) and run "
                    "`flowbook doctor --repair` on the copy to recover what it holds"
                )
        schema.metadata.drop_all(conn)
        schema.metadata.create_all(conn)
        conn.execute(meta.insert().values(key="schema_version", value=str(schema.SCHEMA_VERSION)))


def _created_meanwhile(exc: Exception) -> bool:
    """Another process created or upgraded the store meanwhile (it added what this one was
    adding), or is upgrading it still: its transaction held the lock past SQLite's busy
    timeout (an upgrade of a very large store); the next attempt finds its work done."""
    text_ = str(exc).lower()
    return (
        "already exists" in text_
        or "duplicate" in text_
        or "unique" in text_
        or "database is locked" in text_
    )


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
    """Record this process in the store: the first write of every open, so a store that
    cannot be written is found here (a ``StoreReadOnlyError``)."""
    now = time.time()
    pid = os.getpid()
    try:
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
    except DBAPIError as exc:
        engine.dispose()
        raise as_store_error(exc, engine.url) from exc


def recover_crashed(engine: Engine, own_process_id: str, journals: Path | None = None) -> int:
    """Mark the unfinished runs of dead processes ``Crashed``; returns how many flow runs.

    ``journals`` is the directory of run journals (``flowbook.store.journal``): a dead process
    of this host may have journalled top-level runs whose rows it never committed; they are
    recorded here, as ``Crashed``, or with their final state when the journal has it (a flow
    call that did not wait for its rows, ``FLOWBOOK_STORE_WAIT=off``).
    """
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
        here = [r.id for r in rows if r.id in dead and r.host == host]
        journalled, ended = (
            _journalled_runs(conn, journals, here, now) if journals is not None else (0, [])
        )
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
        if unfinished or ended:
            crashed_tasks = list(
                conn.execute(
                    select(task_runs.c.id).where(
                        schema.of_flow_runs(task_runs, [*unfinished, *ended]),
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
    if journals is not None:
        for process_id in here:
            try:
                (journals / f"{process_id}.jsonl").unlink()
            except OSError:
                pass
    return len(unfinished) + journalled


def _journalled_runs(
    conn: Connection, journals: Path, dead: list[str], now: float
) -> tuple[int, list[str]]:
    """Record the journalled runs of dead processes the database lacks, as ``Crashed`` or, when
    their end was journalled (``FLOWBOOK_STORE_WAIT=off``), with their final state; runs the
    database has unfinished that ended by the journal get their final state too. Returns how
    many runs were added and the ids of the runs given their final state (their task runs that
    are not final are the caller's to mark)."""
    from flowbook.store.journal import read_journal

    added, ended_ids = 0, []
    for process_id in dead:
        entries = read_journal(journals / f"{process_id}.jsonl")
        if not entries:
            continue
        ids = [e["id"] for e in entries]
        found = dict(
            conn.execute(
                select(flow_runs.c.id, flow_runs.c.state_type).where(flow_runs.c.id.in_(ids))
            ).all()
        )
        # each entry's final state: the journalled one, else Crashed now
        journalled = {e["id"]: _end(e) for e in entries}
        final = {i: end or {**_CRASHED_END, "time": now} for i, end in journalled.items()}
        missing = [e for e in entries if e["id"] not in found]
        ended = [
            e
            for e in entries
            if e["id"] in found and found[e["id"]] not in _FINAL and journalled[e["id"]] is not None
        ]
        for e in ended:
            end = final[e["id"]]
            conn.execute(
                update(flow_runs)
                .where(flow_runs.c.id == e["id"])
                .values(
                    state_type=end["type"],
                    state_name=end["name"],
                    state_message=end["message"],
                    run_count=end["run_count"],
                    end_time=end["time"],
                )
            )
            ended_ids.append(e["id"])
        if missing:
            created_at = {e["id"]: float(e.get("created_at") or now) for e in missing}
            conn.execute(
                flow_runs.insert(),
                [
                    {
                        "id": e["id"],
                        "name": str(e.get("name") or "")[:255],
                        "flow_name": str(e.get("flow_name") or "")[:255],
                        "flow_version": e.get("flow_version"),
                        "project": e.get("project"),
                        "process_id": process_id,
                        "tags": json.dumps(e.get("tags") or []),
                        "state_type": final[e["id"]]["type"],
                        "state_name": final[e["id"]]["name"],
                        "state_message": final[e["id"]]["message"],
                        "run_count": final[e["id"]]["run_count"],
                        "created_at": created_at[e["id"]],
                        "created_us": schema.created_us(created_at[e["id"]]),
                        "end_time": final[e["id"]]["time"],
                        "notebook": e.get("notebook"),
                        "cell_id": e.get("cell_id"),
                    }
                    for e in missing
                ],
            )
        rows = [
            {
                "run_id": e["id"],
                "run_kind": "flow",
                "type": final[e["id"]]["type"],
                "name": final[e["id"]]["name"],
                "message": final[e["id"]]["message"],
                "timestamp": final[e["id"]]["time"],
            }
            for e in missing + ended
        ]
        if rows:
            conn.execute(states.insert(), rows)
        added += len(missing)
    return added, ended_ids


_NOT_RECORDED = (
    "The process running this flow run ended before the run was recorded (found in its run "
    "journal)."
)
_CRASHED_END: dict[str, Any] = {
    "type": "CRASHED",
    "name": "Crashed",
    "message": _NOT_RECORDED,
    "run_count": 0,
}
_END_NOT_RECORDED = (
    "The process ended before this run's rows were written (FLOWBOOK_STORE_WAIT=off): its "
    "final state is from the run journal; its task runs and log lines may be missing."
)


def _end(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A journal entry's final state as column values, or None (none journalled, or unusable)."""
    end = entry.get("end")
    if not isinstance(end, dict) or end.get("type") not in _FINAL:
        return None
    message = end.get("message")
    note = _END_NOT_RECORDED if not message else f"{str(message)[:2000]} ({_END_NOT_RECORDED})"
    when = end.get("time")
    count = end.get("run_count")
    return {
        "type": end["type"],
        "name": str(end.get("name") or end["type"].title())[:255],
        "message": note,
        "run_count": count if isinstance(count, int) and count >= 0 else 0,
        "time": float(when) if isinstance(when, (int, float)) else time.time(),
    }


def heartbeat(engine: Engine, process_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(processes).where(processes.c.id == process_id).values(heartbeat_at=time.time())
        )


def unregister_process(engine: Engine, process_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(processes.delete().where(processes.c.id == process_id))


_PRUNE_BATCH = 5000  # log lines per transaction: another process's writer waits one batch


def prune_logs(engine: Engine, retention_days: float | None) -> None:
    """Delete log lines older than the retention, a batch per transaction (the oldest first,
    by the timestamp index), so that a store whose lines age all at once does not hold the
    write lock for the whole delete."""
    if retention_days is None:
        return
    cutoff = time.time() - retention_days * 86400
    while True:
        with engine.begin() as conn:
            deleted = conn.execute(
                text(
                    "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE timestamp < :cutoff "
                    "LIMIT :n)"
                ),
                {"cutoff": cutoff, "n": _PRUNE_BATCH},
            ).rowcount
        if deleted < _PRUNE_BATCH:
            return
