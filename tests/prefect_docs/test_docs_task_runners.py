"""docs/v3/concepts/task-runners.mdx, section by section.

Each test names the section of that page (PrefectHQ/prefect repository) whose documented
behaviour it checks. What tests/prefect_docs/test_task_runners.py already checks (max_workers
bounds, ProcessPoolTaskRunner in other processes, raise_on_failure on a process pool) is not
repeated here.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.futures import PrefectFuture, wait
from flowbook.task_runners import SequentialTaskRunner, ThreadPoolTaskRunner

PAGE = "docs/v3/concepts/task-runners.mdx"


@task
def _say_hello(name: str) -> str:
    return f"Hello {name}!"


@task
def _boom() -> None:
    raise ValueError("task failed on purpose")


def test_calling_a_task_runs_it_in_the_callers_thread_and_blocks() -> None:
    # task-runners.mdx, opening: "Calling a task function directly executes the function in
    # the main thread by default, blocking execution of its caller until the task completes"
    seen: list[str] = []

    @task
    def slow() -> str:
        time.sleep(0.05)
        seen.append("body")
        return threading.current_thread().name

    @flow
    def caller() -> tuple[str, str]:
        name = slow()
        seen.append("after")
        return name, threading.current_thread().name

    task_thread, flow_thread = caller()
    assert task_thread == flow_thread
    assert seen == ["body", "after"]


def test_the_default_runner_runs_submitted_tasks_concurrently_on_threads() -> None:
    # task-runners.mdx, "Available task runners": the default "runs tasks concurrently in
    # independent threads"
    @task
    def nap(x: int) -> str:
        time.sleep(0.2)
        return threading.current_thread().name

    @flow
    def elevator() -> tuple[list[str], str, float]:
        start = time.perf_counter()
        futures = [nap.submit(i) for i in range(4)]
        wait(futures)
        return (
            [f.result() for f in futures],
            threading.current_thread().name,
            (time.perf_counter() - start),
        )

    names, flow_thread, elapsed = elevator()
    assert flow_thread not in names
    assert len(set(names)) == 4
    assert elapsed < 0.6  # four 0.2 s sleeps at once, not one after the other


def test_the_default_runner_is_a_thread_pool_task_runner() -> None:
    # task-runners.mdx, "Available task runners": "The default task runner in Prefect is the
    # ThreadPoolTaskRunner"
    @flow
    def plain() -> None:
        pass

    assert isinstance(plain.task_runner, ThreadPoolTaskRunner)


def test_a_task_runner_is_configured_on_the_parent_flow() -> None:
    # task-runners.mdx, "Configure a task runner": "provide a task_runner keyword argument to
    # the parent flow"
    @task
    def thread_name() -> str:
        return threading.current_thread().name

    @flow(task_runner=SequentialTaskRunner())
    def in_order() -> tuple[str, str]:
        return thread_name.submit().result(), threading.current_thread().name

    ran_on, flow_thread = in_order()
    assert ran_on == flow_thread


def test_submit_returns_a_future_with_state_and_result() -> None:
    # task-runners.mdx, "Submit tasks to a task runner": ".submit() ... creates a
    # PrefectFuture", which gives "a reference to the result" and "a State"
    @flow
    def hello() -> tuple[bool, bool, str]:
        future = _say_hello.submit("Marvin")
        value = future.result()
        return isinstance(future, PrefectFuture), future.state.is_completed(), value

    assert hello() == (True, True, "Hello Marvin!")


def test_a_future_passed_to_a_task_arrives_as_its_value() -> None:
    # task-runners.mdx, "Submit tasks to a task runner": "the downstream task won't receive the
    # PrefectFuture you passed as an argument. Instead, the downstream task receives the value"
    received: list[Any] = []

    @task
    def print_result(result: Any) -> None:
        received.append(result)

    @flow(name="hello-flow")
    def hello_world() -> None:
        future = _say_hello.submit("Marvin")
        print_result.submit(future).wait()

    hello_world()
    assert received == ["Hello Marvin!"]
    assert type(received[0]) is str


def test_the_downstream_task_waits_for_the_upstream_one() -> None:
    # task-runners.mdx, "Submit tasks to a task runner": "Prefect automatically waits for the
    # 'upstream' task ... to reach a final state before starting the downstream task"
    order: list[str] = []

    @task
    def upstream() -> int:
        time.sleep(0.1)
        order.append("upstream done")
        return 1

    @task
    def downstream(x: int) -> int:
        order.append("downstream starts")
        return x + 1

    @flow
    def chain() -> int:
        return downstream.submit(upstream.submit()).result()

    assert chain() == 2
    assert order == ["upstream done", "downstream starts"]


def test_returning_terminal_futures_resolves_them() -> None:
    # task-runners.mdx, "Submit tasks to a task runner" (warning): terminal futures are
    # resolved by "returning the terminal futures from your flow or task"; dependencies
    # between futures are resolved when their dependents are
    done: list[str] = []

    @task
    def first() -> int:
        time.sleep(0.05)
        done.append("first")
        return 1

    @task
    def second(x: int) -> int:
        time.sleep(0.05)
        done.append("second")
        return x + 1

    @flow
    def returns_future() -> Any:
        return second.submit(first.submit())

    state = returns_future(return_state=True)
    assert state.is_completed()
    assert done == ["first", "second"]


def test_result_blocks_until_the_task_completes() -> None:
    # task-runners.mdx, "Access results from submitted tasks": ".result() method waits for the
    # task to complete"; "A few notes on .result()": ".result() is a blocking call"
    @task
    def my_task() -> int:
        time.sleep(0.1)
        return 42

    @flow
    def my_flow() -> tuple[bool, int, bool]:
        future = my_task.submit()
        before = future.state.is_final()
        result = future.result()
        return before, result, future.state.is_final()

    assert my_flow() == (False, 42, True)


def test_result_raises_the_task_runs_exception() -> None:
    # task-runners.mdx, "Access results from submitted tasks": "If the task run fails,
    # .result() will raise the task run's exception"
    @flow
    def my_flow() -> None:
        _boom.submit().result()

    with pytest.raises(ValueError, match="task failed on purpose"):
        my_flow()


def test_result_without_raising_gives_the_exception_and_a_failed_state() -> None:
    # task-runners.mdx, "Access results from submitted tasks": "Disable this behavior with the
    # raise_on_failure option"; "`result` is an exception! handle accordingly"
    @flow
    def my_flow() -> tuple[Any, bool]:
        future = _boom.submit()
        result = future.result(raise_on_failure=False)
        return result, future.state.is_failed()

    result, failed = my_flow(return_state=True).result(raise_on_failure=False)
    assert isinstance(result, ValueError)
    assert str(result) == "task failed on purpose"
    assert failed is True


def _nested_warnings(events: Any) -> list[Any]:
    from flowbook.engine.events import LogEmitted

    return [
        e.record
        for e in events.of(LogEmitted)
        if "worker threads" in e.record.getMessage() and e.record.levelname == "WARNING"
    ]


def test_blocking_on_a_child_task_in_a_full_pool_warns(events: Any) -> None:
    # task-runners.mdx, "Design considerations" 6: with a bounded ThreadPoolTaskRunner a parent
    # task blocked on a child's .result() can deadlock ("no thread is free to execute the
    # queued child tasks"); "Prefect emits a warning when it detects this condition", and
    # the remedy is "Increase max_workers above your deepest synchronous nesting level"
    @task
    def child(x: int) -> int:
        return x + 1

    @task
    def parent(x: int) -> int:
        return child.submit(x).result(timeout=0.3)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def nested() -> int:
        return parent.submit(1).result()

    state = nested(return_state=True)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), TimeoutError)
    (warning,) = _nested_warnings(events)
    message = warning.getMessage()
    assert "'parent-0'" in message
    assert "all 1 worker threads" in message
    assert "max_workers" in message
    assert warning.flowbook_run == "Task run 'parent-0'"  # logged on the parent task run

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def roomy() -> int:
        return parent.submit(1).result()

    assert roomy() == 2  # the remedy: more workers than the nesting depth
    assert len(_nested_warnings(events)) == 1  # no warning where a worker is free


def test_the_nested_submit_warning_comes_once_per_runner(events: Any) -> None:
    @task
    def child(x: int) -> int:
        return x

    @task
    def parent(x: int) -> list[int]:
        for i in range(3):
            child.submit(i)  # queued behind the busy pool (the flow waits for them)
        return [x]

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def twice() -> list[int]:
        first = parent.submit(1).result()
        second = parent.submit(2).result()
        return first + second

    assert twice() == [1, 2]
    assert len(_nested_warnings(events)) == 1


def test_a_flat_map_on_a_full_pool_does_not_warn(events: Any) -> None:
    # queueing behind busy workers is normal when the flow submits: only a task that submits
    # while holding a worker can deadlock
    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def flat() -> list[str]:
        return [f.result() for f in _say_hello.map([str(i) for i in range(50)])]

    assert len(flat()) == 50
    assert _nested_warnings(events) == []


def _add_to_path(*paths: str) -> None:
    import sys

    sys.path[:0] = paths


def test_process_pool_takes_an_initializer() -> None:
    # task-runners.mdx, "Configure a task runner": "The ProcessPoolTaskRunner also accepts
    # initializer and initargs parameters, mirroring ProcessPoolExecutor"
    from flowbook.task_runners import ProcessPoolTaskRunner

    runner = ProcessPoolTaskRunner(initializer=_add_to_path, initargs=("/opt/my_app/libs",))
    assert runner is not None
