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
| ``FLOWBOOK_STORE_WAIT`` | ``on`` | ``on``: a flow call returns once its rows are committed; |
| | | ``off``: it returns at once, its rows follow within about half a second |
| ``FLOWBOOK_LOG_RETENTION_DAYS`` | ``30`` | older log lines are deleted when a store opens |
| ``FLOWBOOK_RUN_RETENTION_DAYS`` | none (keep) | what ``flowbook gc`` deletes when given no |
| | | ``--older-than``: finished runs older than this |
| ``FLOWBOOK_LOGGING_LEVEL`` | ``INFO`` | run log lines below this level are dropped |
| ``FLOWBOOK_CONSOLE`` | ``auto`` | print run lines to stderr: ``on``, ``off``, ``auto`` |
| ``FLOWBOOK_GC_FREEZE`` | ``on`` | keep the garbage collector off older objects during runs |
| ``FLOWBOOK_LOGGING_LOG_PRINTS`` | ``false`` | ``log_prints`` of runs that do not set it |
| ``FLOWBOOK_LOGGING_EXTRA_LOGGERS`` | none | loggers (comma-separated) whose records in a run |
| | | become that run's log lines |
| ``FLOWBOOK_TASKS_DEFAULT_RETRIES`` | ``0`` | ``retries`` of tasks that do not set it |
| ``FLOWBOOK_TASKS_DEFAULT_RETRY_DELAY_SECONDS`` | ``0`` | ``retry_delay_seconds`` of tasks that |
| | | do not set it: seconds, or a comma-separated list of them |
| ``FLOWBOOK_TASKS_REFRESH_CACHE`` | ``false`` | ``refresh_cache`` of tasks that do not set it |

The last five are Prefect 3's ``PREFECT_LOGGING_LOG_PRINTS``, ``..._EXTRA_LOGGERS``,
``PREFECT_TASKS_DEFAULT_RETRIES``, ``..._RETRY_DELAY_SECONDS`` and ``..._REFRESH_CACHE``
(only the ``FLOWBOOK_`` names are read, as for the other settings), and are read where Prefect
reads them: the retry defaults when a task is decorated, the others when a run starts. Their
defaults are published (``_publish_defaults``) to the places the engine already looks, so a
task or run at the defaults does no more work per call than without them.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, NonNegativeFloat, NonNegativeInt, PositiveFloat

