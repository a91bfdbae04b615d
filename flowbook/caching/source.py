"""Normalised source of a task's function, so edits to its body invalidate cached results.

Design: the text is what ``inspect.getsource`` returns (notebook cells included, through
linecache) with everything that does not change behaviour removed: comments, blank lines,
trailing whitespace, the function's own decorator lines and the common indentation. Comments
are found with ``tokenize``, so a ``#`` inside a string stays, and the lines inside a
multi-line string (a docstring, say) are kept verbatim, since they are part of the code.

When there is no source (a function built with ``exec``, a builtin), the text is built from
the code object instead: bytecode, constants (nested code objects recursively), names and
variable names, but never file names or line numbers, so it is as stable as the source.

``source_hash`` memoises per function object and notices when ``__code__`` is replaced.
``code_source_hash`` is the same for one code object: the source of the function itself,
never of what a decorator wrapped in it (``inspect.getsource`` of a function follows
``__wrapped__``), which is what a helper's key needs.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import linecache
import textwrap
import tokenize
import types
import weakref
from collections.abc import Callable

__all__ = ["code_source_hash", "normalized_source", "source_hash"]


def normalized_source(fn: Callable[..., object] | types.CodeType) -> str:
    """``fn``'s source without comments, blank lines, trailing spaces, decorators or indent."""
    try:
        source = _code_source(fn) if isinstance(fn, types.CodeType) else inspect.getsource(fn)
    except (OSError, TypeError, tokenize.TokenError, SyntaxError):
        # Since 3.12 getsource can also fail in tokenize, when the cached lines do not
        # match the code (a cell edited behind linecache's back, odd line separators).
        return _code_text_for(fn)
    return _normalize(source)


def _code_source(code: types.CodeType) -> str:
    # What inspect.getsource does for a code object, without its search of sys.modules for
    # the module (a millisecond per function in a kernel that has imported a lot).
    linecache.checkcache(code.co_filename)
    lines = linecache.getlines(code.co_filename)
    start = code.co_firstlineno - 1
    if not lines or not 0 <= start < len(lines):
        raise OSError(f"no source lines for {code.co_name} in {code.co_filename}")
    return "".join(inspect.getblock(lines[start:]))


def _normalize(source: str) -> str:
    # Split as tokenize's readline does (on "\n" only), so token rows index these lines even
    # when a string holds a form feed or a Unicode line separator.
    lines = source.split("\n")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        # A fragment the tokenizer rejects (e.g. the line of a lambda inside an unclosed
        # call): keep the comments, drop only what is certainly layout.
        tokens = []
    verbatim: set[int] = set()  # 0-based lines whose end lies inside a string
    dropped: set[int] = set()  # 0-based decorator lines
    comments: dict[int, int] = {}  # 0-based line -> column where its comment starts
    in_decorators = True
    at_line_start = True
    decorator_start: int | None = None
    for token in tokens:
        kind, text, (start_row, start_col), (end_row, _), _ = token
        if kind == tokenize.COMMENT:
            comments[start_row - 1] = start_col
            continue
        if kind in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING):
            continue
        if end_row > start_row and kind != tokenize.NEWLINE:
            verbatim.update(range(start_row - 1, end_row - 1))
        if in_decorators:
            if kind == tokenize.NEWLINE:
                if decorator_start is not None:
                    dropped.update(range(decorator_start, end_row))
                    decorator_start = None
                at_line_start = True
                continue
            if at_line_start:
                if kind == tokenize.OP and text == "@":
                    decorator_start = start_row - 1
                else:
                    in_decorators = False
                at_line_start = False
    kept: list[str] = []
    for number, line in enumerate(lines):
        if number in dropped:
            continue
        if number in comments:
            line = line[: comments[number]]
        if number in verbatim:
            kept.append(line)
            continue
        line = line.rstrip()
        if line.strip():
            kept.append(line)
    return textwrap.dedent("\n".join(kept))


