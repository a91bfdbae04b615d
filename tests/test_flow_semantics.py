"""Flow and task semantics: final states, subflows, flow retries, timeouts, task retries,
tasks outside flows, ``flowbook.runtime``, run names and interruption.

Every test observes real runs: executions are counted with accumulators, timings are
measured with ``time.monotonic()``, states come from the returned state objects and from the
engine's events.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.engine.events import FlowRunFinished, StateChanged, TaskRunCreated
from flowbook.engine.runs import FlowRun, TaskRun
from flowbook.exceptions import RunTimeoutError
from flowbook.runtime import flow_run, task_run
from flowbook.states import State, StateType
from flowbook.task_runners import ConcurrentTaskRunner

STAMP = r"\d\d:\d\d:\d\d\.\d{3}"


def _finished_flow_runs(events: Any, flow_name: str) -> list[FlowRun]:
    return [e.flow_run for e in events.of(FlowRunFinished) if e.flow_run.flow.name == flow_name]


def _states_of(events: Any, run: FlowRun | TaskRun) -> list[str]:
    return [e.state.name for e in events.of(StateChanged) if e.run is run]


# -- final state summaries -------------------------------------------------------------------


def test_an_unobserved_failed_submission_does_not_fail_the_flow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Prefect 3's rule (its upgrade guide, "Flow final states"): what the flow returns or
    raises decides; a submitted task that failed and was never looked at does not fail it,
    and the run's message says so."""
    ran: list[str] = []

    @task
    def fine() -> int:
        ran.append("fine")
        return 1

    @task
    def broken() -> None:
        ran.append("broken")
        raise ValueError("the task broke")

    @flow
    def careless() -> str:
        fine.submit()
        broken.submit()
        return "body finished"

    state = careless(return_state=True)
    assert sorted(ran) == ["broken", "fine"]
    assert state.type is StateType.COMPLETED
    assert state.result() == "body finished"
    assert "1/2 task runs failed without the flow looking at them" in (state.message or "")
    err = capsys.readouterr().err
    assert re.search(r"Task run 'broken-0' - Finished in state Failed", err)
    assert careless() == "body finished"


def test_caught_task_failure_is_handled_and_the_flow_completes() -> None:
    @task
    def broken() -> None:
        raise ValueError("nope")

    @flow
    def careful() -> str:
        try:
            broken()
        except ValueError:
            return "recovered"
        return "not reached"

    state = careful(return_state=True)
    assert state.type is StateType.COMPLETED
    assert state.result() == "recovered"
    assert state.message is not None
    assert "handled" in state.message
    assert careful() == "recovered"


def test_a_failed_state_returned_to_the_body_is_handled() -> None:
    @task
    def fails() -> None:
        raise ValueError("bad")

    @flow
    def looks_at_states() -> list[str]:
        return [fails(return_state=True).name]

    state = looks_at_states(return_state=True)
    assert state.is_completed()
    assert state.result() == ["Failed"]
    assert "1/1 failed task runs were handled" in (state.message or "")


def test_flow_body_exception_fails_the_flow() -> None:
    @flow
    def explodes() -> None:
        raise ValueError("the flow broke")

    state = explodes(return_state=True)
    assert state.is_failed()
    assert state.message == "Flow run encountered an exception ValueError: the flow broke"
    assert state.short() == (
        "Failed('Flow run encountered an exception ValueError: the flow broke')"
    )
    with pytest.raises(ValueError, match="the flow broke"):
        explodes()


def test_returning_a_future_gives_its_result() -> None:
    @task
    def square(x: int) -> int:
        return x * x

    @flow
    def returns_future() -> Any:
        return square.submit(7)

    @flow
    def returns_futures() -> Any:
        return [square.submit(i) for i in range(4)]

    assert returns_future() == 49
    assert returns_futures() == [0, 1, 4, 9]


def test_returning_a_failed_future_fails_the_flow() -> None:
    @task
    def broken() -> int:
        raise KeyError("missing")

    @flow
    def returns_failed_future() -> Any:
        return broken.submit()

    state = returns_failed_future(return_state=True)
    assert state.is_failed()
    with pytest.raises(KeyError, match="missing"):
        returns_failed_future()


