"""docs/v3/how-to-guides/workflows/write-and-run.mdx, section by section: defining and running
a workflow, tasks and child workflows, timeouts, and the flow and task settings tables.

Method and generator flows are in test_parameters.py and test_final_states.py,
validate_parameters in test_parameters.py, tags in test_api_small.py, the cache settings in
test_caching.py.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import random
import threading
import time
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.engine.events import FlowRunCreated, LogEmitted, TaskRunCreated
from flowbook.runtime import flow_run as runtime_flow_run
from flowbook.runtime import task_run as runtime_task_run
from flowbook.task_runners.thread_pool import ThreadPoolTaskRunner


# write-and-run.mdx "Define a workflow": @flow makes a workflow; calling it runs it
def test_define_and_run_a_workflow() -> None:
    @flow
    def my_workflow() -> str:
        return "Hello, world!"

    assert my_workflow() == "Hello, world!"


# write-and-run.mdx "Create tasks and child workflows": the even_or_odd example; each task
# and child flow is a separate unit of work
def test_tasks_and_child_workflows_are_separate_runs(events: Any) -> None:
    @task
    def generate_a_number() -> int:
        return random.randint(0, 100)

    @flow
    def is_number_even(number: int) -> bool:
        return number % 2 == 0

    @flow
    def even_or_odd() -> str:
        number = generate_a_number()
        return "even" if is_number_even(number) else "odd"

    assert even_or_odd() in ("even", "odd")
    flow_names = [e.flow_run.flow.name for e in events.of(FlowRunCreated)]
    assert flow_names == ["even-or-odd", "is-number-even"]  # Prefect: "_" becomes "-"
    task_names = [e.task_run.task_name for e in events.of(TaskRunCreated)]
    assert "generate_a_number" in task_names


# write-and-run.mdx "Cancel a workflow if it runs for too long": timeout_seconds on a flow;
# the body after the timeout does not go on
def test_a_flow_timeout_stops_the_flow(events: Any) -> None:
    @flow(timeout_seconds=0.2, log_prints=True)
    def show_timeouts() -> None:
        print("I will execute")
        time.sleep(3)
        print("I will not execute")

    start = time.perf_counter()
    state = show_timeouts(return_state=True)
    assert time.perf_counter() - start < 2
    assert state.is_failed()
    time.sleep(0.1)
    lines = [e.record.getMessage() for e in events.of(LogEmitted)]
    assert "I will execute" in lines
    assert "I will not execute" not in lines


# write-and-run.mdx "Task timeout behavior": async tasks are cancelled at the next await
def test_an_async_task_times_out_at_an_await() -> None:
    @task(timeout_seconds=0.2)
    async def async_task_with_sleep() -> None:
        await asyncio.sleep(5)

    held: list[Any] = []

    @flow
    async def main() -> None:
        held.append(await async_task_with_sleep(return_state=True))  # type: ignore[call-arg]

    start = time.perf_counter()
    asyncio.run(main())
    state = held[0]
    assert time.perf_counter() - start < 2
    assert state.is_failed()
    assert state.name == "TimedOut"


# write-and-run.mdx "Task timeout behavior": "Sync tasks called directly ... timeouts can
# interrupt execution, including blocking operations"
def test_a_sync_task_called_directly_times_out_in_a_blocking_call() -> None:
    @task(timeout_seconds=0.2)
    def blocking() -> None:
        time.sleep(5)

    held: list[Any] = []

    @flow
    def main() -> None:
        held.append(blocking(return_state=True))  # type: ignore[call-arg]

    start = time.perf_counter()
    main()
    state = held[0]
    assert time.perf_counter() - start < 2
    assert state.name == "TimedOut"


# write-and-run.mdx "Task timeout behavior": a sync task submitted to the ThreadPoolTaskRunner
# still ends TimedOut (the page: the timeout may only take effect once the blocking call is
# over; flowbook's task ends when the timeout is reached)
def test_a_submitted_sync_task_times_out() -> None:
    @task(timeout_seconds=0.2)
    def sync_task_with_blocking() -> None:
        time.sleep(1)

    held: list[Any] = []

    @flow(task_runner=ThreadPoolTaskRunner())
    def flow_with_threads() -> None:
        future = sync_task_with_blocking.submit()
        future.wait()
        held.append(future.state)

    start = time.perf_counter()
    flow_with_threads()
    assert time.perf_counter() - start < 0.8
    state = held[0]
    assert state.name == "TimedOut"
    assert state.is_failed()


# write-and-run.mdx "Flow configuration": name, "If not provided, the name is inferred from
# the function"; description "pulled from the docstring"
def test_flow_name_and_description_defaults() -> None:
    @flow
    def documented() -> None:
        """Says what it does."""

    @flow(name="given", description="given description")
    def named() -> None:
        """Not this."""

    assert documented.name == "documented"
    assert documented.description == "Says what it does."

    @flow
    def two_words() -> None:
        pass

    assert two_words.name == "two-words"  # as in Prefect, "_" becomes "-"
    assert named.name == "given"
    assert named.description == "given description"


# write-and-run.mdx "Flow configuration": retries and retry_delay_seconds
def test_flow_retries_with_a_delay() -> None:
    attempts: list[float] = []

    @flow(retries=2, retry_delay_seconds=0.1)
    def flaky() -> int:
        attempts.append(time.perf_counter())
        if len(attempts) < 3:
            raise ValueError("not yet")
        return len(attempts)

    assert flaky() == 3
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.09 for gap in gaps)


# write-and-run.mdx "Flow configuration": flow_run_name, a template with the flow's
# parameters, or a function returning a string
def test_flow_run_name_template_and_function() -> None:
    @flow(flow_run_name="run-{x}-{y}")
    def templated(x: int, y: str) -> str:
        return str(runtime_flow_run.name)

    def make_name() -> str:
        return f"made-{runtime_flow_run.parameters['x']}"

    @flow(flow_run_name=make_name)
    def by_function(x: int) -> str:
        return str(runtime_flow_run.name)

    assert templated(1, "a") == "run-1-a"
    assert by_function(7) == "made-7"


# write-and-run.mdx "Flow configuration": task_runner; "If not provided and you .submit()
# tasks, the ThreadPoolTaskRunner is used" (tasks run on other threads)
def test_submitted_tasks_run_on_a_thread_pool_by_default() -> None:
    main_thread = threading.get_ident()

    @task
    def where() -> int:
        return threading.get_ident()

    @flow
    def main() -> list[int]:
        return [f.result() for f in [where.submit(), where.submit()]]

    assert main_thread not in main()


# write-and-run.mdx "Flow configuration": version, "a hash of the file containing the wrapped
# function" when not given
def test_flow_version_defaults_to_a_hash_and_can_be_given() -> None:
    @flow
    def unversioned() -> None:
        pass

    @flow(version="1.2")
    def versioned() -> None:
        pass

    assert isinstance(unversioned.version, str)
    assert unversioned.version
    assert versioned.version == "1.2"


# write-and-run.mdx "Task configuration": name and description (from the docstring if not
# given)
def test_task_name_and_description() -> None:
    @task(name="hello-task", description="This task says hello.")
    def my_task() -> None:
        print("Hello, I'm a task")

    @task
    def documented() -> None:
        """From the docstring."""

    assert my_task.name == "hello-task"
    assert my_task.description == "This task says hello."
    assert documented.name == "documented"
    assert documented.description == "From the docstring."


# write-and-run.mdx "Task configuration": task_run_name with Python's format syntax, format
# specs included ("hello-{name}-on-{date:%A}")
def test_task_run_name_template_with_a_format_spec() -> None:
    @task(task_run_name="hello-{name}-on-{date:%A}")
    def my_task(name: str, date: datetime.datetime) -> str:
        return str(runtime_task_run.name)

    @flow
    def my_flow() -> str:
        return my_task(name="marvin", date=datetime.datetime(2024, 1, 4))

    assert my_flow() == "hello-marvin-on-Thursday"


# write-and-run.mdx "Task configuration": task_run_name given as a function returning a string
def test_task_run_name_from_a_function() -> None:
    def generate_task_name() -> str:
        return "Thursday-is-a-lovely-day"

    @task(task_run_name=generate_task_name)
    def my_task(name: str) -> str:
        return str(runtime_task_run.name)

    @flow
    def my_flow() -> str:
        return my_task(name="marvin")

    assert my_flow() == "Thursday-is-a-lovely-day"


# how it fails: a template naming a parameter the task does not have names it
def test_task_run_name_with_an_unknown_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match=r"nobody.*not a parameter"):

        @task(task_run_name="hello-{nobody}")
        def my_task(name: str) -> None:
            pass


# write-and-run.mdx "Task configuration": timeout_seconds, "If the task exceeds this runtime,
# it will be marked as failed"; log_prints on a task
def test_task_timeout_marks_failed_and_log_prints(events: Any) -> None:
    @task(timeout_seconds=0.1, log_prints=True)
    def slow() -> None:
        print("before the timeout")
        time.sleep(3)

    held: list[Any] = []

    @flow
    def main() -> None:
        held.append(slow(return_state=True))  # type: ignore[call-arg]

    main()
    state = held[0]
    assert state.is_failed()
    assert "before the timeout" in [e.record.getMessage() for e in events.of(LogEmitted)]
