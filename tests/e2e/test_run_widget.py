"""The run widget in a real browser, in JupyterLab 4 and Notebook 7 (docs/widget-protocol.md).

Each test writes a notebook into the server's root, opens it in Chromium, runs its cells and
checks the widget's DOM (graph, logs, detail, timeline, Cancel), where printed output ends up,
and that the page logged no errors. Screenshots of every widget go to the artifacts directory.
"""

from __future__ import annotations

import re
import textwrap
import time
from typing import Any

import pytest
from jupyter_ui import (
    assert_no_cell_errors,
    cell,
    cell_outputs,
    new_notebook,
    notebook_url,
    open_notebook,
    run_all,
    run_cells,
    stream_text,
    wait_executed,
)
from playwright.sync_api import Locator, Page, expect

pytestmark = pytest.mark.e2e

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
SETUP = "%load_ext flowbook\nimport time\nfrom flowbook import flow, get_run_logger, task"


def code(source: str) -> str:
    return textwrap.dedent(source).strip()


def open_new_notebook(page: Page, server: Any, stem: str, cells: list[str]) -> Locator:
    name = server.write_notebook(f"{stem}-{server.app}.ipynb", new_notebook(cells))
    return open_notebook(page, notebook_url(server.base_url, server.token, server.app, name))


def run_widget(panel: Locator, cell_index: int) -> Locator:
    """The run widget shown in the output of cell ``cell_index``."""
    return cell(panel, cell_index).locator(".jp-OutputArea div.fb-run")


def label_of(task: str) -> re.Pattern[str]:
    """A node's label names its task (``total-0``, ``square.map``, ...)."""
    return re.compile(rf"^{task}\b")


def node(widget: Locator, task: str) -> Locator:
    """The graph node of the task ``task``."""
    label = widget.page.locator("text.fb-node-label", has_text=label_of(task))
    return widget.locator("svg.fb-graph g.fb-node").filter(has=label)


def log_messages(widget: Locator) -> list[str]:
    rows = widget.locator("div.fb-pane[data-pane=logs] div.fb-log-row .fb-log-msg")
    return rows.all_text_contents()


def widget_outputs(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in outputs if WIDGET_MIME in o.get("data", {})]


def elapsed(t0: float) -> str:
    return f"{time.monotonic() - t0:5.1f} s"


# --- a: graph, logs, detail, timeline of a finished run with a failure -----------------------

PIPELINE = code(
    """
    @task
    def square(x):
        get_run_logger().info(f"squaring {x}")
        time.sleep(0.05)
        return x * x

    @task
    def total(values):
        print(f"printed: total of {len(values)} values")
        return sum(values)

    @task
    def explode():
        get_run_logger().error("explode is about to fail")
        raise ValueError("boom: e2e failure 42")

    @flow
    def pipeline(n):
        squares = square.map(range(n))
        result = total.submit(squares)
        exploded = explode.submit()
        return result.result(), exploded.result()

    state = pipeline(20, return_state=True)
    """
)