def test_return_state_on_a_task_call() -> None:
    seen: dict[str, State] = {}

    @task
    def good() -> str:
        return "fine"

    @task
    def bad() -> str:
        raise ValueError("bad value")

    @flow
    def inspecting() -> Any:
        seen["good"] = good(return_state=True)
        seen["bad"] = bad(return_state=True)
        return seen["bad"]

    state = inspecting(return_state=True)
    assert isinstance(seen["good"], State)
    assert seen["good"].is_completed()
    assert seen["good"].result() == "fine"
    assert isinstance(seen["bad"], State)
    assert seen["bad"].is_failed()
    assert isinstance(seen["bad"].result(raise_on_failure=False), ValueError)
    # a flow that returns a state ends in that state
    assert state.is_failed()
    with pytest.raises(ValueError, match="bad value"):
        state.result()


def test_return_state_on_a_flow_call() -> None:
    @flow
    def ok() -> int:
        return 5

    state = ok(return_state=True)
    assert isinstance(state, State)
    assert state.is_completed()
    assert state.message == "All states completed."
    assert state.result() == 5


# -- subflows --------------------------------------------------------------------------------


def test_subflow_is_a_child_run_of_its_parent(events: Any) -> None:
    seen: dict[str, Any] = {}

    @flow(name="child")
    def child(x: int) -> int:
        seen["child_id"] = flow_run.id
        seen["child_name"] = flow_run.name
        seen["child_parent_id"] = flow_run.parent_flow_run_id
        return x * 2

    @flow(name="parent")
    def parent() -> int:
        seen["parent_id"] = flow_run.id
        seen["parent_parent_id"] = flow_run.parent_flow_run_id
        return child(21)

    assert parent() == 42
    assert seen["child_parent_id"] == seen["parent_id"]
    assert seen["child_id"] != seen["parent_id"]
    assert seen["parent_parent_id"] is None

    records = [e.task_run for e in events.of(TaskRunCreated) if e.task_run.subflow_run]
    assert len(records) == 1
    record = records[0]
    assert isinstance(record.subflow_run, FlowRun)
    assert record.subflow_run.id == seen["child_id"]
    assert record.name == seen["child_name"]
    assert record.flow_run is not None
    assert record.flow_run.id == seen["parent_id"]
    assert _states_of(events, record) == ["Pending", "Running", "Completed"]
    assert record.state is not None
    assert record.state.result() == 42


def test_failing_subflow_fails_the_parent() -> None:
    @flow(name="bad-child")
    def child() -> None:
        raise ValueError("the child broke")

    after: list[str] = []

    @flow(name="parent")
    def parent() -> str:
        child()
        after.append("reached")
        return "unreachable"

    state = parent(return_state=True)
    assert state.is_failed()
    assert isinstance(state.data, ValueError)
    assert after == []
    with pytest.raises(ValueError, match="the child broke"):
        parent()


# -- flow retries (SPEC F5) ------------------------------------------------------------------


