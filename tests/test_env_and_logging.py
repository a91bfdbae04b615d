"""``@flow(env=...)``, run loggers, the console, ``log_prints`` and running with no subscriber."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flowbook import flow, get_run_logger, task
from flowbook.engine.events import FlowRunCreated, LogEmitted, TaskRunCreated, bus
from flowbook.exceptions import EnvConflictError
from flowbook.settings import reload_settings

VAR = "FLOWBOOK_TEST_SHARED_VAR"
STAMP = r"\d\d:\d\d:\d\d\.\d{3}"


@pytest.fixture
def no_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VAR, raising=False)


def _run_in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def body() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    return thread, outcome


# -- env -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_var")
def test_conflicting_env_values_fail_the_second_flow_at_its_start() -> None:
    started, release = threading.Event(), threading.Event()
    second_ran = []

    @flow(name="holder", flow_run_name="holding-run", env={VAR: "one"})
    def holder() -> str | None:
        started.set()
        release.wait(1)
        return os.environ.get(VAR)

    @flow(name="intruder", flow_run_name="intruding-run", env={VAR: "two"})
    def intruder() -> None:
        second_ran.append(os.environ.get(VAR))

    thread, outcome = _run_in_thread(holder)
    try:
        assert started.wait(1)
        with pytest.raises(EnvConflictError) as info:
            intruder()
        during = os.environ.get(VAR)
    finally:
        release.set()
        thread.join(2)
    assert str(info.value) == (
        f"flow run 'intruding-run' of flow 'intruder' sets environment variable {VAR}='two', "
        f"but flow run 'holding-run' of flow 'holder' is running in this process with "
        f"{VAR}='one'; the environment is shared by the whole process, so run these flows one "
        "after the other, or pass the value as a parameter"
    )
    assert second_ran == []
    assert during == "one"
    assert outcome == ["one"]
    assert VAR not in os.environ


@pytest.mark.usefixtures("no_var")
def test_conflicting_flow_ends_failed(events: Any) -> None:
    started, release = threading.Event(), threading.Event()

    @flow(env={VAR: "one"})
    def holder() -> None:
        started.set()
        release.wait(1)

    @flow(flow_run_name="second-run", env={VAR: "two"})
    def intruder() -> None:
        pass

    thread, _ = _run_in_thread(holder)
    try:
        assert started.wait(1)
        with pytest.raises(EnvConflictError, match=re.escape(f"{VAR}='two'")):
            intruder()
    finally:
        release.set()
        thread.join(2)
    assert events.states("second-run") == ["Pending", "Failed"]


@pytest.mark.usefixtures("no_var")
def test_same_env_value_in_overlapping_flows_is_fine() -> None:
    started, release = threading.Event(), threading.Event()

    @flow(env={VAR: "same"})
    def first() -> str | None:
        started.set()
        release.wait(1)
        return os.environ.get(VAR)

    @flow(env={VAR: "same"})
    def second() -> str | None:
        return os.environ.get(VAR)

    thread, outcome = _run_in_thread(first)
    try:
        assert started.wait(1)
        assert second() == "same"
        # the first run still holds the variable after the second one ended
        assert os.environ.get(VAR) == "same"
    finally:
        release.set()
        thread.join(2)
    assert outcome == ["same"]
    assert VAR not in os.environ


def test_env_is_restored_after_a_failing_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, "before")
    seen = []

    @flow(env={VAR: "during"})
    def failing() -> None:
        seen.append(os.environ.get(VAR))
        raise RuntimeError("flow body failed")

    with pytest.raises(RuntimeError, match="flow body failed"):
        failing()
    assert seen == ["during"]
    assert os.environ[VAR] == "before"


@pytest.mark.usefixtures("no_var")
def test_env_is_removed_after_a_failing_flow_when_it_was_unset() -> None:
    @flow(env={VAR: "during"})
    def failing() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing()
    assert VAR not in os.environ


@pytest.mark.usefixtures("no_var")
def test_tasks_on_worker_threads_see_the_env() -> None:
    @task
    def read(_: int) -> tuple[str | None, str]:
        return os.environ.get(VAR), threading.current_thread().name

    @flow(env={VAR: "visible"})
    def reading() -> list[tuple[str | None, str]]:
        return read.map(range(4)).result()

    results = reading()
    assert [value for value, _ in results] == ["visible"] * 4
    assert all(name.startswith("flowbook-task") for _, name in results)
    assert VAR not in os.environ


# -- run loggers and the console -------------------------------------------------------------


def test_run_logger_lines_in_the_console(capsys: pytest.CaptureFixture[str]) -> None:
    @task
    def working() -> int:
        get_run_logger().info("hello from the task")
        return 1

    @flow(flow_run_name="logging-run")
    def logging_flow() -> int:
        get_run_logger().info("hello from the flow")
        return working()

    assert logging_flow() == 1
    err = capsys.readouterr().err
    assert re.search(
        rf"^{STAMP} \| INFO    \| Flow run 'logging-run' - hello from the flow$", err, re.M
    )
    assert re.search(
        rf"^{STAMP} \| INFO    \| Task run 'working-0' - hello from the task$", err, re.M
    )
    assert re.search(
        rf"^{STAMP} \| INFO    \| Task run 'working-0' - Finished in state Completed\(\)$",
        err,
        re.M,
    )


def test_log_events_carry_the_run_ids(events: Any) -> None:
    @task
    def working() -> None:
        get_run_logger().warning("task says")

    @flow
    def logging_flow() -> None:
        get_run_logger().info("flow says")
        working.submit().wait()

    logging_flow()
    flow_run_id = events.of(FlowRunCreated)[0].flow_run.id
    task_run_id = events.of(TaskRunCreated)[0].task_run.id
    logs = {e.record.getMessage(): e for e in events.of(LogEmitted)}
    assert (logs["flow says"].flow_run_id, logs["flow says"].task_run_id) == (flow_run_id, None)
    assert (logs["task says"].flow_run_id, logs["task says"].task_run_id) == (
        flow_run_id,
        task_run_id,
    )
    assert logs["task says"].record.levelname == "WARNING"


def test_warning_level_hides_info_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOWBOOK_LOGGING_LEVEL", "WARNING")
    reload_settings()
    try:

        @task
        def broken() -> None:
            raise ValueError("task broke")

        @task
        def fine() -> None:
            get_run_logger().info("info from a task")
            get_run_logger().warning("warning from a task")

        @flow(flow_run_name="quiet-run")
        def quiet() -> None:
            get_run_logger().info("info from the flow")
            fine()
            broken()

        with pytest.raises(ValueError, match="task broke"):
            quiet()
    finally:
        monkeypatch.delenv("FLOWBOOK_LOGGING_LEVEL")
        reload_settings()
    err = capsys.readouterr().err
    assert "| INFO    |" not in err
    assert "info from" not in err
    assert "Created flow run" not in err
    assert "Finished in state Completed()" not in err
    assert re.search(rf"^{STAMP} \| WARNING \| Task run 'fine-0' - warning from a task$", err, re.M)
    assert re.search(
        rf"^{STAMP} \| ERROR   \| Task run 'broken-0' - Task run failed with exception: "
        r"ValueError\('task broke'\)$",
        err,
        re.M,
    )


def test_console_off_prints_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    reload_settings()

    @task
    def broken() -> None:
        get_run_logger().error("about to break")
        raise ValueError("task broke")

    @flow
    def silent() -> None:
        get_run_logger().info("info from the flow")
        broken()

    with pytest.raises(ValueError, match="task broke"):
        silent()
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


# -- log_prints ------------------------------------------------------------------------------


def test_log_prints_turns_task_prints_into_log_lines(
    capsys: pytest.CaptureFixture[str], events: Any
) -> None:
    @task
    def chatty(i: int) -> int:
        print("hello from chatty", i)
        return threading.get_ident()

    @flow(log_prints=True)
    def printing() -> list[int]:
        return chatty.map(range(3)).result()

    idents = printing()
    assert threading.get_ident() not in idents
    out, err = capsys.readouterr()
    assert "hello from chatty" not in out
    for i in range(3):
        assert re.search(
            rf"^{STAMP} \| INFO    \| Task run 'chatty-{i}' - hello from chatty {i}$", err, re.M
        )
    task_ids = {e.task_run.name: e.task_run.id for e in events.of(TaskRunCreated)}
    by_message = {e.record.getMessage(): e.task_run_id for e in events.of(LogEmitted)}
    assert by_message["hello from chatty 0"] == task_ids["chatty-0"]


def test_task_with_log_prints_false_prints_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    @task(log_prints=False)
    def plain() -> None:
        print("plain print")

    @task
    def captured() -> None:
        print("captured print")

    @flow(log_prints=True)
    def printing() -> None:
        plain.submit().wait()
        captured.submit().wait()

    printing()
    out, err = capsys.readouterr()
    assert out == "plain print\n"
    assert "plain print" not in err
    assert re.search(r"\| INFO    \| Task run 'captured-0' - captured print$", err, re.M)


def test_print_to_stderr_is_never_captured(capsys: pytest.CaptureFixture[str]) -> None:
    @task
    def to_stderr() -> None:
        print("straight to stderr", file=sys.stderr)

    @flow(log_prints=True)
    def printing() -> None:
        to_stderr.submit().wait()
        print("flow body to stderr", file=sys.stderr)

    printing()
    out, err = capsys.readouterr()
    assert out == ""
    assert re.search(r"^straight to stderr$", err, re.M)
    assert re.search(r"^flow body to stderr$", err, re.M)
    assert "- straight to stderr" not in err
    assert "- flow body to stderr" not in err


def test_print_outside_runs_is_normal_after_capture(capsys: pytest.CaptureFixture[str]) -> None:
    @flow(log_prints=True)
    def printing() -> None:
        print("inside")

    printing()
    capsys.readouterr()
    print("outside", "a run", sep="-", end="!\n")
    print("to stderr", file=sys.stderr)
    out, err = capsys.readouterr()
    assert out == "outside-a run!\n"
    assert err == "to stderr\n"


def test_print_in_a_flow_without_log_prints_after_capture(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @flow(log_prints=True)
    def capturing() -> None:
        print("captured")

    @flow
    def plain() -> None:
        print("not captured")

    capturing()
    plain()
    out, err = capsys.readouterr()
    assert out == "not captured\n"
    assert re.search(r"\| INFO    \| Flow run '[^']+' - captured$", err, re.M)


# -- no subscriber ---------------------------------------------------------------------------


@pytest.fixture
def no_subscribers() -> Iterator[None]:
    saved = dict(bus._subscribers)
    bus._subscribers.clear()
    try:
        yield
    finally:
        bus._subscribers.clear()
        bus._subscribers.update(saved)


@pytest.mark.usefixtures("no_subscribers")
def test_engine_runs_with_no_subscriber(capsys: pytest.CaptureFixture[str]) -> None:
    seen_subscribers = []

    @task
    def square(x: int) -> int:
        return x * x

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    @flow
    def pipeline(n: int) -> tuple[list[int], int]:
        seen_subscribers.append(dict(bus._subscribers))
        squares = square.map(range(n))
        return squares.result(), total.submit(list(squares)).result()

    assert pipeline(5) == ([0, 1, 4, 9, 16], 30)
    assert seen_subscribers == [{}]
    assert capsys.readouterr().err == ""
