"""Stable content hashing of Python values, the basis of task cache keys.

Design: a value is written as a canonical, type-tagged byte stream straight into one sha256
object. Every item is self-delimiting (a one-byte tag, then fixed-width numbers or a length
prefix), so the stream reads back unambiguously: values that differ in anything hashed give
different streams, and ``1``, ``1.0``, ``True`` and ``"1"`` differ by their tags. Nothing
depends on ``hash()``, ``id()`` or PYTHONHASHSEED except bookkeeping that never reaches the
output: dict entries and set elements are ordered by their own encoded bytes (or, when they
are all ``str`` or all ``int``, by value), so a hash is the same in every process and run.

Speed: exact built-in types are dispatched through one dict lookup on ``type(value)``; the
isinstance chain, the optional libraries (numpy, pandas, pydantic, looked up in
``sys.modules`` so they are never imported here) and the generic object path are only
reached for other values.

Depth: values a few levels deep are written by plain recursion, deeper levels by a walk
with its own stack (see ``_drive``), so a value nested 100,000 levels deep hashes like any
other, whatever the recursion limit; a container whose items are all atoms (numbers,
strings, ...) is written in one loop without touching that stack. A container or object met
again on its own path (``x = []; x.append(x)``) is written as a back-reference, the number
of levels up the path it points: equal structures give equal hashes in every process.
Shared references that are not cycles are written in full each time, so ``[a, a]`` hashes
like ``[a, copy(a)]``.

Choices worth knowing:

* floats are hashed by their IEEE-754 bits, so ``-0.0`` and ``0.0`` differ (they behave
  differently, e.g. under ``math.copysign``), while every NaN hashes alike, whatever its
  sign or payload, so a call with a NaN argument can hit the cache;
* ``Decimal`` is hashed by its string form, so ``Decimal("1.0")`` and ``Decimal("1.00")``
  differ, as they do when printed;
* functions and classes are identified by module and qualified name; functions that cannot
  be re-imported by that name (lambdas, nested functions, functions of ``__main__``, which
  is where notebook cells live) also contribute their bytecode, constants, defaults and
  closure values, so editing or re-parametrising them changes the hash;
* objects of other classes contribute their class identity (module and qualified name, never
  a file path or cell number) and their ``__getstate__()`` or ``__dict__`` and slots;
  objects whose state lives in C are hashed by their pickle, but only when pickling them
  twice gives the same bytes;
* numpy arrays are hashed by dtype, shape and raw C-order bytes (element by element for
  object and structured dtypes), so memory layout does not matter; pandas objects by their
  labels, index, dtypes and ``pandas.util.hash_pandas_object`` (64 bits per row).
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import datetime as dt
import enum
import functools
import hashlib
import importlib
import io
import operator
import struct
import sys
import threading
import types
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["UnhashableInputError", "stable_hash"]


# A path segment is (kind, text); see UnhashableInputError._render_path for the kinds.
_Segment = tuple[str, str]


class UnhashableInputError(TypeError):
    """A value has no stable content to hash, so it cannot be part of a cache key.

    The message names the offending type and, when the value sits inside a container or an
    object, where it sits (``nums[2]``, ``config.handler``, ``['my key']``).
    """

    def __init__(self, type_name: str, reason: str, path: Iterable[_Segment] = ()) -> None:
        self.type_name = type_name
        self.reason = reason
        # outermost segment last: containers add theirs while the error unwinds, innermost
        # first, and appending keeps that linear however deep the value is
        self._outward: list[_Segment] = list(path)[::-1]
        super().__init__(self._message())

    @property
    def path(self) -> str:
        """Where the value sits inside the hashed value ("" when it is the value itself)."""
        return self._render_path(self._outward[::-1])

    def _push(self, kind: str, text: str) -> None:
        # The happy path never pays for building paths; the message is brought up to date
        # by _finish (or when it is read).
        self._outward.append((kind, text))

    def _finish(self) -> UnhashableInputError:
        self.args = (self._message(),)
        return self

    @staticmethod
    def _render_path(segments: list[_Segment], first: bool = True) -> str:
        parts: list[str] = []
        for position, (kind, text) in enumerate(segments):
            if kind == "strkey":
                bare = first and position == 0 and text.isidentifier()
                parts.append(text if bare else f"[{text!r}]")
            elif kind in ("key", "index"):
                parts.append(f"[{text}]")
            elif kind == "attr":
                parts.append(f".{text}")
            else:
                parts.append(f"<{text}>")
        return "".join(parts)

    def _message(self) -> str:
        segments = self._outward[::-1]
        if len(segments) > 2 * _PATH_ENDS:
            # A value thousands of levels deep: its two ends say where to look.
            hidden = len(segments) - 2 * _PATH_ENDS
            where = (
                self._render_path(segments[:_PATH_ENDS])
                + f"...({hidden:,} levels)..."
                + self._render_path(segments[-_PATH_ENDS:], first=False)
            )
        else:
            where = self._render_path(segments)
        at = f" at {where}" if where else ""
        return f"cannot hash value of type {self.type_name!r}{at}: {self.reason}"

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.reason, tuple(self._outward[::-1])))


# Segments shown at each end of a long path in a message
_PATH_ENDS: Final = 8


def _type_name(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", cls.__name__)
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


def _unhashable(value: object, reason: str) -> UnhashableInputError:
    return UnhashableInputError(_type_name(type(value)), reason)


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{_type_name(type(value))} object>"
    return text if len(text) <= 50 else text[:47] + "..."


# --------------------------------------------------------------------------- the walk

_pack_q: Final = struct.Struct("<q").pack
_pack_d: Final = struct.Struct("<d").pack
_pack_dd: Final = struct.Struct("<dd").pack
# Strings and bytes above this size are written separately rather than concatenated with
# their header, so a large payload is never copied just to be hashed.
_INLINE_LIMIT: Final = 4096

# A handler writes one value. What it can write at once (numbers, strings, the header of a
# container, the atoms in it) it writes, then returns None; when it meets a part that may
# nest (a list in a list, an object's attribute), it returns an iterator of the remaining
# parts instead. ``_drive`` writes each part the iterator yields before resuming it, so
# nesting lives on an explicit stack, not on Python's call stack. An error is thrown back
# into the iterators on the stack, innermost first, and each adds where it was, as the
# ``except`` clauses of a recursive walk would.
_Parts = Generator[Any, None, None]
_Handler = Callable[["_Writer", Any], "_Parts | None"]


class _Writer:
    """Where the encoding goes, and the containers and objects on the current path."""

    __slots__ = ("active", "room", "write")

    def __init__(self, write: Callable[[Buffer], object]) -> None:
        self.write = write
        # How many more nested values may be written on the call stack (see _INLINE_DEPTH).
        self.room = _INLINE_DEPTH
        # id -> position on the current path. Only used to notice a value reached again
        # through itself; never written.
        self.active: dict[int, int] = {}

    def enter(self, value: object) -> bool:
        """Start writing ``value``; False if it is on its own path (a back-reference is written)."""
        active = self.active
        key = id(value)
        position = active.get(key)
        if position is None:
            active[key] = len(active)
            return True
        # How many levels up the path the value sits: the same structure gives the same
        # bytes in every process, and no id is ever written.
        self.write(b"^" + _pack_q(len(active) - position))
        return False

    def leave(self, value: object) -> None:
        del self.active[id(value)]


class _Sub:
    """Parts of a value that a handler's iterator hands to the walk to write in its place."""

    __slots__ = ("parts",)

    def __init__(self, parts: _Parts) -> None:
        self.parts = parts


