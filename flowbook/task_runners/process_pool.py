"""ProcessPoolTaskRunner: submitted task runs execute in worker processes of this machine.

The processes are the workers of the process's local Dask cluster (``DaskTaskRunner`` with
``n_workers=max_workers`` single-threaded worker processes), so a process pool run has what a
Dask run has: task bodies pickled by value with cloudpickle (functions defined in a notebook
or a script travel), workers spawned without re-importing ``__main__`` (no
``if __name__ == "__main__":`` guard needed), prints and log records sent back to the kernel,
a worker that dies reported as ``Crashed``, and states, retries and caching in the kernel.
It needs Dask's distributed scheduler (``pip install 'flowbook[dask]'``).
"""

from __future__ import annotations

import os

from typing_extensions import Self

from flowbook.task_runners.concurrent import check_max_workers
from flowbook.task_runners.dask import DaskTaskRunner

__all__ = ["ProcessPoolTaskRunner"]


class ProcessPoolTaskRunner(DaskTaskRunner):
    """Runs submitted task runs in ``max_workers`` worker processes (default: one per CPU)."""

    def __init__(self, max_workers: int | None = None) -> None:
        check_max_workers(type(self).__name__, max_workers, "one process per CPU")
        self._explicit_max_workers = max_workers
        self.max_workers = max_workers or os.cpu_count() or 1
        super().__init__(
            cluster_kwargs={
                "n_workers": self.max_workers,
                "threads_per_worker": 1,
                "processes": True,
            }
        )

    def duplicate(self) -> Self:
        return type(self)(max_workers=self._explicit_max_workers)

    def __repr__(self) -> str:
        return f"ProcessPoolTaskRunner(max_workers={self.max_workers})"
