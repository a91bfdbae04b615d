"""The run store: flow runs, task runs, state history, logs and the cache, in SQLAlchemy.

SQLite in ``FLOWBOOK_HOME`` by default, another database through ``FLOWBOOK_DATABASE_URL``.
The store is an event subscriber: the engine never waits for it, except at the end of a flow
run, for that run's own rows. Importing this package imports SQLAlchemy; ``import flowbook``
does not import it.
"""

from __future__ import annotations

import threading

from flowbook.caching.backend import MemoryCache, set_cache_backend
from flowbook.settings import Settings, get_settings
from flowbook.store.database import StoreError
from flowbook.store.store import Store

__all__ = ["Store", "StoreError", "close_store", "configure", "get_store"]

_store: Store | None = None
_lock = threading.Lock()


def configure(settings: Settings) -> Store | None:
    """Open (or reopen) the store the settings describe; None when ``FLOWBOOK_STORE=off``."""
    global _store
    with _lock:
        if _store is not None:
            same = _store.url == settings.store_url and _store.results_dir == settings.results_dir
            if same and settings.store == "on":
                return _store
            _store.close()
            _store = None
            set_cache_backend(MemoryCache())
        if settings.store == "off":
            set_cache_backend(MemoryCache())
            return None
        store = Store(settings)
        store.attach()
        set_cache_backend(store.cache)
        _store = store
        return store


def get_store(open_if_needed: bool = True) -> Store | None:
    """The store of this process (opened from the settings on first use)."""
    if _store is None and open_if_needed:
        return configure(get_settings())
    return _store


def close_store() -> None:
    global _store
    with _lock:
        if _store is not None:
            _store.close()
            _store = None
            set_cache_backend(MemoryCache())