def _h_sub(w: _Writer, value: _Sub) -> _Parts:
    return value.parts


def _drive(w: _Writer, parts: _Parts) -> None:
    """Write every part ``parts`` yields, depth first, with an explicit stack."""
    stack = [parts]
    push = stack.append
    pop = stack.pop
    get = _EXACT.get
    done = _DONE
    error: UnhashableInputError | None = None
    while stack:
        try:
            if error is None:
                value = next(stack[-1], done)
                if value is done:
                    pop()
                    continue
            else:
                # The traceback is dropped at each level: on a deeply nested value it would
                # otherwise grow by one entry per level.
                thrown, error = error.with_traceback(None), None
                value = stack[-1].throw(thrown)
        except StopIteration:
            pop()
            continue
        except UnhashableInputError as exc:
            pop()
            error = exc
            continue
        try:
            sub = (get(type(value)) or _resolve(value))(w, value)
        except UnhashableInputError as exc:
            error = exc
            continue
        if sub is not None:
            push(sub)
    if error is not None:
        raise error


_DONE: Final = object()


# Values nested up to this many levels are written by plain recursion from the loops of
# containers, which is cheaper than the walk's stack; deeper ones go through the walk. It
# bounds the Python frames a hash takes (a few per level) well below the recursion limit.
_INLINE_DEPTH: Final = 24


def _write_nested(w: _Writer, value: object) -> None:
    """Write a part that cannot nest deeply (a time zone) at once, with a walk of its own."""
    sub = (_EXACT.get(type(value)) or _resolve(value))(w, value)
    if sub is not None:
        _drive(w, sub)


def _one(value: object) -> _Parts:
    yield value


def _capture(w: _Writer, value: object, chunks: list[Any]) -> _Parts:
    """Write ``value`` into ``chunks`` instead of the hash (to order entries by encoding)."""
    previous = w.write
    w.write = chunks.append
    try:
        yield value
    finally:
        w.write = previous


def _encode_atom(w: _Writer, handler: _Handler, value: object) -> bytes:
    chunks: list[Any] = []
    previous = w.write
    w.write = chunks.append
    try:
        handler(w, value)
    finally:
        w.write = previous
    return b"".join(chunks)


def _write_str(w: _Writer, value: str) -> None:
    try:
        data = value.encode()
    except UnicodeEncodeError:
        # Lone surrogates (e.g. from surrogateescape'd file names) are still content.
        data = value.encode("utf-8", "surrogatepass")
    if len(data) <= _INLINE_LIMIT:
        w.write(b"s" + _pack_q(len(data)) + data)
    else:
        w.write(b"s" + _pack_q(len(data)))
        w.write(data)


def _write_blob(w: _Writer, tag: bytes, data: bytes) -> None:
    if len(data) <= _INLINE_LIMIT:
        w.write(tag + _pack_q(len(data)) + data)
    else:
        w.write(tag + _pack_q(len(data)))
        w.write(data)


def _write_class(w: _Writer, cls: type) -> None:
    # Module and qualified name only: notebook classes live in __main__ and must keep their
    # identity when a cell is re-run, so no file path or line number takes part.
    _write_str(w, f"{getattr(cls, '__module__', None)}:{getattr(cls, '__qualname__', '?')}")


# --------------------------------------------------------------------------- atoms


def _h_none(w: _Writer, value: None) -> None:
    w.write(b"N")


def _h_bool(w: _Writer, value: bool) -> None:
    w.write(b"T" if value else b"F")


def _h_int(w: _Writer, value: int) -> None:
    try:
        w.write(b"i" + _pack_q(value))
    except struct.error:
        data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        w.write(b"I" + _pack_q(len(data)) + data)


def _float_bytes(value: float) -> bytes:
    # All NaNs are one value for caching; their sign and payload bits depend on how they
    # were produced, not on what the caller meant.
    return _pack_d(value) if value == value else b"\xff" * 8


