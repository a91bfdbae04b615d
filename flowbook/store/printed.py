"""Printed text of runs as stored log lines: whole lines, in order, bounded per flow run.

In a notebook, text a run writes to ``sys.stdout``/``sys.stderr`` without ``log_prints`` goes
to the run's widget (``flowbook.jupyter.extension``), which also hands each write to the store
writer as it is: one queue put on the writing thread, nothing more. The writer thread, here,
cuts the writes into lines (a partial line waits for its end, or for its flow run's end),
stamps each line with the time its first piece was written, and adds them to the batch's log
rows, so that they are written with the batch already being written.

A stored print line has level INFO (``stdout``) or WARNING (``stderr``) and the stream's name
as its logger; its run is told by its task run id (else its flow run). A flood of prints is
bounded per flow run: the first ``MAX_PRINTED_LINES`` lines are kept and the rest are
counted; when the flow run ends one WARNING line says how many were dropped.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["MAX_PRINTED_LINES", "PrintedLines"]

MAX_PRINTED_LINES = 10_000

_LEVELS = {"stdout": logging.INFO, "stderr": logging.WARNING}

Row = tuple[Any, ...]  # (flow_run_id, task_run_id, level, logger, message, timestamp)


class PrintedLines:
    """The writer thread's state of printed text: partial lines and counts per flow run."""

    def __init__(self, limit: int = MAX_PRINTED_LINES) -> None:
        self.limit = limit
        # (flow run id, task run id, stream) -> (text not ended by a newline yet, its time)
        self._partial: dict[tuple[str, str | None, str], tuple[str, float]] = {}
        self._kept: dict[str, int] = {}  # lines kept so far, per flow run
        self._dropped: dict[str, tuple[int, float]] = {}  # lines dropped, the last one's time

    def add(
        self,
        rows: list[Row],
        flow_run_id: str,
        task_run_id: str | None,
        stream: str,
        text: str,
        ts: float,
    ) -> None:
        """Add the whole lines of one write to ``rows``; keep its unfinished line."""
        key = (flow_run_id, task_run_id, stream)
        began = ts  # when the first line of this write began
        held = self._partial.pop(key, None)
        if held is not None:
            text, began = held[0] + text, held[1]
        *lines, rest = text.split("\n")
        for line in lines:
            self._line(rows, key, line.rstrip("\r"), began)
            began = ts
        if rest:
            self._partial[key] = (rest, began)

    def end(self, rows: list[Row], flow_run_id: str, ts: float) -> None:
        """The flow run ended: its unfinished lines are lines, and its drops are told."""
        for key in [k for k in self._partial if k[0] == flow_run_id]:
            rest, at = self._partial.pop(key)
            self._line(rows, key, rest.rstrip("\r"), at)
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
        self, rows: list[Row], key: tuple[str, str | None, str], line: str, ts: float
    ) -> None:
        flow_run_id, task_run_id, stream = key
        kept = self._kept.get(flow_run_id, 0)
        if kept >= self.limit:
            n, _ = self._dropped.get(flow_run_id, (0, ts))
            self._dropped[flow_run_id] = (n + 1, ts)
            return
        self._kept[flow_run_id] = kept + 1
        rows.append((flow_run_id, task_run_id, _LEVELS.get(stream, logging.INFO), stream, line, ts))
