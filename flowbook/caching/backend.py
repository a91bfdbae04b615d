"""Where cached task results live: the interface, and the in-process implementation.

The engine asks a ``CacheBackend`` for a key before running a cached task and gives it the
result after; when the look-up misses (or ``refresh_cache`` skips it) it tells the backend
with ``missed``, so a persistent backend can keep what the missed key was made of and explain
the miss later. ``MemoryCache`` keeps entries for the life of the process; a persistent
backend (the run store) implements the same four methods. Keys are namespaced by task
identity, so a custom ``cache_key_fn`` returning ``"4"`` for two different tasks never hands
one task the other's result.

Every hit hands out a value of its own: ``MemoryCache`` keeps the pickled bytes and unpickles
them per hit, as the run store does, so a caller that mutates what it got never changes what
later hits return. A value that cannot be pickled is therefore not cached (a
``CacheKeyWarning`` says so, as with the store): with the store on or off, the same calls hit.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from flowbook import _pickling

if TYPE_CHECKING:
    from flowbook.caching.keys import CacheKeyContext, KeyParts

__all__ = ["CacheBackend", "CacheEntry", "MemoryCache", "get_cache_backend", "set_cache_backend"]


@dataclass
class CacheEntry:
    task_key: str
    key: str
    value: Any
    created_s: float
    expires_s: float | None
    hits: int = field(default=0)

    def expired(self, now: float) -> bool:
        return self.expires_s is not None and now >= self.expires_s


class CacheBackend(Protocol):
    def get(self, task_key: str, key: str) -> CacheEntry | None:
        """The live (unexpired) entry for ``key`` of that task, counting a hit; else None."""

    def put(
        self, task_key: str, key: str, value: Any, expires_s: float | None, **info: Any
    ) -> None:
        """Store (or replace, which also resets the expiration) an entry.

        ``info`` may carry ``task_name``, ``flow_name`` and ``input_preview`` for listings,
        and ``key_parts`` (``KeyParts`` or None): what the key is made of.
        """

    def missed(self, context: CacheKeyContext, key: str, key_parts: KeyParts | None) -> None:
        """A call of ``context.task`` looked up ``key`` and missed, or skipped the look-up
        (``refresh_cache``). Called on the engine's thread: no I/O here."""

    def clear(self, task_key: str | None = None) -> int:
        """Remove the entries of one task, or all; returns how many were removed."""


def pickled_for_cache(value: Any, task: str) -> bytes | None:
    """``value`` pickled for a cache entry, or None (with a ``CacheKeyWarning`` naming the
    task) when it cannot be pickled: such a call is simply not cached."""
    try:
        return _pickling.dumps(value)
    except _pickling.ResultError as exc:
        from flowbook.caching.keys import CacheKeyWarning

        warnings.warn(
            f"the result of task {task!r} cannot be cached: {exc}", CacheKeyWarning, stacklevel=4
        )
        return None


class MemoryCache:
    """Cache entries in a dict, for the life of the process.

    Entries hold the pickled value (``CacheEntry.value`` is those bytes inside the cache);
    ``get`` returns a ``CacheEntry`` whose value is unpickled for that hit alone.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], CacheEntry] = {}
        self._lock = threading.Lock()

    def get(self, task_key: str, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get((task_key, key))
            if entry is None:
                return None
            if entry.expired(time.time()):
                del self._entries[(task_key, key)]
                return None
            entry.hits += 1
            hits = entry.hits
        # unpickled outside the lock: a large value must not hold up the other threads' hits
        try:
            value = _pickling.loads(entry.value)
        except _pickling.ResultError as exc:
            # (a class its pickle names by reference was deleted or renamed since the put)
            from flowbook.caching.keys import CacheKeyWarning

            warnings.warn(
                f"the cached result of task {task_key.rsplit(':', 1)[-1]!r} is unusable "
                f"({exc}); the entry is removed and the task runs again",
                CacheKeyWarning,
                stacklevel=3,
            )
            with self._lock:
                if self._entries.get((task_key, key)) is entry:
                    del self._entries[(task_key, key)]
            return None
        return CacheEntry(task_key, key, value, entry.created_s, entry.expires_s, hits)

    def put(
        self, task_key: str, key: str, value: Any, expires_s: float | None, **info: Any
    ) -> None:
        data = pickled_for_cache(value, info.get("task_name") or task_key)
        if data is None:
            return
        entry = CacheEntry(task_key, key, data, time.time(), expires_s)
        with self._lock:
            self._entries[(task_key, key)] = entry

    def missed(self, context: CacheKeyContext, key: str, key_parts: KeyParts | None) -> None:
        """Nothing to keep: misses are explained from the run store, which this cache is not
        (it serves ``FLOWBOOK_STORE=off``, where ``flowbook.cache`` has nothing to read)."""

    def clear(self, task_key: str | None = None) -> int:
        with self._lock:
            doomed = [k for k in self._entries if task_key is None or k[0] == task_key]
            for k in doomed:
                del self._entries[k]
        return len(doomed)

    def entries(self) -> list[CacheEntry]:
        """The entries, each with a value of its own (hits are not counted)."""
        with self._lock:
            kept = list(self._entries.values())
        out = []
        for e in kept:
            try:
                value = _pickling.loads(e.value)
            except _pickling.ResultError:
                continue  # unusable: the next get removes it, with a warning
            out.append(CacheEntry(e.task_key, e.key, value, e.created_s, e.expires_s, e.hits))
        return out


_backend: CacheBackend = MemoryCache()


def get_cache_backend() -> CacheBackend:
    return _backend


def set_cache_backend(backend: CacheBackend) -> CacheBackend:
    """Install ``backend``; returns the previous one."""
    global _backend
    previous, _backend = _backend, backend
    return previous
