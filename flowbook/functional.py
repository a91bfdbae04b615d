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
import copy
import threading
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
    check_containers,
    current_block,
    handles_in,
    pop_block,
    push_block,
    substitute,
)
from flowbook.engine import state as p1
from flowbook.engine.interrupts import current_body
from flowbook.engine.runs import current_flow_run
from flowbook.exceptions import UpstreamTaskError
from flowbook.flows import Flow, check_executor, check_run_config
from flowbook.futures import FutureList, TaskRunFuture
from flowbook.states import Completed, StateType
from flowbook.states import Failed as FlowbookFailed
from flowbook.states import State as FlowbookState
from flowbook.task_runners.base import TaskRunner
from flowbook.task_runners.sequential import SequentialTaskRunner
from flowbook.tasks import Task, unmapped

__all__ = ["Edge", "FunctionalFlow", "FunctionalFlowWarning", "Parameter", "TaskNode"]


class FunctionalFlowWarning(UserWarning):
    """A Prefect 1 option of a functional flow that does nothing in flowbook."""


# where a flow run's body leaves its nodes' states for ``flow.run()`` (calling the flow the
# ``@flow`` way does not ask for them)
_outcome: ContextVar[dict[Node, p1.State] | None] = ContextVar("_outcome", default=None)
# the task runner of ``flow.run(executor=...)``, for that flow's run only
_run_runner: ContextVar[tuple[FunctionalFlow, TaskRunner] | None] = ContextVar(
    "_run_runner", default=None
)


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
                stacklevel=2,  # the line that made the flow (type.__call__ has no frame)
            )
        self._generation = 0  # one more at each change of the graph (keys _fingerprint)
        self._fingerprint: tuple[tuple[int, str], str] | None = None
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
        check_run_config(value)
        self._run_config = value
        # the engine sets a flow's env for each run and restores it after (@flow(env=...))
        self.env = dict(value.env) if value is not None else {}

    @property
    def executor(self) -> Any:
        return self._executor

    @executor.setter
    def executor(self, value: Any) -> None:
        check_executor(value)
        self._executor = value
        # Prefect 1's default executor ran tasks one at a time
        self.task_runner = value.task_runner() if value is not None else SequentialTaskRunner()

    @property
    def task_runner(self) -> TaskRunner:
        """The executor's task runner; during ``flow.run(executor=...)``, that one's."""
        given = _run_runner.get()
        if given is not None and given[0] is self:
            return given[1]
        return self._task_runner

    @task_runner.setter
    def task_runner(self, value: TaskRunner) -> None:
        self._task_runner = value

    @property
    def version(self) -> str:
        if self._version is None:
            return self.fingerprint()[:16]
        return self._version

    def _changed(self) -> None:
        """The graph changed: its fingerprint (and version) is computed again when asked."""
        self._generation += 1

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
        for value in (*args, *kwargs.values()):
            check_containers(task.name, value)
        node = TaskNode(self, task, args, kwargs, mapped, self._new_slug(task.name))
        for value in (*args, *kwargs.values()):
            for handle, _ in handles_in(value):
                self.add_task(handle)
        for up in upstream:
            node.wait_for.append(self._as_node(up))
        self.add_task(node)  # (counts as the change)
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
            self._changed()
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
        self._changed()
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
                self._changed()

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
        self._changed()

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
        """A stable hash of the graph, the parameters and the tasks' source code and options:
        equal in every process for unchanged code (computed again only after a change)."""
        key = (self._generation, self.name)
        known = self._fingerprint
        if known is not None and known[0] == key:
            return known[1]
        digest = self._compute_fingerprint()
        self._fingerprint = (key, digest)
        return digest

    def _compute_fingerprint(self) -> str:
        from flowbook.caching.hashing import stable_hash
        from flowbook.caching.source import source_hash

        def constant(value: Any) -> str:
            try:
                return stable_hash(value)
            except Exception:  # a value without stable content: its type is what is known
                return f"<{type(value).__qualname__}>"

        def option(value: Any) -> str:
            # a function is hashed by its name and its code, never by its address (a
            # function's str() holds it, and it differs in every process)
            text = constant(value)
            if callable(value) and not isinstance(value, type):
                try:
                    text += f" {source_hash(value)}"
                except Exception:  # a callable without source: its name is what is known
                    pass
            return text

        def described(value: Any) -> str:
            if isinstance(value, Node):
                return f"@{value.slug}"
            if isinstance(value, unmapped):
                return f"unmapped({described(value.value)})"
            if isinstance(value, (list, tuple, set, frozenset, dict)) and any(handles_in(value)):
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
            # the function's qualified name, not its task_key: that one starts with the
            # module, which depends on how the script was started (script:<path>, its name)
            qualname = getattr(task.fn, "__qualname__", task.name)
            options = sorted(f"{k}={option(v)}" for k, v in task._options.items())
            args = ";".join(f"{k}={described(v)}" for k, v in node.inputs())
            waits = ",".join(sorted(u.slug for u in node.wait_for))
            lines.append(
                f"task {node.slug} {qualname} {source_hash(task.fn)} {options} "
                f"map={node.mapped} {args} {waits}"
            )
        lines.append("ref " + ",".join(sorted(n.slug for n in self.reference_tasks())))
        import hashlib

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
        # the engine binds the parameters on the thread that starts the run, before the
        # run's record is written: the version it records (read by the store's writer
        # thread too) is computed here, once, and not while the graph may be changing
        self.fingerprint()
        return {n: kwargs.get(n, p.default) for n, p in params.items()}

    def run(
        self,
        parameters: dict[str, Any] | None = None,
        run_on_schedule: bool | None = None,
        **kw: Any,
    ) -> p1.State:
        """Run the graph now, as one flowbook flow run; returns a Prefect 1-shaped state.

        As in Prefect 1, keyword arguments named after the flow's parameters are parameter
        values (``flow.run(x=1)``; ``parameters=`` wins for a name given both ways), and
        ``executor=`` runs this run with that executor. A failing task does not raise: its
        state is in ``state.result[handle]``.
        """
        from flowbook.engine import interrupts
        from flowbook.engine.flow_engine import FlowRunEngine

        if parameters is not None and not isinstance(parameters, dict):
            raise TypeError(
                f"flow.run(parameters={parameters!r}): parameters must be a dict of "
                "parameter names to values"
            )
        names = {n.name for n in self._nodes if isinstance(n, Parameter)}
        params = {k: kw.pop(k) for k in list(kw) if k in names}
        params.update(parameters or {})
        executor = kw.pop("executor", None)
        check_executor(executor, f"flow.run(executor={executor!r})")
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
        self.bind_parameters((), params)  # a bad call is an error before any run is made
        outcome: dict[Node, p1.State] = {}
        token = _outcome.set(outcome)
        runner = _run_runner.set((self, executor.task_runner()) if executor is not None else None)
        body = interrupts.enter()
        try:
            final = FlowRunEngine(self, (), params).run_sync()
        finally:
            interrupts.leave(body)
            _run_runner.reset(runner)
            _outcome.reset(token)
        states = outcome
        if not states and self._nodes:  # the run ended before the graph ran (it could not start)
            exc = final.data if isinstance(final.data, BaseException) else None
            return p1.Failed(final.message or "The flow run failed.", exc)
        result = TaskStates(states)
        reference = self.reference_tasks()
        if all(p1.all_succeeded(result[n]) for n in reference if n in result):
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
        failed = [states[n] for n in order if n in reference and not p1.all_succeeded(states[n])]
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
        """Submit the nodes in topological order without waiting for a run, except where a
        node cannot be submitted before some runs end: a map over one run's result (its
        length is that result's), or a node after a node that was not submitted (its trigger
        is asked about the upstream states, all final). Such a node, and the nodes after it,
        wait for a later pass, after every node that could be submitted has been; between
        passes the body waits for one of the runs they wait for to end."""
        upstream: dict[Node, list[Node]] = {}
        for edge in self._edges():
            upstream.setdefault(edge.downstream_task, []).append(edge.upstream_task)
        todo = order
        while todo:
            later: list[Node] = []
            held: set[Node] = set()
            awaited: list[TaskRunFuture[Any]] = []
            for node in todo:
                if isinstance(node, Parameter):
                    results[node] = values[node.name]
                    continue
                assert isinstance(node, TaskNode)
                ups = upstream.get(node, [])
                if any(u in held for u in ups):
                    held.add(node)
                    later.append(node)
                    continue
                pending = _awaited(node, ups, results)
                if pending:
                    held.add(node)
                    later.append(node)
                    awaited.extend(pending)
                    continue
                try:
                    results[node] = _submit_node(node, ups, results)
                except Exception as exc:  # this node cannot run; the others go on
                    results[node] = NotRun(
                        p1.Failed(f"Task {node.slug!r} could not be submitted: {exc}", exc)
                    )
            todo = later
            if todo:
                _wait_for_one(awaited)

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