def _h_float(w: _Writer, value: float) -> None:
    if value == value:
        w.write(b"f" + _pack_d(value))
    else:
        w.write(b"n")


def _h_complex(w: _Writer, value: complex) -> None:
    real, imag = value.real, value.imag
    if real == real and imag == imag:
        w.write(b"c" + _pack_dd(real, imag))
    else:
        w.write(b"c" + _float_bytes(real) + _float_bytes(imag))


def _h_bytes(w: _Writer, value: bytes) -> None:
    _write_blob(w, b"b", value)


def _h_bytearray(w: _Writer, value: bytearray) -> None:
    _write_blob(w, b"a", bytes(value))


def _h_memoryview(w: _Writer, value: memoryview) -> None:
    w.write(b"m")
    _write_str(w, value.format)
    shape = value.shape
    _h_none(w, None) if shape is None else _h_tuple(w, shape)  # ints: written at once
    _write_blob(w, b"b", value.tobytes())


def _h_ellipsis(w: _Writer, value: object) -> None:
    w.write(b"E")


def _h_notimplemented(w: _Writer, value: object) -> None:
    w.write(b"Z")


def _h_range(w: _Writer, value: range) -> None:
    w.write(b"r")
    _h_int(w, value.start)
    _h_int(w, value.stop)
    _h_int(w, value.step)


def _h_slice(w: _Writer, value: slice) -> _Parts:
    w.write(b":")
    yield value.start
    yield value.stop
    yield value.step


# --------------------------------------------------------------------------- containers


def _write_items(w: _Writer, items: Iterable[object], leave: object = None) -> _Parts | None:
    """Write ``items``; the parts still to write once one of them may nest, else None.

    ``leave``: the container to take off the path once its items are written.
    """
    # Atoms are written here, without the walk: this loop is the hot path for flat lists.
    get = _ATOMS.get
    numbered = enumerate(items)
    for index, item in numbered:
        handler = get(type(item))
        if handler is not None:
            handler(w, item)
        elif w.room:
            w.room -= 1
            try:
                rest = (_exact(type(item)) or _resolve(item))(w, item)
                if rest is not None:
                    _drive(w, rest)
            except UnhashableInputError as exc:
                exc._push("index", str(index))
                raise
            w.room += 1
        else:
            return _items_rest(w, numbered, index, item, leave)
    if leave is not None:
        del w.active[id(leave)]
    return None


def _items_rest(
    w: _Writer,
    numbered: Iterator[tuple[int, object]],
    index: int,
    item: object,
    leave: object,
) -> _Parts:
    get = _ATOMS.get
    try:
        yield item
        for index, item in numbered:  # noqa: B007 (index names the item in errors)
            handler = get(type(item))
            if handler is None:
                yield item
            else:
                handler(w, item)
    except UnhashableInputError as exc:
        exc._push("index", str(index))
        raise
    if leave is not None:
        del w.active[id(leave)]


def _h_list(w: _Writer, value: list[object]) -> _Parts | None:
    if not w.enter(value):
        return None
    w.write(b"[" + _pack_q(len(value)))
    return _write_items(w, value, value)


def _h_tuple(w: _Writer, value: tuple[object, ...]) -> _Parts | None:
    # Immutable: a cycle through a tuple always passes a mutable container, which tracks it.
    w.write(b"(" + _pack_q(len(value)))
    return _write_items(w, value)


def _h_deque(w: _Writer, value: collections.deque[object]) -> _Parts | None:
    if not w.enter(value):
        return None
    w.write(b"q" + _pack_q(len(value)))
    maxlen = value.maxlen
    _h_none(w, maxlen) if maxlen is None else _h_int(w, maxlen)
    return _write_items(w, list(value), value)


def _key_segment(key: object) -> _Segment:
    return ("strkey", key) if type(key) is str else ("key", _short_repr(key))


def _push_key(exc: UnhashableInputError, key: object, attrs: bool) -> None:
    if attrs and type(key) is str:
        exc._push("attr", key)
    else:
        exc._push(*_key_segment(key))


def _write_mapping(
    w: _Writer, mapping: dict[Any, Any], attrs: bool = False, leave: object = None
) -> _Parts | None:
    """Entries in an order that depends only on their content; ``attrs`` names errors ``.x``."""
    w.write(b"{" + _pack_q(len(mapping)))
    if not mapping:
        if leave is not None:
            del w.active[id(leave)]
        return None
    kinds = set(map(type, mapping))
    if len(kinds) == 1 and (str in kinds or int in kinds):
        # The common case (keyword arguments, __dict__): keys sort by value, fast and total,
        # and are written by their own handler.
        entries = sorted(mapping.items())
        write_key: Callable[[_Writer, Any], None] = _h_int if int in kinds else _write_str
        get = _ATOMS.get
        for position, (key, item) in enumerate(entries):
            write_key(w, key)
            handler = get(type(item))
            if handler is not None:
                handler(w, item)
            elif w.room:
                w.room -= 1
                try:
                    rest = (_exact(type(item)) or _resolve(item))(w, item)
                    if rest is not None:
                        _drive(w, rest)
                except UnhashableInputError as exc:
                    _push_key(exc, key, attrs)
                    raise
                w.room += 1
            else:
                keys = [write_key] * len(entries)
                return _entries_rest(w, entries, keys, position, attrs, leave)
        if leave is not None:
            del w.active[id(leave)]
        return None
    return _mapping_by_encoding(w, mapping, attrs, leave)


