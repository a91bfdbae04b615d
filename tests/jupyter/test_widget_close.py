"""A run widget closed in a real kernel lets go of its run, and a long run's widget sends at
most ten updates in any second (issue 18: a 1,000,000-task map in a kernel with the widget on).

The kernel is driven as in test_kernel.py (``KernelSession``); a widget is closed as a user
closes it, ``widget.close()`` on the run's widget (found by the model id its cell displayed), or
by the front end closing the widget's model (a ``comm_close`` message).
"""

from __future__ import annotations

import datetime
import os
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kernel_session import KernelSession, widget_ids, widget_state

pytestmark = pytest.mark.slow

DEFS = """
import gc, sys, threading, time, warnings, weakref
from flowbook import flow, task
from flowbook.jupyter import extension
from ipywidgets import Widget

gate = threading.Event()

@task
def waits(i):
    gate.wait(30)
    return i

@flow
def held(n):
    return len(waits.map(range(n)).result())

@task
def quick(i):
    return i

@flow
def mapped(n):
    return len(quick.map(range(n)).result())

def widget(model_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Widget.widgets: ipywidgets 8
        return Widget.widgets[model_id]

def shown(handle):
    # the front end's record of the run (None once the run ended)
    return extension.active().views.get(handle.flow_run_id)
"""


@pytest.fixture(scope="module")
def kernel(
    venv_kernel_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KernelSession]:
    home = tmp_path_factory.mktemp("kernel-home")
    env = {**os.environ, **venv_kernel_env, "FLOWBOOK_HOME": str(home)}
    env.pop("FLOWBOOK_CONSOLE", None)
    k = KernelSession(env)
    assert k.error(k.run("%load_ext flowbook")) is None
    assert k.error(k.run(textwrap.dedent(DEFS))) is None
    yield k
    k.close()


def run(kernel: KernelSession, code: str, timeout: float = 60) -> list[dict[str, Any]]:
    msgs = kernel.run(textwrap.dedent(code), timeout)
    assert kernel.error(msgs) is None, kernel.error(msgs)
    return msgs


def comm_count(kernel: KernelSession, model_id: str) -> int:
    return sum(1 for m in kernel.comm_messages() if m["content"].get("comm_id") == model_id)


def start_held_run(kernel: KernelSession) -> str:
    """A background run of 4 task runs that wait for ``gate``; its widget's model id."""
    msgs = run(kernel, "gate.clear()\nhandle = held.run_background(4)")
    (model_id,) = widget_ids(msgs)
    deadline = time.monotonic() + 10
    while widget_state(kernel, model_id).get("header", {}).get("total") != 4:
        assert time.monotonic() < deadline, "the widget never showed the run's 4 task runs"
        time.sleep(0.05)
    run(
        kernel,
        """
        live = shown(handle)
        model_ref, view_ref = weakref.ref(live.model), weakref.ref(live.view)
        del live
        """,
    )
    return model_id


def test_closing_a_running_runs_widget_releases_its_model_and_stops_its_updates(
    kernel: KernelSession,
) -> None:
    model_id = start_held_run(kernel)
    assert kernel.value("model_ref() is not None and view_ref() is not None") is True
    run(kernel, f"widget({model_id!r}).close()")
    # the model goes at once (nothing but the front end held it)
    assert kernel.value("(gc.collect(), model_ref() is None)[1]") is True
    # the run is still listed as shown (the console stays out of it) but keeps nothing
    assert kernel.value("(shown(handle).model, shown(handle).view)") == (None, None)
    sent = comm_count(kernel, model_id)
    run(kernel, "gate.set()")
    assert kernel.value("handle.wait(20)") is True
    assert kernel.value("handle.result()") == 4
    time.sleep(0.5)  # a few update passes
    assert comm_count(kernel, model_id) == sent  # nothing more went to the closed widget
    assert kernel.value("shown(handle)") is None  # the run's end let go of it too
    # the widget itself is in reference cycles (ipywidgets' callbacks); the collector frees
    # them once no flow run holds the heap frozen (flowbook/engine/heap.py)
    assert kernel.value("(gc.collect(), view_ref() is None)[1]") is True


def test_a_widget_closed_by_the_front_end_releases_its_model(kernel: KernelSession) -> None:
    model_id = start_held_run(kernel)
    # the front end closes the widget's model: a comm_close from its side
    msg = kernel.kc.session.msg("comm_close", {"comm_id": model_id, "data": {}})
    kernel.kc.shell_channel.send(msg)
    deadline = time.monotonic() + 10
    while kernel.value("(gc.collect(), model_ref() is None)[1]") is not True:
        assert time.monotonic() < deadline, "the model outlived its widget's comm_close"
        time.sleep(0.1)
    run(kernel, "gate.set()")
    assert kernel.value("handle.wait(20)") is True
    assert kernel.value("handle.state.name") == "Completed"
    assert kernel.value("(gc.collect(), view_ref() is None)[1]") is True


def test_a_finished_runs_widget_once_closed_is_gone_from_the_kernel(
    kernel: KernelSession,
) -> None:
    msgs = run(kernel, "mapped(50)")
    (model_id,) = widget_ids(msgs)
    assert widget_state(kernel, model_id)["header"]["done"] == 50
    run(
        kernel,
        f"""
        view_ref = weakref.ref(widget({model_id!r}))
        kept_before = len(extension.active()._kept)
        widget({model_id!r}).close()
        gc.collect()
        """,
    )
    assert kernel.value("view_ref() is None") is True
    assert kernel.value("len(extension.active()._kept) == kept_before - 1") is True


def test_a_long_runs_widget_sends_at_most_ten_updates_in_any_second(
    kernel: KernelSession,
) -> None:
    code = """
    from flowbook.task_runners import ThreadPoolTaskRunner

    @task
    def paced(i):
        time.sleep(0.04)
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def long_run(n):
        return len(paced.map(range(n)).result())

    t0 = time.perf_counter()
    long_run(300)
    elapsed = time.perf_counter() - t0
    """
    msgs = run(kernel, code, timeout=120)
    (model_id,) = widget_ids(msgs)
    assert kernel.value("elapsed") > 2.0  # long enough for the rate to be the loop's
    stamps = sorted(
        _seconds(m["header"]["date"])
        for m in kernel.comm_messages()
        if m["msg_type"] == "comm_msg" and m["content"].get("comm_id") == model_id
    )
    most = first = 0
    for last, t in enumerate(stamps):
        while t - stamps[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    assert len(stamps) >= 10  # it did update while running, not only at the end
    assert most <= 10, f"{most} updates in one second"
    assert widget_state(kernel, model_id)["header"]["done"] == 300


def _seconds(date: Any) -> float:
    if not isinstance(date, datetime.datetime):
        date = datetime.datetime.fromisoformat(str(date))
    return float(date.timestamp())
