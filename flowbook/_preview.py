"""Short, safe previews of values for records and displays.

A preview never calls an arbitrary ``__repr__`` (a large DataFrame's takes long), at the top
or inside a container: built-in values are shown as ``reprlib`` would show them (at most 8
items a container, 6 levels, 80 characters a string), standard-library values by their own
short repr, other objects by their type and shape.

Containers are walked with an explicit stack, so no value is too deep to preview, and the
text stops growing at ``_MAX_CHARS`` however wide the value is. A container met again inside
itself is shown as ``[...]`` (``{...}``, ``(...)``), as ``repr`` shows it.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import heapq
import itertools
import json
import pathlib
import reprlib
import uuid
from collections.abc import Iterable
from typing import Any, Final

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
        enum.Flag,
        range,
    )
)
# A preview longer than this is cut (with "..."), whatever the value's width and depth.
_MAX_CHARS: Final = 400
_FILL: Final = "..."


def preview(value: Any) -> str:
    """A short text for a value, without calling an arbitrary (maybe slow) ``__repr__``."""
    text = _leaf(value)
    if text is not None:
        return text
    return _render(value)


def _cut(shown: str) -> str:
    return shown if len(shown) <= 80 else shown[:38] + _FILL + shown[-38:]


def _int_repr(value: int) -> str:
    try:
        return int.__repr__(value)
    except ValueError:  # more digits than int -> str allows
        return f"<int of {value.bit_length()} bits>"


def _int_text(value: int) -> str:
    # reprlib's rule for long numbers, without calling a subclass's __repr__
    shown = _int_repr(value)
    limit = _repr.maxlong
    if len(shown) <= limit:
        return shown
    head = (limit - 3) // 2
    return shown[:head] + _FILL + shown[len(shown) - (limit - 3 - head) :]


def _str_text(value: str) -> str:
    return _repr.repr_str(value, 1)


def _other_text(value: Any) -> str:
    return _repr.repr_instance(value, 1)  # a built-in repr (float, bool, None, bytes), cut


# exact types shown by a built-in repr: no lookup beyond this dict
_ATOM_TEXT: Final[dict[type, Any]] = {
    str: _str_text,
    int: _int_text,
    float: _other_text,
    bool: _other_text,
    bytes: _other_text,
    type(None): _other_text,
}


def _leaf(value: Any) -> str | None:
    """The preview of a value that is not shown item by item; None for containers."""
    kind = type(value)
    fast = _ATOM_TEXT.get(kind)
    if fast is not None:
        text: str = fast(value)
        return text
    if kind.__repr__ in _VALUE_REPRS:
        return _cut(repr(value))
    if isinstance(value, _PLAIN):
        if kind in _CONTAINERS or isinstance(value, (list, tuple, dict, set, frozenset)):
            return None
        # A subclass of an atom: shown by its base type's repr, its own is not called.
        if isinstance(value, str):
            return _repr.repr_str(str.__str__(value), 1)
        if isinstance(value, int):
            return _int_text(value)
        return _cut(float.__repr__(value) if isinstance(value, float) else bytes.__repr__(value))
    if isinstance(value, DeferredResult):
        return value.preview or "<result on the Dask cluster>"
    shape = getattr(value, "shape", None)
    suffix = f" shape={tuple(shape)}" if isinstance(shape, tuple) else ""
    return f"<{kind.__module__}.{kind.__qualname__}{suffix}>"


_CONTAINERS: Final = frozenset({list, tuple, dict, set, frozenset})
_BASE_REPRS: Final = frozenset(kind.__repr__ for kind in _CONTAINERS)


class _Close:
    """The end of a container on the stack: its closing text, and its id to forget."""

    __slots__ = ("key", "text")

    def __init__(self, key: int, text: str) -> None:
        self.key = key
        self.text = text


def _sorted_head(items: Any, count: int) -> list[Any]:
    # reprlib shows sets and dict keys sorted when they can be; the smallest ``count`` are
    # all it shows, and finding them does not sort the whole container.
    try:
        return sorted(items) if len(items) <= count else heapq.nsmallest(count, items)
    except Exception:
        return list(itertools.islice(items, count))


_ITEMS, _PAIRS, _FIELDS = 0, 1, 2


def _parts(value: Any) -> tuple[str, str, list[Any], bool, int]:
    """How a container is shown: (opening, closing, items shown, more left, how).

    ``how`` is _ITEMS (values), _PAIRS (``(key, value)`` of a mapping) or _FIELDS
    (``(name, value)`` of a namedtuple).
    """
    kind = type(value)
    custom = kind not in _CONTAINERS and kind.__repr__ not in _BASE_REPRS
    name = kind.__name__ if custom else ""
    if isinstance(value, dict):
        keys = _sorted_head(value, _repr.maxdict)
        opening, closing = ("{", "}") if not custom else (f"{name}({{", "})")
        return opening, closing, [(k, value[k]) for k in keys], len(value) > len(keys), _PAIRS
    if isinstance(value, list):
        items = value[: _repr.maxlist]
        opening, closing = ("[", "]") if not custom else (f"{name}([", "])")
        return opening, closing, items, len(value) > len(items), _ITEMS
    if isinstance(value, tuple):
        fields = getattr(kind, "_fields", None)
        more = len(value) > _repr.maxtuple
        if custom and isinstance(fields, tuple) and len(fields) == len(value):
            # a namedtuple: Point(x=1, y=2)
            shown = list(zip(fields, value, strict=True))[: _repr.maxtuple]
            return f"{name}(", ")", shown, more, _FIELDS
        items = list(value[: _repr.maxtuple])
        closing = ",)" if len(value) == 1 else ")"
        if custom:
            return f"{name}((", closing + ")", items, more, _ITEMS
        return "(", closing, items, more, _ITEMS
    limit = _repr.maxset if isinstance(value, set) else _repr.maxfrozenset
    items = _sorted_head(value, limit)
    if custom:
        opening, closing = f"{name}({{", "})"
    elif isinstance(value, set):
        opening, closing = "{", "}"
    else:
        opening, closing = "frozenset({", "})"
    return opening, closing, items, len(value) > len(items), _ITEMS


def _empty(value: Any, opening: str, closing: str) -> str:
    kind = type(value)
    if kind is set:
        return "set()"
    if kind is frozenset:
        return "frozenset()"
    if opening.endswith(("({", "([")):
        return opening[:-2] + "()"
    return opening + closing.removeprefix(",")


def _render(value: Any) -> str:
    """A container's preview, walked with an explicit stack (any depth, cycles as ``[...]``).

    The stack holds text (``str``), containers still to show (``(container, levels left)``)
    and the ends of open containers (``_Close``); a container whose shown items are all
    leaves becomes one text at once.
    """
    out: list[str] = []
    size = 0
    on_path: set[int] = set()
    stack: list[Any] = [(value, _repr.maxlevel)]
    while stack:
        entry = stack.pop()
        kind = type(entry)
        if kind is _Close:
            on_path.discard(entry.key)
            out.append(entry.text)
            continue
        if size > _MAX_CHARS:
            # Cut: only the ends of the open containers are still written.
            out.append(_FILL)
            stack = [closer for closer in stack if type(closer) is _Close]
            continue
        if kind is str:
            out.append(entry)
            size += len(entry)
            continue
        item, level = entry  # a container: leaves were made text when it was opened
        text = _open(item, level, on_path, stack)
        if text is None:
            continue
        out.append(text)
        size += len(text)
    return "".join(out)


def _open(item: Any, level: int, on_path: set[int], stack: list[Any]) -> str | None:
    """Show a container: its whole text if it is flat, else None with its pieces stacked."""
    opening, closing, shown, more, how = _parts(item)
    if not shown:
        return _empty(item, opening, closing)
    if level <= 0 or id(item) in on_path:
        # too deep to show, or the container itself again (a cycle)
        return opening + _FILL + closing.removeprefix(",")
    inner = level - 1
    # Runs of text between nested containers are joined, so the stack holds few entries.
    pieces: list[Any] = []
    text: list[str] = [opening]
    for position, member in enumerate(shown):
        if position:
            text.append(", ")
        if how == _PAIRS:
            key, member = member
            shown_key = _leaf(key)
            if shown_key is None:
                pieces.append("".join(text))
                pieces.append((key, inner))
                text = [": "]
            else:
                text.append(shown_key)
                text.append(": ")
        elif how == _FIELDS:
            field, member = member
            text.append(f"{field}=")
        shown_member = _leaf(member)
        if shown_member is None:
            pieces.append("".join(text))
            pieces.append((member, inner))
            text = []
        else:
            text.append(shown_member)
    if more:
        text.append(", " + _FILL)
    text.append(closing)
    if not pieces:
        return "".join(text)
    key = id(item)
    on_path.add(key)
    stack.append(_Close(key, "".join(text)))
    stack.extend(reversed(pieces))
    return None


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
        if kind is int:
            shown = _int_repr(value)
        elif kind in _SCALARS or (kind is str and len(value) <= 80):
            shown = repr(value)
        else:
            shown = preview(value)
        parts.append(f"{_quote(name)}: {_quote(shown)}")
    return "{" + ", ".join(parts) + "}"