def _entries_rest(
    w: _Writer,
    entries: list[tuple[Any, Any]],
    keys: list[Any],
    position: int,
    attrs: bool,
    leave: object,
) -> _Parts:
    """Write the entries from ``position`` on, whose key is already written.

    ``keys[i]`` is the handler of entry i's key, or its encoding (bytes).
    """
    get = _ATOMS.get
    key = entries[position][0]
    try:
        yield entries[position][1]
        for later in range(position + 1, len(entries)):
            key, item = entries[later]
            write_key = keys[later]
            if type(write_key) is bytes:
                w.write(write_key)
            else:
                write_key(w, key)
            handler = get(type(item))
            if handler is None:
                yield item
            else:
                handler(w, item)
    except UnhashableInputError as exc:
        _push_key(exc, key, attrs)
        raise
    if leave is not None:
        del w.active[id(leave)]


def _encode_each(
    w: _Writer, values: Iterable[object], out: list[bytes], where: _Segment | None
) -> _Parts:
    """Append the encoding of each of ``values`` to ``out``; ``where`` names an error."""
    get = _ATOMS.get
    for value in values:
        handler = get(type(value))
        if handler is not None:
            out.append(_encode_atom(w, handler, value))
            continue
        chunks: list[Any] = []
        try:
            yield _Sub(_capture(w, value, chunks))
        except UnhashableInputError as exc:
            if where is not None:
                exc._push(*where)
            raise
        out.append(b"".join(chunks))


def _mapping_by_encoding(w: _Writer, mapping: dict[Any, Any], attrs: bool, leave: object) -> _Parts:
    items = list(mapping.items())
    encoded: list[bytes] = []
    yield _Sub(_encode_each(w, [key for key, _ in items], encoded, ("dictkey", "key")))
    keyed = sorted(zip(encoded, items, strict=True), key=operator.itemgetter(0))
    if any(keyed[i][0] == keyed[i + 1][0] for i in range(len(keyed) - 1)):
        # Distinct keys with equal content (two sentinels, say): order those entries by
        # their values too, or the result would follow insertion order.
        values: list[bytes] = []
        yield _Sub(_encode_each(w, [item for _, (_, item) in keyed], values, None))
        keyed = [
            entry for _, entry in sorted(zip(values, keyed, strict=True), key=_by_key_then_value)
        ]
    entries = [entry for _, entry in keyed]
    keys: list[Any] = [encoding for encoding, _ in keyed]
    w.write(keys[0])
    yield _Sub(_entries_rest(w, entries, keys, 0, attrs, leave))


def _by_key_then_value(pair: tuple[bytes, tuple[bytes, Any]]) -> tuple[bytes, bytes]:
    return (pair[1][0], pair[0])


def _h_dict(w: _Writer, value: dict[Any, Any]) -> _Parts | None:
    if not w.enter(value):
        return None
    return _write_mapping(w, value, leave=value)


def _write_set(
    w: _Writer, tag: bytes, value: collections.abc.Set[Any], leave: object = None
) -> _Parts | None:
    w.write(tag + _pack_q(len(value)))
    kinds = set(map(type, value))
    if len(kinds) == 1 and (str in kinds or int in kinds):
        return _write_items(w, sorted(value), leave)
    if not value:
        if leave is not None:
            del w.active[id(leave)]
        return None
    return _set_by_encoding(w, value, leave)


def _set_by_encoding(w: _Writer, value: collections.abc.Set[Any], leave: object) -> _Parts:
    encoded: list[bytes] = []
    yield _Sub(_encode_each(w, list(value), encoded, ("elem", "set element")))
    encoded.sort()
    for data in encoded:
        w.write(data)
    if leave is not None:
        del w.active[id(leave)]


def _h_set(w: _Writer, value: set[Any]) -> _Parts | None:
    if not w.enter(value):
        return None
    return _write_set(w, b"<", value, value)


def _h_frozenset(w: _Writer, value: frozenset[Any]) -> _Parts | None:
    return _write_set(w, b">", value)


def _h_namespace(w: _Writer, value: types.SimpleNamespace) -> _Parts | None:
    if not w.enter(value):
        return None
    w.write(b"S")
    return _write_mapping(w, vars(value), attrs=True, leave=value)


# --------------------------------------------------------------------------- stdlib values


def _h_datetime(w: _Writer, value: dt.datetime) -> None:
    # isoformat carries the UTC offset and any sub-microsecond digits of subclasses (pandas
    # Timestamp); fold and the zone itself are added because they change arithmetic.
    w.write(b"D" + (b"1" if value.fold else b"0"))
    _write_str(w, value.isoformat())
    _write_nested(w, value.tzinfo)


def _h_date(w: _Writer, value: dt.date) -> None:
    w.write(b"d")
    _write_str(w, value.isoformat())


def _h_time(w: _Writer, value: dt.time) -> None:
    w.write(b"t" + (b"1" if value.fold else b"0"))
    _write_str(w, value.isoformat())
    _write_nested(w, value.tzinfo)


def _h_timedelta(w: _Writer, value: dt.timedelta) -> None:
    w.write(b"e" + _pack_q(value.days) + _pack_q(value.seconds) + _pack_q(value.microseconds))


def _h_timezone(w: _Writer, value: dt.timezone) -> None:
    w.write(b"z")
    offset = value.utcoffset(None)
    _h_timedelta(w, offset) if offset is not None else _h_none(w, None)
    name = value.tzname(None)
    _write_str(w, name) if name is not None else _h_none(w, None)


def _h_zoneinfo(w: _Writer, value: dt.tzinfo) -> None:
    w.write(b"Y")
    _write_str(w, str(value))


def _h_tzinfo(w: _Writer, value: dt.tzinfo) -> None:
    # Third-party zones (pytz, dateutil) keep caches and back-references in their state;
    # their zone name is what identifies them.
    w.write(b"y")
    _write_class(w, type(value))
    name = getattr(value, "zone", None) or getattr(value, "key", None) or str(value)
    _write_str(w, str(name))


