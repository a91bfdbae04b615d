"""States passed to a task on ``DaskTaskRunner`` next to an upstream future.

Follows docs/v3/concepts/tasks.mdx, "Parameter resolution" ("Prefect traverses their contents
to resolve any PrefectFuture or State objects"), as tests/prefect_docs/test_state_arguments.py
does on threads: states are resolved in the kernel before the call goes to the cluster (they
cannot be pickled to workers). A cluster of threads, as in test_docs_dask.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.exceptions import UpstreamTaskError
from flowbook.states import Completed, Failed
from flowbook.utilities.annotations import allow_failure

pytest.importorskip("distributed")

from flowbook.task_runners import DaskTaskRunner
from flowbook.task_runners import dask as fb_dask

THREADS: dict[str, Any] = {
    "processes": False,
    "n_workers": 1,
    "threads_per_worker": 2,
    "dashboard_address": ":0",
}


@pytest.fixture(scope="module", autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    fb_dask._close_all()


@task
def one() -> int:
    return 1


@task
def boom() -> int:
    raise ValueError("boom")


@task
def echo(value: Any, extra: Any = None) -> Any:
    return value, extra


# tasks.mdx, "Parameter resolution": a completed state next to an upstream future gives its
# result, in a container and as a keyword
def test_a_completed_state_next_to_a_future_on_dask() -> None:
    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS))
    def main() -> Any:
        up = one.submit()
        return echo.submit([up, Completed(data=5)], extra={"s": Completed(data="kw")}).result()

    assert main() == ([1, 5], {"s": "kw"})


# a failed state next to a future: the task run does not start and fails naming the state
def test_a_failed_state_next_to_a_future_on_dask() -> None:
    ran: list[Any] = []

    @task
    def takes(value: Any) -> None:
        ran.append(value)

    seen: list[Any] = []

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS))
    def main() -> None:
        future = takes.submit([one.submit(), Failed("no")])
        future.wait()
        seen.append(future.state)

    main()
    (state,) = seen
    assert ran == []
    assert state.is_failed()
    assert "the state Failed('no')" in state.message
    assert isinstance(state.data, UpstreamTaskError)


# allow_failure(failed state) next to a future: the state's exception is passed
def test_allow_failure_of_a_failed_state_next_to_a_future_on_dask() -> None:
    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS))
    def main() -> Any:
        failed = boom(return_state=True)
        return echo.submit(allow_failure([failed]), extra=one.submit()).result()

    (value,), extra = main()
    assert isinstance(value, ValueError)
    assert str(value) == "boom"
    assert extra == 1
