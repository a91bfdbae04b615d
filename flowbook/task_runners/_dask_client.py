"""``get_dask_client`` / ``get_async_dask_client``: a Dask client inside a task or flow run.

Inside a task run on a Dask worker the client connects to that worker's scheduler, so work
the task hands to it (``client.compute(...)`` of a Dask collection) is spread over the whole
cluster instead of running inside the one worker. In a flow run whose task runner is a
``DaskTaskRunner`` (a task called in the kernel, or the flow body) it connects to the
runner's cluster. Anywhere else ``distributed.Client`` is given no address and starts a
local cluster of its own, as it does when called directly (handy when trying a task out).
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

__all__ = ["get_async_dask_client", "get_dask_client"]


def _client_kwargs(
    asynchronous: bool, timeout: float | str | datetime.timedelta | None, given: dict[str, Any]
) -> dict[str, Any]:
    from flowbook.task_runners.dask import DaskTaskRunner, _connect, _import_distributed

    distributed = _import_distributed()
    kwargs: dict[str, Any] = {}
    address: str | None = None
    try:
        address = distributed.get_worker().scheduler.address
    except ValueError:  # not on a Dask worker
        from flowbook.engine.runs import current_flow_run

        flow_run = current_flow_run.get()
        runner = flow_run.task_runner if flow_run is not None else None
        if isinstance(runner, DaskTaskRunner):
            kwargs.update(runner.client_kwargs)
            address = _connect(runner, for_run=False).client.scheduler.address
    kwargs["address"] = address
    kwargs["asynchronous"] = asynchronous
    if timeout is not None:
        kwargs["timeout"] = timeout
    kwargs.update(given)
    return kwargs


@contextmanager
def get_dask_client(
    timeout: float | str | datetime.timedelta | None = None, **client_kwargs: Any
) -> Iterator[Any]:
    """A temporary ``distributed.Client`` for the cluster of the current run (see the module
    note); ``client_kwargs`` go to ``distributed.Client`` and override the runner's."""
    from flowbook.task_runners.dask import _import_distributed

    distributed = _import_distributed()
    with distributed.Client(**_client_kwargs(False, timeout, client_kwargs)) as client:
        yield client


@asynccontextmanager
async def get_async_dask_client(
    timeout: float | str | datetime.timedelta | None = None, **client_kwargs: Any
) -> AsyncIterator[Any]:
    """The asynchronous form of ``get_dask_client``, for ``async def`` tasks and flows."""
    from flowbook.task_runners.dask import _import_distributed

    distributed = _import_distributed()
    async with distributed.Client(**_client_kwargs(True, timeout, client_kwargs)) as client:
        yield client