def _h_decimal(w: _Writer, value: object) -> None:
    w.write(b"M")
    _write_str(w, str(value))


def _h_fraction(w: _Writer, value: Any) -> None:
    w.write(b"Q")
    _h_int(w, value.numerator)
    _h_int(w, value.denominator)


def _h_uuid(w: _Writer, value: Any) -> None:
    w.write(b"U" + value.bytes)


def _h_path(w: _Writer, value: Any) -> None:
    # The class name (not its module, which moved in 3.13) tells POSIX from Windows paths.
    w.write(b"P")
    _write_str(w, type(value).__name__)
    _write_str(w, str(value))


# --------------------------------------------------------------------------- code


def _h_class(w: _Writer, value: type) -> None:
    w.write(b"C")
    _write_class(w, value)


def _h_enum(w: _Writer, value: enum.Enum) -> _Parts | None:
    w.write(b"V")
    _write_class(w, type(value))
    name = getattr(value, "_name_", None)
    if isinstance(name, str):
        _write_str(w, name)
        return None
    # Unnamed combinations of Flag members (Python 3.10) are known by their value.
    w.write(b"v")
    return _one(value.value)


# The low 16 bits describe the code (generator, varargs, ...); the higher ones record
# ``from __future__`` imports in force where it was compiled, which a notebook's earlier
# cells (or an exec's caller) pass on without changing what the function does.
_CODE_FLAGS: Final = 0xFFFF


def _h_code(w: _Writer, code: types.CodeType) -> _Parts:
    # No file name, line numbers or positions: re-running an unchanged notebook cell
    # compiles to a code object that differs only in those.
    w.write(
        b"K"
        + _pack_q(code.co_argcount)
        + _pack_q(code.co_posonlyargcount)
        + _pack_q(code.co_kwonlyargcount)
        + _pack_q(code.co_flags & _CODE_FLAGS)
    )
    _write_str(w, code.co_name)
    _write_blob(w, b"b", code.co_code)
    yield code.co_consts
    yield code.co_names
    yield code.co_varnames
    yield code.co_freevars
    yield code.co_cellvars


def _is_reimportable(module: object, qualname: str) -> bool:
    return isinstance(module, str) and module != "__main__" and "<" not in qualname


def _h_function(w: _Writer, fn: types.FunctionType) -> _Parts:
    module = fn.__module__
    qualname = fn.__qualname__
    w.write(b"L")
    yield module
    _write_str(w, qualname)
    if _is_reimportable(module, qualname):
        w.write(b"-")
        return
    if not w.enter(fn):
        return  # a nested function reaching itself through its closure (recursion)
    w.write(b"+")
    yield fn.__code__
    for name in ("__defaults__", "__kwdefaults__"):
        try:
            yield getattr(fn, name)
        except UnhashableInputError as exc:
            exc._push("attr", name)
            raise
    cells = fn.__closure__ or ()
    w.write(b"x" + _pack_q(len(cells)))
    for name, cell in zip(fn.__code__.co_freevars, cells, strict=True):
        try:
            contents = cell.cell_contents
        except ValueError:
            w.write(b"_")
            continue
        try:
            yield contents
        except UnhashableInputError as exc:
            exc._push("attr", f"<closure {name}>")
            raise
    w.leave(fn)


def _h_builtin(w: _Writer, fn: Any) -> _Parts:
    w.write(b"B")
    owner = getattr(fn, "__objclass__", None)
    if isinstance(owner, type):
        _write_class(w, owner)
    else:
        yield getattr(fn, "__module__", None)
    _write_str(w, str(getattr(fn, "__qualname__", getattr(fn, "__name__", "?"))))
    bound = getattr(fn, "__self__", None)
    if bound is None or isinstance(bound, types.ModuleType):
        w.write(b"-")
        return
    try:
        yield bound
    except UnhashableInputError as exc:
        exc._push("attr", "__self__")
        raise


def _h_method(w: _Writer, method: types.MethodType) -> _Parts:
    w.write(b"W")
    yield method.__func__
    try:
        yield method.__self__
    except UnhashableInputError as exc:
        exc._push("attr", "__self__")
        raise


def _h_partial(w: _Writer, value: functools.partial[Any]) -> _Parts:
    if not w.enter(value):
        return
    w.write(b"p")
    for name, part in (("func", value.func), ("args", value.args), ("keywords", value.keywords)):
        try:
            yield part
        except UnhashableInputError as exc:
            exc._push("attr", name)
            raise
    w.leave(value)


# --------------------------------------------------------------------------- other objects


def _h_dataclass(w: _Writer, value: Any) -> _Parts | None:
    if not w.enter(value):
        return None
    w.write(b"R")
    _write_class(w, type(value))
    fields = dataclasses.fields(value)
    w.write(_pack_q(len(fields)))
    return _write_fields(w, value, fields, 0)


def _write_fields(
    w: _Writer, value: Any, fields: tuple[dataclasses.Field[Any], ...], start: int
) -> _Parts | None:
    get = _ATOMS.get
    for position in range(start, len(fields)):
        name = fields[position].name
        _write_str(w, name)
        try:
            item = getattr(value, name)
        except AttributeError:
            w.write(b"_")
            continue
        w.write(b"=")
        handler = get(type(item))
        if handler is not None:
            handler(w, item)
        elif w.room:
            w.room -= 1
            try:
                rest = (_exact(type(item)) or _resolve(item))(w, item)
                if rest is not None:
                    _drive(w, rest)
            except UnhashableInputError as exc:
                exc._push("attr", name)
                raise
            w.room += 1
        else:
            return _fields_rest(w, value, fields, position, item)
    w.leave(value)
    return None


