"""Fixtures for the Dask tests: a local cluster of worker processes, and an external
``dask scheduler`` + ``dask worker`` pair."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dask_processes import DaskProcesses

from flowbook.task_runners import DaskTaskRunner
from flowbook.task_runners import dask as fb_dask

# Two worker processes of two threads: enough to see parallelism and process boundaries.
LOCAL = {"n_workers": 2, "threads_per_worker": 2, "dashboard_address": "127.0.0.1:0"}


@pytest.fixture(scope="session")
def local_runner() -> Iterator[DaskTaskRunner]:
    """A runner on the process's local cluster (started on first use, closed at the end)."""
    yield DaskTaskRunner(cluster_kwargs=LOCAL)
    fb_dask.close_cluster()


@pytest.fixture(scope="session")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    procs = DaskProcesses(Path(tmp_path_factory.mktemp("dask-external")))
    try:
        procs.start()
        yield procs
    finally:
        fb_dask._close_all()
        procs.stop()
