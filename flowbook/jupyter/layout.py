"""Layered graph layout, computed in Python so that the front end only draws.

Nodes sit in columns (layers) from left to right: a node's layer is one more than the
highest layer of the nodes it depends on, so every edge points rightwards. Within a layer,
nodes keep the order in which their runs were created, nudged towards the average position of
their upstream nodes (one barycentre pass), which keeps the edges of a pipeline short.

A subflow is a box laid out the same way around its own children; the box is then one node
of its parent's layout. Coordinates in the result are absolute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["LayoutNode", "layout"]

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


def layout(nodes: Sequence[LayoutNode], edges: Sequence[tuple[str, str]]) -> tuple[float, float]:
    """Place ``nodes`` (setting x, y, w, h) and return the total width and height."""
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
            for i, n in enumerate(column):
                n.x, n.y = x, y
                position[n.key] = float(i)
                y += n.h + GAP_Y
            total_h = max(total_h, y - GAP_Y - oy)
            x += width + GAP_X
        return x - GAP_X - ox, total_h

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
    return width + 2 * PAD, height + 2 * PAD