def _fields_rest(
    w: _Writer, value: Any, fields: tuple[dataclasses.Field[Any], ...], position: int, item: Any
) -> _Parts:
    try:
        yield item
    except UnhashableInputError as exc:
        exc._push("attr", fields[position].name)
        raise
    rest = _write_fields(w, value, fields, position + 1)
    if rest is not None:
        yield _Sub(rest)


def _h_namedtuple(w: _Writer, value: Any) -> _Parts:
    w.write(b"u")
    _write_class(w, type(value))
    names = type(value)._fields
    w.write(_pack_q(len(value)))
    get = _ATOMS.get
    for name, item in zip(names, value, strict=True):
        _write_str(w, name)
        handler = get(type(item))
        if handler is not None:
            handler(w, item)
            continue
        try:
            yield item
        except UnhashableInputError as exc:
            exc._push("attr", name)
            raise


def _h_pydantic(w: _Writer, value: Any) -> _Parts:
    if not w.enter(value):
        return
    w.write(b"j")
    _write_class(w, type(value))
    try:
        dumped = value.model_dump(mode="python")
    except Exception as exc:
        raise _unhashable(value, f"model_dump() failed: {exc!r}") from exc
    if type(dumped) is dict:
        rest = _write_mapping(w, dumped, attrs=True)
        if rest is not None:
            yield _Sub(rest)
    else:
        yield dumped  # a RootModel dumps its root value
    w.leave(value)


def _h_exception(w: _Writer, value: BaseException) -> _Parts:
    if not w.enter(value):
        return
    w.write(b"x")
    _write_class(w, type(value))
    try:
        yield value.args
    except UnhashableInputError as exc:
        exc._push("attr", "args")
        raise
    rest = _write_mapping(w, getattr(value, "__dict__", {}), attrs=True)
    if rest is not None:
        yield _Sub(rest)
    w.leave(value)


def _h_builtin_subclass(w: _Writer, value: Any) -> _Parts:
    cls = type(value)
    base_handler = next(
        handler for handler in map(_EXACT.get, cls.__mro__[1:]) if handler is not None
    )
    w.write(b"X")
    _write_class(w, cls)
    rest = base_handler(w, value)
    if rest is not None:
        yield _Sub(rest)
    extra = getattr(value, "__dict__", None)
    if extra:
        w.write(b"+")
        rest = _write_mapping(w, extra, attrs=True)
        if rest is not None:
            yield _Sub(rest)
    else:
        w.write(b"-")
    if isinstance(value, collections.defaultdict):
        try:
            yield value.default_factory
        except UnhashableInputError as exc:
            exc._push("attr", "default_factory")
            raise


def _declared_slots(cls: type) -> list[str]:
    """Attribute names of every ``__slots__`` entry in the MRO, mangled as Python stores them."""
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            if slot.startswith("__") and not slot.endswith("__"):
                slot = f"_{klass.__name__.lstrip('_')}{slot}"
            names.append(slot)
    return names


_POINTER_SIZE: Final = struct.calcsize("P")
_OBJECT_GETSTATE: Final = getattr(object, "__getstate__", None)


def _has_c_state(cls: type) -> bool:
    """Whether instances hold fields that neither ``__dict__`` nor ``__slots__`` expose.

    This is the test pickle itself applies: an instance larger than a bare object plus its dict,
    weakref and slot pointers carries C-level fields (re.Pattern, array.array, extension
    types). Being a heap type says nothing here, since most C types are heap types by now.
    """
    if cls.__itemsize__:
        return True
    expected = object.__basicsize__ + _POINTER_SIZE * len(_declared_slots(cls))
    if cls.__dictoffset__ > 0:
        expected += _POINTER_SIZE
    if cls.__weakrefoffset__ > 0:
        expected += _POINTER_SIZE
    return cls.__basicsize__ > expected


def _h_object(w: _Writer, value: Any) -> _Parts:
    cls = type(value)
    if not w.enter(value):
        return
    w.write(b"O")
    _write_class(w, cls)
    getstate = getattr(cls, "__getstate__", None)
    if getstate is not None and getstate is not _OBJECT_GETSTATE:
        try:
            state = value.__getstate__()
        except Exception as exc:
            raise _unhashable(value, f"its __getstate__() failed: {exc!r}") from exc
        w.write(b"g")
        try:
            yield state
        except UnhashableInputError as exc:
            exc._push("attr", "__getstate__()")
            raise
        w.leave(value)
        return
    w.write(b"d")
    rest = _write_mapping(w, getattr(value, "__dict__", {}), attrs=True)
    if rest is not None:
        yield _Sub(rest)
    slots = sorted(set(_declared_slots(cls)))
    w.write(_pack_q(len(slots)))
    for name in slots:
        _write_str(w, name)
        try:
            item = getattr(value, name)
        except AttributeError:
            w.write(b"_")
            continue
        w.write(b"=")
        try:
            yield item
        except UnhashableInputError as exc:
            exc._push("attr", name)
            raise
    w.leave(value)


def _h_pickled(w: _Writer, value: object) -> None:
    w.write(b"k")
    _write_class(w, type(value))
    _write_blob(w, b"b", _deterministic_pickle(value))


def _deterministic_pickle(value: object) -> bytes:
    # Plain pickle first: it refers to classes by name, which is stable across processes.
    # cloudpickle copies classes it cannot import by value, tagged with a per-process id, so
    # it only serves when plain pickle cannot cope.
    failures: list[str] = []
    for dumps in (_plain_dumps, _cloudpickle_dumps):
        try:
            first = dumps(value)
            second = dumps(value)
        except Exception as exc:
            failures.append(repr(exc))
            continue
        if first != second:
            raise _unhashable(
                value,
                "its pickled form differs from one pickling to the next, so it has no "
                "stable content; give the class a __getstate__ that returns its state",
            )
        return first
    raise _unhashable(
        value,
        "its state is held in C, out of reach of __dict__ and __slots__, and it cannot be "
        f"pickled ({'; '.join(dict.fromkeys(failures))}); pass plain data instead",
    )


