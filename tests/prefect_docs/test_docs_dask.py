"""docs/integrations/prefect-dask/index.mdx and
docs/integrations/prefect-dask/api-ref/prefect_dask-task_runners.mdx, and
docs/v3/how-to-guides/workflows/run-work-concurrently.mdx ("Using a different task runner").

Each test names the page (PrefectHQ/prefect repository) and section it follows. To stay fast the
clusters here are of threads (cluster_kwargs={"processes": False}); tests/dask/ and
test_task_runners.py run worker processes.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.futures import wait

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from flowbook.task_runners import DaskTaskRunner  # noqa: E402
from flowbook.task_runners import dask as fb_dask  # noqa: E402

INDEX = "docs/integrations/prefect-dask/index.mdx"
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
def _where(x: int) -> tuple[int, str, str, int]:
    worker = distributed.get_worker()
    return os.getpid(), threading.current_thread().name, worker.address, x


def test_a_temporary_local_cluster_runs_the_submitted_tasks() -> None:
    # index.mdx, "Run tasks on Dask": "By default, when the DaskTaskRunner is specified for a
    # flow run, a temporary Dask cluster is created and used"; "Submit tasks to the flow's task
    # runner: a_task.submit(*args, **kwargs)"; cluster_kwargs={"processes": False} (the
    # "Parallel with Dask" tab) keeps the workers in this process
    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS))
    def download() -> tuple[list[tuple[int, str, str, int]], str]:
        futures = [_where.submit(month) for month in range(1, 4)]
        wait(futures)
        return [f.result() for f in futures], threading.current_thread().name

    placed, flow_thread = download()
    assert [p[3] for p in placed] == [1, 2, 3]
    assert {p[0] for p in placed} == {os.getpid()}
    assert flow_thread not in {p[1] for p in placed}
    info = fb_dask.cluster_info()
    assert info is not None
    assert {w["address"] for w in info["workers"]} == {placed[0][2]}


def test_the_runner_class_itself_is_accepted() -> None:
    # index.mdx, "Why use Dask?": "@flow(task_runner=DaskTaskRunner)" (the class, not an
    # instance)
    @flow(task_runner=DaskTaskRunner)
    def count_to(highest_number: int) -> None:
        pass

    assert isinstance(count_to.task_runner, DaskTaskRunner)


def test_cluster_kwargs_set_workers_and_threads() -> None:
    # index.mdx, "Run tasks on Dask": "pass values for n_workers or threads_per_worker to
    # cluster_kwargs"
    @flow(
        task_runner=DaskTaskRunner(
            cluster_kwargs={**THREADS, "n_workers": 2, "threads_per_worker": 1}
        )
    )
    def my_flow() -> list[tuple[int, str, str, int]]:
        return _where.map(range(4)).result()

    assert [p[3] for p in my_flow()] == [0, 1, 2, 3]
    info = fb_dask.cluster_info()
    assert info is not None
    assert [w["nthreads"] for w in info["workers"]] == [1, 1]


def test_address_connects_to_an_existing_cluster_and_leaves_it_running() -> None:
    # index.mdx, "Connect to an existing cluster": "pass in the address of the scheduler to the
    # address argument"; "Multiple Prefect flow runs can use the same existing Dask cluster"
    cluster = distributed.LocalCluster(**THREADS)
    try:
        address = cluster.scheduler_address
        workers = set(cluster.scheduler.workers)

        @flow(task_runner=DaskTaskRunner(address=address))
        def my_flow(x: int) -> str:
            return _where.submit(x).result()[2]

        assert my_flow(1) in workers
        assert my_flow(2) in workers  # a second flow run on the same cluster
        assert cluster.status.name == "running"
    finally:
        fb_dask._close_all()
        cluster.close()


def test_cluster_class_as_a_dotted_name_a_class_or_a_function() -> None:
    # index.mdx, "Use a temporary cluster": cluster_class can be "a string specifying the
    # import path", "the cluster class itself" or "a function for creating a custom cluster",
    # given cluster_kwargs
    made: list[dict[str, Any]] = []

    def make_cluster(**kwargs: Any) -> Any:
        made.append(kwargs)
        return distributed.LocalCluster(**kwargs)

    for cluster_class in ("distributed.LocalCluster", distributed.LocalCluster, make_cluster):
        n = len(made)

        @flow(task_runner=DaskTaskRunner(cluster_class=cluster_class, cluster_kwargs=THREADS))
        def my_flow() -> int:
            return _where.submit(7).result()[3]

        assert my_flow() == 7
        if cluster_class is make_cluster:
            assert len(made) == n + 1
            assert made[-1]["n_workers"] == 1


def test_adapt_kwargs_make_the_cluster_adaptive() -> None:
    # index.mdx, "Configure adaptive scaling": "pass adapt_kwargs to DaskTaskRunner" with
    # minimum and maximum; "adaptive scaling is only enabled if adapt_kwargs are provided"
    clusters: list[Any] = []

    def make_cluster(**kwargs: Any) -> Any:
        cluster = distributed.LocalCluster(**kwargs)
        clusters.append(cluster)
        return cluster

    for adapt in (None, {"minimum": 1, "maximum": 2}):

        @flow(
            task_runner=DaskTaskRunner(
                cluster_class=make_cluster, cluster_kwargs=THREADS, adapt_kwargs=adapt
            )
        )
        def my_flow() -> int:
            return _where.submit(1).result()[3]

        assert my_flow() == 1
    fixed, adaptive = clusters
    assert getattr(fixed, "_adaptive", None) is None
    assert adaptive._adaptive is not None
    assert adaptive._adaptive.maximum == 2


def test_a_direct_call_in_a_dask_flow_runs_in_the_flow() -> None:
    # index.mdx, "Use Dask annotations" (show(0) called directly) and
    # docs/v3/concepts/task-runners.mdx: a direct call runs "in the main thread", not on the
    # task runner
    @task
    def here() -> str:
        return threading.current_thread().name

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS))
    def my_flow() -> tuple[str, str]:
        return here(), threading.current_thread().name

    called_in, flow_thread = my_flow()
    assert called_in == flow_thread


def test_submit_and_result_are_synchronous_in_an_async_flow() -> None:
    # index.mdx, end: "task submission (.submit()) and future resolution (.result()) are always
    # synchronous operations in Prefect, even when working with async tasks and flows"
    @task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS))
    async def my_flow() -> list[int]:
        futures = [double.submit(i) for i in range(3)]
        return [f.result() for f in futures]

    assert asyncio.run(my_flow()) == [0, 2, 4]


@task
def _own_priority() -> Any:
    from distributed.worker import thread_state

    worker = distributed.get_worker()
    return worker.state.tasks[thread_state.key].priority[0]


def test_dask_annotate_sets_the_priority_of_submitted_tasks() -> None:
    # index.mdx, "Use Dask annotations": "with dask.annotate(priority=-10): future =
    # show.submit(1)  # low priority task"
    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS))
    def my_flow() -> Any:
        with dask.annotate(priority=-10):
            return _own_priority.submit().result()

    assert my_flow() == 10  # Dask orders by -priority


@task
def _own_annotations(x: int = 0) -> tuple[Any, Any]:
    from distributed.worker import thread_state

    ts = distributed.get_worker().state.tasks[thread_state.key]
    return ts.priority[0], ts.resource_restrictions


def test_dask_annotate_reaches_mapped_runs_and_ends_with_its_block() -> None:
    # index.mdx, "Use Dask annotations": a priority set with dask.annotate(...) around the
    # submission (here a .map()) reaches the Dask tasks; submissions after the block (the
    # second "with dask.annotate(priority=10)" example) have their own
    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS))
    def my_flow() -> tuple[list[Any], Any, Any]:
        with dask.annotate(priority=-10):
            low = _own_annotations.map(range(2))
        with dask.annotate(priority=10):
            high = _own_annotations.submit()
        plain = _own_annotations.submit()
        return [p for p, _ in low.result()], high.result()[0], plain.result()[0]

    low, high, plain = my_flow()
    assert low == [10, 10]
    assert high == -10
    assert plain == 0


def test_dask_annotate_resources_restrict_where_a_task_runs() -> None:
    # index.mdx, "Use Dask annotations": cluster_kwargs={"n_workers": 1, "resources": {"GPU": 1,
    # "process": 1}}; "with dask.annotate(resources={'GPU': 1})" makes the task require it
    @flow(task_runner=DaskTaskRunner(cluster_kwargs={**THREADS, "resources": {"GPU": 1}}))
    def my_flow() -> tuple[Any, Any]:
        with dask.annotate(resources={"GPU": 1}):
            gpu = _own_annotations.submit()
        return gpu.result()[1], _own_annotations.submit().result()[1]

    gpu, plain = my_flow()
    assert gpu == {"GPU": 1}
    assert plain in (None, {})


@task
def _fails_counted(tally: str) -> None:
    with open(tally, "a") as f:  # the body runs from a pickled copy: count in a file
        f.write("attempt\n")
    raise ValueError("counted failure")


def test_a_retries_annotation_leaves_retries_to_the_task(tmp_path: Any) -> None:
    # index.mdx, "Use Dask annotations" passes annotations through; a Dask-level `retries`
    # would run an attempt again behind the task's own retries (flowbook's choice, see
    # docs/behaviour.md): the task with retries=0 runs once
    tally = tmp_path / "tally"

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS))
    def my_flow() -> bool:
        with dask.annotate(retries=3, priority=1):
            future = _fails_counted.submit(str(tally))
        future.wait()
        return future.state.is_failed()

    assert my_flow() is True
    assert tally.read_text().splitlines() == ["attempt"]


def test_a_running_cluster_object_runs_the_tasks_and_is_left_running() -> None:
    # api-ref/prefect_dask-task_runners.mdx, DaskTaskRunner: "cluster: Currently running dask
    # cluster"; "you can provide the cluster object via the `cluster` kwarg"; index.mdx,
    # "Connect to an existing cluster": "Multiple Prefect
    # flow runs can use the same existing Dask cluster"
    cluster = distributed.LocalCluster(**THREADS)
    try:
        workers = set(cluster.scheduler.workers)

        @flow(task_runner=DaskTaskRunner(cluster=cluster))
        def my_flow(x: int) -> tuple[str, int]:
            placed = _where.submit(x).result()
            return placed[2], placed[3]

        assert my_flow(1) == (next(iter(workers)), 1)
        assert my_flow(2)[1] == 2  # a second flow run on the same cluster
        local = fb_dask.cluster_info()  # no local cluster of flowbook's was started for it
        assert local is None or local["scheduler_address"] != cluster.scheduler_address
        fb_dask._close_all()  # what a kernel's exit does
        assert cluster.status.name == "running"
        assert set(cluster.scheduler.workers) == workers
    finally:
        fb_dask._close_all()
        cluster.close()


def test_adapt_kwargs_with_a_cluster_object_make_it_adaptive() -> None:
    # api-ref/prefect_dask-task_runners.mdx, DaskTaskRunner: "adapt_kwargs: Additional kwargs to
    # pass to `cluster.adapt`"; with a cluster object, that cluster is made adaptive
    cluster = distributed.LocalCluster(**THREADS)
    try:

        @flow(
            task_runner=DaskTaskRunner(cluster=cluster, adapt_kwargs={"minimum": 1, "maximum": 2})
        )
        def my_flow() -> int:
            return _where.submit(5).result()[3]

        assert my_flow() == 5
        assert cluster._adaptive is not None
        assert cluster._adaptive.maximum == 2
    finally:
        fb_dask._close_all()
        cluster.close()


def test_a_performance_report_is_written_for_the_run(tmp_path: Any) -> None:
    # api-ref/prefect_dask-task_runners.mdx, DaskTaskRunner: "performance_report_path: Path
    # where the Dask performance report will be saved. If not provided, no performance report
    # will be generated."
    path = tmp_path / "report.html"

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS, performance_report_path=str(path)))
    def my_flow() -> list[int]:
        return [p[3] for p in _where.map(range(3)).result()]

    assert my_flow() == [0, 1, 2]
    html = path.read_text()
    assert "Dask Performance Report" in html
    assert "run_attempt" in html or "_where" in html  # the run's tasks are in its task stream

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS))
    def without() -> int:
        return _where.submit(1).result()[3]

    path.unlink()
    assert without() == 1
    assert not path.exists()

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS, performance_report_path=str(path)))
    def submits_nothing() -> int:
        return double(2)  # a direct call runs in the flow, not on Dask

    assert submits_nothing() == 4
    assert not path.exists()


def test_a_performance_report_path_under_home_is_written_there(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # api-ref/prefect_dask-task_runners.mdx, DaskTaskRunner: "performance_report_path: Path
    # where the Dask performance report will be saved"; Dask writes it through fsspec, which
    # reads a leading '~' as the user's home
    monkeypatch.setenv("HOME", str(tmp_path))

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS, performance_report_path="~/r.html"))
    def my_flow() -> int:
        return _where.submit(4).result()[3]

    assert my_flow() == 4
    assert "Dask Performance Report" in (tmp_path / "r.html").read_text()
    assert not os.path.exists("~")  # not a directory named '~' in the working directory

    @flow(
        task_runner=DaskTaskRunner(
            cluster_kwargs=THREADS, performance_report_path="~/no_such_dir/r.html"
        )
    )
    def missing_dir() -> int:
        return _where.submit(4).result()[3]

    with pytest.raises(ValueError, match=r"its directory '.*no_such_dir' does not exist"):
        missing_dir()


# -- how it fails ---------------------------------------------------------------------------


def test_a_cluster_class_that_cannot_be_imported_is_named() -> None:
    # index.mdx, "Use a temporary cluster": cluster_class as an import path
    @flow(task_runner=DaskTaskRunner(cluster_class="no_such_package.Cluster"))
    def my_flow() -> int:
        return _where.submit(1).result()[3]

    with pytest.raises(ImportError, match=r"cluster_class='no_such_package.Cluster'"):
        my_flow()


def test_address_with_cluster_kwargs_is_refused() -> None:
    # index.mdx, "Connect to an existing cluster": address connects; cluster_kwargs make a
    # temporary cluster: both at once is refused, naming the address
    with pytest.raises(ValueError, match=r"address='tcp://127.0.0.1:1'"):
        DaskTaskRunner(address="tcp://127.0.0.1:1", cluster_kwargs={"n_workers": 1})


def test_a_task_that_raises_on_dask_fails_its_future() -> None:
    # task-runners.mdx, "Access results from submitted tasks", on a DaskTaskRunner
    @task
    def boom(x: int) -> None:
        raise KeyError(f"missing {x}")

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS))
    def my_flow() -> tuple[bool, Any]:
        future = boom.submit(3)
        return future.state.is_failed() if future.wait() else False, future.result(
            raise_on_failure=False
        )

    failed, exc = my_flow(return_state=True).result(raise_on_failure=False)
    assert failed is True
    assert isinstance(exc, KeyError)
    assert exc.args == ("missing 3",)


def test_cluster_and_address_together_are_refused() -> None:
    # api-ref/prefect_dask-task_runners.mdx: `cluster` is a running cluster, `address` a running
    # scheduler's address: one or the other
    cluster = distributed.LocalCluster(**THREADS)
    try:
        with pytest.raises(ValueError, match=r"address='tcp://127.0.0.1:1'\): give a running"):
            DaskTaskRunner(cluster=cluster, address="tcp://127.0.0.1:1")
        with pytest.raises(ValueError, match=r"cluster_class and cluster_kwargs make a new"):
            DaskTaskRunner(cluster=cluster, cluster_kwargs={"n_workers": 1})
    finally:
        cluster.close()


def test_a_cluster_of_the_wrong_type_is_named() -> None:
    # api-ref/prefect_dask-task_runners.mdx: "cluster (distributed.deploy.Cluster, optional)"
    with pytest.raises(
        TypeError, match=r"DaskTaskRunner\(cluster='tcp://127.0.0.1:1'\): .* not str"
    ):
        DaskTaskRunner(cluster="tcp://127.0.0.1:1")


def test_a_closed_cluster_object_fails_the_run_naming_it() -> None:
    cluster = distributed.LocalCluster(**THREADS)
    cluster.close()

    @flow(task_runner=DaskTaskRunner(cluster=cluster))
    def my_flow() -> int:
        return _where.submit(1).result()[3]

    with pytest.raises(RuntimeError, match=r"DaskTaskRunner\(cluster=.*\): the cluster is closed"):
        my_flow()


def test_an_unwritable_performance_report_path_fails_before_any_task(tmp_path: Any) -> None:
    missing = str(tmp_path / "no_such_dir" / "r.html")
    ran: list[int] = []

    @task
    def record() -> None:
        ran.append(1)

    for path, problem in ((missing, "does not exist"), (str(tmp_path), "it is a directory")):

        @flow(task_runner=DaskTaskRunner(cluster_kwargs=THREADS, performance_report_path=path))
        def my_flow() -> None:
            record.submit().wait()

        with pytest.raises(ValueError, match=rf"performance_report_path={path!r}.*{problem}"):
            my_flow()
    assert ran == []
    with pytest.raises(TypeError, match=r"DaskTaskRunner\(performance_report_path=3\)"):
        DaskTaskRunner(performance_report_path=3)  # type: ignore[arg-type]
