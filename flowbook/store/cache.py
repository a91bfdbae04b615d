"""The persistent cache: the index in the database, values in the row or in result files.

A value is pickled once, when it is put. Up to ``INLINE_RESULT_BYTES`` it is kept in the index
row itself; a larger one goes to a file in ``<results dir>/cache/``, written under a temporary
name and renamed into place before the index row that points at it is written. Small values
live in the row because a warm cache serves a whole flow from it: opening one file per hit
costs more than the rest of the task run (measured in benchmarks/RESULTS.md).

Reading: the first look-up for a task loads that task's index (and its inline values, up to a
total of ``BULK_LOAD_BYTES``) in one query; later look-ups are served from memory. Once the
index is older than ``REFRESH_AFTER_S`` it is checked again (keys and times only, one query):
it loses what other processes cleared or replaced (the side panel, ``flowbook cache clear``)
and learns which keys they added. A key that was not in the database when the index was loaded
or checked is a miss without a query (a cold cache of 10,000 calls would otherwise cost 10,000
look-ups), so an entry another process writes is used here at the latest ``REFRESH_AFTER_S``
seconds later. A key added elsewhere, an entry the index thinks expired, or a value that cannot
be read is checked against the database, so entries written, refreshed or cleared by other
processes are seen.

Every value carries the CRC-32 checksum of its pickled bytes in its index row, whether the
bytes are in the row or in a file. Bytes read from a file are checked at every read; bytes kept
in memory (loaded with the index) are checked once, on their first use, since memory is not
where they change. An entry whose value is missing, truncated, corrupt or does not match its
checksum is a miss with a ``CacheKeyWarning`` naming the task and the file (or the key, for a
value in the row); the entry is removed and the task runs. Rows written before checksums were
kept (schema version 3 and older) have none and are read unchecked.

A value file that cannot be written (a full disk, a read-only results directory) leaves the
call uncached: the task run completes with its value, and one ``CacheKeyWarning`` names the
file and the error; later puts that fail the same way stay quiet until a write succeeds again.

Misses: the engine reports each one (``missed``) with what the key is made of. Whether the
look-up found an expired entry is read from the in-memory index (``get`` just fetched it); the
rest is queued for the writer, which keeps the latest miss of each task in ``cache_misses``.
The parts of the key are also written with the entry that the call then stores.
"""

from __future__ import annotations

import hashlib
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, func, select

from flowbook.caching.backend import CacheEntry, pickled_for_cache
from flowbook.caching.keys import CacheKeyWarning
from flowbook.store import results
from flowbook.store.schema import cache_entries

if TYPE_CHECKING:
    from flowbook.caching.keys import CacheKeyContext, KeyParts
    from flowbook.store.store import Store

__all__ = ["INLINE_RESULT_BYTES", "StoreCache"]

INLINE_RESULT_BYTES = 64 * 1024
BULK_LOAD_BYTES = 32 * 1024 * 1024
REFRESH_AFTER_S = 2.0


class _Indexed:
    """What this process knows of one entry. ``data`` is None when not loaded (or in a file).

    ``written`` is False for an entry this process put until the store writer has committed
    it: until then its absence from the database means nothing. ``checked`` is True once
    ``data`` was found to match ``checksum`` (or was made here).
    """

    __slots__ = ("checked", "checksum", "created", "data", "expires", "file", "hits", "written")

    def __init__(
        self,
        file: str | None,
        data: bytes | None,
        created: float,
        expires: float | None,
        hits: int,
        checksum: str | None,
        written: bool = True,
        checked: bool = False,
    ) -> None:
        self.file, self.data = file, data
        self.created, self.expires, self.hits = created, expires, hits
        self.checksum = checksum
        self.written = written
        self.checked = checked

    def mark_written(self) -> None:
        self.written = True


class _TaskIndex:
    __slots__ = ("elsewhere", "entries", "loaded_at")

    def __init__(self, entries: dict[str, _Indexed]) -> None:
        self.entries = entries
        # keys the database had at the last check that the entries lack (added elsewhere)
        self.elsewhere: set[str] = set()
        self.loaded_at = time.monotonic()


# what _indexed returns for a key the database did not have at the index's last check
_ABSENT = object()


# One statement object for each kind of query: SQLAlchemy then finds its compiled form at once
# (building a new select() per call costs more than the database's work).
_MINE = cache_entries.c.task_key == bindparam("task_key")
_INLINE_TOTAL = select(func.coalesce(func.sum(cache_entries.c.size), 0)).where(
    _MINE, cache_entries.c.result_file.is_(None)
)
_ENTRIES, _ENTRY_SIZES = (
    select(
        cache_entries.c.key,
        cache_entries.c.result_file,
        value,
        cache_entries.c.created,
        cache_entries.c.expires,
        cache_entries.c.hits,
        cache_entries.c.checksum,
    ).where(_MINE)
    for value in (cache_entries.c.value, cache_entries.c.size)
)
_FETCH = select(
    cache_entries.c.result_file,
    cache_entries.c.value,
    cache_entries.c.created,
    cache_entries.c.expires,
    cache_entries.c.hits,
    cache_entries.c.checksum,
).where(
    and_(
        cache_entries.c.task_key == bindparam("task_key"),
        cache_entries.c.key == bindparam("key"),
    )
)


