"""Dask worker plugins of flowbook's local clusters (this module imports ``distributed``)."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from flowbook.task_runners._dask_worker import ignore_interrupts

__all__ = ["IgnoreInterrupts", "RestoreEnvironment", "RunInitializer"]


class IgnoreInterrupts(WorkerPlugin):
    """Worker processes of a local cluster ignore SIGINT (see ``ignore_interrupts``).

    Registered with the cluster's client, it also applies to workers started later (a
    restarted or adaptively added worker).
    """

    name = "flowbook-ignore-sigint"
    idempotent = True

    def setup(self, worker: Any) -> None:
        ignore_interrupts(worker)


class RestoreEnvironment(WorkerPlugin):
    """Worker processes started while runs held environment variables (``@flow(env=...)``)
    inherited the runs' values; this puts back the values from before those runs, so that a
    run's ``env`` reaches its own task runs only (each attempt sets it, and restores it)."""

    name = "flowbook-restore-environment"
    idempotent = True

    def __init__(self, originals: dict[str, str | None]) -> None:
        self.originals = originals

    def setup(self, worker: Any) -> None:
        import os

        for key, value in self.originals.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class RunInitializer(WorkerPlugin):
    """``ProcessPoolTaskRunner(initializer=..., initargs=...)``: ``initializer(*initargs)``
    once in each worker process, before it runs a task (``ProcessPoolExecutor``'s rule).

    Registered with the cluster's client, it also runs in workers started later (a worker
    restarted after a crash). Raising fails the registration, and the run that started the
    cluster; in a worker started later it is logged by Dask.
    """

    name = "flowbook-initializer"

    def __init__(self, initializer: Any, initargs: tuple[Any, ...]) -> None:
        self.initializer = initializer
        self.initargs = initargs

    def setup(self, worker: Any) -> None:
        self.initializer(*self.initargs)