def _plain_dumps(value: object) -> bytes:
    import pickle

    return pickle.dumps(value, protocol=4)


def _cloudpickle_dumps(value: object) -> bytes:
    # Imported on first need: most values never get here, and it is a sizeable import.
    cloudpickle = importlib.import_module("cloudpickle")
    data: bytes = cloudpickle.dumps(value, protocol=4)
    return data


# --------------------------------------------------------------------------- optional libs


def _h_ndarray(w: _Writer, value: Any) -> _Parts:
    np = sys.modules["numpy"]
    w.write(b"A")
    cls = type(value)
    if cls is np.ndarray:
        w.write(b"-")
    else:
        _write_class(w, cls)
    dtype = value.dtype
    yield dtype.descr
    yield value.shape
    masked = sys.modules.get("numpy.ma")
    if masked is not None and isinstance(value, masked.MaskedArray):
        w.write(b"m")
        yield _Sub(_h_ndarray(w, masked.getmaskarray(value)))
        value = value.data
    if dtype.hasobject or dtype.names is not None:
        # Object cells are Python values; structured records may carry padding bytes that
        # hold garbage. Both are hashed element by element instead of as raw memory.
        w.write(b"o")
        rest = _write_items(w, np.asarray(value).ravel().tolist())
        if rest is not None:
            yield _Sub(rest)
        return
    raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
    w.write(b"r" + _pack_q(raw.nbytes))
    w.write(raw)


def _h_numpy_scalar(w: _Writer, value: Any) -> _Parts:
    w.write(b"G")
    _write_str(w, type(value).__name__)
    yield value.dtype.descr
    if value.dtype.names is not None:
        yield value.tolist()
    else:
        _write_blob(w, b"b", value.tobytes())


def _pandas_content(w: _Writer, value: Any, columns: Iterable[Any]) -> _Parts:
    pd = sys.modules["pandas"]
    try:
        hashed = pd.util.hash_pandas_object(value, index=False)
    except TypeError:
        # Cells pandas cannot hash (lists, dicts): hash them as Python values instead.
        w.write(b"p")
        for position, column in enumerate(columns):
            try:
                yield column.tolist()
            except UnhashableInputError as exc:
                exc._push("index", str(position))
                raise
        return
    np = sys.modules["numpy"]
    raw = np.ascontiguousarray(hashed.to_numpy(dtype=np.uint64))
    w.write(b"h" + _pack_q(raw.nbytes))
    w.write(raw)


def _h_pandas(w: _Writer, value: Any) -> _Parts:
    pd = sys.modules["pandas"]
    w.write(b"H")
    _write_class(w, type(value))
    if isinstance(value, pd.DataFrame):
        for name in ("columns", "index"):
            try:
                yield getattr(value, name)
            except UnhashableInputError as exc:
                exc._push("attr", name)
                raise
        yield [str(dtype) for dtype in value.dtypes]
        columns = (value.iloc[:, position] for position in range(value.shape[1]))
        yield from _pandas_content(w, value, columns)
    elif isinstance(value, pd.Series):
        for name in ("name", "index"):
            try:
                yield getattr(value, name)
            except UnhashableInputError as exc:
                exc._push("attr", name)
                raise
        _write_str(w, str(value.dtype))
        yield from _pandas_content(w, value, [value])
    else:
        yield list(value.names)
        _write_str(w, str(value.dtype))
        yield from _pandas_content(w, value, [value])


# --------------------------------------------------------------------------- dispatch

# Handlers that write their value at once and never nest: containers write these without
# handing them to the walk.
_ATOMS: dict[type, Callable[[_Writer, Any], None]] = {
    type(None): _h_none,
    bool: _h_bool,
    int: _h_int,
    float: _h_float,
    complex: _h_complex,
    str: _write_str,
    bytes: _h_bytes,
    bytearray: _h_bytearray,
    memoryview: _h_memoryview,
    range: _h_range,
    type(...): _h_ellipsis,
    type(NotImplemented): _h_notimplemented,
    dt.datetime: _h_datetime,
    dt.date: _h_date,
    dt.time: _h_time,
    dt.timedelta: _h_timedelta,
    dt.timezone: _h_timezone,
    type: _h_class,
}

_EXACT: dict[type, _Handler] = {
    **_ATOMS,
    list: _h_list,
    tuple: _h_tuple,
    dict: _h_dict,
    set: _h_set,
    frozenset: _h_frozenset,
    slice: _h_slice,
    collections.deque: _h_deque,
    types.SimpleNamespace: _h_namespace,
    types.FunctionType: _h_function,
    types.CodeType: _h_code,
    types.MethodType: _h_method,
    types.BuiltinFunctionType: _h_builtin,
    types.WrapperDescriptorType: _h_builtin,
    types.MethodWrapperType: _h_builtin,
    types.MethodDescriptorType: _h_builtin,
    types.ClassMethodDescriptorType: _h_builtin,
    functools.partial: _h_partial,
    _Sub: _h_sub,
}

_exact: Final = _EXACT.get  # bound once: the loops of containers call it per nested value

# Standard-library value types whose modules this module does not import: a value of such a
# type can only exist once its module is loaded, so they join _EXACT (and _ATOMS: all of
# them are atoms) when first seen there.
_PENDING: dict[str, tuple[tuple[str, Callable[[_Writer, Any], None]], ...]] = {
    "decimal": (("Decimal", _h_decimal),),
    "fractions": (("Fraction", _h_fraction),),
    "uuid": (("UUID", _h_uuid),),
    "zoneinfo": (("ZoneInfo", _h_zoneinfo),),
    "pathlib": tuple(
        (name, _h_path)
        for name in ("PurePosixPath", "PureWindowsPath", "PosixPath", "WindowsPath", "Path")
    ),
}


