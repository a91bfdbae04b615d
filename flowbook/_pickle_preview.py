"""Previews of pickled values, read without unpickling them.

The store keeps results only pickled, and ``pickle.loads`` runs whatever code the bytes name,
so the Jupyter server (and anything else that must not run stored code) cannot load a result
to preview it. This module reads the pickle instead: ``pickletools.genops`` decodes the
opcodes of a bounded prefix (``MAX_READ_BYTES``), and a small stack machine rebuilds the plain
data they describe (numbers, strings, bytes, None/True/False, lists, tuples, dicts, sets,
frozensets, shared and self-referencing ones through the memo). Nothing the pickle names is
imported or called: an object it would build by calling code (GLOBAL / STACK_GLOBAL then
REDUCE, NEWOBJ, OBJ, INST, BUILD) becomes an inert placeholder that only carries the class
name, shown as flowbook's live preview shows an object, ``<module.Class>``; numpy arrays and
pandas frames and series also carry their shape when the pickle's arguments tell it. A few
standard-library value types whose constructors only take data (``datetime``, ``Decimal``,
``Fraction``, ``UUID``, paths, ``complex``, ``range``, ``bytearray``) are rebuilt from
those data, so they read as they do live, but only from the arguments their own pickling
writes, which cost them linear work (no int of more than about 4,300 digits, a ``Fraction``
only from digits): anything else is shown by its class.

A hostile pickle cannot make the walk slow. Hashing a set member or dict key, and sorting
them for the preview, costs as much as its nested tuples hold, counting shared ones each
time they are met (a tuple built from the same tuple twice, 80 levels deep, weighs 2**80):
the walk keeps that weight per tuple, frozenset, set and dict, and stops before hashing a
member heavier than ``_MAX_KEY_WEIGHT`` or growing a set's or dict's keys past
``_MAX_KEYS_WEIGHT``. It also stops after ``MAX_CPU_SECONDS`` of the thread's CPU time.

The rebuilt value is rendered by ``flowbook._preview.preview``, so a stored result reads as
the live one did (same limits, same style). A walk that stops early (input cut at the
prefix, an opcode this reader does not follow, more than ``MAX_OPS`` opcodes or
``MAX_CPU_SECONDS``, a value too heavy to hash) shows what it read, closed, followed by
``" …"``.

Stored bytes are checked against their checksum first (``(checksum mismatch)`` if they were
changed); a result file larger than ``MAX_CHECKED_BYTES`` is previewed from its prefix
unchecked, as checking it would read it whole. A result file is only read inside the
store's results directory (``OUTSIDE`` otherwise: a crafted row cannot name another file).
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import hashlib
import io
import os
import pathlib
import pickletools
import re
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from flowbook._preview import preview

__all__ = [
    "CUT",
    "MAX_CHECKED_BYTES",
    "MAX_CPU_SECONDS",
    "MAX_OPS",
    "MAX_READ_BYTES",
    "MISMATCH",
    "OUTSIDE",
    "pickle_preview",
    "stored_preview",
]

MAX_READ_BYTES: Final = 64 * 1024
"""The prefix of a pickle that is read for its preview."""
MAX_OPS: Final = 50_000
"""The most opcodes walked for one preview."""
MAX_CHECKED_BYTES: Final = 1024 * 1024
"""Result files up to this size are checked against their checksum before the preview."""
CUT: Final = " …"
"""Ends a preview whose walk stopped before the whole value was read."""
MISMATCH: Final = "(checksum mismatch)"
OUTSIDE: Final = "(result file outside the results directory)"
MAX_CPU_SECONDS: Final = 0.05
"""The most CPU time (of the calling thread) one walk takes; what was read by then is shown."""
_NAME_CHARS: Final = 100
_MAX_INT_BITS: Final = 14_286
"""An int argument of a rebuilt value has at most this many bits (4,300 decimal digits,
what int -> str converts): larger ones cost the constructors more than linear work."""
_MAX_KEY_WEIGHT: Final = 10_000
"""A set member or dict key weighing more (see ``_Machine.weight``) is not hashed."""
_MAX_KEYS_WEIGHT: Final = 20_000
"""A set's, frozenset's or dict's keys weigh at most this much together (the preview sorts
them, maybe once per place the container is shown)."""
_MAX_HASHED: Final = 200_000
"""The most weight one walk hashes."""
_WEIGHT_CAP: Final = 1 << 40


# -- placeholders ------------------------------------------------------------------------------


class _Placeholder:
    """What the pickle builds by calling code, or a global it names: never called."""

    __slots__ = ("args", "ref", "shape", "state")

    def __init__(self, ref: tuple[str, str] | None = None, args: Any = ()) -> None:
        self.ref = ref  # (module, name) when this is a reference to a global, not an instance
        self.args = args
        self.state: Any = None
        self.shape: tuple[int, ...] | None = None

    def key(self) -> tuple[str, str]:
        kind = type(self)
        return kind.__module__, kind.__qualname__


_classes: dict[tuple[str, str], type[_Placeholder]] = {}


def _clean(text: Any) -> str:
    if not isinstance(text, str):
        return "?"
    shown = "".join(ch if ch.isprintable() and ch != "\x00" else "?" for ch in text[:_NAME_CHARS])
    return shown or "?"


def _class(module: Any, name: Any) -> type[_Placeholder]:
    """The placeholder class shown as ``<module.name>`` (made once per name)."""
    key = (_clean(module), _clean(name))
    found = _classes.get(key)
    if found is None:
        if len(_classes) >= 1024:
            _classes.clear()
        found = type(
            key[1].rsplit(".", 1)[-1],
            (_Placeholder,),
            {"__module__": key[0], "__qualname__": key[1], "__slots__": ()},
        )
        _classes[key] = found
    return found


# the Python 2 names protocols 0 to 2 write (pickle's fix_imports)
_PY2_MODULES: Final = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _ref(module: Any, name: Any) -> _Placeholder:
    # names that are not text (any value STACK_GLOBAL finds) are never hashed or shown
    module, name = _clean(module), _clean(name)
    module = _PY2_MODULES.get(module, module)
    return _class(module, name)(ref=(module, name))


def _instance(cls: Any, args: Any) -> _Placeholder:
    if not isinstance(cls, _Placeholder):
        raise _Stop
    module, name = cls.ref if cls.ref is not None else cls.key()
    return _class(module, name)(args=args)


class _Stop(Exception):
    """The walk cannot go on: what was read so far is shown."""


# -- standard-library values rebuilt from data ------------------------------------------------


def _cheap(args: tuple[Any, ...], kinds: tuple[type, ...]) -> None:
    """Refuse arguments a constructor would do more than linear work with (``TypeError``):
    each must be of one of ``kinds``, and an int at most ``_MAX_INT_BITS`` long."""
    for arg in args:
        kind = type(arg)
        if kind not in kinds or (kind is int and arg.bit_length() > _MAX_INT_BITS):
            raise TypeError("not an argument this value's pickling writes")


def _checked(build: Callable[..., Any], *kinds: type) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        _cheap(args, kinds)
        return build(*args)

    return call


# what Fraction.__reduce__ writes: str(self), or (numerator, denominator)
_FRACTION_TEXT: Final = re.compile(r"-?[0-9]{1,4300}(?:/[0-9]{1,4300})?")


def _fraction(*args: Any) -> fractions.Fraction:
    if len(args) == 1 and type(args[0]) is str and _FRACTION_TEXT.fullmatch(args[0]):
        return fractions.Fraction(args[0])
    if len(args) == 2:
        _cheap(args, (int,))
        return fractions.Fraction(*args)
    raise TypeError("not a fraction's digits")


def _bytes_from_latin1(text: Any, encoding: Any = "latin1") -> bytes:
    if type(text) is not str or type(encoding) is not str or encoding not in ("latin1", "latin-1"):
        raise TypeError("not a latin-1 text")
    return text.encode("latin1")


def _bytearray(data: Any = b"", *rest: Any) -> bytearray:
    _cheap(rest, (str,))
    if type(data) is str and rest in ((), ("latin-1",), ("latin1",)):
        return bytearray(data.encode("latin1"))
    if not isinstance(data, (bytes, bytearray)) or rest:
        raise TypeError("not bytes")  # bytearray(n) would allocate n bytes
    return bytearray(data)


_DATE_ARGS: Final = (bytes, str, int, type(None), datetime.timezone)
_SAFE_CALLS: Final[dict[tuple[str, str], Callable[..., Any]]] = {
    ("datetime", "date"): _checked(datetime.date, *_DATE_ARGS),
    ("datetime", "datetime"): _checked(datetime.datetime, *_DATE_ARGS),
    ("datetime", "time"): _checked(datetime.time, *_DATE_ARGS),
    ("datetime", "timedelta"): _checked(datetime.timedelta, int, float),
    ("datetime", "timezone"): _checked(datetime.timezone, datetime.timedelta, str),
    ("decimal", "Decimal"): _checked(decimal.Decimal, str, int, float),
    ("fractions", "Fraction"): _fraction,
    ("builtins", "complex"): _checked(complex, float, int),
    ("builtins", "range"): _checked(range, int),
    ("builtins", "bytearray"): _bytearray,
    ("_codecs", "encode"): _bytes_from_latin1,
    **{
        (module, name): _checked(getattr(pathlib, name), str)
        for module in ("pathlib", "pathlib._local")
        for name in ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath")
    },
}
# built by the walk itself, which weighs what it hashes
_COLLECTIONS: Final = frozenset({"set", "frozenset", "list", "tuple", "dict"})


def _reduce(func: Any, args: Any, machine: _Machine) -> Any:
    if not isinstance(func, _Placeholder) or func.ref is None or type(args) is not tuple:
        raise _Stop
    module, name = func.ref
    safe = _SAFE_CALLS.get((module, name))
    if safe is not None or (module == "builtins" and name in _COLLECTIONS):
        try:
            return safe(*args) if safe is not None else machine.collection(name, args)
        except _Stop:
            raise
        except Exception:  # not the data these constructors take: shown by its name
            return _instance(func, args)
    if module.startswith("numpy") and name == "_frombuffer":
        array = _class("numpy", "ndarray")(args=args)
        if len(args) > 2:
            array.shape = _shape(args[2])
        return array
    if args and isinstance(args[0], _Placeholder) and args[0].ref is not None:
        # a reconstructor (copyreg._reconstructor, copyreg.__newobj__, numpy's _reconstruct,
        # pandas' _new_Index, Cython's __pyx_unpickle_*): its first argument is the class
        return _instance(args[0], args[1:])
    return _instance(func, args)


def _build(obj: Any, state: Any) -> Any:
    """BUILD: a placeholder keeps its state (read for a shape); the object stays as it is,
    except a UUID, rebuilt from its ``int``."""
    if not isinstance(obj, _Placeholder):
        return obj
    obj.state = state
    module, name = obj.key()
    if (module, name) == ("uuid", "UUID") and isinstance(state, dict):
        number = state.get("int")
        if type(number) is int:
            try:
                return uuid.UUID(int=number)
            except ValueError:
                return obj
    if module == "numpy" and name == "ndarray" and isinstance(state, tuple) and len(state) > 1:
        obj.shape = _shape(state[1])
    elif module.startswith("pandas") and name in ("DataFrame", "Series"):
        obj.shape = _frame_shape(state, 2 if name == "DataFrame" else 1)
    return obj


def _shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, tuple) and all(type(n) is int for n in value):
        return value
    return None


def _frame_shape(state: Any, dims: int) -> tuple[int, ...] | None:
    """A pandas frame's or series' shape from its manager's axes, when the pickle has them."""
    manager = state.get("_mgr") if isinstance(state, dict) else None
    axes: Any = None
    if isinstance(manager, _Placeholder):
        if len(manager.args) > 1 and isinstance(manager.args[1], list):
            axes = manager.args[1]  # pandas 3: BlockManager(blocks, axes)
        elif isinstance(manager.state, tuple):  # older: a "0.14.1" dict in the state
            for part in manager.state:
                if isinstance(part, dict) and isinstance(part.get("0.14.1"), dict):
                    axes = part["0.14.1"].get("axes")
    if not isinstance(axes, list) or len(axes) != dims:
        return None
    lengths = [_length(axis) for axis in axes]
    if any(n is None for n in lengths):
        return None
    known = [n for n in lengths if n is not None]
    return (known[1], known[0]) if dims == 2 else (known[0],)


