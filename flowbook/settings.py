"""Settings, read from ``FLOWBOOK_*`` environment variables when first needed.

``get_settings()`` caches them; ``reload_settings()`` reads the environment again and applies
the result (logging, console, store). A bad value is an error naming the variable, its value
and what it accepts. A path variable that is set but empty counts as unset.

| variable | default | meaning |
|---|---|---|
| ``FLOWBOOK_HOME`` | ``~/.flowbook`` | where the store lives (created on first use, 0700) |
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
import re
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
    # set but empty (``FLOWBOOK_HOME=``) is the same as unset, as for XDG_DATA_HOME and the
    # other FLOWBOOK_* paths: the default applies
    raw = os.environ.get(name, "").strip() or (default or "")
    if not raw:
        return None
    return Path(raw).expanduser().absolute()


_URL_FORMS = (
    "a SQLAlchemy URL such as postgresql+psycopg://user:password@host:5432/dbname or "
    "sqlite:////absolute/path/flowbook.db, or unset it to use SQLite in FLOWBOOK_HOME"
)


def _database_url() -> str | None:
    raw = os.environ.get("FLOWBOOK_DATABASE_URL", "").strip()
    if not raw:
        return None
    # parsed here, not when the store opens, so that the error names the variable; only a
    # set variable costs the import of SQLAlchemy (the store imports it anyway)
    from sqlalchemy.engine import make_url

    try:
        url = make_url(raw)
    except Exception as exc:  # ArgumentError, and ValueError for a bad port
        raise ValueError(
            f"environment variable FLOWBOOK_DATABASE_URL={_hide_password(raw)!r} is not "
            f"valid ({exc}); give {_URL_FORMS}"
        ) from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return raw
    if url.get_backend_name() == "sqlite":
        # an in-memory database would vanish with each connection, and every process would
        # see a store of its own
        raise ValueError(
            f"environment variable FLOWBOOK_DATABASE_URL={raw!r} names an in-memory SQLite "
            f"database, which no other process or connection can see; give {_URL_FORMS}"
        )
    return raw


def _hide_password(raw: str) -> str:
    """``raw`` with anything between ``user:`` and ``@`` masked (it may hold a password)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", raw)


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
    home = _path("FLOWBOOK_HOME", "~/.flowbook") or Path("~/.flowbook").expanduser()
    options: dict[str, Any] = {
        "home": home,
        "database_url": _database_url(),
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
