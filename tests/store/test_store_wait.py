"""``FLOWBOOK_STORE_WAIT``: whether a flow call waits for its rows to be committed.

``on`` (the default): a top-level flow call returns once its rows are in the store. ``off``:
it returns at once; the rows follow with the writer's next batch (within about half a second);
the run's end is journalled first, so a process killed in between leaves the run with its final
state, not ``Crashed`` or nothing.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.settings import reload_settings
from flowbook.store import close_store, get_store
from flowbook.store.journal import read_journal


def _rows(home: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(home / "flowbook.db")
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    home = tmp_path / "home"
    monkeypatch.setenv("FLOWBOOK_HOME", str(home))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    monkeypatch.delenv("FLOWBOOK_DATABASE_URL", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    yield home
    monkeypatch.delenv("FLOWBOOK_STORE_WAIT", raising=False)
    close_store()
    reload_settings()


def test_a_bad_value_is_refused_with_its_name_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWBOOK_STORE_WAIT", "sometimes")
    try:
        with pytest.raises(ValueError, match=r"FLOWBOOK_STORE_WAIT='sometimes'.*on, off"):
            reload_settings()
    finally:
        monkeypatch.delenv("FLOWBOOK_STORE_WAIT")
        reload_settings()


def test_off_returns_before_the_commit_and_the_rows_follow_within_the_bound(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWBOOK_STORE_WAIT", "off")
    reload_settings()
    store = get_store()
    assert store is not None
    assert store.writer.wait is False

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def unwaited(x: int) -> int:
        return double(x)

    assert unwaited(21) == 42
    returned = time.monotonic()
    # the call did not wait: the writer gathers for half a second before it writes
    assert _rows(home, "SELECT count(*) FROM flow_runs") == [(0,)]
    # ... and the journal holds the run's end meanwhile
    (entry,) = read_journal(store.journal.path)
    assert entry["end"]["type"] == "COMPLETED"
    while _rows(home, "SELECT count(*) FROM task_runs") != [(1,)]:
        assert time.monotonic() - returned < 5, "the rows did not follow within 5 s"
        time.sleep(0.01)
    assert _rows(home, "SELECT state_name FROM flow_runs") == [("Completed",)]
    assert _rows(home, "SELECT name, state_name FROM task_runs") == [("double-0", "Completed")]


def test_switching_back_on_waits_again(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWBOOK_STORE_WAIT", "off")
    reload_settings()
    first = get_store()
    monkeypatch.setenv("FLOWBOOK_STORE_WAIT", "on")
    reload_settings()
    store = get_store()
    assert store is first
    assert store is not None
    assert store.writer.wait is True

    @flow
    def waited() -> str:
        return "done"

    assert waited() == "done"
    assert _rows(home, "SELECT state_name FROM flow_runs") == [("Completed",)]


_KILLED = """
import os, signal, sys, time
from flowbook import flow, task

@task
def step(i):
    return i

@flow
def quick(fail):
    step.map(range(3)).result()
    if fail:
        raise ValueError("the body failed")
    return "ok"

@flow
def slow():
    step(0)
    time.sleep(float(sys.argv[2]))  # the writer's batch holds the run's first rows meanwhile
    step(1)
    return "ok"

which = sys.argv[1]
if which == "completed":
    quick(False)
elif which == "failed":
    quick(True, return_state=True)
else:
    slow()
os.kill(os.getpid(), signal.SIGKILL)  # right after the call returned: before the next batch
"""


def _killed_run(tmp_path: Path, which: str, *, wait: str = "off") -> Path:
    home = tmp_path / f"home-{which}-{wait}"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(_KILLED))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.update(FLOWBOOK_HOME=str(home), FLOWBOOK_CONSOLE="off", FLOWBOOK_STORE_WAIT=wait)
    proc = subprocess.run(
        [sys.executable, str(script), which, "1.2"], env=env, timeout=120, capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()
    # a new process opens the store: the dead process's journal is read
    subprocess.run(
        [sys.executable, "-c", "from flowbook.store import get_store; get_store()"],
        env=env,
        timeout=60,
        check=True,
    )
    assert not list((home / "journal").glob("*.jsonl"))
    return home


@pytest.mark.parametrize(("which", "state"), [("completed", "Completed"), ("failed", "Failed")])
def test_a_kill_after_an_unwaited_call_keeps_the_runs_final_state(
    tmp_path: Path, which: str, state: str
) -> None:
    home = _killed_run(tmp_path, which)
    ((name, message, run_count),) = _rows(
        home, "SELECT state_name, state_message, run_count FROM flow_runs"
    )
    assert name == state
    assert run_count == 1
    assert "FLOWBOOK_STORE_WAIT=off" in message
    assert "task runs" in message
    if state == "Completed":  # the run's own message, then the note
        assert message.startswith("All states completed. (")
    if state == "Failed":
        assert "the body failed" in message
    assert _rows(home, "SELECT type FROM states WHERE run_kind = 'flow'") == [(state.upper(),)]


def test_a_kill_after_a_long_unwaited_run_ends_its_rows_consistently(tmp_path: Path) -> None:
    """The run's first rows were committed while it ran (Running); its end was only in the
    journal: the run gets its final state and no task run is left Running or Pending."""
    home = _killed_run(tmp_path, "slow")
    assert _rows(home, "SELECT state_name FROM flow_runs") == [("Completed",)]
    left = _rows(
        home,
        "SELECT count(*) FROM task_runs WHERE state_type IS NULL "
        "OR state_type NOT IN ('COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED')",
    )
    assert left == [(0,)]
    # the task run that was committed while the flow ran is there
    assert ("step-0",) in _rows(home, "SELECT name FROM task_runs")


def test_the_default_waits_so_a_kill_after_the_call_loses_nothing(tmp_path: Path) -> None:
    home = _killed_run(tmp_path, "completed", wait="on")
    assert _rows(home, "SELECT state_name, state_message FROM flow_runs") == [
        ("Completed", "All states completed.")
    ]
    assert _rows(home, "SELECT count(*) FROM task_runs WHERE state_name = 'Completed'") == [(3,)]
