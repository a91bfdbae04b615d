"""WAL checkpoints of a SQLite store, on a thread of their own.

A SQLite store in WAL mode appends each commit to the ``-wal`` file; a checkpoint copies those
pages back into the database file (and syncs both). By default SQLite does that inside the
commit that takes the WAL past 1,000 pages, so one flow call in a few dozen waited for the
whole copy at its end. In a store that holds many runs the copy is dearer: the pages of a
commit lie all over a large file (the leaves of big indexes) instead of at its end, and a
checkpoint of a grown store took 10 to 12 ms where a fresh one took 4 or 5.

Here the store writer's connection checkpoints only as a safety net (``SAFETY_PAGES``), and
after each committed batch the writer wakes this thread, which runs a ``PASSIVE`` checkpoint on
a connection of its own, at most once every ``INTERVAL_S`` seconds. A passive checkpoint never
waits for readers or writers, and SQLite runs it without Python's lock, so the runs, and the
writer's next commits, go on meanwhile (the writer and this thread share the store's fork
guard, ``database.ForkGuard``, without waiting for each other). While commits keep coming
during checkpoints the WAL cannot start again from its beginning (SQLite restarts it only at
a commit that finds every frame copied back); then the writer connection's own checkpoint
past ``SAFETY_PAGES`` bounds it. (The thread does not look at the WAL's size in the
``-shm`` file itself: closing a descriptor of that file would drop every lock SQLite holds on
it in this process, https://www.sqlite.org/howtocorrupt.html section 2.2.)

Nothing about durability changes: a commit is on disk in the WAL when the writer is told it
is (``synchronous=NORMAL``), before and after any checkpoint; a checkpoint that does not
happen (the thread stopped, the process killed) leaves the pages in the WAL, where SQLite
finds them at the next open.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from flowbook.store.database import FORK_GUARD

__all__ = ["DEFAULT_PAGES", "INTERVAL_S", "SAFETY_PAGES", "Checkpointer"]

# SQLite's own threshold for a connection's automatic checkpoint
DEFAULT_PAGES = 1000
# the writer connection's own automatic checkpoint: only if the thread falls far behind
SAFETY_PAGES = 4 * DEFAULT_PAGES
# at most one checkpoint per this many seconds (commits meanwhile wait for the next one)
INTERVAL_S = 0.5


class Checkpointer:
    """Checkpoints one SQLite file's WAL after the store writer's commits."""

    def __init__(self, engine: Engine, database: Path) -> None:
        self.engine = engine
        self.database = database
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.runs = 0  # checkpoints made (for tests and reports)
        self.failures = 0
        # (busy, WAL frames, frames copied) of the last checkpoint, as SQLite returned them
        self.last: tuple[int, int, int] | None = None
        # the thread's connection and cursor, kept between checkpoints (see _checkpoint)
        self._conn: Any = None
        self._cursor: Any = None
        self._thread = threading.Thread(
            target=self._loop, name="flowbook-store-checkpoint", daemon=True
        )
        self._thread.start()

    @staticmethod
    def configure(dbapi_connection: Any, pages: int = SAFETY_PAGES) -> None:
        """Set a connection's automatic checkpoint (the writer's: the safety net)."""
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")
        finally:
            cursor.close()

    def committed(self) -> None:
        """Called by the writer after each commit: a checkpoint is due."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """End the thread (a checkpoint under way finishes first)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        try:
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    return
                self._wake.clear()
                try:
                    with FORK_GUARD:
                        row = self._checkpoint()
                    self.last = (int(row[0]), int(row[1]), int(row[2]))
                    self.runs += 1
                except Exception:  # a checkpoint that fails is made by a later one, or SQLite
                    self.failures += 1
                    self._close()
                if self._stop.wait(INTERVAL_S):
                    return
        finally:
            self._close()

    def _checkpoint(self) -> Any:
        """One passive checkpoint: SQLite's row (busy, WAL frames, frames copied).

        On one connection and cursor kept for the thread's life: a new cursor for each
        checkpoint would leave behind, among the objects of the runs going on, the weak
        reference the sqlite3 module keeps to each cursor until 200 more have been made, and
        those few leftovers keep whole blocks of the runs' memory from being given back once
        they are over.
        """
        if self._cursor is None:
            self._conn = self.engine.raw_connection()
            self._cursor = self._conn.cursor()
        self._cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        # (all of it: the statement is then done, and holds nothing until the next one)
        return self._cursor.fetchall()[0]

    def _close(self) -> None:
        conn, self._conn, self._cursor = self._conn, None, None
        if conn is not None:
            with FORK_GUARD, contextlib.suppress(Exception):
                conn.close()
