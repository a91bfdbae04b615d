"""Prefect 3 engine adapter (interface: see adapter_plain.py).

Run with PREFECT_API_URL unset: Prefect then starts its ephemeral local API server
(a uvicorn subprocess on SQLite under PREFECT_HOME) on the first flow call.
"""

import prefect
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import task_input_hash

IMPORT = "prefect"
VERSION = "prefect " + prefect.__version__

__all__ = ["flow", "task", "task_input_hash", "sequential", "threads", "dask", "warmup"]


def sequential():
    # Prefect 3 removed SequentialTaskRunner; one worker thread is the nearest equivalent.
    return ThreadPoolTaskRunner(max_workers=1)


def threads(n=None):
    # n=None: Prefect's default (PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS, unbounded if unset).
    return ThreadPoolTaskRunner(max_workers=n)


def dask(n_workers=2, threads_per_worker=1):
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(
        cluster_kwargs={"n_workers": n_workers, "threads_per_worker": threads_per_worker}
    )


def warmup():
    """One trivial flow run, so that timings exclude the ephemeral server's start."""

    @flow
    def warmup_flow():
        return 1

    warmup_flow()
