"""Futures inside task arguments: finding them, and replacing them with their results.

Design: both walks keep their own stack, so arguments of any depth work as they do in a
plain call, and remember the containers they have entered by id, so a value that contains
itself is walked once. They look inside lists, tuples (namedtuples too), sets, frozensets,
dict values, ``FutureList``s, dataclass instances and pydantic models (their fields); any
other object is passed as it is, futures inside it included.

``resolve_futures`` copies only what holds a future: the containers on the way from the
value to each future are rebuilt with the same type (dataclasses by a shallow copy with the
fields set, pydantic models by ``model_copy(update=...)``, a ``FutureList`` as a plain list
of results); everything else is the very object the caller passed, and a value without
futures comes back unchanged, not copied.

A ``State`` among the arguments is resolved like a future that is already final: a completed
state gives its result; any other raises ``UpstreamTaskError`` (the task run does not start),
except a failed one inside ``allow_failure``, which gives its exception. The walks meet states
where they meet annotations, so arguments without them pay nothing for this.

Both are on the per-task hot path: an argument of a built-in scalar type costs one set
look-up, a future one type check.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import weakref
from collections.abc import Iterable
from typing import Any, Final

from flowbook._annotations import Annotation, allow_failure, opaque
from flowbook.exceptions import UpstreamTaskError
from flowbook.futures import FutureList, TaskRunFuture
from flowbook.states import State, StateType

__all__ = ["collect_futures", "resolve_futures"]

# Values of these exact types hold nothing to look into.
_LEAVES: Final = frozenset({int, float, str, bool, bytes, complex, type(None)})

# How the walks treat a type: its parts are items (list, tuple, set, ...), dict values,
# fields (dataclass, pydantic), or it is passed as it is; or it is an annotation
# (``quote``, ``opaque``, ``allow_failure``: flowbook._annotations), which the walks treat
# themselves; or it is a state (resolved to its result like a final future). The last two
# come last: ``how >= _ANNOTATION`` picks both out with one comparison.
_ITEMS, _VALUES, _DATACLASS, _PYDANTIC, _OPAQUE, _ANNOTATION, _STATE = range(7)
_EXACT: Final[dict[type, int]] = {
    list: _ITEMS,
    tuple: _ITEMS,
    set: _ITEMS,
    frozenset: _ITEMS,
    FutureList: _ITEMS,
    dict: _VALUES,
}
# Decided once per other type: id(type) -> (how, field names). Each entry is removed by a
# weak reference's callback when its type goes (classes of re-run notebook cells), before
# the id can be reused.
_DECIDED: dict[int, tuple[int, tuple[str, ...]]] = {}
_WATCHES: dict[int, weakref.ref[type]] = {}
# The ids of the decided types whose values hold nothing the walks look into (most argument
# types that are not containers): one set look-up each on the hot path.
_OPAQUE_IDS: set[int] = set()
_NO_FIELDS: Final[tuple[str, ...]] = ()


def _decision(value: object) -> tuple[int, tuple[str, ...]]:
    kind = type(value)
    how = _EXACT.get(kind)
    if how is not None:
        return how, _NO_FIELDS
    decided = _DECIDED.get(id(kind))
    if decided is not None:
        return decided
    if issubclass(kind, TaskRunFuture):
        return _OPAQUE, _NO_FIELDS  # never recorded: futures are looked for before this
    decided = _decide(value)
    key = id(kind)
    try:
        _WATCHES[key] = weakref.ref(kind, lambda _, key=key: _forget(key))  # type: ignore[misc]
    except TypeError:  # a type that cannot be weakly referenced: decided each time
        return decided
    _DECIDED[key] = decided
    if decided[0] == _OPAQUE:
        _OPAQUE_IDS.add(key)
    return decided


def _forget(key: int) -> None:
    _OPAQUE_IDS.discard(key)
    _DECIDED.pop(key, None)
    _WATCHES.pop(key, None)


def _how(value: object) -> int:
    return _decision(value)[0]


def _decide(value: object) -> tuple[int, tuple[str, ...]]:
    kind = type(value)
    if isinstance(value, Annotation):
        return _ANNOTATION, _NO_FIELDS
    if isinstance(value, State):
        return _STATE, _NO_FIELDS
    if isinstance(value, tuple) and isinstance(getattr(kind, "_fields", None), tuple):
        return _ITEMS, _NO_FIELDS  # a namedtuple
    if isinstance(getattr(kind, "__dataclass_fields__", None), dict):
        return _DATACLASS, tuple(field.name for field in dataclasses.fields(value))  # type: ignore[arg-type]
    pydantic_main = sys.modules.get("pydantic.main")
    if pydantic_main is not None and isinstance(value, pydantic_main.BaseModel):
        return _PYDANTIC, tuple(type(value).model_fields)
    return _OPAQUE, _NO_FIELDS


def _parts(value: Any, how: int) -> Iterable[Any]:
    """The values the walks look at inside ``value``."""
    if how == _ITEMS:
        return value  # type: ignore[no-any-return]
    if how == _VALUES:
        return value.values()  # type: ignore[no-any-return]
    missing = _MISSING
    return [getattr(value, name, missing) for name in _decision(value)[1]]


_MISSING: Final = object()


def _nothing_inside(value: Any, kind: type) -> bool:
    """Whether the walks need not look into ``value``: it is opaque, or holds only leaves,
    other opaque values and containers of leaves.

    Checked in place for each argument, so that the usual ones (flat lists and dicts,
    records of plain fields, other objects) never start a walk with its own stack.
    """
    items: Iterable[Any]
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        items = value
    elif kind is dict:
        items = value.values()
    else:
        how, names = _DECIDED.get(id(kind)) or _decision(value)
        if how == _OPAQUE:
            return True
        if how >= _ANNOTATION:  # an annotation or a state: the walks treat it themselves
            return False
        # a namedtuple's items, or the fields of a dataclass or pydantic model
        items = value if how == _ITEMS else [getattr(value, name, None) for name in names]
    leaves = _LEAVES
    for item in items:
        inner = type(item)
        if inner in leaves or id(inner) in _OPAQUE_IDS:
            continue
        # one level more, for the common {"rows": [1, 2, 3]}: exact containers of leaves
        if inner is list or inner is tuple or inner is set or inner is frozenset:
            parts: Iterable[Any] = item
        elif inner is dict:
            parts = item.values()
        else:
            return False
        for part in parts:
            if type(part) not in leaves:
                return False
    return True


def collect_futures(
    values: Iterable[Any], found: list[TaskRunFuture[Any]], into_allowed: bool = True
) -> bool:
    """Append every future found in ``values``, at any depth, in the order a call lists them.

    A future is appended once for each place it sits in, except that a container reached
    twice (shared, or on a cycle) is looked into once. The value of a ``quote`` is not looked
    into; that of an ``allow_failure`` is unless ``into_allowed`` is False. Returns whether
    an annotation or a state was met (the caller then treats the arguments with
    ``unwrap_annotations`` and ``tolerated_futures``).
    """
    remaining = iter(values)
    for value in remaining:
        kind = type(value)
        if kind in _LEAVES:
            continue
        if kind is TaskRunFuture or isinstance(value, TaskRunFuture):
            found.append(value)
        elif id(kind) not in _OPAQUE_IDS and not _nothing_inside(value, kind):
            # From the first container on, the walk keeps its own stack (last in, first out).
            stack = [value, *remaining]
            stack.reverse()
            return _collect_nested(stack, found, into_allowed)
    return False


def _collect_nested(
    stack: list[Any], found: list[TaskRunFuture[Any]], into_allowed: bool = True
) -> bool:
    seen: set[int] = set()
    annotated = False
    pop = stack.pop
    while stack:
        value = pop()
        kind = type(value)
        if kind in _LEAVES:
            continue
        if kind is TaskRunFuture or isinstance(value, TaskRunFuture):
            found.append(value)
            continue
        how = _how(value)
        if how >= _ANNOTATION:
            annotated = True
            if how == _STATE:
                continue
            inner = value.value
            if isinstance(value, opaque):
                if isinstance(inner, TaskRunFuture):
                    found.append(inner)
            elif into_allowed and isinstance(value, allow_failure) and _may_hold(inner):
                stack.append(inner)
            continue
        if how == _OPAQUE or id(value) in seen:
            continue
        seen.add(id(value))
        parts = [part for part in _parts(value, how) if _may_hold(part)]
        parts.reverse()
        stack.extend(parts)
    return annotated


def _may_hold(part: Any) -> bool:
    """Whether ``part`` is a future or may hold one (so the walk has to visit it)."""
    kind = type(part)
    if kind in _LEAVES:
        return False
    return (
        kind is TaskRunFuture or isinstance(part, TaskRunFuture) or not _nothing_inside(part, kind)
    )


def resolve_futures(value: Any, raise_on_failure: bool = True) -> Any:
    """``value`` with every future in it replaced by its ``result()``.

    Containers that hold a future (at any depth) are rebuilt with the same type; the rest is
    passed as it is, and a value that holds no future is returned itself. With
    ``raise_on_failure=False`` a failed run's future is replaced by its exception (a task
    whose trigger lets it start after an upstream failure).
    """
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is TaskRunFuture or isinstance(value, TaskRunFuture):
        return value.result(raise_on_failure=raise_on_failure)
    if id(kind) in _OPAQUE_IDS or _nothing_inside(value, kind):
        return value
    if isinstance(value, Annotation):
        return _unwrap(value, raise_on_failure)
    if isinstance(value, State):
        return _state_value(value, raise_on_failure)
    holding = _holding_futures(value)
    if not holding:
        return value
    return _rebuild(value, holding, raise_on_failure)


def _holding_futures(root: Any) -> set[int]:
    """The ids of the containers under ``root`` from which a future can be reached.

    A first pass records, for each container, the containers it sits in; then everything
    above a container that holds a future directly is marked. Reachability, not nesting,
    decides, so containers on a cycle are marked correctly too.
    """
    parents: dict[int, list[int]] = {id(root): []}
    direct: list[int] = []
    stack = [root]
    while stack:
        container = stack.pop()
        key = id(container)
        holds = False
        for part in _parts(container, _how(container)):
            kind = type(part)
            if kind in _LEAVES:
                continue
            if kind is TaskRunFuture or isinstance(part, TaskRunFuture):
                holds = True
            elif isinstance(part, (Annotation, State)):
                holds = True  # rebuilt with the annotation unwrapped, the state resolved
            elif _how(part) != _OPAQUE:
                above = parents.get(id(part))
                if above is None:
                    parents[id(part)] = [key]
                    stack.append(part)
                else:
                    above.append(key)
        if holds:
            direct.append(key)
    marked: set[int] = set()
    while direct:
        key = direct.pop()
        if key not in marked:
            marked.add(key)
            direct.extend(parents[key])
    return marked


class _Frame:
    """A container being rebuilt: its parts so far, and where the walk is in it."""

    __slots__ = ("container", "how", "names", "new", "parts", "position", "source")

    def __init__(self, container: Any, how: int) -> None:
        self.container = container
        self.how = how
        self.names: list[str] | None = None
        if how == _VALUES:
            self.source: list[Any] = list(container.items())
        elif how == _ITEMS:
            self.source = list(container)
        else:
            self.names = list(_decision(container)[1])
            self.source = [getattr(container, name, _MISSING) for name in self.names]
        self.parts: list[Any] = []
        self.position = 0
        # Mutable containers get their new object before their parts, so a part that leads
        # back to the container (a cycle) can refer to the new one.
        self.new: Any = _early_copy(container, how)


def _early_copy(container: Any, how: int) -> Any:
    kind = type(container)
    if kind is list or kind is FutureList:
        return []
    if how == _VALUES and kind is dict:
        return {}
    if kind is set:
        return set()
    if how == _DATACLASS:
        return copy.copy(container)
    return None


def _rebuild(root: Any, holding: set[int], raise_on_failure: bool = True) -> Any:
    """Copy the containers in ``holding`` with their futures resolved; depth first."""
    built: dict[int, Any] = {}  # id of an original container -> its copy (once known)
    stack = [_Frame(root, _how(root))]
    if stack[0].new is not None:
        built[id(root)] = stack[0].new
    building = {id(root)}  # the containers of the frames on the stack
    result: Any = None
    while stack:
        frame = stack[-1]
        source = frame.source
        descended = False
        while frame.position < len(source):
            entry = source[frame.position]
            part = entry[1] if frame.how == _VALUES else entry
            kind = type(part)
            if kind in _LEAVES:
                frame.parts.append(part)
            elif kind is TaskRunFuture or isinstance(part, TaskRunFuture):
                frame.parts.append(part.result(raise_on_failure=raise_on_failure))
            elif isinstance(part, Annotation):
                frame.parts.append(_unwrap(part, raise_on_failure))
            elif isinstance(part, State):
                frame.parts.append(_state_value(part, raise_on_failure))
            elif id(part) not in holding:
                frame.parts.append(part)
            elif id(part) in built:
                frame.parts.append(built[id(part)])
            elif id(part) in building:
                # An immutable container reached again while it is being built (a cycle
                # through a tuple): it keeps the original at that place.
                frame.parts.append(part)
            else:
                child = _Frame(part, _how(part))
                if child.new is not None:
                    built[id(part)] = child.new
                building.add(id(part))
                stack.append(child)
                descended = True
                break
            frame.position += 1
        if descended:
            continue
        stack.pop()
        building.discard(id(frame.container))
        new = _finish(frame)
        built[id(frame.container)] = new
        if stack:
            stack[-1].parts.append(new)
            stack[-1].position += 1
        else:
            result = new
    return result


def _finish(frame: _Frame) -> Any:
    container, how, parts = frame.container, frame.how, frame.parts
    kind = type(container)
    new = frame.new
    if how == _VALUES:
        new.update((key, part) for (key, _), part in zip(frame.source, parts, strict=True))
        return new
    if how == _ITEMS:
        if new is not None:
            if isinstance(new, list):
                new.extend(parts)
            else:
                new.update(parts)
            return new
        if kind is tuple or kind is frozenset:
            return kind(parts)
        return kind._make(parts)  # a namedtuple
    assert frame.names is not None
    changed = {
        name: part
        for name, part, before in zip(frame.names, parts, frame.source, strict=True)
        if part is not before and part is not _MISSING
    }
    if how == _DATACLASS:
        for name, part in changed.items():
            # object.__setattr__: frozen dataclasses refuse the ordinary assignment
            object.__setattr__(new, name, part)
        return new
    return container.model_copy(update=changed)


def _unwrap(annotation: Annotation[Any], raise_on_failure: bool) -> Any:
    """The value an annotated argument gives the task: a ``quote``'s value as it is, an
    ``allow_failure``'s with its futures resolved (a failed run's to its exception), an
    ``opaque`` future's result."""
    value = annotation.value
    if isinstance(annotation, allow_failure):
        return resolve_futures(value, raise_on_failure=False)
    if isinstance(annotation, opaque) and isinstance(value, TaskRunFuture):
        return value.result(raise_on_failure=raise_on_failure)
    return value


