"""What a run widget shows, as plain data: the snapshot of one flow run and its task runs.

``RunModel`` is fed by the notebook subscriber (``flowbook.jupyter.extension``): engine events
mark task runs as changed, and ``snapshot()`` turns the changes into the widget's traits (see
docs/widget-protocol.md). It is incremental: a snapshot looks only at the task runs that
changed since the last one, so a 10,000-task map costs a few hundred node updates per second,
not 10,000 per update. The graph layout is recomputed only when nodes appear.

It keeps little per task run, so that a 1,000,000-task map fits in a kernel: a byte of state
per run of a ``.map()`` (by its index in the map; other runs: a small int in a dict), the node
each run outside a map is in (one dict entry, for the edges of later runs; a map's runs are
found through their map's node, and one that a later run depends on has an entry for its
map), the states of a run beyond Pending, Running and its final one (retries, custom states:
a run's final state alone is read from the run), and references only to the task runs it can
show: the first ``MAX_BARS`` to start (the timeline), the first ``MAX_DETAIL_RUNS`` to fail
and the last ``MAX_DETAIL_RUNS`` created per node (node details). Every other task run (its
result among them) is the engine's and the store's, never kept alive by the widget.

``StoredRun`` gives the same snapshot for a finished run read back from the store.

Nodes: a ``.map()`` call is one node; a subflow call is a box around its own nodes; other task
runs are one node each, until one task has more than ``FOLD`` such runs in one flow run: then
they fold into one group node (a loop of ``.submit()`` calls reads like a map).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypedDict

from flowbook._preview import parameters_preview, preview
from flowbook._printed_text import PartialLine, split_writes
from flowbook.engine.runs import FlowRun, TaskRun
from flowbook.jupyter.layout import LayoutNode, layout_routed
from flowbook.states import State, StateType

__all__ = [
    "FOLD",
    "MAX_BARS",
    "MAX_LOGS",
    "RunModel",
    "StoredRun",
    "TaskRunDetail",
    "run_detail",
    "stored_inputs",
    "stored_run_detail",
    "stored_tracebacks",
    "task_run_detail",
]

FOLD = 12
MAX_LOGS = 2000
MAX_BARS = 2000
MAX_DETAIL_RUNS = 20
MAX_TRACEBACK = 6000

_NO_ATTRIBUTE: Any = object()
_PRINTED = {"stdout": "PRINT", "stderr": "STDERR"}  # stored printed lines' level names
_FINAL = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
_BAD = ("FAILED", "CRASHED")
# which state a node with a mix of states shows: the first type present in this order
_SHOWN_FIRST = ("FAILED", "CRASHED", "CANCELLED", "RUNNING", "PENDING", "SCHEDULED", "PAUSED")


# A task run's state in the model is one small int: the index of its (name, type) in the
# model's table of states seen, with this bit set once the run has started (is on the timeline).
# Values stay below 256, so they are Python's shared small ints and fit a map node's bytearray.
_STARTED = 0x80
_MAX_CODES = _STARTED - 1


class _Node:
    __slots__ = (
        "codes",
        "counts",
        "failed",
        "first",
        "key",
        "kind",
        "label",
        "last",
        "order",
        "parent",
        "total",
        "types",
    )

    def __init__(
        self, key: str, kind: str, label: str, parent: str | None, order: int, size: int = 0
    ) -> None:
        self.key = key
        self.kind = kind
        self.label = label
        self.parent = parent
        self.order = order
        self.total = 0
        # a map node: each run's state code by its index in the map (other nodes: None)
        self.codes = bytearray(size) if kind == "map" else None
        self.first: TaskRun | None = None
        # the runs a node's detail shows: the last created, and the first to fail
        self.last: collections.deque[TaskRun] = collections.deque(maxlen=MAX_DETAIL_RUNS)
        self.failed: list[TaskRun] = []
        self.counts: dict[str, int] = {}
        self.types: dict[str, int] = {}

    def add(self, run: TaskRun) -> None:
        if self.first is None:
            self.first = run
        self.total += 1
        self.last.append(run)


def _drain(queue: collections.deque[TaskRun]) -> Iterator[TaskRun]:
    """The runs queued as changed when called, in order, taken off the queue one by one (runs
    queued meanwhile wait for the next snapshot). A run queued more than once (created,
    started, ended) comes again: applying its current state a second time changes nothing.
    (No set or dict of them is built: a long run's first snapshot may find a million runs
    queued.)"""
    for _ in range(len(queue)):
        yield queue.popleft()


def _index(run: TaskRun) -> int:
    """A map run's index in its map."""
    group = run.map_group
    return group[2] if group is not None else 0


def _state_type(state: State | None) -> str:
    return state.type._value_ if state is not None else "PENDING"


