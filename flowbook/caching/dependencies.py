"""What code a task runs, for its cache key: its source, its closure, and the user's helpers.

Design: ``code_identity(fn)`` describes the code behind a task function in three parts:

* ``source``: the hash of the function's own normalised source (``source.py``);
* ``closure``: one hash per closure variable, of its value (``stable_hash``), so that tasks
  made by one factory with different values never share cache entries;
* ``helpers``: one hash per function of the user's that the task calls, transitively: the
  normalised source of each, with its closure values and defaults. They are found from the
  global names the code loads (its ``LOAD_GLOBAL`` instructions, nested code objects
  included) looked up in ``fn.__globals__``; a module found there is searched for the
  attribute names the code uses, a class for its methods, a flowbook task or flow for its
  function, a decorated function for what it wraps (``__wrapped__``). "The user's" means
  defined in ``__main__`` (a notebook or script) or in a module outside the standard
  library, site-packages and flowbook itself. Library code, data held in globals and
  objects reached only at run time (``getattr``, methods of arguments) are not part of it.

It is source text and values, never object ids, so it is the same across cells, kernel
restarts and processes. Discovery (disassembly, source, hashing) is done once per function
and memoised; each later call only checks, by identity, that what it found is still in
place: the same objects under the names it resolved, no new global shadowing a builtin it
used, the same ``__code__`` for every function (``%autoreload`` replaces it), the same
objects in their closure cells. Anything else makes it discover again.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import importlib.util
import inspect
import linecache
import os
import site
import sys
import sysconfig
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from flowbook.caching.hashing import UnhashableInputError, stable_hash
from flowbook.caching.source import code_source_hash, source_hash

__all__ = ["CodeIdentity", "code_identity"]


class CodeIdentity:
    """The code behind a task function, as hashes (see the module's docstring)."""

    __slots__ = ("closure", "digest", "helpers", "problem", "source")

    def __init__(
        self,
        source: str,
        closure: tuple[tuple[str, str], ...],
        helpers: tuple[tuple[str, str], ...],
        problem: str | None,
    ) -> None:
        self.source = source
        """Hash of the function's own normalised source."""
        self.closure = closure
        """``(variable, hash of its value)`` for each closure variable that is not code."""
        self.helpers = helpers
        """``(helper name, hash)`` for each function of the user's the task calls."""
        self.problem = problem
        """Why no cache key can be made for this code (a closure value without stable
        content), or None."""
        self.digest: str | None = None
        """Hash of ``closure`` and ``helpers``; None when both are empty."""
        if closure or helpers:
            text = "\n".join(
                [f"closure {name}={value}" for name, value in closure]
                + [f"helper {name}={value}" for name, value in helpers]
            )
            self.digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def __repr__(self) -> str:
        helpers = ", ".join(name for name, _ in self.helpers)
        closure = ", ".join(name for name, _ in self.closure)
        return f"CodeIdentity(source={self.source[:12]}, closure=[{closure}], helpers=[{helpers}])"


# --------------------------------------------------------------------------- the memo

_Check = Callable[[Any], bool]


def _compile_check(
    owner: object,
    present: Iterable[tuple[Mapping[str, Any], dict[str, Any]]],
    absent: Iterable[tuple[Mapping[str, Any], set[str]]],
    functions: list[types.FunctionType],
    cells: list[tuple[types.CellType, int | None]],
    contents: list[Any],
) -> _Check:
    """A function of ``owner`` (the task's callable) that tells, by identity, whether what a
    discovery relied on still holds.

    It runs on every keyed call, so it is generated as one boolean expression (as dataclasses
    generate their methods): a few tens of nanoseconds per thing checked, no loops. It never
    holds ``owner`` itself (nor a task or flow of it): it is given it, so that the memo does
    not keep a function alive that nothing else uses (a task of a cell run again).
    """
    scope: dict[str, Any] = {"_empty": _cell_is_empty}
    terms: list[str] = []

    def bind(value: Any) -> str:
        name = f"v{len(scope)}"
        scope[name] = value
        return name

    def same(found: str, value: Any) -> str:
        if value is owner:
            return f"{found} is owner"
        if _code_inside(value)[:1] == [owner]:  # a task or flow of the owner, say
            return f"_inside({found}) is owner"
        return f"{found} is {bind(value)}"

    scope["_inside"] = _first_inside
    for mapping, found in present:  # the same objects under the names resolved
        where = bind(mapping)
        terms.extend(same(f"{where}[{name!r}]", value) for name, value in found.items())
    for mapping, names in absent:  # no new global shadowing a builtin that was used
        where = bind(mapping)
        terms.extend(f"{name!r} not in {where}" for name in sorted(names))
    for fn in functions:  # the same code (%autoreload replaces __code__ in place)
        function = "owner" if fn is owner else bind(fn)
        terms.append(f"{function}.__code__ is {bind(fn.__code__)}")
    for (cell, position), value in zip(cells, contents, strict=True):  # same closure values
        # the owner's own cells are reached through it: a cell may hold its task
        where = bind(cell) if position is None else f"owner.__closure__[{position}]"
        if value is _EMPTY:
            terms.append(f"_empty({where})")
        else:
            terms.append(same(f"{where}.cell_contents", value))
    body = " and ".join(terms) or "True"
    source = (
        "def holds(owner):\n"
        "    try:\n"
        f"        return {body}\n"
        "    except (KeyError, ValueError):  # a name deleted, a cell emptied\n"
        "        return False\n"
    )
    exec(compile(source, "<flowbook code identity check>", "exec"), scope)
    check: _Check = scope["holds"]
    return check


def _first_inside(value: Any) -> Any:
    inside = _code_inside(value)
    return inside[0] if inside else None


def _cell_is_empty(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return True
    return False


# id(fn) -> (weak reference to fn, its identity, the check of what that relied on). A plain
# dict, looked up on every keyed call (a WeakKeyDictionary builds a weak reference per
# look-up); the reference's callback removes the entry when fn goes, before its id can be
# reused.
_MEMO: dict[int, tuple[weakref.ref[Any], CodeIdentity, _Check]] = {}


def code_identity(fn: Callable[..., object]) -> CodeIdentity:
    """The code behind ``fn``; found once, then checked by identity on each call."""
    entry = _MEMO.get(id(fn))
    if entry is not None and entry[2](fn):
        return entry[1]
    identity, check = _discover(fn)
    key = id(fn)
    try:
        ref = weakref.ref(fn, lambda _, key=key: _forget(key))  # type: ignore[misc]
    except TypeError:  # not weakly referenceable (a builtin): found again each time
        return identity
    _MEMO[key] = (ref, identity, check)
    return identity


def _forget(key: int) -> None:
    _MEMO.pop(key, None)


# --------------------------------------------------------------------------- user code

_LIBRARY_MARKERS: Final = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")
_USER_MODULES: dict[str, bool] = {}


@functools.cache
def _library_roots() -> tuple[str, ...]:
    roots: set[str] = set()
    paths = sysconfig.get_paths()
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        if name in paths:
            roots.add(paths[name])
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except AttributeError:  # a virtualenv's site module may lack them
        pass
    roots.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # flowbook
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots if root)


def _is_user_module(name: object) -> bool:
    """Whether functions of module ``name`` are the user's (see the module's docstring)."""
    if not isinstance(name, str) or name == "__main__":
        return True  # None: code built with exec; __main__: a notebook or a script
    known = _USER_MODULES.get(name)
    if known is not None:
        return known
    if name == "flowbook" or name.startswith("flowbook."):
        mine = False
    else:
        module = sys.modules.get(name)
        # A name no module has: code exec'd under a made-up __name__, the user's.
        mine = True if module is None else _is_user_file(getattr(module, "__file__", None))
    _USER_MODULES[name] = mine
    return mine


def _is_user_function(fn: types.FunctionType) -> bool:
    # Both: functools.wraps gives a library's wrapper the module of what it wraps.
    return _is_user_module(fn.__module__) and not _is_library_file(fn.__code__.co_filename)


@functools.lru_cache(maxsize=1024)
def _is_library_file(path: str) -> bool:
    return os.path.isabs(path) and not _is_user_file(path)


def _is_user_file(path: object) -> bool:
    if not isinstance(path, str) or not path:
        return False  # built-in and frozen modules
    real = os.path.realpath(path)
    if any(marker in real for marker in _LIBRARY_MARKERS):
        return False
    return not real.startswith(_library_roots())


# --------------------------------------------------------------------------- discovery


def _names_in(code: types.CodeType) -> tuple[set[str], set[str], list[tuple[str, int]]]:
    """Global names ``code`` loads, every name it uses, and the modules it imports.

    Nested code objects (comprehensions, lambdas, inner functions) are included.
    """
    globals_: set[str] = set()
    names: set[str] = set()
    imports: list[tuple[str, int]] = []
    stack = [code]
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        previous: list[dis.Instruction] = []
        for instruction in dis.get_instructions(current):
            if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                globals_.add(instruction.argval)
            elif instruction.opname == "IMPORT_NAME":
                # compiled as LOAD_CONST level; LOAD_CONST fromlist; IMPORT_NAME name
                level = previous[-2].argval if len(previous) >= 2 else 0
                level = level if isinstance(level, int) else 0
                imports.append((instruction.argval, level))
                fromlist = previous[-1].argval if previous else None
                if isinstance(fromlist, tuple):
                    # ``from a import b``: b may be a submodule
                    imports.extend(
                        (f"{instruction.argval}.{member}" if instruction.argval else member, level)
                        for member in fromlist
                        if isinstance(member, str) and member != "*"
                    )
            previous.append(instruction)
            del previous[:-2]
        stack.extend(const for const in current.co_consts if isinstance(const, types.CodeType))
    return globals_, names, imports


class _Discovery:
    """One walk from a task function through the user's code it reaches."""

    def __init__(self) -> None:
        self.present: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] = {}
        self.absent: dict[int, tuple[Mapping[str, Any], set[str]]] = {}
        self.functions: list[types.FunctionType] = []
        # closure cells, with their position when they are the owner's own
        self.cells: list[tuple[types.CellType, int | None]] = []
        self.contents: list[Any] = []
        self.helpers: dict[str, str] = {}
        self.problem: str | None = None
        self.seen: set[int] = set()
        self.work: list[tuple[types.FunctionType, str | None]] = []
        self.closure: list[tuple[str, str]] = []  # the task function's
        self.looked_up: dict[int, set[str]] = {}  # id(module) -> attribute names looked up
        self.owner: object = None  # the task's callable

    # -- what the result relies on --------------------------------------------------------
    def saw(self, mapping: Mapping[str, Any], name: str, value: Any) -> None:
        self.present.setdefault(id(mapping), (mapping, {}))[1][name] = value

    def missed(self, mapping: Mapping[str, Any], name: str) -> None:
        self.absent.setdefault(id(mapping), (mapping, set()))[1].add(name)

    def finish(self, owner: object) -> _Check:
        return _compile_check(
            owner,
            self.present.values(),
            self.absent.values(),
            self.functions,
            self.cells,
            self.contents,
        )

    # -- the walk -------------------------------------------------------------------------
    def add(self, value: Any, attributes: Iterable[str] = ()) -> None:
        """Follow ``value`` if it is the user's code: a function, class, module, task, ..."""
        pending: list[Any] = [value]
        while pending:
            value = pending.pop()
            if id(value) in self.seen:
                continue
            if isinstance(value, types.FunctionType):
                self.seen.add(id(value))
                if _is_user_function(value):
                    self.work.append((value, _label(value)))
            elif isinstance(value, type):
                self.seen.add(id(value))
                if _is_user_module(value.__module__):
                    pending.extend(self.methods_of(value))
            elif isinstance(value, types.ModuleType):
                # Not marked seen: each code that uses the module brings its own names.
                if _is_user_module(value.__name__) and _is_user_file(
                    getattr(value, "__file__", None)
                ):
                    namespace = vars(value)
                    looked = self.looked_up.setdefault(id(value), set())
                    for name in set(attributes) - looked:
                        looked.add(name)
                        if name in namespace:
                            member = namespace[name]
                            if _is_code(member):
                                self.saw(namespace, name, member)
                                pending.append(member)
            else:
                pending.extend(_code_inside(value))

    def methods_of(self, cls: type) -> list[Any]:
        """The functions of ``cls`` and of the user's classes it derives from."""
        found: list[Any] = []
        for klass in cls.__mro__:
            if klass is not cls and id(klass) in self.seen:
                continue
            self.seen.add(id(klass))
            if klass is object or not _is_user_module(klass.__module__):
                continue
            namespace = klass.__dict__
            for name, member in namespace.items():
                functions = _functions_of_member(member)
                if functions:
                    self.saw(namespace, name, member)
                    found.extend(functions)
        return found

    def follow(self, fn: types.FunctionType, label: str | None) -> None:
        """Record ``fn`` (the task's function when ``label`` is None, else a helper)."""
        self.functions.append(fn)
        code = fn.__code__
        namespace = fn.__globals__
        global_names, names, imports = _names_in(code)
        for name in sorted(global_names):
            if name in namespace:
                value = namespace[name]
                if _is_code(value):
                    self.saw(namespace, name, value)
                    self.add(value, names)
            else:
                self.missed(namespace, name)  # a builtin: watched for a global shadowing it
        for name, level in imports:
            self.imported(name, level, namespace, names)
        closure = self.closure_of(fn, label, names)
        if label is not None:
            parts = [code_source_hash(fn.__code__), *(f"{var}={value}" for var, value in closure)]
            parts.append(f"defaults={_lenient_hash((fn.__defaults__, fn.__kwdefaults__))}")
            digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
            while label in self.helpers and self.helpers[label] != digest:
                label += "'"  # two helpers of one name (re-defined under another module)
            self.helpers[label] = digest
        else:
            self.closure = closure

    def closure_of(
        self, fn: types.FunctionType, label: str | None, names: set[str]
    ) -> list[tuple[str, str]]:
        """Hashes of the closure values of ``fn`` that are not code (code is followed)."""
        hashed: list[tuple[str, str]] = []
        cells = fn.__closure__ or ()
        generated = label is not None and _has_no_source(fn)
        own = label is None and fn is self.owner
        for position, (var, cell) in enumerate(zip(fn.__code__.co_freevars, cells, strict=True)):
            self.cells.append((cell, position if own else None))
            try:
                value = cell.cell_contents
            except ValueError:  # not assigned yet
                self.contents.append(_EMPTY)
                hashed.append((var, "<empty>"))
                continue
            self.contents.append(value)
            if _is_code(value):
                self.add(value, names)
                if isinstance(value, types.ModuleType) or _is_plain_user_code(value):
                    continue  # followed: its source is part of the helpers
            if generated or (label is not None and not _can_hash(value)):
                # generated methods (dataclasses, ...) close over field types and
                # sentinels, and a helper (a user's decorator, say) may close over a lock:
                # their content, when it has one, else their type; the task stays cached
                hashed.append((var, _lenient_hash(value)))
                continue
            try:
                hashed.append((var, stable_hash(value)))
            except UnhashableInputError as exc:
                if self.problem is None:
                    whose = "the task" if label is None else f"helper {label!r}"
                    self.problem = (
                        f"closure variable {var!r} of {whose} holds a value that cannot be "
                        f"hashed by content ({exc})"
                    )
                hashed.append((var, "<unhashable>"))
        return hashed

    def imported(self, name: str, level: int, namespace: dict[str, Any], names: set[str]) -> None:
        """A module the code imports in its body: followed if it is already imported."""
        if level:
            package = namespace.get("__package__")
            if not isinstance(package, str) or not package:
                return
            try:
                name = importlib.util.resolve_name("." * level + name, package)
            except (ImportError, ValueError):
                return
        module = sys.modules.get(name)
        if module is None:
            # Not imported yet (the body imports it when it runs): discovered again once
            # it is, and meanwhile, if it is the user's, keyed by its whole file.
            text = _unimported_source(name)
            if text is not None:
                self.missed(sys.modules, name)
                self.helpers[f"module {name}"] = hashlib.sha256(text).hexdigest()
            elif "." not in name:
                self.missed(sys.modules, name)
            return
        self.saw(sys.modules, name, module)
        self.add(module, names)
        # ``import a.b.c`` binds ``a``: the attribute names reach the submodules.
        head = name.partition(".")[0]
        if head != name and head in sys.modules:
            self.add(sys.modules[head], names)


