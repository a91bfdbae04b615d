"""Prefect 1 run configs and executors: what they set for a run, and where its tasks run.

Flows here are plain ``@flow`` functions whose ``env`` comes from a run config and whose task
runner comes from an executor, which is what a Prefect 1 ``Flow("...")`` does with them.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from flowbook import flow, task
from flowbook.exceptions import EnvConflictError
from flowbook.executors import DaskExecutor, ExecutorWarning, LocalDaskExecutor, LocalExecutor
from flowbook.run_configs import (
    DockerRun,
    ECSRun,
    KubernetesRun,
    LocalRun,
    RunConfig,
    RunConfigWarning,
    UniversalRun,
    VertexRun,
    WorkingDirConflictError,
)
from flowbook.task_runners import ConcurrentTaskRunner, DaskTaskRunner, SequentialTaskRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "dask"))
from dask_processes import DaskProcesses  # the Dask tests' helper, on the path above

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    """Each run config class warns once per process; every test starts before that once."""
    RunConfig._warned.clear()
    yield
    RunConfig._warned.clear()


# -- env and working_dir --------------------------------------------------------------------------
def test_local_run_env_is_set_for_the_run_and_restored_also_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FB_P1_GREETING", raising=False)
    monkeypatch.setenv("FB_P1_OTHER", "before")
    config = LocalRun(env={"FB_P1_GREETING": "Hello", "FB_P1_OTHER": "during"})

    @task
    def read_env(i: int) -> tuple[str | None, str | None]:
        return os.environ.get("FB_P1_GREETING"), os.environ.get("FB_P1_OTHER")

    @flow(env=config.env, task_runner=LocalDaskExecutor().task_runner())
    def greets(fail: bool = False) -> list[tuple[str | None, str | None]]:
        seen = read_env.map([1, 2]).result()
        if fail:
            raise RuntimeError("the flow fails after its tasks")
        return seen

    assert greets() == [("Hello", "during")] * 2
    assert "FB_P1_GREETING" not in os.environ
    assert os.environ["FB_P1_OTHER"] == "before"

    with pytest.raises(RuntimeError, match="the flow fails after its tasks"):
        greets(fail=True)
    assert "FB_P1_GREETING" not in os.environ
    assert os.environ["FB_P1_OTHER"] == "before"


def test_run_config_and_executor_set_on_a_decorated_flow_apply_to_its_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FB_P1_GREETING", raising=False)

    @task
    def read_env() -> tuple[str | None, str | None]:
        return os.environ.get("FB_P1_GREETING"), os.environ.get("FB_P1_OWN")

    @flow(env={"FB_P1_OWN": "own", "FB_P1_GREETING": "Hi"})
    def greets() -> tuple[str | None, str | None]:
        return read_env()

    assert greets.run_config is None
    assert greets.executor is None
    greets.run_config = LocalRun(env={"FB_P1_GREETING": "Hello"})
    greets.executor = LocalExecutor()
    assert isinstance(greets.task_runner, SequentialTaskRunner)
    assert greets() == ("Hello", "own")  # the run config's env over the flow's own
    assert "FB_P1_GREETING" not in os.environ
    copy = greets.with_options(name="greets-copy")
    assert (copy.run_config, copy.executor) == (greets.run_config, greets.executor)
    assert isinstance(copy.task_runner, SequentialTaskRunner)

    greets.run_config = None
    greets.executor = None
    assert greets() == ("Hi", "own")
    assert isinstance(greets.task_runner, ConcurrentTaskRunner)

    with pytest.raises(TypeError) as raised:
        greets.run_config = LocalRun(working_dir=".")
    assert str(raised.value) == (
        f"flow.run_config = LocalRun(working_dir={os.getcwd()!r}): working_dir applies to the "
        "runs of a Prefect 1 flow (with Flow(...)), not to the @flow 'greets'; use absolute "
        "paths in its tasks, or leave working_dir out"
    )
    with pytest.raises(TypeError, match=r"flow.executor = 'threads': an executor is one of"):
        greets.executor = "threads"
    assert greets.run_config is None


def test_universal_run_env_and_labels() -> None:
    config = UniversalRun(env={"A": "1"}, labels=["dev", "gpu", "dev"])
    assert config.env == {"A": "1"}
    assert config.labels == ["dev", "gpu"]  # a set in Prefect 1: duplicates go
    assert config.working_dir is None
    assert config.describe() == {
        "type": "UniversalRun",
        "env": {"A": "1"},
        "labels": ["dev", "gpu"],
        "working_dir": None,
    }


def test_local_run_working_dir_is_the_runs_directory_and_restored(tmp_path: Path) -> None:
    start = os.getcwd()
    relative = os.path.relpath(tmp_path, start)
    config = LocalRun(working_dir=relative, labels=["laptop"])
    assert config.working_dir == str(tmp_path)  # made absolute where it was given

    @task
    def where(i: int) -> str:
        return os.getcwd()

    @flow(task_runner=LocalDaskExecutor().task_runner())
    def runs_in(fail: bool = False) -> list[str]:
        seen = [os.getcwd(), *where.map([1, 2]).result()]
        if fail:
            raise ValueError("failed in the working directory")
        return seen

    with config.working_directory("flow run 'a'"):
        assert runs_in() == [str(tmp_path)] * 3
    assert os.getcwd() == start

    with (
        pytest.raises(ValueError, match="failed in the working directory"),
        config.working_directory("flow run 'b'"),
    ):
        runs_in(fail=True)
    assert os.getcwd() == start


def test_a_functional_flows_tasks_run_in_its_working_dir_on_a_thread_pool(
    tmp_path: Path,
) -> None:
    """The directory is held until the last task run of the graph ends, not only while the
    body submits them."""
    import flowbook

    @task
    def where(i: int) -> str:
        time.sleep(0.2)  # still running when the body has submitted everything
        return os.getcwd()

    start = os.getcwd()
    with flowbook.Flow("where-flow") as graph:
        seen = where.map([1, 2, 3])
    graph.run_config = LocalRun(working_dir=str(tmp_path))
    graph.executor = LocalDaskExecutor()
    state = graph.run()
    assert state.is_successful()
    assert state.result[seen].result == [str(tmp_path)] * 3
    assert os.getcwd() == start


def test_working_dir_shared_by_overlapping_runs_and_conflicts_refused(tmp_path: Path) -> None:
    start = os.getcwd()
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    with LocalRun(working_dir=one).working_directory("flow run 'first'"):
        with LocalRun(working_dir=one).working_directory("flow run 'same'"):
            assert os.getcwd() == str(one)
        assert os.getcwd() == str(one)  # still held by the first run
        with (
            pytest.raises(WorkingDirConflictError) as info,
            LocalRun(working_dir=two).working_directory("flow run 'second'"),
        ):
            pytest.fail("the block must not run")
        assert str(info.value) == (
            f"flow run 'second' runs in working_dir={str(two)!r}, but flow run 'first' is "
            f"running in this process in {str(one)!r}; the current directory is shared by the "
            "whole process, so run these flows one after the other, or use absolute paths "
            "instead of working_dir"
        )
        assert os.getcwd() == str(one)
    assert os.getcwd() == start

    missing = tmp_path / "missing"
    with (
        pytest.raises(FileNotFoundError) as err,
        LocalRun(working_dir=missing).working_directory("flow run 'lost'"),
    ):
        pytest.fail("the block must not run")
    assert str(err.value) == (
        f"flow run 'lost' runs in working_dir={str(missing)!r}, which is not an existing "
        "directory; create it, or give LocalRun(working_dir=...) a directory that exists"
    )
    assert os.getcwd() == start


def test_env_conflicts_between_overlapping_runs_are_refused() -> None:
    # two run configs asking for different values at once cannot both hold (flowbook.engine.env)
    @flow(env=LocalRun(env={"FB_P1_CONFLICT": "inner"}).env)
    def inner() -> None:
        pass

    @flow(env=LocalRun(env={"FB_P1_CONFLICT": "outer"}).env)
    def outer() -> None:
        inner()

    with pytest.raises(EnvConflictError, match="FB_P1_CONFLICT='inner'"):
        outer()
    assert "FB_P1_CONFLICT" not in os.environ


# -- bad values -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: LocalRun(env=["GREETING=Hello"]),
            "LocalRun(env=['GREETING=Hello']): env must be a dict of environment variable names "
            "to string values, such as env={'GREETING': 'Hello'}, not list",
        ),
        (
            lambda: UniversalRun(env={"RETRIES": 3}),
            "UniversalRun(env=...): the value of RETRIES is 3 (int); environment variables hold "
            "strings: write 'RETRIES': '3'",
        ),
        (
            lambda: DockerRun(env={"A=B": "1"}),
            "DockerRun(env=...): 'A=B' is not a usable environment variable name; use a "
            "non-empty string without '=' such as 'GREETING'",
        ),
        (
            lambda: LocalRun(labels="dev"),
            "LocalRun(labels='dev'): labels must be a list of strings; a single label is "
            "written labels=['dev']",
        ),
        (
            lambda: KubernetesRun(labels=["dev", 3]),
            "KubernetesRun(labels=...): label 3 is not a string (int); labels are strings "
            "such as 'dev'",
        ),
        (
            lambda: LocalRun(labels=5),
            "LocalRun(labels=5): labels must be a list of strings, such as labels=['dev'], not int",
        ),
        (
            lambda: LocalRun(working_dir=42),
            "LocalRun(working_dir=42): working_dir must be a path (a str or pathlib.Path), not int",
        ),
    ],
)
def test_bad_run_config_values_are_named(make: Any, message: str) -> None:
    with pytest.raises(TypeError) as info:
        make()
    assert str(info.value) == message


def test_platform_run_configs_warn_once_per_class_naming_the_inert_options() -> None:
    with pytest.warns(RunConfigWarning) as caught:
        docker = DockerRun(image="python:3.12", env={"A": "1"}, labels=["docker"])
    assert [str(w.message) for w in caught] == [
        "DockerRun is accepted, but flowbook runs flows in this process: its env and labels "
        "apply, while image, ports, host_config do nothing here"
    ]
    assert caught[0].filename == __file__  # points at the user's line
    assert docker.env == {"A": "1"}
    assert docker.labels == ["docker"]
    assert docker.describe() == {
        "type": "DockerRun",
        "env": {"A": "1"},
        "labels": ["docker"],
        "working_dir": None,
        "options": {"image": "python:3.12"},
    }
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DockerRun(image="other")  # the class warned already in this process

    with pytest.warns(RunConfigWarning, match=r"^KubernetesRun is accepted.*job_template_path"):
        k8s = KubernetesRun(image="img", cpu_limit=2, job_template={"kind": "Job"})
    assert json.loads(json.dumps(k8s.describe()))["options"] == {
        "image": "img",
        "cpu_limit": 2,
        "job_template": {"kind": "Job"},
    }
    with pytest.warns(RunConfigWarning, match=r"^ECSRun is accepted.*task_definition_arn"):
        ECSRun(task_definition_arn="arn:aws:ecs:task", labels=["ecs"])
    with pytest.warns(RunConfigWarning, match=r"^VertexRun is accepted.*machine_type"):
        vertex = VertexRun(env={"B": "2"})
    assert vertex.describe()["options"] == {"machine_type": "e2-standard-4"}
    assert vertex.env == {"B": "2"}


def test_platform_run_config_env_applies_to_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FB_P1_K8S", raising=False)
    with pytest.warns(RunConfigWarning):
        config = KubernetesRun(image="img", env={"FB_P1_K8S": "yes"})

    @flow(env=config.env)
    def reads() -> str | None:
        return os.environ.get("FB_P1_K8S")

    assert reads() == "yes"
    assert "FB_P1_K8S" not in os.environ


# -- executors ------------------------------------------------------------------------------------
@task
def nap(i: int) -> tuple[int, float, float]:
    started = time.monotonic()
    time.sleep(1)
    return os.getpid(), started, time.monotonic()


def _three_naps(executor: Any) -> tuple[float, list[tuple[int, float, float]]]:
    @flow(task_runner=executor.task_runner())
    def naps() -> list[tuple[int, float, float]]:
        return nap.map([0, 1, 2]).result()

    started = time.monotonic()
    result = naps()
    return time.monotonic() - started, result


@pytest.mark.slow
def test_local_dask_executor_threads_overlap_and_local_executor_does_not() -> None:
    assert isinstance(LocalDaskExecutor().task_runner(), ConcurrentTaskRunner)
    elapsed, runs = _three_naps(LocalDaskExecutor())
    assert elapsed < 2
    assert max(start for _, start, _ in runs) < min(end for _, _, end in runs)  # all at once
    assert {pid for pid, _, _ in runs} == {os.getpid()}

    assert isinstance(LocalExecutor().task_runner(), SequentialTaskRunner)
    elapsed, runs = _three_naps(LocalExecutor())
    assert elapsed >= 3
    for (_, _, end), (_, start, _) in itertools.pairwise(runs):
        assert start >= end  # one after another

    synchronous = LocalDaskExecutor(scheduler="synchronous")
    assert isinstance(synchronous.task_runner(), SequentialTaskRunner)
    assert synchronous.describe() == {
        "type": "LocalDaskExecutor",
        "scheduler": "synchronous",
        "num_workers": None,
    }


def test_local_dask_executor_threads_num_workers_bounds_the_pool() -> None:
    runner = LocalDaskExecutor(scheduler="threading", num_workers=2).task_runner()
    assert isinstance(runner, ConcurrentTaskRunner)
    assert runner.max_workers == 2


PROCESSES_SCRIPT = """
import json, os, sys, time

