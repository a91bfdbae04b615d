"""What the store writer could not write: telling errors apart, counting and reporting drops.

The writer meets three kinds of failure, and each asks for something else:

- *transient* ("database is locked", a lost or refused PostgreSQL connection, a deadlock or
  serialization failure): the same transaction is tried again, for a bounded time;
- *store-wide* (a full disk, a read-only store, a corrupt file, a server that stays away):
  no row can be written, so trying rows one by one would only cost time; the batch is
  dropped and the user told once, naming the store and the results directory;
- *row* (a constraint, a value the database refuses): only some rows are bad, so the batch
  is written again in smaller groups, down to single rows, and only the rows that still fail
  are dropped.

Every dropped record is counted in the process (``Drops.counts``) and kept, up to
``KEEP_PENDING`` of them, to be recorded in the store's ``write_drops`` table with the next
batch that commits, where ``flowbook doctor`` finds it. Reports are rate-limited but never
silent: the first ``FIRST_TOLD`` drops are warned about one by one, later ones are summed up in
one warning at most every ``SUMMARY_EVERY_S`` seconds (and when the store closes). A store
that cannot be written at all is told about once per process, store and kind of failure (the
warning says that later records are not recorded either), and once more when it can be written
again, with the number of records missed meanwhile.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["Drops", "classify", "reason"]

FIRST_TOLD = 3
SUMMARY_EVERY_S = 30.0
KEEP_PENDING = 10_000

TRANSIENT = "transient"
FULL = "full"
READ_ONLY = "read_only"
CORRUPT = "corrupt"
UNAVAILABLE = "unavailable"
ROW = "row"
STORE_WIDE = frozenset({FULL, READ_ONLY, CORRUPT, UNAVAILABLE})

# what each kind of record is called in messages
NAMES = {
    "flow_run": "flow run",
    "task_run": "task run",
    "state": "state",
    "log": "log line",
    "edge": "task dependency",
    "cache_entry": "cache entry",
    "cache_miss": "cache miss",
    "cache_hit": "cache hit count",
    "result": "task result",
    "write_drop": "record of a dropped record",
}

# SQLite's result codes (``sqlite_errorname``, the primary code before "_"), and its messages
# where an error has no code (older Pythons, other drivers)
_SQLITE_CODES = {
    "SQLITE_FULL": FULL,
    "SQLITE_READONLY": READ_ONLY,
    "SQLITE_IOERR": UNAVAILABLE,
    "SQLITE_CANTOPEN": UNAVAILABLE,
    "SQLITE_CORRUPT": CORRUPT,
    "SQLITE_NOTADB": CORRUPT,
    "SQLITE_BUSY": TRANSIENT,
    "SQLITE_LOCKED": TRANSIENT,
}
_SQLITE_TEXTS = (
    ("database or disk is full", FULL),
    ("readonly database", READ_ONLY),
    ("disk i/o error", UNAVAILABLE),
    ("unable to open database", UNAVAILABLE),
    ("database disk image is malformed", CORRUPT),
    ("file is not a database", CORRUPT),
    ("no such table", CORRUPT),
    ("database is locked", TRANSIENT),
    ("database table is locked", TRANSIENT),
)
# PostgreSQL's SQLSTATE codes (and classes, two characters)
_PG_CODES = {
    "25006": READ_ONLY,  # read_only_sql_transaction
    "53100": FULL,  # disk_full
    "53300": TRANSIENT,  # too_many_connections
    "40001": TRANSIENT,  # serialization_failure
    "40P01": TRANSIENT,  # deadlock_detected
    "55P03": TRANSIENT,  # lock_not_available
    "57P01": TRANSIENT,  # admin_shutdown (the server restarts)
    "57P02": TRANSIENT,  # crash_shutdown
    "57P03": TRANSIENT,  # cannot_connect_now (starting up)
    "42P01": CORRUPT,  # undefined_table: the store's tables are gone
    "XX001": CORRUPT,  # data_corrupted
    "XX002": CORRUPT,  # index_corrupted
}
_PG_CLASSES = {"08": TRANSIENT, "53": FULL, "58": UNAVAILABLE}


def classify(exc: BaseException) -> str:
    """Which kind of failure ``exc`` is (see the module docstring)."""
    if getattr(exc, "connection_invalidated", False):
        return TRANSIENT  # SQLAlchemy saw the connection drop
    orig = getattr(exc, "orig", None) or exc
    kind = type(orig)
    if kind.__name__ == "OperationalError" and kind.__module__.startswith("psycopg"):
        # the drivers' own class, not one of a server error: the server could not be reached
        # (refused, or refusing connections for now)
        return TRANSIENT
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(code, str) and code:
        return _PG_CODES.get(code) or _PG_CLASSES.get(code[:2]) or ROW
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str) and name:
        found = _SQLITE_CODES.get("_".join(name.split("_")[:2]))
        if found is not None:
            return found
    text = str(orig).lower()
    for fragment, found in _SQLITE_TEXTS:
        if fragment in text:
            return found
    if isinstance(orig, OSError):
        return UNAVAILABLE
    return ROW


def reason(exc: BaseException) -> str:
    """A one-line description of ``exc``: the database's own error, not SQLAlchemy's wrapper."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    text = lines[0] if lines else ""
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str) and name and name not in ("SQLITE_ERROR", "SQLITE_OK"):
        text = f"{text} [{name}]" if text else name
    return f"{type(orig).__name__}: {text}"[:300] if text else type(orig).__name__


