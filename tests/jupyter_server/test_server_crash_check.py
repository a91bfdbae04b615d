"""The Jupyter server marks the runs of killed processes ``Crashed`` while it serves them.

A process is killed with SIGKILL in the middle of a flow run; no other process opens the
store afterwards, yet the server's ``GET runs`` shows the run ``Crashed`` within
``CRASH_CHECK_EVERY_S``: serving runs repeats the crash check, at most that often.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_process import ENABLE_BY_FLAG, ServerProcess, start_server

import flowbook.runs
from flowbook.jupyter.server import api
from flowbook.settings import reload_settings
from flowbook.store import close_store

CRASH_MESSAGE = "The process running this flow run ended before the run finished."
SLEEPER = """\
import time
from flowbook import flow, task

@task
def nap():
    time.sleep(120)

@flow(flow_run_name="killed-mid-run")
def sleeper():
    nap()

sleeper()
"""


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.update(FLOWBOOK_HOME=str(home), FLOWBOOK_CONSOLE="off")
    return env


def _start_sleeper(home: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", SLEEPER],
        env=_env(home),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)  # reaped: a zombie's pid would still look alive


def _wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    flowbook_env = {"FLOWBOOK_HOME": str(tmp_path / "home"), "FLOWBOOK_CONSOLE": "off"}
    started = start_server(tmp_path / "server", tmp_path / "root", flowbook_env, ENABLE_BY_FLAG)
    yield started
    started.stop()


@pytest.mark.slow
def test_the_server_shows_a_killed_run_crashed_within_the_interval(
    server: ServerProcess, tmp_path: Path
) -> None:
    def runs() -> list[dict[str, Any]]:
        response = server.get("flowbook/api/runs")
        assert response.status == 200, response
        return list(response.body["runs"])

    assert runs() == []  # the server has opened the store (and run its crash check)
    sleeper = _start_sleeper(tmp_path / "home", tmp_path)
    try:
        running = _wait_for(
            lambda: [r for r in runs() if r["state"] == "Running"], 30, "the run showing Running"
        )
    finally:
        _kill(sleeper)
    killed_at = time.monotonic()
    assert [r["name"] for r in running] == ["killed-mid-run"]

    (crashed,) = _wait_for(
        lambda: [r for r in runs() if r["state"] == "Crashed"],
        api.CRASH_CHECK_EVERY_S + 5,
        "the run showing Crashed",
    )
    took = time.monotonic() - killed_at
    assert took <= api.CRASH_CHECK_EVERY_S + 1.0, took
    assert crashed["name"] == "killed-mid-run"
    assert crashed["message"] == CRASH_MESSAGE
    detail = server.get(f"flowbook/api/runs/{crashed['id']}").body
    assert [t["state"] for t in detail["task_runs"]] == ["Crashed"]


@pytest.mark.slow
def test_the_crash_check_runs_at_most_once_per_interval(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("FLOWBOOK_HOME", str(home))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    monkeypatch.setattr(api, "_crash_checked_at", float("-inf"))
    monkeypatch.setattr(api, "CRASH_CHECK_EVERY_S", 60.0)
    reload_settings()
    try:

        def served() -> list[str]:
            return [r["state"] for r in api.run_list(None, None, 10, None)["runs"]]

        assert served() == []  # served with a crash check: the next is due in 60 s
        sleeper = _start_sleeper(home, tmp_path)
        try:
            # flowbook.runs reads the store without a crash check
            _wait_for(
                lambda: [r.state for r in flowbook.runs.list()] == ["Running"],
                30,
                "the run showing Running",
            )
        finally:
            _kill(sleeper)
        assert served() == ["Running"]  # within the interval: the row as stored
        assert served() == ["Running"]

        monkeypatch.setattr(api, "CRASH_CHECK_EVERY_S", 0.5)  # now the check is due
        assert served() == ["Crashed"]
        assert [r.message for r in flowbook.runs.list()] == [CRASH_MESSAGE]
    finally:
        close_store()
