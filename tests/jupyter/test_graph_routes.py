"""Graph edges routed around nodes, and the state palette and durations the widget, the panel
and the static summary share (flowbook/jupyter/layout.py, run_view.css, html.py)."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path
from typing import Any

import pytest

import flowbook.runs
from flowbook import flow, task
from flowbook.jupyter import html
from flowbook.jupyter.layout import LayoutNode, layout_routed
from flowbook.jupyter.model import StoredRun
from flowbook.runtime import flow_run
from flowbook.store import get_store

STATIC = Path(html.__file__).parent / "widgets" / "static"
Box = tuple[float, float, float, float]


def crosses(p: tuple[float, float], q: tuple[float, float], box: Box) -> bool:
    """Whether the segment p-q passes through the inside of ``box`` (touching its edge is fine)."""
    eps = 0.5
    x0, y0, x1, y1 = box[0] + eps, box[1] + eps, box[2] - eps, box[3] - eps
    t0, t1 = 0.0, 1.0
    dx, dy = q[0] - p[0], q[1] - p[1]
    for step, room in ((-dx, p[0] - x0), (dx, x1 - p[0]), (-dy, p[1] - y0), (dy, y1 - p[1])):
        if step == 0:
            if room < 0:
                return False
        elif step < 0:
            t0 = max(t0, room / step)
        else:
            t1 = min(t1, room / step)
    return t0 < t1


def crossings(nodes: list[LayoutNode], routes: dict[Any, list[tuple[float, float]]]) -> list[Any]:
    """(edge, node) pairs where the edge's route passes through a node other than its ends
    (or the subflow boxes holding them)."""
    by_key = {n.key: n for n in nodes}

    def around(key: str) -> set[str]:
        out = {key}
        node = by_key[key]
        while node.parent is not None:
            out.add(node.parent)
            node = by_key[node.parent]
        return out

    bad = []
    for (a, b), points in routes.items():
        skip = around(a) | around(b)
        for n in nodes:
            if n.key in skip:
                continue
            box = (n.x, n.y, n.x + n.w, n.y + n.h)
            if any(crosses(p, q, box) for p, q in itertools.pairwise(points)):
                bad.append(((a, b), n.key))
    return bad


def test_an_edge_skipping_a_column_goes_around_the_node_in_it() -> None:
    # square.map -> transform-0 -> total, and square.map -> total straight past transform-0
    nodes = [LayoutNode(k, None, i) for i, k in enumerate(["square", "transform", "total"])]
    edges = [("square", "transform"), ("square", "total"), ("transform", "total")]
    placed = layout_routed(nodes, edges)
    pos = {n.key: n for n in nodes}
    # the nodes sit in one row: a straight line from square to total runs under transform-0
    straight = [
        (pos["square"].x + pos["square"].w, pos["square"].y + pos["square"].h / 2),
        (pos["total"].x, pos["total"].y + pos["total"].h / 2),
    ]
    t = pos["transform"]
    assert crosses(straight[0], straight[1], (t.x, t.y, t.x + t.w, t.y + t.h))
    route = placed.routes[("square", "total")]
    assert route[0] == straight[0]
    assert route[-1] == straight[1]
    assert len(route) > 2
    assert crossings(nodes, placed.routes) == []
    # an edge between neighbouring columns stays a straight line
    assert len(placed.routes[("square", "transform")]) == 2
    assert all(0 <= y <= placed.height for _, y in route)


@pytest.mark.parametrize("seed", range(40))
def test_no_route_crosses_a_node_in_random_graphs(seed: int) -> None:
    rnd = random.Random(seed)
    k = rnd.randint(3, 30)
    nodes = [LayoutNode(str(i), None, i) for i in range(k)]
    edges = sorted(
        {(str(a), str(b)) for a, b in (sorted(rnd.sample(range(k), 2)) for _ in range(2 * k))}
    )
    placed = layout_routed(nodes, edges)
    assert set(placed.routes) == set(edges)  # every edge points rightwards, so each has a route
    assert crossings(nodes, placed.routes) == []


def test_routes_inside_and_around_subflow_boxes() -> None:
    # a subflow box in the middle column, and tasks inside it in two columns of their own
    nodes = [
        LayoutNode("first", None, 0),
        LayoutNode("sub", None, 1, is_container=True),
        LayoutNode("inner-a", "sub", 2),
        LayoutNode("inner-b", "sub", 3),
        LayoutNode("inner-c", "sub", 4),
        LayoutNode("side", None, 5),
        LayoutNode("last", None, 6),
    ]
    edges = [
        ("first", "inner-a"),
        ("inner-a", "inner-b"),
        ("inner-a", "inner-c"),
        ("inner-b", "inner-c"),
        ("first", "side"),
        ("inner-c", "last"),
        ("side", "last"),
        ("first", "last"),
    ]
    placed = layout_routed(nodes, edges)
    assert ("first", "last") in placed.routes
    assert ("inner-a", "inner-c") in placed.routes
    assert crossings(nodes, placed.routes) == []


def test_a_stored_run_s_edges_carry_their_routes() -> None:
    @task
    def square(x: int) -> int:
        return x * x

    @task
    def transform(xs: list[int]) -> list[int]:
        return [x + 1 for x in xs]

    @task
    def total(xs: list[int], ys: list[int]) -> int:
        return sum(xs) + sum(ys)

    @flow
    def routed() -> str:
        squares = square.map(range(3))
        changed = transform.submit(squares)
        total.submit(squares, changed).result()
        return str(flow_run.id)

    run_id = routed()
    store = get_store()
    assert store is not None
    store.flush()
    detail = flowbook.runs.get(run_id)
    graph = StoredRun(detail).snapshot()["graph"]
    label = {n["key"]: n["label"] for n in graph["nodes"]}
    edges = {(label[e["from"]], label[e["to"]]): e for e in graph["edges"]}
    boxes = {n["label"]: (n["x"], n["y"], n["x"] + n["w"], n["y"] + n["h"]) for n in graph["nodes"]}
    # a stored run has one node per square run: each of their edges to total-0 goes around
    # transform-0, which sits in the column between
    for i in range(3):
        points = [(p[0], p[1]) for p in edges[(f"square-{i}", "total-0")]["points"]]
        assert len(points) > 2
        assert not any(crosses(p, q, boxes["transform-0"]) for p, q in itertools.pairwise(points))
    # the static summary draws the same route
    markup = html.render_html({"flow": "routed", "state": "Completed"}, graph, [], 0, {"total": 0})
    first = edges[("square-0", "total-0")]["points"]
    assert f'<path d="M{html._coord(first[0][0])},{html._coord(first[0][1])}' in markup


# --- one palette, durations in ms ------------------------------------------------------------


def palette_from_css() -> dict[str, tuple[str, str]]:
    css = (STATIC / "run_view.css").read_text()
    root = css[css.index(":root {") : css.index("}", css.index(":root {"))]
    values = dict(re.findall(r"--fb-state-([a-z-]+):\s*(#[0-9a-f]{6})", root))
    return {
        name: (values[name], values[f"{name}-text"])
        for name in values
        if not name.endswith("-text")
    }


def test_the_static_summary_uses_the_widget_s_light_palette() -> None:
    palette = palette_from_css()
    assert palette["cancelled"] == ("#868e96", "#ffffff")  # grey, in the panel too
    for name, colours in html._STATE_COLOURS.items():
        assert palette[name.lower()] == colours, name
    assert palette["unknown"] == html._UNKNOWN_COLOURS


def test_the_panel_imports_the_palette_and_defines_no_state_colour_of_its_own() -> None:
    base = Path(__file__).parents[2] / "labextension" / "style" / "base.css"
    text = base.read_text()
    assert "@import url('../../flowbook/jupyter/widgets/static/run_view.css');" in text
    badges = text[text.index(".fb-state-badge {") : text.index("/* run details */")]
    assert "--jp-warn-color1" not in badges
    assert re.findall(r"background: ([^;]+);", badges) == [
        f"var(--fb-state-{name})"
        for name in (
            "unknown", "completed", "cached", "failed", "crashed", "cancelled", "running",
            "pending", "unknown",
        )
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.05, "50 ms"),
        (0.2, "200 ms"),
        (0.0004, "0 ms"),
        (0.9994, "999 ms"),
        (0.9996, "1.0 s"),
        (1.25, "1.2 s"),
        (65, "1 min 05 s"),
    ],
)
def test_durations_under_a_second_in_ms(seconds: float, text: str) -> None:
    assert html._format_duration(seconds) == text
