"""Task runners: where submitted task runs execute (see ``base`` for the contract)."""

from __future__ import annotations

from typing import Any

from flowbook.task_runners.base import TaskRunner
from flowbook.task_runners.concurrent import ConcurrentTaskRunner
from flowbook.task_runners.sequential import SequentialTaskRunner
from flowbook.task_runners.thread_pool import ThreadPoolTaskRunner

__all__ = [
    "ConcurrentTaskRunner",
    "DaskTaskRunner",
    "ProcessPoolTaskRunner",
    "SequentialTaskRunner",
    "TaskRunner",
    "ThreadPoolTaskRunner",
    "get_async_dask_client",
    "get_dask_client",
]


def __getattr__(name: str) -> Any:
    # The Dask-based names are loaded on first use; they import Dask itself only when a run
    # needs it
    if name == "DaskTaskRunner":
        from flowbook.task_runners.dask import DaskTaskRunner

        return DaskTaskRunner
    if name == "ProcessPoolTaskRunner":
        from flowbook.task_runners.process_pool import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner
    if name in ("get_dask_client", "get_async_dask_client"):
        from flowbook.task_runners import _dask_client

        return getattr(_dask_client, name)
    raise AttributeError(f"module 'flowbook.task_runners' has no attribute {name!r}")
