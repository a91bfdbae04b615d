"""``FunctionalFlow.visualize()``: the graph of a functional flow, before or after a run.

In a notebook with flowbook's extension loaded, the graph is the run widget's (``RunView``),
drawn from a snapshot built the way a stored run's is (``StoredRun``): one node per task
call and parameter, not run yet (or in the state a given run left it). Elsewhere Graphviz
(the ``graphviz`` package) draws it when installed, as Prefect 1 did; otherwise the graph is
rendered as text (one line per node, in run order, with what it takes from which node),
printed and returned, and a ``filename`` receives the DOT source, which any Graphviz
installation can draw later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowbook._functional_graph import Node
    from flowbook.engine.state import State
    from flowbook.functional import FunctionalFlow

__all__ = ["dot_source", "text_graph", "visualize"]


def _state_of(node: Node, flow_state: State | None) -> str | None:
    if flow_state is None or not isinstance(flow_state.result, dict):
        return None
    state = flow_state.result.get(node)
    return None if state is None else type(state).__name__


def _label(node: Node) -> str:
    from flowbook._functional_graph import Parameter, TaskNode

    if isinstance(node, Parameter):
        default = "required" if node.required else f"default {node.default!r}"
        return f"{node.name} (Parameter, {default})"
    assert isinstance(node, TaskNode)
    return f"{node.slug} (mapped)" if node.mapped else node.slug


def text_graph(flow: FunctionalFlow, flow_state: State | None = None) -> str:
    """One line per node, upstream nodes first: ``name <- upstream as key``."""
    ups: dict[Node, list[str]] = {}
    for edge in sorted(flow.edges, key=lambda e: (e.upstream_task.slug, e.key or "")):
        how = f" as {edge.key}" if edge.key else " (waits)"
        ups.setdefault(edge.downstream_task, []).append(
            f"{edge.upstream_task.slug}{how}{' (mapped)' if edge.mapped else ''}"
        )
    lines = [f"Flow: {flow.name}"]
    for node in flow.sorted_tasks():
        line = f"  {_label(node)}"
        state = _state_of(node, flow_state)
        if state is not None:
            line += f" [{state}]"
        if node in ups:
            line += " <- " + ", ".join(ups[node])
        lines.append(line)
    return "\n".join(lines)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_source(flow: FunctionalFlow, flow_state: State | None = None) -> str:
    """The graph in Graphviz's DOT language."""
    from flowbook._functional_graph import Parameter

    ids = {node: f"n{i}" for i, node in enumerate(flow.sorted_tasks())}
    lines = [f"digraph {_quote(flow.name)} {{", "  rankdir=LR;"]
    for node, ident in ids.items():
        label = _label(node)
        state = _state_of(node, flow_state)
        if state is not None:
            label += f"\\n{state}"
        shape = "box" if isinstance(node, Parameter) else "ellipse"
        lines.append(f"  {ident} [label={_quote(label)}, shape={shape}];")
    for edge in sorted(flow.edges, key=lambda e: (ids[e.upstream_task], ids[e.downstream_task])):
        attrs = [f"label={_quote(edge.key)}"] if edge.key else []
        if edge.mapped:
            attrs.append("style=dashed")
        lines.append(
            f"  {ids[edge.upstream_task]} -> {ids[edge.downstream_task]} [{', '.join(attrs)}];"
        )
    lines.append("}")
    return "\n".join(lines)


def _widgets_on() -> bool:
    """True when flowbook's notebook extension is loaded and shows widgets."""
    import sys

    extension = sys.modules.get("flowbook.jupyter.extension")
    frontend = extension.active() if extension is not None else None
    return frontend is not None and bool(getattr(frontend, "widgets", False))


_P1_TYPES = {
    "Success": "COMPLETED",
    "Cached": "COMPLETED",
    "Skipped": "COMPLETED",
    "Mapped": "COMPLETED",
    "Failed": "FAILED",
    "TriggerFailed": "FAILED",
    "TimedOut": "FAILED",
    "Cancelled": "CANCELLED",
    "Running": "RUNNING",
}


def _state_type(node: Node, flow_state: State | None) -> str:
    """The widget's state type of a node: a mapped task with a failed run shows failed."""
    from flowbook.engine.state import all_succeeded

    name = _state_of(node, flow_state)
    if name == "Mapped" and flow_state is not None and not all_succeeded(flow_state.result[node]):
        return "FAILED"
    return _P1_TYPES.get(name or "", "PENDING")


def run_view(flow: FunctionalFlow, flow_state: State | None = None) -> Any:
    """The run widget showing the graph (a ``RunView``), as a stored run's would be shown."""
    from types import SimpleNamespace

    from flowbook.jupyter.model import StoredRun
    from flowbook.jupyter.widgets.run_view import RunView

    order = flow.sorted_tasks()
    ids = {node: f"node-{i}" for i, node in enumerate(order)}
    ups: dict[Node, list[str]] = {}
    for edge in flow.edges:
        ups.setdefault(edge.downstream_task, []).append(ids[edge.upstream_task])
    runs = []
    for node in order:
        state = _state_of(node, flow_state)
        runs.append(
            {
                "id": ids[node],
                "name": _label(node),
                "task_name": _label(node),
                "subflow_run_id": None,
                "state": state,
                "state_type": _state_type(node, flow_state),
                "message": None,
                "states": [],
                "start_time": None,
                "end_time": None,
                "run_count": 0,
                "cache_key": None,
                "upstream": sorted(ups.get(node, [])),
            }
        )
    ended = flow_state is not None
    detail = SimpleNamespace(
        id="",
        name="not run yet" if not ended else "last run",
        flow_name=flow.name,
        state=type(flow_state).__name__ if ended else None,
        state_type=_P1_TYPES.get(type(flow_state).__name__, "PENDING") if ended else None,
        message=flow_state.message if flow_state is not None else None,
        start_time=None,
        end_time=None,
        task_run_list=runs,
        logs=[],
    )
    return RunView(StoredRun(detail).snapshot())


def visualize(
    flow: FunctionalFlow,
    flow_state: State | None = None,
    filename: str | None = None,
    format: str | None = None,
) -> Any:
    """The run widget in a notebook with flowbook's extension; else a ``graphviz.Source`` when
    graphviz is installed (rendered to ``filename`` when given); else the text rendering
    (printed) with the DOT source written to ``filename``.

    A widget or a ``graphviz.Source`` is returned, not displayed: a cell ending in
    ``flow.visualize()`` shows it (as in Prefect 1), once.
    """
    if filename is None and _widgets_on():
        return run_view(flow, flow_state)
    source = dot_source(flow, flow_state)
    try:
        import graphviz  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        graphviz = None
    if graphviz is None:
        if filename is not None:
            if format not in (None, "dot", "gv"):
                raise ImportError(
                    f"flow.visualize(format={format!r}) needs the graphviz package (pip "
                    "install graphviz, and the Graphviz programs); without it, visualize "
                    "writes DOT source: use format='dot' or leave format out"
                )
            with open(filename, "w", encoding="utf-8") as out:
                out.write(source + "\n")
        text = text_graph(flow, flow_state)
        print(text)
        return text
    graph = graphviz.Source(source)
    if filename is not None:
        graph.render(filename, format=format or "pdf", cleanup=True)
    return graph
