"""The whole story of a run, read back from the store as the user saw it.

- a script run: every line the console printed is in the store, in order, and
  ``flowbook runs show`` (text and ``--json``) shows them; a cancel the user asked for is told
  at WARNING, never ERROR;
- a notebook run (a real kernel): what its widget showed (prints without ``log_prints``, the
  retry warning, the failure with its traceback) is in the store, and a new kernel on the same
  store shows it with ``%flowbook show`` and ``flowbook runs show``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "jupyter"))  # the kernel helpers' module
from kernel_session import WIDGET, KernelSession, widget_state

pytestmark = pytest.mark.slow

SCRIPT = """\
from flowbook import flow, task

@task(log_prints=True)
def fine(i):
    print(f"fine {i}")
    return i

@task(retries=1, retry_delay_seconds=0)
def explode():
    raise ValueError("bad input 42")

@flow(flow_run_name="script-story")
def story():
    fine(1)
    explode()

story()
"""

CANCEL = """\
import time
from flowbook import flow, task

@task
def nap(i):
    for _ in range(200):
        time.sleep(0.05)
    return i

@flow(flow_run_name="cancelled-story")
def sleepy():
    return nap.map(range(3)).result()

handle = sleepy.run_background()
time.sleep(0.5)
handle.cancel()
try:
    handle.result()
except BaseException as exc:
    print(type(exc).__name__)
"""

# a console line: "12:00:00.000 | INFO    | Task run 'x' - message"
CONSOLE_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| (\w+) *\| (.+?) - (.*)$")


def _env(home: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.pop("JPY_SESSION_NAME", None)
    return {**env, "FLOWBOOK_HOME": str(home), **more}


def _cli(home: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flowbook.cli", *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _run_script(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)],
        env=_env(tmp_path / "home", FLOWBOOK_CONSOLE="on"),
        capture_output=True,
        text=True,
        timeout=90,
    )


def _console_lines(err: str) -> list[tuple[str, str, str]]:
    return [m.groups() for m in map(CONSOLE_LINE.match, err.splitlines()) if m is not None]


def test_a_script_runs_console_lines_are_all_in_the_store_in_order(tmp_path: Path) -> None:
    done = _run_script(tmp_path, SCRIPT)
    assert done.returncode == 1, done.stderr
    printed = _console_lines(done.stderr)
    assert len(printed) == 7, done.stderr
    detail = json.loads(_cli(tmp_path / "home", "runs", "show", "script-story", "--json"))
    stored = [
        (logging_name(line["level"]), line["logger"], line["message"].split("\n")[0])
        for line in detail["logs"]
    ]
    # the whole story: every console line, the engine's own and the run's, in the same order
    assert stored == [tuple(line) for line in printed]
    assert [line["timestamp"] for line in detail["logs"]] == sorted(
        line["timestamp"] for line in detail["logs"]
    )
    assert ("INFO", "Task run 'fine-0'", "fine 1") in stored
    assert (
        "INFO",
        "Task run 'explode-0'",
        "Task run failed with exception: ValueError('bad input 42') - Retry 1/1 will start "
        "0 second(s) from now",
    ) in stored
    [failure] = [line for line in detail["logs"] if "Retries are exhausted" in line["message"]]
    assert 'raise ValueError("bad input 42")' in failure["message"]
    assert failure["message"].endswith("ValueError: bad input 42")

    text = _cli(tmp_path / "home", "runs", "show", "script-story")
    assert re.search(
        r"\| INFO +\| Task run 'explode-0' - Task run failed with exception: "
        r"ValueError\('bad input 42'\) - Retry 1/1 will start",
        text,
    ), text
    assert re.search(r"\| ERROR   \| Task run 'explode-0' - Finished in state Failed\(", text)
    assert re.search(r"\| INFO    \| Task run 'fine-0' - Finished in state Completed\(\)", text)
    assert '      raise ValueError("bad input 42")' in text  # the traceback, indented


def test_a_cancel_the_user_asked_for_is_a_warning_not_an_error(tmp_path: Path) -> None:
    done = _run_script(tmp_path, CANCEL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RunCancelledError"
    printed = _console_lines(done.stderr)
    cancelled = [line for line in printed if "Finished in state Cancelled(" in line[2]]
    assert len(cancelled) == 4, done.stderr  # three task runs and the flow run
    assert {level for level, _, _ in cancelled} == {"WARNING"}
    assert not [line for line in printed if line[0] == "ERROR"], done.stderr
    detail = json.loads(_cli(tmp_path / "home", "runs", "show", "cancelled-story", "--json"))
    levels = {line["level"] for line in detail["logs"] if "Cancelled(" in line["message"]}
    assert levels == {30}


def logging_name(level: int) -> str:
    return {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}[level]


# -- a notebook run -------------------------------------------------------------------------------
NOTEBOOK_DEFS = """
from flowbook import flow, task

