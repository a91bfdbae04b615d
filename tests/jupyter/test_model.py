"""The run widget's snapshot, computed from real runs (no kernel needed)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

import flowbook.runs
from flowbook import flow, get_run_logger, task
from flowbook.engine.events import FlowRunCreated, StateChanged, TaskRunCreated, bus
from flowbook.engine.runs import FlowRun, TaskRun
from flowbook.jupyter.layout import LayoutNode, layout
from flowbook.jupyter.model import FOLD, MAX_BARS, RunModel, build_timeline
from flowbook.task_runners import ConcurrentTaskRunner


class Feeder:
    """Feeds the models of top-level runs the way the notebook subscriber does."""

    def __init__(self) -> None:
        self.models: list[RunModel] = []
        self.by_flow: dict[str, RunModel] = {}

    def __call__(self, event: Any) -> None:
        if isinstance(event, FlowRunCreated):
            run = event.flow_run
            parent = run.parent_task_run
            if parent is None:
                model = RunModel(run)
                self.models.append(model)
                self.by_flow[run.id] = model
            elif parent.flow_run is not None and parent.flow_run.id in self.by_flow:
                self.by_flow[run.id] = self.by_flow[parent.flow_run.id]
            return
        run = event.task_run if isinstance(event, TaskRunCreated) else event.run
        if isinstance(run, TaskRun) and run.flow_run is not None:
            model = self.by_flow.get(run.flow_run.id)
            if model is not None:
                if isinstance(event, TaskRunCreated) and event.upstream_runs:
                    model.upstream_created(event.upstream_runs)
                model.task_run_changed(run)
                if isinstance(event, StateChanged):
                    model.state_entered(run, event.state)
        elif isinstance(run, FlowRun) and run.id in self.by_flow:
            self.by_flow[run.id].flow_run_changed()


@pytest.fixture
def feeder() -> Iterator[Feeder]:
    f = Feeder()
    bus.subscribe((FlowRunCreated, TaskRunCreated, StateChanged), f)
    yield f
    bus.unsubscribe(f)


@task
def inc(x: int) -> int:
    return x + 1


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def fail(x: int) -> int:
    raise ValueError(f"bad input {x}")


def nodes_by_label(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["label"]: n for n in graph["nodes"]}


def test_a_map_is_one_node_with_its_progress_and_a_downstream_edge(feeder: Feeder) -> None:
    @flow
    def pipeline(n: int) -> int:
        get_run_logger().info("starting")
        return total.submit(inc.map(range(n))).result()

    assert pipeline(20) == sum(range(1, 21))
    snap = feeder.models[0].snapshot(timeline=True)
    nodes = nodes_by_label(snap["graph"])
    mapped = nodes["inc.map"]
    assert mapped["kind"] == "map"
    assert (mapped["done"], mapped["total"]) == (20, 20)
    assert mapped["counts"] == {"Completed": 20}
    assert mapped["state"] == "Completed"
    downstream = next(n for n in snap["graph"]["nodes"] if n["label"].startswith("total"))
    edges = [{k: e[k] for k in ("from", "to", "kind")} for e in snap["graph"]["edges"]]
    assert {"from": mapped["key"], "to": downstream["key"], "kind": "data"} in edges
    # layered: the downstream node is right of the map node
    assert downstream["x"] > mapped["x"] + mapped["w"]
    header = snap["header"]
    assert header["flow"] == "pipeline"
    assert header["state"] == "Completed"
    assert (header["done"], header["total"]) == (21, 21)
    assert header["counts"] == {"Completed": 21}
    assert header["end"] is not None
    assert header["start"] is not None
    assert snap["timeline"]["total"] == 21
    assert len(snap["timeline"]["bars"]) == 21


def test_a_failed_run_shows_first_with_its_traceback(feeder: Feeder) -> None:
    @flow
    def mixed() -> Any:
        futures = [inc.submit(1), fail.submit(7)]
        for f in futures:
            f.wait()
        return futures  # (their results: the failure fails the flow)

    state = mixed(return_state=True)
    assert state.is_failed()
    snap = feeder.models[0].snapshot(timeline=False)
    failed = next(n for n in snap["graph"]["nodes"] if n["label"].startswith("fail"))
    assert failed["state"] == "Failed"
    run = failed["detail"]["runs"][0]
    assert run["traceback"] is not None
    assert "bad input 7" in run["traceback"]
    assert [s[0] for s in run["states"]] == ["Pending", "Running", "Failed"]
    assert run["inputs"] == '{"x": "7"}'
    ok = next(n for n in snap["graph"]["nodes"] if n["label"].startswith("inc"))
    assert ok["detail"]["runs"][0]["result"] == "2"
    assert snap["header"]["state"] == "Failed"


def test_edges_from_a_maps_runs_go_from_its_node_and_its_runs_have_no_entry_of_their_own(
    feeder: Feeder,
) -> None:
    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def pipeline(n: int) -> int:
        first = inc.map(range(n))
        second = double.map(first)  # each run depends on one run of the first map
        last = total.submit([2], wait_for=[first[3]])  # waits for one mapped run
        alone = inc.submit(second[0])  # gets one mapped run's result
        return sum(f.result() for f in second) + last.result() + alone.result()

    assert pipeline(30) == 2 * sum(range(1, 31)) + 2 + 3
    model = feeder.models[0]
    snap = model.snapshot(timeline=True)
    nodes = snap["graph"]["nodes"]
    maps = {n["label"]: n for n in nodes if n["kind"] == "map"}
    assert set(maps) == {"inc.map", "double.map"}
    assert (maps["double.map"]["done"], maps["double.map"]["total"]) == (30, 30)
    last = next(n for n in nodes if n["label"].startswith("total"))
    alone = next(n for n in nodes if n["kind"] == "task" and n["label"].startswith("inc"))
    edges = {(e["from"], e["to"]) for e in snap["graph"]["edges"]}
    assert edges == {
        (maps["inc.map"]["key"], maps["double.map"]["key"]),
        (maps["inc.map"]["key"], last["key"]),
        (maps["double.map"]["key"], alone["key"]),
    }
    assert snap["timeline"]["total"] == 62
    # the per-run index holds the two runs outside the maps; the maps' runs that later runs
    # depend on are remembered by their map, one entry each
    assert len(model._where) == 2
    assert set(model._mapped_upstream.values()) == set(model._map_nodes)
    assert len(model._mapped_upstream) == 30 + 1


def test_runs_waiting_for_a_whole_map_add_one_entry_per_mapped_run(feeder: Feeder) -> None:
    @flow
    def gated(n: int) -> int:
        first = inc.map(range(n))
        second = inc.map(range(n), wait_for=first)  # each run waits for every run of first
        return sum(second.result())

    assert gated(200) == sum(range(1, 201))
    model = feeder.models[0]
    snap = model.snapshot(timeline=False)
    maps = [n for n in snap["graph"]["nodes"] if n["kind"] == "map"]
    edges = {(e["from"], e["to"]) for e in snap["graph"]["edges"]}
    assert len(maps) == 2
    assert len(edges) == 1
    assert len(model._mapped_upstream) == 200  # not 200 per waiting run
    assert model._where == {}


def test_a_run_ending_in_a_state_of_its_own_keeps_no_history_beyond_what_the_run_holds(
    feeder: Feeder,
) -> None:
    calls: list[int] = []

    @task(cache_key_fn=lambda context, parameters: f"model-history-{parameters['x']}")
    def kept(x: int) -> int:
        calls.append(x)
        return x

    @task(retries=1, retry_delay_seconds=0)
    def flaky(x: int) -> int:
        calls.append(-x)
        if calls.count(-x) == 1:
            raise ValueError(f"first try of {x}")
        return x

    @flow
    def twice(n: int) -> list[int]:
        first = kept.map(range(n)).result()
        again = kept.map(range(n)).result()  # every run Cached
        return first + again + [flaky(n)]

    assert twice(40) == [*range(40), *range(40), 40]
    model = feeder.models[0]
    snap = model.snapshot(timeline=False)
    nodes = [n for n in snap["graph"]["nodes"] if n["kind"] == "map"]
    assert sorted(tuple(n["counts"].items()) for n in nodes) == [
        (("Cached", 40),),
        (("Completed", 40),),
    ]
    # the retried run's states are kept; a run that went straight to Cached keeps none
    assert len(model._history) == 1
    (cached,) = (n for n in nodes if n["counts"] == {"Cached": 40})
    assert cached["detail"]["runs"]
    for run in cached["detail"]["runs"]:
        assert [s[0] for s in run["states"]] == ["Pending", "Cached"]
    (retried,) = (n for n in snap["graph"]["nodes"] if n["label"].startswith("flaky"))
    (detail,) = retried["detail"]["runs"]
    assert [s[0] for s in detail["states"]] == [
        "Pending", "Running", "AwaitingRetry", "Retrying", "Completed"
    ]  # fmt: skip


def test_many_submits_of_one_task_fold_into_a_group(feeder: Feeder) -> None:
    @flow(task_runner=ConcurrentTaskRunner(4))
    def loop() -> None:
        for i in range(FOLD + 5):
            inc.submit(i)

    loop()
    snap = feeder.models[0].snapshot(timeline=False)
    assert len(snap["graph"]["nodes"]) == 1
    group = snap["graph"]["nodes"][0]
    assert group["kind"] == "group"
    assert group["total"] == FOLD + 5
    assert group["label"] == "inc"


def test_a_subflow_is_a_box_around_its_own_nodes(feeder: Feeder) -> None:
    @flow
    def child(x: int) -> int:
        return inc(x)

    @flow
    def parent() -> int:
        return child(inc(1))

    assert parent() == 3
    assert len(feeder.models) == 1
    snap = feeder.models[0].snapshot(timeline=False)
    nodes = snap["graph"]["nodes"]
    box = next(n for n in nodes if n["kind"] == "flow")
    inner = [n for n in nodes if n["parent"] == box["key"]]
    assert len(inner) == 1
    assert inner[0]["label"].startswith("inc")
    i = inner[0]
    assert box["x"] <= i["x"]
    assert i["x"] + i["w"] <= box["x"] + box["w"]
    assert box["y"] <= i["y"]
    assert i["y"] + i["h"] <= box["y"] + box["h"]
    assert box["state"] == "Completed"


def test_snapshots_are_incremental(feeder: Feeder) -> None:
    @flow
    def one() -> int:
        return inc(1)

    one()
    model = feeder.models[0]
    first = model.snapshot(timeline=False)
    assert set(first) >= {"header", "graph"}
    assert not model.pending()
    assert model.snapshot(timeline=False) == {}


def test_printed_lines_are_whole_lines(feeder: Feeder) -> None:
    @flow
    def quiet() -> None:
        pass

    quiet()
    model = feeder.models[0]
    model.add_output("stdout", "hel", "r", "t", "k")
    model.add_output("stdout", "lo\nwor", "r", "t", "k")
    snap = model.snapshot(timeline=False)
    assert [line[3] for line in snap["logs"]] == ["hello"]
    model.flush_output()
    snap = model.snapshot(timeline=False)
    assert [line[3] for line in snap["logs"]] == ["hello", "wor"]
    assert snap["logs_total"] == 2


def test_timeline_lanes_show_parallelism() -> None:
    t = time.time()
    runs = [
        (t, t + 1.0, "Completed", "COMPLETED", "n", "a", "task"),
        (t + 0.1, t + 0.5, "Completed", "COMPLETED", "n", "b", "task"),
        (t + 0.6, t + 0.9, "Completed", "COMPLETED", "n", "c", "task"),
        (t + 1.2, t + 1.5, "Completed", "COMPLETED", "n", "d", "task"),
    ]
    tl = build_timeline(runs, t, t + 2)
    lanes = {bar[6]: bar[0] for bar in tl["bars"]}
    assert tl["lanes"] == 2
    assert lanes == {"a": 0, "b": 1, "c": 1, "d": 0}
    many = [(t + i, t + i + 0.5, "Completed", "COMPLETED", "n", str(i), "x") for i in range(2500)]
    tl = build_timeline(many, t, None)
    assert tl["total"] == 2500
    assert len(tl["bars"]) == MAX_BARS
    assert tl["lanes"] == 1
    assert tl["groups"] == [{"task": "x", "lane": 0, "lanes": 1, "runs": MAX_BARS}]


def test_timeline_groups_lanes_by_task_in_start_order() -> None:
    # two tasks running side by side, four at a time each: their bars never share a lane
    t = 1_000_000.0
    runs = []
    for i in range(40):
        for name in ("load", "parse"):
            start = t + (i // 4) + (0.5 if name == "parse" else 0.0)
            runs.append((start, start + 0.9, "Completed", "COMPLETED", name, f"{name}-{i}", name))
    runs.append((t + 100, None, "Running", "RUNNING", "late", "late-0", "late"))
    tl = build_timeline(runs, t, None)
    assert [(g["task"], g["lane"], g["lanes"], g["runs"]) for g in tl["groups"]] == [
        ("load", 0, 4, 40),
        ("parse", 4, 4, 40),
        ("late", 8, 1, 1),
    ]
    assert tl["lanes"] == 9
    lanes_of: dict[str, set[int]] = {}
    for lane, _t0, _t1, _state, _type, _node, name in tl["bars"]:
        lanes_of.setdefault(name.split("-")[0], set()).add(lane)
    assert lanes_of == {"load": {0, 1, 2, 3}, "parse": {4, 5, 6, 7}, "late": {8}}
    # bars of one lane never overlap
    by_lane: dict[int, list[tuple[float, float]]] = {}
    for lane, t0, t1, *_ in tl["bars"]:
        by_lane.setdefault(lane, []).append((t0, t1 if t1 is not None else float("inf")))
    for spans in by_lane.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_the_timeline_of_a_run_groups_its_task_runs_by_task(feeder: Feeder) -> None:
    @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    def two_tasks() -> int:
        a = inc.map(range(6))
        b = [total.submit([i]) for i in range(3)]
        return sum(f.result() for f in a) + sum(f.result() for f in b)

    two_tasks()
    tl = feeder.models[0].snapshot(timeline=True)["timeline"]
    groups = {g["task"]: g for g in tl["groups"]}
    assert set(groups) == {"inc", "total"}
    assert (groups["inc"]["runs"], groups["total"]["runs"]) == (6, 3)
    for lane, *_rest, name in tl["bars"]:
        group = groups[name.rsplit("-", 1)[0]]
        assert group["lane"] <= lane < group["lane"] + group["lanes"], (name, lane, group)


def test_layout_puts_every_edge_left_to_right_without_overlaps() -> None:
    nodes = [LayoutNode(str(i), None, i) for i in range(6)]
    edges = [("0", "2"), ("1", "2"), ("2", "3"), ("0", "4"), ("4", "5"), ("3", "5")]
    width, height = layout(nodes, edges)
    pos = {n.key: n for n in nodes}
    for a, b in edges:
        assert pos[a].x + pos[a].w <= pos[b].x
    boxes = [(n.x, n.y, n.x + n.w, n.y + n.h) for n in nodes]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert all(n.x + n.w <= width and n.y + n.h <= height for n in nodes)


# -- the task runner's dashboard link -----------------------------------------------------------
# A local Dask cluster with its worker as a thread of this process: it starts in about a second.
IN_PROCESS = {
    "n_workers": 1,
    "threads_per_worker": 1,
    "processes": False,
    "dashboard_address": ":0",
}


@pytest.fixture
def dask_module() -> Iterator[Any]:
    """``flowbook.task_runners.dask``, with no local cluster before the test or after it."""
    from flowbook.task_runners import dask as fb_dask

    fb_dask.close_cluster()
    try:
        yield fb_dask
    finally:
        fb_dask.close_cluster()


@task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_the_header_gets_the_dask_dashboard_link_once_the_runner_connects(
    feeder: Feeder, dask_module: Any
) -> None:
    import html

    from flowbook.jupyter.html import render_html
    from flowbook.task_runners import DaskTaskRunner

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=IN_PROCESS))
    def on_dask() -> float:
        return nap.submit(1.0).result()

    handle = on_dask.run_background()
    model = feeder.models[0]  # made when the run was created: no task runner yet
    # what the widget updater does: a snapshot whenever something is pending
    seen: list[Any] = []
    # snapshots are incremental: the traits as the front end has them, updated by each one
    latest: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while not handle.done() and time.monotonic() < deadline:
        if model.pending():
            snap = model.snapshot(timeline=False)
            latest.update(snap)
            header = snap.get("header")
            if header is not None:
                seen.append(header["dashboard_link"])
        time.sleep(0.02)
    assert handle.wait(60)
    assert handle.state.name == "Completed"
    info = dask_module.cluster_info()
    assert info is not None
    link = info["dashboard_link"]
    assert link
    assert link.startswith("http")
    assert link in seen  # picked up while the run was going

    # the run's end: its runner has let go of the cluster, the header keeps the link
    latest.update(model.snapshot(timeline=True))
    final = latest
    assert final["header"]["state"] == "Completed"
    assert final["header"]["dashboard_link"] == link
    markup = render_html(final["header"], final["graph"], [], 0, final["timeline"])
    assert f'href="{html.escape(link)}" target="_blank" rel="noopener"' in markup
    assert "Dask dashboard" in markup


def test_the_header_has_no_dashboard_link_for_other_task_runners(feeder: Feeder) -> None:
    from flowbook.jupyter.html import render_html

    @flow(task_runner=ConcurrentTaskRunner())
    def on_threads() -> int:
        return inc.submit(1).result()

    on_threads()
    model = feeder.models[0]
    snap = model.snapshot(timeline=True)
    assert "dashboard_link" in snap["header"]
    assert snap["header"]["dashboard_link"] is None
    assert not model.pending()  # looking for a link marks nothing as changed
    assert model.snapshot(timeline=False) == {}
    markup = render_html(snap["header"], snap["graph"], [], 0, snap["timeline"])
    assert "Dask dashboard" not in markup
    assert "<a " not in markup


# -- one detail for live and stored runs ------------------------------------------------------


@task(retries=1, retry_delay_seconds=0)
def flaky(x: int) -> int:
    raise RuntimeError(f"flaky {x}")


@task(cache_key_fn=lambda ctx, params: f"k{params['x']}")
def keyed(x: int) -> int:
    return x * 2


def _details(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {run["id"]: run for node in snapshot["graph"]["nodes"] for run in node["detail"]["runs"]}


def _stored(run_id: str) -> dict[str, Any]:
    import flowbook.runs
    from flowbook.jupyter.model import StoredRun
    from flowbook.store import get_store

    store = get_store()
    assert store is not None
    store.flush()
    return StoredRun(flowbook.runs.get(run_id)).snapshot()


def test_live_and_stored_snapshots_of_a_run_give_the_same_node_details(feeder: Feeder) -> None:
    @flow(flow_run_name="same-details")
    def mixed(n: int) -> int:
        a = inc(n)
        keyed(a)
        try:
            flaky(a)
        except RuntimeError:
            pass
        return total([a, keyed(a)])

    state = mixed(3, return_state=True)
    assert state.is_completed()
    model = feeder.models[-1]
    live = _details(model.snapshot(timeline=True))
    stored = _details(_stored(model.flow_run.id))

    assert set(live) == set(stored)
    assert len(live) == 5
    for run_id, want in live.items():
        got = stored[run_id]
        assert set(got) == set(want)
        for key in ("id", "name", "task", "state", "state_type", "message", "run_count"):
            assert got[key] == want[key], (key, want["name"])
        for key in ("cache_key", "cache", "inputs"):
            assert got[key] == want[key], (key, want["name"])
        for key in ("start", "end", "duration"):
            assert got[key] == pytest.approx(want[key], abs=1e-3), (key, want["name"])
        assert [s[0] for s in got["states"]][:1] == ["Pending"]
        # the stored result's preview, read without unpickling, reads as the live one
        assert got["result"] == want["result"], want["name"]
        # the store has not the task's retries option
        assert got["retries"] is None

    by_name = {run["name"]: run for run in stored.values()}
    failed = by_name["flaky-0"]
    assert failed["state"] == "Failed"
    assert failed["run_count"] == 2
    assert failed["message"]
    assert "flaky 4" in failed["message"]
    # the stored traceback is the one the store's "Task run failed with exception" line holds
    # (as it was when the run failed; the live one has grown as the exception went up)
    assert failed["traceback"].startswith("Traceback (most recent call last):")
    assert ', in flaky\n    raise RuntimeError(f"flaky {x}")' in failed["traceback"]
    assert "RuntimeError: flaky 4" in failed["traceback"]
    assert "Retrying" in [s[0] for s in failed["states"]]
    assert live[failed["id"]]["retries"] == 1
    assert "ValueError" not in (live[failed["id"]]["traceback"] or "")
    assert "RuntimeError" in (live[failed["id"]]["traceback"] or "")
    assert by_name["inc-0"]["inputs"] == '{"x": "3"}'
    assert by_name["flaky-0"]["inputs"] == '{"x": "4"}'
    assert [r["cache"] for n, r in sorted(by_name.items()) if n.startswith("keyed")] == [
        "miss",
        "hit",
    ]


def test_a_stored_snapshot_without_the_store_open_has_no_inputs() -> None:
    from types import SimpleNamespace

    from flowbook.jupyter.model import StoredRun, stored_run_detail

    row = {
        "id": "t1",
        "name": "a-0",
        "task_name": "a",
        "state": "Failed",
        "state_type": "FAILED",
        "message": "boom",
        "states": [],
        "start_time": "2026-01-01T00:00:00+00:00",
        "end_time": "2026-01-01T00:00:02+00:00",
        "run_count": 3,
        "cache_key": None,
        "subflow_run_id": None,
        "upstream": [],
    }
    detail = stored_run_detail(row)
    assert detail["duration"] == 2.0
    assert detail["inputs"] is None
    assert detail["traceback"] == "boom"
    assert detail["cache"] == "off"
    run = SimpleNamespace(
        id="f",
        name="r",
        flow_name="f",
        state="Failed",
        state_type="FAILED",
        message=None,
        start_time=None,
        end_time=None,
        task_run_list=[row],
        logs=[],
    )
    snap = StoredRun(run, inputs={"t1": "{'x': 1}"}).snapshot()
    (node,) = snap["graph"]["nodes"]
    assert node["detail"]["runs"][0]["inputs"] == "{'x': 1}"
    assert node["detail"]["runs"][0]["run_count"] == 3


def test_a_stored_runs_printed_lines_show_as_prints(feeder: Feeder) -> None:
    # printed text is stored with its stream as the logger (docs/behaviour.md, "printed
    # text"); read back, the Logs tab names it as the live widget does
    import dataclasses

    from flowbook.jupyter.model import StoredRun

    @flow(flow_run_name="printed-lines")
    def quiet() -> int:
        return 1

    quiet()
    detail = flowbook.runs.get(feeder.models[-1].flow_run.id)
    stamp = detail.start_time
    lines = [
        {"timestamp": stamp, "level": 20, "logger": "stdout", "task_run_id": None,
         "message": "hello"},
        {"timestamp": stamp, "level": 30, "logger": "stderr", "task_run_id": None,
         "message": "careful"},
        {"timestamp": stamp, "level": 20, "logger": "flowbook.flow_runs", "task_run_id": None,
         "message": "logged"},
    ]  # fmt: skip
    snap = StoredRun(dataclasses.replace(detail, logs=lines)).snapshot()
    assert [(row[1], row[3]) for row in snap["logs"]] == [
        ("PRINT", "hello"),
        ("STDERR", "careful"),
        ("INFO", "logged"),
    ]


@task
def named_done(x: int) -> Any:
    from flowbook.states import Completed

    return Completed(name=f"Done-{x}")


def test_more_state_names_than_codes_hold_still_count_every_run(feeder: Feeder) -> None:
    # 200 custom names of completed states, more than a state code holds: the model keeps
    # counting (it once recursed for ever looking for a code), every run in the snapshot
    @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    def many_names() -> None:
        named_done.map(range(200)).wait()

    many_names()
    snap = feeder.models[-1].snapshot(timeline=False)
    node = nodes_by_label(snap["graph"])["named_done.map"]
    assert (node["done"], node["total"]) == (200, 200)
    assert sum(node["counts"].values()) == 200
