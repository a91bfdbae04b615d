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


# -- review fixes --------------------------------------------------------------------------------
REGISTER_TWICE = """
from datetime import timedelta

from flowbook import Flow, Parameter, task
from flowbook.engine.cache_validators import all_inputs
from flowbook.triggers import always_run


def shout(**kwargs):
    return "loud"


@task(cache_for=timedelta(hours=1))
def a(x):
    return x


@task(cache_for=timedelta(hours=1), cache_validator=all_inputs, trigger=always_run,
      task_run_name=shout)
def b(x):
    return x


with Flow("fp-flow") as flow:
    b(a(Parameter("x", default=1)))
flow.register(project_name="fp")
"""


def test_registering_unchanged_code_from_two_processes_keeps_the_version(
    tmp_path: Path,
) -> None:
    import subprocess

    script = tmp_path / "fp.py"
    script.write_text(REGISTER_TWICE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env["FLOWBOOK_HOME"] = str(tmp_path / "home")
    outs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outs.append(done.stdout)
    assert "Version: 1\n" in outs[0]
    assert "Version: 1 (unchanged)" in outs[1]


def test_the_fingerprint_names_functions_by_code_not_by_address_or_module() -> None:
    from datetime import timedelta

    from flowbook.engine.cache_validators import all_inputs, duration_only

    def build(validator: Any) -> FunctionalFlow:
        cached = inc.with_options(cache_for=timedelta(hours=1), cache_validator=validator)
        with Flow("fp-options") as f:
            cached(1)
        assert isinstance(f, FunctionalFlow)
        return f

    text = build(duration_only)._compute_fingerprint()
    assert build(duration_only)._compute_fingerprint() == text
    assert build(all_inputs)._compute_fingerprint() != text


def test_version_is_computed_once_per_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    with Flow("fp-once") as f:
        inc(1)
    assert isinstance(f, FunctionalFlow)
    counted: list[int] = []
    compute = FunctionalFlow._compute_fingerprint

    def counting(self: FunctionalFlow) -> str:
        counted.append(1)
        return compute(self)

    monkeypatch.setattr(FunctionalFlow, "_compute_fingerprint", counting)
    assert f.run().is_successful()
    assert f.run().is_successful()
    first = f.version
    assert len(counted) == 1  # one computation for two runs (records, journal, writer)
    with f:
        inc(2)
    assert f.version != first
    assert len(counted) == 2


def test_parameters_given_as_keywords_and_an_executor_for_one_run() -> None:
    from flowbook.executors import LocalDaskExecutor

    threads: list[int] = []

    @task
    def where(x: int) -> int:
        threads.append(threading.get_ident())
        return x

    with Flow("kw-params") as f:
        x = Parameter("x", default=1)
        out = where(x)
    assert f.run(x=100).result[out].result == 100
    assert f.run(parameters={"x": 3}, x=100).result[out].result == 3  # parameters= wins
    assert threads == [threading.get_ident()] * 2
    state = f.run(x=5, executor=LocalDaskExecutor())
    assert state.result[out].result == 5
    assert threads[-1] != threading.get_ident()  # that run used the executor's runner
    assert f.executor is None
    with pytest.warns(FunctionalFlowWarning, match=r"flow.run\(context=\) do nothing"):
        assert f.run(x=7, context={}).result[out].result == 7
    with pytest.raises(TypeError, match=r"flow.run\(executor='dask'\): an executor is one of"):
        f.run(executor="dask")


@task
def double(x: int) -> int:
    return 2 * x


@task
def alert(value: Any) -> str:
    calls.append(("alert", type(value).__name__))
    return "alerted"


def test_a_trigger_is_asked_after_a_map_that_could_not_start() -> None:
    from flowbook.triggers import always_run, any_failed

    cleanup = record.with_options(trigger=always_run)
    on_failure = alert.with_options(trigger=any_failed)
    with Flow("not-run-trigger") as f:
        a = fail(1)
        d = double.map(a)
        done = cleanup("cleanup", upstream_tasks=[d])
        warned = on_failure(d)
        plain = inc(d)
        calm = alert.with_options(trigger=any_failed)(inc(1))
    state = f.run()
    assert isinstance(state.result[d], p1.TriggerFailed)
    assert state.result[done].is_successful()
    assert state.result[warned].result == "alerted"
    assert ("record", "cleanup") in calls
    assert ("alert", "UpstreamTaskError") in calls  # the not-run node's exception
    assert isinstance(state.result[plain], p1.TriggerFailed)
    refused = state.result[calm]
    assert isinstance(refused, p1.TriggerFailed)
    assert refused.message == 'Trigger was "any_failed" but none of the upstream tasks failed.'


def test_a_node_that_cannot_be_submitted_fails_alone() -> None:
    with Flow("bad-node") as f:
        o = inc(1)
        bad = add.map([1, 2, 3], [1, 2])
        after = inc(bad)
    state = f.run()
    assert state.is_failed()
    assert state.result[o].result == 2
    failed = state.result[bad]
    assert type(failed) is p1.Failed
    assert isinstance(failed.result, ValueError)
    assert "add.map() got iterables of different lengths" in failed.message
    assert isinstance(state.result[after], p1.TriggerFailed)


def test_a_map_after_a_slow_task_does_not_hold_up_other_branches() -> None:
    from flowbook.executors import LocalDaskExecutor

    @task
    def slow() -> list[int]:
        time.sleep(1.0)
        return [1, 2]

    @task
    def other() -> int:
        time.sleep(1.0)
        return 3

    with Flow("slow-map", executor=LocalDaskExecutor()) as f:
        d = double.map(slow())
        o = other()
    started = time.monotonic()
    state = f.run()
    assert time.monotonic() - started < 1.8
    assert state.result[d].result == [2, 4]
    assert state.result[o].result == 3


def test_a_mapped_task_with_a_failed_run_is_mapped_and_fails_the_flow() -> None:
    @task
    def picky(x: int) -> int:
        if x == 2:
            raise ValueError("not 2")
        return x

    with Flow("mapped-failure") as f:
        m = picky.map([1, 2, 3])
    state = f.run()
    mapped = state.result[m]
    assert mapped.is_mapped()
    assert mapped.is_successful()
    assert [type(s).__name__ for s in mapped.map_states] == ["Success", "Failed", "Success"]
    assert not p1.all_succeeded(mapped)
    assert state.is_failed()
    assert state.message == "Some reference tasks failed."
    assert flowbook.runs.list(flow="mapped-failure", limit=1)[0].state == "Failed"


def test_handles_in_namedtuples_reach_the_task_and_in_dict_subclasses_are_refused() -> None:
    from collections import OrderedDict, namedtuple

    Point = namedtuple("Point", "x y")

    @task
    def look(value: Any) -> Any:
        return value

    with Flow("containers") as f:
        a = inc(1)
        point = look(Point(a, 5))
        with pytest.raises(TypeError, match=r"'look' got a task's result inside a OrderedDict"):
            look(OrderedDict(k=a))
    state = f.run()
    assert state.result[point].result == Point(2, 5)
    assert type(state.result[point].result) is Point
    assert f.edges == {Edge(a, point, "value", False)}


def test_flow_option_warnings_point_at_the_callers_line() -> None:
    with pytest.warns(FunctionalFlowWarning) as seen:
        Flow("stack-flow", storage=object())
    assert seen[0].filename == __file__


def test_indexing_a_handle_after_its_block_closed_is_refused() -> None:
    with Flow("closed-block") as f:
        p = pair(3)
    with pytest.raises(TypeError, match=r"'pair'\[0\] adds a node to a flow: index a task's"):
        p[0]
    assert f.tasks == {p}
    with f:
        first = p[0]
    assert f.run().result[first].result == 3