# -- submitting one node -------------------------------------------------------------------------
def _futures_of(value: Any) -> list[TaskRunFuture[Any]]:
    if isinstance(value, TaskRunFuture):
        return [value]
    if isinstance(value, FutureList):
        return list(value)
    return []


def _mapped_inputs(node: TaskNode) -> list[Node]:
    """The nodes a mapped node maps over whole (not inside ``unmapped`` or a container)."""
    return [v for v in (*node.args, *node.kwargs.values()) if isinstance(v, Node)]


def _awaited(node: TaskNode, ups: list[Node], results: dict[Node, Any]) -> list[TaskRunFuture[Any]]:
    """The unfinished runs ``node`` cannot be submitted before (see ``_submit_all``)."""
    if node.mapped:
        # a map over one run's result: how many runs it makes is known when that run ends
        over = [results[u] for u in _mapped_inputs(node)]
        pending = [f for f in over if isinstance(f, TaskRunFuture) and not f.done()]
        if pending:
            return pending
    if node.task.trigger is not None and any(isinstance(results[u], NotRun) for u in ups):
        return [f for u in ups for f in _futures_of(results[u]) if not f.done()]
    return []


def _submit_node(node: TaskNode, ups: list[Node], results: dict[Node, Any]) -> Any:
    """Submit ``node``: its future(s), or ``NotRun`` with the state it ends in."""
    from flowbook.triggers import always_run

    task = node.task
    not_run = [u for u in ups if isinstance(results[u], NotRun)]
    if node.mapped:
        for u in _mapped_inputs(node):
            value = results[u]
            if isinstance(value, NotRun):
                return NotRun(
                    p1.TriggerFailed(
                        f"Upstream task {u.slug!r} did not run; {node.slug!r} has nothing to "
                        "map over.",
                        _upstream_error(node, u, value),
                    )
                )
            if isinstance(value, TaskRunFuture) and not value.state.is_completed():
                value.task_run.observed = True
                return NotRun(
                    p1.TriggerFailed(
                        f"Upstream task run {value.task_run.name!r} did not complete "
                        f"({value.state.name}); {node.slug!r} has nothing to map over.",
                        _upstream_error(node, u, value),
                    )
                )
    if not_run:
        # as Prefect 1 did, the trigger sees a node that was not submitted as failed; when it
        # lets the task run, the task gets that node's exception as its value, as it gets a
        # failed run's, and the engine is told not to ask the trigger again
        refused = _trigger_refusal(node, ups, results, not_run)
        if refused is not None:
            return NotRun(refused)
        task = copy.copy(task)
        task.trigger = always_run
    args = tuple(substitute(a, results) for a in node.args)
    kwargs = {k: substitute(v, results) for k, v in node.kwargs.items()}
    wait_for = [f for up in node.wait_for for f in _futures_of(results[up])]
    if node.mapped:
        if wait_for:
            kwargs["wait_for"] = wait_for
        return task.map(*args, **kwargs)
    return task.submit(*args, wait_for=wait_for or None, **kwargs)


