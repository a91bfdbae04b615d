"""Seed 002 (Prefect 2, "Flow and task configuration"), run with flowbook in place of prefect.

Each test is one example of the seed; it asserts what the seed says happens.
"""

from __future__ import annotations

import datetime
import os
import re
import time
from datetime import timedelta

import pytest

from flowbook import flow, task
from flowbook.runtime import flow_run, task_run
from flowbook.task_runners import SequentialTaskRunner
from flowbook.tasks import task_input_hash

THURSDAY = datetime.datetime(2023, 6, 1, 12, 0)  # a Thursday


# -- attaching metadata to flows -------------------------------------------------------------


def test_flow_name_description_and_version() -> None:
    @flow(name="My Example Flow", description="An example flow for a tutorial.")
    def my_flow() -> None:
        pass

    assert my_flow.name == "My Example Flow"
    assert my_flow.description == "An example flow for a tutorial."

    @flow(
        name="My Example Flow",
        description="An example flow for a tutorial.",
        version=os.getenv("GIT_COMMIT_SHA"),
    )
    def my_flow_v() -> None:
        pass

    # GIT_COMMIT_SHA is unset here: the version falls back to a hash of the source
    assert os.getenv("GIT_COMMIT_SHA") is None
    assert re.fullmatch(r"[0-9a-f]{16}", my_flow_v.version)
    my_flow()
    my_flow_v()


def test_flow_defaults_name_from_function_and_description_from_docstring() -> None:
    @flow
    def my_flow() -> None:
        """Docstring becomes the description."""

    assert my_flow.name == "my-flow"
    assert my_flow.description == "Docstring becomes the description."


def _define(body: str) -> object:
    namespace: dict[str, object] = {"flow": flow}
    source = f"@flow\ndef versioned():\n    {body}\n"
    exec(compile(source, "<cell>", "exec"), namespace)
    return namespace["versioned"]


def test_default_version_is_stable_for_same_source_and_changes_with_body() -> None:
    a1, a2, b = _define("return 1"), _define("return 1"), _define("return 2")
    assert a1.version == a2.version  # type: ignore[attr-defined]
    assert a1.version != b.version  # type: ignore[attr-defined]


# -- flow run names --------------------------------------------------------------------------


def test_flow_run_name_template_with_format_spec() -> None:
    seen = []

    @flow(flow_run_name="{name}-on-{date:%A}")
    def my_flow(name: str, date: datetime.datetime) -> None:
        seen.append(flow_run.name)

    my_flow(name="marvin", date=THURSDAY)
    assert seen == ["marvin-on-Thursday"]


def test_flow_run_name_callable() -> None:
    def generate_flow_run_name() -> str:
        date = THURSDAY
        return f"{date:%A}-is-a-nice-day"

    seen = []

    @flow(flow_run_name=generate_flow_run_name)
    def my_flow(name: str) -> None:
        seen.append(flow_run.name)

    my_flow(name="marvin")
    assert seen == ["Thursday-is-a-nice-day"]


def test_flow_run_name_from_runtime() -> None:
    def generate_flow_run_name() -> str:
        flow_name = flow_run.flow_name
        parameters = flow_run.parameters
        name = parameters["name"]
        limit = parameters["limit"]
        return f"{flow_name}-with-{name}-and-{limit}"

    seen = []

    @flow(flow_run_name=generate_flow_run_name)
    def my_flow(name: str, limit: int = 100) -> None:
        seen.append(flow_run.name)

    my_flow(name="marvin")
    assert seen == ["my-flow-with-marvin-and-100"]


# -- attaching metadata to tasks -------------------------------------------------------------


def test_task_name_description_tags() -> None:
    @task(
        name="My Example Task",
        description="An example task for a tutorial.",
        tags=["tutorial", "tag-test"],
    )
    def my_task() -> None:
        pass

    assert my_task.name == "My Example Task"
    assert my_task.description == "An example task for a tutorial."
    assert set(my_task.tags) == {"tutorial", "tag-test"}


def test_task_run_name_template(events) -> None:  # type: ignore[no-untyped-def]
    @task(
        name="My Example Task",
        description="An example task for a tutorial.",
        task_run_name="hello-{name}-on-{date:%A}",
    )
    def my_task(name: str, date: datetime.datetime) -> str:
        return task_run.name  # type: ignore[no-any-return]

    @flow
    def my_flow() -> str:
        return my_task(name="marvin", date=THURSDAY)

    assert my_flow() == "hello-marvin-on-Thursday"


def test_task_run_name_callable() -> None:
    def generate_task_name() -> str:
        date = THURSDAY
        return f"{date:%A}-is-a-lovely-day"

    @task(
        name="My Example Task",
        description="An example task for a tutorial.",
        task_run_name=generate_task_name,
    )
    def my_task(name: str) -> str:
        return task_run.name  # type: ignore[no-any-return]

    @flow
    def my_flow() -> str:
        return my_task(name="marvin")

    assert my_flow() == "Thursday-is-a-lovely-day"


def test_task_run_name_from_runtime() -> None:
    def generate_task_name() -> str:
        flow_name = flow_run.flow_name
        task_name = task_run.task_name
        parameters = task_run.parameters
        name = parameters["name"]
        limit = parameters["limit"]
        return f"{flow_name}-{task_name}-with-{name}-and-{limit}"

    @task(
        name="my-example-task",
        description="An example task for a tutorial.",
        task_run_name=generate_task_name,
    )
    def my_task(name: str, limit: int = 100) -> str:
        return task_run.name  # type: ignore[no-any-return]

    @flow
    def my_flow(name: str) -> str:
        return my_task(name="marvin")

    assert my_flow(name="marvin") == "my-flow-my-example-task-with-marvin-and-100"