def test_graph_logs_detail_timeline(
    jupyter_server: Any, page: Page, console_errors: list[str], artifacts: Any
) -> None:
    t0 = time.monotonic()
    panel = open_new_notebook(
        page, jupyter_server, "pipeline", [SETUP, PIPELINE, 'print("final state:", state.name)']
    )
    print("notebook open, kernel idle:", elapsed(t0))
    run_all(page)
    print("cells ran:", elapsed(t0))
    assert_no_cell_errors(page, 3)
    assert "final state: Failed" in stream_text(wait_executed(page, 2)["outputs"])

    # the run's cell shows the widget and nothing else: prints and log lines went into it
    outputs = wait_executed(page, 1)["outputs"]
    assert len(widget_outputs(outputs)) == 1, outputs
    assert not [o for o in outputs if o["output_type"] == "stream"], outputs

    widget = run_widget(panel, 1)
    expect(widget).to_have_count(1)
    expect(widget).to_have_attribute("data-state", "Failed")
    header = widget.locator(".fb-header")
    expect(header.locator(".fb-flow")).to_have_text("pipeline")
    expect(header.locator(".fb-state")).to_have_text("Failed")
    expect(header.locator(".fb-progress")).to_contain_text("22/22")
    expect(header.locator("span.fb-count[data-state=Completed]")).to_have_text("Completed 21")
    expect(header.locator("span.fb-count[data-state=Failed]")).to_have_text("Failed 1")
    expect(widget.locator("button.fb-cancel")).to_have_count(0)  # not a background run

    # graph: one map node over 20 runs, the downstream task, the failing task
    expect(widget.locator("button.fb-tab[data-tab=graph]")).to_have_class(re.compile("fb-active"))
    expect(widget.locator("svg.fb-graph g.fb-node")).to_have_count(3)
    squares, total, explode = node(widget, "square"), node(widget, "total"), node(widget, "explode")
    expect(squares).to_have_attribute("data-kind", "map")
    expect(squares.locator("text.fb-node-progress")).to_have_text("20/20")
    expect(squares).to_have_attribute("data-state", "Completed")
    expect(total).to_have_attribute("data-kind", "task")
    expect(total).to_have_attribute("data-state", "Completed")
    expect(explode).to_have_attribute("data-state", "Failed")
    square_key = squares.get_attribute("data-key")
    total_key = total.get_attribute("data-key")
    expect(
        widget.locator(f'path.fb-edge[data-from="{square_key}"][data-to="{total_key}"]')
    ).to_have_count(1)
    artifacts.element(widget, "graph")

    # node detail: the failed task's states and traceback, then the map's 20 runs
    detail = widget.locator(".fb-detail")
    explode.click()
    expect(detail).to_be_visible()
    expect(detail.locator(".fb-detail-title")).to_have_text(label_of("explode"))
    expect(detail.locator(".fb-detail-run")).to_have_count(1)
    states = detail.locator("ul.fb-detail-states li")
    expect(states.first).to_contain_text("Pending")
    expect(states.last).to_contain_text("Failed")
    traceback = detail.locator("pre.fb-detail-traceback")
    expect(traceback).to_contain_text("ValueError")
    expect(traceback).to_contain_text("boom: e2e failure 42")
    artifacts.element(widget, "detail-failed")
    # the panel holds elements only: a loose text node shows up as stray text (e.g. "null")
    stray = detail.evaluate(
        "el => [...el.childNodes].filter(n => n.nodeType === Node.TEXT_NODE)"
        ".map(n => n.textContent)"
    )
    # (asserted at the end, so the rest of the widget is checked too)
    squares.click()
    expect(detail.locator(".fb-detail-title")).to_have_text(label_of("square"))
    expect(detail.locator(".fb-detail-run")).to_have_count(20)
    completed_runs = detail.locator(".fb-detail-run").filter(
        has=page.locator("ul.fb-detail-states li", has_text="Completed")
    )
    expect(completed_runs).to_have_count(20)
    expect(detail.locator("pre.fb-detail-traceback")).to_have_count(0)
    artifacts.element(widget, "detail-map")

    # logs: logged and printed lines, then the level and task filters
    widget.locator("button.fb-tab[data-tab=logs]").click()
    logs = widget.locator("div.fb-pane[data-pane=logs]")
    expect(logs).to_be_visible()
    rows = logs.locator("div.fb-log-row")
    expect(rows.filter(has_text="squaring 7")).to_have_count(1)
    expect(rows.filter(has_text="squaring 7")).to_have_attribute("data-level", "INFO")
    expect(rows.filter(has_text="squaring 7")).to_have_attribute("data-task", "square")
    printed = rows.filter(has_text="printed: total of 20 values")
    expect(printed).to_have_count(1)
    expect(printed).to_have_attribute("data-task", "total")
    expect(rows.filter(has_text="explode is about to fail")).to_have_attribute(
        "data-level", "ERROR"
    )
    messages = log_messages(widget)
    assert sorted(m for m in messages if m.startswith("squaring ")) == sorted(
        f"squaring {i}" for i in range(20)
    ), messages
    artifacts.element(widget, "logs")

    logs.locator("select.fb-filter-level").select_option("ERROR")
    expect(logs.locator("div.fb-log-row[data-level=INFO]")).to_have_count(0)
    expect(rows.filter(has_text="explode is about to fail")).to_have_count(1)
    artifacts.element(widget, "logs-error-level")
    logs.locator("select.fb-filter-level").select_option("DEBUG")
    expect(rows.filter(has_text="squaring 7")).to_have_count(1)
    logs.locator("select.fb-filter-task").select_option("square")
    expect(rows.filter(has_text="squaring")).to_have_count(20)
    expect(rows.filter(has_text="explode is about to fail")).to_have_count(0)
    for task_name in rows.evaluate_all("rows => rows.map(r => r.dataset.task)"):
        assert task_name == "square"

    # timeline: one bar per task run
    widget.locator("button.fb-tab[data-tab=timeline]").click()
    bars = widget.locator("svg.fb-timeline rect.fb-bar")
    expect(bars).to_have_count(22)
    expect(widget.locator("svg.fb-timeline rect.fb-bar[data-state=Failed]")).to_have_count(1)
    expect(widget.locator(f'svg.fb-timeline rect.fb-bar[data-key="{square_key}"]')).to_have_count(
        20
    )
    artifacts.element(widget, "timeline")
    artifacts.viewport(page)
    print("checked:", elapsed(t0))
    assert stray == [], f".fb-detail of a task node shows stray text {stray!r}"
    assert console_errors == []


