"""Prefect 3's task runners in flowbook: ThreadPoolTaskRunner, ProcessPoolTaskRunner, and
get_dask_client / get_async_dask_client, as Prefect's documentation describes them.

Each test names the page of Prefect's documentation (in the PrefectHQ/prefect repository)
whose behaviour it checks. The process pool tests start one local cluster of two worker
processes, shared by the module and closed at its end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.futures import wait
from flowbook.task_runners import (
    ConcurrentTaskRunner,
    ProcessPoolTaskRunner,
    ThreadPoolTaskRunner,
    get_async_dask_client,
    get_dask_client,
)
from flowbook.utilities.annotations import allow_failure, quote

pytest.importorskip("distributed")

# -- ThreadPoolTaskRunner ----------------------------------------------------------------------


def test_thread_pool_runs_at_most_max_workers_at_once() -> None:
    # docs/v3/concepts/task-runners.mdx ("use threads to run tasks concurrently"; "max_workers
    # ... controls the number of threads")
    lock = threading.Lock()
    running = [0]
    peak = [0]
    threads: set[str] = set()

    @task
    def stop_at_floor(floor: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            threads.add(threading.current_thread().name)
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return floor

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=3))
    def elevator() -> list[int]:
        floors = [stop_at_floor.submit(floor) for floor in range(10, 0, -1)]
        wait(floors)
        return [f.result() for f in floors]

    assert elevator() == list(range(10, 0, -1))
    assert peak[0] == 3
    assert len(threads) == 3
    assert threading.current_thread().name not in threads


def test_thread_pool_is_the_thread_runner_under_prefect_3s_name() -> None:
    # docs/v3/api-ref/python/prefect-task_runners.mdx (ThreadPoolTaskRunner(max_workers=None))
    runner = ThreadPoolTaskRunner(max_workers=5)
    assert isinstance(runner, ConcurrentTaskRunner)
    assert repr(runner) == "ThreadPoolTaskRunner(max_workers=5)"
    copy = runner.duplicate()
    assert type(copy) is ThreadPoolTaskRunner
    assert copy.max_workers == 5
    assert ThreadPoolTaskRunner().max_workers >= 1


def test_thread_pool_bad_max_workers() -> None:
    with pytest.raises(ValueError, match=r"ThreadPoolTaskRunner\(max_workers=0\): max_workers"):
        ThreadPoolTaskRunner(max_workers=0)
    with pytest.raises(TypeError, match=r"ThreadPoolTaskRunner\(max_workers='2'\): .* not str"):
        ThreadPoolTaskRunner(max_workers="2")  # type: ignore[arg-type]


# -- ProcessPoolTaskRunner ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def processes() -> Iterator[ProcessPoolTaskRunner]:
    from flowbook.task_runners import dask as fb_dask

    yield ProcessPoolTaskRunner(max_workers=2)
    fb_dask.close_cluster()


@task
def _where(x: int) -> tuple[int, int]:
    return os.getpid(), x * 10


@task
def _plus_one(x: tuple[int, int]) -> int:
    return x[1] + 1


@task
def _fails() -> None:
    raise ZeroDivisionError("in a worker")


def test_process_pool_runs_tasks_in_other_processes(processes: ProcessPoolTaskRunner) -> None:
    # docs/v3/concepts/task-runners.mdx ("use isolated processes to run tasks in parallel":
    # ProcessPoolTaskRunner(max_workers=3) runs tasks in separate processes)
    @flow(task_runner=processes)
    def parallel() -> tuple[list[tuple[int, int]], list[int]]:
        placed = _where.map(range(6))
        chained = [_plus_one.submit(p) for p in placed]
        wait(chained)
        return placed.result(), [c.result() for c in chained]

    placed, chained = parallel()
    pids = {pid for pid, _ in placed}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2
    assert [x for _, x in placed] == [0, 10, 20, 30, 40, 50]
    assert chained == [1, 11, 21, 31, 41, 51]  # futures passed from task to task


def test_process_pool_failure_and_raise_on_failure(processes: ProcessPoolTaskRunner) -> None:
    # docs/v3/concepts/task-runners.mdx ("If the task run fails, .result() will raise the task
    # run's exception. Disable this behavior with the raise_on_failure option")
    seen: list[Any] = []

    @flow(task_runner=processes)
    def failing() -> None:
        future = _fails.submit()
        seen.append(future.result(raise_on_failure=False))
        seen.append(future.state.is_failed())
        with pytest.raises(ZeroDivisionError, match="in a worker"):
            future.result()

    failing(return_state=True)
    assert isinstance(seen[0], ZeroDivisionError)
    assert seen[1] is True


def test_process_pool_configuration() -> None:
    # docs/v3/api-ref/python/prefect-task_runners.mdx (ProcessPoolTaskRunner(max_workers=None):
    # defaults to the number of CPUs)
    assert ProcessPoolTaskRunner().max_workers == (os.cpu_count() or 1)
    runner = ProcessPoolTaskRunner(max_workers=3)
    assert repr(runner) == "ProcessPoolTaskRunner(max_workers=3)"
    assert runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["processes"]
    copy = runner.duplicate()
    assert type(copy) is ProcessPoolTaskRunner
    assert copy.max_workers == 3
    with pytest.raises(ValueError, match=r"ProcessPoolTaskRunner\(max_workers=-1\)"):
        ProcessPoolTaskRunner(max_workers=-1)
    with pytest.raises(TypeError, match=r"max_workers must be an int, not float"):
        ProcessPoolTaskRunner(max_workers=2.0)  # type: ignore[arg-type]


@task
def _echo(value: Any) -> Any:
    return value


def test_process_pool_takes_annotated_arguments(processes: ProcessPoolTaskRunner) -> None:
    # docs/v3/api-ref/python/prefect-utilities-annotations.mdx (allow_failure: the failed
    # input's exception is passed; quote: the value as it is), on worker processes
    @flow(task_runner=processes)
    def annotated() -> tuple[Any, Any, Any]:
        failed = _fails.submit()
        slow = _where.submit(1)
        tolerated = _echo.submit(allow_failure(failed))
        both = _echo.submit(allow_failure([failed, slow]))
        quoted = _echo.submit(quote({"k": 1}))
        return tolerated.result(), both.result(), quoted.result()

    tolerated, both, quoted = annotated()
    assert isinstance(tolerated, ZeroDivisionError)
    assert isinstance(both[0], ZeroDivisionError)
    assert both[1][1] == 10
    assert quoted == {"k": 1}


@pytest.mark.slow
def test_process_pool_in_a_script_without_a_main_guard(tmp_path: Path) -> None:
    # docs/v3/concepts/task-runners.mdx (the elevator example with ProcessPoolTaskRunner, run
    # as written in a notebook cell: at module level, with no __main__ guard)
    script = tmp_path / "elevator.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from flowbook import flow, task
            from flowbook.futures import wait
            from flowbook.task_runners import ProcessPoolTaskRunner

            @task
            def stop_at_floor(floor):
                return floor, os.getpid()

            @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
            def elevator():
                floors = [stop_at_floor.submit(floor) for floor in range(3, 0, -1)]
                wait(floors)
                return [f.result() for f in floors]

            result = elevator()
            print("FLOORS", [f for f, _ in result])
            print("OTHER", all(pid != os.getpid() for _, pid in result))
            """
        )
    )
    env = {**os.environ, "FLOWBOOK_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=90, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "FLOORS [3, 2, 1]" in done.stdout
    assert "OTHER True" in done.stdout


# -- get_dask_client ---------------------------------------------------------------------------


def test_get_dask_client_in_a_task_uses_the_runs_cluster(
    processes: ProcessPoolTaskRunner,
) -> None:
    # integrations prefect-dask (prefect_dask/utils.py get_dask_client: "a temporary
    # synchronous dask client ... to connect to the full cluster")
    @task
    def compute() -> tuple[int, str]:
        with get_dask_client(timeout="30s") as client:
            total = client.submit(sum, [1, 2, 3]).result()
            return total, client.scheduler.address

    @flow(task_runner=processes)
    def dask_flow() -> tuple[tuple[int, str], str]:
        in_worker = compute.submit().result()
        with get_dask_client() as client:  # in the flow body: the runner's cluster
            return in_worker, client.scheduler.address

    (total, worker_address), flow_address = dask_flow()
    assert total == 6
    assert worker_address == flow_address


def test_get_async_dask_client_in_an_async_task(processes: ProcessPoolTaskRunner) -> None:
    # integrations prefect-dask (prefect_dask/utils.py get_async_dask_client)
    @task
    async def compute() -> int:
        async with get_async_dask_client() as client:
            return await client.submit(max, [4, 9, 2])  # type: ignore[no-any-return]

    @flow(task_runner=processes)
    def dask_flow() -> int:
        return compute.submit().result()  # type: ignore[no-any-return]

    assert dask_flow() == 9