__all__ = ["Settings", "get_settings", "reload_settings"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SWITCH = ("on", "off")
_CONSOLE = ("auto", "on", "off")
_TRUE = ("true", "on", "1", "yes")
_FALSE = ("false", "off", "0", "no")
_MAX_DELAYS = 50  # as for retry_delay_seconds= on a task


class Settings(BaseModel):
    """flowbook's settings (see the module docstring for the variables), validated by pydantic.

    This module is imported when the first run starts, not by ``import flowbook``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path
    database_url: str | None = None
    results_dir: Path
    store: Literal["on", "off"] = "on"
    store_wait: Literal["on", "off"] = "on"
    log_retention_days: PositiveFloat | None = 30.0
    run_retention_days: PositiveFloat | None = None
    logging_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    console: Literal["auto", "on", "off"] = "auto"
    gc_freeze: Literal["on", "off"] = "on"
    logging_log_prints: bool = False
    logging_extra_loggers: tuple[str, ...] = ()
    tasks_default_retries: NonNegativeInt = 0
    tasks_default_retry_delay_seconds: NonNegativeFloat | tuple[NonNegativeFloat, ...] = 0.0
    tasks_refresh_cache: bool = False

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


def _retention(name: str = "FLOWBOOK_LOG_RETENTION_DAYS", default: str = "30") -> float | None:
    raw = os.environ.get(name, default).strip()
    if raw.lower() in ("", "none", "forever"):
        return None
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not days > 0:
        raise ValueError(
            f"environment variable {name}={raw!r} is not valid; use a "
            "number of days > 0, or 'forever'"
        )
    return days


def _flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip()
    if raw.lower() in _TRUE:
        return True
    if not raw or raw.lower() in _FALSE:
        return False
    raise ValueError(
        f"environment variable {name}={raw!r} is not valid; use true or false "
        "(or on/off, 1/0, yes/no)"
    )


def _retries() -> int:
    name = "FLOWBOOK_TASKS_DEFAULT_RETRIES"
    raw = os.environ.get(name, "").strip()
    if not raw:
        return 0
    try:
        retries = int(raw)
    except ValueError:
        retries = -1
    if retries < 0:
        raise ValueError(
            f"environment variable {name}={raw!r} is not valid; use a whole number of retries >= 0"
        )
    return retries


def _retry_delays() -> float | tuple[float, ...]:
    name = "FLOWBOOK_TASKS_DEFAULT_RETRY_DELAY_SECONDS"
    raw = os.environ.get(name, "").strip()
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        return 0.0
    try:
        delays = [float(p) for p in parts]
    except ValueError:
        delays = [-1.0]
    # ``not d >= 0`` also refuses nan; inf is refused as a delay nobody could wait out
    if any(not 0 <= d < float("inf") for d in delays) or len(delays) > _MAX_DELAYS:
        raise ValueError(
            f"environment variable {name}={raw!r} is not valid; use a number of seconds "
            f">= 0, or a comma-separated list of at most {_MAX_DELAYS} of them (one per retry)"
        )
    return delays[0] if len(delays) == 1 else tuple(delays)


def _extra_loggers() -> tuple[str, ...]:
    name = "FLOWBOOK_LOGGING_EXTRA_LOGGERS"
    raw = os.environ.get(name, "")
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    for logger in names:
        if logger == "flowbook" or logger.startswith("flowbook."):
            raise ValueError(
                f"environment variable {name}={raw!r} is not valid: {logger!r} is one of "
                "flowbook's own loggers, whose records are run log lines already; name the "
                "loggers of other libraries (e.g. dask,urllib3)"
            )
    return names


def _from_env() -> Settings:
    home = _path("FLOWBOOK_HOME", "~/.flowbook") or Path("~/.flowbook").expanduser()
    options: dict[str, Any] = {
        "home": home,
        "database_url": _database_url(),
        "results_dir": _path("FLOWBOOK_RESULTS_DIR", None) or home / "results",
        "store": _choice("FLOWBOOK_STORE", "on", _SWITCH),
        "store_wait": _choice("FLOWBOOK_STORE_WAIT", "on", _SWITCH),
        "log_retention_days": _retention(),
        "run_retention_days": _retention("FLOWBOOK_RUN_RETENTION_DAYS", "forever"),
        "logging_level": _choice("FLOWBOOK_LOGGING_LEVEL", "INFO", _LEVELS, upper=True),
        "console": _choice("FLOWBOOK_CONSOLE", "auto", _CONSOLE),
        "gc_freeze": _choice("FLOWBOOK_GC_FREEZE", "on", _SWITCH),
        "logging_log_prints": _flag("FLOWBOOK_LOGGING_LOG_PRINTS"),
        "logging_extra_loggers": _extra_loggers(),
        "tasks_default_retries": _retries(),
        "tasks_default_retry_delay_seconds": _retry_delays(),
        "tasks_refresh_cache": _flag("FLOWBOOK_TASKS_REFRESH_CACHE"),
    }
    return Settings(**options)


_current: Settings | None = None


def get_settings() -> Settings:
    global _current
    if _current is None:
        settings = _from_env()
        _publish_defaults(settings)
        _current = settings
    return _current


def task_defaults(
    retries: int | None, retry_delay_seconds: float | list[float] | None
) -> tuple[int, float | list[float]]:
    """A task's ``retries`` and ``retry_delay_seconds``: its own, or the settings' defaults
    (read when the task is decorated, as Prefect reads them)."""
    settings = get_settings()
    if retries is None:
        retries = settings.tasks_default_retries
    if retry_delay_seconds is None:
        delays = settings.tasks_default_retry_delay_seconds
        retry_delay_seconds = list(delays) if isinstance(delays, tuple) else delays
    return retries, retry_delay_seconds


def _publish_defaults(settings: Settings) -> None:
    """Put the run-time defaults where the engine looks anyway, so that reading them costs a
    run nothing: ``refresh_cache`` into every task that has none of its own (the engine reads
    ``task.refresh_cache`` either way), ``log_prints`` into a module global the engine reads
    only for a run with no ``log_prints`` of its own and no parent run to inherit it from."""
    from flowbook import _run_defaults
    from flowbook.tasks import _set_refresh_default

    _set_refresh_default(settings.tasks_refresh_cache)
    _run_defaults.log_prints = settings.logging_log_prints
    if settings.logging_log_prints:
        from flowbook.logging import enable_print_capture

        enable_print_capture()


def reload_settings() -> Settings:
    """Read the environment again and apply the result to logging, the console and the store."""
    global _current
    _current = _from_env()
    _publish_defaults(_current)
    from flowbook._setup import apply_settings

    apply_settings(_current)
    return _current