def _length(index: Any) -> int | None:
    """The length of a pandas index placeholder: a range's, or its data's first dimension."""
    if not isinstance(index, _Placeholder):
        return None
    fields = index.args[0] if index.args and isinstance(index.args[0], dict) else {}
    start, stop, step = (fields.get(k) for k in ("start", "stop", "step"))
    if type(start) is int and type(stop) is int and type(step) is int and step != 0:
        try:
            return len(range(start, stop, step))
        except OverflowError:  # more items than an index can hold: no shape shown
            return None
    found = _first_shape(fields.get("data"), 4)
    return found[0] if found else None


def _first_shape(value: Any, depth: int) -> tuple[int, ...] | None:
    if depth < 0:
        return None
    if isinstance(value, _Placeholder):
        if value.shape:
            return value.shape
        return _first_shape(value.state, depth - 1) or _first_shape(value.args, depth - 1)
    if isinstance(value, (tuple, list)):
        for item in value[:8]:
            found = _first_shape(item, depth - 1)
            if found:
                return found
    return None


# -- the walk ----------------------------------------------------------------------------------

_PUSH_ARG: Final = frozenset(
    {
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG",
        "LONG1",
        "LONG4",
        "FLOAT",
        "BINFLOAT",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "BYTEARRAY8",
    }
)
_CONSTANTS: Final[dict[str, Callable[[], Any]]] = {
    "NONE": lambda: None,
    "NEWTRUE": lambda: True,
    "NEWFALSE": lambda: False,
    "EMPTY_LIST": list,
    "EMPTY_DICT": dict,
    "EMPTY_TUPLE": tuple,
    "EMPTY_SET": set,
}
_IGNORED: Final = frozenset({"PROTO", "FRAME"})
_NOTHING = object()


