"""Prefect 1's functional API: ``with Flow("name") as flow:`` builds a graph of task calls.

Design. Inside a ``with`` block a task call or ``.map()`` does not run: the hook at the top
of ``Task.__call__``/``Task.map`` sees an open block on the calling thread and adds a node
(``TaskNode``) to the flow, returning the node as a handle that later calls take as an
argument. The hook costs one global int test when no block is open anywhere (``_flow_blocks``
in ``flowbook.tasks``); only when one is open does it look at the thread's stack of blocks.

The graph is the nodes with their call arguments (constants, handles, ``unmapped(...)``,
handles inside lists, tuples, sets and dicts) and their ``upstream_tasks``; ``edges`` is
derived from them, so there is one source of truth. ``Parameter`` is a node too. The nodes
and the stack of open blocks live in ``flowbook._functional_graph``; ``visualize`` in
``flowbook._functional_view``.

A ``FunctionalFlow`` is an ordinary ``flowbook.Flow`` whose body submits the nodes in
topological order through ``Task.submit``/``Task.map``: a run of it is a flowbook flow run
(store, console, widget, cache, retries, task runner), its parameters are the graph's
``Parameter`` values. Task failures do not stop the body: like Prefect 1, the body waits for
everything, turns each node's outcome into a Prefect 1 state (``flowbook.engine.state``) and
ends the run Failed ("Some reference tasks failed.") unless every reference task succeeded.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from flowbook import tasks as _tasks
from flowbook._functional_graph import (
    Edge,
    Node,
    NotRun,
    Parameter,
    TaskNode,
    TaskStates,
    current_block,
    handles_in,
    pop_block,
    push_block,
    substitute,
)
from flowbook.engine import state as p1
from flowbook.engine.runs import current_flow_run
from flowbook.flows import Flow
from flowbook.futures import FutureList, TaskRunFuture
from flowbook.states import Completed
from flowbook.states import Failed as FlowbookFailed
from flowbook.task_runners.sequential import SequentialTaskRunner
from flowbook.tasks import Task, unmapped

__all__ = ["Edge", "FunctionalFlow", "FunctionalFlowWarning", "Parameter", "TaskNode"]


class FunctionalFlowWarning(UserWarning):
    """A Prefect 1 option of a functional flow that does nothing in flowbook."""


# where a flow run's body leaves its nodes' states for ``flow.run()`` (calling the flow the
# ``@flow`` way does not ask for them)
_outcome: ContextVar[dict[Node, p1.State] | None] = ContextVar("_outcome", default=None)


# -- the flow ------------------------------------------------------------------------------------
_INERT = (
    "environment",
    "storage",
    "result",
    "state_handlers",
    "on_failure",
    "terminal_state_handler",
    "validate",
)


class FunctionalFlow(Flow[..., Any]):
    """A flow built in a ``with Flow("name") as flow:`` block (Prefect 1's functional API)."""

    def __init__(
        self,
        name: str,
        schedule: Any = None,
        executor: Any = None,
        run_config: Any = None,
        tasks: Iterable[Node] | None = None,
        edges: Iterable[Edge] | None = None,
        reference_tasks: Iterable[Node] | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Flow(name={name!r}): a flow's name must be a non-empty string")
        inert = [k for k in options if k in _INERT]
        unknown = [k for k in options if k not in _INERT]
        if unknown:
            raise TypeError(
                f"Flow({name!r}) got unknown option(s) {', '.join(map(repr, unknown))}; a "
                f"Prefect 1 flow takes schedule, executor, run_config, tasks, edges, "
                f"reference_tasks and {', '.join(_INERT)}"
            )
        if inert:
            warnings.warn(
                f"Flow({name!r}): {', '.join(f'{k}=' for k in inert)} do nothing in flowbook "
                "(runs happen in this process, results go to flowbook's store, and there are "
                "no state handlers); the option is ignored",
                FunctionalFlowWarning,
                stacklevel=3,
            )
        super().__init__(self._graph_body, name=name, task_runner=SequentialTaskRunner())
        self.description = None
        self.__name__ = name
        self.schedule = schedule
        self._nodes: dict[Node, None] = {}  # insertion-ordered set
        self._reference: list[Node] | None = None
        self._slugs: dict[str, int] = {}
        self._task_node: dict[Task[Any, Any], TaskNode] = {}
        self._executor: Any = None
        self._run_config: Any = None
        self.executor = executor
        self.run_config = run_config
        for node in tasks or ():
            self.add_task(node)
        for edge in edges or ():
            self.add_edge(edge.upstream_task, edge.downstream_task, edge.key, edge.mapped)
        if reference_tasks is not None:
            self.set_reference_tasks(reference_tasks)

    # -- run config and executor -------------------------------------------------------------
    @property
    def run_config(self) -> Any:
        return self._run_config

    @run_config.setter
    def run_config(self, value: Any) -> None:
        if value is not None and not isinstance(getattr(value, "env", None), dict):
            raise TypeError(
                f"flow.run_config = {value!r}: a run config is one of flowbook.run_configs "
                "(LocalRun(env=...), UniversalRun(), ...)"
            )
        self._run_config = value
        # the engine sets a flow's env for each run and restores it after (@flow(env=...))
        self.env = dict(value.env) if value is not None else {}

    @property
    def executor(self) -> Any:
        return self._executor

    @executor.setter
    def executor(self, value: Any) -> None:
        if value is not None and not callable(getattr(value, "task_runner", None)):
            raise TypeError(
                f"flow.executor = {value!r}: an executor is one of flowbook.executors "
                "(LocalExecutor(), LocalDaskExecutor(), DaskExecutor(...))"
            )
        self._executor = value
        # Prefect 1's default executor ran tasks one at a time
        self.task_runner = value.task_runner() if value is not None else SequentialTaskRunner()

    @property
    def version(self) -> str:
        if self._version is None:
            return self.fingerprint()[:16]
        return self._version

    def __repr__(self) -> str:
        return f"<Flow: name={self.name!r}, tasks={len(self._nodes)}>"

    # -- building ------------------------------------------------------------------------------
    def __enter__(self) -> FunctionalFlow:
        push_block(self)
        return self

    def __exit__(self, *exc: object) -> None:
        pop_block()

    def _new_slug(self, name: str) -> str:
        n = self._slugs.get(name, 0) + 1
        self._slugs[name] = n
        return f"{name}-{n}"

    def _add_call(
        self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], mapped: bool
    ) -> TaskNode:
        """What a task call (or ``.map()``) in this flow's block does: add a node."""
        own = task.signature.parameters  # a task's own argument of that name stays its own
        upstream = () if "upstream_tasks" in own else kwargs.pop("upstream_tasks", None) or ()
        task_args = None if "task_args" in own else kwargs.pop("task_args", None)
        if "mapped" not in own:
            mapped = bool(kwargs.pop("mapped", False)) or mapped
        if "flow" not in own:
            kwargs.pop("flow", None)
        if task_args:
            if not isinstance(task_args, dict):
                raise TypeError(
                    f"{task.name}(task_args={task_args!r}): task_args must be a dict of task "
                    "options, e.g. task_args=dict(name='load', retries=2)"
                )
            task = task.with_options(**task_args)
        try:
            task.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"task {task.name!r} was called with arguments that do not match its "
                f"parameters {task.signature}: {exc}"
            ) from None
        node = TaskNode(self, task, args, kwargs, mapped, self._new_slug(task.name))
        for value in (*args, *kwargs.values()):
            for handle, _ in handles_in(value):
                self.add_task(handle)
        for up in upstream:
            node.wait_for.append(self._as_node(up))
        self.add_task(node)
        return node

    def _as_node(self, task: Any) -> Node:
        """The node for ``task``: a handle, or a flowbook task (its node in this flow)."""
        if isinstance(task, Node):
            self.add_task(task)
            return task
        if isinstance(task, Task):
            node = self._task_node.get(task)
            if node is None:
                found = [n for n in self._nodes if isinstance(n, TaskNode) and n.task is task]
                if len(found) > 1:
                    raise ValueError(
                        f"task {task.name!r} is called {len(found)} times in flow "
                        f"{self.name!r}; use the handle one of its calls returned"
                    )
                node = found[0] if found else TaskNode(self, task, (), {}, False, "")
                if not node.slug:
                    node.slug = self._new_slug(task.name)
                self._task_node[task] = node
            self.add_task(node)
            return node
        raise TypeError(
            f"{task!r} is not a task of a functional flow; give a flowbook task, a Parameter, "
            "or the handle a task call in a 'with Flow(...)' block returned"
        )

    def add_task(self, task: Any) -> Node:
        """Add a node (a handle, a ``Parameter``, or a flowbook task not called yet)."""
        if isinstance(task, Parameter):
            for other in self._nodes:
                if isinstance(other, Parameter) and other.name == task.name and other is not task:
                    raise ValueError(
                        f"flow {self.name!r} already has a parameter named {task.name!r}; "
                        "give each Parameter its own name, or reuse the first one"
                    )
        if isinstance(task, Node):
            self._nodes[task] = None
            return task
        return self._as_node(task)

    def add_edge(
        self,
        upstream_task: Any,
        downstream_task: Any,
        key: str | None = None,
        mapped: bool = False,
        validate: Any = None,
    ) -> Edge:
        """``downstream_task`` takes ``upstream_task``'s result as argument ``key`` (None:
        it only waits for it)."""
        up, down = self._as_node(upstream_task), self._as_node(downstream_task)
        if not isinstance(down, TaskNode):
            raise TypeError(f"{down!r} cannot have upstream tasks: it is a Parameter")
        if key is None:
            down.wait_for.append(up)
        else:
            if mapped:
                down.mapped = True
            down.kwargs[key] = up if mapped or not down.mapped else unmapped(up)
        self._check_acyclic()
        return Edge(up, down, key, mapped)

    def set_dependencies(
        self,
        task: Any,
        upstream_tasks: Iterable[Any] | None = None,
        downstream_tasks: Iterable[Any] | None = None,
        keyword_tasks: dict[str, Any] | None = None,
        mapped: bool = False,
        validate: Any = None,
    ) -> None:
        """Prefect 1's imperative API: ``task``'s upstream, downstream and keyword tasks."""
        node = self._as_node(task)
        for up in upstream_tasks or ():
            self.add_edge(up, node, mapped=mapped)
        for down in downstream_tasks or ():
            self.add_edge(node, down, mapped=mapped)
        for key, value in (keyword_tasks or {}).items():
            if isinstance(value, (Node, Task)):
                self.add_edge(value, node, key=key, mapped=mapped)
            else:
                assert isinstance(node, TaskNode)
                node.kwargs[key] = value  # a constant

    # -- reading -------------------------------------------------------------------------------
    @property
    def tasks(self) -> set[Node]:
        return set(self._nodes)

    @property
    def edges(self) -> set[Edge]:
        return set(self._edges())

    def _edges(self) -> list[Edge]:
        edges: list[Edge] = []
        for node in self._nodes:
            if not isinstance(node, TaskNode):
                continue
            for key, value in node.inputs():
                for handle, whole in handles_in(value):
                    edges.append(Edge(handle, node, key, node.mapped and not whole))
            edges.extend(Edge(up, node, None, False) for up in node.wait_for)
        return edges

    def parameters(self) -> set[Parameter]:
        return {n for n in self._nodes if isinstance(n, Parameter)}

    def get_tasks(self, name: str | None = None, slug: str | None = None) -> list[Node]:
        return [
            n
            for n in self._nodes
            if (name is None or n.name == name) and (slug is None or n.slug == slug)
        ]

    def upstream_tasks(self, task: Node) -> set[Node]:
        return {e.upstream_task for e in self._edges() if e.downstream_task is task}

    def downstream_tasks(self, task: Node) -> set[Node]:
        return {e.downstream_task for e in self._edges() if e.upstream_task is task}

    def root_tasks(self) -> set[Node]:
        downstream = {e.downstream_task for e in self._edges()}
        return {n for n in self._nodes if n not in downstream}

    def terminal_tasks(self) -> set[Node]:
        upstream = {e.upstream_task for e in self._edges()}
        return {n for n in self._nodes if n not in upstream}

    def reference_tasks(self) -> set[Node]:
        """The tasks whose states decide the flow's (by default its terminal tasks)."""
        return set(self._reference) if self._reference is not None else self.terminal_tasks()

    def set_reference_tasks(self, tasks: Iterable[Any]) -> None:
        nodes = list(tasks)
        for node in nodes:
            if node not in self._nodes:
                raise ValueError(
                    f"{node!r} is not a task of flow {self.name!r}; reference tasks must be "
                    "tasks of the flow"
                )
        self._reference = nodes or None

    def sorted_tasks(self) -> list[Node]:
        """The nodes in an order where every node comes after its upstream nodes."""
        ups: dict[Node, list[Node]] = {n: [] for n in self._nodes}
        for edge in self._edges():
            ups[edge.downstream_task].append(edge.upstream_task)
        order: list[Node] = []
        state: dict[Node, int] = {}  # 1: on the current path, 2: placed
        for start in self._nodes:
            if state.get(start) == 2:
                continue
            path: list[tuple[Node, Iterator[Node]]] = [(start, iter(ups[start]))]
            state[start] = 1
            while path:
                node, rest = path[-1]
                nxt = next(rest, None)
                if nxt is None:
                    path.pop()
                    state[node] = 2
                    order.append(node)
                elif state.get(nxt) == 1:
                    on_path = [n for n, _ in path]
                    cycle = [*on_path[on_path.index(nxt) :], nxt]
                    raise ValueError(
                        f"flow {self.name!r} has a cycle: "
                        f"{' -> '.join(n.slug for n in reversed(cycle))}; a task cannot "
                        "depend on itself, directly or through other tasks"
                    )
                elif state.get(nxt) is None:
                    state[nxt] = 1
                    path.append((nxt, iter(ups[nxt])))
        return order

    def _check_acyclic(self) -> None:
        self.sorted_tasks()

    def fingerprint(self) -> str:
        """A stable hash of the graph, the parameters and the tasks' source code."""
        from flowbook.caching.hashing import stable_hash
        from flowbook.caching.source import source_hash

        def constant(value: Any) -> str:
            try:
                return stable_hash(value)
            except Exception:  # a value without stable content: its type is what is known
                return f"<{type(value).__qualname__}>"

        def described(value: Any) -> str:
            if isinstance(value, Node):
                return f"@{value.slug}"
            if isinstance(value, unmapped):
                return f"unmapped({described(value.value)})"
            if type(value) in (list, tuple, set, frozenset, dict) and any(handles_in(value)):
                items = value.items() if isinstance(value, dict) else enumerate(value)
                return f"{type(value).__name__}[{','.join(described(v) for _, v in items)}]"
            return constant(value)

        lines = [f"flow {self.name}"]
        for node in self.sorted_tasks():
            if isinstance(node, Parameter):
                lines.append(f"param {node.name} {node.required} {constant(node.default)}")
                continue
            assert isinstance(node, TaskNode)
            task = node.task
            args = ";".join(f"{k}={described(v)}" for k, v in node.inputs())
            waits = ",".join(sorted(u.slug for u in node.wait_for))
            lines.append(
                f"task {node.slug} {task.task_key} {source_hash(task.fn)} "
                f"{sorted(map(str, task._options.items()))} map={node.mapped} {args} {waits}"
            )
        lines.append("ref " + ",".join(sorted(n.slug for n in self.reference_tasks())))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    # -- running -------------------------------------------------------------------------------
    def bind_parameters(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if args:
            raise TypeError(
                f"flow {self.name!r} takes its parameters by name; pass them as "
                "flow.run(parameters={...})"
            )
        params = {p.name: p for p in self._nodes if isinstance(p, Parameter)}
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            known = ", ".join(sorted(params)) or "none"
            raise ValueError(
                f"flow {self.name!r} has no parameter(s) {', '.join(map(repr, unknown))} "
                f"(its parameters: {known})"
            )
        missing = sorted(n for n, p in params.items() if p.required and n not in kwargs)
        if missing:
            raise ValueError(
                f"flow {self.name!r} needs a value for the required parameter(s) "
                f"{', '.join(map(repr, missing))}; pass them as flow.run(parameters={{...}})"
            )
        return {n: kwargs.get(n, p.default) for n, p in params.items()}

    def run(
        self,
        parameters: dict[str, Any] | None = None,
        run_on_schedule: bool | None = None,
        **kw: Any,
    ) -> p1.State:
        """Run the graph now, as one flowbook flow run; returns a Prefect 1-shaped state.

        A failing task does not raise: its state is in ``state.result[handle]``.
        """
        from flowbook.engine import interrupts
        from flowbook.engine.flow_engine import FlowRunEngine

        if kw:
            warnings.warn(
                f"flow.run({', '.join(f'{k}=' for k in kw)}) do nothing in flowbook (Prefect 1 "
                "put them into the context); pass values as parameters",
                FunctionalFlowWarning,
                stacklevel=2,
            )
        if self.schedule is not None and run_on_schedule is not False:
            warnings.warn(
                f"flow {self.name!r} has a schedule; flowbook runs it once, now (Prefect 1 "
                "looped over the schedule); pass run_on_schedule=False to silence this",
                FunctionalFlowWarning,
                stacklevel=2,
            )
        if parameters is not None and not isinstance(parameters, dict):
            raise TypeError(
                f"flow.run(parameters={parameters!r}): parameters must be a dict of "
                "parameter names to values"
            )
        params = dict(parameters or {})
        self.bind_parameters((), params)  # a bad call is an error before any run is made
        outcome: dict[Node, p1.State] = {}
        token = _outcome.set(outcome)
        body = interrupts.enter()
        try:
            final = FlowRunEngine(self, (), params).run_sync()
        finally:
            interrupts.leave(body)
            _outcome.reset(token)
        states = outcome
        if not states and self._nodes:  # the run ended before the graph ran (it could not start)
            exc = final.data if isinstance(final.data, BaseException) else None
            return p1.Failed(final.message or "The flow run failed.", exc)
        result = TaskStates(states)
        reference = self.reference_tasks()
        if all(result[n].is_successful() for n in reference if n in result):
            return p1.Success("All reference tasks succeeded.", result)
        return p1.Failed("Some reference tasks failed.", result)

    def _graph_body(self, **parameters: Any) -> Any:
        """The flow run's body: submit every node, wait, and judge the reference tasks."""
        run = current_flow_run.get()
        assert run is not None
        values = self.bind_parameters((), parameters)
        order = self.sorted_tasks()
        results: dict[Node, Any] = {}
        push_block(None)  # task calls in this run's body and tasks run, not build
        try:
            config = self.run_config
            holder = getattr(config, "working_directory", None)
            label = f"flow run {run.name!r} of flow {self.name!r}"
            # the working directory is held until every task run has ended (they run on
            # other threads while the body waits for them)
            with holder(label) if holder is not None else contextlib.nullcontext():
                self._submit_all(order, values, results)
                states = self._collect(results)
        finally:
            pop_block()
        outcome = _outcome.get()
        if outcome is not None:  # flow.run() asked for the states
            outcome.update(states)
        reference = self.reference_tasks()
        failed = [states[n] for n in order if n in reference and not states[n].is_successful()]
        if failed:
            exc = next((s.result for s in failed if isinstance(s.result, BaseException)), None)
            if exc is None:
                exc = next(
                    (
                        c.result
                        for s in failed
                        for c in s.map_states
                        if isinstance(c.result, BaseException)
                    ),
                    None,
                )
            return FlowbookFailed("Some reference tasks failed.", exc)
        return Completed("All reference tasks succeeded.")

    def _submit_all(
        self, order: list[Node], values: dict[str, Any], results: dict[Node, Any]
    ) -> None:
        upstream: dict[Node, list[Node]] = {}
        for edge in self._edges():
            upstream.setdefault(edge.downstream_task, []).append(edge.upstream_task)
        for node in order:
            if isinstance(node, Parameter):
                results[node] = values[node.name]
                continue
            assert isinstance(node, TaskNode)
            ups = upstream.get(node, ())
            not_run = [u for u in ups if isinstance(results.get(u), NotRun)]
            if not_run:
                results[node] = NotRun(
                    p1.TriggerFailed(
                        f"Upstream task {not_run[0].slug!r} did not run; not run.", None
                    )
                )
                continue
            args = tuple(substitute(a, results) for a in node.args)
            kwargs = {k: substitute(v, results) for k, v in node.kwargs.items()}
            wait_for: list[TaskRunFuture[Any]] = []
            for up in node.wait_for:
                value = results[up]
                if isinstance(value, TaskRunFuture):
                    wait_for.append(value)
                elif isinstance(value, FutureList):
                    wait_for.extend(value)
            if node.mapped:
                blocked = self._blocked_map(node, args, kwargs)
                if blocked is not None:
                    results[node] = NotRun(blocked)
                    continue
                if wait_for:
                    kwargs["wait_for"] = wait_for
                results[node] = node.task.map(*args, **kwargs)
            else:
                results[node] = node.task.submit(*args, wait_for=wait_for or None, **kwargs)

    @staticmethod
    def _blocked_map(
        node: TaskNode, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> p1.State | None:
        """TriggerFailed when a single upstream run the map is over did not complete."""
        for value in (*args, *kwargs.values()):
            if isinstance(value, TaskRunFuture):
                value.wait()
                if not value.state.is_completed():
                    value.task_run.observed = True
                    return p1.TriggerFailed(
                        f"Upstream task run {value.task_run.name!r} did not complete "
                        f"({value.state.name}); {node.slug!r} has nothing to map over.",
                        None,
                    )
        return None

    @staticmethod
    def _collect(results: dict[Node, Any]) -> dict[Node, p1.State]:
        states: dict[Node, p1.State] = {}
        for node, value in results.items():
            if isinstance(node, Parameter):
                states[node] = p1.Success("Parameter value.", value)
            elif isinstance(value, NotRun):
                states[node] = value.state
            elif isinstance(value, FutureList):
                children = []
                for future in value:
                    future.wait()
                    future.task_run.observed = True  # the flow's state accounts for it
                    children.append(p1.from_flowbook(future.state))
                states[node] = p1.mapped_state(children)
            else:
                assert isinstance(value, TaskRunFuture)
                value.wait()
                value.task_run.observed = True
                states[node] = p1.from_flowbook(value.state)
        return states

    # -- showing -------------------------------------------------------------------------------
    def visualize(
        self,
        flow_state: p1.State | None = None,
        filename: str | None = None,
        format: str | None = None,
    ) -> Any:
        """The graph: a ``graphviz.Digraph`` when graphviz is installed, else text."""
        from flowbook._functional_view import visualize

        return visualize(self, flow_state, filename, format)


def add_call(
    task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], mapped: bool
) -> Any:
    """The ``Task.__call__``/``Task.map`` hook: a node when a block is open on this thread.

    Returns ``_tasks.NOT_BUILDING`` when the call should run as usual.
    """
    flow = current_block()
    if flow is None:
        return _tasks.NOT_BUILDING
    return flow._add_call(task, args, dict(kwargs), mapped)
