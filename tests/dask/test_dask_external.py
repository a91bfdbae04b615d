"""DaskTaskRunner(address=...) against a real ``dask scheduler`` + ``dask worker`` pair.

The scheduler and worker are processes of their own, started by the ``external`` fixture on
127.0.0.1. flowbook connects a client to the scheduler, and must leave it running.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from dask_processes import DaskProcesses, bump

import flowbook.cache
import flowbook.runs
from flowbook import flow, get_run_logger, task
from flowbook.engine.events import LogEmitted, StateChanged
from flowbook.engine.runs import FlowRun
from flowbook.task_runners import DaskTaskRunner
from flowbook.task_runners import dask as fb_dask
from flowbook.tasks import task_input_hash

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


def test_retries_cache_env_and_logs_on_an_existing_cluster(
    external: DaskProcesses, tmp_path: Path, events: Any
) -> None:
    attempts = tmp_path / "attempts"
    calls = tmp_path / "calls"

    @task(retries=2, retry_delay_seconds=0.1)
    def flaky(path: Path) -> int:
        n = bump(path)
        get_run_logger().info("attempt %d in process %d", n, os.getpid())
        if n < 3:
            raise ConnectionError(f"attempt {n}")
        return n

    @task(cache_key_fn=task_input_hash)
    def slow_square(x: int, path: Path) -> int:
        bump(path)
        return x * x

    @task
    def greeting() -> tuple[str | None, int]:
        return os.environ.get("FB_EXTERNAL_GREETING"), os.getpid()

    runner = DaskTaskRunner(address=external.address)

    @flow(task_runner=runner, env={"FB_EXTERNAL_GREETING": "Hello"})
    def on_cluster() -> dict[str, Any]:
        squares = slow_square.map([2, 3], path=calls)
        return {
            "flaky": flaky.submit(attempts).result(),
            "squares": squares.result(),
            "square_states": [f.state.name for f in squares],
            "greeting": greeting.submit().result(),
        }

    first = on_cluster()
    assert first["flaky"] == 3
    assert first["squares"] == [4, 9]
    assert first["square_states"] == ["Completed", "Completed"]
    text, pid = first["greeting"]
    assert text == "Hello"
    assert pid != os.getpid()
    states = [e.state.name for e in events.of(StateChanged) if e.run.name == "flaky-0"]
    assert states.count("AwaitingRetry") == 2
    assert states[-1] == "Completed"
    logged = [e.record.getMessage() for e in events.of(LogEmitted) if e.task_run_id]
    assert any(m.startswith("attempt 3 in process") for m in logged)
    # ... and they are in the store, with the task run that logged them
    flow_run_id = next(e.run.id for e in events.of(StateChanged) if isinstance(e.run, FlowRun))
    stored = flowbook.runs.get(flow_run_id)
    flaky_id = next(t["id"] for t in stored.task_run_list if t["name"] == "flaky-0")
    attempts_logged = [x for x in stored.logs if x["message"].startswith("attempt ")]
    assert len(attempts_logged) == 3
    assert {x["task_run_id"] for x in attempts_logged} == {flaky_id}

    # the cache lives in the kernel's store: a second run reads it and runs nothing
    second = on_cluster()
    assert second["square_states"] == ["Cached", "Cached"]
    assert calls.stat().st_size == 2
    assert len(flowbook.cache.entries(task="slow_square")) == 2

    # the scheduler was only connected to: closing flowbook's connections leaves it running
    info = [c for c in fb_dask.connections() if c["scheduler_address"] == external.address]
    assert len(info) == 1
    assert info[0]["owned"] is False
    assert [w["name"] for w in info[0]["workers"]] == ["test-worker-0"]
    fb_dask._close_all()
    assert external.scheduler_alive()
    from distributed import Client

    with Client(external.address, timeout=20) as client:
        assert len(client.scheduler_info()["workers"]) == 1


def test_a_worker_that_dies_on_an_external_cluster_ends_the_run(
    external: DaskProcesses,
) -> None:
    # The external scheduler keeps Dask's own policy (a task whose worker died is tried on
    # other workers a few times); the run still ends, Crashed, and never hangs.
    @task
    def kill_worker() -> None:
        os._exit(5)

    @flow(task_runner=DaskTaskRunner(address=external.address))
    def deadly() -> Any:
        doomed = kill_worker.submit()
        doomed.wait(180)
        return doomed.state

    state = deadly(return_state=True)
    assert state.is_failed() or state.is_crashed()
    assert external.scheduler_alive()


def test_a_scheduler_that_comes_back_at_its_address_is_used_again(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = DaskProcesses(tmp_path, port=port)

    @task
    def pid() -> int:
        return os.getpid()

    # the client gives up reconnecting after 3 s (Dask's default is 30 s)
    runner = DaskTaskRunner(address=f"tcp://127.0.0.1:{port}", client_kwargs={"timeout": 3})

    @flow(task_runner=runner)
    def where() -> int:
        return pid.submit().result()

    try:
        procs.start()
        first = where()
        procs.stop()
        time.sleep(6)  # Dask closes the client meanwhile
        procs.start()
        second = where()
        assert first != second  # a new worker process served the second run
    finally:
        fb_dask._close_all()
        procs.stop()
