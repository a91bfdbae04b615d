"""Prefect 1's functional API: ``with Flow("name") as flow:`` builds a graph, ``flow.run()``
runs it as an ordinary flowbook flow run and returns a Prefect 1-shaped state."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import flowbook
import flowbook.runs
import flowbook.tasks
from flowbook import Flow, Parameter, flow, task, unmapped
from flowbook.engine import state as p1
from flowbook.functional import Edge, FunctionalFlow, FunctionalFlowWarning

calls: list[tuple[str, Any]] = []


@task
def add(x: int, y: int) -> int:
    calls.append(("add", (x, y)))
    return x + y


@task
def inc(x: int) -> int:
    calls.append(("inc", x))
    return x + 1


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def pair(x: int) -> tuple[int, int]:
    return x, x * 10


@task
def record(tag: str) -> str:
    calls.append(("record", tag))
    return tag


@task
def fail(x: int) -> int:
    raise ValueError(f"cannot take {x}")


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls.clear()


def test_flow_with_a_name_is_a_functional_flow_and_the_decorator_form_is_unchanged() -> None:
    f = Flow("named-flow")
    assert isinstance(f, FunctionalFlow)
    assert isinstance(f, flowbook.Flow)
    assert f.name == "named-flow"
    assert f.project is None
    assert f.run_config is None
    assert f.executor is None

    def body() -> int:
        return 1

    plain = Flow(body)
    assert type(plain) is flowbook.Flow
    assert plain() == 1


def test_the_graph_matches_the_block() -> None:
    with Flow("graph-flow") as f:
        x = Parameter("x", default=1)
        y = Parameter("y", required=True)
        a = add(x, 2)
        b = inc.map([1, 2, 3])
        c = add(a, y=y, upstream_tasks=[b])
        d = inc.map(b)
        e = add.map(d, unmapped(c))
    assert f.tasks == {x, y, a, b, c, d, e}
    assert f.parameters() == {x, y}
    assert {(p.name, p.default, p.required) for p in f.parameters()} == {
        ("x", 1, False),
        ("y", None, True),
    }
    assert f.edges == {
        Edge(x, a, "x", False),
        Edge(a, c, "x", False),
        Edge(y, c, "y", False),
        Edge(b, c, None, False),
        Edge(b, d, "x", True),
        Edge(d, e, "x", True),
        Edge(c, e, "y", False),
    }
    assert f.root_tasks() == {x, y, b}
    assert f.terminal_tasks() == {e}
    assert f.reference_tasks() == {e}
    assert [n.slug for n in f.get_tasks(name="add")] == ["add-1", "add-2", "add-3"]
    order = f.sorted_tasks()
    assert order.index(a) < order.index(c) < order.index(e)
    assert calls == []  # building runs nothing


def test_a_run_passes_constants_parameters_and_results(events: Any) -> None:
    with Flow("values-flow") as f:
        x = Parameter("x", default=1)
        a = add(x, 2)
        many = inc.map([a, 10, 20])
        s = total(many)
        tens = add.map(many, unmapped(x))
    state = f.run(parameters={"x": 5})
    assert state.is_successful()
    assert state.is_finished()
    assert not state.is_failed()
    assert state.message == "All reference tasks succeeded."
    assert state.result[a].result == 7
    assert state.result[x].result == 5
    mapped = state.result[many]
    assert mapped.is_mapped()
    assert mapped.result == [8, 11, 21]
    assert [s.result for s in mapped.map_states] == [8, 11, 21]
    assert state.result[s].result == 40
    assert state.result[tens].result == [13, 16, 26]
    assert state.result[total].result == 40  # a task called once: the task works as key too
    with pytest.raises(KeyError, match="task 'add' is called 2 times in this flow"):
        state.result[add]


def test_indexing_and_unpacking() -> None:
    nout_pair = pair.with_options(nout=2)
    with Flow("index-flow") as f:
        p = pair(3)
        first = p[0]
        lo, hi = nout_pair(4)
    state = f.run()
    assert state.result[first].result == 3
    assert (state.result[lo].result, state.result[hi].result) == (4, 40)
    assert {n.name for n in f.tasks} == {"pair", "GetItem"}
    g = Flow("no-nout")
    with pytest.raises(TypeError, match=r"task 'pair' has no nout: .*@task\(nout=2\)"), g:
        _a, _b = pair(1)
    assert g.tasks  # the call itself was added


def test_the_same_task_twice_and_upstream_tasks_order_the_runs() -> None:
    with Flow("order-flow") as f:
        first = record("first")
        second = record("second", upstream_tasks=[first])
        record("third", upstream_tasks=[second])
    assert len(f.get_tasks(name="record")) == 3
    assert f.run().is_successful()
    assert calls == [("record", "first"), ("record", "second"), ("record", "third")]


def test_task_args_override_options_for_one_call() -> None:
    with Flow("task-args-flow") as f:
        plain = inc(1)
        renamed = inc(2, task_args={"name": "renamed-inc", "tags": ["p1"]})
    assert plain.name == "inc"
    assert renamed.name == "renamed-inc"
    assert f.run().result[renamed].result == 3
    bad = Flow("bad-task-args")
    with pytest.raises(TypeError, match="task_args must be a dict of task options"), bad:
        inc(1, task_args=["name"])


def test_a_failing_task_gives_prefect1_states_and_does_not_raise() -> None:
    with Flow("failing-flow") as f:
        good = inc(1)
        bad = fail(good)
        after = inc(bad)
        many = inc.map(bad)
    state = f.run()
    assert state.is_failed()
    assert state.is_finished()
    assert not state.is_successful()
    assert state.message == "Some reference tasks failed."
    assert state.result[good].is_successful()
    assert state.result[good].result == 2
    failed = state.result[bad]
    assert failed.is_failed()
    assert isinstance(failed, p1.Failed)
    assert isinstance(failed.result, ValueError)
    assert str(failed.result) == "cannot take 2"
    assert isinstance(state.result[after], p1.TriggerFailed)
    assert state.result[after].is_failed()
    assert isinstance(state.result[many], p1.TriggerFailed)
    # the flowbook run record ends the same way
    stored = flowbook.runs.list(flow="failing-flow", limit=1)[0]
    assert (stored.state, stored.message) == ("Failed", "Some reference tasks failed.")


def test_a_trigger_lets_a_task_run_after_a_failure() -> None:
    from flowbook.triggers import always_run

    cleanup = record.with_options(trigger=always_run)
    with Flow("trigger-flow") as f:
        bad = fail(1)
        done = cleanup("cleanup", upstream_tasks=[bad])
    state = f.run()
    assert state.result[done].is_successful()
    assert calls == [("record", "cleanup")]
    assert state.is_successful()  # the terminal task, the only reference task, succeeded


def test_reference_tasks_decide_the_flow_state() -> None:
    with Flow("reference-flow") as f:
        bad = fail(1)
        good = inc(1)
    f.set_reference_tasks([good])
    assert f.reference_tasks() == {good}
    state = f.run()
    assert state.is_successful()
    assert state.result[bad].is_failed()
    assert flowbook.runs.list(flow="reference-flow", limit=1)[0].state == "Completed"


def test_a_run_is_recorded_like_any_flow_run() -> None:
    with Flow("recorded-flow") as f:
        n = Parameter("n", default=2)
        inc.map([n, n])
    f.project = "tutorial"
    assert f.run(parameters={"n": 4}).is_successful()
    info = flowbook.runs.list(flow="recorded-flow", limit=1)[0]
    assert (info.state, info.project, info.task_runs) == ("Completed", "tutorial", 2)
    detail = flowbook.runs.get(info.id)
    assert detail.parameters == {"n": "4"}
    assert sorted(t["name"] for t in detail.task_run_list) == ["inc-0", "inc-1"]


def test_calling_the_flow_runs_it_the_flowbook_way() -> None:
    with Flow("called-flow") as f:
        bad = fail(Parameter("x", default=1))
    assert bad in f.tasks
    with pytest.raises(ValueError, match="cannot take 3"):
        f(x=3)


def test_parameter_errors_name_the_parameters() -> None:
    with Flow("param-errors") as f:
        inc(Parameter("needed"))
        inc(Parameter("optional", default=None))
    with pytest.raises(ValueError, match=r"needs a value for the required parameter\(s\) 'needed'"):
        f.run()
    with pytest.raises(ValueError, match=r"has no parameter\(s\) 'nope' \(its parameters: "):
        f.run(parameters={"needed": 1, "nope": 2})
    with pytest.raises(ValueError, match="already has a parameter named 'needed'"), f:
        Parameter("needed")


def test_a_cycle_is_refused_with_its_path() -> None:
    with Flow("cycle-flow") as f:
        a = inc(1)
        b = inc(a)
    with pytest.raises(ValueError, match=r"has a cycle: inc-1 -> inc-2 -> inc-1"):
        f.add_edge(b, a)


def test_imperative_api_and_reentering_a_flow() -> None:
    f = Flow("imperative-flow")
    x = Parameter("x", default=3)
    f.set_dependencies(inc, keyword_tasks={"x": x})
    with f:
        y = add(1, 1)
    with f:
        with Flow("inner-flow") as inner:
            inner_call = inc(0)
        z = add(y, 1)
    assert inner.tasks == {inner_call}
    assert z in f.tasks
    assert inner_call not in f.tasks
    state = f.run()
    assert state.result[inc].result == 4
    assert state.result[z].result == 3


def test_flow_options_of_prefect1() -> None:
    with pytest.warns(FunctionalFlowWarning, match=r"storage=, state_handlers= do nothing"):
        f = Flow("options-flow", storage=object(), state_handlers=[print])
    with pytest.raises(TypeError, match=r"got unknown option\(s\) 'colour'"):
        Flow("options-flow", colour="red")
    f.schedule = object()
    with f:
        inc(1)
    with pytest.warns(FunctionalFlowWarning, match="runs it once, now"):
        assert f.run().is_successful()
    with pytest.warns(FunctionalFlowWarning, match=r"flow.run\(context=\) do nothing"):
        f.run(run_on_schedule=False, context={})


def test_run_config_env_is_set_for_the_run_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowbook.run_configs import LocalRun

    monkeypatch.delenv("A1_GREETING", raising=False)
    seen: list[str | None] = []

    @task
    def look() -> None:
        seen.append(os.environ.get("A1_GREETING"))

    with Flow("env-flow") as f:
        look()
    f.run_config = LocalRun(env={"A1_GREETING": "Hello"})
    assert f.run().is_successful()
    assert seen == ["Hello"]
    assert "A1_GREETING" not in os.environ
    with pytest.raises(TypeError, match=r"a run config is one of flowbook\.run_configs"):
        f.run_config = {"env": {}}


def test_default_runner_is_sequential_and_an_executor_supplies_the_runner() -> None:
    from flowbook.executors import LocalDaskExecutor

    threads: list[int] = []

    @task
    def where(i: int) -> None:
        threads.append(threading.get_ident())
        time.sleep(0.2)

    with Flow("runner-flow") as f:
        where.map([1, 2, 3])
    started = time.monotonic()
    f.run()
    assert time.monotonic() - started >= 0.6
    f.executor = LocalDaskExecutor()
    started = time.monotonic()
    f.run()
    assert time.monotonic() - started < 0.55


def test_a_task_works_in_both_styles() -> None:
    @flow
    def decorated(n: int) -> int:
        return inc(n) + inc.submit(n).result()

    assert decorated(1) == 4
    with Flow("both-styles") as f:
        h = inc(1)
    assert f.run().result[h].result == 2
    assert decorated(2) == 6


def test_the_hook_costs_nothing_outside_a_block() -> None:
    assert flowbook.tasks._flow_blocks == 0
    with Flow("hook-flow"):
        assert flowbook.tasks._flow_blocks == 1
        # another thread has no block open: its calls run
        out: list[int] = []
        thread = threading.Thread(target=lambda: out.append(inc(1)))
        thread.start()
        thread.join()
        assert out == [2]
    assert flowbook.tasks._flow_blocks == 0


def test_fingerprint_is_stable_and_follows_the_graph() -> None:
    def build(y: int) -> FunctionalFlow:
        with Flow("print-flow") as f:
            add(Parameter("x", default=1), y)
        assert isinstance(f, FunctionalFlow)
        return f

    assert build(1).fingerprint() == build(1).fingerprint()
    assert build(1).fingerprint() != build(2).fingerprint()
    assert len(build(1).version) == 16


def test_visualize_without_graphviz_prints_text_and_writes_dot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)  # as if it were not installed
    with Flow("view-flow") as f:
        people = Parameter("people", default=[1])
        inc.map(people)
    text = f.visualize(filename=str(tmp_path / "g.dot"))
    assert text == (
        "Flow: view-flow\n"
        "  people (Parameter, default [1])\n"
        "  inc-1 (mapped) <- people as x (mapped)"
    )
    assert text in capsys.readouterr().out
    dot = (tmp_path / "g.dot").read_text()
    assert 'digraph "view-flow"' in dot
    assert 'label="x", style=dashed' in dot
    after = f.visualize(flow_state=f.run())
    assert "inc-1 (mapped) [Mapped]" in after
    with pytest.raises(ImportError, match=r"format='png'\) needs the graphviz package"):
        f.visualize(filename=str(tmp_path / "g"), format="png")


def test_register_delegates_to_the_registry() -> None:
    pytest.importorskip("flowbook.registry", reason="the flow registry is not there yet")
    with Flow("registered-flow") as f:
        inc(1)
    flow_id = f.register(project_name="tutorial")
    assert isinstance(flow_id, str)
    assert flow_id


def test_visualize_in_a_notebook_is_the_run_widgets_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("anywidget")
    from types import SimpleNamespace

    from flowbook.jupyter import extension

    monkeypatch.setattr(extension, "_frontend", SimpleNamespace(widgets=True))
    with Flow("widget-flow") as f:
        people = Parameter("people", default=[1, 2])
        inc.map(people)
    view = f.visualize()
    assert type(view).__name__ == "RunView"
    labels = {n["label"]: n["state"] for n in view.graph["nodes"]}
    assert labels == {"people (Parameter, default [1, 2])": "Pending", "inc-1 (mapped)": "Pending"}
    assert len(view.graph["edges"]) == 1
    assert view.header["flow"] == "widget-flow"
    ran = f.visualize(flow_state=f.run())
    assert {n["label"]: n["state"] for n in ran.graph["nodes"]}["inc-1 (mapped)"] == "Completed"
