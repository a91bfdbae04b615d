"""Task runners: where submitted task runs execute (see ``base`` for the contract)."""

from __future__ import annotations

from typing import Any

from flowbook.task_runners.base import TaskRunner
from flowbook.task_runners.concurrent import ConcurrentTaskRunner
from flowbook.task_runners.sequential import SequentialTaskRunner

__all__ = ["ConcurrentTaskRunner", "DaskTaskRunner", "SequentialTaskRunner", "TaskRunner"]


def __getattr__(name: str) -> Any:
    # DaskTaskRunner is loaded on first use; it imports Dask itself only when a run needs it
    if name == "DaskTaskRunner":
        from flowbook.task_runners.dask import DaskTaskRunner

        return DaskTaskRunner
    raise AttributeError(f"module 'flowbook.task_runners' has no attribute {name!r}")