# --- b: a background run's output stays in its widget while the next cell prints -----------

CHATTY = code(
    """
    PRINT_TIMES = []

    @task
    def chatter(n):
        for i in range(n):
            PRINT_TIMES.append(time.time())
            print(f"task line {i}")
            time.sleep(0.1)
        return n

    @flow
    def chatty():
        return chatter.submit(20).result()
    """
)
NEXT_CELL = code(
    """
    next_cell_start = time.time()
    for i in range(20):
        print(f"next cell line {i}")
        time.sleep(0.1)
    next_cell_end = time.time()
    """
)
# How many of the task's prints happened while the next cell ran: the test's premise.
OVERLAP = code(
    """
    print("result:", handle.result())
    print("overlap:", sum(next_cell_start <= t <= next_cell_end for t in PRINT_TIMES))
    """
)


def test_output_routing_while_next_cell_prints(
    jupyter_server: Any, page: Page, console_errors: list[str], artifacts: Any
) -> None:
    t0 = time.monotonic()
    cells = [
        SETUP + "\n" + CHATTY,
        "handle = chatty.run_background()",
        NEXT_CELL,
        OVERLAP,
    ]
    panel = open_new_notebook(page, jupyter_server, "routing", cells)
    print("notebook open, kernel idle:", elapsed(t0))
    run_all(page)
    print("cells ran:", elapsed(t0))
    assert_no_cell_errors(page, len(cells))

    widget = run_widget(panel, 1)
    expect(widget).to_have_attribute("data-state", "Completed", timeout=20_000)
    expect(widget.locator(".fb-header .fb-state")).to_have_text("Completed")
    last = stream_text(wait_executed(page, 3)["outputs"])
    assert last.startswith("result: 20\n"), last
    overlap = int(re.search(r"overlap: (\d+)", last).group(1))  # type: ignore[union-attr]
    print("task lines printed while the next cell ran:", overlap)
    assert overlap >= 10, f"only {overlap} task lines were printed while the next cell ran"

    # the next cell has its own 20 lines, in order, and nothing else
    next_outputs = cell_outputs(page, 2)["outputs"]
    expected = "".join(f"next cell line {i}\n" for i in range(20))
    assert stream_text(next_outputs) == expected, next_outputs
    assert [o["output_type"] for o in next_outputs] == ["stream"] * len(next_outputs)
    assert {o["name"] for o in next_outputs} == {"stdout"}, next_outputs
    expect(cell(panel, 2).locator(".jp-OutputArea")).not_to_contain_text("task line")
    expect(cell(panel, 2).locator("div.fb-run")).to_have_count(0)

    # the task's 20 lines are log lines of the widget, and no cell printed them
    outputs = cell_outputs(page, 1)["outputs"]
    assert len(widget_outputs(outputs)) == 1
    assert not [o for o in outputs if o["output_type"] == "stream"], outputs
    for i in (0, 3):
        text = stream_text(cell_outputs(page, i)["outputs"]) + stream_text(
            cell_outputs(page, i)["outputs"], "stderr"
        )
        assert "task line" not in text
        assert "next cell line" not in text
    widget.locator("button.fb-tab[data-tab=logs]").click()
    rows = widget.locator("div.fb-pane[data-pane=logs] div.fb-log-row")
    expect(rows.filter(has_text="task line 19")).to_have_count(1)
    messages = log_messages(widget)
    assert [m for m in messages if "task line" in m] == [f"task line {i}" for i in range(20)]
    assert not [m for m in messages if "next cell line" in m], messages
    expect(rows.filter(has_text="task line 0")).to_have_attribute("data-task", "chatter")
    expect(rows.filter(has_text="task line 0")).to_have_attribute("data-level", "PRINT")

    artifacts.element(widget, "logs")
    artifacts.element(cell(panel, 2), "next-cell")
    artifacts.viewport(page)
    print("checked:", elapsed(t0))
    assert console_errors == []


