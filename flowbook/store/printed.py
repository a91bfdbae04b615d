"""Printed text of runs as stored log lines: whole lines, in order, bounded per flow run.

In a notebook, text a run writes to ``sys.stdout``/``sys.stderr`` without ``log_prints`` goes
to the run's widget (``flowbook.jupyter.extension``), which also hands each write to the store
writer as it is: one queue put on the writing thread, nothing more. The writer thread, here,
cuts the writes into lines (a partial line waits for its end, or for its flow run's end),
stamps each line with the time its first piece was written, and adds them to the batch's log
rows, so that they are written with the batch already being written.

A stored print line has level INFO (``stdout``) or WARNING (``stderr``) and the stream's name
as its logger; its run is told by its task run id (else its flow run). A flood of prints is
bounded per top-level flow run (its subflows' prints included): the first
``MAX_PRINTED_LINES`` lines are kept and the rest are counted; when the flow run ends one
WARNING line says how many were dropped. Text written after its top-level run ended (a thread
still printing after a cancel) is dropped and counted in ``late_writes``.

A line is stored as a terminal shows it: a carriage return starts the line again (a progress
bar redrawn ten thousand times is one line, its last drawing), and a line that grows past
``MAX_LINE_CHARS`` keeps its beginning and tells how many characters were cut. A partial line
is held as a list of pieces: a long line written a few characters at a time costs time in
proportion to its length, not to its square.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from flowbook._printed_text import MAX_LINE_CHARS, PartialLine, split_writes

__all__ = ["MAX_LINE_CHARS", "MAX_PRINTED_LINES", "PartialLine", "PrintedLines", "split_writes"]

MAX_PRINTED_LINES = 10_000
_ENDED_KEPT = 4096  # ended top-level runs remembered, to drop their late prints

_LEVELS = {"stdout": logging.INFO, "stderr": logging.WARNING}

Row = tuple[Any, ...]  # (flow_run_id, task_run_id, level, logger, message, timestamp)


class PrintedLines:
    """The writer thread's state of printed text: partial lines and counts per top-level run."""

    def __init__(self, limit: int = MAX_PRINTED_LINES) -> None:
        self.limit = limit
        # (top-level run id, flow run id, task run id, stream) -> the line not ended yet
        self._partial: dict[tuple[str, str, str | None, str], PartialLine] = {}
        self._kept: dict[str, int] = {}  # lines kept so far, per top-level run
        self._dropped: dict[str, tuple[int, float]] = {}  # lines dropped, the last one's time
        self._ended: OrderedDict[str, None] = OrderedDict()  # top-level runs that ended
        self.late_writes = 0  # writes dropped: their top-level run had ended

    def add(
        self,
        rows: list[Row],
        flow_run_id: str,
        task_run_id: str | None,
        stream: str,
        text: str,
        ts: float,
        top_id: str | None = None,
    ) -> None:
        """Add the whole lines of one write to ``rows``; keep its unfinished line.

        ``top_id`` is the top-level flow run's id (``flow_run_id`` when not given)."""
        top = top_id or flow_run_id
        if top in self._ended:
            self.late_writes += 1
            return
        key = (top, flow_run_id, task_run_id, stream)
        lines, partial = split_writes(self._partial.pop(key, None), text, ts)
        for line, began in lines:
            self._line(rows, key, line, began)
        if partial is not None:
            self._partial[key] = partial

    def end(self, rows: list[Row], flow_run_id: str, ts: float, *, top: bool = True) -> None:
        """A flow run ended: its unfinished lines are lines; a top-level run's drops are told
        and later writes of it are dropped."""
        for key in [
            k for k in self._partial if k[1] == flow_run_id or (top and k[0] == flow_run_id)
        ]:
            partial = self._partial.pop(key)
            self._line(rows, key, partial.text(), partial.began)
        if not top:
            return
        self._ended[flow_run_id] = None
        if len(self._ended) > _ENDED_KEPT:
            self._ended.popitem(last=False)
        self._kept.pop(flow_run_id, None)
        dropped = self._dropped.pop(flow_run_id, None)
        if dropped is not None:
            n, last = dropped
            rows.append(
                (
                    flow_run_id,
                    None,
                    logging.WARNING,
                    "flowbook.store",
                    f"{n} printed line(s) dropped: the store keeps the first {self.limit} "
                    "printed lines of a flow run",
                    max(last, ts),
                )
            )

    def _line(
        self, rows: list[Row], key: tuple[str, str, str | None, str], line: str, ts: float
    ) -> None:
        top, flow_run_id, task_run_id, stream = key
        kept = self._kept.get(top, 0)
        if kept >= self.limit:
            n, _ = self._dropped.get(top, (0, ts))
            self._dropped[top] = (n + 1, ts)
            return
        self._kept[top] = kept + 1
        rows.append((flow_run_id, task_run_id, _LEVELS.get(stream, logging.INFO), stream, line, ts))
