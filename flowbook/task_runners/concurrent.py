"""ConcurrentTaskRunner: submitted task runs execute on a thread pool of the flow run."""

from __future__ import annotations

import os
import threading

from typing_extensions import Self

from flowbook.task_runners._pool import PoolClosedError, WorkerPool
from flowbook.task_runners.base import SubmittedCall, TaskRunner

__all__ = ["ConcurrentTaskRunner"]

# Notebook tasks mostly wait (HTTP, files, databases) or run in C code that releases the GIL
# (NumPy, pandas), so the pool is larger than the core count; it is bounded so that a map over
# 10,000 inputs does not start 10,000 threads. Threads are created only as work arrives.
DEFAULT_MAX_WORKERS = min(32, 4 * (os.cpu_count() or 1) + 4)


class ConcurrentTaskRunner(TaskRunner):
    """Runs submitted task runs concurrently on a pool of ``max_workers`` threads."""

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        if max_workers is not None and (
            not isinstance(max_workers, int) or isinstance(max_workers, bool)
        ):
            raise TypeError(
                f"{type(self).__name__}(max_workers={max_workers!r}): max_workers must be an "
                f"int, not {type(max_workers).__name__}"
            )
        if max_workers is not None and max_workers < 1:
            raise ValueError(
                f"{type(self).__name__}(max_workers={max_workers!r}): max_workers must be a "
                "positive integer, or None for the default "
                f"({DEFAULT_MAX_WORKERS} on this machine)"
            )
        self.max_workers = max_workers or DEFAULT_MAX_WORKERS
        self._explicit_max_workers = max_workers
        self._pool: WorkerPool | None = None
        self._pool_lock = threading.Lock()

    def duplicate(self) -> Self:
        return type(self)(max_workers=self._explicit_max_workers)

    def _execute(self, call: SubmittedCall) -> None:
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = WorkerPool(self.max_workers, "flowbook-task")
                pool = self._pool
        try:
            pool.submit(call.run)
        except PoolClosedError:
            # The pool was shut down (the flow run was cancelled) while this call waited for
            # its upstream runs: it must end, not hang.
            call.cancel("The flow run's task runner shut down before this task run started.")

    def shutdown(self, cancel_pending: bool = False) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=not cancel_pending, cancel_pending=cancel_pending)
        super().shutdown(cancel_pending)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_workers={self.max_workers})"
