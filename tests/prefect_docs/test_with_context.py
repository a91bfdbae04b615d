"""flowbook.context.with_context: the run's context carried into processes the user starts.

Follows docs/v3/how-to-guides/workflows/add-logging.mdx, "Log from subprocesses" (Prefect's
``prefect.context.with_context``, src/prefect/context.py): "Logs emitted with
get_run_logger() in the child process are associated with the parent flow run and task run";
"with_context also works with concurrent.futures.ProcessPoolExecutor and
multiprocessing.Process"; without it the child has no run context (MissingContextError).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

import flowbook
from flowbook import flow, get_run_logger, task
from flowbook.context import with_context
from flowbook.engine.events import LogEmitted, TaskRunCreated
from flowbook.exceptions import MissingContextError

_FORK = multiprocessing.get_context("fork")


def _logs(events: Any) -> dict[str, LogEmitted]:
    return {e.record.getMessage(): e for e in events.of(LogEmitted)}


def _task_run_id(events: Any, name: str) -> str:
    return next(e.task_run.id for e in events.of(TaskRunCreated) if e.task_run.name == name)


# functions the child processes run (module level: a spawned process imports them)
def _process_item(item: int) -> int:
    get_run_logger().info(f"processing {item} in {os.getpid()}")
    return item * 2


def _what_the_child_sees(_: object) -> dict[str, Any]:
    from flowbook.runtime import flow_run, task_run

    return {
        "pid": os.getpid(),
        "flow_run_name": flow_run.name,
        "flow_name": flow_run.flow_name,
        "parameters": flow_run.parameters,
        "task_run_name": task_run.name,
        "task_run_id": task_run.id,
        "run_count": task_run.run_count,
        "context_flow_name": flowbook.context.get("flow_name"),
        "context_value": flowbook.context.get("mine"),
        "task_tags": flowbook.context.get("task_tags"),
    }


def _fails(item: int) -> None:
    get_run_logger().warning(f"about to fail on {item}")
    raise ValueError(f"bad item {item}")


def _logger_outside_runs(_: object) -> str:
    try:
        get_run_logger()
    except MissingContextError as exc:
        return str(exc)
    return "no error"


# "Log from subprocesses": logs from a multiprocessing.Pool worker belong to the task run
def test_pool_workers_log_to_the_task_run(events: Any) -> None:
    @task(task_run_name="parallel")
    def parallel(items: list[int]) -> list[int]:
        with _FORK.Pool(2) as pool:
            return pool.map(with_context(_process_item), items)

    @flow(flow_run_name="with-context-pool")
    def main() -> list[int]:
        return parallel([1, 2, 3])

    assert main() == [2, 4, 6]
    logs = {m: e for m, e in _logs(events).items() if m.startswith("processing")}
    assert len(logs) == 3  # all handled by the time the pool's map returned
    task_run_id = _task_run_id(events, "parallel")
    for message, event in logs.items():
        assert int(message.rsplit(" ", 1)[1]) != os.getpid()  # logged in another process
        assert event.task_run_id == task_run_id
        assert event.flow_run_id is not None


# "with_context also works with concurrent.futures.ProcessPoolExecutor": a spawned process
# (it starts from nothing: no store, no console of its own)
def test_process_pool_executor_with_spawned_processes(events: Any) -> None:
    @flow(flow_run_name="with-context-spawn")
    def main() -> list[int]:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            return list(pool.map(with_context(_process_item), [5]))

    assert main() == [10]
    (event,) = [e for m, e in _logs(events).items() if m.startswith("processing 5")]
    assert event.task_run_id is None  # logged from the flow run itself
    assert event.flow_run_id is not None
    assert event.record.name == "flowbook.flow_runs"


# "... and multiprocessing.Process"
def test_a_process_started_by_hand(events: Any) -> None:
    @task(task_run_name="by-hand")
    def by_hand() -> int:
        child = _FORK.Process(target=with_context(_process_item), args=(7,))
        child.start()
        child.join(30)
        return child.exitcode or 0

    @flow
    def main() -> int:
        return by_hand()

    assert main() == 0
    (event,) = [e for m, e in _logs(events).items() if m.startswith("processing 7")]
    assert event.task_run_id == _task_run_id(events, "by-hand")


# the context, not only the logger: flowbook.runtime and flowbook.context answer in the child
def test_runtime_and_context_answer_in_the_child() -> None:
    @task(task_run_name="look", tags=["t1"])
    def look() -> dict[str, Any]:
        with flowbook.context(mine="own value"), _FORK.Pool(1) as pool:
            (seen,) = pool.map(with_context(_what_the_child_sees), [None])
        return seen

    @flow(flow_run_name="seen-run")
    def seen_flow(n: int) -> dict[str, Any]:
        return look()

    seen = seen_flow(3)
    assert seen["pid"] != os.getpid()
    assert seen["flow_run_name"] == "seen-run"
    assert seen["flow_name"] == "seen-flow"
    assert seen["parameters"] == {"n": 3}
    assert seen["task_run_name"] == "look"
    assert seen["run_count"] == 1
    assert seen["context_flow_name"] == "seen-flow"
    assert seen["context_value"] == "own value"
    assert seen["task_tags"] == {"t1"}


# called in the process that made it (a thread of one's own), the wrapper runs in the real
# context: the docs' "Log from threads" result, through with_context
def test_in_the_same_process_it_runs_in_the_real_context(events: Any) -> None:
    @task(task_run_name="threads")
    def threads() -> list[int]:
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(with_context(_process_item), [1, 2]))

    @flow
    def main() -> list[int]:
        return threads()

    assert main() == [2, 4]
    logs = [e for m, e in _logs(events).items() if m.startswith("processing")]
    assert len(logs) == 2
    assert {e.task_run_id for e in logs} == {_task_run_id(events, "threads")}


# how it fails: the function raises in the child; its exception reaches the task, and the
# logs before it still belong to the run
def test_an_exception_in_the_child_reaches_the_task(events: Any) -> None:
    @task(task_run_name="failing", retries=0)
    def failing() -> None:
        with _FORK.Pool(1) as pool:
            pool.map(with_context(_fails), [4])

    @flow
    def main() -> None:
        failing()

    with pytest.raises(ValueError, match="bad item 4"):
        main()
    event = _logs(events)["about to fail on 4"]
    assert event.task_run_id == _task_run_id(events, "failing")


# how it fails: with_context outside any run carries nothing: the child has no run context
def test_outside_runs_the_child_has_no_run_context() -> None:
    with _FORK.Pool(1) as pool:
        (message,) = pool.map(with_context(_logger_outside_runs), [None])
    assert "outside a flow or task run" in message


# how it fails: something that is not a function
def test_with_context_takes_a_function() -> None:
    with pytest.raises(TypeError, match=r"with_context\(\) takes the function .* not 42"):
        with_context(42)  # type: ignore[arg-type]


# a parameter that cannot be pickled stays behind; the others travel
def test_an_unpicklable_parameter_is_left_out() -> None:
    @flow
    def main(lock: Any, n: int) -> dict[str, Any]:
        wrapped = with_context(_what_the_child_sees)
        pickle.dumps(wrapped)  # the standard pickler, as multiprocessing uses
        with _FORK.Pool(1) as pool:
            (seen,) = pool.map(wrapped, [None])
        return seen

    seen = main(threading.Lock(), 2)
    assert seen["parameters"] == {"n": 2}