# --- c: Cancel on a background run while another cell keeps the kernel busy -----------------

SLEEPY = code(
    """
    @task
    def sleeper(i):
        for _ in range(600):  # a minute, unless cancelled
            time.sleep(0.1)
        return i

    @flow
    def sleepy():
        return sleeper.map(range(3))
    """
)
# Runs until the background run has ended (at most 30 s), so the click on Cancel happens
# while this cell is running.
BUSY_CELL = code(
    """
    print("busy cell started", flush=True)
    for _ in range(300):
        if handle.state.is_final():
            break
        time.sleep(0.1)
    print("busy cell saw", handle.state.name)
    """
)
STATE_CELL = code(
    """
    try:
        handle.result()
    except BaseException as exc:
        print("result() raised", type(exc).__name__)
    print("handle.state:", handle.state.name)
    """
)


def test_cancel_background_run_while_another_cell_runs(
    jupyter_server: Any, page: Page, console_errors: list[str], artifacts: Any
) -> None:
    t0 = time.monotonic()
    cells = [SETUP + "\n" + SLEEPY, "handle = sleepy.run_background()", BUSY_CELL, STATE_CELL]
    panel = open_new_notebook(page, jupyter_server, "cancel", cells)
    print("notebook open, kernel idle:", elapsed(t0))
    run_cells(page, 0, 2, wait=False)

    widget = run_widget(panel, 1)
    expect(widget).to_have_attribute("data-state", "Running", timeout=30_000)
    expect(widget.locator("svg.fb-graph g.fb-node[data-state=Running]")).not_to_have_count(0)
    expect(cell(panel, 2).locator(".jp-OutputArea")).to_contain_text("busy cell started")
    assert cell_outputs(page, 2)["execution_count"] is None  # the busy cell is running
    cancel = widget.locator("button.fb-cancel")
    expect(cancel).to_be_enabled()
    expect(cancel).to_have_text("Cancel")
    artifacts.element(widget, "running")
    print("running, busy cell started:", elapsed(t0))

    cancel.click()
    t_click = time.monotonic()
    expect(widget.locator(".fb-header .fb-state")).to_have_text("Cancelled", timeout=20_000)
    print(f"Cancelled shown {time.monotonic() - t_click:.1f} s after the click")
    expect(widget).to_have_attribute("data-state", "Cancelled")
    expect(widget.locator("button.fb-cancel")).to_have_count(0)
    expect(widget.locator(".fb-header span.fb-count[data-state=Cancelled]")).to_have_text(
        "Cancelled 3"
    )
    artifacts.element(widget, "cancelled")

    # the click acted while the busy cell ran: that cell saw the run end
    busy = wait_executed(page, 2, timeout_s=40)
    assert "busy cell saw Cancelled" in stream_text(busy["outputs"]), busy
    run_cells(page, 3, 3)
    text = stream_text(wait_executed(page, 3)["outputs"])
    assert "handle.state: Cancelled" in text, text
    assert_no_cell_errors(page, len(cells))
    artifacts.viewport(page)
    print("checked:", elapsed(t0))
    assert console_errors == []


