"""Settings, read from ``FLOWBOOK_*`` environment variables when first needed.

``get_settings()`` caches them; ``reload_settings()`` reads the environment again and applies
the result (logging, console, store). A bad value is an error naming the variable, its value
and what it accepts.

| variable | default | meaning |
|---|---|---|
| ``FLOWBOOK_HOME`` | ``~/.flowbook`` | where the store lives (created on first use) |
| ``FLOWBOOK_DATABASE_URL`` | SQLite in the home | a SQLAlchemy URL, e.g. PostgreSQL |
| ``FLOWBOOK_RESULTS_DIR`` | ``<home>/results`` | result and cache files |
| ``FLOWBOOK_STORE`` | ``on`` | ``off`` keeps runs and the cache in memory only |
| ``FLOWBOOK_LOG_RETENTION_DAYS`` | ``30`` | older log lines are deleted when a store opens |
| ``FLOWBOOK_LOGGING_LEVEL`` | ``INFO`` | run log lines below this level are dropped |
| ``FLOWBOOK_CONSOLE`` | ``auto`` | print run lines to stderr: ``on``, ``off``, ``auto`` |
| ``FLOWBOOK_GC_FREEZE`` | ``on`` | keep the garbage collector off older objects during runs |
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PositiveFloat

__all__ = ["Settings", "get_settings", "reload_settings"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SWITCH = ("on", "off")
_CONSOLE = ("auto", "on", "off")


class Settings(BaseModel):
    """flowbook's settings (see the module docstring for the variables), validated by pydantic.

    This module is imported when the first run starts, not by ``import flowbook``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path
    database_url: str | None = None
    results_dir: Path
    store: Literal["on", "off"] = "on"
    log_retention_days: PositiveFloat | None = 30.0
    logging_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    console: Literal["auto", "on", "off"] = "auto"
    gc_freeze: Literal["on", "off"] = "on"

    @property
    def logging_level_no(self) -> int:
        return logging.getLevelName(self.logging_level)  # type: ignore[no-any-return]

    @property
    def store_url(self) -> str:
        """The database URL: ``FLOWBOOK_DATABASE_URL``, or SQLite in the home."""
        return self.database_url or f"sqlite:///{self.home / 'flowbook.db'}"


def _choice(name: str, default: str, allowed: tuple[str, ...], *, upper: bool = False) -> str:
    raw = os.environ.get(name, default).strip()
    value = raw.upper() if upper else raw.lower()
    if value not in allowed:
        raise ValueError(
            f"environment variable {name}={raw!r} is not valid; use one of {', '.join(allowed)}"
        )
    return value


def _path(name: str, default: str | None) -> Path | None:
    raw = os.environ.get(name, default or "").strip()
    if not raw:
        return None
    return Path(raw).expanduser().absolute()


def _retention() -> float | None:
    raw = os.environ.get("FLOWBOOK_LOG_RETENTION_DAYS", "30").strip()
    if raw.lower() in ("", "none", "forever"):
        return None
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not days > 0:
        raise ValueError(
            f"environment variable FLOWBOOK_LOG_RETENTION_DAYS={raw!r} is not valid; use a "
            "number of days > 0, or 'forever'"
        )
    return days


def _from_env() -> Settings:
    home = _path("FLOWBOOK_HOME", "~/.flowbook")
    assert home is not None
    options: dict[str, Any] = {
        "home": home,
        "database_url": os.environ.get("FLOWBOOK_DATABASE_URL", "").strip() or None,
        "results_dir": _path("FLOWBOOK_RESULTS_DIR", None) or home / "results",
        "store": _choice("FLOWBOOK_STORE", "on", _SWITCH),
        "log_retention_days": _retention(),
        "logging_level": _choice("FLOWBOOK_LOGGING_LEVEL", "INFO", _LEVELS, upper=True),
        "console": _choice("FLOWBOOK_CONSOLE", "auto", _CONSOLE),
        "gc_freeze": _choice("FLOWBOOK_GC_FREEZE", "on", _SWITCH),
    }
    return Settings(**options)


_current: Settings | None = None


def get_settings() -> Settings:
    global _current
    if _current is None:
        _current = _from_env()
    return _current


def reload_settings() -> Settings:
    """Read the environment again and apply the result to logging, the console and the store."""
    global _current
    _current = _from_env()
    from flowbook._setup import apply_settings

    apply_settings(_current)
    return _current
