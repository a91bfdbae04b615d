"""``prefect_dask.utils`` under flowbook: a Dask client for the cluster of the current run."""

from __future__ import annotations

from flowbook.task_runners._dask_client import get_async_dask_client, get_dask_client

__all__ = ["get_async_dask_client", "get_dask_client"]
