"""On Dask (and so on ProcessPoolTaskRunner): a task body that returns a state, and state
hooks, behave as on threads (docs/behaviour.md "State hooks" and "Parameters, methods and
final states")."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import cloudpickle
import pytest

from flowbook import flow, task
from flowbook.exceptions import RunFailedError
from flowbook.states import Completed, Failed, State
from flowbook.task_runners import DaskTaskRunner

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


@task
def plus_one(x: int) -> int:
    return x + 1


def test_a_task_returning_failed_fails_and_is_retried(local_runner: DaskTaskRunner) -> None:
    @task(retries=1)
    def bad() -> State:
        return Failed(message="nope")

    @flow(task_runner=local_runner)
    def f() -> tuple[State, int]:
        fut = bad.submit()
        fut.wait()
        return fut.state, fut.task_run.run_count

    state, run_count = f()
    assert state.is_failed()
    assert state.message == "nope"
    assert isinstance(state.data, RunFailedError)
    assert run_count == 2


def test_a_dependent_of_a_task_returning_failed_does_not_run(
    local_runner: DaskTaskRunner,
) -> None:
    @task
    def bad() -> State:
        time.sleep(0.3)  # the dependent is submitted with this attempt still going
        return Failed(message="nope")

    seen: list[State] = []

    @flow(task_runner=local_runner)
    def f() -> None:
        down = plus_one.submit(bad.submit())
        down.wait()
        seen.append(down.state)

    f()
    assert seen[0].is_failed()
    assert seen[0].message == "Upstream task run 'bad-0' did not complete (Failed); not run."


def test_a_task_returning_a_completed_state_hands_its_data_on(
    local_runner: DaskTaskRunner,
) -> None:
    @task(cache_key_fn=lambda *_: "returned-completed-state-on-dask")
    def made() -> State:
        time.sleep(0.3)
        return Completed(message="made here", data=41)

    @flow(task_runner=local_runner)
    def f() -> tuple[State, int]:
        fut = made.submit()
        down = plus_one.submit(fut)
        value = down.result()
        return fut.state, value

    state, value = f()
    assert state.is_completed()
    assert state.message == "made here"
    assert state.result() == 41
    assert value == 42


def test_a_hook_may_wait_for_another_dask_task_run(local_runner: DaskTaskRunner) -> None:
    # the hook runs off the connection's dispatcher, which meanwhile ends the run it waits for
    seen: list[int] = []
    gate: dict[str, Any] = {}

    def waits(task: Any, task_run: Any, state: State) -> None:
        seen.append(gate["other"].result(timeout=20))

    @task(on_completion=[waits])
    def first() -> int:
        return 1

    @task
    def slow() -> int:
        time.sleep(0.5)
        return 2

    @flow(task_runner=local_runner)
    def f() -> int:
        other = gate["other"] = slow.submit()
        return first.submit().result() + other.result()

    assert f() == 3
    assert seen == [2]


def test_a_slow_hook_does_not_hold_up_other_dask_runs(local_runner: DaskTaskRunner) -> None:
    release = threading.Event()
    ended: list[str] = []

    def slow_hook(task: Any, task_run: Any, state: State) -> None:
        release.wait(20)
        ended.append("hook")

    @task(on_completion=[slow_hook])
    def hooked() -> int:
        return 1

    @flow(task_runner=local_runner)
    def f() -> int:
        held = hooked.submit()
        value = plus_one.submit(1).result(timeout=20)  # not queued behind the hook
        ended.append("other")
        release.set()
        return held.result() + value

    assert f() == 3
    assert ended == ["other", "hook"]


def test_a_hook_raising_system_exit_on_dask_leaves_the_run_resolved(
    local_runner: DaskTaskRunner,
) -> None:
    def exits(task: Any, task_run: Any, state: State) -> None:
        sys.exit(3)

    @task(on_completion=[exits])
    def t() -> int:
        return 1

    @flow(task_runner=local_runner)
    def f() -> int:
        return t.submit().result(timeout=20) + t.submit().result(timeout=20)

    assert f() == 2
