"""docs/v3/concepts/states.mdx, section by section: state names and types, terminal states,
common transitions and the final-state categories.

A task returning a state, flow return values and state hooks are in test_final_states.py and
test_state_hooks.py. States that only a server, a worker or the UI sets (Late, Paused,
Suspended, Cancelling, AwaitingConcurrencySlot, Submitting, InfrastructurePending, Resuming)
and transactions (RolledBack) are out of scope.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.states import (
    AwaitingRetry,
    Cached,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Pending,
    Retrying,
    Running,
    Scheduled,
    State,
    StateType,
    TimedOut,
)


# states.mdx "State types" (the table): each state flowbook has, with its name, its type and
# whether it is terminal
@pytest.mark.parametrize(
    ("make", "name", "type_", "terminal"),
    [
        (Scheduled, "Scheduled", StateType.SCHEDULED, False),
        (AwaitingRetry, "AwaitingRetry", StateType.SCHEDULED, False),
        (Pending, "Pending", StateType.PENDING, False),
        (Running, "Running", StateType.RUNNING, False),
        (Retrying, "Retrying", StateType.RUNNING, False),
        (Cancelled, "Cancelled", StateType.CANCELLED, True),
        (Completed, "Completed", StateType.COMPLETED, True),
        (Cached, "Cached", StateType.COMPLETED, True),
        (Failed, "Failed", StateType.FAILED, True),
        (TimedOut, "TimedOut", StateType.FAILED, True),
        (Crashed, "Crashed", StateType.CRASHED, True),
    ],
)
def test_state_table_names_types_and_terminal(
    make: Any, name: str, type_: StateType, terminal: bool
) -> None:
    state: State = make()
    assert state.name == name
    assert state.type is type_
    assert state.is_final() is terminal


# states.mdx "State types": "if the task retries, that same task run will have the name
# Retrying and the type RUNNING"; "State types drive orchestration logic, whereas state names
# provide visual bookkeeping"
def test_a_retrying_task_run_is_named_retrying_of_type_running(events: Any) -> None:
    calls: list[int] = []

    @task(task_run_name="again", retries=1)
    def again() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("once")
        return 1

    @flow
    def main() -> int:
        return again()

    main()
    retrying = [e.state for e in events.events if getattr(e, "run", None) and e.run.name == "again"]
    by_name = {s.name: s.type for s in retrying}
    assert by_name["Retrying"] is StateType.RUNNING
    assert by_name["AwaitingRetry"] is StateType.SCHEDULED
    assert any(s.is_running() for s in retrying if s.name == "Retrying")


# states.mdx "State types": Cached, "The run result was loaded from a previously cached
# value", has the type COMPLETED
def test_a_cache_hit_is_named_cached_of_type_completed() -> None:
    @task(cache_key_fn=lambda *_: "same")
    def cached() -> int:
        return 3

    @flow
    def main() -> Any:
        cached()
        return cached(return_state=True)

    state = main()
    assert state.name == "Cached"
    assert state.type is StateType.COMPLETED
    assert state.is_completed()
    assert state.result() == 3


# states.mdx "State types": TimedOut, "exceeded its time out", has the type FAILED
def test_a_timed_out_run_is_named_timed_out_of_type_failed() -> None:
    @flow(timeout_seconds=0.1)
    def slow() -> None:
        time.sleep(2)

    start = time.perf_counter()
    state = slow(return_state=True)
    assert time.perf_counter() - start < 1.5
    assert state.name == "TimedOut"
    assert state.type is StateType.FAILED
    assert state.is_failed()


# states.mdx "State transitions": Pending -> Running -> Completed ("The flow completed
# successfully") and Running -> Failed ("your code raised an exception")
def test_common_flow_run_transitions(events: Any) -> None:
    @flow(flow_run_name="fine")
    def fine() -> None:
        pass

    @flow(flow_run_name="raises")
    def raises() -> None:
        raise RuntimeError("code issue")

    fine()
    raises(return_state=True)
    assert events.states("fine") == ["Pending", "Running", "Completed"]
    assert events.states("raises") == ["Pending", "Running", "Failed"]


# states.mdx "Final state determination": "FAILED: a run in any FAILED state encountered an
# error during execution, such as a raised exception"; the state keeps the exception
def test_a_failed_state_holds_the_raised_exception() -> None:
    @task
    def bad() -> None:
        raise ZeroDivisionError("boom")

    held: list[Any] = []

    @flow
    def main() -> None:
        held.append(bad(return_state=True))  # type: ignore[call-arg]

    main()
    state = held[0]
    assert state.is_failed()
    with pytest.raises(ZeroDivisionError, match="boom"):
        state.result()
    assert isinstance(state.result(raise_on_failure=False), ZeroDivisionError)


# states.mdx "Final state determination": "CRASHED: a run in any CRASHED state was
# interrupted by an OS signal such as a KeyboardInterrupt"
@pytest.mark.xfail(
    strict=True,
    reason="flowbook ends a run interrupted by KeyboardInterrupt Cancelled, not Crashed: a "
    "notebook interrupt is the user stopping the cell (docs/behaviour.md 'Interrupts and "
    "cancelling'); Crashed is for a process that died",
)
def test_a_keyboard_interrupt_crashes_the_run(events: Any) -> None:
    @flow(flow_run_name="interrupted")
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert events.states("interrupted")[-1] == "Crashed"


# the flowbook side of the same rule: the interrupt propagates and the run is final
def test_a_keyboard_interrupt_ends_the_run_and_propagates(events: Any) -> None:
    @flow(flow_run_name="stopped")
    def stopped() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stopped()
    assert events.states("stopped") == ["Pending", "Running", "Cancelled"]


# states.mdx "Task return values": the return_state example: the value by default, the state
# with return_state=True (is_completed(), result())
def test_return_state_gives_the_state_of_a_task_call() -> None:
    @task
    def add_one(x: int) -> int:
        return x + 1

    @flow
    def my_flow() -> None:
        result = add_one(1)
        assert isinstance(result, int)
        assert result == 2
        state = add_one(1, return_state=True)  # type: ignore[call-arg]
        assert state.is_completed() is True
        assert state.result() == 2

    assert my_flow(return_state=True).is_completed()  # type: ignore[call-arg]


# states.mdx (Note) "Only runs have states": flows and tasks are templates; a state belongs to
# a run, so each call has its own
def test_each_run_has_its_own_state() -> None:
    @task
    def maybe(fail: bool) -> None:
        if fail:
            raise ValueError("asked to")

    held: list[Any] = []

    @flow
    def main() -> None:
        held.append(maybe(True, return_state=True))  # type: ignore[call-arg]
        held.append(maybe(False, return_state=True))  # type: ignore[call-arg]

    main()
    failed, completed = held
    assert failed.is_failed()
    assert completed.is_completed()
    assert not hasattr(maybe, "state")


# states.mdx "State types": the names of state types are Prefect's
def test_state_type_values() -> None:
    assert {t.value for t in StateType} >= {
        "SCHEDULED",
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CRASHED",
        "CANCELLED",
    }
    assert str(StateType.COMPLETED) == "COMPLETED"
