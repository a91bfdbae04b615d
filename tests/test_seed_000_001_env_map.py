"""Seeds 000/001 (Prefect 1 "Flow configuration") in their flowbook form (SPEC F12).

Prefect 1 spelled the flow as ``with Flow("hello-flow") as flow: people = Parameter(...)``;
in flowbook it is a ``@flow`` with a parameter default. ``flow.run_config = LocalRun(env=...)``
becomes ``@flow(env=...)``, ``flow.executor = LocalDaskExecutor()`` becomes
``task_runner=ConcurrentTaskRunner()``, and ``flow.register(project_name=...)`` becomes
``@flow(project=...)``.
"""

from __future__ import annotations

import os
import time

import pytest

import flowbook
from flowbook import flow, task
from flowbook.runtime import flow_run
from flowbook.task_runners import ConcurrentTaskRunner


@task
def say_hello(name: str) -> str:
    # Load the greeting to use from an environment variable
    greeting = os.environ.get("GREETING")
    logger = flowbook.context.get("logger")
    logger.info(f"{greeting}, {name}!")
    return f"{greeting}, {name}!"


@flow(name="hello-flow", env={"GREETING": "Hello"}, project="tutorial")
def hello_flow(people: list[str] = ["Arthur", "Ford", "Marvin"]) -> list[str]:  # noqa: B006 - the seed's default
    assert flow_run.project == "tutorial"
    return say_hello.map(people).result()


def test_env_is_set_for_the_run_and_restored(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GREETING", raising=False)
    assert hello_flow() == ["Hello, Arthur!", "Hello, Ford!", "Hello, Marvin!"]
    err = capsys.readouterr().err
    for i, person in enumerate(["Arthur", "Ford", "Marvin"]):
        assert f"| INFO    | Task run 'say_hello-{i}' - Hello, {person}!" in err
    assert "GREETING" not in os.environ


def test_env_restores_a_previous_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREETING", "Howdy")
    assert hello_flow(["Zaphod"]) == ["Hello, Zaphod!"]
    assert os.environ["GREETING"] == "Howdy"


def test_parallel_map_speed_up() -> None:
    """The seed: three 10 s sleeps took 13 s in parallel instead of 30 s. Here 3 x 1 s."""

    @task
    def slow_hello(name: str) -> str:
        # Add a sleep to simulate some long-running task
        time.sleep(1)
        greeting = os.environ.get("GREETING")
        flowbook.context.get("logger").info(f"{greeting}, {name}!")
        return name

    @flow(name="hello-flow", env={"GREETING": "Hello"}, task_runner=ConcurrentTaskRunner())
    def parallel_flow(people: list[str] = ["Arthur", "Ford", "Marvin"]) -> list[str]:  # noqa: B006
        return slow_hello.map(people).result()

    started = time.monotonic()
    assert parallel_flow() == ["Arthur", "Ford", "Marvin"]
    assert time.monotonic() - started < 1.6


def test_context_logger_outside_a_run_is_the_flowbook_logger() -> None:
    logger = flowbook.context.get("logger")
    assert logger.name == "flowbook"
    assert flowbook.context.get("flow_run_name") is None
    assert flowbook.context.get("missing", "fallback") == "fallback"