def _code_text_for(fn: object) -> str:
    code = fn if isinstance(fn, types.CodeType) else _find_code(fn)
    if code is None:
        module = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        return f"<no source: {module}.{qualname}>"
    return _code_text(code)


def _find_code(fn: object) -> types.CodeType | None:
    seen: set[int] = set()
    while id(fn) not in seen:
        seen.add(id(fn))
        code = getattr(fn, "__code__", None)
        if isinstance(code, types.CodeType):
            return code
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif isinstance(fn, types.MethodType):
            fn = fn.__func__
        elif hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        else:
            call = inspect.getattr_static(type(fn), "__call__", None)
            if isinstance(fn, type) or not isinstance(call, types.FunctionType):
                return None
            fn = call
    return None


def _code_text(code: types.CodeType, indent: str = "") -> str:
    # Everything that determines behaviour, nothing that depends on where the code was
    # compiled (file name, line numbers, column positions).
    lines = [
        f"{indent}code {code.co_name}"
        f" args={code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount}"
        f" flags={code.co_flags & 0xFFFF}",  # without the __future__ flags
        f"{indent}  bytecode {code.co_code.hex()}",
        f"{indent}  names {code.co_names!r}",
        f"{indent}  varnames {code.co_varnames!r}",
        f"{indent}  freevars {code.co_freevars!r} cellvars {code.co_cellvars!r}",
    ]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            lines.append(_code_text(const, indent + "  "))
        else:
            lines.append(f"{indent}  const {_const_text(const)}")
    return "\n".join(lines)


def _const_text(const: object) -> str:
    # repr() would do, except that a frozenset constant (``x in {"a", "b"}``) lists its
    # elements in an order that depends on PYTHONHASHSEED.
    if isinstance(const, frozenset):
        return "frozenset({" + ", ".join(sorted(map(_const_text, const))) + "})"
    if isinstance(const, tuple):
        inner = ", ".join(map(_const_text, const))
        return f"({inner},)" if len(const) == 1 else f"({inner})"
    if isinstance(const, types.CodeType):
        return _code_text(const)
    return repr(const)


# fn -> (the __code__ it had when hashed, the hash)
_MEMO: weakref.WeakKeyDictionary[object, tuple[object, str]] = weakref.WeakKeyDictionary()


def source_hash(fn: Callable[..., object]) -> str:
    """Hex sha256 of ``normalized_source(fn)``, memoised while ``fn.__code__`` is unchanged."""
    code = getattr(fn, "__code__", None)
    if code is None:
        # Only functions are memoised: other callables may compare equal to one another,
        # which a WeakKeyDictionary would take for the same key.
        return _digest(fn)
    try:
        memo = _MEMO.get(fn)
    except TypeError:
        return _digest(fn)
    if memo is not None and memo[0] is code:
        return memo[1]
    digest = _digest(fn)
    try:
        _MEMO[fn] = (code, digest)
    except TypeError:
        pass
    return digest


def _digest(fn: Callable[..., object]) -> str:
    return hashlib.sha256(normalized_source(fn).encode("utf-8", "surrogatepass")).hexdigest()


# id(code) -> (weak reference, hash); the reference's callback drops the entry when the code
# object goes. Not keyed by the code object itself: equal code objects may come from
# different source text (code equality ignores the file).
_CODE_MEMO: dict[int, tuple[weakref.ref[types.CodeType], str]] = {}


def code_source_hash(code: types.CodeType) -> str:
    """Hex sha256 of the normalised source of ``code`` itself, memoised per code object."""
    memo = _CODE_MEMO.get(id(code))
    if memo is not None:
        return memo[1]
    digest = hashlib.sha256(normalized_source(code).encode("utf-8", "surrogatepass")).hexdigest()
    key = id(code)

    def forget(_: object) -> None:
        _CODE_MEMO.pop(key, None)

    _CODE_MEMO[key] = (weakref.ref(code, forget), digest)
    return digest