class StoreCache:
    """``CacheBackend`` over the run store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._index: dict[str, _TaskIndex] = {}
        # the errno of the last value file that could not be written, until one is written:
        # a full disk warns once, not once per cached call
        self._write_failed: int | None = None

    # -- CacheBackend ----------------------------------------------------------------------------
    def get(self, task_key: str, key: str) -> CacheEntry | None:
        now = time.time()
        entry = self._indexed(task_key, key)
        if entry is _ABSENT:
            return None
        if entry is None or (entry.expires is not None and now >= entry.expires):
            entry = self._fetch(task_key, key)
            if entry is None or (entry.expires is not None and now >= entry.expires):
                return None
        try:
            value = self._value(task_key, key, entry)
        except results.ResultError as exc:
            fresh = self._fetch(task_key, key)
            if fresh is None:
                return None  # cleared meanwhile by someone else: an ordinary miss
            if fresh.file != entry.file or fresh.created != entry.created:
                return self.get(task_key, key)  # replaced meanwhile: read the new value
            warnings.warn(
                f"the cached result of task {task_key.rsplit(':', 1)[-1]!r} is unusable "
                f"({exc}); the entry is removed and the task runs again",
                CacheKeyWarning,
                stacklevel=3,
            )
            self._forget(task_key, key)
            if entry.file is not None:
                # now, not later: the run about to happen writes a file of the same name
                results.remove_file(self.store.results_dir / entry.file)
            self.store.writer.put(("cache_delete", task_key, key))
            return None
        entry.hits += 1
        self.store.writer.put(("cache_hit", task_key, key))
        return CacheEntry(task_key, key, value, entry.created, entry.expires, entry.hits)

    def put(
        self, task_key: str, key: str, value: Any, expires_s: float | None, **info: Any
    ) -> None:
        data = pickled_for_cache(value, info.get("task_name") or task_key)
        if data is None:
            return
        name: str | None = None
        inline: bytes | None = data
        if len(data) > INLINE_RESULT_BYTES:
            digest = hashlib.sha256(f"{task_key}\0{key}".encode()).hexdigest()
            name = f"cache/{digest}.pkl"
            if not self._write_value(name, data, info.get("task_name") or task_key):
                return
            inline = None
        checksum = results.checksum(data)
        now = time.time()
        if task_key not in self._index:
            # (a refresh_cache call puts without a look-up first) the index must exist, or the
            # next look-up would load it from a database the writer has not updated yet
            self._load(task_key)
        entry = _Indexed(name, inline, now, expires_s, 0, checksum, written=False, checked=True)
        with self._lock:
            index = self._index.get(task_key)
            if index is not None:
                index.entries[key] = entry
        self.store.writer.put(
            (
                "cache_put",
                {
                    "task_key": task_key,
                    "key": key,
                    "task_name": info.get("task_name") or task_key.rsplit(":", 1)[-1],
                    "flow_name": info.get("flow_name"),
                    "value": inline,
                    "result_file": name,
                    "size": len(data),
                    "checksum": checksum,
                    "created": now,
                    "expires": expires_s,
                    "hits": 0,
                    "input_preview": info.get("input_preview"),
                    # KeyParts or None; the writer turns it into JSON on its own thread
                    "key_parts": info.get("key_parts"),
                    # not a column: marked written by the writer once committed
                    "_entry": entry,
                },
            )
        )

    def missed(self, context: CacheKeyContext, key: str, key_parts: KeyParts | None) -> None:
        task = context.task
        task_key = task.task_key
        now = time.time()
        cause: str | None = None
        expired_at: float | None = None
        if task._refresh_cache:
            cause = "refresh"
        else:
            index = self._index.get(task_key)
            seen = index.entries.get(key) if index is not None else None
            if seen is not None and seen.expires is not None and now >= seen.expires:
                cause, expired_at = "expired", seen.expires
        flow_run = context.flow_run
        self.store.writer.put(
            (
                "cache_miss",
                {
                    "task_key": task_key,
                    "key": key,
                    "task_name": task.name,
                    "flow_name": flow_run.flow.name if flow_run is not None else None,
                    "task_run_id": context.task_run.id,
                    "missed_at": now,
                    "cause": cause,
                    "expired_at": expired_at,
                    "key_parts": key_parts,
                },
            )
        )

    def clear(self, task_key: str | None = None) -> int:
        from flowbook.store.queries import clear_cache

        self.forget_all()
        return clear_cache(self.store, task_key=task_key, all=task_key is None)

    def forget_all(self) -> None:
        """Drop the in-memory index (after another API changed the entries)."""
        with self._lock:
            self._index.clear()

    # -- values ----------------------------------------------------------------------------------
    def _value(self, task_key: str, key: str, entry: _Indexed) -> Any:
        if entry.file is not None:
            return results.read_file(self.store.results_dir / entry.file, entry.checksum)
        data = entry.data
        if data is None:
            data, checksum = self._select_value(task_key, key)
            results.verify(data, checksum, _in_row(key))
        elif not entry.checked:
            results.verify(data, entry.checksum, _in_row(key))
            entry.checked = True
        return results.loads(data)

    def _select_value(self, task_key: str, key: str) -> tuple[bytes, str | None]:
        c = cache_entries.c
        with self.store.engine.connect() as conn:
            row = conn.execute(
                select(c.value, c.checksum).where(and_(c.task_key == task_key, c.key == key))
            ).first()
        if row is None or not row[0]:
            raise results.ResultError("the stored value is gone")
        return bytes(row[0]), row[1]

    def _write_value(self, name: str, data: bytes, task_name: str) -> bool:
        """Write a value file; False (warning once per kind of failure) if it cannot be."""
        path = self.store.results_dir / name
        try:
            results.write_file(path, data)
        except OSError as exc:
            if self._write_failed != exc.errno:
                self._write_failed = exc.errno
                warnings.warn(
                    f"the result of task {task_name!r} is not cached: its value file "
                    f"{exc.filename or path} cannot be written ({exc.strerror or exc}); the "
                    "task run goes on with its value. Later values that cannot be written "
                    "are not cached either, without another warning until a write succeeds",
                    CacheKeyWarning,
                    stacklevel=4,
                )
            return False
        self._write_failed = None
        return True

    # -- index -----------------------------------------------------------------------------------
    def _indexed(self, task_key: str, key: str) -> Any:
        """The index's entry for ``key``; None if it must be looked up in the database, and
        ``_ABSENT`` if the database did not have it at the index's last check."""
        index = self._index.get(task_key)
        if index is None:
            index = self._load(task_key)
        elif time.monotonic() - index.loaded_at > REFRESH_AFTER_S:
            # one thread checks; the others (a map's workers) go on with the index meanwhile
            with self._lock:
                due = time.monotonic() - index.loaded_at > REFRESH_AFTER_S
                if due:
                    index.loaded_at = time.monotonic()
            if due:
                self._revalidate(task_key, index)
        entry = index.entries.get(key)
        if entry is None and key not in index.elsewhere:
            return _ABSENT
        return entry

    def _revalidate(self, task_key: str, index: _TaskIndex) -> None:
        """Drop what other processes removed or replaced since the index was read.

        One query of keys and times (no values); entries added elsewhere are read one by one
        when asked for (``get`` fetches a key the index lacks).
        """
        c = cache_entries.c
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(c.key, c.created).where(c.task_key == task_key)).all()
        current = {r[0]: r[1] for r in rows}
        with self._lock:
            gone = [
                k
                for k, e in index.entries.items()
                if (k in current and current[k] != e.created)  # replaced elsewhere
                or (k not in current and e.written)  # removed elsewhere
            ]
            for k in gone:
                del index.entries[k]
            index.elsewhere = {k for k in current if k not in index.entries}
            index.loaded_at = time.monotonic()

    def _load(self, task_key: str) -> _TaskIndex:
        params = {"task_key": task_key}
        with self.store.engine.connect() as conn:
            inline_total = conn.execute(_INLINE_TOTAL, params).scalar()
            with_values = int(inline_total or 0) <= BULK_LOAD_BYTES
            rows = conn.execute(_ENTRIES if with_values else _ENTRY_SIZES, params).all()
        entries = {
            r[0]: _Indexed(
                r[1], bytes(r[2]) if with_values and r[2] else None, r[3], r[4], r[5], r[6]
            )
            for r in rows
        }
        index = _TaskIndex(entries)
        with self._lock:
            # entries this process put that the writer has not committed yet stay known
            old = self._index.get(task_key)
            if old is not None:
                for k, e in old.entries.items():
                    if k not in entries and not e.written:
                        entries[k] = e
            self._index[task_key] = index
        return index

    def _fetch(self, task_key: str, key: str) -> _Indexed | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(_FETCH, {"task_key": task_key, "key": key}).first()
        if row is None:
            self._forget(task_key, key)
            return None
        entry = _Indexed(row[0], bytes(row[1]) if row[1] else None, row[2], row[3], row[4], row[5])
        with self._lock:
            index = self._index.get(task_key)
            if index is not None:
                index.entries[key] = entry
                index.elsewhere.discard(key)
        return entry

    def _forget(self, task_key: str, key: str) -> None:
        with self._lock:
            index = self._index.get(task_key)
            if index is not None:
                index.entries.pop(key, None)
                index.elsewhere.discard(key)


def _in_row(key: str) -> str:
    return f"the value kept in its index row for key {key!r}"
