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
