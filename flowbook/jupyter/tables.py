"""Tables for ``%flowbook runs``: HTML in a notebook, aligned text in a terminal."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["RunTable"]

_COLUMNS = ("name", "flow_name", "state", "start_time", "duration_s", "task_runs", "id")
_TITLES = ("run", "flow", "state", "started (UTC)", "duration", "task runs", "id")


def _cell(info: Any, column: str) -> str:
    value = getattr(info, column)
    if value is None:
        return ""
    if column == "duration_s":
        return f"{value:.2f} s"
    if column == "start_time":
        return str(value)[:19].replace("T", " ")
    if column == "id":
        return str(value)[:8]
    return str(value)


class RunTable:
    """Flow runs as a table (newest first)."""

    def __init__(self, runs: Sequence[Any]) -> None:
        self.runs = list(runs)

    def rows(self) -> list[list[str]]:
        return [[_cell(r, c) for c in _COLUMNS] for r in self.runs]

    def _repr_html_(self) -> str:
        if not self.runs:
            return "<p>No flow runs in the store yet.</p>"
        head = "".join(f"<th style='text-align:left'>{t}</th>" for t in _TITLES)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
            for row in self.rows()
        )
        return f"<table class='fb-runs'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        if not self.runs:
            return "No flow runs in the store yet."
        rows = [list(_TITLES), *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(_TITLES))]
        return "\n".join(
            "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
        )