def _register_pending() -> None:
    for module_name in [name for name in _PENDING if name in sys.modules]:
        module = sys.modules[module_name]
        for attr, handler in _PENDING.pop(module_name, ()):
            cls = getattr(module, attr, None)
            if isinstance(cls, type) and cls not in _EXACT:
                _EXACT[cls] = handler
                _ATOMS[cls] = handler


_UNSTABLE_BY_NAME: Final[tuple[tuple[str, tuple[str, ...], str], ...]] = (
    (
        "threading",
        ("Thread", "Condition", "Semaphore", "Event", "Barrier", "local"),
        "threads and synchronisation primitives have no stable content",
    ),
    ("socket", ("socket",), "sockets have no stable content"),
    ("subprocess", ("Popen",), "processes have no stable content"),
    ("asyncio", ("Future", "AbstractEventLoop"), "futures and event loops have no stable content"),
    ("concurrent.futures", ("Future", "Executor"), "futures and executors have no stable content"),
)
_LOCK_TYPES: Final = (type(threading.Lock()), type(threading.RLock()))


def _unstable_reason(value: object) -> str | None:
    if isinstance(value, (types.GeneratorType, types.AsyncGeneratorType)):
        return "generators have no stable content; pass a list or tuple of the values instead"
    if isinstance(value, types.CoroutineType):
        return "coroutines have no stable content; pass the awaited result instead"
    if isinstance(value, types.ModuleType):
        return "modules have no content to hash; pass the values you need from it instead"
    if isinstance(value, io.IOBase):
        return "file objects have no stable content; pass the path or the data read instead"
    if isinstance(value, (collections.abc.Iterator, collections.abc.AsyncIterator)):
        return "iterators are used up as they are read; pass a list or tuple instead"
    if isinstance(value, _LOCK_TYPES):
        return "locks have no stable content"
    if isinstance(value, (types.FrameType, types.TracebackType)):
        return "frames and tracebacks have no stable content"
    if isinstance(value, (weakref.ref, weakref.ProxyType, weakref.CallableProxyType)):
        return "weak references have no stable content; pass the referenced object instead"
    for module_name, names, reason in _UNSTABLE_BY_NAME:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        classes = tuple(
            cls for cls in (getattr(module, name, None) for name in names) if isinstance(cls, type)
        )
        if isinstance(value, classes):
            return reason
    return None


# The decision depends on the type alone (a value of a numpy, pandas or pydantic type cannot
# exist before its library is imported), so it is made once per type. Weak keys let notebook
# classes that a re-run cell has replaced be collected.
_RESOLVED: weakref.WeakKeyDictionary[type, _Handler] = weakref.WeakKeyDictionary()


def _resolve(value: object) -> _Handler:
    cls = type(value)
    try:
        return _RESOLVED[cls]
    except KeyError:
        pass
    handler = _classify(value)
    try:
        _RESOLVED[cls] = handler
    except TypeError:
        pass
    return handler


def _classify(value: object) -> _Handler:
    """The handler for a value whose exact type is not in ``_EXACT``; order matters."""
    cls = type(value)
    if _PENDING:
        _register_pending()
        handler = _EXACT.get(cls)
        if handler is not None:
            return handler
    if isinstance(value, type):
        return _h_class
    if isinstance(value, enum.Enum):
        return _h_enum
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.ndarray):
            return _h_ndarray
        if isinstance(value, np.generic):
            return _h_numpy_scalar
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, (pd.DataFrame, pd.Series, pd.Index)):
        return _h_pandas
    pydantic_main = sys.modules.get("pydantic.main")
    if pydantic_main is not None and isinstance(value, pydantic_main.BaseModel):
        return _h_pydantic
    if isinstance(getattr(cls, "__dataclass_fields__", None), dict):
        return _h_dataclass
    if isinstance(value, tuple) and isinstance(getattr(cls, "_fields", None), tuple):
        return _h_namedtuple
    reason = _unstable_reason(value)
    if reason is not None:
        raise _unhashable(value, reason)
    if isinstance(value, BaseException):
        return _h_exception
    if any(base in _EXACT for base in cls.__mro__[1:]):
        return _h_builtin_subclass
    if isinstance(value, dt.tzinfo):
        return _h_tzinfo
    return _h_pickled if _has_c_state(cls) else _h_object


# --------------------------------------------------------------------------- entry point

# Bumped whenever the encoding changes, so stale cache entries stop matching.
_SEED: Final = hashlib.sha256(b"flowbook.stable_hash/1\x00")


def stable_hash(value: object) -> str:
    """Hex sha256 of ``value``'s content, equal across processes and Python runs.

    Values of any depth are walked without recursion, and a value that contains itself is
    hashed by its structure (a back-reference says how many levels up the path it points).
    Raises ``UnhashableInputError`` for values without stable content (generators, files,
    locks, modules, ...); the message says where inside ``value`` the culprit sits.
    """
    digest = _SEED.copy()
    w = _Writer(digest.update)
    try:
        rest = (_EXACT.get(type(value)) or _resolve(value))(w, value)
        if rest is not None:
            _drive(w, rest)
    except UnhashableInputError as exc:
        exc._finish()
        raise
    except RecursionError:
        # Only code outside this module recurses (a __getstate__, pickle, model_dump).
        raise _unhashable(
            value, "it is nested more deeply than the interpreter's recursion limit allows"
        ) from None
    return digest.hexdigest()