_EMPTY: Final = object()


def _label(fn: types.FunctionType) -> str:
    module = fn.__module__
    qualname = fn.__qualname__
    if "__wrapped__" in fn.__dict__:
        # functools.wraps copied the wrapped function's name: name the wrapper by its code
        qualname = getattr(fn.__code__, "co_qualname", qualname)
    return qualname if module in (None, "__main__") else f"{module}.{qualname}"


def _is_plain_user_code(value: Any) -> bool:
    """A function or class of the user's, or a task or flow of such a function: code and
    nothing else, so following it is enough (a partial or bound method also carries data)."""
    if not isinstance(value, (types.FunctionType, type)):
        inside = _code_inside(value)
        if not inside or isinstance(value, (types.MethodType, functools.partial)):
            return False
        value = inside[0]
    if isinstance(value, types.FunctionType):
        return _is_user_function(value)
    return isinstance(value, type) and _is_user_module(value.__module__)


def _has_no_source(fn: types.FunctionType) -> bool:
    # Generated code (dataclass methods, namedtuple constructors) is compiled from strings
    # that nothing keeps; notebook cells and files are in linecache or on disk.
    return not linecache.getlines(fn.__code__.co_filename)


def _is_code(value: Any) -> bool:
    """Whether a global or closure value may lead to code (not data)."""
    return isinstance(
        value,
        (types.FunctionType, type, types.ModuleType, types.MethodType, functools.partial),
    ) or bool(_code_inside(value))


