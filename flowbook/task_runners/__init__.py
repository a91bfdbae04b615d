"""Task runners: where submitted task runs execute (see ``base`` for the contract)."""

from __future__ import annotations

from typing import Any

from flowbook.task_runners.base import TaskRunner
from flowbook.task_runners.concurrent import ConcurrentTaskRunner
from flowbook.task_runners.sequential import SequentialTaskRunner

__all__ = ["ConcurrentTaskRunner", "SequentialTaskRunner", "TaskRunner"]


def __getattr__(name: str) -> Any:
    if name == "DaskTaskRunner":
        raise ImportError(
            "flowbook.task_runners.DaskTaskRunner is not available in this version of flowbook; "
            "use ConcurrentTaskRunner (threads) or SequentialTaskRunner for now"
        )
    raise AttributeError(f"module 'flowbook.task_runners' has no attribute {name!r}")
