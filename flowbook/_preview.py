"""Short, safe previews of values for records and displays.

A preview never calls an arbitrary ``__repr__`` (a large DataFrame's takes long): built-in
values are shown with ``reprlib``'s limits, other objects by their type and shape.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import json
import pathlib
import reprlib
import uuid
from collections.abc import Iterable
from typing import Any

from flowbook.states import DeferredResult

__all__ = ["pairs_preview", "parameters_preview", "preview"]

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_PLAIN = (int, float, bool, str, bytes, type(None), list, tuple, dict, set, frozenset)
# standard-library values whose repr is short, fast and tells the value (a subclass that
# brings its own __repr__ is shown by its type, like any other object)
_VALUE_REPRS: frozenset[Any] = frozenset(
    kind.__repr__
    for kind in (
        datetime.date,
        datetime.datetime,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
        decimal.Decimal,
        fractions.Fraction,
        uuid.UUID,
        pathlib.PurePath,
        complex,
        enum.Enum,
        range,
    )
)


def preview(value: Any) -> str:
    """A short text for a value, without calling an arbitrary (maybe slow) ``__repr__``."""
    if isinstance(value, _PLAIN):
        return _repr.repr(value)
    if type(value).__repr__ in _VALUE_REPRS:
        shown = repr(value)
        return shown if len(shown) <= 80 else shown[:38] + "..." + shown[-38:]
    if isinstance(value, DeferredResult):
        return value.preview or "<result on the Dask cluster>"
    kind = type(value)
    shape = getattr(value, "shape", None)
    suffix = f" shape={tuple(shape)}" if isinstance(shape, tuple) else ""
    return f"<{kind.__module__}.{kind.__qualname__}{suffix}>"


_SCALARS = frozenset({int, float, bool, type(None)})
_quote = json.encoder.encode_basestring_ascii


def parameters_preview(params: dict[str, Any]) -> str:
    """Parameters as a JSON object of their previews (built by hand: it runs per task run)."""
    return pairs_preview(params.items())


def pairs_preview(pairs: Iterable[tuple[str, Any]]) -> str:
    """``parameters_preview`` of ``(name, value)`` pairs."""
    parts = []
    for name, value in pairs:
        kind = type(value)
        if kind in _SCALARS or (kind is str and len(value) <= 80):
            shown = repr(value)
        else:
            shown = preview(value)
        parts.append(f"{_quote(name)}: {_quote(shown)}")
    return "{" + ", ".join(parts) + "}"