# --- d: honest at a glance: state mix, one palette, ms, labelled grouped timeline, routes ----

MIXED = code(
    """
    @task
    def quick():
        time.sleep(0.05)
        return 1

    @task
    def broken():
        # one long line: the traceback box must wrap it
        raise ValueError("broken: " + "/a/very/long/path/without/spaces" * 25)

    @flow
    def mixed():
        a = quick.submit()
        b = broken.submit()
        return a.result(), b.result()

    state = mixed(return_state=True)
    """
)
ROUTED = code(
    """
    @task
    def square(x):
        time.sleep(0.1)
        return x * x

    @task
    def transform(xs):
        time.sleep(0.25)
        return [x + 1 for x in xs]

    @task
    def total(xs, ys):
        time.sleep(0.25)
        return sum(xs) + sum(ys)

    @flow
    def routed():
        squares = square.map(range(4))
        changed = transform.submit(squares)
        return total.submit(squares, changed).result()

    routed()
    """
)
MANY = code(
    """
    @task
    def fetch(i):
        return i

    @task
    def parse(i):
        return i

    @flow
    def many():
        a = fetch.map(range(1500))
        b = parse.map(range(1500))
        return sum(f.result() for f in a) + sum(f.result() for f in b)

    many()
    """
)
CANCELLED = code(
    """
    @task
    def dawdle(i):
        for _ in range(200):
            time.sleep(0.05)
        return i

    @flow(flow_run_name="to-cancel")
    def dawdling():
        return dawdle.map(range(2))

    handle = dawdling.run_background()
    time.sleep(1.5)
    handle.cancel()
    handle.wait(30)
    print("cancelled run:", handle.state.name)
    """
)

# Points along an SVG path (getPointAtLength), in the SVG's own coordinates.
PATH_POINTS = (
    "(p) => { const n = 80, len = p.getTotalLength(); "
    "return Array.from({length: n + 1}, (_, i) => { "
    "const q = p.getPointAtLength(len * i / n); return [q.x, q.y]; }); }"
)
# The box of a node's rectangle, in the SVG's coordinates.
NODE_BOX = (
    "(g) => { const r = g.querySelector('rect.fb-node-box'); "
    "return [r.x.baseVal.value, r.y.baseVal.value, r.width.baseVal.value, "
    "r.height.baseVal.value]; }"
)


def computed(locator: Locator, prop: str) -> str:
    return str(locator.evaluate(f"(el) => getComputedStyle(el).{prop}"))