def _code_inside(value: Any) -> list[Any]:
    """The functions behind a callable that is not a plain function, class or module."""
    if isinstance(value, types.MethodType):
        return [value.__func__]
    if isinstance(value, functools.partial):
        return [value.func]
    tasks = sys.modules.get("flowbook.tasks")
    flows = sys.modules.get("flowbook.flows")
    if (tasks is not None and isinstance(value, tasks.Task)) or (
        flows is not None and isinstance(value, flows.Flow)
    ):
        return [value.fn]
    # functools.wraps and lru_cache leave the wrapped function here; read without
    # triggering a __getattr__ (proxies, mocks).
    wrapped = inspect.getattr_static(value, "__wrapped__", None)
    if isinstance(wrapped, (types.FunctionType, types.MethodType, functools.partial)):
        return [wrapped]
    return []


def _functions_of_member(member: Any) -> list[types.FunctionType]:
    if isinstance(member, types.FunctionType):
        return [member]
    if isinstance(member, (staticmethod, classmethod)):
        inner = member.__func__
        return [inner] if isinstance(inner, types.FunctionType) else []
    if isinstance(member, property):
        return [
            f for f in (member.fget, member.fset, member.fdel) if isinstance(f, types.FunctionType)
        ]
    if isinstance(member, functools.cached_property):
        return [member.func] if isinstance(member.func, types.FunctionType) else []
    return []