@task
def chatty(i):
    print(f"chatty {i} says", end=" ")
    print("hello")
    return i

@task(retries=1, retry_delay_seconds=0)
def explode():
    raise ValueError("bad input 42")

@flow(flow_run_name="notebook-story")
def story():
    [chatty(i) for i in range(3)]
    print("the flow itself prints")
    explode()
"""


@pytest.fixture
def kernel_env(venv_kernel_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, **venv_kernel_env, "FLOWBOOK_HOME": str(tmp_path / "home")}
    env.pop("FLOWBOOK_CONSOLE", None)
    return env


def _widget_logs(kernel: KernelSession, msgs: list[dict[str, Any]]) -> list[list[Any]]:
    [display] = [m for m in msgs if m["msg_type"] == "display_data"]
    state = widget_state(kernel, display["content"]["data"][WIDGET]["model_id"])
    return list(state["logs"])


def test_a_notebook_runs_story_is_stored_and_shown_after_a_restart(
    kernel_env: dict[str, str], tmp_path: Path
) -> None:
    kernel = KernelSession(kernel_env)
    try:
        assert kernel.error(kernel.run("%load_ext flowbook")) is None
        assert kernel.error(kernel.run(NOTEBOOK_DEFS)) is None
        msgs = kernel.run("story()")
        error = kernel.error(msgs)
        assert error is not None
        assert error["ename"] == "ValueError"
        assert "chatty" not in kernel.stdout(msgs)  # the prints went to the widget
        live = _widget_logs(kernel, msgs)
    finally:
        kernel.close()
    live_messages = [line[3] for line in live]
    assert "chatty 0 says hello" in live_messages
    assert "the flow itself prints" in live_messages

    # a new kernel on the same store: what a kernel restart leaves
    fresh = KernelSession(kernel_env)
    try:
        assert fresh.error(fresh.run("%load_ext flowbook")) is None
        msgs = fresh.run("%flowbook show notebook-story")
        assert fresh.error(msgs) is None
        shown = [line[3] for line in _widget_logs(fresh, msgs)]
    finally:
        fresh.close()
    # every line the live widget showed is shown again from the store
    for message in live_messages:
        assert message in shown, (message, [m for m in shown if "Retries" in m])
    assert any("Retry 1/1 will start" in m for m in shown)
    [failure] = [m for m in shown if "Retries are exhausted" in m]
    assert 'raise ValueError("bad input 42")' in failure

    detail = json.loads(_cli(tmp_path / "home", "runs", "show", "notebook-story", "--json"))
    by_message = {line["message"]: line for line in detail["logs"]}
    for i in range(3):
        line = by_message[f"chatty {i} says hello"]
        assert (line["level"], line["logger"]) == (20, "stdout")
        assert line["task_run_id"] is not None
    assert by_message["the flow itself prints"]["task_run_id"] is None
    text = _cli(tmp_path / "home", "runs", "show", "notebook-story")
    assert "| INFO    | Task run 'chatty-1' [stdout] - chatty 1 says hello" in text
    assert "| INFO    | Flow run 'notebook-story' [stdout] - the flow itself prints" in text
    assert re.search(r"\| INFO +\| Task run 'explode-0' - .*Retry 1/1 will start", text)
    assert "| ERROR   | Task run 'explode-0' - Task run failed with exception" in text
