"""Settings, read from ``FLOWBOOK_*`` environment variables when first needed.

``get_settings()`` caches them; ``reload_settings()`` reads the environment again (tests and
notebooks that change a variable call it). Values are checked when read, and a bad one is an
error naming the variable, its value and what it accepts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

__all__ = ["Settings", "get_settings", "reload_settings"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_CONSOLE = ("auto", "on", "off")


@dataclass(frozen=True)
class Settings:
    """flowbook's settings.

    - ``logging_level`` (``FLOWBOOK_LOGGING_LEVEL``, default ``INFO``): run log lines below this
      level are dropped, and the engine's own lines (created, finished) are INFO.
    - ``console`` (``FLOWBOOK_CONSOLE``, default ``auto``): print run log lines to stderr in
      the ``12:00:00.000 | INFO    | Task run 'x-0' - ...`` format. ``auto`` prints unless a
      notebook front end shows the runs instead; ``on`` always; ``off`` never.
    """

    logging_level: str = "INFO"
    console: str = "auto"

    @property
    def logging_level_no(self) -> int:
        return logging.getLevelName(self.logging_level)  # type: ignore[no-any-return]


def _read(name: str, default: str, allowed: tuple[str, ...], *, upper: bool) -> str:
    raw = os.environ.get(name, default).strip()
    value = raw.upper() if upper else raw.lower()
    if value not in allowed:
        raise ValueError(
            f"environment variable {name}={raw!r} is not valid; use one of {', '.join(allowed)}"
        )
    return value


def _from_env() -> Settings:
    return Settings(
        logging_level=_read("FLOWBOOK_LOGGING_LEVEL", "INFO", _LEVELS, upper=True),
        console=_read("FLOWBOOK_CONSOLE", "auto", _CONSOLE, upper=False),
    )


_current: Settings | None = None


def get_settings() -> Settings:
    global _current
    if _current is None:
        _current = _from_env()
    return _current


def reload_settings() -> Settings:
    """Read the environment again and apply the result to logging and the console."""
    global _current
    _current = _from_env()
    from flowbook import logging as fb_logging

    fb_logging.apply_settings(_current)
    return _current
