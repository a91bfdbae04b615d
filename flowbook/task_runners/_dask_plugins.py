"""Dask worker plugins of flowbook's local clusters (this module imports ``distributed``)."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from flowbook.task_runners._dask_worker import ignore_interrupts

__all__ = ["IgnoreInterrupts"]


class IgnoreInterrupts(WorkerPlugin):
    """Worker processes of a local cluster ignore SIGINT (see ``ignore_interrupts``).

    Registered with the cluster's client, it also applies to workers started later (a
    restarted or adaptively added worker).
    """

    name = "flowbook-ignore-sigint"
    idempotent = True

    def setup(self, worker: Any) -> None:
        ignore_interrupts(worker)