def _shown_state(types: Mapping[str, int], counts: Mapping[str, int]) -> tuple[str, str]:
    for kind in _SHOWN_FIRST:
        if types.get(kind):
            return _name_for(kind, counts), kind
    if counts.get("Cached") and counts["Cached"] == sum(counts.values()):
        return "Cached", "COMPLETED"
    if types.get("COMPLETED"):
        return "Completed", "COMPLETED"
    return "Pending", "PENDING"


_TYPE_NAMES = {
    "FAILED": ("Failed", "TimedOut"),
    "CRASHED": ("Crashed",),
    "CANCELLED": ("Cancelled",),
    "RUNNING": ("Running", "Retrying"),
    "PENDING": ("Pending",),
    "SCHEDULED": ("AwaitingRetry", "Scheduled"),
    "PAUSED": ("Paused",),
}


def _name_for(kind: str, counts: Mapping[str, int]) -> str:
    for name in _TYPE_NAMES.get(kind, ()):
        if counts.get(name):
            return name
    return kind.capitalize()


def _format_traceback(exc: BaseException) -> str:
    from flowbook._tracebacks import format_user_traceback

    text = format_user_traceback(exc)
    if len(text) > MAX_TRACEBACK:
        text = "...\n" + text[-MAX_TRACEBACK:]
    return text


class TaskRunDetail(TypedDict):
    """One task run (or subflow record) in a node's detail (docs/widget-protocol.md).

    Built by ``task_run_detail`` only, from a live ``TaskRun`` (``run_detail``) or a stored
    row (``stored_run_detail``); a field the source does not have is None.
    """

    id: str
    name: str
    task: str
    state: str
    state_type: str
    message: str | None
    states: list[list[Any]]
    start: float | None
    end: float | None
    duration: float | None
    run_count: int
    retries: int | None
    cache_key: str | None
    cache: str
    inputs: str | None
    result: str | None
    traceback: str | None


def task_run_detail(
    *,
    id: str,
    name: str,
    task: str,
    state: str | None,
    state_type: str | None,
    message: str | None,
    states: list[list[Any]],
    start: float | None,
    end: float | None,
    run_count: int | None,
    retries: int | None,
    cache_key: str | None,
    inputs: str | None,
    result: str | None,
    traceback: str | None,
) -> TaskRunDetail:
    """The one builder of a task run's detail: the live and the stored snapshot both use it."""
    name_shown = state or "Pending"
    cache = "off" if not cache_key else "hit" if name_shown == "Cached" else "miss"
    return {
        "id": id,
        "name": name,
        "task": task,
        "state": name_shown,
        "state_type": state_type or "PENDING",
        "message": message,
        "states": states,
        "start": start,
        "end": end,
        "duration": (end - start) if start is not None and end is not None else None,
        "run_count": run_count or 0,
        "retries": retries,
        "cache_key": cache_key or None,
        "cache": cache,
        "inputs": inputs,
        "result": result,
        "traceback": traceback,
    }


def run_detail(run: TaskRun, states: list[list[Any]] | None = None) -> TaskRunDetail:
    """The detail of one live task run (or subflow record) for the node panel."""
    state = run.state
    task = run.task
    data = state.data if state is not None else None
    tb = None
    if isinstance(data, BaseException) and state is not None and not state.is_completed():
        tb = _format_traceback(data)
    result = None
    if state is not None and state.is_completed():
        result = preview(data)
    try:
        inputs = parameters_preview(run.parameters)
    except TypeError:
        inputs = "{}"
    return task_run_detail(
        id=run.id,
        name=run.name,
        task=run.task_name,
        state=state.name if state is not None else None,
        state_type=_state_type(state),
        message=state.message if state is not None else None,
        states=states if states is not None else [],
        start=run.start_s,
        end=run.end_s,
        run_count=run.run_count,
        retries=task.retries if task is not None else 0,
        cache_key=run.cache_key,
        inputs=inputs,
        result=result,
        traceback=tb,
    )


def _timestamp(text: str | float | None) -> float | None:
    """A stored time (ISO 8601 text, as ``flowbook.runs.get`` gives it) as epoch seconds."""
    from datetime import datetime

    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return float(text)
    return datetime.fromisoformat(text).timestamp()


