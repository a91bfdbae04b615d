"""Reaching the "Flow runs" panel in one click, in a real browser.

Notebook 7 has no side-bar tab strip: a "Flow runs" button in its top bar (notebook and tree
pages) opens the panel. JupyterLab keeps the panel's icon in the left side bar and gets no
top-bar button. In both apps, the run names of ``%flowbook runs`` are links that open the run
in the panel. Screenshots go to the artifacts directory.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from jupyter_ui import (
    assert_no_cell_errors,
    cell,
    new_notebook,
    notebook_url,
    open_notebook,
    run_all,
)
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e


def flow_cells(flow: str) -> list[str]:
    """Two runs of flow ``flow`` (``<flow>-1``, ``<flow>-2``), then ``%flowbook runs`` of it."""
    code = textwrap.dedent(
        """
        from flowbook import flow, task

        @task
        def double(x):
            return 2 * x

        @flow(name="FLOW", flow_run_name="FLOW-{n}")
        def entry(n):
            return double(n)

        entry(1)
        entry(2)
        """
    ).strip()
    return ["%load_ext flowbook", code.replace("FLOW", flow), f"%flowbook runs --flow {flow}"]


# a link to a run the store does not have (deleted, or another store's)
GONE_RUN_ID = "3f2a9c1e-5b7d-4e0f-9a1b-2c3d4e5f6a7b"
GONE_LINK_CELL = (
    "from IPython.display import HTML\n"
    "from flowbook.jupyter.tables import run_link\n"
    f"HTML(run_link({GONE_RUN_ID!r}, 'gone-run'))"
)

BUTTON = "#flowbook-flow-runs-button"


def run_flows(page: Page, server: Any, flow: str, extra: tuple[str, ...] = ()) -> Any:
    """Open a new notebook running ``flow_cells(flow)`` and ``extra``; return its panel."""
    cells = [*flow_cells(flow), *extra]
    name = server.write_notebook(f"{flow}-{server.app}.ipynb", new_notebook(cells))
    panel = open_notebook(page, notebook_url(server.base_url, server.token, server.app, name))
    run_all(page)
    assert_no_cell_errors(page, len(cells))
    return panel


def test_the_flow_runs_panel_is_one_click_away(
    page: Page, jupyter_server: Any, artifacts: Any, console_errors: list[str]
) -> None:
    # Notebook 7: a "Flow runs" button in the top bar of the notebook and tree pages;
    # JupyterLab: no such button, the panel's tab in the left side bar
    server = jupyter_server
    if server.app == "lab":
        _jupyterlab_keeps_the_side_bar_icon(page, server, artifacts, console_errors)
        return
    run_flows(page, server, "button")

    # the notebook page: the button is in the top bar, the panel is closed
    button = page.locator(BUTTON)
    expect(button).to_be_visible()
    expect(button).to_have_text("Flow runs")
    expect(page.locator("#top-panel").locator(BUTTON)).to_have_count(1)
    panel = page.locator(".fb-runs-panel")
    expect(panel).to_be_hidden()
    artifacts.element(page.locator("#top-panel"), "nb7-flow-runs-button")

    # one click opens the panel listing the runs
    button.click()
    expect(panel).to_be_visible(timeout=10_000)
    expect(panel.locator(".fb-runs-row", has_text="button-1")).to_have_count(1, timeout=10_000)
    expect(panel.locator(".fb-runs-row", has_text="button-2")).to_have_count(1)
    artifacts.viewport(page, "nb7-notebook-panel-open")

    # the tree page has the button too
    page.goto(f"{server.base_url}/tree?token={server.token}")
    page.locator(".jp-DirListing-content").wait_for()
    button = page.locator(BUTTON)
    expect(button).to_be_visible()
    panel = page.locator(".fb-runs-panel")
    expect(panel).to_be_hidden()
    button.click()
    expect(panel).to_be_visible(timeout=10_000)
    expect(panel.locator(".fb-runs-row", has_text="button-2")).to_have_count(1, timeout=10_000)
    artifacts.viewport(page, "nb7-tree-panel-open")
    assert not console_errors


def _jupyterlab_keeps_the_side_bar_icon(
    page: Page, server: Any, artifacts: Any, console_errors: list[str]
) -> None:
    name = server.write_notebook("entry-lab.ipynb", new_notebook(["1 + 1"]))
    open_notebook(page, notebook_url(server.base_url, server.token, server.app, name))
    # no top-bar button in JupyterLab: its side bar has the panel's tab
    expect(page.locator(BUTTON)).to_have_count(0)
    tab = page.locator(".jp-SideBar .lm-TabBar-tab[data-id='flowbook-runs-panel']")
    expect(tab).to_be_visible()
    tab.click()
    expect(page.locator(".fb-runs-panel")).to_be_visible(timeout=10_000)
    artifacts.viewport(page, "lab-side-bar-panel-open")
    assert not console_errors


def test_a_run_link_of_flowbook_runs_opens_the_run_in_the_panel(
    page: Page, jupyter_server: Any, artifacts: Any, console_errors: list[str]
) -> None:
    server = jupyter_server
    nb = run_flows(page, server, "links", (GONE_LINK_CELL,))
    table = cell(nb, 2).locator("table.fb-runs")
    links = table.locator("a.fb-run-link")
    expect(links).to_have_count(2)
    link = links.filter(has_text="links-1")
    expect(link).to_have_count(1)
    run_id = link.get_attribute("data-flowbook-run")
    assert run_id is not None
    assert len(run_id) == 36, run_id
    artifacts.element(table, "runs-table-links")
    url_before = page.url

    link.click()
    panel = page.locator(".fb-runs-panel")
    expect(panel).to_be_visible(timeout=10_000)
    details = panel.locator(".fb-run-details")
    expect(details).to_be_visible(timeout=10_000)
    expect(details).to_have_attribute("data-run-id", run_id)
    expect(details.locator(".fb-run-header .fb-run-name")).to_have_text(
        "links / links-1", timeout=10_000
    )
    # the click did not navigate: the page is where it was
    assert page.url == url_before
    artifacts.viewport(page, "run-link-opened-run")

    # the other link opens the other run
    links.filter(has_text="links-2").click()
    expect(details.locator(".fb-run-header .fb-run-name")).to_have_text(
        "links / links-2", timeout=10_000
    )

    # a link to a run the store does not have: the panel says so
    cell(nb, 3).locator("a.fb-run-link", has_text="gone-run").click()
    error = details.locator(".fb-error").first
    expect(error).to_be_visible(timeout=10_000)
    expect(error).to_contain_text(GONE_RUN_ID[:8])
    artifacts.element(panel, "run-link-unknown-run")
    # the browser logs the answer 404 of that one request; nothing else may fail
    others = [e for e in console_errors if f"/flowbook/api/runs/{GONE_RUN_ID}" not in e]
    assert not others
