"""The run widget: an anywidget whose traits are a run's snapshot (docs/widget-protocol.md).

The kernel computes the snapshot (``flowbook.jupyter.model``); ``static/run_view.js`` draws
it. Besides the live view, the widget's display bundle carries an HTML and a plain-text
summary of the run, so nbconvert, GitHub and terminals show it too; when the run ends the
display is updated so that a saved notebook keeps the final summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anywidget
import traitlets

from flowbook.jupyter.html import render_html, render_text
from flowbook.jupyter.widgets._static import static

__all__ = ["RunView"]

_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class RunView(anywidget.AnyWidget):
    """The live view of one flow run."""

    _esm = static("run_view.js")
    _css = static("run_view.css")

    header = traitlets.Dict().tag(sync=True)
    graph = traitlets.Dict().tag(sync=True)
    logs: traitlets.List[Any] = traitlets.List().tag(sync=True)
    logs_total = traitlets.Int(0).tag(sync=True)
    # The timeline goes to the front end as JSON text: ipywidgets walks a dict trait's every
    # element looking for binary buffers, and the message encoder then walks it again, which
    # for a timeline of 2,000 bars costs three times more than encoding it once, in C, here.
    timeline_json = traitlets.Unicode("{}").tag(sync=True)

    def __init__(
        self,
        snapshot: dict[str, Any] | None = None,
        on_cancel: Callable[[], None] | None = None,
        on_close: Callable[[RunView], None] | None = None,
    ) -> None:
        super().__init__()
        self._on_cancel = on_cancel
        self._on_close = on_close
        if snapshot:
            self.apply(snapshot)
        self.on_msg(self._handle_msg)
        self._hook_cancel()
        comm = getattr(self, "comm", None)
        if comm is not None:
            # the front end closed the widget's model: the kernel's side goes too
            comm.on_close(lambda _msg: self.close())

    def close(self) -> None:
        """Close the widget (``widget.close()``, or its model closed by the front end).

        The kernel then keeps nothing of it: whoever shows the run is told (``on_close``) and
        lets go of the view and of the run's model; a run still going on goes on unshown.
        """
        on_close, self._on_close = self._on_close, None
        self._on_cancel = None
        super().close()
        if on_close is not None:
            on_close(self)

    def apply(self, snapshot: dict[str, Any]) -> None:
        """Set the traits in ``snapshot`` (one message to the front end)."""
        with self.hold_sync():
            for name, value in snapshot.items():
                if name == "timeline":
                    self.timeline_json = json.dumps(value, separators=(",", ":"))
                else:
                    setattr(self, name, value)

    @property
    def timeline(self) -> dict[str, Any]:
        """The timeline ``timeline_json`` encodes (decoded when asked for, seldom).

        Only the text is kept: a widget outlives its run, and the timeline's bars as Python
        objects (a few small objects each, made while the run's objects filled the heap) would
        each keep an otherwise empty stretch of that heap from going back to the system.
        """
        value: dict[str, Any] = json.loads(self.timeline_json)
        return value

    def retire(self, kept: int) -> None:
        """Give up the timeline and log lines (the bulk of a finished run's widget state).

        The header (with a note saying where the details are) and the graph stay, so the
        cell still shows the run. The display's HTML summary is not touched.
        """
        header = dict(self.header)
        run_id = header.get("run_id") or ""
        header["retired"] = (
            f"The timeline and log lines of this run are no longer kept in the kernel (the "
            f"{kept} most recent runs keep theirs): see %flowbook show {run_id[:8]}, or the "
            "Flow runs panel."
        )
        timeline = self.timeline
        self.apply(
            {
                "header": header,
                "logs": [],
                "timeline": {
                    "start": timeline.get("start"),
                    "end": timeline.get("end"),
                    "lanes": 0,
                    "total": timeline.get("total", 0),
                    "bars": [],
                },
            }
        )

    # -- Cancel ----------------------------------------------------------------------------------
    def _handle_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "cancel":
            self.cancel()

    def cancel(self) -> None:
        """What the Cancel button does: cancel the run (once)."""
        on_cancel = self._on_cancel
        if on_cancel is not None:
            self._on_cancel = None
            on_cancel()

    def _hook_cancel(self) -> None:
        """Let Cancel act while another cell keeps the kernel's main thread busy.

        Messages from the front end to a widget are handled on the kernel's main thread, so a
        click waits for the running cell. ipykernel 7 reads each comm message on its shell
        channel thread first, to route it (``Comm._reply_subshell_for``); the hook below looks
        there for this widget's Cancel and acts at once. Where that hook does not exist, the
        click is handled when the main thread is free.
        """
        comm = getattr(self, "comm", None)
        route = getattr(comm, "_reply_subshell_for", None)
        if comm is None or route is None:
            return

        def reply_subshell_for(data: Any, default: Any) -> Any:
            if isinstance(data, dict) and data.get("method") == "custom":
                content = data.get("content")
                if isinstance(content, dict) and content.get("type") == "cancel":
                    self.cancel()
            return route(data, default)

        comm._reply_subshell_for = reply_subshell_for

    # -- display ---------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        data = {
            "text/plain": repr(self),
            "text/html": render_html(
                self.header, self.graph, self.logs, self.logs_total, self.timeline
            ),
            _WIDGET_MIME: {"version_major": 2, "version_minor": 1, "model_id": self.model_id},
        }
        return data, {}

    def __repr__(self) -> str:
        return str(render_text(self.header, self.graph))
