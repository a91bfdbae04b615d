"""``prefect_dask.task_runners`` under flowbook: the notebook-safe ``DaskTaskRunner``."""

from __future__ import annotations

from flowbook.task_runners.dask import DaskTaskRunner

__all__ = ["DaskTaskRunner"]
