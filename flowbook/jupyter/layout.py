"""Layered graph layout, computed in Python so that the front end only draws.

Nodes sit in columns (layers) from left to right: a node's layer is one more than the
highest layer of the nodes it depends on, so every edge points rightwards. Within a layer,
nodes keep the order in which their runs were created, nudged towards the average position of
their upstream nodes (one barycentre pass), which keeps the edges of a pipeline short.

A subflow is a box laid out the same way around its own children; the box is then one node
of its parent's layout. Coordinates in the result are absolute.

Edges are routed around nodes (``layout_routed``): an edge that skips columns passes each
column it crosses through the free gap between two nodes (or above or below them) nearest its
straight line, and crosses the space between columns, where there are no nodes, diagonally.
Its route is a polyline from the source's right side to the target's left side; the renderer
may round it (curves whose control points stay between the same columns).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GraphLayout", "LayoutNode", "layout", "layout_routed"]

NODE_W = 168.0
NODE_H = 40.0
GAP_X = 56.0
GAP_Y = 14.0
PAD = 12.0
TITLE_H = 22.0


@dataclass
class LayoutNode:
    """A node to place. ``parent`` is the key of the enclosing subflow node (or None)."""

    key: str
    parent: str | None
    order: int
    is_container: bool = False
    x: float = 0.0
    y: float = 0.0
    w: float = NODE_W
    h: float = NODE_H
    children: list[LayoutNode] = field(default_factory=list)


Point = tuple[float, float]


@dataclass
class GraphLayout:
    """The size of a laid-out graph and its edges' routes, keyed by ``(from, to)``."""

    width: float
    height: float
    routes: dict[tuple[str, str], list[Point]]


@dataclass
class _Column:
    """One layer of a container: its nodes from top to bottom and its width."""

    members: list[LayoutNode]
    width: float


def layout(nodes: Sequence[LayoutNode], edges: Sequence[tuple[str, str]]) -> tuple[float, float]:
    """Place ``nodes`` (setting x, y, w, h) and return the total width and height."""
    placed = layout_routed(nodes, edges, route=False)
    return placed.width, placed.height


def layout_routed(
    nodes: Sequence[LayoutNode], edges: Sequence[tuple[str, str]], *, route: bool = True
) -> GraphLayout:
    """Place ``nodes`` (setting x, y, w, h); the size and, if ``route``, the edges' routes."""
    by_key = {n.key: n for n in nodes}
    top: list[LayoutNode] = []
    for n in nodes:
        n.children = []
    for n in sorted(nodes, key=lambda n: n.order):
        parent = by_key.get(n.parent) if n.parent is not None else None
        if parent is None:
            top.append(n)
        else:
            parent.children.append(n)

    def ancestor_in(key: str, container: str | None) -> str | None:
        """The ancestor of ``key`` (or itself) whose parent is ``container``."""
        node = by_key.get(key)
        while node is not None:
            if node.parent == container:
                return node.key
            node = by_key.get(node.parent) if node.parent is not None else None
        return None

    def place(
        members: list[LayoutNode], container: str | None, ox: float, oy: float
    ) -> tuple[float, float]:
        if not members:
            return 0.0, 0.0
        # size the containers first: their size decides the columns
        for n in members:
            if n.children:
                w, h = place(n.children, n.key, 0.0, 0.0)
                n.w, n.h = max(w + 2 * PAD, NODE_W), h + 2 * PAD + TITLE_H
            elif n.is_container:
                n.w, n.h = NODE_W, NODE_H + TITLE_H
        keys = {n.key for n in members}
        preds: dict[str, set[str]] = {n.key: set() for n in members}
        for a, b in edges:
            ua, ub = ancestor_in(a, container), ancestor_in(b, container)
            if ua is None or ub is None or ua == ub or ua not in keys or ub not in keys:
                continue
            preds[ub].add(ua)
        rank = {n.key: i for i, n in enumerate(members)}
        layer: dict[str, int] = {}
        for n in members:  # creation order: an upstream run was created first
            ps = [layer[p] for p in preds[n.key] if p in layer and rank[p] < rank[n.key]]
            layer[n.key] = 1 + max(ps) if ps else 0
        columns: dict[int, list[LayoutNode]] = {}
        for n in members:
            columns.setdefault(layer[n.key], []).append(n)
        layers.update(layer)
        position: dict[str, float] = {}
        x = ox
        total_h = 0.0
        for col in sorted(columns):
            column = columns[col]
            if col > 0:

                def centre(n: LayoutNode) -> float:
                    ps = [position[p] for p in preds[n.key] if p in position]
                    return sum(ps) / len(ps) if ps else float(rank[n.key])

                column.sort(key=lambda n: (centre(n), rank[n.key]))
            y = oy
            width = max(n.w for n in column)
            grid.setdefault(container, []).append(_Column(column, width))
            for i, n in enumerate(column):
                n.x, n.y = x, y
                position[n.key] = float(i)
                y += n.h + GAP_Y
            total_h = max(total_h, y - GAP_Y - oy)
            x += width + GAP_X
        return x - GAP_X - ox, total_h

    layers: dict[str, int] = {}  # a node's column within its container
    grid: dict[str | None, list[_Column]] = {}  # a container's columns, left to right
    width, height = place(top, None, PAD, PAD)

    def shift(members: list[LayoutNode]) -> None:
        # children were placed relative to (0, 0) of their box: make them absolute
        for n in members:
            if n.children:
                dx, dy = n.x + PAD, n.y + PAD + TITLE_H
                stack = list(n.children)
                while stack:
                    c = stack.pop()
                    c.x += dx
                    c.y += dy
                shift(n.children)

    shift(top)
    routes: dict[tuple[str, str], list[Point]] = {}
    if route:
        for a, b in edges:
            points = _route(a, b, by_key, layers, grid, ancestor_in)
            if points is not None:
                routes[(a, b)] = points
    return GraphLayout(width + 2 * PAD, height + 2 * PAD, routes)


