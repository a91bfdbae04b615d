"""docs/v3/how-to-guides/workflows/test-workflows.mdx ("How to test workflows"): testing a
task's or flow's function with ``.fn()``, ``disable_run_logger``, and capturing run logs with
pytest's ``caplog``.

Each test names the section of the page (PrefectHQ/prefect repository) it follows. The page's
``prefect_test_harness`` (a temporary server and database) has no counterpart here: flowbook
needs no server to run flows.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

from flowbook import flow, get_run_logger, task
from flowbook.exceptions import MissingContextError
from flowbook.logging import disable_run_logger
from flowbook.runtime import flow_run, task_run

PAGE = "docs/v3/how-to-guides/workflows/test-workflows.mdx"


@task
def my_favorite_task() -> int:
    return 42


@flow
def my_favorite_flow() -> int:
    return my_favorite_task()


@task
def logging_task() -> int:
    get_run_logger().info("computing")
    return 42


# "Test the underlying function without the engine": "use .fn() to call the wrapped function
# directly"; "This bypasses state tracking" (no run: the runtime says so)
def test_fn_calls_the_function_without_a_run(events: Any) -> None:
    from flowbook.engine.events import FlowRunCreated, TaskRunCreated

    @task
    def where() -> tuple[Any, Any]:
        return task_run.id, flow_run.id

    assert my_favorite_task.fn() == 42
    assert my_favorite_flow.fn() == 42  # the flow's function calls the task: that one runs
    assert where.fn() == (None, None)
    assert events.of(FlowRunCreated) == []
    assert [e.task_run.task_name for e in events.of(TaskRunCreated)] == ["my_favorite_task"]


# "This bypasses ... retries": a failing function called with .fn() runs once and raises
def test_fn_does_not_retry() -> None:
    calls: list[int] = []

    @task(retries=3)
    def flaky() -> None:
        calls.append(1)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        flaky.fn()
    assert calls == [1]


# "If your flow or task calls get_run_logger(), calling .fn() outside of a run context raises
# a MissingContextError"
def test_fn_of_a_task_that_logs_raises_missing_context() -> None:
    with pytest.raises(
        MissingContextError,
        match=re.escape("get_run_logger() was called outside a flow or task run"),
    ) as info:
        logging_task.fn()
    assert "disable_run_logger()" in str(info.value)  # the message names the way out


# "Disable the run logger to avoid this": with disable_run_logger(): my_task.fn() works, and
# the logger it gets drops its records
def test_disable_run_logger_lets_fn_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with disable_run_logger():
        assert logging_task.fn() == 42
        logger = get_run_logger()
        logger.warning("dropped")
    assert "computing" not in caplog.messages
    assert "dropped" not in caplog.messages
    # and outside the block, the error again
    with pytest.raises(MissingContextError):
        logging_task.fn()


# ("Troubleshoot common issues", MissingContextError from get_run_logger): the same with a
# flow's function
def test_disable_run_logger_for_a_flows_function() -> None:
    @flow
    def logging_flow(x: int) -> int:
        get_run_logger().info("flow computing")
        return x * 2

    with disable_run_logger():
        assert logging_flow.fn(4) == 8


# disable_run_logger leaves the run loggers as it found them, also when the block raises
def test_disable_run_logger_restores_the_loggers() -> None:
    flow_logger = logging.getLogger("flowbook.flow_runs")
    task_logger = logging.getLogger("flowbook.task_runs")
    assert not flow_logger.disabled
    assert not task_logger.disabled
    seen: list[bool] = []

    def fails_inside() -> None:
        with disable_run_logger():
            seen.extend([flow_logger.disabled, task_logger.disabled])
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fails_inside()
    assert seen == [True, True]
    assert not flow_logger.disabled
    assert not task_logger.disabled
    task_logger.disabled = True
    try:
        with disable_run_logger():
            pass
        assert task_logger.disabled
        assert not flow_logger.disabled
    finally:
        task_logger.disabled = False


# "Capture log output in tests": caplog captures what a flow and its task log with
# get_run_logger()
def test_caplog_captures_flow_and_task_logs(caplog: pytest.LogCaptureFixture) -> None:
    @task
    def log_message() -> None:
        get_run_logger().info("Logging from task")

    @flow
    def parent_flow() -> None:
        get_run_logger().info("Logging from flow")
        log_message()

    caplog.set_level(logging.INFO)
    parent_flow()
    assert "Logging from flow" in caplog.messages
    assert "Logging from task" in caplog.messages


# the page's note: "If you disable the run logger with disable_run_logger(), caplog does not
# capture any log output from flows or tasks"
def test_caplog_captures_nothing_from_runs_inside_disable_run_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @task
    def log_message() -> int:
        get_run_logger().info("Logging from task")
        return 1

    @flow
    def parent_flow() -> int:
        get_run_logger().info("Logging from flow")
        return log_message()

    caplog.set_level(logging.INFO)
    with disable_run_logger():
        assert parent_flow() == 1
    assert "Logging from flow" not in caplog.messages
    assert "Logging from task" not in caplog.messages


# "Test async flows and tasks": "You can also use .fn() for async functions"
def test_fn_of_an_async_task() -> None:
    @task
    async def fetch_data() -> dict[str, str]:
        return {"key": "value"}

    @flow
    async def my_async_flow() -> str:
        return "async result"

    assert asyncio.run(fetch_data.fn()) == {"key": "value"}
    assert asyncio.run(my_async_flow()) == "async result"
