"""The cache explorer: an anywidget listing the task cache, with invalidation and misses.

``flowbook.cache.explorer()`` (and ``%flowbook cache``) returns a ``CacheExplorer``. The
kernel reads the store (``flowbook.cache.entries()`` and ``flowbook.cache.misses()``) into
three synced traits; ``static/cache_view.js`` draws them and sends back what the user asks.

Traits (kernel to front end):

- ``entries``: one dict per cache entry, newest first: ``task_key``, ``key``, ``task_name``,
  ``flow_name`` (or null), ``created``, ``expires`` (ISO 8601 UTC, or null), ``expired``,
  ``size`` (bytes), ``hits``, ``input_preview`` (a JSON object of argument previews, or null),
  ``source_hash`` (or null);
- ``misses``: the latest miss of each task, explained (``MissExplanation.as_dict()``);
- ``status``: one line for the user (counts, what was just done, or why nothing is shown);
- ``filter``: the filter text, set by either side.

Messages (front end to kernel): ``{"type": "refresh"}`` reads the store again;
``{"type": "invalidate", "keys": [[task_key, key], ...]}`` deletes those entries.

DOM (what browser tests look for): root ``div.fb-cache``; ``input.fb-cache-filter``;
``button.fb-cache-invalidate`` and ``button.fb-cache-refresh``; ``.fb-cache-status``; one
``tbody.fb-cache-flow[data-flow]`` per flow, holding a ``tr.fb-cache-task[data-task]`` header
per task and a ``tr.fb-cache-row[data-task][data-task-key][data-key]`` per entry, whose first
cell is an ``input.fb-cache-select`` checkbox (``data-task`` is the task's name); one
``.fb-cache-miss[data-task][data-task-key][data-cause]`` per explained miss, with its reason in
``.fb-cache-reason``.
"""

from __future__ import annotations

import html
from typing import Any

import anywidget
import traitlets

import flowbook.cache
from flowbook.jupyter.widgets._static import static

__all__ = ["CacheExplorer"]

# rows shown by the HTML fallback (a saved notebook, nbconvert, GitHub); the widget shows all
_HTML_ROWS = 50


class CacheExplorer(anywidget.AnyWidget):
    """The task cache by flow and task: entries, invalidation, and why calls missed."""

    _esm = static("cache_view.js")
    _css = static("cache_view.css")

    entries = traitlets.List(traitlets.Dict()).tag(sync=True)
    misses = traitlets.List(traitlets.Dict()).tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    filter = traitlets.Unicode("").tag(sync=True)

    def __init__(self, filter: str = "") -> None:
        super().__init__(filter=filter)
        self.on_msg(self._handle_message)
        self.refresh()

    def refresh(self) -> None:
        """Read the entries and misses from the store again."""
        from flowbook.store import StoreError

        try:
            entries = flowbook.cache.entries()
            misses = flowbook.cache.misses()
        except StoreError as exc:
            with self.hold_sync():
                self.entries, self.misses = [], []
                self.status = str(exc)
            return
        with self.hold_sync():
            self.entries = [_entry_row(e) for e in entries]
            self.misses = [m.as_dict() for m in misses]
            self.status = _summary(self.entries, self.misses)

    def invalidate(self, keys: list[tuple[str, str]]) -> int:
        """Delete the entries named by ``(task_key, key)``; returns how many were there."""
        count = flowbook.cache.invalidate(keys)
        self.refresh()
        self.status = f"Invalidated {count} entr{'y' if count == 1 else 'ies'}. {self.status}"
        return count

    def _handle_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "refresh":
            self.refresh()
        elif kind == "invalidate":
            keys = _pairs(content.get("keys"))
            if keys is None:
                self.status = (
                    "Cannot invalidate: the front end sent keys that are not "
                    f"[task_key, key] pairs: {content.get('keys')!r:.200}"
                )
                return
            self.invalidate(keys)

    # -- display ---------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"CacheExplorer(entries={len(self.entries)})"

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        data = {
            **data,
            "text/plain": repr(self),
            "text/html": render_html(self.entries, self.misses),
        }
        return data, metadata


def _entry_row(entry: flowbook.cache.CacheEntryInfo) -> dict[str, Any]:
    row = entry.as_dict()
    del row["input_hashes"]  # a hash per argument: bulk the view does not show
    return row


def _pairs(value: Any) -> list[tuple[str, str]] | None:
    if not isinstance(value, list):
        return None
    pairs = []
    for item in value:
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
        ):
            return None
        pairs.append((item[0], item[1]))
    return pairs


def _summary(entries: list[dict[str, Any]], misses: list[dict[str, Any]]) -> str:
    tasks = len({e["task_key"] for e in entries})
    explained = len(misses)
    return (
        f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} of {tasks} "
        f"task{'' if tasks == 1 else 's'}; {explained} "
        f"miss{'' if explained == 1 else 'es'} explained."
    )


def _when(iso: str | None) -> str:
    return "" if not iso else iso.replace("T", " ")[:19]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def render_html(entries: list[dict[str, Any]], misses: list[dict[str, Any]]) -> str:
    """A static HTML table of the cache (what a notebook shows without the widget)."""
    e = html.escape
    rows = []
    for entry in entries[:_HTML_ROWS]:
        expires = "expired" if entry["expired"] else _when(entry["expires"]) or "never"
        rows.append(
            "<tr>"
            f"<td>{e(entry['flow_name'] or '-')}</td><td>{e(entry['task_name'])}</td>"
            f"<td><code>{e(entry['key'][:16])}</code></td><td>{e(_when(entry['created']))}</td>"
            f"<td>{e(expires)}</td><td>{e(_size(entry['size']))}</td><td>{entry['hits']}</td>"
            f"<td><code>{e(entry['input_preview'] or '')}</code></td>"
            "</tr>"
        )
    more = len(entries) - _HTML_ROWS
    if more > 0:
        rows.append(f'<tr><td colspan="8">... and {more} more</td></tr>')
    if not entries:
        rows.append('<tr><td colspan="8">No cache entries.</td></tr>')
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Flow", "Task", "Key", "Created", "Expires", "Size", "Hits", "Inputs")
    )
    missed = "".join(
        f"<li><b>{e(m['task_name'])}</b>: {e(m['reason'])}</li>" for m in misses[:_HTML_ROWS]
    )
    why = f"<p>Why missed:</p><ul>{missed}</ul>" if missed else ""
    return (
        '<div class="fb-cache">'
        f"<p>flowbook cache: {e(_summary(entries, misses))}</p>"
        f'<table class="fb-cache-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{why}</div>"
    )
