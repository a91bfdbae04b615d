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
those data, so they read as they do live.

The rebuilt value is rendered by ``flowbook._preview.preview``, so a stored result reads as
the live one did (same limits, same style). A walk that stops early (input cut at the
prefix, an opcode this reader does not follow, more than ``MAX_OPS`` opcodes) shows what it
read, closed, followed by ``" …"``.

Stored bytes are checked against their checksum first (``(checksum mismatch)`` if they were
changed); a result file larger than ``MAX_CHECKED_BYTES`` is previewed from its prefix
unchecked, as checking it would read it whole.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import hashlib
import io
import pathlib
import pickletools
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from flowbook._preview import preview

__all__ = [
    "CUT",
    "MAX_CHECKED_BYTES",
    "MAX_OPS",
    "MAX_READ_BYTES",
    "MISMATCH",
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
_NAME_CHARS: Final = 100


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
    module = _PY2_MODULES.get(module, module)
    return _class(module, name)(ref=(str(module), str(name)))


def _instance(cls: Any, args: Any) -> _Placeholder:
    if not isinstance(cls, _Placeholder):
        raise _Stop
    module, name = cls.ref if cls.ref is not None else cls.key()
    return _class(module, name)(args=args)


class _Stop(Exception):
    """The walk cannot go on: what was read so far is shown."""


# -- standard-library values rebuilt from data ------------------------------------------------


def _bytes_from_latin1(text: Any, encoding: Any = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise TypeError("not a latin-1 text")
    return text.encode("latin1")


def _bytearray(data: Any = b"", *rest: Any) -> bytearray:
    if isinstance(data, str) and rest in ((), ("latin-1",), ("latin1",)):
        return bytearray(data.encode("latin1"))
    if not isinstance(data, (bytes, bytearray)) or rest:
        raise TypeError("not bytes")  # bytearray(n) would allocate n bytes
    return bytearray(data)


def _collection(kind: Callable[[Any], Any]) -> Callable[..., Any]:
    def build(items: Any = ()) -> Any:
        if not isinstance(items, (list, tuple, set, frozenset, dict)):
            raise TypeError("not plain data")
        return kind(items)

    return build


_SAFE_CALLS: Final[dict[tuple[str, str], Callable[..., Any]]] = {
    ("datetime", "date"): datetime.date,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("decimal", "Decimal"): decimal.Decimal,
    ("fractions", "Fraction"): fractions.Fraction,
    ("builtins", "complex"): complex,
    ("builtins", "range"): range,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "set"): _collection(set),
    ("builtins", "frozenset"): _collection(frozenset),
    ("builtins", "list"): _collection(list),
    ("builtins", "tuple"): _collection(tuple),
    ("builtins", "dict"): _collection(dict),
    ("_codecs", "encode"): _bytes_from_latin1,
    **{
        (module, name): getattr(pathlib, name)
        for module in ("pathlib", "pathlib._local")
        for name in ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath")
    },
}
# arguments a safe call may receive: data, and the values safe calls made
_DATA_ARGS: Final = (
    str,
    bytes,
    int,
    float,
    type(None),
    tuple,
    list,
    set,
    frozenset,
    dict,
    datetime.timedelta,
    datetime.timezone,
)


def _reduce(func: Any, args: Any) -> Any:
    if not isinstance(func, _Placeholder) or func.ref is None or not isinstance(args, tuple):
        raise _Stop
    module, name = func.ref
    safe = _SAFE_CALLS.get((module, name))
    if safe is not None and all(type(a) in _DATA_ARGS for a in args):
        try:
            return safe(*args)
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
        return len(range(start, stop, step))
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
            _add(stack[-1], [value], "list")
        elif name == "APPENDS":
            items = self.pop_mark()
            _add(stack[-1], items, "list")
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            _add(stack[-1], [key, value], "dict")
        elif name == "SETITEMS":
            items = self.pop_mark()
            _add(stack[-1], items, "dict")
        elif name == "ADDITEMS":
            items = self.pop_mark()
            _add(stack[-1], items, "set")
        elif name == "TUPLE":
            stack.append(tuple(self.pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            if len(stack) < count:
                raise _Stop
            last = tuple(stack[-count:])
            del stack[-count:]
            stack.append(last)
        elif name == "LIST":
            stack.append(self.pop_mark())
        elif name == "DICT":
            items = self.pop_mark()
            stack.append(dict(zip(items[::2], items[1::2], strict=False)))
        elif name == "FROZENSET":
            stack.append(frozenset(self.pop_mark()))
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
            stack.append(_reduce(stack.pop(), args))
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
            kind = next((k for t, k in _KINDS if isinstance(target, t)), None)
            if kind is None:
                stack.append(tuple(items))  # the arguments of a call not yet made
                continue
            try:
                _add(target, items, kind)  # a dict's unpaired last key is left out
            except Exception:  # an unhashable key read from a corrupt pickle
                pass
        return stack[0] if stack else _NOTHING


_KINDS: Final = ((list, "list"), (dict, "dict"), (set, "set"))


def _add(target: Any, items: list[Any], kind: str) -> None:
    if isinstance(target, _Placeholder):
        return  # an object's items (a list or dict subclass): it is shown by its class
    if kind == "list" and isinstance(target, list):
        target.extend(items)
    elif kind == "dict" and isinstance(target, dict):
        for at in range(0, len(items) - 1, 2):
            target[items[at]] = items[at + 1]
    elif kind == "set" and isinstance(target, set):
        target.update(items)
    else:
        raise _Stop


def pickle_preview(data: bytes | bytearray | memoryview) -> str:
    """The preview of the value pickled in ``data`` (or in its first bytes), never unpickled.

    Reads at most ``MAX_READ_BYTES`` and ``MAX_OPS`` opcodes; a walk that stops before the
    pickle's end shows what it read followed by ``CUT``.
    """
    machine = _Machine()
    stream = io.BytesIO(bytes(memoryview(data)[:MAX_READ_BYTES]))
    walked = 0
    try:
        for opcode, arg, _position in pickletools.genops(stream):
            walked += 1
            if walked > MAX_OPS:
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


def stored_preview(data: bytes | None, path: Path | None, checksum: str | None) -> str | None:
    """The preview of a stored result: its inline bytes ``data``, else the file ``path``
    (only its first ``MAX_READ_BYTES`` kept in memory). ``MISMATCH`` when the bytes do not
    match ``checksum`` (None: not checked); None when there is no value."""
    if data is not None:
        if not _matches([data], checksum):
            return MISMATCH
        return pickle_preview(data)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            size = path.stat().st_size
            head = handle.read(MAX_READ_BYTES)
            if size <= MAX_CHECKED_BYTES and not _matches(_file_chunks(handle, head), checksum):
                return MISMATCH
    except OSError as exc:
        return f"(result file cannot be read: {exc.strerror or type(exc).__name__})"
    return pickle_preview(head)