def _state_value(state: State, raise_on_failure: bool) -> Any:
    """What a state among the arguments gives the task: a completed state's result; with
    ``raise_on_failure=False`` (inside ``allow_failure``) a failed state's exception."""
    if state.type is StateType.COMPLETED:
        return state.result()
    if state.type is StateType.FAILED and not raise_on_failure:
        return state.result(raise_on_failure=False)
    exc = UpstreamTaskError(
        f"an argument is the state {state.short()}, not a completed one; pass a completed "
        "state, or a failed one inside allow_failure(...) to get its exception"
    )
    if isinstance(state.data, BaseException):
        exc.__cause__ = state.data
    raise exc


def unwrap_annotations(value: Any) -> Any:
    """``value`` with its annotations unwrapped, for arguments that hold no future to wait
    for (``resolve_futures`` does the same for the others)."""
    return resolve_futures(value)


def tolerated_futures(values: Iterable[Any], upstream: Iterable[TaskRunFuture[Any]]) -> set[Any]:
    """The futures of ``upstream`` that sit only inside ``allow_failure`` in ``values``:
    their runs may fail without stopping the task run that takes them."""
    strict: list[TaskRunFuture[Any]] = []
    collect_futures(values, strict, into_allowed=False)
    return set(upstream).difference(strict)