def test_state_mix_palette_durations_timeline_and_routes(
    jupyter_server: Any, page: Page, console_errors: list[str], artifacts: Any
) -> None:
    t0 = time.monotonic()
    cells = [SETUP, MIXED, ROUTED, MANY, CANCELLED]
    panel = open_new_notebook(page, jupyter_server, "glance", cells)
    run_all(page)
    print("cells ran:", elapsed(t0))
    assert_no_cell_errors(page, len(cells))
    assert "cancelled run: Cancelled" in stream_text(wait_executed(page, 4)["outputs"])

    # 1. progress: 1 failed + 1 completed is half red, half green, not a full green bar
    mixed = run_widget(panel, 1)
    expect(mixed).to_have_attribute("data-state", "Failed")
    progress = mixed.locator(".fb-header .fb-progress")
    expect(progress).to_contain_text("2/2")
    track = progress.locator(".fb-progress-track")
    failed_part = track.locator(".fb-progress-part[data-state=Failed]")
    done_part = track.locator(".fb-progress-part[data-state=Completed]")
    expect(failed_part).to_have_count(1)
    expect(done_part).to_have_count(1)
    page.wait_for_timeout(400)  # the width transition
    inner = track.evaluate("el => el.clientWidth")
    failed_w = failed_part.evaluate("el => el.getBoundingClientRect().width")
    done_w = done_part.evaluate("el => el.getBoundingClientRect().width")
    assert abs(failed_w - inner / 2) <= 1.5, (failed_w, inner)
    assert abs(done_w - inner / 2) <= 1.5, (done_w, inner)
    assert computed(failed_part, "backgroundColor") == "rgb(224, 49, 49)"  # --fb-state-failed
    assert computed(done_part, "backgroundColor") == "rgb(47, 158, 68)"  # --fb-state-completed
    artifacts.element(progress, "widget-progress-mixed-states")

    # 3. durations under a second in ms; 6. the long traceback line wraps, the box grows
    node(mixed, "quick").click()
    detail = mixed.locator(".fb-detail")
    duration = detail.locator("[data-field=duration] .fb-detail-value")
    expect(duration).to_have_text(re.compile(r"^\d{2,3} ms$"))
    offsets = detail.locator(".fb-detail-offset").all_text_contents()
    assert offsets
    assert all(re.fullmatch(r"\+(\d{1,3} ms|\d+\.\d s)", o) for o in offsets), offsets
    assert "+0.0 s" not in offsets
    artifacts.element(detail, "widget-detail-duration-ms")
    node(mixed, "broken").click()
    traceback = detail.locator("pre.fb-detail-traceback")
    expect(traceback).to_contain_text("/a/very/long/path/without/spaces")
    sizes = traceback.evaluate(
        "el => [el.scrollWidth, el.clientWidth, el.clientHeight, getComputedStyle(el).whiteSpace]"
    )
    assert sizes[0] <= sizes[1], f"the traceback scrolls sideways: {sizes}"
    assert sizes[3] == "pre-wrap"
    line_height = float(computed(traceback, "lineHeight").removesuffix("px"))
    assert sizes[2] > 4 * line_height, f"the box did not grow with the wrapped line: {sizes}"
    artifacts.element(traceback, "widget-traceback-long-line-wraps")

    # 5. the edge square.map -> total goes around transform-0, the node between them
    routed = run_widget(panel, 2)
    expect(routed).to_have_attribute("data-state", "Completed")
    squares, middle = node(routed, "square"), node(routed, "transform")
    total = node(routed, "total")
    square_key = squares.get_attribute("data-key")
    total_key = total.get_attribute("data-key")
    skip = routed.locator(f'path.fb-edge[data-from="{square_key}"][data-to="{total_key}"]')
    expect(skip).to_have_count(1)
    x, y, w, h = middle.evaluate(NODE_BOX)
    points = skip.evaluate(PATH_POINTS)
    inside = [(px, py) for px, py in points if x < px < x + w and y < py < y + h]
    assert inside == [], f"the edge passes under transform-0 at {inside[:3]}"
    artifacts.element(routed.locator("svg.fb-graph"), "widget-graph-edge-routed-around-node")

    # 4. timeline: one labelled group per task, names on the bars
    routed.locator("button.fb-tab[data-tab=timeline]").click()
    timeline = routed.locator("svg.fb-timeline")
    groups = timeline.locator("text.fb-lane-group-label")
    expect(groups).to_have_count(3)
    assert groups.all_text_contents() == ["square (4)", "transform (1)", "total (1)"]
    labels = timeline.locator("text.fb-bar-label")
    expect(labels.filter(has_text=re.compile(r"^transform-0$"))).to_have_count(1)
    expect(labels.filter(has_text=re.compile(r"^total-0$"))).to_have_count(1)
    # a label sits inside its bar, in the bar's text colour
    label = labels.filter(has_text=re.compile(r"^transform-0$"))
    bar = timeline.locator("rect.fb-bar[data-name=transform-0]")
    lb, bb = label.bounding_box(), bar.bounding_box()
    assert lb is not None
    assert bb is not None
    assert bb["x"] <= lb["x"], (lb, bb)
    assert lb["x"] + lb["width"] <= bb["x"] + bb["width"], (lb, bb)
    assert computed(label, "fill") == "rgb(255, 255, 255)"
    # ticks of a sub-second run read in ms
    ticks = timeline.locator("text.fb-tick").all_text_contents()
    assert any(t.endswith(" ms") for t in ticks), ticks
    artifacts.element(routed, "widget-timeline-labelled-groups")

    # thousands of runs: grouped by task, bounded, and the view says what it left out
    many = run_widget(panel, 3)
    expect(many).to_have_attribute("data-state", "Completed", timeout=60_000)
    many.locator("button.fb-tab[data-tab=timeline]").click()
    note = many.locator(".fb-timeline-note")
    expect(note).to_be_visible()
    expect(note).to_have_text(re.compile(r"showing the first 2000 of 3000 task runs"))
    expect(note).to_contain_text("1000 later ones are omitted")
    expect(many.locator("svg.fb-timeline rect.fb-bar")).to_have_count(2000)
    many_groups = many.locator("svg.fb-timeline text.fb-lane-group-label").all_text_contents()
    assert [g.split(" ")[0] for g in many_groups] == ["fetch", "parse"], many_groups
    artifacts.element(many, "widget-timeline-thousands-grouped")

    # 2. Cancelled is the palette's grey in the widget, and the same colour in the panel
    cancelled = run_widget(panel, 4)
    badge = cancelled.locator(".fb-header .fb-state")
    expect(badge).to_have_text("Cancelled", timeout=30_000)
    widget_grey = computed(badge, "backgroundColor")
    assert widget_grey == "rgb(134, 142, 150)", widget_grey  # --fb-state-cancelled
    assert (
        computed(cancelled.locator(".fb-progress-part[data-state=Cancelled]"), "backgroundColor")
        == widget_grey
    )
    artifacts.element(cancelled.locator(".fb-header"), "widget-cancelled-grey")
    page.evaluate("() => window.jupyterapp.commands.execute('flowbook:open-runs-panel')")
    runs_panel = page.locator(".fb-runs-panel")
    expect(runs_panel).to_be_visible(timeout=20_000)
    row = runs_panel.locator(".fb-runs-row", has_text="to-cancel")
    expect(row).to_have_count(1, timeout=20_000)
    panel_badge = row.locator(".fb-runs-row-state")
    expect(panel_badge).to_have_text("Cancelled")
    assert computed(panel_badge, "backgroundColor") == widget_grey
    artifacts.element(row, "panel-cancelled-grey")

    # the dark theme: the same state colours, the pale "not started" ones darker
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Dark'})"
    )
    expect(page.locator("body[data-jp-theme-light=false]")).to_have_count(1, timeout=20_000)
    pending = mixed.evaluate(
        "el => getComputedStyle(el).getPropertyValue('--fb-state-pending').trim()"
    )
    assert pending == "#495057", pending
    assert computed(badge, "backgroundColor") == widget_grey
    assert computed(panel_badge, "backgroundColor") == widget_grey
    artifacts.element(routed, "widget-timeline-dark-theme")
    artifacts.element(row, "panel-cancelled-grey-dark-theme")
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Light'})"
    )
    print("checked:", elapsed(t0))
    assert console_errors == []
