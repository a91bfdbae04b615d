"""Mock values for ``flowbook.runtime`` attributes: ``FLOWBOOK__RUNTIME__{SUBMODULE}__{KEY}``.

An attribute is read from the environment when it is accessed (runtime attributes are read
by user code only, never by the engine, so runs pay nothing for this). A variable for an
existing attribute gives a value of that attribute's type, as it is at that moment: ``bool``,
``int``, ``float``, ``str`` and ``datetime.datetime`` can be mocked (an attribute that is
``None`` there gives the string); other types (``dict``, ``tuple``) cannot, and say so. A
variable for a name the submodule does not have adds that name, as a string.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("not a boolean: use true or false")


def _to_datetime(text: str) -> datetime.datetime:
    given = text.strip()
    if given.endswith(("Z", "z")):  # fromisoformat accepts Z only from Python 3.11
        given = given[:-1] + "+00:00"
    parsed = datetime.datetime.fromisoformat(given)
    if parsed.tzinfo is None:  # a naive time is UTC, as the real values are
        return parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc)


_CASTS: dict[type, Callable[[str], Any]] = {
    bool: _to_bool,
    int: int,
    float: float,
    str: str,
    type(None): str,
    datetime.datetime: _to_datetime,
}


def env_name(submodule: str, attr: str) -> str:
    return f"FLOWBOOK__RUNTIME__{submodule.upper()}__{attr.upper()}"


def read(module: str, submodule: str, attr: str, fields: dict[str, Callable[[], Any]]) -> Any:
    """The value of ``flowbook.runtime.<submodule>.<attr>``: the mock value when the
    environment gives one, else the real value (``AttributeError`` for an unknown name
    without a mock)."""
    getter = fields.get(attr)
    name = env_name(submodule, attr)
    mocked = os.environ.get(name)
    if getter is None:
        if mocked is not None and not attr.startswith("__"):
            return mocked
        raise AttributeError(
            f"{module} has no attribute {attr!r}; available: {', '.join(sorted(fields))}"
        )
    real = getter()
    if mocked is None:
        return real
    cast = _CASTS.get(type(real))
    if cast is None:
        raise ValueError(
            f"{name}={mocked!r}: {module}.{attr} is a {type(real).__name__}, which cannot be "
            "mocked through an environment variable (only bool, int, float, str and datetime "
            "can); unset it and use pytest's monkeypatch instead"
        )
    try:
        return cast(mocked)
    except ValueError as exc:
        raise ValueError(
            f"{name}={mocked!r} cannot be read as the {type(real).__name__} that "
            f"{module}.{attr} is: {exc}"
        ) from None
