"""Values for the Dask batching tests that workers import by reference (plain ``pickle``
can then serialize them on a worker)."""

from __future__ import annotations

import enum
from typing import Any

# objects a task run returned, by name: in-process workers hand back the object itself
RETURNED: dict[str, Any] = {}


class Holder:
    """An object whose ``dask.sizeof`` is a few dozen bytes whatever it holds."""

    def __init__(self, size: int) -> None:
        self.data = b"x" * size


class Level(enum.IntEnum):
    NOTE = 25


class Shout(str):
    """A ``str`` subclass, as ``markupsafe.Markup`` is."""