def _lenient_hash(value: Any) -> str:
    try:
        return stable_hash(value)
    except UnhashableInputError:
        kind = type(value)
        return f"<{kind.__module__}.{kind.__qualname__}>"


def _unimported_source(name: str) -> bytes | None:
    """The text of the user's module ``name``, found without importing anything.

    Only the top-level package is looked up with the import system (which runs no code
    for it); submodules are looked for as files in its folders.
    """
    top, _, rest = name.partition(".")
    try:
        spec = importlib.util.find_spec(top) if top not in sys.modules else None
    except (ImportError, ValueError):
        return None
    if top in sys.modules:
        module = sys.modules[top]
        origin = getattr(module, "__file__", None)
        folders = list(getattr(module, "__path__", []))
    else:
        origin = getattr(spec, "origin", None)
        folders = list(getattr(spec, "submodule_search_locations", None) or [])
    for part in rest.split(".") if rest else []:
        origin = None
        for folder in folders:
            for candidate in (
                os.path.join(folder, part, "__init__.py"),
                os.path.join(folder, f"{part}.py"),
            ):
                if os.path.isfile(candidate):
                    origin = candidate
                    break
            if origin is not None:
                break
        if origin is None:
            return None
        folders = [os.path.dirname(origin)] if origin.endswith("__init__.py") else []
    if not isinstance(origin, str) or not origin.endswith(".py") or not _is_user_file(origin):
        return None
    try:
        with open(origin, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _function_of(fn: Any) -> types.FunctionType | None:
    """The Python function a task's callable runs (through partials, methods, wrappers)."""
    seen: set[int] = set()
    while id(fn) not in seen:
        seen.add(id(fn))
        if isinstance(fn, types.FunctionType):
            return fn
        inside = _code_inside(fn)
        if inside:
            fn = inside[0]
            continue
        call = inspect.getattr_static(type(fn), "__call__", None)
        if isinstance(fn, type) or not isinstance(call, types.FunctionType):
            return None
        fn = call
    return None


def _discover(fn: Callable[..., object]) -> tuple[CodeIdentity, _Check]:
    try:
        return _walk_from(fn)
    except Exception as exc:  # the code of a library's odd object; never fail the task
        problem = f"its code could not be inspected ({type(exc).__name__}: {exc})"
        identity = CodeIdentity(source_hash(fn), (), (), problem)
        return identity, _never  # not kept: the next call inspects it again


def _never(owner: object) -> bool:
    return False


def _can_hash(value: Any) -> bool:
    try:
        stable_hash(value)
    except UnhashableInputError:
        return False
    return True


def _walk_from(fn: Callable[..., object]) -> tuple[CodeIdentity, _Check]:
    walk = _Discovery()
    walk.owner = fn
    root = _function_of(fn)
    bound: list[tuple[str, str]] = []
    if root is not fn:
        # A partial, bound method or callable object: what it carries is part of the code.
        try:
            bound.append(("<callable>", stable_hash(fn)))
        except UnhashableInputError as exc:
            walk.problem = f"the task's callable cannot be hashed by content ({exc})"
    if root is not None:
        walk.seen.add(id(root))
        walk.follow(root, None)
        while walk.work:
            helper, label = walk.work.pop()
            walk.follow(helper, label)
    identity = CodeIdentity(
        source_hash(fn),
        tuple(bound + walk.closure),
        tuple(sorted(walk.helpers.items())),
        walk.problem,
    )
    return identity, walk.finish(fn)
