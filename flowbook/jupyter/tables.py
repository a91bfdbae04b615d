"""Tables for ``%flowbook runs`` and ``%flowbook dask``: HTML in a notebook, aligned text in a
terminal."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["RUN_LINK_HASH", "DaskClusters", "RunDiffTable", "RunTable", "run_link"]

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


RUN_LINK_HASH = "#flowbook-run="
"""The href prefix of a run link; the labextension opens the run on a click."""


def run_link(run_id: str, text: str) -> str:
    """A run's name as a link that opens the run in the "Flow runs" panel: flowbook's
    labextension (JupyterLab 4, Notebook 7) catches the click on ``a[data-flowbook-run]``.
    Elsewhere (nbconvert HTML, a frontend without the extension) it is an in-page anchor
    that goes nowhere."""
    rid = html.escape(str(run_id), quote=True)
    return (
        f"<a class='fb-run-link' href='{RUN_LINK_HASH}{rid}' data-flowbook-run='{rid}' "
        "title='Open this run in the Flow runs panel'>"
        f"{html.escape(text)}</a>"
    )


class RunTable:
    """Flow runs as a table (newest first); in HTML each run's name is a ``run_link``."""

    def __init__(self, runs: Sequence[Any]) -> None:
        self.runs = list(runs)

    def rows(self) -> list[list[str]]:
        return [[_cell(r, c) for c in _COLUMNS] for r in self.runs]

    def _repr_html_(self) -> str:
        if not self.runs:
            return "<p>No flow runs in the store yet.</p>"
        name = _COLUMNS.index("name")
        rows = []
        for run, cells in zip(self.runs, self.rows(), strict=True):
            row = [html.escape(v) for v in cells]
            row[name] = run_link(run.id, cells[name])
            rows.append(row)
        return _raw_table("fb-runs", _TITLES, rows)

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


# -- %flowbook diff ---------------------------------------------------------------------------
_DIFF_TITLES = (
    "task run", "differs in", "state A", "state B", "time A", "time B", "B/A", "cache A",
    "cache B", "result A", "result B",
)  # fmt: skip


class RunDiffTable:
    """Two runs compared (``%flowbook diff``): a ``flowbook.diff.RunDiff`` as HTML with state
    badges in the widget's colours, and as the text ``flowbook runs diff`` prints."""

    def __init__(self, diff: Any) -> None:
        self.diff = diff

    def __repr__(self) -> str:
        from flowbook.diff import render_text

        return render_text(self.diff)

    def _repr_html_(self) -> str:
        from flowbook.diff import failure_messages, format_duration, format_ratio, task_run_name
        from flowbook.jupyter.html import _badge

        d = self.diff
        a, b = d.a, d.b
        esc = html.escape

        def badge(side: Any) -> str:
            return "" if side is None or side.state is None else _badge(side.state, side.state_type)

        def cell(text: str, changed: bool = False) -> str:
            style = " style='font-weight:600'" if changed else ""
            return f"<td{style}>{text}</td>"

        flows = esc(repr(a.flow_name)) if d.same_flow else esc(f"{a.flow_name!r} / {b.flow_name!r}")
        parts = [
            "<div class='fb-diff'>",
            f"<div><b>Flow runs of {flows}</b>: A = <code>{esc(a.name)}</code> "
            f"({esc(a.id[:8])}), B = <code>{esc(b.name)}</code> ({esc(b.id[:8])})</div>",
        ]
        parts += [f"<div class='fb-diff-note'>note: {esc(n)}</div>" for n in d.notes]
        header_rows = [
            ("state", badge(a), badge(b), ""),
            ("started", esc(_day(a.start_time)), esc(_day(b.start_time)), ""),
            (
                "duration",
                esc(format_duration(a.duration_s)),
                esc(format_duration(b.duration_s)),
                esc(format_ratio(d.duration_ratio)),
            ),
            ("task runs", str(a.task_runs), str(b.task_runs), ""),
        ]
        parts.append(_raw_table("fb-diff-header", ("run", "A", "B", "B/A"), header_rows))
        param_rows = [
            (
                ("* " if p.changed else "") + esc(p.name),
                esc("(not a parameter)" if p.a is None else p.a),
                esc("(not a parameter)" if p.b is None else p.b),
            )
            for p in d.parameters
        ]
        parts.append("<div><b>Parameters</b> (* changed)</div>")
        parts.append(
            _raw_table("fb-diff-parameters", ("name", "A", "B"), param_rows)
            if param_rows
            else "<div>(none)</div>"
        )
        differ = len(d.task_runs) - d.only_in_a - d.only_in_b
        parts.append(
            f"<div><b>Task runs</b>, matched by {esc(d.matched_by)}: {differ} differ, "
            f"{d.identical} identical, {d.only_in_a} only in A, {d.only_in_b} only in B</div>"
        )
        if d.task_runs:
            rows = []
            for t in d.task_runs:
                sides = (t.a, t.b)
                rows.append(
                    "<tr>"
                    + cell(esc(task_run_name(t)))
                    + cell(esc(", ".join(t.changes)))
                    + "".join(cell(badge(s), "state" in t.changes) for s in sides)
                    + "".join(
                        cell(
                            esc(format_duration(s.duration_s)) if s else "", "duration" in t.changes
                        )
                        for s in sides
                    )
                    + cell(esc(format_ratio(t.duration_ratio)) if "duration" in t.changes else "")
                    + "".join(
                        cell(esc(s.cache or "-") if s else "", "cache" in t.changes) for s in sides
                    )
                    + "".join(
                        cell(
                            f"<code>{esc(s.result or '-')}</code>" if s else "",
                            "result" in t.changes,
                        )
                        for s in sides
                    )
                    + "</tr>"
                )
            head = "".join(f"<th style='text-align:left'>{esc(x)}</th>" for x in _DIFF_TITLES)
            parts.append(
                f"<table class='fb-diff-task-runs'><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>"
            )
            for t, label, message in failure_messages(d):
                parts.append(
                    f"<div class='fb-diff-message'>{esc(task_run_name(t))} in {label}: "
                    f"<code>{esc(message)}</code></div>"
                )
        parts.append(
            f"<div style='opacity:0.7'>Durations differ when apart by "
            f"{esc(format_duration(d.min_change_s))} or more and by {d.min_ratio:g}x or more."
            "</div></div>"
        )
        return "".join(parts)


def _day(iso: str | None) -> str:
    return "" if not iso else iso.replace("T", " ")[:19]


def _raw_table(css_class: str, titles: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of cells that are HTML already (escaped by the caller)."""
    head = "".join(f"<th style='text-align:left'>{html.escape(t)}</th>" for t in titles)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table class='{css_class}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
