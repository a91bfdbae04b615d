"""The widget's printed lines as a terminal shows them: a progress bar redrawn with carriage
returns is one line, its last drawing, and a huge line without a newline is cut, in time that
grows with the text written (not with its square)."""

from __future__ import annotations

import time
from typing import Any

from flowbook import flow
from flowbook.engine.events import FlowRunCreated, bus
from flowbook.jupyter.model import RunModel


def _model() -> RunModel:
    created: list[Any] = []
    bus.subscribe((FlowRunCreated,), created.append)
    try:

        @flow
        def quiet() -> None:
            pass

        quiet()
    finally:
        bus.unsubscribe(created.append)
    return RunModel(created[0].flow_run)


def test_a_progress_bar_is_one_widget_line_and_a_huge_line_is_cut() -> None:
    model = _model()
    started = time.perf_counter()
    for i in range(20_000):
        model.add_output("stderr", f"\r{i % 100:3d}%|####|", "r", "t", "k")
    model.add_output("stderr", "\r100%|####| done\n", "r", "t", "k")
    for _ in range(1000):
        model.add_output("stdout", "x" * 1000, "r", "t", "k")
    model.flush_output()
    assert time.perf_counter() - started < 2.0
    logs = model.snapshot(timeline=False)["logs"]
    assert [(line[1], line[3][:20]) for line in logs] == [
        ("STDERR", "100%|####| done"),
        ("PRINT", "x" * 20),
    ]
    assert logs[1][3].endswith(f" ... ({1_000_000 - 65536} characters cut)")
