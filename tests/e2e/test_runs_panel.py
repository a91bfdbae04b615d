"""The "Flow runs" side panel in a real browser, in JupyterLab 4 and Notebook 7.

Two notebooks run flows in two kernels, which share the server's store. The panel (the
prebuilt labextension of this package, over the server extension's API) must list both runs
with their states, filter them, show one run's details, open the cell a run came from, and
clear a cache entry. A run's graph, node details, logs and timeline are drawn by the run
widget's own renderer. Screenshots go to the artifacts directory.
"""

from __future__ import annotations

import json
import re
import textwrap
import urllib.error
import urllib.request
from typing import Any

import pytest
from jupyter_ui import assert_no_cell_errors, new_notebook, notebook_url, open_notebook, run_all
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

NOTEBOOK_A = [
    "%load_ext flowbook",
    textwrap.dedent(
        """
        from flowbook import flow, task, get_run_logger
        from flowbook.tasks import task_input_hash

        @task(cache_key_fn=task_input_hash)
        def load(n):
            get_run_logger().info(f"loading {n} rows")
            return list(range(n))

        @task
        def total(rows):
            return sum(rows)

        @flow(flow_run_name="alpha-{n}")
        def alpha(n):
            return total(load(n))
        """
    ).strip(),
    "alpha(5)",
]

NOTEBOOK_B = [
    "%load_ext flowbook",
    textwrap.dedent(
        """
        from flowbook import flow, task, get_run_logger

        @task
        def fragile(x):
            get_run_logger().warning(f"checking {x}")
            raise ValueError(f"bad value {x}")

        @flow(flow_run_name="beta-{x}")
        def beta(x):
            try:
                fragile(x)
            except ValueError:
                pass
            return fragile.submit(x + 1)
        """
    ).strip(),
    "state = beta(7, return_state=True)",
]


