"""The task cache: ``entries`` and ``clear``.

import flowbook.cache
flowbook.cache.entries(task="hello_task")
flowbook.cache.clear(expired=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowbook.store.queries import CacheEntryInfo

if TYPE_CHECKING:
    from flowbook.store import Store

__all__ = ["CacheEntryInfo", "clear", "entries"]


def _store() -> Store:
    from flowbook.store import StoreError, get_store

    store = get_store()
    if store is None:
        raise StoreError(
            "the cache is in memory because FLOWBOOK_STORE=off; unset it to keep a run store"
        )
    return store


def entries(task: str | None = None, flow: str | None = None) -> list[CacheEntryInfo]:
    """Cache entries, newest first, optionally of one task or one flow."""
    from flowbook.store.queries import cache_entries_info

    return cache_entries_info(_store(), task=task, flow=flow)


def clear(
    task: str | None = None,
    flow: str | None = None,
    expired: bool = False,
    all: bool = False,
) -> int:
    """Delete cache entries of a task, of a flow, the expired ones, or all; returns the count."""
    from flowbook.store.queries import clear_cache

    return clear_cache(_store(), task=task, flow=flow, expired=expired, all=all)
