"""ProcessPoolTaskRunner: submitted task runs execute in worker processes of this machine.

The processes are the workers of the process's local Dask cluster (``DaskTaskRunner`` with
``n_workers=max_workers`` single-threaded worker processes), so a process pool run has what a
Dask run has: task bodies pickled by value with cloudpickle (functions defined in a notebook
or a script travel), workers spawned without re-importing ``__main__`` (no
``if __name__ == "__main__":`` guard needed), prints and log records sent back to the kernel,
a worker that dies reported as ``Crashed``, and states, retries and caching in the kernel.
It needs Dask's distributed scheduler (``pip install 'flowbook[dask]'``).

``initializer(*initargs)`` runs once in each worker process before it runs a task, as with
``ProcessPoolExecutor``: a worker plugin of the local cluster. The initializer is part of the
cluster's configuration, so a runner with another initializer gets worker processes of its
own (the cluster is replaced when no run is using it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from typing_extensions import Self

from flowbook.task_runners.concurrent import check_max_workers
from flowbook.task_runners.dask import DaskTaskRunner

__all__ = ["ProcessPoolTaskRunner"]


class ProcessPoolTaskRunner(DaskTaskRunner):
    """Runs submitted task runs in ``max_workers`` worker processes (default: one per CPU)."""

    def __init__(
        self,
        max_workers: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
    ) -> None:
        check_max_workers(type(self).__name__, max_workers, "one process per CPU")
        args = _check_initializer(initializer, initargs)
        self._explicit_max_workers = max_workers
        self.max_workers = max_workers or os.cpu_count() or 1
        super().__init__(
            cluster_kwargs={
                "n_workers": self.max_workers,
                "threads_per_worker": 1,
                "processes": True,
            }
        )
        self.initializer = initializer
        self.initargs = args
        if initializer is not None:
            self._initializer = (initializer, args)

    def duplicate(self) -> Self:
        return type(self)(
            max_workers=self._explicit_max_workers,
            initializer=self.initializer,
            initargs=self.initargs,
        )

    def __repr__(self) -> str:
        extra = ""
        if self.initializer is not None:
            name = getattr(self.initializer, "__qualname__", None) or repr(self.initializer)
            extra = f", initializer={name}, initargs={self.initargs!r}"
        return f"ProcessPoolTaskRunner(max_workers={self.max_workers}{extra})"


def _check_initializer(initializer: Any, initargs: Any) -> tuple[Any, ...]:
    if initializer is not None and not callable(initializer):
        raise TypeError(
            f"ProcessPoolTaskRunner(initializer={initializer!r}): initializer must be a "
            "function (or other callable) run once in each worker process, or None"
        )
    if isinstance(initargs, (str, bytes)) or not isinstance(initargs, Iterable):
        raise TypeError(
            f"ProcessPoolTaskRunner(initargs={initargs!r}): initargs must be a tuple of the "
            "arguments given to initializer, such as ('/opt/my_app/libs',)"
        )
    args = tuple(initargs)
    if args and initializer is None:
        raise ValueError(
            f"ProcessPoolTaskRunner(initargs={args!r}) was given without an initializer; "
            "give initializer= the function they are passed to"
        )
    return args
