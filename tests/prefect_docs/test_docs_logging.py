"""docs/v3/how-to-guides/workflows/add-logging.mdx ("How to add logging to a workflow"),
section by section: get_run_logger, get_logger, log_prints and its inheritance, logging from
threads and subprocesses. Plus "Include logs from other libraries" of
docs/v3/advanced/logging-customization.mdx.

Logging from state hooks (flow_run_logger, task_run_logger) is in test_state_hooks.py.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from typing import Any

import pytest

from flowbook import flow, get_run_logger, task
from flowbook.engine.events import FlowRunCreated, LogEmitted, TaskRunCreated
from flowbook.exceptions import MissingContextError


def _messages(events: Any) -> dict[str, LogEmitted]:
    return {e.record.getMessage(): e for e in events.of(LogEmitted)}


# add-logging.mdx "Emit custom logs": a task's logger emits logs "associated with both the
# flow run *and* the individual task run"; a flow's "with the flow run only"
def test_run_loggers_associate_records_with_their_runs(events: Any) -> None:
    @task(name="log-example-task")
    def logger_task() -> None:
        logger = get_run_logger()
        logger.info("INFO level log message from a task.")

    @flow(name="log-example-flow")
    def logger_flow() -> None:
        logger = get_run_logger()
        logger.info("INFO level log message.")
        logger_task()

    logger_flow()
    flow_run = events.of(FlowRunCreated)[0].flow_run
    task_run = events.of(TaskRunCreated)[0].task_run
    lines = _messages(events)
    from_flow = lines["INFO level log message."]
    assert (from_flow.flow_run_id, from_flow.task_run_id) == (flow_run.id, None)
    from_task = lines["INFO level log message from a task."]
    assert (from_task.flow_run_id, from_task.task_run_id) == (flow_run.id, task_run.id)


# add-logging.mdx "Emit custom logs": the logger supports "the standard Python logging
# methods"; with the default level (INFO) DEBUG lines are dropped
def test_standard_logging_methods_and_levels(events: Any) -> None:
    @flow
    def logger_flow() -> None:
        logger = get_run_logger()
        logger.info("INFO level log message.")
        logger.debug("DEBUG level log message.")
        logger.warning("WARNING level log message.")
        logger.error("ERROR level log message.")
        logger.critical("CRITICAL level log message.")
        logger.log(logging.ERROR, "log() with a level")
        try:
            raise ValueError("caught")
        except ValueError:
            logger.exception("exception() with the traceback")

    logger_flow()
    levels = {m: e.record.levelname for m, e in _messages(events).items()}
    assert levels["INFO level log message."] == "INFO"
    assert levels["WARNING level log message."] == "WARNING"
    assert levels["ERROR level log message."] == "ERROR"
    assert levels["CRITICAL level log message."] == "CRITICAL"
    assert levels["log() with a level"] == "ERROR"
    assert "DEBUG level log message." not in levels
    exc_record = _messages(events)["exception() with the traceback"].record
    assert exc_record.exc_info is not None


# add-logging.mdx (Warning): "get_run_logger() can only be used in the context of a flow or
# task run. Calling it outside that context ... raises a MissingContextError."
def test_get_run_logger_outside_a_run_raises() -> None:
    with pytest.raises(MissingContextError, match="outside a flow or task run"):
        get_run_logger()


# add-logging.mdx (Warning): "To use a normal Python logger anywhere with your same
# configuration, use get_logger() ... will not send log records to the Prefect API" (not tied
# to any run)
def test_get_logger_works_anywhere_and_belongs_to_no_run(events: Any) -> None:
    from flowbook.logging import get_logger

    plain = get_logger()
    assert isinstance(plain, logging.Logger)
    assert plain.name == "flowbook"
    assert get_logger("mine").name == "flowbook.mine"
    plain.info("outside any run")

    @flow
    def main() -> None:
        get_logger("mine").info("inside a run, still no run")

    main()
    lines = _messages(events)
    for text in ("outside any run", "inside a run, still no run"):
        assert (lines[text].flow_run_id, lines[text].task_run_id) == (None, None)


# how it fails: get_logger() takes a name
def test_get_logger_refuses_a_name_that_is_not_a_string() -> None:
    from flowbook.logging import get_logger

    with pytest.raises(TypeError, match="not 42"):
        get_logger(42)  # type: ignore[arg-type]


# add-logging.mdx "Log with print statements": log_prints=True on the flow logs the prints of
# the flow and, inherited, of its tasks
def test_log_prints_is_inherited_by_tasks(events: Any, capsys: pytest.CaptureFixture[str]) -> None:
    @task
    def my_task() -> None:
        print("we're logging print statements from a task")

    @flow(log_prints=True)
    def my_flow() -> None:
        print("we're logging print statements from a flow")
        my_task()

    my_flow()
    lines = _messages(events)
    assert "we're logging print statements from a flow" in lines
    from_task = lines["we're logging print statements from a task"]
    assert from_task.task_run_id is not None
    assert "statements from a task" not in capsys.readouterr().out


# add-logging.mdx "Log with print statements": "inherited by default by nested flow runs"
def test_log_prints_is_inherited_by_nested_flows(events: Any) -> None:
    @flow
    def child() -> None:
        print("from the nested flow")

    @flow(log_prints=True)
    def parent() -> None:
        child()

    parent()
    assert "from the nested flow" in _messages(events)


# add-logging.mdx "Log with print statements": "To opt out ... set log_prints=False on the
# child flow or task"
def test_log_prints_false_on_a_task_opts_out(
    events: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    @task(log_prints=False)
    def my_task() -> None:
        print("not logging print statements in this task")

    @flow(log_prints=False)
    def quiet_child() -> None:
        print("not logging in this child flow")

    @flow(log_prints=True)
    def my_flow() -> None:
        print("we're logging print statements from a flow")
        my_task()
        quiet_child()

    my_flow()
    lines = _messages(events)
    assert "we're logging print statements from a flow" in lines
    assert "not logging print statements in this task" not in lines
    assert "not logging in this child flow" not in lines
    out = capsys.readouterr().out
    assert "not logging print statements in this task" in out
    assert "not logging in this child flow" in out


# add-logging.mdx "Log with print statements": without log_prints, print() prints
def test_without_log_prints_print_is_print(events: Any, capsys: pytest.CaptureFixture[str]) -> None:
    @flow
    def plain() -> None:
        print("just printed")

    plain()
    assert "just printed" in capsys.readouterr().out
    assert "just printed" not in _messages(events)


# add-logging.mdx "Log with print statements": the default for all runs from the
# PREFECT_LOGGING_LOG_PRINTS setting
def test_log_prints_default_from_a_setting(events: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from flowbook.settings import reload_settings

    monkeypatch.setenv("FLOWBOOK_LOGGING_LOG_PRINTS", "true")
    monkeypatch.setenv("PREFECT_LOGGING_LOG_PRINTS", "true")
    reload_settings()

    @flow
    def plain() -> None:
        print("captured by the setting")

    plain()
    assert "captured by the setting" in _messages(events)


# add-logging.mdx "Log from threads": a raw thread has no run context (get_run_logger raises
# MissingContextError); with contextvars.copy_context() and ctx.run(...) it logs to the run
def test_threads_log_to_the_run_with_a_copied_context(events: Any) -> None:
    def process_single_file(path: str) -> str:
        get_run_logger().info(f"Processing {path}")
        return path

    @task
    def process_files(files: list[str]) -> list[str]:
        contexts = [copy_context() for _ in files]
        with ThreadPoolExecutor(max_workers=4) as executor:
            return list(
                executor.map(lambda ctx, f: ctx.run(process_single_file, f), contexts, files)
            )

    @task
    def without_context() -> str:
        with ThreadPoolExecutor(max_workers=1) as executor:
            try:
                executor.submit(process_single_file, "x").result()
            except MissingContextError:
                return "missing"
        return "found"

    @flow
    def my_flow() -> str:
        process_files(["file1.txt", "file2.txt", "file3.txt"])
        return without_context()

    assert my_flow() == "missing"
    task_run = events.of(TaskRunCreated)[0].task_run
    lines = _messages(events)
    for name in ("file1.txt", "file2.txt", "file3.txt"):
        assert lines[f"Processing {name}"].task_run_id == task_run.id


# add-logging.mdx "Log from subprocesses": with_context(fn) carries the run context into
# multiprocessing workers
def test_with_context_carries_the_run_into_subprocesses() -> None:
    # what it does in processes: tests/prefect_docs/test_with_context.py
    from flowbook.context import with_context

    assert callable(with_context)


# docs/v3/advanced/logging-customization.mdx "Include logs from other libraries":
# PREFECT_LOGGING_EXTRA_LOGGERS=dask,scipy makes those libraries' records run logs
def test_extra_loggers_are_included(events: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from flowbook.settings import reload_settings

    monkeypatch.setenv("FLOWBOOK_LOGGING_EXTRA_LOGGERS", "some_library")
    monkeypatch.setenv("PREFECT_LOGGING_EXTRA_LOGGERS", "some_library")
    reload_settings()

    @flow
    def main() -> None:
        logging.getLogger("some_library").warning("from the library")

    main()
    assert "from the library" in _messages(events)
