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
import flowbook.runs
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


# a copy of the wrapper made in the process that made it (pickle, copy.deepcopy, an
# in-process executor) still logs to its run, and leaves this process's logging as it was
@pytest.mark.parametrize("copy_of", ["pickle", "deepcopy"])
def test_a_copy_in_the_same_process_logs_to_its_run(events: Any, copy_of: str) -> None:
    import copy
    import logging

    from flowbook import logging as fb_logging

    @task(task_run_name="copied")
    def copied() -> int:
        wrapped = with_context(_process_item)
        again = (
            pickle.loads(pickle.dumps(wrapped)) if copy_of == "pickle" else copy.deepcopy(wrapped)
        )
        result = again(3)
        get_run_logger().info("after the copy, in the task")
        return result

    @flow(flow_run_name="copied-run")
    def main() -> int:
        result = copied()
        get_run_logger().info("after the copy, in the flow")
        return result

    assert main() == 6
    assert main() == 6  # a second run logs too
    logs = events.of(LogEmitted)
    in_copy = [e for e in logs if e.record.getMessage() == f"processing 3 in {os.getpid()}"]
    assert len(in_copy) == 2
    copied_ids = {e.task_run.id for e in events.of(TaskRunCreated) if e.task_run.name == "copied"}
    assert len(copied_ids) == 2
    assert {e.task_run_id for e in in_copy} == copied_ids
    messages = [e.record.getMessage() for e in logs]
    assert messages.count("after the copy, in the task") == 2
    assert messages.count("after the copy, in the flow") == 2
    assert fb_logging._bridge in logging.getLogger("flowbook").handlers


# the preparation of another process never runs in the one that made the wrapper
def test_the_process_that_made_the_wrapper_is_never_prepared() -> None:
    import logging

    from flowbook import _carried_context
    from flowbook import logging as fb_logging

    @flow
    def main() -> None:
        _carried_context._prepare_process(with_context(_process_item)._picture)

    main()
    handlers = logging.getLogger("flowbook").handlers
    assert fb_logging._bridge in handlers
    assert not any(isinstance(h, _carried_context._ForwardingHandler) for h in handlers)


def _child_with_its_own_output(out_dir: str) -> int:
    """Sends the child's own stdout and stderr to files, then logs, prints and logs through
    another library's logger."""
    import logging
    import sys

    for fd, name in ((1, "stdout"), (2, "stderr")):
        handle = os.open(os.path.join(out_dir, name), os.O_WRONLY | os.O_CREAT)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(handle, fd)
    get_run_logger().info("run logger in the child")
    print("printed in the child")
    logging.getLogger("some_library").warning("some library in the child")
    sys.stdout.flush()
    sys.stderr.flush()
    return os.getpid()


# FLOWBOOK_LOGGING_EXTRA_LOGGERS ("Include logs from other libraries",
# docs/v3/advanced/logging-customization.mdx) and log_prints (docs/v3/how-to-guides/workflows/
# add-logging.mdx, "Log print statements") in a with_context child: their records travel back
# like the run logger's, forked or spawned; the child neither prints them nor writes the store
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_extra_loggers_and_prints_in_the_child_travel_back(
    events: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, method: str
) -> None:
    from flowbook.settings import reload_settings

    monkeypatch.setenv("FLOWBOOK_LOGGING_EXTRA_LOGGERS", "some_library")
    reload_settings()

    @task(task_run_name="child-output", log_prints=True)
    def child_output() -> int:
        child = multiprocessing.get_context(method).Process(
            target=with_context(_child_with_its_own_output), args=(str(tmp_path),)
        )
        child.start()
        child.join(60)
        return child.exitcode if child.exitcode is not None else -1

    @flow
    def main() -> int:
        return child_output()

    assert main() == 0
    expected = ["run logger in the child", "printed in the child", "some library in the child"]
    task_run_id = _task_run_id(events, "child-output")
    logs = _logs(events)
    for message in expected:
        assert logs[message].task_run_id == task_run_id
    flow_run_id = logs[expected[0]].flow_run_id
    stored = [log["message"] for log in flowbook.runs.get(flow_run_id).logs]
    assert set(expected) <= set(stored)
    child_said = (tmp_path / "stdout").read_text() + (tmp_path / "stderr").read_text()
    for message in expected:
        assert message not in child_said


# the child's task run belongs to the flow run the child sees, parameters restored
def _task_runs_flow_run(_: object) -> tuple[Any, bool]:
    from flowbook.engine.runs import current_flow_run, current_task_run

    task_run = current_task_run.get()
    assert task_run is not None
    return task_run.flow_run.parameters, task_run.flow_run is current_flow_run.get()


def test_the_child_task_runs_flow_run_is_the_restored_one() -> None:
    @task
    def look(y: int) -> tuple[Any, bool]:
        with _FORK.Pool(1) as pool:
            (seen,) = pool.map(with_context(_task_runs_flow_run), [None])
        return seen

    @flow
    def main(n: int) -> tuple[Any, bool]:
        return look(n + 1)

    assert main(3) == ({"n": 3}, True)
