"""docs/v3/concepts/flows.mdx, section by section: what a flow run is, its states, its
parameters, nested flows and the function types a flow can be.

Final states, generator flows and parameter coercion are in test_final_states.py and
test_parameters.py; this file covers the rest of the page.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.engine.events import FlowRunCreated, LogEmitted, StateChanged
from flowbook.engine.runs import current_flow_run
from flowbook.exceptions import ParameterTypeError
from flowbook.runtime import flow_run as runtime_flow_run
from flowbook.states import StateType


def runtime_flow_run_record() -> Any:
    return current_flow_run.get()


# flows.mdx, opening example: @flow(log_prints=True) turns print() into the run's log lines
def test_log_prints_flow_logs_its_prints(events: Any, capsys: pytest.CaptureFixture[str]) -> None:
    @flow(log_prints=True)
    def explain_flows() -> None:
        print("run any python code here!")
        print("encapsulate that business logic!")

    explain_flows()
    messages = [e.record.getMessage() for e in events.of(LogEmitted)]
    assert "run any python code here!" in messages
    assert "encapsulate that business logic!" in messages
    assert "run any python code here!" not in capsys.readouterr().out


# flows.mdx "Different ways to create a flow run": calling the decorated function creates a
# flow run, "just like a normal Python function"
def test_calling_a_flow_creates_one_flow_run_and_returns_its_value(events: Any) -> None:
    @flow
    def beep() -> str:
        return "boop"

    assert beep() == "boop"
    created = events.of(FlowRunCreated)
    assert len(created) == 1
    assert created[0].flow_run.flow.name == "beep"


# flows.mdx "The life of a flow run": Pending -> Running -> Completed on success
def test_a_flow_run_goes_pending_running_completed(events: Any) -> None:
    @flow(flow_run_name="life")
    def ok() -> int:
        return 1

    ok()
    assert events.states("life") == ["Pending", "Running", "Completed"]


# flows.mdx "The life of a flow run": Running -> Failed when an error occurs
def test_a_flow_run_that_raises_ends_failed(events: Any) -> None:
    @flow(flow_run_name="broken")
    def broken() -> None:
        raise ValueError("an error occurred")

    with pytest.raises(ValueError, match="an error occurred"):
        broken()
    assert events.states("broken") == ["Pending", "Running", "Failed"]
    state = broken(return_state=True)
    assert state.type is StateType.FAILED
    with pytest.raises(ValueError, match="an error occurred"):
        state.result()


# flows.mdx "Final state determination": "If a flow run returns any other object, then it is
# recorded as COMPLETED" (None included)
def test_a_flow_returning_a_plain_object_completes() -> None:
    @flow
    def returns_nothing() -> None:
        pass

    state = returns_nothing(return_state=True)
    assert state.is_completed()
    assert state.result() is None


# flows.mdx "Specify flow parameters": positional and keyword arguments, read back through
# the runtime context
def test_parameters_positional_and_keyword_reach_the_runtime_context() -> None:
    @flow
    def params(x: int, y: str = "a") -> dict[str, Any]:
        return runtime_flow_run.parameters

    assert params(1, y="b") == {"x": 1, "y": "b"}
    assert params(2) == {"x": 2, "y": "a"}


# flows.mdx "View the parameter schema for a flow": inspect.signature(flow) is the function's
def test_inspect_signature_of_a_flow_is_the_functions() -> None:
    @flow
    def schleeb(x: int, y: str, z: bool | None = None) -> None:
        pass

    signature = inspect.signature(schleeb)
    assert signature == inspect.signature(schleeb.fn)
    assert list(signature.parameters) == ["x", "y", "z"]
    assert signature.parameters["z"].default is None


# flows.mdx "View the parameter schema for a flow": schleeb.parameters, the parameter schema
# built from the signature (the page marks this example notest)
def test_flow_parameters_schema() -> None:
    @flow
    def schleeb(x: int, y: str) -> None:
        pass

    schema = schleeb.parameters.model_json_schema()  # type: ignore[attr-defined]
    assert "properties" in schema


# flows.mdx: "Parameters are validated before a flow is run": invalid parameters fail the
# run without it entering Running
def test_invalid_parameters_fail_without_running(events: Any) -> None:
    ran: list[int] = []

    @flow(flow_run_name="invalid")
    def typed(x: int) -> None:
        ran.append(x)

    with pytest.raises(ParameterTypeError, match="x"):
        typed("not a number")  # type: ignore[arg-type]
    assert ran == []
    states = events.states("invalid")
    assert "Running" not in states
    assert states[-1] == "Failed"


# flows.mdx "Organize flows with subflows and tasks": flows call tasks and other flows; the
# child runs are linked to their parent
def test_a_child_flow_run_is_linked_to_its_parent() -> None:
    seen: dict[str, Any] = {}

    @flow
    def child() -> str:
        seen["child"] = runtime_flow_run.id
        seen["parent_of_child"] = runtime_flow_run.parent_flow_run_id
        return "child"

    @flow
    def parent() -> str:
        seen["parent"] = runtime_flow_run.id
        return child()

    assert parent() == "child"
    assert seen["parent_of_child"] == seen["parent"]
    assert seen["child"] != seen["parent"]


# flows.mdx "Considerations when nesting flows": the parent records the child through a task
# run of its own (Prefect: child_flow_run_id / parent_task_run_id in state_details)
def test_the_parent_holds_a_task_run_standing_for_the_child(events: Any) -> None:
    @flow
    def child() -> int:
        return 1

    @flow
    def parent() -> int:
        return child()

    parent()
    flows = {e.flow_run.flow.name: e.flow_run for e in events.of(FlowRunCreated)}
    child_run, parent_run = flows["child"], flows["parent"]
    stand_in = child_run.parent_task_run
    assert stand_in is not None
    assert stand_in.flow_run is parent_run
    assert stand_in.subflow_run is child_run
    assert stand_in in parent_run.task_runs


# flows.mdx "Considerations when nesting flows": nested flow runs "resolve any passed task
# futures into data"
def test_a_nested_flow_resolves_passed_futures_into_data() -> None:
    @task
    def make() -> list[int]:
        return [1, 2, 3]

    @flow
    def child(values: list[int]) -> int:
        assert isinstance(values, list)
        return sum(values)

    @flow
    def parent() -> int:
        return child(make.submit())  # type: ignore[arg-type]

    assert parent() == 6


# flows.mdx "Considerations when nesting flows": "When a nested flow run starts, it creates a
# new task runner for any tasks it contains. When the nested flow run completes, the task
# runner shuts down."
def test_a_nested_flow_has_its_own_task_runner_shut_down_at_its_end(events: Any) -> None:
    @task
    def work() -> int:
        return 1

    started_inside: list[bool] = []

    @flow
    def child() -> int:
        started_inside.append(runtime_flow_run_record().task_runner._started)
        return work.submit().result()

    @flow
    def parent() -> int:
        return work.submit().result() + child()

    assert parent() == 2
    runs = {e.flow_run.flow.name: e.flow_run for e in events.of(FlowRunCreated)}
    child_runner = runs["child"].task_runner
    parent_runner = runs["parent"].task_runner
    assert child_runner is not None
    assert parent_runner is not None
    assert child_runner is not parent_runner
    assert started_inside == [True]
    assert child_runner._started is False


# flows.mdx "Considerations when nesting flows": "Nested flow runs block execution of the
# parent flow run until completion."
def test_a_nested_flow_blocks_the_parent() -> None:
    order: list[str] = []

    @flow
    def child() -> None:
        time.sleep(0.05)
        order.append("child done")

    @flow
    def parent() -> None:
        child()
        order.append("parent goes on")

    parent()
    assert order == ["child done", "parent goes on"]


# flows.mdx "Considerations when nesting flows": "asynchronous nested flows can run
# concurrently with ... asyncio.gather"
def test_async_nested_flows_run_concurrently_with_gather() -> None:
    inside = 0
    most = 0
    lock = threading.Lock()

    @flow
    async def child(i: int) -> int:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        await asyncio.sleep(0.1)
        with lock:
            inside -= 1
        return i

    @flow
    async def parent() -> list[int]:
        return list(await asyncio.gather(child(1), child(2), child(3)))

    start = time.perf_counter()
    assert asyncio.run(parent()) == [1, 2, 3]
    assert most == 3
    assert time.perf_counter() - start < 0.3


# flows.mdx "Supported function types": synchronous and asynchronous functions
def test_sync_and_async_functions_are_flows() -> None:
    @flow
    def sync_flow(x: int) -> int:
        return x + 1

    @flow
    async def async_flow(x: int) -> int:
        await asyncio.sleep(0)
        return x + 2

    assert sync_flow(1) == 2
    assert asyncio.run(async_flow(1)) == 3
    state = asyncio.run(async_flow(1, return_state=True))  # type: ignore[call-arg]
    assert state.is_completed()


# flows.mdx: "Flows do not need to call other Prefect tasks or flows, but they can."
def test_a_flow_without_tasks_has_no_task_runs(events: Any) -> None:
    @flow
    def alone() -> int:
        return 42

    assert alone() == 42
    runs = events.of(FlowRunCreated)
    assert runs[0].flow_run.task_runs == []
    assert all(isinstance(e.run, type(runs[0].flow_run)) for e in events.of(StateChanged))
