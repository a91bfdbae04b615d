"""ThreadPoolTaskRunner: Prefect 3's name for the thread pool runner."""

from __future__ import annotations

from flowbook.task_runners.concurrent import ConcurrentTaskRunner

__all__ = ["ThreadPoolTaskRunner"]


class ThreadPoolTaskRunner(ConcurrentTaskRunner):
    """Runs submitted task runs concurrently on a pool of ``max_workers`` threads.

    The same runner as ``ConcurrentTaskRunner`` (Prefect 2's name). Without ``max_workers``
    the pool is bounded by ``DEFAULT_MAX_WORKERS``, where Prefect 3 has no bound.
    """