def stored_run_detail(
    row: Mapping[str, Any],
    inputs: str | None = None,
    traceback: str | None = None,
    result: str | None = None,
) -> TaskRunDetail:
    """The detail of one stored task run (a row of ``FlowRunDetail.task_run_list``).

    ``inputs`` is the row's stored ``parameters_preview``; ``traceback`` the one its stored
    "Task run failed with exception" line holds (``stored_tracebacks``), else a failed run
    shows its state's message. ``result`` is the preview of its stored result, read
    without unpickling (``queries.result_previews``; ``StoredRun`` reads it for the runs a
    node detail shows): the store keeps no preview, as writing one per task run would cost
    every run what only an inspected one needs. The task's ``retries`` option is not kept.
    """
    failed = row.get("state_type") in _BAD
    if traceback is not None and len(traceback) > MAX_TRACEBACK:
        traceback = "...\n" + traceback[-MAX_TRACEBACK:]
    return task_run_detail(
        id=row["id"],
        name=row["name"],
        task=row["task_name"],
        state=row.get("state"),
        state_type=row.get("state_type"),
        message=row.get("message"),
        states=[
            [s["name"], _timestamp(s["timestamp"]), s["message"]] for s in row.get("states") or ()
        ],
        start=_timestamp(row.get("start_time")),
        end=_timestamp(row.get("end_time")),
        run_count=row.get("run_count"),
        retries=None,
        cache_key=row.get("cache_key"),
        inputs=inputs if inputs is not None else row.get("parameters_preview"),
        result=result,
        traceback=(traceback or row.get("message")) if failed else None,
    )


_FAILED_LINE = "Task run failed with exception: "


