"""The run store: flow runs, task runs, state history, logs and the cache, in SQLAlchemy.

SQLite in ``FLOWBOOK_HOME`` by default, another database through ``FLOWBOOK_DATABASE_URL``.
The store is an event subscriber: the engine never waits for it, except at the end of a flow
run, for that run's own rows. Importing this package imports SQLAlchemy; ``import flowbook``
does not import it.
"""

from __future__ import annotations

import os
import threading
import warnings

from flowbook.caching.backend import MemoryCache, set_cache_backend
from flowbook.settings import Settings, get_settings
from flowbook.store.database import StoreError, StoreReadOnlyError
from flowbook.store.store import Store

__all__ = ["Store", "StoreError", "StoreReadOnlyError", "close_store", "configure", "get_store"]

_store: Store | None = None
_lock = threading.Lock()
# the stores found read-only in this process, each warned about once
_warned_read_only: set[str] = set()


def configure(settings: Settings) -> Store | None:
    """Open (or reopen) the store the settings describe; None when ``FLOWBOOK_STORE=off``.

    A store that exists but cannot be written leaves the process without one: runs go on
    and return their results unrecorded, and one warning names the store. Every other
    error (an unusable ``FLOWBOOK_HOME``, a server that does not answer) is raised.
    """
    try:
        return _open(settings)
    except StoreReadOnlyError as exc:
        if settings.store_url not in _warned_read_only:
            _warned_read_only.add(settings.store_url)
            warnings.warn(
                f"runs in this process are not recorded: {exc}", RuntimeWarning, stacklevel=2
            )
        return None


def _open(settings: Settings) -> Store | None:
    global _store
    with _lock:
        if _store is not None:
            same = _store.url == settings.store_url and _store.results_dir == settings.results_dir
            if same and settings.store == "on":
                _store.writer.wait = settings.store_wait == "on"
                return _store
            _store.close()
            _store = None
            set_cache_backend(MemoryCache())
        if settings.store == "off":
            set_cache_backend(MemoryCache())
            return None
        try:
            store = Store(settings)
        except StoreReadOnlyError:
            set_cache_backend(MemoryCache())
            raise
        store.attach()
        set_cache_backend(store.cache)
        _store = store
        return store


def get_store(open_if_needed: bool = True) -> Store | None:
    """The store of this process (opened from the settings on first use).

    For readers (``flowbook.runs``, the command line, the Jupyter server): a store that
    cannot be written raises its ``StoreReadOnlyError`` here, since opening one writes.
    """
    if _store is None and open_if_needed:
        return _open(get_settings())
    return _store


def _leave_to_parent() -> None:
    """After a fork, in the child: the store open in the parent stays the parent's, and the
    child's next run opens one of its own (with its own writer thread and process record)."""
    global _store, _lock
    _lock = threading.Lock()
    store, _store = _store, None
    if store is not None:
        store.leave_to_parent()
        set_cache_backend(MemoryCache())
        from flowbook import _setup

        _setup.forget_configured()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_leave_to_parent)


def close_store() -> None:
    global _store
    with _lock:
        if _store is not None:
            _store.close()
            _store = None
            set_cache_backend(MemoryCache())
