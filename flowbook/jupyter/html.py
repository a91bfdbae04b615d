"""The run's static view: HTML and plain text for places where the widget cannot run.

nbconvert, GitHub and a notebook opened without the widget's JavaScript show the ``text/html``
and ``text/plain`` outputs stored next to the widget. Both are rendered here from the same
snapshot the widget draws (``docs/widget-protocol.md``), so the static view shows the same
run: a header line, the graph as an inline SVG (same coordinates, up to ``SVG_NODE_LIMIT``
nodes), a table of the graph's nodes and the last log lines.

Rules, and why:

- Inline styles only. GitHub strips ``<style>`` elements and class-based styling, so classes
  (``fb-static``) are only hooks for tests and user CSS.
- Every string that comes from a run (names, labels, messages, log lines) is escaped: a task
  may well be called ``<script>``.
- No text colour is forced on the page: the text inherits the page's colour so dark themes stay
  readable; only state badges carry their own background and text colour.
- ``render_text`` has no run name, time or id, so that a re-run notebook gives the same
  ``text/plain`` (notebooks are diffed and compared with nbval).

Pure functions of plain data; the standard library only.
"""

from __future__ import annotations

import html
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["LOG_LINES", "SVG_NODE_LIMIT", "TABLE_ROW_LIMIT", "render_html", "render_text"]

SVG_NODE_LIMIT = 200
"""Graphs with more nodes get the table only: a large inline SVG bloats the notebook file."""
LOG_LINES = 50
"""How many of the last log lines the static view shows."""
TABLE_ROW_LIMIT = 500
"""At most this many node rows; the rest is summed up in one line."""

# [fill, text on that fill] per state name, then per state type (the widget uses the same).
_STATE_COLOURS: dict[str, tuple[str, str]] = {
    "Completed": ("#2f9e44", "#ffffff"),
    "Cached": ("#0c8599", "#ffffff"),
    "Failed": ("#e03131", "#ffffff"),
    "Crashed": ("#e8590c", "#ffffff"),
    "TimedOut": ("#f76707", "#ffffff"),
    "Cancelled": ("#868e96", "#ffffff"),
    "Cancelling": ("#adb5bd", "#212529"),
    "Running": ("#1c7ed6", "#ffffff"),
    "Pending": ("#dee2e6", "#343a40"),
    "Scheduled": ("#dee2e6", "#343a40"),
    "Retrying": ("#f59f00", "#212529"),
    "AwaitingRetry": ("#fab005", "#212529"),
    "Paused": ("#7048e8", "#ffffff"),
}
_TYPE_COLOURS: dict[str, tuple[str, str]] = {
    "COMPLETED": _STATE_COLOURS["Completed"],
    "FAILED": _STATE_COLOURS["Failed"],
    "CRASHED": _STATE_COLOURS["Crashed"],
    "CANCELLED": _STATE_COLOURS["Cancelled"],
    "CANCELLING": _STATE_COLOURS["Cancelling"],
    "RUNNING": _STATE_COLOURS["Running"],
    "PENDING": _STATE_COLOURS["Pending"],
    "SCHEDULED": _STATE_COLOURS["Scheduled"],
    "PAUSED": _STATE_COLOURS["Paused"],
}
_UNKNOWN_COLOURS = ("#adb5bd", "#212529")

# The display order of per-state counts; unknown names follow, by name.
_STATE_ORDER = (
    "Completed", "Cached", "Running", "Retrying", "AwaitingRetry", "Pending", "Scheduled",
    "Paused", "Cancelling", "Failed", "Crashed", "TimedOut", "Cancelled",
)  # fmt: skip

_LEVEL_COLOURS = {
    "WARNING": "#e67700",
    "STDERR": "#e67700",
    "ERROR": "#e03131",
    "CRITICAL": "#e03131",
}

_MUTED = "opacity:0.7"
_BORDER = "rgba(127,127,127,0.35)"
_MONO = "ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"
_FONT = "system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


