"""One lifecycle under faults: every part around a body that raises ends its run with a named
message (never Pending or Running), cancels at random moments never hang, and a run still
going when its process exits or is killed leaves a final (or Crashed) record."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import flowbook
from flowbook import flow, runtime, task
from flowbook.caching.keys import task_input_hash
from flowbook.engine.events import FlowRunFinished, StateChanged
from flowbook.engine.interrupts import Body, call_body, enter, interrupt, leave
from flowbook.engine.runs import TaskRun
from flowbook.exceptions import RunCancelledError, RunInterrupted
from flowbook.task_runners import ConcurrentTaskRunner

REPO = Path(__file__).resolve().parents[1]


# -- one guard ----------------------------------------------------------------------------------
def _raising_key(context: Any, parameters: dict[str, Any]) -> str:
    raise ValueError("no key for you")


def test_a_raising_cache_key_fn_fails_a_called_task_run_naming_it(events: Any) -> None:
    calls: list[int] = []

    @task(cache_key_fn=_raising_key)
    def keyed(x: int) -> int:
        calls.append(x)
        return x

    @flow
    def called() -> int:
        return keyed(1)

    state = called(return_state=True)
    assert state.is_failed()
    task_states = events.states("keyed-0")
    assert task_states == ["Pending", "Failed"]
    final = [e for e in events.events if getattr(e, "run", None) is not None][-1]
    assert calls == []
    failed = [
        e.state
        for e in events.events
        if e.__class__.__name__ == "StateChanged" and e.run.name == "keyed-0"
    ][-1]
    assert failed.message == "cache_key_fn raised ValueError: no key for you"
    assert final is not None


def test_a_raising_cache_key_fn_fails_a_submitted_task_run_not_cancelled(events: Any) -> None:
    @task(cache_key_fn=_raising_key)
    def keyed(x: int) -> int:
        return x

    @flow
    def submitted() -> None:
        keyed.submit(1)

    state = submitted(return_state=True)
    # (Prefect 3: a failure the flow never looked at does not fail it; the message says so)
    assert state.is_completed()
    assert "1/1 task runs failed without the flow looking at them" in (state.message or "")
    assert events.states("keyed-0") == ["Pending", "Failed"]


def test_a_raising_retry_condition_is_logged_and_means_no_retry(
    events: Any, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    def bad_condition(task: Any, run: Any, state: Any) -> bool:
        raise KeyError("condition broke")

    @task(retries=3, retry_condition_fn=bad_condition)
    def flaky() -> None:
        attempts.append(1)
        raise RuntimeError("boom")

    @flow
    def caller() -> None:
        flaky()

    with caplog.at_level("ERROR", logger="flowbook"):
        state = caller(return_state=True)
    assert state.is_failed()
    assert attempts == [1]
    assert events.states("flaky-0") == ["Pending", "Running", "Failed"]
    assert any(
        "retry_condition_fn raised KeyError: 'condition broke'; not retrying" in r.getMessage()
        for r in caplog.records
    )


def test_a_failing_task_run_name_fails_that_run_with_the_template_named(events: Any) -> None:
    @task(task_run_name="{x[0]}")
    def named(x: int) -> int:
        return x

    @flow
    def caller() -> None:
        named.submit(5)

    state = caller(return_state=True)
    assert "1/1 task runs failed without the flow looking at them" in (state.message or "")
    failed = [
        e.state
        for e in events.events
        if e.__class__.__name__ == "StateChanged" and e.run.name == "named-0"
    ]
    assert [s.name for s in failed] == ["Pending", "Failed"]
    assert failed[-1].message.startswith("Task run could not be named: ")
    assert "'{x[0]}'" in failed[-1].message


def test_running_task_runs_are_told_the_flow_timed_out_while_they_ran(events: Any) -> None:
    @task
    def slow() -> None:
        time.sleep(5)

    @task
    def later() -> None:
        pass

    @flow(timeout_seconds=0.3, task_runner=ConcurrentTaskRunner(max_workers=1))
    def bounded() -> None:
        a = slow.submit()
        b = later.submit(wait_for=[a])
        b.wait()

    started = time.monotonic()
    state = bounded(return_state=True)
    assert time.monotonic() - started < 3
    assert state.name == "TimedOut"
    by_run = {
        e.run.name: e.state
        for e in events.events
        if e.__class__.__name__ == "StateChanged" and e.state.is_final()
    }
    assert by_run["slow-0"].message == "The flow run timed out while this task run was running."
    # a run that never started says so (its flow run ended it as timed out or cancelled)
    assert by_run["later-0"].message.endswith("before this task run started.")


def test_a_timed_out_attempts_body_runs_nothing_in_the_next_attempt(events: Any) -> None:
    ran: list[int] = []
    second_started, stale_done = threading.Event(), threading.Event()
    outcomes: dict[str, Any] = {}

    @task
    def work(x: int) -> int:
        ran.append(x)
        return x

    @flow
    def inner() -> str:
        ran.append(-1)
        return "inner"

    @flow(retries=1, retry_delay_seconds=0, timeout_seconds=1.0)
    def retried() -> str:
        if runtime.flow_run.run_count == 1:
            try:
                while True:  # (Python code: the timeout lands here)
                    time.sleep(0.01)
            except Exception as exc:  # the body goes on after its timeout, as user code may
                outcomes["caught"] = type(exc).__name__
            second_started.wait(10)
            mapped = work.map(range(3))
            mapped.wait()
            outcomes["mapped"] = [f.state for f in mapped]
            try:
                work(7)
            except BaseException as exc:
                outcomes["called"] = exc
            outcomes["subflow"] = inner(return_state=True)
            stale_done.set()
            return "old"
        second_started.set()
        stale_done.wait(10)
        return f"new {work(10)}"

    state = retried(return_state=True)
    assert state.is_completed(), state
    assert state.result() == "new 10"
    assert outcomes["caught"] == "RunTimeoutError"
    assert ran == [10]  # nothing the first attempt called after its end ran
    message = "Called by attempt 1 of flow run "
    assert all(s.is_cancelled() and s.message.startswith(message) for s in outcomes["mapped"])
    assert isinstance(outcomes["called"], RunCancelledError)
    assert outcomes["subflow"].is_cancelled()
    assert outcomes["subflow"].message.startswith(message)
    (run,) = [e.flow_run for e in events.of(FlowRunFinished) if e.flow_run.flow.name == "retried"]
    # the second attempt's calls keep their places (its first call of `work` is work-0) and
    # the ended attempt's calls are recorded (events, the store) but not counted in it
    second = run.task_runs[-1]
    assert second.name == "work-0"
    assert second.state.is_completed()
    stale = [
        e.run
        for e in events.of(StateChanged)
        if isinstance(e.run, TaskRun)
        and e.state.is_cancelled()
        and (e.state.message or "").startswith(message)
    ]
    assert len(stale) == 5  # three mapped, one called, the subflow's record
    assert not any(r in run.task_runs for r in stale)


def test_a_raising_done_callback_is_logged_and_the_dependent_run_still_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @task
    def first() -> int:
        time.sleep(0.1)
        return 1

    @task
    def second(x: int) -> int:
        return x + 1

    @flow(timeout_seconds=10)
    def chained() -> int:
        a = first.submit()
        a.add_done_callback(lambda future: 1 / 0)  # before the dependent's own callback
        return second.submit(a).result()

    t0 = time.monotonic()
    assert chained() == 2
    assert time.monotonic() - t0 < 5
    logged = [r for r in caplog.records if r.name == "flowbook.futures"]
    assert len(logged) == 1
    assert "first-0" in logged[0].getMessage()
    assert logged[0].exc_info is not None
    assert logged[0].exc_info[0] is ZeroDivisionError


def test_a_tasks_own_log_prints_is_honoured_without_any_flow_enabling_it(tmp_path: Path) -> None:
    script = tmp_path / "prints.py"
    script.write_text(
        textwrap.dedent(
            """
            from flowbook import flow, task

            @task(log_prints=True)
            def talk():
                print("hello from the task")

            @flow
            def quiet():
                talk()

            quiet()
            """
        )
    )
    env = {**os.environ, "FLOWBOOK_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "| INFO    | Task run 'talk-0' - hello from the task" in proc.stderr


# -- interrupts land only in user code ---------------------------------------------------------
def test_an_interrupt_waits_while_the_body_is_in_flowbook_code() -> None:
    reached: list[str] = []
    inside = threading.Event()
    go = threading.Event()
    bodies: list[Body | None] = []

    def user_code() -> None:
        body = enter()  # the user's code calls into flowbook
        try:
            inside.set()
            go.wait(5)
            reached.append("flowbook work finished")
        finally:
            try:
                leave(body)
            except RunInterrupted:
                reached.append("raised on the way back")
                raise

    def run() -> None:
        try:
            call_body(user_code, (), {}, bodies.append)
        except RunInterrupted:
            reached.append("body stopped")

    thread = threading.Thread(target=run)
    thread.start()
    assert inside.wait(5)
    assert interrupt(bodies[0], RunInterrupted)
    time.sleep(0.05)
    assert reached == []  # nothing raised inside flowbook code
    go.set()
    thread.join(5)
    assert reached == ["flowbook work finished", "raised on the way back", "body stopped"]


def test_an_interrupt_after_the_body_ended_is_refused() -> None:
    bodies: list[Body | None] = []
    call_body(lambda: None, (), {}, bodies.append)
    (body,) = bodies
    assert body is not None
    assert body.done  # an ended body stays registered, as done
    assert not interrupt(body, RunInterrupted)


# -- cancel stress ------------------------------------------------------------------------------
@task
def _tick(i: int) -> int:
    time.sleep(0.001 * (i % 3))
    return i


@task
def _add(a: int, b: int) -> int:
    return a + b


@flow(task_runner=ConcurrentTaskRunner(max_workers=8))
def _busy(n: int) -> int:
    futures = _tick.map(range(n))
    total = _tick.submit(0)
    for f in futures[:5]:
        total = _add.submit(total, f)
    time.sleep(0.001)
    more = _tick.map(range(n))
    return sum(more.result()) + total.result()


def test_a_thousand_cancels_at_random_moments_never_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWBOOK_STORE", "off")
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    from flowbook.settings import reload_settings

    reload_settings()
    rng = random.Random(14)
    outcomes: dict[str, int] = {}
    hung: list[str] = []
    trials = 1000
    for trial in range(trials):
        handle = _busy.run_background(rng.choice((20, 60, 120)))
        time.sleep(rng.uniform(0, 0.012))
        handle.cancel()
        if not handle.wait(10):
            hung.append(f"trial {trial}: {handle!r}")
            break
        state = handle.state
        outcomes[state.name] = outcomes.get(state.name, 0) + 1
        runs = handle._engine.run.task_runs
        open_runs = [r for r in runs if r.state is None or not r.state.is_final()]
        assert open_runs == [], f"trial {trial}: task runs left open: {open_runs[:3]}"
    assert hung == []
    assert sum(outcomes.values()) == trials
    assert outcomes.get("Cancelled", 0) > trials // 2, outcomes


# -- every run leaves a trace -------------------------------------------------------------------
_STARTED_SCRIPT = """
import os, sys, time
from pathlib import Path
from flowbook import flow, task

