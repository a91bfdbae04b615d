"""Tables for ``%flowbook runs`` and ``%flowbook dask``: HTML in a notebook, aligned text in a
terminal."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DaskClusters", "RunTable"]

_COLUMNS = ("name", "flow_name", "state", "start_time", "duration_s", "task_runs", "id")
_TITLES = ("run", "flow", "state", "started (UTC)", "duration", "task runs", "id")


def _html_table(css_class: str, titles: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(t)}</th>" for t in titles)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table class='{css_class}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text_table(titles: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [list(titles), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in lines) for i in range(len(titles))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in lines
    )


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
        return _html_table("fb-runs", _TITLES, self.rows())

    def __repr__(self) -> str:
        if not self.runs:
            return "No flow runs in the store yet."
        return _text_table(_TITLES, self.rows())


# -- %flowbook dask ---------------------------------------------------------------------------
_WORKER_TITLES = ("worker", "address", "threads", "memory", "pid")


def _bytes(n: int) -> str:
    """``512 B``, ``1.50 GiB``: binary units, as Dask's dashboard shows memory."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _web_link(link: object) -> str | None:
    """``link`` if it is an http(s) address (only those become links), else None."""
    if isinstance(link, str) and link.lower().startswith(("http://", "https://")):
        return link
    return None


class DaskClusters:
    """The Dask clusters of this kernel (``%flowbook dask``): scheduler, dashboard, workers.

    ``clusters`` are the dicts of ``flowbook.task_runners.dask.connections()``.
    """

    def __init__(self, clusters: Sequence[Mapping[str, Any]]) -> None:
        self.clusters = list(clusters)

    @staticmethod
    def title(cluster: Mapping[str, Any]) -> str:
        if cluster.get("owned"):
            return f"local: {cluster.get('cluster_class') or 'a local cluster'}, owned by flowbook"
        return "connected with address=; flowbook does not own or close it"

    @staticmethod
    def rows(cluster: Mapping[str, Any]) -> list[list[str]]:
        return [
            [
                str(w.get("name", "")),
                str(w.get("address", "")),
                str(w.get("nthreads", "")),
                _bytes(int(w["memory_limit"])) if w.get("memory_limit") else "",
                "" if w.get("pid") is None else str(w["pid"]),
            ]
            for w in cluster.get("workers", ())
        ]

    @staticmethod
    def total(cluster: Mapping[str, Any]) -> str:
        workers = list(cluster.get("workers", ()))
        parts = [
            _plural(len(workers), "worker"),
            _plural(sum(int(w.get("nthreads") or 0) for w in workers), "thread"),
        ]
        memory = sum(int(w.get("memory_limit") or 0) for w in workers)
        if memory:
            parts.append(f"{_bytes(memory)} memory")
        text = ", ".join(parts)
        running = int(cluster.get("running_task_runs") or 0)
        if running:
            text += f"; {_plural(running, 'task run')} on it now"
        return text

    def _repr_html_(self) -> str:
        parts = []
        for cluster in self.clusters:
            address = html.escape(str(cluster.get("scheduler_address", "")))
            link = _web_link(cluster.get("dashboard_link"))
            if link is not None:
                href = html.escape(link, quote=True)
                dashboard = f'<a href="{href}" target="_blank" rel="noopener">{href}</a>'
            else:
                dashboard = "none"
            rows = self.rows(cluster)
            table = _html_table("fb-dask-workers", _WORKER_TITLES, rows) if rows else ""
            parts.append(
                "<div class='fb-dask-cluster' style='margin-bottom:8px'>"
                f"<div><b>Dask cluster</b> <code>{address}</code> "
                f"<span style='opacity:0.7'>({html.escape(self.title(cluster))})</span></div>"
                f"<div>Dashboard: {dashboard}</div>"
                f"{table}<div>{html.escape(self.total(cluster))}</div></div>"
            )
        return "<div class='fb-dask'>" + "".join(parts) + "</div>"

    def __repr__(self) -> str:
        blocks = []
        for cluster in self.clusters:
            lines = [
                f"Dask cluster {cluster.get('scheduler_address', '')} ({self.title(cluster)})",
                f"Dashboard: {cluster.get('dashboard_link') or 'none'}",
            ]
            rows = self.rows(cluster)
            if rows:
                lines.append(_text_table(_WORKER_TITLES, rows))
            lines.append(self.total(cluster))
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)
