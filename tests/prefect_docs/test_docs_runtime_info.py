"""docs/v3/how-to-guides/workflows/access-runtime-info.mdx ("How to access runtime
information"): the runtime module read inside and outside runs.

runtime.deployment is in test_api_small.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from flowbook import flow, tags, task
from flowbook.runtime import flow_run, task_run


# access-runtime-info.mdx, first example: flow_run.name inside the flow is the run's name, and
# "will change between workflow runs"
def test_flow_run_name_is_the_runs_and_changes_between_runs() -> None:
    @flow
    def moody_workflow(name: str) -> str:
        return f"I wish my parents had named me {name} instead of {flow_run.name}."

    first = moody_workflow("Marvin")
    second = moody_workflow("Marvin")
    assert first.startswith("I wish my parents had named me Marvin instead of ")
    assert "None" not in first
    assert first != second


# the same example, checked against the run's own name
def test_flow_run_name_matches_the_returned_state_of_the_run(events: Any) -> None:
    from flowbook.engine.events import FlowRunCreated

    @flow(flow_run_name="given-{x}")
    def named(x: int) -> Any:
        return flow_run.name, flow_run.id, flow_run.flow_name

    name, run_id, flow_name = named(3)
    created = events.of(FlowRunCreated)[0].flow_run
    assert (name, run_id, flow_name) == ("given-3", created.id, "named")


# access-runtime-info.mdx (Note): "Attributes of prefect.runtime will never error when
# accessed. If a value is not available, the attribute will be None."
@pytest.mark.parametrize("attr", ["id", "name", "flow_name", "parent_flow_run_id", "start_time"])
def test_flow_run_attributes_outside_a_run_are_none(attr: str) -> None:
    assert getattr(flow_run, attr) is None


@pytest.mark.parametrize("attr", ["id", "name", "task_name"])
def test_task_run_attributes_outside_a_run_are_none(attr: str) -> None:
    assert getattr(task_run, attr) is None


# the same note, inside a flow but outside any task: the task_run attributes are None
def test_task_run_inside_a_flow_but_outside_a_task_is_none() -> None:
    @flow
    def main() -> Any:
        return task_run.id, task_run.name, flow_run.name is not None

    assert main() == (None, None, True)


# access-runtime-info.mdx ("all available attributes"): a task reads its own run and its
# flow's
def test_task_run_and_flow_run_inside_a_task() -> None:
    @task(task_run_name="reader-{x}")
    def reader(x: int) -> dict[str, Any]:
        return {
            "task_run": task_run.name,
            "task_name": task_run.task_name,
            "parameters": task_run.parameters,
            "flow_run": flow_run.name,
        }

    @flow(flow_run_name="outer")
    def main() -> dict[str, Any]:
        return reader(5)

    assert main() == {
        "task_run": "reader-5",
        "task_name": "reader",
        "parameters": {"x": 5},
        "flow_run": "outer",
    }


# the runtime module's run_count: the attempt being run (1, then 2 on the first retry)
def test_run_count_counts_attempts() -> None:
    counts: list[int] = []

    @task(retries=1)
    def flaky() -> None:
        counts.append(task_run.run_count)
        if len(counts) == 1:
            raise ValueError("once")

    @flow
    def main() -> None:
        flaky()

    main()
    assert counts == [1, 2]


# the runtime module's tags and parameters of the flow run
def test_flow_run_tags_and_parameters() -> None:
    @flow
    def main(a: int, b: str = "x") -> Any:
        return set(flow_run.tags), flow_run.parameters

    with tags("nightly"):
        got_tags, parameters = main(1)
    assert got_tags == {"nightly"}
    assert parameters == {"a": 1, "b": "x"}


# a subflow knows its parent flow run
def test_parent_flow_run_id_in_a_subflow() -> None:
    @flow
    def child() -> Any:
        return flow_run.parent_flow_run_id

    @flow
    def parent() -> Any:
        return flow_run.id, child()

    parent_id, childs_parent = parent()
    assert childs_parent == parent_id


# how it fails: an attribute the module does not have is an AttributeError naming it and
# listing what there is
def test_an_unknown_attribute_names_it() -> None:
    with pytest.raises(AttributeError, match=r"'no_such'.*available: .*name"):
        flow_run.no_such  # noqa: B018 (the access is the test)