@task
def step(i):
    time.sleep(0.01)
    return i

@flow
def traced(marker):
    Path(marker).write_text("started")
    step.map(range(200)).result()

traced(sys.argv[1])
"""


def _store_rows(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "flowbook.db") as conn:
        return list(conn.execute(sql))


def _open_store(home: Path) -> None:
    """Open the store in a new process (which marks dead processes' runs Crashed)."""
    code = "from flowbook.store import get_store; get_store()"
    env = {**os.environ, "FLOWBOOK_HOME": str(home)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_kill_right_after_the_body_starts_leaves_a_crashed_run(
    tmp_path: Path, sig: signal.Signals
) -> None:
    script = tmp_path / "traced.py"
    script.write_text(_STARTED_SCRIPT)
    rng = random.Random(int(sig))
    outcomes: dict[str, int] = {}
    messages: set[str] = set()
    for trial in range(4):
        home = tmp_path / f"home-{trial}"
        marker = tmp_path / f"started-{trial}"
        env = {**os.environ, "FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"}
        proc = subprocess.Popen([sys.executable, str(script), str(marker)], env=env)
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert marker.exists()
        time.sleep(rng.uniform(0, 0.1))  # within the first 100 ms of the body
        proc.send_signal(sig)
        proc.wait(30)
        _open_store(home)
        rows = _store_rows(home, "SELECT state_name, state_message FROM flow_runs")
        assert len(rows) == 1, f"trial {trial}: {rows}"
        outcomes[rows[0][0]] = outcomes.get(rows[0][0], 0) + 1
        messages.add(rows[0][1])
        # the dead process's journal was read and removed
        assert not list((home / "journal").glob("*.jsonl"))
        left = _store_rows(
            home,
            "SELECT count(*) FROM task_runs WHERE state_type IN ('PENDING', 'RUNNING')",
        )
        assert left == [(0,)]
    assert outcomes == {"Crashed": 4}
    # killed within 100 ms of the body's start, before the writer's first batch: the run is
    # known from the journal the process appended to when it created the run
    assert (
        "The process running this flow run ended before the run was recorded (found in its "
        "run journal)." in messages
    ), messages


def test_kills_at_random_moments_leave_a_consistent_store(tmp_path: Path) -> None:
    """Killed anywhere from process start to the end: no run is left Running or Pending once
    the store is opened again, and a run whose body began always has its row."""
    script = tmp_path / "traced.py"
    script.write_text(_STARTED_SCRIPT)
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    home = tmp_path / "home"
    for trial in range(8):
        marker = tmp_path / f"started-{trial}"
        env = {**os.environ, "FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"}
        proc = subprocess.Popen([sys.executable, str(script), str(marker)], env=env)
        time.sleep(rng.uniform(0.05, 1.5))
        proc.kill()
        proc.wait(30)
        began = marker.exists()
        outcomes[f"body began: {began}"] = outcomes.get(f"body began: {began}", 0) + 1
    _open_store(home)
    states = _store_rows(home, "SELECT state_name FROM flow_runs")
    assert len(states) >= outcomes.get("body began: True", 0)
    assert {s for (s,) in states} <= {"Crashed", "Completed"}
    left = _store_rows(
        home, "SELECT count(*) FROM task_runs WHERE state_type IN ('PENDING', 'RUNNING')"
    )
    assert left == [(0,)]


def test_a_clean_exit_leaves_every_run_recorded_and_no_journal(tmp_path: Path) -> None:
    script = tmp_path / "many.py"
    script.write_text(
        textwrap.dedent(
            """
            from flowbook import flow

            @flow
            def tiny(i):
                return i

            for i in range(201):
                tiny(i)
            """
        )
    )
    home = tmp_path / "home"
    env = {**os.environ, "FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert _store_rows(home, "SELECT count(*) FROM flow_runs") == [(201,)]
    assert list((home / "journal").glob("*")) == []


def test_background_runs_still_going_at_exit_end_cancelled(tmp_path: Path) -> None:
    script = tmp_path / "background.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            from flowbook import flow, task

            @task
            def wait_a_while(i):
                time.sleep(30)

            @flow
            def long_one():
                wait_a_while.map(range(3)).result()

            handle = long_one.run_background()
            time.sleep(0.5)
            print("leaving")
            """
        )
    )
    home = tmp_path / "home"
    env = {**os.environ, "FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 20
    flows = _store_rows(home, "SELECT state_name, state_message FROM flow_runs")
    assert flows == [("Cancelled", "The process exited while this flow run was running.")]
    tasks = _store_rows(home, "SELECT state_name FROM task_runs")
    assert sorted(tasks) == [("Cancelled",)] * 3


def test_a_subflow_still_going_in_a_background_run_at_exit_ends_cancelled(
    tmp_path: Path,
) -> None:
    """Before, only top-level runs were ended at exit: the subflow's run stayed Running in
    the store for good (no later process's crash check looks at subflows)."""
    script = tmp_path / "background_subflow.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading, time
            from flowbook import flow, task

            started = threading.Event()

            @task
            def wait_a_while():
                started.set()
                time.sleep(30)

            @flow
            def inner():
                wait_a_while()

            @flow
            def outer():
                inner()

            handle = outer.run_background()
            started.wait(10)
            print("leaving")
            """
        )
    )
    home = tmp_path / "home"
    env = {**os.environ, "FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    exited = "The process exited while this flow run was running."
    flows = _store_rows(home, "SELECT flow_name, state_name, state_message FROM flow_runs")
    assert sorted(flows) == [("inner", "Cancelled", exited), ("outer", "Cancelled", exited)]
    tasks = _store_rows(home, "SELECT name, state_name FROM task_runs")
    assert sorted(state for _, state in tasks) == ["Cancelled", "Cancelled"], tasks


def test_flowbook_importable_in_a_fresh_process_without_anyio_loaded() -> None:
    code = "import sys, flowbook; print('anyio' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
    assert flowbook.__name__ == "flowbook"
    assert task_input_hash is not None
