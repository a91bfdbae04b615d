"""The persistent cache: result files in ``<results dir>/cache/``, the index in the database.

Reading is the hot part (a warm cache serves a whole flow). The first look-up for a task
loads that task's index rows in one query; later look-ups find their entry in memory and only
read the file. The in-memory index is trusted only for hits: a key it lacks, an entry it
thinks expired, or a file that is gone is checked against the database, so entries written,
refreshed or cleared by other processes are seen.

Writing pickles the value and writes the file on the calling thread (a cache entry must be
complete before anyone can find it), then queues the index row for the store writer.

A file that is missing, truncated or corrupt while its index row exists is a miss with a
``CacheKeyWarning`` naming the task and the file; the entry is removed and the task runs.
"""

from __future__ import annotations

import hashlib
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select

from flowbook.caching.backend import CacheEntry
from flowbook.caching.keys import CacheKeyWarning
from flowbook.store import results
from flowbook.store.schema import cache_entries

if TYPE_CHECKING:
    from flowbook.store.store import Store

__all__ = ["StoreCache"]


class _Indexed:
    __slots__ = ("created", "expires", "file", "hits")

    def __init__(self, file: str, created: float, expires: float | None, hits: int) -> None:
        self.file, self.created, self.expires, self.hits = file, created, expires, hits


class StoreCache:
    """``CacheBackend`` over the run store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._index: dict[str, dict[str, _Indexed]] = {}

    # -- CacheBackend ----------------------------------------------------------------------------
    def get(self, task_key: str, key: str) -> CacheEntry | None:
        entry = self._indexed(task_key, key)
        now = time.time()
        if entry is None or (entry.expires is not None and now >= entry.expires):
            entry = self._fetch(task_key, key)
            if entry is None or (entry.expires is not None and now >= entry.expires):
                return None
        try:
            value = results.read_file(self.store.results_dir / entry.file)
        except results.ResultError as exc:
            fresh = self._fetch(task_key, key)
            if fresh is None:
                return None  # cleared meanwhile by someone else: an ordinary miss
            if fresh.file != entry.file:
                return self.get(task_key, key)  # replaced meanwhile: read the new file
            warnings.warn(
                f"the cached result of task {task_key.rsplit(':', 1)[-1]!r} is unusable "
                f"({exc}); the entry is removed and the task runs again",
                CacheKeyWarning,
                stacklevel=3,
            )
            self._forget(task_key, key)
            self.store.writer.put(("cache_delete", task_key, key))
            return None
        entry.hits += 1
        self.store.writer.put(("cache_hit", task_key, key))
        return CacheEntry(task_key, key, value, entry.created, entry.expires, entry.hits)

    def put(
        self, task_key: str, key: str, value: Any, expires_s: float | None, **info: Any
    ) -> None:
        try:
            data = results.dumps(value)
        except results.ResultError as exc:
            warnings.warn(
                f"the result of task {info.get('task_name') or task_key!r} cannot be cached: {exc}",
                CacheKeyWarning,
                stacklevel=3,
            )
            return
        name = "cache/" + hashlib.sha256(f"{task_key}\0{key}".encode()).hexdigest() + ".pkl"
        results.write_file(self.store.results_dir / name, data)
        now = time.time()
        with self._lock:
            self._index.setdefault(task_key, {})[key] = _Indexed(name, now, expires_s, 0)
        self.store.writer.put(
            (
                "cache_put",
                {
                    "task_key": task_key,
                    "key": key,
                    "task_name": info.get("task_name") or task_key.rsplit(":", 1)[-1],
                    "flow_name": info.get("flow_name"),
                    "result_file": name,
                    "size": len(data),
                    "created": now,
                    "expires": expires_s,
                    "hits": 0,
                    "input_preview": info.get("input_preview"),
                },
            )
        )

    def clear(self, task_key: str | None = None) -> int:
        from flowbook.store.queries import clear_cache

        with self._lock:
            self._index.clear()
        return clear_cache(self.store, task_key=task_key, all=task_key is None)

    def forget_all(self) -> None:
        """Drop the in-memory index (after another API changed the entries)."""
        with self._lock:
            self._index.clear()

    # -- index -----------------------------------------------------------------------------------
    def _indexed(self, task_key: str, key: str) -> _Indexed | None:
        by_key = self._index.get(task_key)
        if by_key is None:
            by_key = self._load(task_key)
        return by_key.get(key)

    def _load(self, task_key: str) -> dict[str, _Indexed]:
        columns = (
            cache_entries.c.key,
            cache_entries.c.result_file,
            cache_entries.c.created,
            cache_entries.c.expires,
            cache_entries.c.hits,
        )
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(*columns).where(cache_entries.c.task_key == task_key)).all()
        by_key = {r.key: _Indexed(r.result_file, r.created, r.expires, r.hits) for r in rows}
        with self._lock:
            self._index[task_key] = by_key
        return by_key

    def _fetch(self, task_key: str, key: str) -> _Indexed | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(
                select(
                    cache_entries.c.result_file,
                    cache_entries.c.created,
                    cache_entries.c.expires,
                    cache_entries.c.hits,
                ).where(and_(cache_entries.c.task_key == task_key, cache_entries.c.key == key))
            ).first()
        if row is None:
            self._forget(task_key, key)
            return None
        entry = _Indexed(row.result_file, row.created, row.expires, row.hits)
        with self._lock:
            self._index.setdefault(task_key, {})[key] = entry
        return entry

    def _forget(self, task_key: str, key: str) -> None:
        with self._lock:
            self._index.get(task_key, {}).pop(key, None)
