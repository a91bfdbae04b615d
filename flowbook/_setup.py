"""Applying the settings: logging, the console printer and the run store.

Done once, lazily, when the first run starts (so ``import flowbook`` stays cheap and touches
no file), and again by ``flowbook.settings.reload_settings()``. If the store cannot be opened
(an unwritable ``FLOWBOOK_HOME``), the error reaches the caller and the next run tries again.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowbook.settings import Settings

__all__ = ["apply_settings", "ensure_configured", "forget_configured", "mark_configured"]

_configured = False
_lock = threading.Lock()


def ensure_configured() -> None:
    if _configured:
        return
    with _lock:
        if not _configured:
            from flowbook.settings import get_settings

            apply_settings(get_settings())


def apply_settings(settings: Settings) -> None:
    global _configured
    import sys

    from flowbook import console
    from flowbook import logging as fb_logging

    _configured = False  # until the store is open: a failure is retried by the next run
    fb_logging.install(settings)
    console.configure(settings)
    if settings.store == "on" or "flowbook.store" in sys.modules:
        # only a store that is (or was) on costs the import of SQLAlchemy
        from flowbook import store

        store.configure(settings)
    _configured = True


def mark_configured() -> None:
    """Treat this process as configured without applying the settings.

    For Dask worker processes: their task runs report to the kernel that submitted them, so
    they must not open the store or print run logs themselves.
    """
    global _configured
    _configured = True


def forget_configured() -> None:
    """Apply the settings again at the next run (a forked child whose store stayed the
    parent's)."""
    global _configured, _lock
    _lock = threading.Lock()
    _configured = False
