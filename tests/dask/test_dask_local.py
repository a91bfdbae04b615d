"""DaskTaskRunner on a local cluster of worker processes (the one cluster of this process).

The tasks here are pickled by value, as they are when defined in a notebook or a script.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from dask_processes import bump

import flowbook.runtime
from flowbook import flow, get_run_logger, task
from flowbook.engine.events import LogEmitted, StateChanged, TaskRunCreated
from flowbook.exceptions import RunTimeoutError, UpstreamTaskError
from flowbook.task_runners import DaskTaskRunner
from flowbook.task_runners import dask as fb_dask

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


@task
def where(i: int) -> tuple[int, int]:
    return i, os.getpid()


@task
def add(a: int, b: int) -> int:
    return a + b


def test_tasks_run_in_worker_processes_and_the_cluster_is_reused(
    local_runner: DaskTaskRunner,
) -> None:
    @flow(task_runner=local_runner)
    def spread(n: int) -> list[tuple[int, int]]:
        return where.map(range(n)).result()

    first = spread(8)
    assert [i for i, _ in first] == list(range(8))
    pids = {pid for _, pid in first}
    assert os.getpid() not in pids
    info = fb_dask.cluster_info()
    assert info is not None
    assert info["owned"] is True
    worker_pids = {w["pid"] for w in info["workers"]}
    assert pids <= worker_pids
    assert len(worker_pids) == 2
    assert info["dashboard_link"].startswith("http://127.0.0.1:")

    second = spread(8)
    assert {pid for _, pid in second} <= worker_pids
    again = fb_dask.cluster_info()
    assert again is not None
    assert again["scheduler_address"] == info["scheduler_address"]


class KernelRefuses:
    """A value that may not be unpickled in the process that submitted the flow."""

    def __init__(self, origin: int, payload: int) -> None:
        self.origin, self.payload = origin, payload

    def __setstate__(self, state: dict[str, int]) -> None:
        if os.getpid() == state["origin"]:
            raise RuntimeError("this value travelled through the submitting process")
        self.__dict__.update(state)


@task
def make_big(origin: int) -> KernelRefuses:
    return KernelRefuses(origin, 41)


@task
def use_big(value: KernelRefuses) -> int:
    return value.payload + 1


def test_dependencies_pass_between_workers_not_through_the_kernel(
    local_runner: DaskTaskRunner,
) -> None:
    @flow(task_runner=local_runner)
    def pipeline() -> int:
        big = make_big.submit(os.getpid())
        return use_big.submit(big).result()

    assert pipeline() == 42


@task
def talk(i: int) -> int:
    print(f"printed by {i}")
    get_run_logger().warning("logged by %s", i)
    return i


def test_prints_and_logs_come_back_with_their_task_run(
    local_runner: DaskTaskRunner, events: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    @flow(task_runner=local_runner)
    def chatty() -> list[int]:
        return talk.map(range(3)).result()

    assert chatty() == [0, 1, 2]
    logs = events.of(LogEmitted)
    runs = {e.record.getMessage(): e.task_run_id for e in logs}
    created = {e.task_run.name: e.task_run.id for e in events.of(TaskRunCreated)}
    for i in range(3):
        assert runs[f"logged by {i}"] == created[f"talk-{i}"]
    out = capfd.readouterr().out
    for i in range(3):
        assert f"printed by {i}" in out


@task
def names() -> dict[str, Any]:
    return {
        "task_run": flowbook.runtime.task_run.name,
        "task_name": flowbook.runtime.task_run.task_name,
        "params": flowbook.runtime.task_run.parameters,
        "flow_run": flowbook.runtime.flow_run.name,
        "flow_name": flowbook.runtime.flow_run.flow_name,
        "greeting": os.environ.get("FB_DASK_GREETING"),
    }


@task
def env_now(i: int) -> str | None:
    time.sleep(0.05)
    return os.environ.get("FB_DASK_GREETING")


def test_runtime_names_and_env_on_workers(local_runner: DaskTaskRunner) -> None:
    @flow(task_runner=local_runner, flow_run_name="named-{x}", env={"FB_DASK_GREETING": "hi"})
    def with_env(x: int) -> dict[str, Any]:
        return names.submit().result()

    got = with_env(3)
    assert got["task_run"] == "names-0"
    assert got["task_name"] == "names"
    assert got["params"] == {}
    assert got["flow_run"] == "named-3"
    assert got["flow_name"] == "with-env"
    assert got["greeting"] == "hi"

    @flow(task_runner=local_runner)
    def without_env() -> list[str | None]:
        return env_now.map(range(4)).result()

    # restored on every worker once the run's tasks ended
    assert without_env() == [None] * 4


def test_retries_and_upstream_failures(local_runner: DaskTaskRunner, tmp_path: Path) -> None:
    counter = tmp_path / "attempts"

    @task(retries=2, retry_delay_seconds=0)
    def flaky(path: Path) -> int:
        n = bump(path)
        if n < 3:
            raise ValueError(f"attempt {n} fails")
        return n

    @task
    def double(x: int) -> int:
        return 2 * x

    @task
    def boom() -> int:
        raise KeyError("nope")

    @flow(task_runner=local_runner)
    def retrying() -> tuple[int, Any, Any]:
        # double is submitted with the first attempt's future; that attempt fails, the
        # retry completes, and double runs on the retry's value
        value = double.submit(flaky.submit(counter))
        failing = boom.submit()
        skipped = double.submit(failing)
        with pytest.raises(KeyError):
            failing.result()
        with pytest.raises(UpstreamTaskError):
            skipped.result()
        return value.result(), skipped.state, flaky

    value, skipped, _ = retrying()
    assert value == 6
    assert counter.stat().st_size == 3
    assert skipped.type.value == "FAILED"
    assert isinstance(skipped.data, UpstreamTaskError)


def test_failure_state_and_exception_with_traceback(local_runner: DaskTaskRunner) -> None:
    @task
    def fails(x: int) -> int:
        raise ZeroDivisionError(f"x={x}")

    @flow(task_runner=local_runner)
    def failing() -> Any:
        return fails.submit(1)

    state = failing(return_state=True)
    assert state.is_failed()
    with pytest.raises(ZeroDivisionError, match="x=1"):
        state.result()
    assert state.data.__traceback__ is not None


def test_cache_is_written_by_the_kernel(local_runner: DaskTaskRunner, tmp_path: Path) -> None:
    from flowbook.tasks import task_input_hash

    calls = tmp_path / "calls"

    @task(cache_key_fn=task_input_hash)
    def expensive(x: int, path: Path) -> int:
        bump(path)
        return x * 10

    @flow(task_runner=local_runner)
    def cached(x: int) -> list[Any]:
        first = expensive.submit(x, calls)
        # an upstream future as the cached task's input: its value is needed for the key
        second = expensive.submit(add.submit(x, 1), calls)
        return [first.result(), second.result(), first.state.name, second.state.name]

    assert cached(1) == [10, 20, "Completed", "Completed"]
    assert calls.stat().st_size == 2
    assert cached(1) == [10, 20, "Cached", "Cached"]
    assert calls.stat().st_size == 2
    # the entries are in the kernel's store, with the flow and task they came from
    import flowbook.cache

    found = flowbook.cache.entries(task="expensive")
    assert len(found) == 2
    assert {e.flow_name for e in found} == {"cached"}


def test_timeout_and_async_tasks_on_workers(local_runner: DaskTaskRunner) -> None:
    @task(timeout_seconds=0.5)
    def sleepy() -> None:
        time.sleep(30)

    @task
    async def coro(x: int) -> int:
        import asyncio

        await asyncio.sleep(0.01)
        return x + 1

    @flow(task_runner=local_runner)
    def mixed() -> tuple[Any, int]:
        slow = sleepy.submit()
        with pytest.raises(RunTimeoutError):
            slow.result()
        return slow.state, coro.submit(1).result()

    t0 = time.monotonic()
    state, value = mixed()
    assert time.monotonic() - t0 < 20
    assert value == 2
    assert state.name == "TimedOut"


def test_a_worker_that_dies_gives_crashed_then_a_retry(
    local_runner: DaskTaskRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "died-once"

    @task
    def die() -> int:
        os._exit(3)

    @task(retries=1, retry_delay_seconds=0)
    def die_once(path: Path) -> int:
        if not path.exists():
            path.write_text("x")
            os._exit(3)
        return 7

    @flow(task_runner=local_runner)
    def deadly() -> tuple[Any, int]:
        dying = die.submit()
        dying.wait(120)
        with pytest.raises(Exception, match=r"died|Killed"):
            dying.result()
        return dying.state, 0

    t0 = time.monotonic()
    state, _ = deadly()
    assert state is not None
    assert state.name == "Crashed"
    assert "died" in (state.message or "")
    assert time.monotonic() - t0 < 60

    @flow(task_runner=local_runner)
    def recovers() -> int:
        return die_once.submit(marker).result()

    assert recovers() == 7


def test_cancel_stops_running_tasks_on_the_workers(
    local_runner: DaskTaskRunner, tmp_path: Path
) -> None:
    ticks = tmp_path / "ticks"

    @task
    def spin(path: Path) -> None:
        for _ in range(600):
            bump(path)
            time.sleep(0.05)

    @flow(task_runner=local_runner)
    def long_running() -> None:
        spin.map([ticks] * 6).wait()

    handle = long_running.run_background()
    deadline = time.monotonic() + 60
    while (not ticks.exists() or ticks.stat().st_size < 5) and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    handle.cancel()
    handle.wait(10)
    assert time.monotonic() - t0 < 2
    assert handle.state.name == "Cancelled"
    # the bodies on the workers were interrupted: the file stops growing
    time.sleep(0.5)
    before = ticks.stat().st_size
    time.sleep(1.0)
    assert ticks.stat().st_size == before
    # nothing of the run is left on the cluster
    info = fb_dask.cluster_info()
    assert info is not None
    processing = local_runner.duplicate().client.processing()
    assert all(not keys for keys in processing.values())
    assert threading.active_count() < 200


def test_bad_configuration_is_refused_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match="cluster_kwargs must be a dict"):
        DaskTaskRunner(cluster_kwargs=[1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="connects to an existing scheduler"):
        DaskTaskRunner(address="tcp://127.0.0.1:1", cluster_kwargs={"n_workers": 1})
    with pytest.raises(ValueError, match="scheduler address"):
        DaskTaskRunner(address="")
    runner = DaskTaskRunner(cluster_class="no_such_module.Cluster")

    @flow(task_runner=runner)
    def nowhere() -> int:
        return add.submit(1, 2).result()

    with pytest.raises(ImportError, match=r"no_such_module\.Cluster"):
        nowhere()


SCRIPT = """
import os
from flowbook import flow, task
from flowbook.task_runners import DaskTaskRunner