def _upstream_error(node: TaskNode, up: Node, value: Any) -> UpstreamTaskError:
    """The exception of a node not run because of ``up``, caused by ``up``'s own."""
    error = UpstreamTaskError(f"task {node.slug!r} did not run: upstream task {up.slug!r} failed")
    cause = value.state.result if isinstance(value, NotRun) else value.state.data
    if isinstance(cause, BaseException):
        error.__cause__ = cause
    return error


def _trigger_refusal(
    node: TaskNode, ups: list[Node], results: dict[Node, Any], not_run: list[Node]
) -> p1.State | None:
    """The state of ``node`` when its trigger refuses its upstream states, else None.

    The upstream states are those the engine gives a trigger (each upstream run's final
    state, keyed by its future), and for each upstream node that was not submitted a
    ``Failed`` state keyed by the node. Without a trigger, any such node refuses.
    """
    from flowbook.triggers import judge

    trigger = node.task.trigger
    first = not_run[0]
    if trigger is None:
        return p1.TriggerFailed(
            f"Upstream task {first.slug!r} did not run; not run.",
            _upstream_error(node, first, results[first]),
        )
    states: dict[Any, FlowbookState] = {}
    for up in ups:
        value = results[up]
        if isinstance(value, NotRun):
            kind = "TriggerFailed" if isinstance(value.state, p1.TriggerFailed) else "Failed"
            states[up] = FlowbookState(
                StateType.FAILED, kind, value.state.message, value.state.result
            )
        for future in _futures_of(value):
            states[future] = future.state
    refused = judge(trigger, states)
    if refused is None:
        return None
    if refused.name != "TriggerFailed":  # the trigger itself raised
        return p1.Failed(refused.message, refused.data)
    cause = results[first].state.result
    if isinstance(cause, BaseException):
        refused.data.__cause__ = cause
    return p1.TriggerFailed(refused.message, refused.data)


def _wait_for_one(futures: list[TaskRunFuture[Any]]) -> None:
    """Block until one of ``futures`` is final (a kernel interrupt may stop the wait)."""
    if not futures or any(f.done() for f in futures):
        return
    event = threading.Event()
    for future in futures:
        future.add_done_callback(lambda _: event.set())
    body = current_body()
    if body is not None:
        body.waiting += 1
    try:
        event.wait()
    finally:
        if body is not None:
            body.waiting -= 1


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
