"""The graph of a Prefect 1 functional flow: its nodes, their edges, and the open blocks.

A ``with Flow(...)`` block pushes its flow on this thread's stack of blocks and raises the
process-wide count in ``flowbook.tasks._flow_blocks``, which is what the hook in
``Task.__call__``/``Task.map`` tests first. A flow run's body pushes None, so that task
calls made while a graph runs (on that thread) run instead of being added.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowbook import tasks as _tasks
from flowbook.engine import state as p1
from flowbook.tasks import Task, unmapped

if TYPE_CHECKING:
    from flowbook.functional import FunctionalFlow

__all__ = ["Edge", "Node", "Parameter", "TaskNode", "TaskStates", "current_block"]

_NO_DEFAULT: Any = type("NoDefault", (), {"__repr__": lambda self: "<no default>"})()
_local = threading.local()
_count_lock = threading.Lock()


def _stack() -> list[FunctionalFlow | None]:
    stack: list[FunctionalFlow | None] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def current_block() -> FunctionalFlow | None:
    """The flow whose ``with`` block is open on this thread (None while one of its runs goes)."""
    stack = _stack()
    return stack[-1] if stack else None


def push_block(flow: FunctionalFlow | None) -> None:
    _stack().append(flow)
    with _count_lock:
        _tasks._flow_blocks += 1


def pop_block() -> None:
    _stack().pop()
    with _count_lock:
        _tasks._flow_blocks -= 1


# -- nodes ---------------------------------------------------------------------------------------
class Node:
    """A node of a functional flow's graph; the handle a call in a ``with Flow`` block returns."""

    name: str
    slug: str

    def __getitem__(self, key: Any) -> TaskNode:
        """A node that takes item ``key`` of this node's result (Prefect 1's ``GetItem``)."""
        flow = current_block()  # as in Prefect 1, only inside an open block
        if flow is None:
            raise TypeError(
                f"{self.name!r}[{key!r}] adds a node to a flow: index a task's result inside "
                "a 'with Flow(...)' block (re-enter the flow with 'with flow:' to add it)"
            )
        return flow._add_call(_get_item_task(), (self, key), {}, mapped=False)

    def __iter__(self) -> Iterator[TaskNode]:
        nout = getattr(getattr(self, "task", None), "nout", None)
        if not nout:
            raise TypeError(
                f"task {self.name!r} has no nout: it returns one value in a Flow block, which "
                f"cannot be unpacked; declare how many it returns, e.g. @task(nout=2), or "
                f"index the result ({self.name}_result[0])"
            )
        return iter([self[i] for i in range(int(nout))])

    def _flow_of(self) -> FunctionalFlow | None:
        return None

    def set_upstream(self, task: Node, key: str | None = None, mapped: bool = False) -> None:
        """Prefect 1's ``task.set_upstream(other)`` inside a ``with Flow`` block."""
        flow = current_block() or self._flow_of()
        if flow is None:
            raise TypeError(f"{self.name!r}.set_upstream() needs an open 'with Flow(...)' block")
        flow.add_edge(task, self, key=key, mapped=mapped)

    def set_downstream(self, task: Node, key: str | None = None, mapped: bool = False) -> None:
        """Prefect 1's ``task.set_downstream(other)`` inside a ``with Flow`` block."""
        flow = current_block() or self._flow_of()
        if flow is None:
            raise TypeError(f"{self.name!r}.set_downstream() needs an open 'with Flow(...)' block")
        flow.add_edge(self, task, key=key, mapped=mapped)