@task
def square(x):
    return x * x, os.getpid()

@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1,
                                                  "dashboard_address": "127.0.0.1:0"}))
def squares(n):
    return square.map(range(n)).result()

out = squares(4)
print("RESULT", [v for v, _ in out], len({p for _, p in out} - {os.getpid()}) >= 1)
"""


def test_a_script_without_a_main_guard(tmp_path: Path) -> None:
    script = tmp_path / "no_guard.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = dict(os.environ, FLOWBOOK_HOME=str(tmp_path / "home"))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT [0, 1, 4, 9] True" in proc.stdout
    assert "bootstrapping phase" not in proc.stderr


def _key_fails(context: Any, parameters: dict[str, Any]) -> str:
    raise ValueError("no key on Dask either")


def _condition_fails(task: Any, run: Any, state: Any) -> bool:
    raise KeyError("condition broke")


@task(cache_key_fn=_key_fails)
def keyed_on_dask(x: int) -> int:
    return x


@task(retries=2, retry_condition_fn=_condition_fails)
def fails_on_dask() -> None:
    raise RuntimeError("boom on a worker")


def test_parts_around_the_body_that_raise_fail_the_run_on_dask_too(
    local_runner: DaskTaskRunner, events: Any
) -> None:
    @flow(task_runner=local_runner)
    def guarded() -> None:
        a = keyed_on_dask.submit(1)
        b = fails_on_dask.submit()
        a.wait()
        b.wait()

    state = guarded(return_state=True)
    # (Prefect 3: waiting is not looking; the flow's return decides, and the message tells)
    assert state.is_completed()
    assert state.message == (
        "The flow returned; 2/2 task runs failed without the flow looking at them."
    )
    finals = {
        e.run.name: e.state
        for e in events.of(StateChanged)
        if e.state.is_final() and hasattr(e.run, "task")
    }
    keyed = finals["keyed_on_dask-0"]
    assert keyed.name == "Failed"
    assert keyed.message == "cache_key_fn raised ValueError: no key on Dask either"
    assert finals["fails_on_dask-0"].name == "Failed"
    # the raising condition means "don't retry": one attempt only
    assert events.states("fails_on_dask-0") == ["Pending", "Running", "Failed"]
