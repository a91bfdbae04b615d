"""Prefect's Dask integration imported by its flowbook name: ``prefect_dask`` code runs with
the import renamed (``flowbook_dask``), as docs/integrations/prefect-dask/index.mdx writes it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from flowbook import flow, task

distributed = pytest.importorskip("distributed")

import flowbook_dask  # noqa: E402
from flowbook.task_runners import DaskTaskRunner as RunnerByFlowbookName  # noqa: E402
from flowbook.task_runners import _dask_client  # noqa: E402
from flowbook.task_runners import dask as fb_dask  # noqa: E402
from flowbook_dask import DaskTaskRunner, get_async_dask_client, get_dask_client  # noqa: E402
from flowbook_dask.task_runners import DaskTaskRunner as RunnerFromTaskRunners  # noqa: E402
from flowbook_dask.utils import get_dask_client as client_from_utils  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    fb_dask._close_all()


def test_the_names_are_flowbooks_own_objects() -> None:
    # prefect_dask/__init__.py exports DaskTaskRunner, get_dask_client, get_async_dask_client;
    # prefect_dask.task_runners and prefect_dask.utils hold them
    assert DaskTaskRunner is RunnerByFlowbookName is RunnerFromTaskRunners
    assert get_dask_client is client_from_utils is _dask_client.get_dask_client
    assert get_async_dask_client is _dask_client.get_async_dask_client
    assert sorted(flowbook_dask.__all__) == [
        "DaskTaskRunner",
        "get_async_dask_client",
        "get_dask_client",
    ]


def test_importing_the_package_does_not_import_dask() -> None:
    code = (
        "import sys, flowbook_dask, flowbook_dask.utils, flowbook_dask.task_runners\n"
        "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


@task
def _double(x: int) -> int:
    with get_dask_client() as client:
        assert client.scheduler.address == distributed.get_worker().scheduler.address
    return 2 * x


def test_a_flow_written_for_prefect_dask_runs_with_the_import_renamed() -> None:
    # index.mdx, "Run tasks on Dask": @flow(task_runner=DaskTaskRunner(...)) with tasks that
    # use get_dask_client() on the workers
    @flow(
        task_runner=DaskTaskRunner(
            cluster_kwargs={"processes": False, "n_workers": 1, "dashboard_address": ":0"}
        )
    )
    def doubled() -> list[int]:
        return [f.result() for f in _double.map(range(4))]

    assert doubled() == [0, 2, 4, 6]