def test_flow_retry_reuses_completed_task_results(events: Any) -> None:
    executions: list[int] = []
    attempts: list[int] = []

    @task
    def step_a(x: int) -> int:
        executions.append(x)
        return x + 1

    @flow(name="retrying-flow", retries=1)
    def retrying() -> int:
        attempts.append(flow_run.run_count)
        value = step_a(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return value

    state = retrying(return_state=True)
    assert state.is_completed()
    assert state.result() == 2
    assert executions == [1]
    assert attempts == [1, 2]
    (run,) = _finished_flow_runs(events, "retrying-flow")
    assert run.run_count == 2
    assert _states_of(events, run) == [
        "Pending",
        "Running",
        "AwaitingRetry",
        "Retrying",
        "Running",
        "Completed",
    ]


def test_flow_retry_reruns_a_task_whose_input_changed() -> None:
    executions: list[int] = []
    attempts: list[int] = []

    @task
    def step_a(x: int) -> int:
        executions.append(x)
        return x + 1

    @flow(retries=1)
    def retrying() -> int:
        attempts.append(flow_run.run_count)
        value = step_a(len(attempts))
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return value

    assert retrying() == 3
    assert executions == [1, 2]
    assert attempts == [1, 2]


def test_flow_retry_reruns_only_the_task_that_failed() -> None:
    executions: list[str] = []

    @task
    def step_a(x: int) -> int:
        executions.append("a")
        return x

    @task
    def step_b(x: int) -> int:
        executions.append("b")
        if flow_run.run_count == 1:
            raise ValueError("b fails in the first attempt")
        return x * 10

    @flow(retries=1)
    def pipeline() -> int:
        a = step_a.submit(1)
        return step_b(a.result())

    state = pipeline(return_state=True)
    assert state.is_completed()
    assert state.result() == 10
    assert executions == ["a", "b", "b"]


# -- timeouts --------------------------------------------------------------------------------


def test_task_timeout_ends_the_run_as_timed_out() -> None:
    seen: dict[str, Any] = {}

    @task(timeout_seconds=0.2)
    def sleepy() -> str:
        time.sleep(2)
        return "woke up"

    @flow
    def waits() -> None:
        started = time.monotonic()
        seen["state"] = sleepy(return_state=True)
        seen["elapsed"] = time.monotonic() - started

    waits(return_state=True)
    state = seen["state"]
    assert state.name == "TimedOut"
    assert state.type is StateType.FAILED
    assert isinstance(state.data, RunTimeoutError)
    assert 0.2 <= seen["elapsed"] < 0.5


def test_task_timeout_raises_run_timeout_error_from_the_flow() -> None:
    @task(timeout_seconds=0.2)
    def sleepy() -> str:
        time.sleep(2)
        return "woke up"

    @flow
    def waits() -> str:
        return sleepy()

    started = time.monotonic()
    with pytest.raises(RunTimeoutError) as caught:
        waits()
    assert time.monotonic() - started < 0.5
    assert isinstance(caught.value, TimeoutError)

    state = waits(return_state=True)
    assert state.is_failed()
    assert state.name == "Failed"
    assert state.message == "1/1 states failed."


def test_task_timeout_inside_a_flow_with_a_timeout_is_not_the_flows_timeout() -> None:
    @task(timeout_seconds=0.2)
    def sleepy() -> str:
        time.sleep(2)
        return "woke up"

    @flow(timeout_seconds=5)
    def roomy() -> str:
        return sleepy()

    started = time.monotonic()
    state = roomy(return_state=True)
    assert time.monotonic() - started < 0.5
    assert state.is_failed()
    assert isinstance(state.data, RunTimeoutError)
    assert "Task run 'sleepy-0'" in str(state.data)
    # the flow ran 0.2 s of its 5 s: it failed because its task timed out
    assert state.name == "Failed"
    assert state.message == "1/1 states failed."


def test_timed_out_task_is_retried() -> None:
    attempts: list[float] = []

    @task(timeout_seconds=0.15, retries=1)
    def sleepy() -> None:
        attempts.append(time.monotonic())
        time.sleep(2)

    @flow
    def waits() -> State:
        return sleepy(return_state=True)

    started = time.monotonic()
    state = waits(return_state=True)
    elapsed = time.monotonic() - started
    assert len(attempts) == 2
    # a task's state returned by the flow counts as Prefect 3 counts returned states
    assert state.short() == "Failed('1/1 states failed.')"
    assert isinstance(state.data, RunTimeoutError)
    assert 0.3 <= elapsed < 0.8


def test_flow_timeout_ends_the_flow_as_timed_out() -> None:
    @flow(timeout_seconds=0.2)
    def sleepy_flow() -> str:
        time.sleep(2)
        return "woke up"

    started = time.monotonic()
    state = sleepy_flow(return_state=True)
    assert time.monotonic() - started < 0.5
    assert state.name == "TimedOut"
    assert state.type is StateType.FAILED
    assert isinstance(state.data, RunTimeoutError)

    started = time.monotonic()
    with pytest.raises(RunTimeoutError):
        sleepy_flow()
    assert time.monotonic() - started < 0.5


def test_flow_timeout_cancels_task_runs_that_have_not_started(events: Any) -> None:
    ran: list[int] = []

    @task
    def nap(i: int) -> int:
        ran.append(i)
        time.sleep(0.1)
        return i

    @flow(
        name="queue-flow",
        timeout_seconds=0.25,
        task_runner=ConcurrentTaskRunner(max_workers=1),
    )
    def queue_flow() -> list[int]:
        futures = [nap.submit(i) for i in range(10)]
        return [f.result() for f in futures]

    started = time.monotonic()
    state = queue_flow(return_state=True)
    assert time.monotonic() - started < 0.5
    assert state.name == "TimedOut"
    time.sleep(0.3)
    assert len(ran) <= 4
    (run,) = _finished_flow_runs(events, "queue-flow")
    never_ran = [r for r in run.task_runs if r.parameters["i"] not in ran]
    assert len(never_ran) >= 6
    for record in never_ran:
        assert record.state is not None
        assert record.state.is_cancelled(), record


def test_flow_timeout_leaves_no_task_run_running(events: Any) -> None:
    @task
    def slow() -> int:
        time.sleep(0.5)
        return 1

    @flow(name="timed-flow", timeout_seconds=0.2)
    def timed_flow() -> int:
        return slow()

    state = timed_flow(return_state=True)
    assert state.name == "TimedOut"
    (run,) = _finished_flow_runs(events, "timed-flow")
    (record,) = run.task_runs
    assert record.state is not None
    at_return = record.state
    assert at_return.is_final(), f"task run still {at_return.short()} after its flow finished"
    time.sleep(0.5)
    # the body's thread is interrupted later; the task run's final state must not change
    assert record.state is at_return
    assert _states_of(events, record)[-1] == at_return.name


# -- task retries ----------------------------------------------------------------------------


def test_retry_delay_list_is_waited_for() -> None:
    stamps: list[float] = []

    @task(retries=2, retry_delay_seconds=[0.05, 0.1])
    def flaky() -> str:
        stamps.append(time.monotonic())
        if len(stamps) < 3:
            raise ValueError("not yet")
        return "ok"

    @flow
    def patient() -> str:
        return flaky()

    assert patient() == "ok"
    assert len(stamps) == 3
    first, second = stamps[1] - stamps[0], stamps[2] - stamps[1]
    assert 0.048 <= first < 0.09
    assert 0.098 <= second < 0.14


def test_retry_condition_false_stops_after_the_first_attempt(events: Any) -> None:
    calls: list[int] = []
    asked: list[str] = []

    def only_on_timeouts(tsk: Any, run: Any, state: State) -> bool:
        asked.append(state.name)
        return isinstance(state.result(raise_on_failure=False), TimeoutError)

    @task(retries=3, retry_condition_fn=only_on_timeouts)
    def fails() -> None:
        calls.append(1)
        raise ValueError("not retried")

    @task(retries=3, retry_condition_fn=only_on_timeouts)
    def times_out() -> str:
        calls.append(2)
        if calls.count(2) < 2:
            raise TimeoutError("retried")
        return "second time lucky"

    @flow
    def conditional() -> str:
        with pytest.raises(ValueError, match="not retried"):
            fails()
        return times_out()

    assert conditional() == "second time lucky"
    assert calls == [1, 2, 2]
    assert asked == ["Failed", "Failed"]
    assert events.states("fails-0") == ["Pending", "Running", "Failed"]


def test_retry_jitter_keeps_delays_within_bounds(events: Any) -> None:
    stamps: list[float] = []
    delay, factor = 0.05, 1.0

    @task(retries=3, retry_delay_seconds=delay, retry_jitter_factor=factor)
    def jittery() -> str:
        stamps.append(time.monotonic())
        if len(stamps) < 4:
            raise ValueError("again")
        return "done"

    @flow
    def jittered_flow() -> str:
        return jittery()

    assert jittered_flow() == "done"
    announced = [
        float(m.group(1))
        for e in events.of(StateChanged)
        if e.run.name == "jittery-0" and e.state.name == "AwaitingRetry"
        for m in [re.search(r"will start ([0-9.e-]+) second\(s\) from now", e.state.message)]
        if m
    ]
    assert len(announced) == 3
    for planned in announced:
        assert delay <= planned <= delay * (1 + factor)
    assert any(planned > delay for planned in announced)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    for gap in gaps:
        assert delay * 0.96 <= gap < delay * (1 + factor) + 0.04


def test_one_retry_without_delay_is_cheap() -> None:
    calls: list[int] = []

    @task(retries=1, retry_delay_seconds=0)
    def once_flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first try fails")
        return "ok"

    @flow
    def quick() -> float:
        started = time.perf_counter()
        assert once_flaky() == "ok"
        return time.perf_counter() - started

    elapsed = quick()
    assert calls == [1, 1]
    assert elapsed < 0.05


# -- tasks outside flows ---------------------------------------------------------------------


def test_task_called_outside_a_flow_runs_with_its_own_record(
    events: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[int] = []

    @task(name="lonely")
    def lonely(x: int) -> int:
        calls.append(x)
        return x * 3

    assert lonely(2) == 6
    assert calls == [2]
    assert events.states("lonely-0") == ["Pending", "Running", "Completed"]
    (created,) = events.of(TaskRunCreated)
    assert created.task_run.flow_run is None
    err = capsys.readouterr().err
    assert re.search(
        rf"^{STAMP} \| INFO    \| Task run 'lonely-0' - Finished in state Completed\(\)$",
        err,
        re.MULTILINE,
    )


def test_task_submitted_outside_a_flow_resolves() -> None:
    threads: list[str] = []

    @task
    def background(x: int) -> int:
        threads.append(threading.current_thread().name)
        return x + 100

    future = background.submit(1)
    assert future.result(timeout=2) == 101
    assert future.state.is_completed()
    assert len(threads) == 1


# -- flowbook.runtime ------------------------------------------------------------------------


def test_runtime_outside_runs() -> None:
    assert flow_run.id is None
    assert flow_run.name is None
    assert flow_run.parameters == {}
    assert flow_run.run_count == 0
    assert task_run.id is None
    assert task_run.name is None
    assert task_run.parameters == {}


def test_runtime_inside_a_task_sees_parameters_with_defaults() -> None:
    @task
    def configured(a: int, b: int = 2, *, c: str = "x") -> dict[str, Any]:
        return {
            "parameters": task_run.parameters,
            "name": task_run.name,
            "task_name": task_run.task_name,
            "flow_parameters": flow_run.parameters,
        }

    @flow
    def outer(n: int = 7) -> dict[str, Any]:
        return configured(1)

    info = outer()
    assert info["parameters"] == {"a": 1, "b": 2, "c": "x"}
    assert info["name"] == "configured-0"
    assert info["task_name"] == "configured"
    assert info["flow_parameters"] == {"n": 7}


def test_runtime_task_run_count_counts_attempts() -> None:
    counts: list[int] = []

    @task(retries=2)
    def counted() -> str:
        counts.append(task_run.run_count)
        if len(counts) < 3:
            raise ValueError("again")
        return "third time"

    @flow
    def outer() -> str:
        return counted()

    assert outer() == "third time"
    assert counts == [1, 2, 3]


def test_runtime_tags() -> None:
    @task(tags=["io", "slow"])
    def tagged() -> tuple[set[str], set[str]]:
        return set(task_run.tags), set(flow_run.tags)

    @flow(tags=["nightly", "etl"])
    def outer() -> tuple[set[str], tuple[set[str], set[str]]]:
        return set(flow_run.tags), tagged()

    flow_tags, (task_tags, flow_tags_in_task) = outer()
    assert flow_tags == {"nightly", "etl"}
    assert task_tags == {"io", "slow"}
    assert flow_tags_in_task == {"nightly", "etl"}


# -- run names -------------------------------------------------------------------------------


def test_auto_generated_flow_run_names_look_like_adjective_animal() -> None:
    names: list[str] = []

    @flow
    def named() -> None:
        names.append(flow_run.name)

    for _ in range(8):
        named()
    assert len(names) == 8
    for name in names:
        assert re.fullmatch(r"[a-z]+-[a-z]+", name), name
    assert len(set(names)) > 1


def test_task_run_names_count_calls_of_each_task_within_the_flow_run() -> None:
    @task
    def first() -> str:
        return task_run.name

    @task
    def second() -> str:
        return task_run.name

    @flow
    def names() -> list[str]:
        return [first(), first(), second(), first.submit().result(), second()]

    expected = ["first-0", "first-1", "second-0", "first-2", "second-1"]
    assert names() == expected
    assert names() == expected


# -- interruption ----------------------------------------------------------------------------


def test_keyboard_interrupt_cancels_the_flow_and_pending_tasks(events: Any) -> None:
    ran: list[int] = []

    @task
    def nap(i: int) -> int:
        ran.append(i)
        time.sleep(0.1)
        return i

    @flow(name="interrupted", task_runner=ConcurrentTaskRunner(max_workers=1))
    def interrupted() -> None:
        for i in range(20):
            nap.submit(i)
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert time.monotonic() - started < 1
    time.sleep(0.3)  # whatever had started may finish; nothing else may start

    (run,) = _finished_flow_runs(events, "interrupted")
    assert run.state is not None
    assert run.state.is_cancelled()
    assert len(run.task_runs) == 20
    assert len(ran) <= 2
    never_ran = [r for r in run.task_runs if r.parameters["i"] not in ran]
    assert len(never_ran) >= 18
    for record in never_ran:
        assert record.state is not None
        assert record.state.is_cancelled(), record
