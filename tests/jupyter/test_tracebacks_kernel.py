"""Tracebacks in a real kernel show the user's code, with cells named as IPython names them.

A failing flow runs in a cell of a kernel of this virtual environment; the test reads the
cell's error output (``%xmode`` Context, Plain and Verbose), the run widget's node detail and
Logs tab, what the store kept, an interrupt's traceback and ``%debug`` afterwards.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_session import KernelSession, widget_ids, widget_state

pytestmark = pytest.mark.slow

DEFS = """
import time
from flowbook import flow, task, get_run_logger

@task
def inner(x):
    secret = x * 2
    raise ValueError(f"bad value {secret}")

@task
def outer(x):
    return inner(x) + 1

@task
def parse(text):
    try:
        return int(text)
    except ValueError:
        get_run_logger().exception("could not parse")

@flow
def nested(x):
    parse("x")
    return outer(x)

@task
def wraps():
    try:
        {}["missing"]
    except KeyError as exc:
        raise RuntimeError("lookup failed") from exc

@flow
def chained():
    wraps()

@task
def sleepy(n):
    for _ in range(n):
        time.sleep(0.05)

@flow
def slow():
    sleepy(400)
"""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tb-home")


@pytest.fixture(scope="module")
def kernel(venv_kernel_env: dict[str, str], home: Path) -> Iterator[KernelSession]:
    env = {**os.environ, **venv_kernel_env, "FLOWBOOK_HOME": str(home)}
    env.pop("FLOWBOOK_CONSOLE", None)
    k = KernelSession(env)
    assert k.error(k.run("%load_ext flowbook")) is None
    assert k.error(k.run(DEFS)) is None
    yield k
    k.close()


def _error_text(kernel: KernelSession, msgs: list[dict[str, Any]]) -> str:
    err = kernel.error(msgs)
    assert err is not None, "the cell did not fail"
    return _ANSI.sub("", "\n".join(err["traceback"]))


def _cell(kernel: KernelSession, code: str) -> tuple[int, list[dict[str, Any]]]:
    """Run ``code``; its execution count and messages."""
    msgs = kernel.run(code)
    (count,) = [m["content"]["execution_count"] for m in msgs if m["msg_type"] == "execute_input"]
    return count, msgs


def test_failed_flow_cell_shows_cells_and_user_frames_only(kernel: KernelSession) -> None:
    count, msgs = _cell(kernel, "nested(3)")
    text = _error_text(kernel, msgs)
    assert f"Cell In[{count}], line 1" in text
    assert "in nested(x)" in text
    assert "in outer(x)" in text
    assert "in inner(x)" in text
    assert 'raise ValueError(f"bad value {secret}")' in text
    assert "flowbook/" not in text
    assert "ipykernel_" not in text
    assert text.rstrip().endswith("ValueError: bad value 6")


def test_widget_detail_and_logs_name_cells_without_flowbook_frames(
    kernel: KernelSession,
) -> None:
    _, msgs = _cell(kernel, "nested(4)")
    (model_id,) = widget_ids(msgs)
    state = widget_state(kernel, model_id)
    nodes = {n["label"]: n for n in state["graph"]["nodes"]}
    outer = next(n for label, n in nodes.items() if label.startswith("outer"))
    tb = outer["detail"]["runs"][0]["traceback"]
    assert re.search(r"Cell In\[\d+\], line \d+, in outer", tb), tb
    assert re.search(r"Cell In\[\d+\], line \d+, in inner", tb), tb  # the nested task's frame
    assert "flowbook/" not in tb
    assert "ipykernel_" not in tb
    errors = [line[3] for line in state["logs"] if line[1] == "ERROR" and "Traceback" in line[3]]
    assert errors, state["logs"]
    for message in errors:
        assert "Cell In[" in message
        assert "flowbook/" not in message
        assert "ipykernel_" not in message


def test_stored_tracebacks_name_cells_without_flowbook_frames(
    kernel: KernelSession, home: Path
) -> None:
    _cell(kernel, "nested(5)")
    flushed = kernel.run("from flowbook.store import get_store; get_store().flush()")
    assert kernel.error(flushed) is None
    db = sqlite3.connect(home / "flowbook.db")
    try:
        stored = [m for (m,) in db.execute("SELECT message FROM logs") if "Traceback" in m]
    finally:
        db.close()
    logged = [m for m in stored if m.startswith("could not parse")]
    assert logged
    assert re.search(r"Cell In\[\d+\], line \d+, in parse", logged[-1])
    for message in stored:
        assert "flowbook/" not in message, message
        assert "ipykernel_" not in message, message


@pytest.mark.parametrize("mode", ["Plain", "Verbose"])
def test_other_xmodes_keep_to_the_users_frames(kernel: KernelSession, mode: str) -> None:
    assert kernel.error(kernel.run(f"%xmode {mode}")) is None
    try:
        _, msgs = _cell(kernel, "nested(6)")
        text = _error_text(kernel, msgs)
    finally:
        kernel.run("%xmode Context")
    assert "in inner" in text
    assert "in outer" in text
    # Plain mode does not hide marked frames: the call site in flowbook is the only one left
    assert text.count("flowbook/") == (1 if mode == "Plain" else 0)
    assert "engine/" not in text
    if mode == "Verbose":
        assert "in inner(x=6)" in text  # the user's arguments, as Verbose shows them


def test_a_cause_is_shown_with_its_own_frames(kernel: KernelSession) -> None:
    _, msgs = _cell(kernel, "chained()")
    text = _error_text(kernel, msgs)
    assert "KeyError: 'missing'" in text
    assert "The above exception was the direct cause of the following exception" in text
    assert "RuntimeError: lookup failed" in text
    assert "flowbook/" not in text


def test_interrupt_shows_where_the_user_code_was(kernel: KernelSession) -> None:
    msg_id = kernel.start("slow()")
    time.sleep(1.5)
    kernel.interrupt()
    text = _error_text(kernel, kernel.wait(msg_id))
    assert "KeyboardInterrupt" in text
    assert "in sleepy(n)" in text
    assert "time.sleep(0.05)" in text
    assert "flowbook/" not in text


def test_debug_after_a_failed_flow_opens_in_the_users_frame(kernel: KernelSession) -> None:
    _cell(kernel, "nested(7)")
    msg_id = kernel.start("%debug")
    for command in ["p secret", "up", "p x", "q"]:
        kernel.kc.get_stdin_msg(timeout=30)
        kernel.kc.input(command)
    out = _ANSI.sub("", kernel.stdout(kernel.wait(msg_id)))
    assert "inner()" in out.splitlines()[0]  # it opens where the exception was raised
    lines = out.splitlines()
    assert "14" in lines  # secret, in inner
    assert "7" in lines  # x, in outer one frame up (no flowbook frame in between)
    assert "task_engine" not in out