class _Machine:
    """The data part of pickle's virtual machine; see the module's docstring."""

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[Any, Any] = {}
        # the weights of the tuples, frozensets, sets and dicts built, by id (each kept
        # alive here, so an id is not reused while it is weighed)
        self.weights: dict[int, tuple[Any, int]] = {}
        self.hashed = 0
        self.next_check = 0
        self.deadline = time.thread_time() + MAX_CPU_SECONDS

    def out_of_time(self) -> bool:
        return time.thread_time() > self.deadline

    # -- weights: what hashing or comparing a value costs ----------------------------------

    def weight(self, value: Any) -> int:
        """What hashing ``value`` (or comparing it with an equal one) costs: 1 for a value
        hashed at once, a long int by its length, a tuple or frozenset 1 plus its items'
        weights, a shared item counted each time it is met (capped at ``_WEIGHT_CAP``)."""
        kind = type(value)
        if kind is tuple or kind is frozenset:
            found = self.weights.get(id(value))
            if found is not None and found[0] is value:
                return found[1]
            return self.weigh(value)
        if kind is int:
            bits: int = value.bit_length()
            return 1 + bits // 4096
        return 1

    def weigh(self, value: Any) -> int:
        """Weigh a tuple or frozenset just built (its items are weighed already)."""
        total = 1
        for item in value:
            total += self.weight(item)
            if total >= _WEIGHT_CAP:
                total = _WEIGHT_CAP
                break
        self.weights[id(value)] = (value, total)
        return total

    def _keys_weight(self, target: Any) -> int:
        found = self.weights.get(id(target))
        return found[1] if found is not None and found[0] is target else 1

    def _hash_cost(self, key: Any, total: int) -> int:
        """``total`` plus the weight of ``key``, a member or key about to be hashed into a
        container whose keys weigh ``total``; ``_Stop`` when that is too much."""
        weight = self.weight(key)
        self.hashed += weight
        total += weight
        if weight > _MAX_KEY_WEIGHT or total > _MAX_KEYS_WEIGHT or self.hashed > _MAX_HASHED:
            raise _Stop
        if self.hashed >= self.next_check:
            self.next_check = self.hashed + 2048
            if self.out_of_time():
                raise _Stop
        return total

    # -- containers ------------------------------------------------------------------------

    def add(self, target: Any, items: list[Any], kind: str) -> None:
        """Add ``items`` to the list, dict (keys and values in turn) or set ``target``, one
        by one: when one cannot be hashed in the budget, those before it are kept."""
        if isinstance(target, _Placeholder):
            return  # an object's items (a list or dict subclass): it is shown by its class
        if kind == "list" and type(target) is list:
            target.extend(items)
            return
        if (kind, type(target)) not in (("dict", dict), ("set", set)):
            raise _Stop
        total = self._keys_weight(target)
        try:
            if kind == "dict":
                for at in range(0, len(items) - 1, 2):
                    total = self._hash_cost(items[at], total)
                    target[items[at]] = items[at + 1]
            else:
                for item in items:
                    total = self._hash_cost(item, total)
                    target.add(item)
        finally:
            self.weights[id(target)] = (target, total)

    def frozen(self, items: list[Any]) -> frozenset[Any]:
        members: set[Any] = set()
        self.add(members, items, "set")
        value = frozenset(members)
        self.weights[id(value)] = (value, self._keys_weight(members))
        return value

    def collection(self, name: str, args: tuple[Any, ...]) -> Any:
        """``list``, ``tuple``, ``set``, ``frozenset`` or ``dict`` of plain data (REDUCE)."""
        if len(args) > 1 or (args and type(args[0]) not in _ITERABLES):
            raise TypeError("not plain data")
        items = list(args[0]) if args else []
        if name == "list":
            return items
        if name == "tuple":
            value = tuple(items)
            self.weigh(value)
            return value
        if name == "frozenset":
            return self.frozen(items)
        if name == "set":
            members: set[Any] = set()
            self.add(members, items, "set")
            return members
        if args and type(args[0]) is dict:
            flat = [part for pair in args[0].items() for part in pair]
        else:
            if not all(type(pair) in (tuple, list) and len(pair) == 2 for pair in items):
                raise TypeError("not pairs")
            flat = [part for pair in items for part in pair]
        mapping: dict[Any, Any] = {}
        self.add(mapping, flat, "dict")
        return mapping

    # -- the opcodes -----------------------------------------------------------------------

    def pop_mark(self) -> list[Any]:
        at = self.marks.pop()
        items = self.stack[at:]
        del self.stack[at:]
        return items

    def step(self, name: str, arg: Any) -> None:
        stack = self.stack
        if name in _PUSH_ARG:
            stack.append(arg)
        elif name in _CONSTANTS:
            stack.append(_CONSTANTS[name]())
        elif name == "MARK":
            self.marks.append(len(stack))
        elif name in ("BINGET", "GET", "LONG_BINGET"):
            stack.append(self.memo[arg])
        elif name in ("BINPUT", "PUT", "LONG_BINPUT"):
            self.memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = stack[-1]
        elif name == "APPEND":
            value = stack.pop()
            self.add(stack[-1], [value], "list")
        elif name == "APPENDS":
            items = self.pop_mark()
            self.add(stack[-1], items, "list")
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            self.add(stack[-1], [key, value], "dict")
        elif name == "SETITEMS":
            items = self.pop_mark()
            self.add(stack[-1], items, "dict")
        elif name == "ADDITEMS":
            items = self.pop_mark()
            self.add(stack[-1], items, "set")
        elif name == "TUPLE":
            value = tuple(self.pop_mark())
            self.weigh(value)
            stack.append(value)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            if len(stack) < count:
                raise _Stop
            last = tuple(stack[-count:])
            del stack[-count:]
            self.weigh(last)
            stack.append(last)
        elif name == "LIST":
            stack.append(self.pop_mark())
        elif name == "DICT":
            items = self.pop_mark()
            mapping: dict[Any, Any] = {}
            stack.append(mapping)
            self.add(mapping, items, "dict")
        elif name == "FROZENSET":
            stack.append(self.frozen(self.pop_mark()))
        elif name == "POP":
            stack.pop()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            stack.append(_ref(module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            stack.append(_ref(module, attr))
        elif name == "REDUCE":
            args = stack.pop()
            stack.append(_reduce(stack.pop(), args, self))
        elif name == "NEWOBJ":
            args = stack.pop()
            stack.append(_instance(stack.pop(), args))
        elif name == "NEWOBJ_EX":
            stack.pop()  # keyword arguments
            args = stack.pop()
            stack.append(_instance(stack.pop(), args))
        elif name == "OBJ":
            items = self.pop_mark()
            stack.append(_instance(items[0], tuple(items[1:])))
        elif name == "INST":
            module, _, attr = str(arg).partition(" ")
            stack.append(_instance(_ref(module, attr), tuple(self.pop_mark())))
        elif name == "BUILD":
            state = stack.pop()
            stack[-1] = _build(stack[-1], state)
        elif name not in _IGNORED:
            raise _Stop  # extensions, persistent ids, out-of-band buffers, unknown opcodes

    def known(self) -> Any:
        """What was read of an unfinished value: open marks closed into their containers."""
        stack = self.stack
        while self.marks:
            items = self.pop_mark()
            if not stack:
                stack.append(tuple(items))
                continue
            target = stack[-1]
            kind = next((k for t, k in _KINDS if type(target) is t), None)
            if kind is None:
                stack.append(tuple(items))  # the arguments of a call not yet made
                continue
            try:
                self.add(target, items, kind)  # a dict's unpaired last key is left out
            except Exception:  # an unhashable key, a key too heavy to hash
                pass
        return stack[0] if stack else _NOTHING


_KINDS: Final = ((list, "list"), (dict, "dict"), (set, "set"))
_ITERABLES: Final = (list, tuple, set, frozenset, dict)


def pickle_preview(data: bytes | bytearray | memoryview) -> str:
    """The preview of the value pickled in ``data`` (or in its first bytes), never unpickled.

    Reads at most ``MAX_READ_BYTES`` and ``MAX_OPS`` opcodes in ``MAX_CPU_SECONDS``; a walk
    that stops before the pickle's end shows what it read followed by ``CUT``.
    """
    machine = _Machine()
    stream = io.BytesIO(bytes(memoryview(data)[:MAX_READ_BYTES]))
    walked = 0
    try:
        for opcode, arg, _position in pickletools.genops(stream):
            walked += 1
            if walked > MAX_OPS or (not walked & 0xF and machine.out_of_time()):
                break
            if opcode.name == "STOP":
                if len(machine.stack) == 1 and not machine.marks:
                    return preview(machine.stack[0])
                break
            machine.step(opcode.name, arg)
    except Exception:  # input cut short, a bad or unknown opcode, a malformed structure
        pass
    try:
        known = machine.known()
        shown = "" if known is _NOTHING else preview(known)
    except Exception:  # an odd partial value: nothing of it is shown
        shown = ""
    return (shown + CUT) if shown else CUT.strip()


# -- stored bytes -----------------------------------------------------------------------------


def _matches(chunks: list[bytes] | Any, expected: str | None) -> bool:
    if expected is None:
        return True
    if len(expected) == 64:
        sha = hashlib.sha256()
        for chunk in chunks:
            sha.update(chunk)
        return sha.hexdigest() == expected
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}" == expected


def _file_chunks(handle: Any, first: bytes) -> Any:
    yield first
    while True:
        chunk = handle.read(1024 * 1024)
        if not chunk:
            return
        yield chunk


def stored_preview(
    data: bytes | None, path: Path | None, checksum: str | None, *, root: Path
) -> str | None:
    """The preview of a stored result: its inline bytes ``data``, else the file ``path``
    (only its first ``MAX_READ_BYTES`` kept in memory), which must be inside the results
    directory ``root`` once links are resolved (else ``OUTSIDE``: nothing is read).
    ``MISMATCH`` when the bytes do not match ``checksum`` (None: not checked); None when
    there is no value."""
    if data is not None:
        if not _matches([data], checksum):
            return MISMATCH
        return pickle_preview(data)
    if path is None:
        return None
    try:
        resolved = path.resolve()
        if not resolved.is_relative_to(root.resolve()):
            return OUTSIDE
        with open(resolved, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(MAX_READ_BYTES)
            if size <= MAX_CHECKED_BYTES and not _matches(_file_chunks(handle, head), checksum):
                return MISMATCH
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of links (Python 3.11)
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        return f"(result file cannot be read: {reason})"
    return pickle_preview(head)