def api(server: Any, path: str) -> Any:
    req = urllib.request.Request(
        f"{server.base_url}/flowbook/api/{path}",
        headers={"Authorization": f"token {server.token}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def run_notebook(page: Page, server: Any, stem: str, cells: list[str]) -> str:
    name = server.write_notebook(f"{stem}-{server.app}.ipynb", new_notebook(cells))
    open_notebook(page, notebook_url(server.base_url, server.token, server.app, name))
    run_all(page)
    assert_no_cell_errors(page, len(cells))
    return name


def open_panel(page: Page) -> Any:
    page.evaluate("() => window.jupyterapp.commands.execute('flowbook:open-runs-panel')")
    panel = page.locator(".fb-runs-panel")
    expect(panel).to_be_visible(timeout=20_000)
    return panel


def test_the_runs_panel_lists_runs_of_two_kernels(
    page: Page, jupyter_server: Any, artifacts: Any, console_errors: list[str]
) -> None:
    server = jupyter_server
    run_notebook(page, server, "panel-a", NOTEBOOK_A)
    name_b = run_notebook(page, server, "panel-b", NOTEBOOK_B)
    # two kernels ran them
    sessions = server.request("GET", "/api/sessions")
    kernels = {s["kernel"]["id"] for s in sessions if s["path"].startswith("panel-")}
    assert len(kernels) == 2

    panel = open_panel(page)
    alpha = panel.locator(".fb-runs-row", has_text="alpha-5")
    beta = panel.locator(".fb-runs-row", has_text="beta-7")
    expect(alpha).to_have_count(1, timeout=20_000)
    expect(beta).to_have_count(1)
    expect(alpha.locator(".fb-runs-row-state")).to_have_text("Completed")
    expect(beta.locator(".fb-runs-row-state")).to_have_text("Failed")
    expect(alpha).to_have_attribute("data-state", "Completed")
    artifacts.element(panel, "runs-list")

    # filter by state
    panel.locator(".fb-runs-filter-state").select_option("failed")
    expect(panel.locator(".fb-runs-row", has_text="alpha-5")).to_have_count(0, timeout=10_000)
    expect(panel.locator(".fb-runs-row", has_text="beta-7")).to_have_count(1)
    panel.locator(".fb-runs-filter-state").select_option("")

    # one run's details: state history and parameters, then the run drawn by the widget's
    # own renderer (run_view.js) from the stored snapshot
    panel.locator(".fb-runs-row", has_text="beta-7").click()
    details = panel.locator(".fb-run-details")
    expect(details).to_be_visible(timeout=10_000)
    expect(details.locator(".fb-run-states")).to_contain_text("Running")
    expect(details.locator(".fb-run-states")).to_contain_text("Failed")
    expect(details.locator(".fb-run-params")).to_contain_text("7")
    expect(details.locator(".fb-run-tasks-title")).to_have_text("Task runs (2)")
    view = details.locator(".fb-run-view div.fb-run")
    expect(view).to_be_visible(timeout=20_000)
    expect(view.locator(".fb-header .fb-run-name")).to_have_text("beta-7")
    labels = view.locator("svg.fb-graph g.fb-node text.fb-node-label")
    expect(labels).to_have_count(2, timeout=10_000)
    assert sorted(labels.all_text_contents()) == ["fragile-0", "fragile-1"]
    artifacts.element(panel, "run-details-graph")

    # a failed node: its message, retries used, duration, inputs and traceback
    failed = view.locator("svg.fb-graph g.fb-node").filter(
        has=page.locator("text.fb-node-label", has_text="fragile-1")
    )
    expect(failed).to_have_attribute("data-state", "Failed")
    failed.click()
    detail = view.locator(".fb-detail")
    expect(detail).to_be_visible()
    expect(detail.locator(".fb-detail-title")).to_have_text("fragile-1")
    expect(detail.locator(".fb-detail-message")).to_contain_text("bad value 8")
    expect(detail.locator("pre.fb-detail-traceback")).to_contain_text("bad value 8")
    expect(detail.locator("[data-field=retries] .fb-detail-value")).to_have_text("0")
    expect(detail.locator("[data-field=duration] .fb-detail-value")).not_to_have_text("—")
    expect(detail.locator("[data-field=inputs] .fb-detail-value")).to_contain_text("8")
    expect(detail.locator("[data-field=result] .fb-detail-value")).to_have_text("—")
    artifacts.element(panel, "run-details-failed-node")

    # the timeline: one bar per task run
    view.locator("button.fb-tab[data-tab=timeline]").click()
    bars = view.locator("svg.fb-timeline rect.fb-bar")
    expect(bars).to_have_count(2, timeout=10_000)
    tips = " ".join(bars.locator("title").all_text_contents())
    assert "fragile-0" in tips
    assert "fragile-1" in tips
    artifacts.element(panel, "run-details-timeline")

    # the logs, filtered by level and by task
    view.locator("button.fb-tab[data-tab=logs]").click()
    messages = view.locator("div.fb-log-list div.fb-log-row .fb-log-msg")
    expect(messages.filter(has_text="checking 8")).to_have_count(1, timeout=10_000)
    expect(messages.filter(has_text="checking 7")).to_have_count(1)
    view.locator("select.fb-filter-level").select_option("ERROR")
    expect(messages.filter(has_text="checking")).to_have_count(0)
    view.locator("select.fb-filter-level").select_option("DEBUG")
    view.locator("select.fb-filter-task").select_option("fragile")
    expect(messages.filter(has_text="checking 7")).to_have_count(1)
    artifacts.element(panel, "run-details-logs")

    # the panel is wide enough for "flow / run name" by default
    assert (panel.bounding_box() or {"width": 0})["width"] >= 400

    # the API serves the snapshot and the renderer; bad ids and names are refused
    run_id = details.get_attribute("data-run-id")
    snapshot = api(server, f"runs/{run_id}/snapshot")
    assert snapshot["header"]["run_name"] == "beta-7"
    assert snapshot["header"]["source"] == "store"
    assert len(snapshot["timeline"]["bars"]) == 2
    for path, status in [
        ("runs/not-a-run/snapshot", 400),
        ("runs/3f2a9c1e-5b7d-4e0f-9a1b-2c3d4e5f6a7b/snapshot", 404),
        ("view/secret.py", 404),
    ]:
        with pytest.raises(urllib.error.HTTPError) as refused:
            api(server, path)
        assert refused.value.code == status, path

    # the cell the run came from: its notebook is open, so the cell is selected
    open_cell = details.locator(".fb-run-open-cell")
    expect(open_cell).to_be_visible()
    open_cell.click()
    page.wait_for_function(
        """([name]) => {
            const w = window.jupyterapp.shell.currentWidget;
            return !!w && w.context && w.context.path === name
                && w.content.activeCellIndex === 2;
        }""",
        arg=[name_b],
        timeout=10_000,
    )
    details.locator(".fb-run-back").click()

    # the cache: clear alpha's entry
    before = api(server, "cache")["entries"]
    assert [e["task_name"] for e in before] == ["load"]
    panel.locator(".fb-tab-cache").click()
    rows = panel.locator(".fb-cache-row")
    expect(rows).to_have_count(1, timeout=10_000)
    artifacts.element(panel, "cache")
    rows.first.locator(".fb-cache-clear").click()
    expect(rows).to_have_count(0, timeout=10_000)
    assert api(server, "cache")["entries"] == []
    artifacts.viewport(page, "after-clear")
    assert not console_errors


def test_the_runs_panel_remembers_the_width_the_user_sets(
    page: Page, jupyter_server: Any, artifacts: Any, console_errors: list[str]
) -> None:
    server = jupyter_server
    name = server.write_notebook(f"panel-width-{server.app}.ipynb", new_notebook(["1 + 1"]))
    url = notebook_url(server.base_url, server.token, server.app, name)
    open_notebook(page, url)
    page.evaluate("() => window.localStorage.removeItem('flowbook:runs-panel-width')")
    panel = open_panel(page)
    page.wait_for_timeout(300)
    box = panel.bounding_box()
    assert box is not None
    assert box["width"] >= 400, box

    # drag the side area's edge 90 px wider: the width is kept ...
    handles = page.locator(".lm-SplitPanel-handle:visible")
    handle = None
    for i in range(handles.count()):
        hb = handles.nth(i).bounding_box()
        if hb is not None and abs(hb["x"] - (box["x"] + box["width"])) < 12:
            handle = hb
    assert handle is not None, "no split handle at the panel's right edge"
    x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 45, y, steps=5)
    page.mouse.move(x + 90, y, steps=5)
    page.mouse.up()
    page.wait_for_function(
        "() => Number(window.localStorage.getItem('flowbook:runs-panel-width')) > 0"
    )
    saved = float(page.evaluate("() => window.localStorage.getItem('flowbook:runs-panel-width')"))
    assert saved == pytest.approx(box["width"] + 90, abs=12)

    # ... and used when the page is opened again
    open_notebook(page, url)
    panel = open_panel(page)
    page.wait_for_timeout(300)
    again = panel.bounding_box()
    assert again is not None
    assert again["width"] == pytest.approx(saved, abs=12)
    artifacts.viewport(page, "remembered-width")
    assert not console_errors


NOTEBOOK_COMPARE = [
    "%load_ext flowbook",
    textwrap.dedent(
        """
        import time
        from flowbook import flow, task

        @task
        def prepare(n):
            return n

        @task
        def crunch(delay):
            time.sleep(delay)
            return delay

        @flow(name="compare-me", flow_run_name="cmp-{delay}")
        def compare_me(delay):
            prepare(1)
            return crunch(delay)

        compare_me(0.1)
        compare_me(0.5)
        """
    ).strip(),
]

UNKNOWN_RUN = "3f2a9c1e-5b7d-4e0f-9a1b-2c3d4e5f6a7b"


def ratio_of(text: str) -> float:
    """The number of a ratio as the panel shows it ("4.98" and a multiplication sign)."""
    return float(text.strip().rstrip("\u00d7"))


def test_the_runs_panel_compares_two_runs(
    page: Page, jupyter_server: Any, artifacts: Any, console_errors: list[str]
) -> None:
    server = jupyter_server
    run_notebook(page, server, "panel-compare", NOTEBOOK_COMPARE)
    panel = open_panel(page)
    panel.locator(".fb-runs-filter-flow").select_option("compare-me")
    slow = panel.locator(".fb-runs-row", has_text="cmp-0.5")
    fast = panel.locator(".fb-runs-row", has_text="cmp-0.1")
    expect(slow).to_have_count(1, timeout=20_000)
    expect(fast).to_have_count(1)
    compare = panel.locator("button.fb-runs-compare")
    hint = panel.locator(".fb-runs-compare-hint")
    expect(compare).to_be_disabled()
    expect(hint).to_have_text("Tick two runs to compare them.")

    # tick the newer run first: the older one is A all the same; ticking does not open a run
    slow.locator(".fb-runs-row-select").check()
    expect(hint).to_have_text("One run selected: tick another.")
    expect(compare).to_be_disabled()
    expect(panel.locator(".fb-runs-view")).to_be_visible()
    fast.locator(".fb-runs-row-select").check()
    expect(hint).to_have_text("Two runs selected.")
    expect(slow).to_have_class(re.compile(r"\bfb-mod-compare\b"))
    artifacts.element(panel, "panel-compare-selected")
    compare.click()

    view = panel.locator(".fb-compare")
    expect(view).to_be_visible(timeout=10_000)
    expect(view.locator(".fb-compare-row-name .fb-compare-a")).to_have_text("cmp-0.1")
    expect(view.locator(".fb-compare-row-name .fb-compare-b")).to_have_text("cmp-0.5")
    # the changed parameter, marked, side by side
    delay = view.locator(".fb-compare-param[data-param=delay]")
    expect(delay).to_have_attribute("data-changed", "true")
    expect(delay).to_have_class(re.compile(r"\bfb-mod-changed\b"))
    expect(delay.locator(".fb-compare-changed")).to_have_text("changed")
    expect(delay.locator(".fb-compare-a")).to_have_text("0.1")
    expect(delay.locator(".fb-compare-b")).to_have_text("0.5")
    expect(view.locator(".fb-compare-params-title")).to_have_text("Parameters (1 changed)")
    # the run took longer, and so did its slow task, about 5 times
    run_ratio = view.locator(".fb-compare-row-duration .fb-compare-ratio-value")
    expect(run_ratio).to_have_attribute("data-trend", "slower")
    assert 1.5 < ratio_of(run_ratio.inner_text()) < 8
    crunch = view.locator(".fb-compare-task[data-task=crunch-0]")
    expect(crunch).to_have_count(1)
    expect(crunch.locator(".fb-compare-change", has_text="duration")).to_have_count(1)
    task_ratio = crunch.locator(".fb-compare-task-ratio .fb-compare-ratio-value")
    expect(task_ratio).to_have_attribute("data-trend", "slower")
    assert 3 < ratio_of(task_ratio.inner_text()) < 7, task_ratio.inner_text()
    expect(crunch.locator(".fb-compare-task-states .fb-state-badge")).to_have_text(
        ["Completed", "Completed"]
    )
    expect(crunch.locator(".fb-compare-task-cache")).to_have_text("\u2013 / \u2013")
    # under its row, its inputs and result previews in A and B side by side, changed ones marked
    values = view.locator(".fb-compare-task-values[data-task=crunch-0]")
    expect(values).to_be_visible()
    expect(values.locator(".fb-compare-inputs.fb-compare-a")).to_have_text("delay = 0.1")
    expect(values.locator(".fb-compare-inputs.fb-compare-b")).to_have_text("delay = 0.5")
    expect(values.locator(".fb-compare-result.fb-compare-a")).to_have_text("0.1")
    expect(values.locator(".fb-compare-result.fb-compare-b")).to_have_text("0.5")
    for kind in ("inputs", "result"):
        expect(values.locator(f".fb-compare-{kind}-label")).to_have_class(
            re.compile(r"\bfb-mod-changed\b")
        )
    artifacts.element(view.locator(".fb-compare-tasks"), "panel-compare-result-previews")
    # the quick task is the same in both runs: counted, not listed
    expect(view.locator(".fb-compare-task[data-task=prepare-0]")).to_have_count(0)
    expect(view.locator(".fb-compare-count-identical")).to_have_text("1 identical")
    expect(view.locator(".fb-compare-count-differ")).to_have_text("1 differ")
    expect(view.locator(".fb-compare-count-only-a")).to_have_text("0 only in A")
    artifacts.element(panel, "panel-compare-two-runs")

    # the same comparison as the API serves it
    a_id = fast.get_attribute("data-run-id")
    b_id = slow.get_attribute("data-run-id")
    diff = api(server, f"diff?a={a_id}&b={b_id}")
    assert [p["name"] for p in diff["parameters"] if p["changed"]] == ["delay"]
    assert diff["identical"] == 1

    # a run's name opens it
    view.locator(".fb-compare-row-name .fb-compare-b a").click()
    details = panel.locator(".fb-run-details")
    expect(details).to_be_visible(timeout=10_000)
    expect(details).to_have_attribute("data-run-id", b_id or "")

    # the endpoint's error is shown in the panel
    page.evaluate(
        "([a, b]) => window.jupyterapp.commands.execute('flowbook:compare-runs', {a, b})",
        [a_id, UNKNOWN_RUN],
    )
    error = view.locator(".fb-compare-error")
    expect(error).to_be_visible(timeout=10_000)
    expect(error).to_contain_text("Could not compare the runs: run B")
    expect(view.locator(".fb-compare-body")).to_be_hidden()
    artifacts.element(panel, "panel-compare-error")

    # back to the list: the two runs are still ticked
    view.locator(".fb-compare-back").click()
    expect(panel.locator(".fb-runs-view")).to_be_visible()
    expect(hint).to_have_text("Two runs selected.")
    others = [e for e in console_errors if f"/flowbook/api/diff?a={a_id}&b={UNKNOWN_RUN}" not in e]
    assert not others