# -- retries ---------------------------------------------------------------------------------


def test_task_retries_run_three_times_then_fail(events, capsys) -> None:  # type: ignore[no-untyped-def]
    # the seed waits 5 s between attempts; 0.1 s keeps the test quick and still measurable
    @task(retries=2, retry_delay_seconds=0.1)
    def failure() -> None:
        print("running")
        raise ValueError("bad code")

    @flow
    def test_retries() -> None:
        return failure()

    started = time.monotonic()
    state = test_retries(return_state=True)
    elapsed = time.monotonic() - started

    out = capsys.readouterr()
    assert out.out.count("running") == 3
    assert elapsed >= 0.2
    assert events.states("failure-0") == [
        "Pending",
        "Running",
        "AwaitingRetry",
        "Retrying",
        "Running",
        "AwaitingRetry",
        "Retrying",
        "Running",
        "Failed",
    ]
    assert state.is_failed()
    assert state.message == "1/1 states failed."
    assert "Task run 'failure-0' - Finished in state Failed(" in out.err
    assert "Retry 1/2 will start 0.1 second(s) from now" in out.err
    assert re.search(
        r"Flow run '[a-z]+-[a-z]+' - Finished in state Failed\('1/1 states failed.'\)", out.err
    )
    with pytest.raises(ValueError, match="bad code"):
        test_retries()


# -- caching ---------------------------------------------------------------------------------


def test_task_input_hash_caching_sequence(capsys) -> None:  # type: ignore[no-untyped-def]
    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=1))
    def hello_task(name_input: str) -> str:
        # Doing some work
        print(f"Saying hello {name_input}")
        return "hello " + name_input

    @flow
    def hello_flow(name_input: str) -> None:
        hello_task(name_input)

    hello_flow("Marvin")
    first = capsys.readouterr()
    assert first.out == "Saying hello Marvin\n"
    assert "Task run 'hello_task-0' - Finished in state Completed()" in first.err
    assert "Finished in state Completed('All states completed.')" in first.err

    hello_flow("Marvin")
    second = capsys.readouterr()
    assert second.out == ""
    assert "Task run 'hello_task-0' - Finished in state Cached(type=COMPLETED)" in second.err

    hello_flow("Trillian")
    third = capsys.readouterr()
    assert third.out == "Saying hello Trillian\n"


def test_cache_expiration() -> None:
    calls = []

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(seconds=0.5))
    def hello_task(name_input: str) -> str:
        calls.append(name_input)
        return "hello " + name_input

    @flow
    def hello_flow(name_input: str) -> str:
        return hello_task(name_input)

    assert hello_flow("Marvin") == "hello Marvin"
    assert hello_flow("Marvin") == "hello Marvin"
    assert calls == ["Marvin"]
    time.sleep(0.6)
    assert hello_flow("Marvin") == "hello Marvin"
    assert calls == ["Marvin", "Marvin"]


def test_custom_cache_key_function_sequence(capsys) -> None:  # type: ignore[no-untyped-def]
    def cache_key_from_sum(context: object, parameters: dict[str, list[int]]) -> int:
        print(parameters)
        return sum(parameters["nums"])

    @task(cache_key_fn=cache_key_from_sum, cache_expiration=timedelta(minutes=1))
    def cached_task(nums: list[int]) -> int:
        print("running an expensive operation")
        return sum(nums)

    @flow
    def test_caching(nums: list[int]) -> int:
        return cached_task(nums)

    assert test_caching([2, 2]) == 4
    assert capsys.readouterr().out == "{'nums': [2, 2]}\nrunning an expensive operation\n"
    assert test_caching([2, 2]) == 4
    assert capsys.readouterr().out == "{'nums': [2, 2]}\n"
    assert test_caching([1, 3]) == 4
    assert capsys.readouterr().out == "{'nums': [1, 3]}\n"
    assert test_caching([2, 3]) == 5
    assert capsys.readouterr().out == "{'nums': [2, 3]}\nrunning an expensive operation\n"


def test_refresh_cache_always_runs() -> None:
    calls = []

    @task(cache_key_fn=task_input_hash, refresh_cache=True)
    def hello_task(name_input: str) -> str:
        calls.append(name_input)
        return "hello " + name_input

    @flow
    def hello_flow(name_input: str) -> str:
        return hello_task(name_input)

    hello_flow("Marvin")
    hello_flow("Marvin")
    assert calls == ["Marvin", "Marvin"]


# -- task runners ----------------------------------------------------------------------------


def test_sequential_task_runner_example(capsys) -> None:  # type: ignore[no-untyped-def]
    @task
    def first_task(num: int) -> int:
        return num + num

    @task
    def second_task(num: int) -> int:
        return num * num

    @flow(name="My Example Flow", task_runner=SequentialTaskRunner())
    def my_flow(num: int) -> None:
        plusnum = first_task.submit(num)
        sqnum = second_task.submit(plusnum)
        print(f"add: {plusnum.result()}, square: {sqnum.result()}")

    my_flow(5)
    assert capsys.readouterr().out == "add: 10, square: 100\n"