class Parameter(Node):
    """A run-time input of a functional flow: ``Parameter(name, default=..., required=...)``.

    As in Prefect 1, a parameter without a default is required unless ``required=False``
    says otherwise (its value is then None).
    """

    def __init__(self, name: str, default: Any = _NO_DEFAULT, required: bool | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Parameter(name={name!r}): the name must be a non-empty string")
        if required is None:
            required = default is _NO_DEFAULT
        self.name = self.slug = name
        self.required = bool(required)
        self.default = None if default is _NO_DEFAULT else default
        flow = current_block()
        if flow is not None:
            flow.add_task(self)

    def __repr__(self) -> str:
        return f"<Parameter: {self.name}>"


def _get_item(obj: Any, key: Any) -> Any:
    return operator.getitem(obj, key)


_get_item_tasks: list[Task[Any, Any]] = []


def _get_item_task() -> Task[Any, Any]:
    """The task that indexes a result (made on first use: making a task imports pydantic)."""
    if not _get_item_tasks:
        _get_item_tasks.append(Task(_get_item, name="GetItem"))
    return _get_item_tasks[0]


class TaskNode(Node):
    """One call of a task in a functional flow: the task, its arguments, its upstream nodes."""

    def __init__(
        self,
        flow: FunctionalFlow,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        mapped: bool,
        slug: str,
    ) -> None:
        self._flow = flow
        self.task = task
        self.name = task.name
        self.slug = slug
        self.args = args
        self.kwargs = kwargs
        self.mapped = mapped
        self.wait_for: list[Node] = []

    def _flow_of(self) -> FunctionalFlow | None:
        return self._flow

    def __repr__(self) -> str:
        return f"<Task: {self.name}>" if self.slug == self.name else f"<Task: {self.slug}>"

    def inputs(self) -> list[tuple[str, Any]]:
        """The call's arguments by parameter name (positional ones bound to the signature)."""
        try:
            bound = self.task.signature.bind_partial(*self.args, **self.kwargs)
        except TypeError:
            named = [(f"argument {i}", a) for i, a in enumerate(self.args)]
            return named + list(self.kwargs.items())
        return list(bound.arguments.items())


@dataclass(frozen=True)
class Edge:
    """A dependency: ``downstream_task`` takes ``upstream_task``'s result as argument ``key``
    (None: it only waits for it), element by element when ``mapped``."""

    upstream_task: Node
    downstream_task: Node
    key: str | None = None
    mapped: bool = False

    def __repr__(self) -> str:
        key = f" (key={self.key!r})" if self.key else ""
        arrow = " -(mapped)-> " if self.mapped else " -> "
        return f"<Edge{key}: {self.upstream_task.slug}{arrow}{self.downstream_task.slug}>"


def _kind(value: Any) -> str | None:
    """How ``handles_in`` and ``substitute`` look into a value: the one rule for both, the
    containers the engine resolves futures in (exact lists, tuples, sets, frozensets and
    dicts, and namedtuples)."""
    kind = type(value)
    if kind in (list, tuple, set, frozenset) or (
        isinstance(value, tuple) and isinstance(getattr(kind, "_fields", None), tuple)
    ):
        return "items"
    if kind is dict:
        return "dict"
    return None


def check_containers(task_name: str, value: Any) -> None:
    """Refuse a node inside a container the engine would pass on with a future inside (a
    subclass of list, set or dict, such as an ``OrderedDict``): the task would get no value."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, unmapped):
            todo.append(item.value)
        elif _kind(item) is not None:
            todo.extend(item.items() if isinstance(item, dict) else item)
        elif isinstance(item, (list, tuple, set, frozenset, dict)):
            inner = item.values() if isinstance(item, dict) else item
            if any(handles_in(list(inner))):
                raise TypeError(
                    f"task {task_name!r} got a task's result inside a "
                    f"{type(item).__name__}, which is passed on as it is; put it in a "
                    "list, tuple, set, dict or namedtuple (e.g. dict(...) for a dict subclass)"
                )


def handles_in(value: Any) -> Iterator[tuple[Node, bool]]:
    """The nodes inside an argument, each with whether it is wrapped in ``unmapped``."""
    todo: list[tuple[Any, bool]] = [(value, False)]
    while todo:
        item, whole = todo.pop()
        if isinstance(item, Node):
            yield item, whole
        elif isinstance(item, unmapped):
            todo.append((item.value, True))
        else:
            kind = _kind(item)
            if kind == "items":
                todo.extend((v, whole) for v in item)
            elif kind == "dict":
                todo.extend((v, whole) for v in (*item.keys(), *item.values()))


def substitute(value: Any, results: dict[Node, Any]) -> Any:
    """``value`` with every node replaced by its result (a future, a list of them, a value;
    for a node that did not run, its exception). Containers are rebuilt with their type (a
    namedtuple field by field)."""
    if isinstance(value, Node):
        result = results[value]
        return result.state.result if isinstance(result, NotRun) else result
    if isinstance(value, unmapped):
        return unmapped(substitute(value.value, results))
    kind = _kind(value)
    if kind == "dict":
        return {substitute(k, results): substitute(v, results) for k, v in value.items()}
    if kind is None:
        return value
    items = [substitute(v, results) for v in value]
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(items)
    if not any(handles_in(value)):
        return value
    return type(value)(*items)  # a namedtuple


class NotRun:
    """The result of a node that was not submitted: what it maps over did not complete, it
    could not be submitted, or its trigger refused an upstream node that was not submitted.
    ``state.result`` is the exception a downstream task whose trigger lets it run receives."""

    def __init__(self, state: p1.State) -> None:
        self.state = state


class TaskStates(dict[Node, p1.State]):
    """``flow_state.result``: each node's Prefect 1 state; a ``Task`` called once works too."""

    def __missing__(self, key: Any) -> p1.State:
        if isinstance(key, Task):
            found = [s for n, s in self.items() if isinstance(n, TaskNode) and n.task is key]
            if len(found) == 1:
                return found[0]
            if found:
                raise KeyError(
                    f"task {key.name!r} is called {len(found)} times in this flow; index the "
                    "result with the handle its call returned"
                )
        raise KeyError(key)