# --- small helpers -------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: object) -> float:
    """A finite float from model data (anything else counts as 0, so it never reaches markup)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) else 0.0


def _int(value: object) -> int:
    return int(_num(value))


def _coord(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _colours(state: object, state_type: object) -> tuple[str, str]:
    return _STATE_COLOURS.get(str(state)) or _TYPE_COLOURS.get(str(state_type)) or _UNKNOWN_COLOURS


def _format_duration(seconds: object) -> str:
    """``50 ms``, ``1.2 s``, ``1 min 05 s``, ``2 h 03 min`` (the widget's format); ``""`` for
    no value."""
    if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return ""
    if not math.isfinite(seconds):
        return ""
    sec = max(0.0, float(seconds))
    ms = round(sec * 1000)
    if ms < 1000:
        return f"{ms} ms"
    sec = max(sec, 1.0)  # 0.9996 s: "1.0 s", not "0.9 s"
    if sec < 60:
        return f"{math.floor(sec * 10) / 10:.1f} s"
    whole = int(sec)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _clock(ts: object) -> str:
    """A local wall-clock time with milliseconds, as the console and the widget show it."""
    if ts is None or isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return ""
    t = time.localtime(ts)
    return f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{int(ts * 1000) % 1000:03d}"


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return "…" if max_chars <= 1 else text[: max_chars - 1] + "…"


def _ordered_counts(counts: object) -> list[tuple[str, int]]:
    """Positive counts in display order: known states first, then the others by name."""
    if not isinstance(counts, Mapping):
        return []
    items = [(str(name), _int(n)) for name, n in counts.items() if _int(n) > 0]
    order = {name: i for i, name in enumerate(_STATE_ORDER)}
    return sorted(items, key=lambda item: (order.get(item[0], len(order)), item[0]))


def _badge(state: object, state_type: object) -> str:
    fill, fg = _colours(state, state_type)
    return (
        f'<span style="display:inline-block;padding:0 7px;border-radius:9px;background:{fill};'
        f'color:{fg};font-weight:600;font-size:0.92em;line-height:1.6">{_esc(state)}</span>'
    )


def _counts_html(counts: object) -> str:
    parts = []
    for name, n in _ordered_counts(counts):
        fill, _ = _colours(name, None)
        parts.append(
            f'<span style="white-space:nowrap"><span style="display:inline-block;width:8px;'
            f'height:8px;border-radius:50%;background:{fill};margin-right:4px"></span>'
            f"{_esc(name)} {n}</span>"
        )
    return " ".join(parts)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _nodes(graph: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    nodes = graph.get("nodes")
    if not isinstance(nodes, Sequence):
        return []
    return [node for node in nodes if isinstance(node, Mapping)]


# --- header --------------------------------------------------------------------------------


def _header_html(header: Mapping[str, Any]) -> str:
    start, end, now = header.get("start"), header.get("end"), header.get("now")
    elapsed = ""
    if isinstance(start, (int, float)):
        stop = end if isinstance(end, (int, float)) else now
        if isinstance(stop, (int, float)):
            elapsed = _format_duration(stop - start)
    total, done = _int(header.get("total")), _int(header.get("done"))
    items = [
        f'<span style="font-weight:600">{_esc(header.get("flow"))}</span>',
        f'<span style="{_MUTED}">{_esc(header.get("run_name"))}</span>',
        _badge(header.get("state"), header.get("state_type")),
    ]
    if elapsed:
        items.append(f'<span style="{_MUTED}">{_esc(elapsed)}</span>')
    counts = _counts_html(header.get("counts"))
    if counts:
        items.append(counts)
    items.append(f"<span>{done}/{total} done</span>")
    link = header.get("dashboard_link")
    if isinstance(link, str) and link.lower().startswith(("http://", "https://")):
        items.append(
            f'<a class="fb-static-dashboard" href="{_esc(link)}" target="_blank" '
            f'rel="noopener" title="{_esc(link)}">Dask dashboard</a>'
        )
    line = (
        '<div style="display:flex;flex-wrap:wrap;align-items:center;gap:4px 12px">'
        + "".join(items)
        + "</div>"
    )
    message = header.get("message")
    if message:
        line += f'<div style="{_MUTED};white-space:pre-wrap;margin-top:2px">{_esc(message)}</div>'
    return line


# --- graph ---------------------------------------------------------------------------------


def _is_beyond(a: Mapping[str, Any], b: Mapping[str, Any], axis: str) -> bool:
    if axis == "y":
        return _num(b.get("y")) >= _num(a.get("y")) + _num(a.get("h")) - 1
    return _num(b.get("x")) >= _num(a.get("x")) + _num(a.get("w")) - 1


def _direction(edges: Sequence[Mapping[str, Any]], by_key: Mapping[str, Mapping[str, Any]]) -> str:
    """``"TB"`` or ``"LR"``: the axis along which most edges point past their source node."""
    down = right = 0
    for edge in edges:
        a, b = by_key.get(str(edge.get("from"))), by_key.get(str(edge.get("to")))
        if a is None or b is None:
            continue
        down += _is_beyond(a, b, "y")
        right += _is_beyond(a, b, "x")
    return "LR" if right > down else "TB"


def _route_points(edge: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The edge's route around the nodes (from the layout), if it has a usable one."""
    raw = edge.get("points")
    if not isinstance(raw, list) or len(raw) < 2:
        return []
    points = [(_num(p[0]), _num(p[1])) for p in raw if isinstance(p, list) and len(p) == 2]
    return points if len(points) == len(raw) else []


def _routed_path(points: Sequence[tuple[float, float]]) -> str:
    """Through the route's points: straight along a row, an S-curve between columns (its
    control points stay between the two points' x, where the layout leaves no node)."""
    d = f"M{_coord(points[0][0])},{_coord(points[0][1])}"
    for (px, py), (qx, qy) in itertools.pairwise(points):
        if py == qy:
            d += f" L{_coord(qx)},{_coord(qy)}"
        else:
            mx = (px + qx) / 2
            d += f" C{_coord(mx)},{_coord(py)} {_coord(mx)},{_coord(qy)} {_coord(qx)},{_coord(qy)}"
    return d


def _edge_svg(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    direction: str,
    dashed: bool,
    route: Sequence[tuple[float, float]] = (),
) -> str:
    """A cubic curve between facing sides (or through the route's points), and its arrowhead
    as a triangle (no marker ids)."""
    ax, ay, aw, ah = (_num(a.get(k)) for k in ("x", "y", "w", "h"))
    bx, by, bw, bh = (_num(b.get(k)) for k in ("x", "y", "w", "h"))
    if route:
        d = _routed_path(route)
        ex, ey = route[-1]
        head = [(ex - 8, ey - 4), (ex - 8, ey + 4), (ex, ey)]
    elif direction == "LR":
        sx, sy, ex, ey = ax + aw, ay + ah / 2, bx, by + bh / 2
        c = max(24.0, abs(ex - sx) / 2)
        d = f"M{_coord(sx)},{_coord(sy)} C{_coord(sx + c)},{_coord(sy)} "
        d += f"{_coord(ex - c)},{_coord(ey)} {_coord(ex)},{_coord(ey)}"
        head = [(ex - 8, ey - 4), (ex - 8, ey + 4), (ex, ey)]
    else:
        sx, sy, ex, ey = ax + aw / 2, ay + ah, bx + bw / 2, by
        c = max(20.0, abs(ey - sy) / 2)
        d = f"M{_coord(sx)},{_coord(sy)} C{_coord(sx)},{_coord(sy + c)} "
        d += f"{_coord(ex)},{_coord(ey - c)} {_coord(ex)},{_coord(ey)}"
        head = [(ex - 4, ey - 8), (ex + 4, ey - 8), (ex, ey)]
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    points = " ".join(f"{_coord(x)},{_coord(y)}" for x, y in head)
    return (
        f'<path d="{d}" fill="none" stroke="#888" stroke-width="1.4"{dash}/>'
        f'<polygon points="{points}" fill="#888"/>'
    )


def _node_svg(node: Mapping[str, Any]) -> str:
    x, y, w, h = (_num(node.get(k)) for k in ("x", "y", "w", "h"))
    kind = str(node.get("kind") or "task")
    label = str(node.get("label") or "")
    fill, fg = _colours(node.get("state"), node.get("state_type"))
    title = f"<title>{_esc(label)} ({_esc(node.get('state'))})</title>"
    box = f'x="{_coord(x)}" y="{_coord(y)}" width="{_coord(w)}" height="{_coord(h)}"'
    if kind == "flow":
        band = min(22.0, h)
        text = _esc(_truncate(label, int((w - 16) // 7)))
        return (
            f"<g>{title}"
            f'<rect {box} rx="8" fill="{fill}" fill-opacity="0.07" stroke="{fill}"/>'
            f'<rect x="{_coord(x)}" y="{_coord(y)}" width="{_coord(w)}" height="{_coord(band)}" '
            f'rx="8" fill="{fill}" fill-opacity="0.18"/>'
            f'<text x="{_coord(x + 8)}" y="{_coord(y + band / 2)}" dominant-baseline="central" '
            f'fill="currentColor" font-weight="600">{text}</text></g>'
        )
    folded = kind in ("map", "group")
    cx = x + w / 2
    text = _esc(_truncate(label, int((w - 12) // 6.8)))
    label_y = y + (h * 0.36 if folded else h / 2)
    parts = [
        f"<g>{title}",
        f'<rect {box} rx="6" fill="{fill}" stroke="rgba(0,0,0,0.18)"/>',
        f'<text x="{_coord(cx)}" y="{_coord(label_y)}" text-anchor="middle" '
        f'dominant-baseline="central" fill="{fg}">{text}</text>',
    ]
    if folded:
        progress = f"{_int(node.get('done'))}/{_int(node.get('total'))}"
        parts.append(
            f'<text x="{_coord(cx)}" y="{_coord(y + h * 0.68)}" text-anchor="middle" '
            f'dominant-baseline="central" fill="{fg}" font-size="10.5">{progress}</text>'
        )
        parts.append(_mix_svg(node.get("counts"), x + 6, y + h - 6, max(0.0, w - 12)))
    parts.append("</g>")
    return "".join(parts)


def _mix_svg(counts: object, x: float, y: float, width: float) -> str:
    """The state mix of a map or group node: one segment per state, over a light track."""
    items = _ordered_counts(counts)
    total = sum(n for _, n in items)
    parts = [
        f'<rect x="{_coord(x)}" y="{_coord(y)}" width="{_coord(width)}" height="3" rx="1" '
        'fill="rgba(255,255,255,0.85)"/>'
    ]
    offset = x
    for name, n in items:
        part = width * n / total if total else 0.0
        fill, _ = _colours(name, None)
        parts.append(
            f'<rect x="{_coord(offset)}" y="{_coord(y)}" width="{_coord(part)}" height="3" '
            f'fill="{fill}"/>'
        )
        offset += part
    return "".join(parts)


def _depths(nodes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How deep each node sits in subflows (0 for the run's own level)."""
    parents = {str(n.get("key")): n.get("parent") for n in nodes}
    depths: dict[str, int] = {}
    for key in parents:
        depth, parent = 0, parents[key]
        while parent is not None and depth < 100 and str(parent) in parents:
            depth += 1
            parent = parents[str(parent)]
        depths[key] = depth
    return depths


def _graph_svg(graph: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> str:
    width = max(1.0, _num(graph.get("width")))
    height = max(1.0, _num(graph.get("height")))
    by_key = {str(n.get("key")): n for n in nodes}
    raw_edges = graph.get("edges")
    edges = [e for e in raw_edges if isinstance(e, Mapping)] if isinstance(raw_edges, list) else []
    depths = _depths(nodes)
    # Flow boxes first (outermost first), then edges, then task nodes on top.
    flows = sorted(
        (n for n in nodes if n.get("kind") == "flow"), key=lambda n: depths[str(n.get("key"))]
    )
    direction = _direction(edges, by_key)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_coord(width)}" '
        f'height="{_coord(height)}" viewBox="0 0 {_coord(width)} {_coord(height)}" '
        f'style="display:block;font-family:{_FONT};font-size:12px">'
    ]
    parts.extend(_node_svg(n) for n in flows)
    for edge in edges:
        a, b = by_key.get(str(edge.get("from"))), by_key.get(str(edge.get("to")))
        if a is not None and b is not None:
            dashed = edge.get("kind") == "wait_for"
            parts.append(_edge_svg(a, b, direction, dashed, _route_points(edge)))
    parts.extend(_node_svg(n) for n in nodes if n.get("kind") != "flow")
    parts.append("</svg>")
    return '<div style="overflow:auto;max-height:520px;margin:6px 0">' + "".join(parts) + "</div>"


def _node_summary(node: Mapping[str, Any]) -> str:
    """A task or flow node's duration; the state mix of a map or group node."""
    if node.get("kind") in ("map", "group"):
        return ", ".join(f"{name} {n}" for name, n in _ordered_counts(node.get("counts")))
    runs = _mapping(node.get("detail")).get("runs")
    if isinstance(runs, Sequence) and runs and isinstance(runs[0], Mapping):
        return _format_duration(runs[0].get("duration"))
    return ""


def _node_table(nodes: Sequence[Mapping[str, Any]]) -> str:
    cell = f"padding:2px 10px 2px 0;border-bottom:1px solid {_BORDER};text-align:left"
    head = "".join(
        f'<th style="{cell};font-weight:600">{name}</th>'
        for name in ("node", "kind", "state", "done", "duration / states")
    )
    depths = _depths(nodes)
    rows = []
    for node in nodes[:TABLE_ROW_LIMIT]:
        indent = 14 * depths[str(node.get("key"))]
        label = _esc(node.get("label"))
        if node.get("kind") == "flow":
            label = f"<b>{label}</b>"
        rows.append(
            f'<tr class="fb-static-node" data-key="{_esc(node.get("key"))}">'
            f'<td style="{cell};padding-left:{indent}px">{label}</td>'
            f'<td style="{cell};{_MUTED}">{_esc(node.get("kind") or "task")}</td>'
            f'<td style="{cell}">{_badge(node.get("state"), node.get("state_type"))}</td>'
            f'<td style="{cell};font-variant-numeric:tabular-nums">'
            f"{_int(node.get('done'))}/{_int(node.get('total'))}</td>"
            f'<td style="{cell}">{_esc(_node_summary(node))}</td></tr>'
        )
    more = len(nodes) - TABLE_ROW_LIMIT
    if more > 0:
        rows.append(f'<tr><td colspan="5" style="{cell};{_MUTED}">and {more} more nodes</td></tr>')
    return (
        '<table style="border-collapse:collapse;margin:6px 0;font-size:inherit">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# --- logs and timeline ---------------------------------------------------------------------


def _logs_html(logs: Sequence[Sequence[Any]], logs_total: int) -> str:
    shown = list(logs[-LOG_LINES:])
    total = max(logs_total, len(logs))
    if not shown:
        return f'<div style="{_MUTED};margin-top:6px">No log lines.</div>'
    lines = []
    for line in shown:
        ts, level, who, message = (list(line) + [None] * 4)[:4]
        level_text = str(level or "")
        colour = _LEVEL_COLOURS.get(level_text)
        style = f' style="color:{colour}"' if colour else ""
        lines.append(
            f'<span style="{_MUTED}">{_esc(_clock(ts))}</span> | '
            f"<span{style}>{_esc(level_text.ljust(7))}</span> | "
            f"{_esc(who)} - {_esc(message)}"
        )
    note = f"last {len(shown)} of {total} log lines" if total > len(shown) else "log lines"
    return (
        f'<div style="{_MUTED};margin-top:6px">{note}</div>'
        f'<pre style="margin:2px 0 0;padding:6px;max-height:300px;overflow:auto;'
        f"font-family:{_MONO};font-size:12px;line-height:1.45;white-space:pre-wrap;"
        f'border:1px solid {_BORDER};border-radius:3px">' + "\n".join(lines) + "</pre>"
    )


def _timeline_html(timeline: Mapping[str, Any]) -> str:
    total = _int(timeline.get("total"))
    if total <= 0:
        return ""
    lanes = _int(timeline.get("lanes"))
    runs = "task run" if total == 1 else "task runs"
    return f'<div style="{_MUTED};margin-top:4px">{total} {runs}, at most {lanes} at once</div>'


# --- public --------------------------------------------------------------------------------


def render_html(
    header: Mapping[str, Any],
    graph: Mapping[str, Any],
    logs: Sequence[Sequence[Any]],
    logs_total: int,
    timeline: Mapping[str, Any],
) -> str:
    """A self-contained static HTML summary of a run snapshot (the widget's traits)."""
    nodes = _nodes(graph)
    parts = [
        f'<div class="fb-static" data-state="{_esc(header.get("state"))}" '
        f'style="font-family:{_FONT};font-size:13px;line-height:1.4;max-width:100%;'
        f'padding:8px 10px;border:1px solid {_BORDER};border-radius:4px">',
        _header_html(header),
        _timeline_html(timeline),
    ]
    if not nodes:
        parts.append(f'<div style="{_MUTED};margin-top:6px">No task runs.</div>')
    else:
        if len(nodes) <= SVG_NODE_LIMIT:
            parts.append(_graph_svg(graph, nodes))
        parts.append(_node_table(nodes))
    parts.append(_logs_html(logs, logs_total))
    parts.append("</div>")
    return "".join(parts)


def render_text(header: Mapping[str, Any], graph: Mapping[str, Any]) -> str:
    """A short plain-text summary that does not change between re-runs of the same flow.

    For example ``FlowRun(flow='etl', state='Completed', task_runs=3, Completed=3)``. Counts
    come from the header (or, if it has none, from the graph's task nodes), sorted by state
    name; there is no run name, time or id.
    """
    counts: dict[str, int] = {}
    raw_counts = header.get("counts")
    if isinstance(raw_counts, Mapping) and raw_counts:
        counts = {str(name): _int(n) for name, n in raw_counts.items()}
    else:
        for node in _nodes(graph):
            if node.get("kind") == "flow":
                continue
            for name, n in _mapping(node.get("counts")).items():
                counts[str(name)] = counts.get(str(name), 0) + _int(n)
    total = header.get("total")
    task_runs = _int(total) if total is not None else sum(counts.values())
    fields = [
        f"flow={str(header.get('flow') or '')!r}",
        f"state={str(header.get('state') or '')!r}",
        f"task_runs={task_runs}",
    ]
    for name in sorted(counts):
        n = counts[name]
        if n > 0:
            # a custom state name may not be an identifier: quote it so the text stays readable
            fields.append(f"{name}={n}" if name.isidentifier() else f"{name!r}={n}")
    return f"FlowRun({', '.join(fields)})"