import flowbook
from flowbook import flow, task
from flowbook.executors import LocalDaskExecutor

# no `if __name__ == "__main__"` guard, as in a notebook cell


@task
def nap(i):
    started = time.time()
    time.sleep(1)
    context = [flowbook.context.get(k) for k in ("map_index", "task_full_name", "flow_name")]
    return os.getpid(), started, time.time(), context


executor = LocalDaskExecutor(scheduler="processes", num_workers=3)


@flow(name="hello-processes", task_runner=executor.task_runner())
def naps():
    return nap.map([0, 1, 2]).result()


naps()  # starts the local cluster, which later runs reuse
started = time.monotonic()
runs = naps()
elapsed = time.monotonic() - started
json.dump({"pid": os.getpid(), "elapsed": elapsed, "runs": runs}, sys.stdout)
"""


@pytest.mark.slow
def test_local_dask_executor_processes_really_uses_processes(tmp_path: Path) -> None:
    script = tmp_path / "processes_flow.py"
    script.write_text(textwrap.dedent(PROCESSES_SCRIPT))
    env = dict(os.environ, FLOWBOOK_CONSOLE="off", FLOWBOOK_STORE="off")
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    pids = {pid for pid, _, _, _ in out["runs"]}
    assert len(pids) == 3  # three single-threaded worker processes
    assert out["pid"] not in pids
    assert os.getpid() not in pids
    assert out["elapsed"] < 2
    starts = [start for _, start, _, _ in out["runs"]]
    ends = [end for _, _, end, _ in out["runs"]]
    assert max(starts) < min(ends)
    # the Prefect 1 context on the worker processes
    assert [context for _, _, _, context in out["runs"]] == [
        [i, f"nap[{i}]", "hello-processes"] for i in range(3)
    ]


def test_local_dask_executor_processes_makes_a_local_cluster_runner() -> None:
    runner = LocalDaskExecutor(scheduler="multiprocessing", num_workers=3).task_runner()
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address is None
    assert runner.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1, "processes": True}
    default = LocalDaskExecutor(scheduler="processes").task_runner()
    assert isinstance(default, DaskTaskRunner)
    assert default.cluster_kwargs["n_workers"] == (os.cpu_count() or 1)


def test_executor_errors_and_warnings_name_the_value() -> None:
    with pytest.raises(ValueError, match="gpu") as info:
        LocalDaskExecutor(scheduler="gpu")
    assert str(info.value) == (
        "LocalDaskExecutor(scheduler='gpu'): the scheduler is one of 'threads' (the default), "
        "'processes' or 'synchronous'"
    )
    with pytest.raises(ValueError, match="num_workers=0") as info:
        LocalDaskExecutor(num_workers=0)
    assert str(info.value) == (
        "LocalDaskExecutor(num_workers=0): num_workers must be a positive integer, or None "
        "for the default"
    )
    with pytest.warns(ExecutorWarning) as caught:
        LocalDaskExecutor(scheduler="processes", pool="x", memory_limit="1GB")
    assert [str(w.message) for w in caught] == [
        "LocalDaskExecutor: memory_limit, pool do nothing in flowbook (Prefect 1 passed them to "
        "Dask's configuration; flowbook's runners take none)"
    ]
    with pytest.warns(ExecutorWarning, match=r"^LocalDaskExecutor\(scheduler='synchronous'\): "):
        LocalDaskExecutor(scheduler="sync", num_workers=4)

    with pytest.warns(ExecutorWarning) as caught:
        DaskExecutor(performance_report_path="report.html", watch_worker_status=True)
    assert [str(w.message) for w in caught] == [
        "DaskExecutor: performance_report_path, watch_worker_status do nothing in flowbook "
        "(flowbook reports task runs and workers itself, on the runs and in %flowbook dask)"
    ]
    with pytest.raises(ValueError, match="existing scheduler") as info:
        DaskExecutor(address="tcp://127.0.0.1:8786", cluster_kwargs={"n_workers": 2})
    assert str(info.value).startswith(
        "DaskTaskRunner(address='tcp://127.0.0.1:8786') connects to an existing scheduler; "
    )
    with pytest.raises(TypeError) as terr:
        DaskExecutor(cluster_kwargs=[("n_workers", 2)])  # type: ignore[arg-type]
    assert "cluster_kwargs must be a dict of keyword arguments, not list" in str(terr.value)
    with pytest.raises(TypeError) as terr:
        DaskExecutor(debug="yes")  # type: ignore[arg-type]
    assert str(terr.value) == "DaskExecutor(debug='yes'): debug must be True or False"


def test_dask_executor_maps_onto_dask_task_runner() -> None:
    executor = DaskExecutor(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": 2},
        adapt_kwargs={"minimum": 1, "maximum": 4},
        client_kwargs={"set_as_default": False},
        debug=True,
    )
    runner = executor.task_runner()
    assert isinstance(runner, DaskTaskRunner)
    assert runner is not executor.task_runner()  # one runner per flow run
    assert runner.cluster_class == "distributed.LocalCluster"
    assert runner.cluster_kwargs == {"n_workers": 2, "silence_logs": 30}  # debug: warnings shown
    assert runner.adapt_kwargs == {"minimum": 1, "maximum": 4}
    assert runner.client_kwargs == {"set_as_default": False}
    described = json.loads(json.dumps(executor.describe()))
    assert described == {
        "type": "DaskExecutor",
        "address": None,
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {"n_workers": 2},
        "adapt_kwargs": {"minimum": 1, "maximum": 4},
        "client_kwargs": {"set_as_default": False},
        "debug": True,
    }
    quiet = DaskExecutor().task_runner()
    assert isinstance(quiet, DaskTaskRunner)
    assert quiet.cluster_kwargs == {}
    assert LocalExecutor().describe() == {"type": "LocalExecutor"}


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    from flowbook.task_runners import dask as fb_dask

    procs = DaskProcesses(Path(tmp_path_factory.mktemp("dask-external-p1")))
    try:
        procs.start()
        yield procs
    finally:
        fb_dask._close_all()
        procs.stop()


@pytest.mark.slow
def test_dask_executor_runs_tasks_on_an_existing_scheduler(
    external: DaskProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FB_P1_DASK_GREETING", raising=False)
    executor = DaskExecutor(address=external.address)
    config = LocalRun(env={"FB_P1_DASK_GREETING": "Hello"})

    @task
    def greet(name: str) -> tuple[str, int]:
        return f"{os.environ.get('FB_P1_DASK_GREETING')}, {name}!", os.getpid()

    @flow(env=config.env, task_runner=executor.task_runner())
    def on_cluster() -> list[tuple[str, int]]:
        return greet.map(["Arthur", "Ford"]).result()

    results = on_cluster()
    assert [text for text, _ in results] == ["Hello, Arthur!", "Hello, Ford!"]
    assert all(pid != os.getpid() for _, pid in results)
    assert external.scheduler_alive()  # connected to, never owned
    assert "FB_P1_DASK_GREETING" not in os.environ
