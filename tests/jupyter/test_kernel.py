"""The notebook experience in a real kernel: widgets, output routing, interrupt, background
runs, Cancel, and a kernel restart (SPEC F40, F42-F48).

Each test drives a kernel of this virtual environment (``KernelSession``) and looks at what
the kernel published, message by message, with the cell each message belongs to.
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kernel_session import WIDGET, KernelSession, widget_ids, widget_state, widget_timeline

pytestmark = pytest.mark.slow


DEFS = """
import time, threading
from flowbook import flow, task, get_run_logger
from flowbook.task_runners import ConcurrentTaskRunner

@task
def add(x):
    print("adding", x)
    return x + 1

@task
def boom():
    raise ValueError("bad input 42")

@flow
def pipeline(n):
    get_run_logger().info("hello from the flow")
    total = sum(add.map(range(n)).result())
    try:
        boom()
    except ValueError:
        pass
    return total

@task
def nap(i):
    for _ in range(400):
        time.sleep(0.05)
    return i

@flow
def sleepy():
    return nap.map(range(3)).result()
"""


@pytest.fixture(scope="module")
def kernel_env(
    venv_kernel_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    home = tmp_path_factory.mktemp("kernel-home")
    env = {**os.environ, **venv_kernel_env, "FLOWBOOK_HOME": str(home)}
    env.pop("FLOWBOOK_CONSOLE", None)
    return env


@pytest.fixture(scope="module")
def kernel(kernel_env: dict[str, str]) -> Iterator[KernelSession]:
    k = KernelSession(kernel_env)
    assert k.error(k.run("%load_ext flowbook")) is None
    assert k.error(k.run(DEFS)) is None
    yield k
    k.close()


def run(kernel: KernelSession, code: str, timeout: float = 60) -> list[dict[str, Any]]:
    msgs = kernel.run(textwrap.dedent(code), timeout)
    return msgs


def updates(kernel: KernelSession, model_id: str) -> int:
    return sum(
        1
        for m in kernel.comm_messages()
        if m["msg_type"] == "comm_msg"
        and m["content"].get("comm_id") == model_id
        and m["content"]["data"].get("method") == "update"
    )


def test_a_flow_in_a_cell_shows_a_live_widget_with_its_prints_and_logs(
    kernel: KernelSession,
) -> None:
    msgs = run(kernel, "pipeline(20)")
    assert kernel.error(msgs) is None
    # the task prints are in the widget, not in the cell's output
    assert "adding" not in kernel.stdout(msgs)
    assert "adding" not in kernel.stdout(msgs, "stderr")
    (model_id,) = widget_ids(msgs)
    result = next(m for m in msgs if m["msg_type"] == "execute_result")
    assert result["content"]["data"]["text/plain"] == str(sum(range(1, 21)))
    state = widget_state(kernel, model_id)
    header = state["header"]
    assert header["flow"] == "pipeline"
    assert header["state"] == "Completed"
    assert (header["done"], header["total"]) == (21, 21)
    assert header["counts"] == {"Completed": 20, "Failed": 1}
    nodes = {n["label"]: n for n in state["graph"]["nodes"]}
    assert nodes["add.map"]["kind"] == "map"
    assert (nodes["add.map"]["done"], nodes["add.map"]["total"]) == (20, 20)
    boom = next(n for n in state["graph"]["nodes"] if n["label"].startswith("boom"))
    assert boom["state"] == "Failed"
    assert "bad input 42" in boom["detail"]["runs"][0]["traceback"]
    lines = [(line[1], line[3]) for line in state["logs"]]
    assert ("INFO", "hello from the flow") in lines
    assert sorted(m for level, m in lines if level == "PRINT") == sorted(
        f"adding {i}" for i in range(20)
    )
    assert any(level == "ERROR" and "bad input 42" in m for level, m in lines)
    assert widget_timeline(state)["total"] == 21
    # the static fallback: the display carries HTML and text, updated to the final state
    final = [m for m in msgs if m["msg_type"] == "update_display_data"][-1]["content"]["data"]
    assert (
        final["text/plain"]
        == "FlowRun(flow='pipeline', state='Completed', task_runs=21, Completed=20, Failed=1)"
    )
    assert "pipeline" in final["text/html"]
    assert "Completed" in final["text/html"]
    # no console lines for a run that has a widget
    assert "Finished in state" not in kernel.stdout(msgs, "stderr")


def test_output_of_a_background_run_never_lands_in_a_later_cell(kernel: KernelSession) -> None:
    code = """
    @task
    def chatty(i):
        for j in range(10):
            print(f"task line {i}-{j}")
            time.sleep(0.1)

    @flow
    def talker():
        chatty.map(range(2)).wait()

    h = talker.run_background()
    """
    first = kernel.start(textwrap.dedent(code))
    kernel.wait(first)
    second = run(
        kernel,
        """
        for i in range(10):
            print(f"cell line {i}")
            time.sleep(0.1)
        h.wait(30)
        """,
    )
    assert kernel.stdout(second) == "".join(f"cell line {i}\n" for i in range(10))
    assert "task line" not in kernel.stdout(kernel.messages(first))
    (model_id,) = widget_ids(kernel.messages(first))
    state = widget_state(kernel, model_id)
    printed = [line[3] for line in state["logs"] if line[1] == "PRINT"]
    assert sorted(printed) == sorted(f"task line {i}-{j}" for i in range(2) for j in range(10))
    assert state["header"]["state"] == "Completed"


def test_without_a_widget_output_goes_to_the_starting_cell(kernel: KernelSession) -> None:
    code = """
    %%flow quiet-cell --no-widget --background
    import time
    for j in range(8):
        print(f"quiet line {j}")
        time.sleep(0.1)
    """
    first = kernel.start(textwrap.dedent(code).strip())
    kernel.wait(first)
    second = run(
        kernel, "for i in range(5):\n    print('later', i)\n    time.sleep(0.1)\n_.wait(30)"
    )
    assert kernel.stdout(second) == "".join(f"later {i}\n" for i in range(5))
    assert not widget_ids(kernel.messages(first))
    out = kernel.stdout(kernel.messages(first))
    assert out.count("quiet line") == 8


def test_interrupt_cancels_the_run_within_a_second(kernel: KernelSession) -> None:
    code = """
    steps = {"n": 0}

    @task
    def slow(i):
        for _ in range(200):
            steps["n"] += 1
            time.sleep(0.05)
        return i

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2))
    def long_flow():
        return slow.map(range(6)).result()

    long_flow()
    """
    cell = kernel.start(textwrap.dedent(code))
    time.sleep(2.5)
    kernel.interrupt()
    t0 = time.monotonic()
    msgs = kernel.wait(cell, timeout=10)
    assert time.monotonic() - t0 < 1.0
    err = kernel.error(msgs)
    assert err is not None
    assert err["ename"] == "KeyboardInterrupt"
    (model_id,) = widget_ids(msgs)
    state = widget_state(kernel, model_id)
    assert state["header"]["state"] == "Cancelled"
    # two were running, four never started; all are Cancelled
    assert state["header"]["counts"] == {"Cancelled": 6}
    run = state["graph"]["nodes"][0]["detail"]["runs"]
    started = [r for r in run if "Running" in [s[0] for s in r["states"]]]
    assert len(started) == 2
    # the running bodies were stopped: the step counter no longer moves
    before = kernel.value('steps["n"]')
    time.sleep(0.5)
    assert kernel.value('steps["n"]') == before


def test_background_run_handle_and_cancel(kernel: KernelSession) -> None:
    code = """
    @task
    def sleeper(i):
        for _ in range(400):
            time.sleep(0.05)
        return i

    @flow
    def slow_flow():
        return sleeper.map(range(3)).result()

    handle = slow_flow.run_background()
    print(handle.state.name)
    """
    t0 = time.monotonic()
    msgs = run(kernel, code)
    assert time.monotonic() - t0 < 5
    assert kernel.stdout(msgs).strip() in ("Pending", "Running")
    (model_id,) = widget_ids(msgs)
    deadline = time.monotonic() + 10
    while widget_state(kernel, model_id).get("header", {}).get("cancellable") is not True:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert kernel.value("handle.cancel()") is True
    assert kernel.value("handle.wait(5)") is True
    assert kernel.value("handle.state.name") == "Cancelled"
    err = kernel.error(run(kernel, "handle.result()"))
    assert err is not None
    assert err["ename"] == "RunCancelledError"
    time.sleep(0.5)
    state = widget_state(kernel, model_id)
    assert state["header"]["state"] == "Cancelled"
    assert state["header"]["cancellable"] is False


def test_the_cancel_button_works_while_another_cell_runs(kernel: KernelSession) -> None:
    msgs = run(kernel, "handle2 = sleepy.run_background()")
    (model_id,) = widget_ids(msgs)
    busy = kernel.start("time.sleep(4)\nprint(handle2.state.name, time.time())")
    time.sleep(0.5)
    clicked = time.time()
    kernel.kc.session.send(
        kernel.kc.shell_channel.socket,
        "comm_msg",
        {"comm_id": model_id, "data": {"method": "custom", "content": {"type": "cancel"}}},
    )
    deadline = time.monotonic() + 3
    while widget_state(kernel, model_id).get("header", {}).get("state") != "Cancelled":
        assert time.monotonic() < deadline, "the run was not cancelled while the cell ran"
        time.sleep(0.05)
    header = widget_state(kernel, model_id)["header"]
    assert header["end"] - clicked < 1.0
    out = kernel.stdout(kernel.wait(busy))
    assert out.split()[0] == "Cancelled"


def test_widget_updates_are_bounded_by_time_not_by_tasks(kernel: KernelSession) -> None:
    code = """
    @task
    def one(x):
        return x

    @flow
    def big(n):
        return len(one.map(range(n)).result())

    t0 = time.perf_counter()
    big(5000)
    elapsed = time.perf_counter() - t0
    """
    msgs = run(kernel, code, timeout=120)
    assert kernel.error(msgs) is None
    (model_id,) = widget_ids(msgs)
    elapsed = kernel.value("elapsed")
    # about ten a second, plus the final one and the timeline's
    assert updates(kernel, model_id) <= elapsed * 10 + 5
    state = widget_state(kernel, model_id)
    assert state["header"]["done"] == 5000


def test_magics_in_the_kernel_and_a_run_shown_after_a_restart(
    kernel: KernelSession, kernel_env: dict[str, str]
) -> None:
    code = """
    %%flow etl-cell --param n=3 --param label=hello --retries 1
    rows = [add(i) for i in range(n)]
    f"{label}: {sum(rows)}"
    """
    msgs = run(kernel, textwrap.dedent(code).strip())
    assert kernel.error(msgs) is None
    result = next(m for m in msgs if m["msg_type"] == "execute_result")
    assert result["content"]["data"]["text/plain"] == "'hello: 6'"
    assert kernel.value("rows") == [1, 2, 3]
    assert kernel.value("n") == 3
    bad = run(kernel, "%%flow --retries x\npass")
    err = usage_error(kernel, bad)
    assert "--retries" in err
    assert "Usage:" in err
    assert "Traceback" not in err
    name = kernel.value("__import__('flowbook.runs').runs.list(flow='etl-cell', limit=1)[0].name")
    # a new kernel process on the same store: what a kernel restart leaves
    fresh = KernelSession(kernel_env)
    try:
        assert fresh.error(run(fresh, "%load_ext flowbook")) is None
        listing = run(fresh, "%flowbook runs --flow etl-cell")
        shown = next(m for m in listing if m["msg_type"] == "execute_result")["content"]["data"]
        assert name in shown["text/plain"]
        assert name in shown["text/html"]
        msgs = run(fresh, f"%flowbook show {name}")
        assert fresh.error(msgs) is None
        (display,) = [m for m in msgs if m["msg_type"] == "display_data"]
        data = display["content"]["data"]
        assert WIDGET in data
        assert data["text/plain"] == (
            "FlowRun(flow='etl-cell', state='Completed', task_runs=3, Completed=3)"
        )
        state = widget_state(fresh, data[WIDGET]["model_id"])
        assert state["header"]["source"] == "store"
        assert state["header"]["run_name"] == name
        assert len(state["graph"]["nodes"]) == 3
    finally:
        fresh.close()


def usage_error(kernel: KernelSession, messages: list[dict[str, Any]]) -> str:
    """IPython shows a usage error as one message on stderr, without a traceback."""
    assert kernel.error(messages) is None
    text = kernel.stdout(messages, "stderr")
    assert text.startswith("UsageError: ")
    return text


def test_flowbook_usage_errors_name_the_bad_value(kernel: KernelSession) -> None:
    assert "'frobnicate'" in usage_error(kernel, run(kernel, "%flowbook frobnicate"))
    assert "'novalue'" in usage_error(kernel, run(kernel, "%%flow --param novalue\npass"))
    assert "--task-runner" in usage_error(kernel, run(kernel, "%%flow --task-runner gpu\npass"))
    err = kernel.error(run(kernel, "%flowbook show no-such-run-anywhere"))
    assert err is not None
    assert "no-such-run-anywhere" in err["evalue"]


def test_a_finished_run_shown_in_a_widget_keeps_no_task_result_alive(
    kernel: KernelSession,
) -> None:
    code = """
    import gc, weakref

    class Payload:
        pass

    payload_refs = []

    @task
    def make_payload(i):
        p = Payload()
        payload_refs.append(weakref.ref(p))
        return p

    @flow
    def payloads():
        return len(make_payload.map(range(3)).result())

    payloads()
    """
    msgs = run(kernel, code)
    assert kernel.error(msgs) is None
    assert widget_ids(msgs)
    # the widget stays displayed; the results of its run must be collectable
    alive = kernel.value("(gc.collect(), [r() is not None for r in payload_refs])[1]")
    assert alive == [False, False, False]


def test_only_the_most_recent_widgets_keep_their_timeline_and_logs(
    kernel: KernelSession,
) -> None:
    setup = """
    from flowbook.jupyter.extension import KEEP_DETAILS

    @task
    def step(i):
        print("step", i)
        return i

    @flow
    def steps():
        return sum(step.map(range(3)).result())
    """
    assert kernel.error(run(kernel, setup)) is None
    keep = kernel.value("KEEP_DETAILS")
    ids = []
    for _ in range(keep + 2):
        msgs = run(kernel, "steps()")
        assert kernel.error(msgs) is None
        ids.extend(widget_ids(msgs))
    assert len(ids) == keep + 2
    kernel.value("1")  # the widget messages of the last run's end have arrived
    for model_id in ids[:2]:  # the oldest two gave up their details, with a note why
        state = widget_state(kernel, model_id)
        assert state["logs"] == []
        assert widget_timeline(state)["bars"] == []
        assert widget_timeline(state)["total"] == 3
        assert f"the {keep} most recent runs keep theirs" in state["header"]["retired"]
        assert state["header"]["state"] == "Completed"
        assert state["graph"]  # the graph stays
    for model_id in ids[2:]:
        state = widget_state(kernel, model_id)
        assert "retired" not in state["header"]
        assert len(widget_timeline(state)["bars"]) == 3
        assert any("step" in str(line) for line in state["logs"])