def _store_wide_text(kind: str) -> str:
    return {
        FULL: "the disk is full",
        READ_ONLY: "it is read-only",
        CORRUPT: "it is damaged",
        UNAVAILABLE: "it did not answer, or stayed locked",
    }[kind]


def _counted(counts: Counter[str]) -> str:
    return ", ".join(f"{NAMES.get(what, what)}s: {n}" for what, n in sorted(counts.items()))


class Drops:
    """The records one store writer dropped: counts, reports, and rows for ``write_drops``.

    Used on the writer thread only, except ``counts``, which anyone may read.
    """

    def __init__(self, process_id: str, where: str, results_dir: Path) -> None:
        self.process_id = process_id
        self.where = where
        self.results_dir = results_dir
        self.counts: Counter[str] = Counter()  # every drop since the store opened, by kind
        self.pending: list[tuple[Any, ...]] = []  # rows for write_drops not written yet
        self.not_kept = 0  # drops beyond KEEP_PENDING, recorded as one row when written
        self._noted = 0  # of those, the ones in the row handed out by rows()
        self._told = 0
        self._unreported: Counter[str] = Counter()
        self._last_summary = time.monotonic()
        self._store_wide: set[str] = set()  # kinds of store-wide failure told about
        self.outage: str | None = None  # the store-wide failure going on, if any
        self._outage_lost = 0  # records dropped since it began
        self._lock = threading.Lock()

    # -- recording ------------------------------------------------------------------------------
    def add(self, what: str, run_id: str | None, why: str, *, told: bool = False) -> None:
        """One record was dropped. ``told``: a warning about its whole batch already said so."""
        with self._lock:
            self.counts[what] += 1
        if what != "write_drop":
            if len(self.pending) < KEEP_PENDING:
                self.pending.append((time.time(), self.process_id, run_id, what, why[:1000]))
            else:
                self.not_kept += 1
        if self.outage is not None:
            # the store-wide warning said that later records are not recorded either; their
            # number is told when the store can be written again
            self._outage_lost += 1
            return
        if told:
            return
        if self._told >= FIRST_TOLD:
            self._unreported[what] += 1
            return
        self._told += 1
        of_run = f" of run {run_id}" if run_id else ""
        more = (
            ""
            if self._told < FIRST_TOLD
            else f"; further drops are summed up at most every {SUMMARY_EVERY_S:g} s"
        )
        self.tell(
            f"the run store at {self.where} could not write a {NAMES.get(what, what)}{of_run} "
            f"({why}); it was dropped and the other records were written (`flowbook doctor` "
            f"lists dropped records){more}"
        )

    def store_wide(self, kind: str, why: str, lost: Counter[str]) -> bool:
        """A batch could not be written at all; told once per kind of failure (True then)."""
        if self.outage is None:
            self._outage_lost = 0
        self.outage = kind
        if kind in self._store_wide:
            return False
        self._store_wide.add(kind)
        records = f"these records ({_counted(lost)}) and later ones" if lost else "runs"
        self.tell(
            f"the run store at {self.where} cannot be written: {_store_wide_text(kind)} "
            f"({why}). Runs go on and return their results, but {records} are not recorded "
            "until the store can be written again; the result files of records not written "
            f"are removed from {self.results_dir}"
        )
        return True

    def short_of_space(self, why: str, lost: Counter[str], files_removed: int) -> bool:
        """A batch was written without its stored values, for lack of disk space; told once
        (True then)."""
        if "values" in self._store_wide:
            return False
        self._store_wide.add("values")
        removed = (
            f"; {files_removed} result file(s) were removed from {self.results_dir}"
            if files_removed
            else ""
        )
        self.tell(
            f"the disk holding the run store at {self.where} is full ({why}): the runs are "
            f"recorded, but not these values ({_counted(lost)}){removed}. Later values are "
            "kept again once there is space; until then they are dropped and counted "
            "(`flowbook doctor` lists them)"
        )
        return True

    def recovered(self) -> None:
        """A batch committed after a store-wide failure."""
        if self.outage is None:
            return
        self.outage = None
        self.tell(
            f"the run store at {self.where} can be written again; {self._outage_lost} "
            "record(s) were not recorded meanwhile (`flowbook doctor` lists them)"
        )
        self._outage_lost = 0

    def summary(self, force: bool = False) -> None:
        """Warn about the drops not told yet, at most every ``SUMMARY_EVERY_S`` seconds."""
        if not self._unreported:
            return
        now = time.monotonic()
        if not force and now - self._last_summary < SUMMARY_EVERY_S:
            return
        since = now - self._last_summary
        counts, self._unreported = self._unreported, Counter()
        self._last_summary = now
        total = sum(counts.values())
        self.tell(
            f"{total} more record(s) could not be written to the run store at {self.where} "
            f"in the last {since:.0f} s ({_counted(counts)}); `flowbook doctor` lists them"
        )

    # -- rows for write_drops -------------------------------------------------------------------
    def rows(self) -> list[tuple[Any, ...]]:
        """The rows to write now: the pending ones, and one for the drops beyond the limit
        (``what`` is "write_drop" for that one only)."""
        if not self.not_kept:
            return list(self.pending)
        note = (
            time.time(),
            self.process_id,
            None,
            "write_drop",
            f"{self.not_kept} more records were dropped and not listed one by one",
        )
        self._noted = self.not_kept
        return [*self.pending, note]

    def written(self, rows: list[tuple[Any, ...]]) -> None:
        """``rows`` (from ``rows()``) are committed, or refused: forget them. (Drops added
        meanwhile were appended after them.)"""
        listed = sum(1 for row in rows if row[3] != "write_drop")
        del self.pending[:listed]
        if listed < len(rows):
            self.not_kept -= self._noted
            self._noted = 0

    # -- output ---------------------------------------------------------------------------------
    @staticmethod
    def tell(message: str) -> None:
        """A RuntimeWarning; written to stderr if warnings are errors (never raised into the
        writer thread, which must go on).

        It is attributed to ``<flowbook store>`` rather than a line of this module: no user
        code is on the writer thread's stack, and a line of flowbook's would only add noise.
        """
        try:
            warnings.warn_explicit(
                message, RuntimeWarning, "<flowbook store>", 1, module="flowbook.store"
            )
        except Exception:
            try:
                sys.stderr.write(f"flowbook: {message}\n")
            except Exception:  # no stderr (a closed pipe): the counts remain
                pass
