"""DaskTaskRunner in real Jupyter kernels: tasks defined in cells, one cluster per kernel,
worker output in the run's widget, interrupt, and no worker process left after the kernel.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "jupyter"))

from kernel_session import KernelSession, widget_ids, widget_state, widget_timeline

pytestmark = pytest.mark.slow

CELLS = [
    "%load_ext flowbook",
    """
    import os, json
    from flowbook import flow, task
    from flowbook.task_runners import DaskTaskRunner
    import flowbook.task_runners.dask as fb_dask

    class Point:  # a class of the notebook, pickled by value to the workers
        def __init__(self, x):
            self.x = x

    @task
    def where(p):
        return p.x, os.getpid()

    @flow(task_runner=DaskTaskRunner(cluster_kwargs={
        "n_workers": 2, "threads_per_worker": 1, "dashboard_address": "127.0.0.1:0"}))
    def spread(n):
        return where.map([Point(i) for i in range(n)]).result()
    """,
    """
    first = spread(6)
    info1 = fb_dask.cluster_info()
    """,
    """
    second = spread(6)
    info2 = fb_dask.cluster_info()
    print("REPORT", json.dumps({
        "kernel": os.getpid(),
        "first": first, "second": second,
        "addresses": [info1["scheduler_address"], info2["scheduler_address"]],
        "workers": [w["pid"] for w in info2["workers"]],
    }))
    """,
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie waiting for its parent counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_notebook_with_cell_defined_tasks_on_process_workers(
    tmp_path: Path, venv_kernel_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    for name, value in venv_kernel_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FLOWBOOK_HOME", str(tmp_path / "home"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in CELLS]
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for c in nb.cells for o in c.outputs if o["output_type"] == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("name") == "stdout")
    report = json.loads(text.split("REPORT", 1)[1])
    assert [x for x, _ in report["first"]] == list(range(6))
    # tasks ran in worker processes, not in the kernel
    pids = {pid for _, pid in report["first"] + report["second"]}
    assert report["kernel"] not in pids
    assert pids <= set(report["workers"])
    # one cluster per kernel: the second cell's run used the first cell's cluster
    first_address, second_address = report["addresses"]
    assert first_address == second_address
    assert len(report["workers"]) == 2
    # the kernel is gone (nbclient shut it down): so are its worker processes
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in report["workers"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in report["workers"] if _alive(p)]


DEFS = """
import os, time
from pathlib import Path
from flowbook import flow, task, get_run_logger
from flowbook.task_runners import DaskTaskRunner

RUNNER = DaskTaskRunner(cluster_kwargs={
    "n_workers": 2, "threads_per_worker": 2, "dashboard_address": "127.0.0.1:0"})

@task
def chatty(i):
    print(f"worker says {i}")
    get_run_logger().warning("worker warns %d", i)
    return os.getpid()

@flow(task_runner=RUNNER)
def talk(n):
    return chatty.map(range(n)).result()

@task
def pid_of(i):
    return os.getpid()

@task
def spin(path):
    for _ in range(400):
        with open(path, "ab") as f:
            f.write(b".")
        time.sleep(0.05)

@flow(task_runner=RUNNER)
def long_flow(path):
    spin.map([path] * 6).wait()
"""


@pytest.fixture(scope="module")
def kernel(
    venv_kernel_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KernelSession]:
    home = tmp_path_factory.mktemp("dask-kernel-home")
    env = {**os.environ, **venv_kernel_env, "FLOWBOOK_HOME": str(home)}
    env.pop("FLOWBOOK_CONSOLE", None)
    k = KernelSession(env)
    assert k.error(k.run("%load_ext flowbook")) is None
    assert k.error(k.run(DEFS)) is None
    yield k
    k.close()


def _widget_state(kernel: KernelSession, messages: list[dict[str, Any]]) -> dict[str, Any]:
    (model_id,) = widget_ids(messages)
    return widget_state(kernel, model_id)


def test_worker_prints_and_logs_land_in_the_run_widget(kernel: KernelSession) -> None:
    msgs = kernel.run("talk(4)", timeout=120)
    assert kernel.error(msgs) is None
    # nothing in the cell's own output: it is all in the widget
    assert "worker says" not in kernel.stdout(msgs)
    assert "worker says" not in kernel.stdout(msgs, "stderr")
    state = _widget_state(kernel, msgs)
    assert state["header"]["state"] == "Completed"
    lines = [(line[1], line[2], line[3]) for line in state["logs"]]
    for i in range(4):
        assert ("PRINT", f"chatty-{i}", f"worker says {i}") in lines
        assert ("WARNING", f"chatty-{i}", f"worker warns {i}") in lines
    assert widget_timeline(state)["total"] == 4


def test_interrupt_cancels_the_dask_futures_within_a_second(
    kernel: KernelSession, tmp_path: Path
) -> None:
    ticks = tmp_path / "ticks"
    cell = kernel.start(f"long_flow(Path({str(ticks)!r}))")
    deadline = time.monotonic() + 60
    while (not ticks.exists() or ticks.stat().st_size < 10) and time.monotonic() < deadline:
        time.sleep(0.05)
    kernel.interrupt()
    t0 = time.monotonic()
    msgs = kernel.wait(cell, timeout=20)
    assert time.monotonic() - t0 < 1.5
    err = kernel.error(msgs)
    assert err is not None
    assert err["ename"] == "KeyboardInterrupt"
    state = _widget_state(kernel, msgs)
    assert state["header"]["state"] == "Cancelled"
    assert state["header"]["counts"] == {"Cancelled": 6}
    # the bodies on the workers stopped, and the cluster holds none of the run's tasks
    time.sleep(0.5)
    before = ticks.stat().st_size
    time.sleep(1.0)
    assert ticks.stat().st_size == before
    busy = kernel.value("sum(len(v) for v in RUNNER.client.processing().values())")
    assert busy == 0


def test_a_flow_cell_on_the_dask_runner(kernel: KernelSession) -> None:
    msgs = kernel.run(
        "%%flow cell-on-dask --task-runner dask\npids = pid_of.map(range(4)).result()\n",
        timeout=120,
    )
    assert kernel.error(msgs) is None
    pids = kernel.value("pids")
    kernel_pid = kernel.value("os.getpid()")
    assert len(pids) == 4
    assert kernel_pid not in pids
    state = _widget_state(kernel, msgs)
    assert state["header"]["state"] == "Completed"
    assert state["header"]["dashboard_link"].startswith("http://")