def _containers(key: str, by_key: dict[str, LayoutNode]) -> list[str | None]:
    """The containers around ``key``, innermost first, ending with None (the top level)."""
    out: list[str | None] = []
    node = by_key.get(key)
    while node is not None and node.parent is not None and len(out) < 1000:
        out.append(node.parent)
        node = by_key.get(node.parent)
    out.append(None)
    return out


def _route(
    a: str,
    b: str,
    by_key: dict[str, LayoutNode],
    layers: dict[str, int],
    grid: dict[str | None, list[_Column]],
    ancestor_in: Any,
) -> list[Point] | None:
    """The polyline of the edge ``a -> b``, or None if it does not point rightwards.

    It is routed in the innermost container holding both ends: from the column of ``a``'s
    ancestor there to the column of ``b``'s, through a gap of every column in between.
    """
    na, nb = by_key.get(a), by_key.get(b)
    if na is None or nb is None:
        return None
    inside_b = set(_containers(b, by_key))
    container = next((c for c in _containers(a, by_key) if c in inside_b), None)
    ua, ub = ancestor_in(a, container), ancestor_in(b, container)
    if ua is None or ub is None or ua == ub:
        return None
    la, lb = layers.get(ua), layers.get(ub)
    columns = grid.get(container, [])
    if la is None or lb is None or la >= lb or lb >= len(columns):
        return None
    start = (na.x + na.w, na.y + na.h / 2)
    end = (nb.x, nb.y + nb.h / 2)
    if start[0] >= end[0]:
        return None
    points = [start]
    first = columns[la].members[0]
    points.append((first.x + columns[la].width, start[1]))
    for col in columns[la + 1 : lb]:
        x0 = col.members[0].x
        x1 = x0 + col.width
        # where the straight line would cross the middle of this column
        t = ((x0 + x1) / 2 - start[0]) / (end[0] - start[0])
        y = _gap_nearest(col.members, start[1] + t * (end[1] - start[1]))
        points += [(x0, y), (x1, y)]
    points.append((by_key[ub].x, end[1]))
    points.append(end)
    route: list[Point] = []
    for p in points:
        if not route or route[-1] != p:
            route.append(p)
    return route


def _gap_nearest(column: list[LayoutNode], target: float) -> float:
    """The height nearest ``target`` at which a line crosses ``column`` touching no node."""
    half = GAP_Y / 2
    gaps: list[tuple[float, float]] = [(float("-inf"), column[0].y - half)]
    for upper, lower in itertools.pairwise(column):
        middle = (upper.y + upper.h + lower.y) / 2
        gaps.append((middle, middle))
    last = column[-1]
    gaps.append((last.y + last.h + half, float("inf")))
    best = min(gaps, key=lambda g: abs(min(max(target, g[0]), g[1]) - target))
    return min(max(target, best[0]), best[1])