def stored_tracebacks(logs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Each task run's traceback as the store keeps it: the text after the first line of its
    last ERROR line "Task run failed with exception: ..." (``FlowRunDetail.logs``)."""
    out: dict[str, str] = {}
    for line in logs:
        message = line.get("message") or ""
        task_run_id = line.get("task_run_id")
        if (
            task_run_id
            and (line.get("level") or 0) >= logging.ERROR
            and message.startswith(_FAILED_LINE)
            and "\n" in message
        ):
            out[task_run_id] = message.split("\n", 1)[1]
    return out


def stored_inputs(store: Any, task_run_ids: Iterable[str]) -> dict[str, str]:
    """The stored input previews (``task_runs.parameters_preview``) of these task runs."""
    from sqlalchemy import select

    from flowbook.store.schema import task_runs

    ids = list(task_run_ids)
    out: dict[str, str] = {}
    with store.engine.connect() as conn:
        for i in range(0, len(ids), 500):
            rows = conn.execute(
                select(task_runs.c.id, task_runs.c.parameters_preview).where(
                    task_runs.c.id.in_(ids[i : i + 500])
                )
            )
            out.update({r.id: r.parameters_preview for r in rows if r.parameters_preview})
    return out


class RunModel:
    """The live snapshot of one top-level flow run (its subflows included)."""

    def __init__(self, flow_run: FlowRun) -> None:
        self.flow_run = flow_run
        self._lock = threading.Lock()
        # task runs changed since the last snapshot; a deque: appends from many threads are safe
        self._dirty: collections.deque[TaskRun] = collections.deque()
        self._header_dirty = True
        self._logs: collections.deque[list[Any]] = collections.deque(maxlen=MAX_LOGS)
        self._logs_total = 0
        self._logs_dirty = False
        self._partial: dict[tuple[str, str], PartialLine] = {}
        # state history per task run id, kept for runs shown in node details
        self._history: dict[str, list[list[Any]]] = {}
        # the node of every task run seen outside a map (for the edges of later runs; a map's
        # runs are found through their map's node, so a map of a million runs adds no entry
        # per run); the state codes of those runs (map runs keep theirs in their node's
        # bytearray)
        self._where: dict[str, _Node] = {}
        # the map of each mapped run that a later run depends on: run id -> map id (told by
        # the later run's creation, ``upstream_created``; one entry per such run, however many
        # runs depend on it)
        self._mapped_upstream: dict[str, str] = {}
        self._codes: dict[str, int] = {}
        # the (name, type) of each state code, and back; code 0: not seen yet
        self._code_names: list[tuple[str, str]] = [("", "")]
        self._code_of: dict[tuple[str, str], int] = {}
        # every type's usual name has its code from the start: the fallback of names beyond
        # what a code holds always finds one
        for state_type in StateType:
            self._code(state_type._value_.capitalize(), state_type._value_)
        self._nodes: dict[str, _Node] = {}
        self._map_nodes: dict[str, _Node] = {}
        self._loose: dict[tuple[str | None, str], list[TaskRun]] = {}
        # who printed a partial line that is still open: (run id, stream) -> (name, task)
        self._partial_who: dict[tuple[str, str], tuple[str, str]] = {}
        self._edges: set[tuple[str, str, str]] = set()
        self._structure_dirty = True
        self._graph: dict[str, Any] = {"width": 0, "height": 0, "nodes": [], "edges": []}
        self._node_cache: dict[str, dict[str, Any]] = {}
        # the first MAX_BARS task runs to start (the timeline), and how many started
        self._started: list[TaskRun] = []
        self._started_total = 0
        # single-run nodes folded into a group node: old key -> group key
        self._moved: dict[str, str] = {}
        # edges whose upstream run has not been seen yet: upstream id -> downstream node keys
        self._waiting_edges: dict[str, list[str]] = {}
        self._order = 0
        self.cancel_requested = False
        # the task runner's dashboard (a Dask runner has one once it connects, at its first
        # submitted task run); looked for until found or the runner turns out to have none
        self._dashboard_link: str | None = None
        self._look_for_dashboard = True

    # -- fed from the event subscriber (any thread; must be quick) ---------------------------
    def task_run_changed(self, run: TaskRun) -> None:
        self._dirty.append(run)

    def upstream_created(self, upstream: Iterable[TaskRun]) -> None:
        """A task run was created after ``upstream`` (the runs it depends on): the mapped
        ones among them are remembered, for the edges from their map's node. (Call it before
        ``task_run_changed`` for the new run's creation.)"""
        mapped = self._mapped_upstream
        for up in upstream:
            map_id = up.map_id
            if map_id is not None and up.subflow_run is None:
                mapped[up.id] = map_id

    def _node_of(self, run: TaskRun) -> _Node | None:
        """The node a run was counted on (None: not added yet)."""
        map_id = run.map_id
        if map_id is not None and run.subflow_run is None:
            return self._map_nodes.get(map_id)
        return self._where.get(run.id)

    def flow_run_changed(self) -> None:
        self._header_dirty = True

    def state_entered(self, run: TaskRun, state: State) -> None:
        """Remember a state beyond the common Pending -> Running -> Completed path.

        The common states' times are on the run itself (created, started, ended), so the
        history shown in a node's detail is built from those plus what is recorded here.
        """
        if state.name in ("Pending", "Running", "Completed"):
            return
        history = self._history.get(run.id)
        if history is None:
            if state.is_final():
                return  # a final state alone (Cached, Failed) is read from the run itself
            history = self._history[run.id] = []
        if len(history) < 50:
            history.append([state.name, state.timestamp_s, state.message])

    def add_log(self, ts: float, level: str, who: str, message: str, task: str) -> None:
        with self._lock:
            self._logs.append([ts, level, who, message, task])
            self._logs_total += 1
            self._logs_dirty = True

    def add_output(self, stream: str, text: str, who: str, task: str, key: str) -> None:
        """Printed text: whole lines become log lines; a partial line waits for its end."""
        level = "PRINT" if stream == "stdout" else "STDERR"
        with self._lock:
            # pieces of a partial line, bounded, with a carriage return starting it again
            # (store/printed.py): a progress bar's ten thousand redraws are one short line
            lines, partial = split_writes(self._partial.pop((key, stream), None), text, 0.0)
            if partial is not None:
                self._partial[(key, stream)] = partial
                self._partial_who[(key, stream)] = (who, task)
            else:
                self._partial_who.pop((key, stream), None)
            now = time.time()
            for line, _ in lines:
                self._logs.append([now, level, who, line, task])
                self._logs_total += 1
            if lines:
                self._logs_dirty = True

    def flush_output(self) -> None:
        """End the partial printed lines (the run ended)."""
        with self._lock:
            partial, self._partial = self._partial, {}
            who_of, self._partial_who = self._partial_who, {}
        for (key, stream), rest in partial.items():
            who, task = who_of.get((key, stream), (self.flow_run.name, ""))
            level = "PRINT" if stream == "stdout" else "STDERR"
            with self._lock:
                self._logs.append([time.time(), level, who, rest.text(), task])
                self._logs_total += 1
                self._logs_dirty = True

    # -- snapshot (the updater thread) --------------------------------------------------------
    def pending(self) -> bool:
        if self._look_for_dashboard:
            self._find_dashboard_link()
        return bool(self._dirty) or self._header_dirty or self._logs_dirty

    def _find_dashboard_link(self) -> None:
        """Pick up the task runner's ``dashboard_link`` once it has one (the header shows it).

        The runner is the flow run's own copy, made when the run begins; a Dask runner knows
        its dashboard from its first submitted task run until the flow run ends, so the link is
        kept once seen.
        """
        runner = self.flow_run.task_runner
        if runner is None:
            return
        link = getattr(runner, "dashboard_link", _NO_ATTRIBUTE)
        if link is _NO_ATTRIBUTE:
            self._look_for_dashboard = False
        elif link:
            self._dashboard_link = str(link)
            self._look_for_dashboard = False
            self._header_dirty = True

    def snapshot(self, *, timeline: bool) -> dict[str, Any]:
        """The traits that changed since the last snapshot (all of them on the first one)."""
        if self._look_for_dashboard:
            self._find_dashboard_link()
        changed_nodes = self._apply(_drain(self._dirty))
        out: dict[str, Any] = {}
        if changed_nodes or self._structure_dirty or self._header_dirty:
            self._header_dirty = False
            out["header"] = self.header()
        if changed_nodes or self._structure_dirty:
            out["graph"] = self._graph_snapshot(changed_nodes)
        if self._logs_dirty:
            with self._lock:
                self._logs_dirty = False
                out["logs"] = list(self._logs)
                out["logs_total"] = self._logs_total
        if timeline:
            out["timeline"] = self.timeline()
        return out

    def _code(self, name: str, kind: str) -> int:
        code = self._code_of.get((name, kind))
        if code is None:
            names = self._code_names
            if len(names) > _MAX_CODES:
                # more distinct state names than a code holds (custom names): counted under
                # their type's usual name
                return self._code(kind.capitalize(), kind)
            code = self._code_of[(name, kind)] = len(names)
            names.append((name, kind))
        return code

    def _apply(self, dirty: Iterable[TaskRun]) -> set[str]:
        """Count each changed run's new state on its node (runs arrive in creation order)."""
        changed: set[str] = set()
        codes, started, names = self._codes, self._started, self._code_names
        node_of = self._node_of
        for run in dirty:
            node = node_of(run)
            added = node is None
            if node is None:
                node = self._add(run)
            node_codes = node.codes
            if node_codes is not None:
                index = _index(run)
                old = node_codes[index]
                if not old and not added:  # a map's run not seen yet (its node came earlier)
                    self._add(run)
            else:
                index = -1
                old = codes.get(run.id, 0)
            state = run.state
            if state is None:
                name, kind = "Pending", "PENDING"
            else:
                name, kind = state.name, state.type._value_
            code = self._code_of.get((name, kind)) or self._code(name, kind)
            if old & _MAX_CODES == code:
                continue
            old_name, old_kind = names[old & _MAX_CODES]
            counts, types = node.counts, node.types
            if old_name:
                counts[old_name] -= 1
                types[old_kind] -= 1
            counts[name] = counts.get(name, 0) + 1
            types[kind] = types.get(kind, 0) + 1
            if kind in _BAD and old_kind not in _BAD and len(node.failed) < MAX_DETAIL_RUNS:
                node.failed.append(run)
            new = code | (old & _STARTED)
            if not old & _STARTED and run.start_s is not None and run.subflow_run is None:
                new |= _STARTED
                self._started_total += 1
                if len(started) < MAX_BARS:
                    started.append(run)
            if node_codes is not None:
                node_codes[index] = new
            else:
                codes[run.id] = new
            changed.add(node.key)
        return changed

    def _parent_key(self, run: TaskRun) -> str | None:
        fr = run.flow_run
        if fr is None or fr is self.flow_run:
            return None
        return f"flow:{fr.id}"

    def _add(self, run: TaskRun) -> _Node:
        map_group = run.map_group
        if map_group is not None and run.subflow_run is None:
            node = self._map_nodes.get(map_group[0])
            if node is None:
                key = f"map:{map_group[0]}"
                node = self._new_node(
                    key, "map", f"{run.task_name}.map", self._parent_key(run), map_group[1]
                )
                self._map_nodes[map_group[0]] = node
        else:
            parent = self._parent_key(run)
            loose = self._loose.setdefault((parent, run.task_name), [])
            group = f"group:{parent}:{run.task_name}"
            if run.subflow_run is not None:
                key, kind, label = f"flow:{run.subflow_run.id}", "flow", run.name
            elif group in self._nodes:
                key, kind, label = group, "group", run.task_name
            elif len(loose) >= FOLD:
                key, kind, label = group, "group", run.task_name
                self._fold(loose, group, kind, label, parent)
            else:
                key, kind, label = f"task:{run.id}", "task", run.name
            node = self._nodes.get(key) or self._new_node(key, kind, label, parent)
            if kind == "task":
                loose.append(run)
            self._where[run.id] = node
        node.add(run)
        key = node.key
        mapped = self._mapped_upstream
        for up in run.upstream_ids:
            up_node = self._where.get(up)
            if up_node is None and mapped:
                map_id = mapped.get(up)
                up_node = self._map_nodes.get(map_id) if map_id is not None else None
            if up_node is None:
                self._waiting_edges.setdefault(up, []).append(key)
            else:
                self._add_edge(up_node.key, key)
        for down in self._waiting_edges.pop(run.id, ()):
            self._add_edge(key, down)
        return node

    def _new_node(
        self, key: str, kind: str, label: str, parent: str | None, size: int = 0
    ) -> _Node:
        self._order += 1
        node = self._nodes[key] = _Node(key, kind, label, parent, self._order, size)
        self._structure_dirty = True
        return node

    def _add_edge(self, a: str, b: str) -> None:
        moved = self._moved
        a, b = moved.get(a, a), moved.get(b, b)
        if a != b and (a, b, "data") not in self._edges:
            self._edges.add((a, b, "data"))
            self._structure_dirty = True

    def _fold(
        self, loose: list[TaskRun], group: str, kind: str, label: str, parent: str | None
    ) -> None:
        """Move a task's single-run nodes into one group node."""
        node = self._new_node(group, kind, label, parent)
        moved = {}
        names = self._code_names
        for run in loose:
            old = self._nodes.pop(f"task:{run.id}", None)
            if old is None:
                continue
            moved[old.key] = group
            node.order = min(node.order, old.order)
            self._where[run.id] = node
            node.add(run)
            name, state_type = names[self._codes.get(run.id, 0) & _MAX_CODES]
            if name:
                node.counts[name] = node.counts.get(name, 0) + 1
                node.types[state_type] = node.types.get(state_type, 0) + 1
                if state_type in _BAD and len(node.failed) < MAX_DETAIL_RUNS:
                    node.failed.append(run)
        loose.clear()
        self._moved.update(moved)
        self._edges = {
            (moved.get(a, a), moved.get(b, b), k)
            for a, b, k in self._edges
            if moved.get(a, a) != moved.get(b, b)
        }
        self._structure_dirty = True

    def header(self) -> dict[str, Any]:
        run = self.flow_run
        state = run.state
        counts: collections.Counter[str] = collections.Counter()
        done = total = 0
        for node in self._nodes.values():
            if node.kind == "flow":
                continue
            for name, n in node.counts.items():
                if n:
                    counts[name] += n
            total += node.total
            done += sum(n for k, n in node.types.items() if k in _FINAL)
        background = run.background
        final = state is not None and state.is_final()
        return {
            "flow": run.flow.name,
            "run_name": run.name,
            "run_id": run.id,
            "state": state.name if state is not None else "Pending",
            "state_type": _state_type(state),
            "message": state.message if state is not None else None,
            "start": run.start_s,
            "end": run.end_s if final else None,
            "now": time.time(),
            "counts": dict(sorted(counts.items())),
            "total": total,
            "done": done,
            "background": background is not None,
            "cancellable": background is not None and not final,
            "cancel_requested": self.cancel_requested,
            "source": "live",
            "dashboard_link": self._dashboard_link,
        }

    def _graph_snapshot(self, changed: set[str]) -> dict[str, Any]:
        if self._structure_dirty:
            self._structure_dirty = False
            items = [
                LayoutNode(n.key, n.parent, n.order, is_container=n.kind == "flow")
                for n in self._nodes.values()
            ]
            placed = layout_routed(items, [(a, b) for a, b, _ in self._edges])
            self._graph = {
                "width": placed.width,
                "height": placed.height,
                "nodes": [{"key": i.key, "x": i.x, "y": i.y, "w": i.w, "h": i.h} for i in items],
                "edges": _edges(sorted(self._edges), placed.routes),
            }
            changed = set(self._nodes)
        cache = self._node_cache
        nodes = []
        for placed in self._graph["nodes"]:
            key = placed["key"]
            node = self._nodes.get(key)
            if node is None:
                continue
            data = cache.get(key)
            if data is None or key in changed:
                data = cache[key] = self._node_data(node)
            nodes.append({**placed, **data})
        self._graph = {**self._graph, "nodes": nodes}
        return self._graph

    def _node_data(self, node: _Node) -> dict[str, Any]:
        state, kind = _shown_state(node.types, node.counts)
        record = node.first
        if node.kind == "flow" and record is not None and record.state is not None:
            state, kind = record.state.name, _state_type(record.state)
        shown = [r for r in node.failed if _state_type(r.state) in _BAD]
        if len(shown) < MAX_DETAIL_RUNS:
            rest = MAX_DETAIL_RUNS - len(shown)
            seen = {id(r) for r in shown}
            last = list(node.last)[-rest:]
            shown += [r for r in last if id(r) not in seen]
        runs = [run_detail(run, self._states_of(run)) for run in shown]
        return {
            "label": node.label,
            "kind": node.kind,
            "parent": node.parent,
            "state": state,
            "state_type": kind,
            "counts": {k: v for k, v in sorted(node.counts.items()) if v},
            "total": node.total,
            "done": sum(n for k, n in node.types.items() if k in _FINAL),
            "detail": {"runs": runs, "runs_total": node.total},
        }

    def _states_of(self, run: TaskRun) -> list[list[Any]]:
        extra = self._history.get(run.id, [])
        states: list[list[Any]] = [["Pending", run.created_s, None]]
        if run.start_s is not None and run.subflow_run is None:
            states.append(["Running", run.start_s, None])
        states += extra
        state = run.state
        if state is not None and state.is_final() and (not extra or extra[-1][0] != state.name):
            states.append([state.name, state.timestamp_s, state.message])
        return states

    def timeline(self) -> dict[str, Any]:
        # runs in the order they started: the first MAX_BARS are drawn
        codes, names, node_of = self._codes, self._code_names, self._node_of
        shown = []
        for run in self._started:
            node = node_of(run)
            assert node is not None  # (a run starts after it is added)
            node_codes = node.codes
            code = node_codes[_index(run)] if node_codes is not None else codes[run.id]
            name, kind = names[code & _MAX_CODES]  # the state the counts show
            shown.append((run.start_s, run.end_s, name, kind, node.key, run.name, run.task_name))
        tl = build_timeline(shown, self.flow_run.start_s, self.flow_run.end_s)
        tl["total"] = self._started_total
        return tl


def _edges(
    edges: Iterable[tuple[str, str, str]],
    routes: Mapping[tuple[str, str], list[tuple[float, float]]],
) -> list[dict[str, Any]]:
    """The graph's edges, each with its route around the nodes when it has one."""
    out: list[dict[str, Any]] = []
    for a, b, k in edges:
        edge: dict[str, Any] = {"from": a, "to": b, "kind": k}
        route = routes.get((a, b))
        if route is not None:
            edge["points"] = [[round(x, 1), round(y, 1)] for x, y in route]
        out.append(edge)
    return out


def build_timeline(
    runs: Iterable[tuple[float | None, float | None, str, str, str, str, str]],
    start: float | None,
    end: float | None,
) -> dict[str, Any]:
    """Bars in lanes grouped by task: one group of lanes per task (the last field of a run),
    the groups in the order their first runs started; within a group a bar takes the lowest
    lane free at its start. Only the first ``MAX_BARS`` runs to start are drawn."""
    import heapq

    started = sorted((r for r in runs if r[0] is not None), key=lambda r: r[0] or 0.0)
    total = len(started)
    shown = started[:MAX_BARS]
    now = time.time()
    # per task: its free lanes, its busy lanes (by when they free up), its lane count
    packing: dict[str, tuple[list[int], list[tuple[float, int]], list[int]]] = {}
    placed = []
    for t0, t1, name, kind, node, run_name, task in shown:
        assert t0 is not None
        free, busy, count = packing.setdefault(task, ([], [], [0, 0]))
        while busy and busy[0][0] <= t0:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane = count[0]
            count[0] += 1
        count[1] += 1
        heapq.heappush(busy, ((t1 if t1 is not None else now), lane))
        placed.append((task, lane, [t0, t1, name, kind, node, run_name]))
    groups = []
    base: dict[str, int] = {}
    lanes = 0
    for task, (_, _, (n_lanes, n_runs)) in packing.items():
        base[task] = lanes
        groups.append({"task": task, "lane": lanes, "lanes": n_lanes, "runs": n_runs})
        lanes += n_lanes
    bars = [[base[task] + lane, *bar] for task, lane, bar in placed]
    return {
        "start": start,
        "end": end,
        "lanes": lanes,
        "total": total,
        "bars": bars,
        "groups": groups,
    }


# -- a finished run, from the store -----------------------------------------------------------


class StoredRun:
    """The snapshot of a run read back from the store (``%flowbook show RUN``, the panel).

    ``inputs`` maps task run ids to their stored input previews; when not given they are read
    from this process's store if it is open (one query), else the rows' own
    ``parameters_preview`` (if any) is used.
    """

    def __init__(
        self,
        detail: Any,
        subflows: dict[str, Any] | None = None,
        inputs: Mapping[str, str] | None = None,
        results: Callable[[list[str]], Mapping[str, str]] | None = None,
    ) -> None:
        self.detail = detail
        self.subflows = subflows or {}
        self.inputs = inputs
        self.results = results

    def _results(self, ids: list[str]) -> Mapping[str, str]:
        """Result previews of the task runs a node detail shows (never unpickled)."""
        if not ids:
            return {}
        try:
            if self.results is not None:
                return self.results(ids)
            from flowbook.store import get_store
            from flowbook.store.queries import result_previews

            store = get_store(open_if_needed=False)
            return {} if store is None else result_previews(store, ids)
        except Exception:  # the previews are extras; the snapshot stands without them
            return {}

    def _inputs(self) -> Mapping[str, str]:
        if self.inputs is not None:
            return self.inputs
        from flowbook.store import get_store

        store = get_store(open_if_needed=False)
        if store is None:
            return {}
        ids = [t["id"] for t in self.detail.task_run_list]
        for sub in self.subflows.values():
            ids += [t["id"] for t in sub.task_run_list]
        try:
            return stored_inputs(store, ids)
        except Exception:  # the previews are extras; the snapshot stands without them
            return {}

    def snapshot(self) -> dict[str, Any]:
        ts = _timestamp
        inputs = self._inputs()
        tracebacks = stored_tracebacks(self.detail.logs)
        for sub in self.subflows.values():
            tracebacks.update(stored_tracebacks(sub.logs))

        d = self.detail
        nodes: dict[str, dict[str, Any]] = {}
        order: list[LayoutNode] = []
        node_of: dict[str, str] = {}
        edges: set[tuple[str, str, str]] = set()
        per_task: collections.Counter[tuple[str | None, str]] = collections.Counter()
        bars = []

        def add_runs(task_runs: list[dict[str, Any]], parent: str | None) -> None:
            for t in task_runs:
                per_task[(parent, t["task_name"])] += 1
            for t in task_runs:
                if t.get("subflow_run_id"):
                    key, kind, label = f"flow:{t['subflow_run_id']}", "flow", t["name"]
                elif per_task[(parent, t["task_name"])] > FOLD:
                    key, kind, label = f"group:{parent}:{t['task_name']}", "group", t["task_name"]
                else:
                    key, kind, label = f"task:{t['id']}", "task", t["name"]
                node_of[t["id"]] = key
                node = nodes.get(key)
                if node is None:
                    node = nodes[key] = {
                        "key": key,
                        "label": label,
                        "kind": kind,
                        "parent": parent,
                        "counts": collections.Counter(),
                        "types": collections.Counter(),
                        "runs": [],
                    }
                    order.append(LayoutNode(key, parent, len(order), is_container=kind == "flow"))
                node["counts"][t["state"] or "Pending"] += 1
                node["types"][t["state_type"] or "PENDING"] += 1
                detail = stored_run_detail(t, inputs.get(t["id"]), tracebacks.get(t["id"]))
                node["runs"].append(detail)
                start, end = detail["start"], detail["end"]
                if not t.get("subflow_run_id"):
                    bars.append(
                        (
                            start,
                            end,
                            t["state"] or "",
                            t["state_type"] or "",
                            key,
                            t["name"],
                            t["task_name"],
                        )
                    )
                for up in t["upstream"]:
                    edges.add((up, t["id"], "data"))
                sub = self.subflows.get(t.get("subflow_run_id") or "")
                if sub is not None:
                    add_runs(sub.task_run_list, key)

        add_runs(d.task_run_list, None)
        edge_keys = {
            (node_of[a], node_of[b], k)
            for a, b, k in edges
            if a in node_of and b in node_of and node_of[a] != node_of[b]
        }
        placed = layout_routed(order, [(a, b) for a, b, _ in edge_keys])
        detailed: list[TaskRunDetail] = []  # the runs node details show: they get results
        width, height = placed.width, placed.height
        graph_nodes = []
        counts: collections.Counter[str] = collections.Counter()
        total = done = 0
        for item in order:
            n = nodes[item.key]
            state, kind = _shown_state(n["types"], n["counts"])
            runs = sorted(n["runs"], key=lambda r: r["state_type"] not in ("FAILED", "CRASHED"))
            detailed += runs[:MAX_DETAIL_RUNS]
            n_done = sum(v for k, v in n["types"].items() if k in _FINAL)
            if n["kind"] != "flow":
                counts.update(n["counts"])
                total += len(n["runs"])
                done += n_done
            else:
                state, kind = n["runs"][0]["state"], n["runs"][0]["state_type"]
            graph_nodes.append(
                {
                    "key": item.key,
                    "x": item.x,
                    "y": item.y,
                    "w": item.w,
                    "h": item.h,
                    "label": n["label"],
                    "kind": n["kind"],
                    "parent": n["parent"],
                    "state": state,
                    "state_type": kind,
                    "counts": dict(sorted(n["counts"].items())),
                    "total": len(n["runs"]),
                    "done": n_done,
                    "detail": {"runs": runs[:MAX_DETAIL_RUNS], "runs_total": len(runs)},
                }
            )
        previews = self._results([r["id"] for r in detailed if r["state_type"] == "COMPLETED"])
        for r in detailed:
            r["result"] = previews.get(r["id"])
        names = {t["id"]: (t["name"], t["task_name"]) for t in d.task_run_list}
        logs = []
        for line in d.logs[-MAX_LOGS:]:
            who, task = names.get(line["task_run_id"] or "", (d.name, ""))
            # printed text is stored with its stream as the logger; the widget names it so
            level = _PRINTED.get(line.get("logger") or "") or logging.getLevelName(line["level"])
            logs.append([ts(line["timestamp"]), level, who, line["message"], task])
        start, end = ts(d.start_time), ts(d.end_time)
        return {
            "header": {
                "flow": d.flow_name,
                "run_name": d.name,
                "run_id": d.id,
                "state": d.state or "Pending",
                "state_type": d.state_type or "PENDING",
                "message": d.message,
                "start": start,
                "end": end,
                "now": time.time(),
                "counts": dict(sorted(counts.items())),
                "total": total,
                "done": done,
                "background": False,
                "cancellable": False,
                "cancel_requested": False,
                "source": "store",
                "dashboard_link": None,
            },
            "graph": {
                "width": width,
                "height": height,
                "nodes": graph_nodes,
                "edges": _edges(sorted(edge_keys), placed.routes),
            },
            "logs": logs,
            "logs_total": len(d.logs),
            "timeline": build_timeline(bars, start, end),
        }
