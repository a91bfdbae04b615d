"""docs/v3/concepts/runtime-context.mdx ("Runtime context") and
docs/v3/how-to-guides/workflows/access-runtime-info.mdx ("How to access runtime information"),
with src/prefect/runtime/*.py and src/prefect/context.py for the attributes they list.

Each test names the page (PrefectHQ/prefect repository) and section it follows. The Dask test
uses a cluster of threads, as tests/prefect_docs/test_docs_dask.py does.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest

import flowbook
import flowbook.context
from flowbook import flow, task
from flowbook import runtime as fb_runtime
from flowbook.context import FlowRunContext, TaskRunContext, get_run_context
from flowbook.exceptions import MissingContextError
from flowbook.runtime import _mock, deployment, flow_run, task_run
from flowbook.task_runners import ThreadPoolTaskRunner

CONTEXT = "docs/v3/concepts/runtime-context.mdx"
INFO = "docs/v3/how-to-guides/workflows/access-runtime-info.mdx"
UTC = datetime.timezone.utc


# -- runtime-context.mdx, "Mock values through environment variable" -------------------------


# "export PREFECT__RUNTIME__TASK_RUN__FAKE_KEY='foo'" ... "print(task_run.fake_key)  # foo":
# a variable for a name the submodule does not have adds it, as a string
def test_a_mock_adds_an_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AttributeError):
        _ = task_run.fake_key
    monkeypatch.setenv("FLOWBOOK__RUNTIME__TASK_RUN__FAKE_KEY", "foo")
    assert task_run.fake_key == "foo"
    monkeypatch.setenv("FLOWBOOK__RUNTIME__FLOW_RUN__FAKE_KEY", "bar")
    monkeypatch.setenv("FLOWBOOK__RUNTIME__DEPLOYMENT__FAKE_KEY", "baz")
    assert (flow_run.fake_key, fb_runtime.deployment.fake_key) == ("bar", "baz")


# "If the environment variable mocks an existing runtime attribute, the value is cast to the
# same type": an int stays an int, None (no run) gives the string
def test_a_mock_of_an_existing_attribute_is_cast_to_its_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWBOOK__RUNTIME__TASK_RUN__RUN_COUNT", "3")
    monkeypatch.setenv("FLOWBOOK__RUNTIME__FLOW_RUN__ID", "1234")
    monkeypatch.setenv("FLOWBOOK__RUNTIME__DEPLOYMENT__NAME", "nightly")
    assert task_run.run_count == 3
    assert flow_run.id == "1234"
    assert deployment.name == "nightly"


# the page's own example of a use: "manually setting an ID or a scheduled start time"; a
# naive time is UTC, an aware one is converted to UTC
def test_a_mocked_scheduled_start_time_is_a_utc_datetime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWBOOK__RUNTIME__FLOW_RUN__SCHEDULED_START_TIME", "2024-01-02T03:04:05")
    assert flow_run.scheduled_start_time == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    monkeypatch.setenv(
        "FLOWBOOK__RUNTIME__FLOW_RUN__SCHEDULED_START_TIME", "2024-01-02T05:04:05+02:00"
    )
    assert flow_run.scheduled_start_time == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    monkeypatch.setenv("FLOWBOOK__RUNTIME__FLOW_RUN__SCHEDULED_START_TIME", "2024-01-02T03:04Z")
    assert flow_run.scheduled_start_time == datetime.datetime(2024, 1, 2, 3, 4, tzinfo=UTC)


# "This works for runtime attributes of basic types (bool, int, float and str)": no runtime
# attribute is a bool or a float today, so the casting rule is checked on a field of its own
def test_bool_and_float_mocks_are_cast() -> None:
    import os

    fields = {"flag": lambda: False, "ratio": lambda: 0.5}
    os.environ["FLOWBOOK__RUNTIME__TEST__FLAG"] = "True"
    os.environ["FLOWBOOK__RUNTIME__TEST__RATIO"] = "2.5"
    try:
        assert _mock.read("m", "test", "flag", fields) is True
        assert _mock.read("m", "test", "ratio", fields) == 2.5
        os.environ["FLOWBOOK__RUNTIME__TEST__FLAG"] = "false"
        assert _mock.read("m", "test", "flag", fields) is False
    finally:
        del (
            os.environ["FLOWBOOK__RUNTIME__TEST__FLAG"],
            os.environ["FLOWBOOK__RUNTIME__TEST__RATIO"],
        )


# the mock wins inside a run too (the value read when the attribute is accessed)
def test_a_mock_overrides_the_value_inside_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    @task
    def reader() -> tuple[Any, Any, Any]:
        return task_run.name, task_run.run_count, flow_run.name

    @flow(flow_run_name="real-name")
    def main() -> tuple[Any, Any, Any]:
        return reader()

    assert main() == ("reader-0", 1, "real-name")
    monkeypatch.setenv("FLOWBOOK__RUNTIME__FLOW_RUN__NAME", "mocked-name")
    monkeypatch.setenv("FLOWBOOK__RUNTIME__TASK_RUN__RUN_COUNT", "7")
    assert main() == ("reader-0", 7, "mocked-name")


# "For complex types like list or dict, we suggest mocking them using monkeypatch": a mock of
# one fails, naming the variable and its value
def test_a_mock_of_a_dict_attribute_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWBOOK__RUNTIME__FLOW_RUN__PARAMETERS", "{'x': 1}")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "FLOWBOOK__RUNTIME__FLOW_RUN__PARAMETERS=\"{'x': 1}\": flowbook.runtime.flow_run."
            "parameters is a dict, which cannot be mocked through an environment variable"
        ),
    ):
        _ = flow_run.parameters


# bad values name the variable and the value
def test_a_mock_that_does_not_cast_names_the_variable_and_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWBOOK__RUNTIME__TASK_RUN__RUN_COUNT", "three")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "FLOWBOOK__RUNTIME__TASK_RUN__RUN_COUNT='three' cannot be read as the int that "
            "flowbook.runtime.task_run.run_count is"
        ),
    ):
        _ = task_run.run_count
    monkeypatch.setenv("FLOWBOOK__RUNTIME__FLOW_RUN__SCHEDULED_START_TIME", "yesterday")
    with pytest.raises(ValueError, match=r"SCHEDULED_START_TIME='yesterday' cannot be read as"):
        _ = flow_run.scheduled_start_time
    monkeypatch.setenv("FLOWBOOK__RUNTIME__T__FLAG", "maybe")
    with pytest.raises(ValueError, match=r"FLOWBOOK__RUNTIME__T__FLAG='maybe'.*not a boolean"):
        _mock.read("m", "t", "flag", {"flag": lambda: True})


# -- runtime-context.mdx, "Access runtime information" ---------------------------------------


# the page's example, run without a deployment: "I belong to deployment None", the task's
# own name, and the flow run's parameters read from inside the task
def test_the_pages_example_reads_flow_task_and_deployment(caplog: pytest.LogCaptureFixture) -> None:
    @flow(log_prints=True)
    def my_flow(x: int) -> Any:
        print("My name is", fb_runtime.flow_run.name)
        print("I belong to deployment", fb_runtime.deployment.name)
        return my_task(2), fb_runtime.flow_run.name

    @task
    def my_task(y: int) -> Any:
        print("My name is", fb_runtime.task_run.name)
        print("Flow run parameters:", fb_runtime.flow_run.parameters)
        return fb_runtime.task_run.name, fb_runtime.flow_run.parameters

    caplog.set_level("INFO")
    (task_name, params), flow_name = my_flow(1)
    assert (task_name, params) == ("my_task-0", {"x": 1})
    messages = caplog.messages
    assert f"My name is {flow_name}" in messages
    assert "I belong to deployment None" in messages
    assert "My name is my_task-0" in messages
    assert "Flow run parameters: {'x': 1}" in messages


# "When information is not available, the runtime always returns an empty value"
def test_outside_runs_the_runtime_gives_empty_values() -> None:
    assert (flow_run.id, flow_run.name, task_run.id, deployment.id) == (None, None, None, None)
    assert (flow_run.parameters, task_run.parameters, deployment.parameters) == ({}, {}, {})
    assert (flow_run.tags, task_run.tags, flow_run.run_count, task_run.run_count) == ((), (), 0, 0)


# -- runtime-context.mdx, "Access the run context directly" ----------------------------------


# "get_run_context() ... raises an exception if no run context is available"
def test_get_run_context_outside_runs_raises() -> None:
    with pytest.raises(
        MissingContextError,
        match=re.escape("get_run_context() was called outside a flow or task run"),
    ):
        get_run_context()


# "Unlike get_run_context, these method calls do not raise an error if the context is
# unavailable. Instead, they return None."
def test_context_get_outside_runs_is_none() -> None:
    assert FlowRunContext.get() is None
    assert TaskRunContext.get() is None


# "If a task run context is available, it is returned even if a flow run context is
# available"; "this allows you to access the flow run context from a task run"
def test_get_run_context_prefers_the_task_run_and_the_flow_context_is_reachable() -> None:
    @task
    def inner(y: int) -> dict[str, Any]:
        ctx = get_run_context()
        flow_ctx = FlowRunContext.get()
        assert isinstance(ctx, TaskRunContext)
        assert flow_ctx is not None
        assert ctx == TaskRunContext.get()
        return {
            "task_run": (ctx.task_run.name, ctx.task_run.id, ctx.task_run.flow_run_id),
            "task": ctx.task.name,
            "parameters": ctx.parameters,
            "flow_run": flow_ctx.flow_run.id,
        }

    @flow
    def outer(x: int) -> tuple[Any, Any]:
        ctx = get_run_context()
        assert isinstance(ctx, FlowRunContext)
        assert TaskRunContext.get() is None
        return ctx.flow_run.id, inner(x + 1)

    flow_run_id, seen = outer(1)
    assert seen["task_run"][0] == "inner-0"
    assert seen["task_run"][2] == flow_run_id == seen["flow_run"]
    assert (seen["task"], seen["parameters"]) == ("inner", {"y": 2})


# the attributes Prefect users read on the flow run context (src/prefect/context.py,
# EngineContext): flow_run (id, name, parameters, tags, run_count), flow, parameters,
# task_runner, start_time, log_prints
def test_flow_run_context_attributes() -> None:
    runner = ThreadPoolTaskRunner(max_workers=2)

    @flow(flow_run_name="ctx-{x}", log_prints=True, task_runner=runner)
    def main(x: int, y: str = "b") -> FlowRunContext:
        with flowbook.tags("t1"):
            pass
        ctx = FlowRunContext.get()
        assert ctx is not None
        return ctx

    before = datetime.datetime.now(UTC)
    ctx = main(3)
    fr = ctx.flow_run
    assert (fr.name, fr.parameters, fr.run_count, fr.flow_name) == (
        "ctx-3",
        {"x": 3, "y": "b"},
        1,
        "main",
    )
    assert fr.state is not None
    assert fr.state.is_completed()
    assert ctx.flow is main
    assert ctx.parameters == {"x": 3, "y": "b"}
    assert ctx.task_runner is runner or type(ctx.task_runner) is type(runner)
    assert ctx.log_prints is True
    assert before - datetime.timedelta(seconds=1) <= ctx.start_time <= datetime.datetime.now(UTC)
    assert ctx.start_time.tzinfo is not None


def test_task_run_context_attributes() -> None:
    @task(tags=["heavy"], retries=1)
    def work(a: int, b: int = 2) -> TaskRunContext:
        ctx = TaskRunContext.get()
        assert ctx is not None
        if ctx.task_run.run_count == 1:
            raise RuntimeError("first attempt fails")
        return ctx

    @flow
    def main() -> TaskRunContext:
        return work(1)

    ctx = main()
    tr = ctx.task_run
    assert (tr.name, tr.run_count, tr.tags, tr.parameters) == (
        "work-0",
        2,
        ("heavy",),
        {"a": 1, "b": 2},
    )
    assert ctx.task is work
    assert ctx.parameters == {"a": 1, "b": 2}
    assert ctx.log_prints is False
    assert ctx.start_time.tzinfo is not None


# a flow called inside a task runs its body with its own flow run's context (Prefect's
# get_run_context prefers the flow context when the flow run is not the task's)
def test_a_flow_inside_a_task_gets_its_own_flow_context() -> None:
    @flow
    def child() -> tuple[str, str | None, str | None]:
        ctx = get_run_context()
        assert isinstance(ctx, FlowRunContext)
        return type(ctx).__name__, ctx.flow_run.id, flow_run.parent_flow_run_id

    @task
    def wrapper() -> Any:
        return child()

    @flow
    def parent() -> tuple[Any, str]:
        return wrapper(), flow_run.id

    (kind, child_id, parent_id), parent_run_id = parent()
    assert kind == "FlowRunContext"
    assert child_id != parent_run_id
    assert parent_id == parent_run_id


# "Prefect does not send the flow run context to distributed task workers": on a Dask worker
# FlowRunContext.get() is None, the task run's context is there
def test_no_flow_run_context_on_dask_workers() -> None:
    pytest.importorskip("distributed")
    from flowbook.task_runners import DaskTaskRunner
    from flowbook.task_runners import dask as fb_dask

    threads = {
        "processes": False,
        "n_workers": 1,
        "threads_per_worker": 1,
        "dashboard_address": ":0",
    }

    @task
    def where() -> tuple[bool, str | None, str | None]:
        task_ctx = TaskRunContext.get()
        return (
            FlowRunContext.get() is None,
            task_ctx.task_run.name if task_ctx else None,
            flow_run.name,
        )

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=threads))
    def main() -> Any:
        return where.submit().result(), flow_run.name

    try:
        (no_flow_ctx, task_name, seen_flow_name), flow_name = main()
    finally:
        fb_dask._close_all()
    assert no_flow_ctx
    assert task_name == "where-0"
    assert seen_flow_name == flow_name


# Prefect 1's flowbook.context API is still there next to the context classes
def test_prefect1_context_api_still_works() -> None:
    @flow(flow_run_name="p1")
    def main() -> Any:
        ctx = flowbook.context
        return ctx.get("flow_run_name"), ctx.flow_run_name, ctx["flow_run_name"], ctx.get("nope", 5)

    assert main() == ("p1", "p1", "p1", 5)
    with flowbook.context(a=1):
        assert flowbook.context.a == 1
        assert flowbook.context.get("a") == 1


# -- access-runtime-info.mdx and src/prefect/runtime/*.py: every listed attribute ------------


# "Attributes of prefect.runtime will never error when accessed"
@pytest.mark.parametrize("module", [flow_run, task_run, deployment], ids=lambda m: m.__name__)
def test_every_listed_attribute_reads_outside_runs(module: Any) -> None:
    for name in module.__all__:
        getattr(module, name)


# outside runs: the empty values Prefect gives without a run or a deployment
def test_listed_attributes_outside_runs() -> None:
    now = datetime.datetime.now(UTC)
    scheduled = flow_run.scheduled_start_time
    assert abs((scheduled - now).total_seconds()) < 5
    assert scheduled.tzinfo is not None
    for name in (
        "flow_version", "parent_flow_run_id", "parent_deployment_id", "root_flow_run_id",
        "job_variables", "api_url", "ui_url",
    ):  # fmt: skip
        assert getattr(flow_run, name) is None, name
    assert (task_run.api_url, task_run.ui_url) == (None, None)


# inside nested flows: parent and root flow run ids, the flow's version, the start time
def test_listed_attributes_inside_nested_flows() -> None:
    @flow(version="v7")
    def leaf() -> dict[str, Any]:
        return {
            name: getattr(flow_run, name)
            for name in (
                "id",
                "parent_flow_run_id",
                "root_flow_run_id",
                "flow_version",
                "scheduled_start_time",
                "parent_deployment_id",
                "job_variables",
                "api_url",
            )
        }

    @flow
    def middle() -> tuple[Any, str]:
        return leaf(), flow_run.id

    @flow
    def top() -> tuple[Any, Any, str, str | None]:
        return middle(), flow_run.root_flow_run_id, flow_run.id, flow_run.flow_version

    before = datetime.datetime.now(UTC) - datetime.timedelta(seconds=1)
    (seen, middle_id), top_root, top_id, top_version = top()
    assert top_root == top_id
    assert top_version == top.version
    assert seen["parent_flow_run_id"] == middle_id
    assert seen["root_flow_run_id"] == top_id
    assert seen["flow_version"] == "v7"
    assert before <= seen["scheduled_start_time"] <= datetime.datetime.now(UTC)
    assert (seen["parent_deployment_id"], seen["job_variables"], seen["api_url"]) == (None,) * 3


# the task run's listed attributes inside a task, and the flow run's read from a task
def test_listed_task_run_attributes_inside_a_task() -> None:
    @task(tags=["x"])
    def reader(a: int) -> dict[str, Any]:
        return {
            "id": task_run.id,
            "name": task_run.name,
            "task_name": task_run.task_name,
            "parameters": task_run.parameters,
            "run_count": task_run.run_count,
            "tags": task_run.tags,
            "api_url": task_run.api_url,
            "flow_run_id": flow_run.id,
            "root": flow_run.root_flow_run_id,
        }

    @flow
    def main() -> tuple[Any, str]:
        return reader(4), flow_run.id

    seen, flow_id = main()
    assert isinstance(seen["id"], str)
    assert seen["id"]
    assert (seen["name"], seen["task_name"], seen["parameters"]) == ("reader-0", "reader", {"a": 4})
    assert (seen["run_count"], seen["tags"], seen["api_url"]) == (1, ("x",), None)
    assert seen["flow_run_id"] == flow_id == seen["root"]


@pytest.fixture(autouse=True)
def _no_runtime_mocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FLOWBOOK__RUNTIME__"):
            monkeypatch.delenv(name)
