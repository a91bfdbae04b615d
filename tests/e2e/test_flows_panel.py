"""The Flows view of the "Flow runs" panel in a real browser, in JupyterLab 4 and Notebook 7.

A notebook registers a flow under a project and runs it, and runs a flow it never registers.
The Flows view (the prebuilt labextension over the server extension's API) must list both:
the registered one with its project, version, parameters and defaults, where it is defined
(with a button to its cell), its runs and last state; the other as known from its runs only.
The project filter keeps one project; a click on a flow shows the run list filtered to that
flow's runs.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from jupyter_ui import assert_no_cell_errors, new_notebook, notebook_url, open_notebook, run_all
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

NOTEBOOK = [
    "%load_ext flowbook",
    textwrap.dedent(
        """
        from flowbook import flow, task
        from flowbook.registry import register_flow

        @task
        def count(n):
            return n

        @flow(name="view-etl", flow_run_name="view-etl-{n}")
        def view_etl(n: int, label: str = "rows"):
            return count(n)

        @flow(name="view-adhoc", flow_run_name="view-adhoc-run")
        def view_adhoc():
            return count(0)

        register_flow(view_etl, project_name="view-tutorial")
        """
    ).strip(),
    "view_etl(4)\nview_adhoc()",
]


def open_panel(page: Page) -> Any:
    page.evaluate("() => window.jupyterapp.commands.execute('flowbook:open-runs-panel')")
    panel = page.locator(".fb-runs-panel")
    expect(panel).to_be_visible(timeout=20_000)
    return panel


def test_the_flows_view_lists_flows_and_filters_the_runs(
    page: Page, jupyter_server: Any, artifacts: Any, console_errors: list[str]
) -> None:
    server = jupyter_server
    name = server.write_notebook(f"flows-view-{server.app}.ipynb", new_notebook(NOTEBOOK))
    open_notebook(page, notebook_url(server.base_url, server.token, server.app, name))
    run_all(page)
    assert_no_cell_errors(page, len(NOTEBOOK))

    panel = open_panel(page)
    panel.locator(".fb-tab-flows").click()
    expect(panel).to_have_attribute("data-view", "flows")
    expect(panel.locator(".fb-tab-flows")).to_have_attribute("aria-selected", "true")
    view = panel.locator(".fb-flows")
    etl = view.locator(".fb-flows-row[data-flow='view-etl']")
    adhoc = view.locator(".fb-flows-row[data-flow='view-adhoc']")
    expect(etl).to_have_count(1, timeout=20_000)
    expect(adhoc).to_have_count(1)

    # the registered flow: project, version, runs, last state, parameters, where
    expect(etl).to_have_attribute("data-registered", "true")
    expect(etl.locator(".fb-flows-row-kind")).to_have_text("v1")
    expect(etl.locator(".fb-flows-row-project")).to_have_text("view-tutorial")
    expect(etl.locator(".fb-flows-row-runs")).to_have_text("1 run")
    expect(etl.locator(".fb-flows-row-state")).to_have_text("Completed")
    expect(etl.locator(".fb-flows-row-registered")).to_contain_text("registered ")
    expect(etl.locator(".fb-flows-row-params")).to_have_text("label='rows', n (required)")
    expect(etl.locator(".fb-flows-row-path")).to_contain_text(name)
    expect(etl.locator(".fb-flows-open-cell")).to_be_visible()

    # the flow that only ran: no registration, its runs and last state
    expect(adhoc).to_have_attribute("data-registered", "false")
    expect(adhoc.locator(".fb-flows-row-kind")).to_be_hidden()
    expect(adhoc.locator(".fb-flows-row-registered")).to_have_text("not registered")
    expect(adhoc.locator(".fb-flows-row-project")).to_have_text("no project")
    expect(adhoc.locator(".fb-flows-row-runs")).to_have_text("1 run")
    expect(adhoc.locator(".fb-flows-row-state")).to_have_text("Completed")
    expect(adhoc.locator(".fb-flows-row-params")).to_be_hidden()
    expect(adhoc.locator(".fb-flows-open-cell")).to_be_hidden()
    artifacts.element(panel, "flows")

    # the project filter keeps one project's flows
    view.locator(".fb-flows-filter-project").select_option("view-tutorial")
    expect(adhoc).to_have_count(0, timeout=10_000)
    expect(etl).to_have_count(1)
    view.locator(".fb-flows-filter-project").select_option("")
    expect(adhoc).to_have_count(1, timeout=10_000)

    # the button goes to the cell that registered the flow
    etl.locator(".fb-flows-open-cell").click()
    page.wait_for_function(
        """([name]) => {
            const w = window.jupyterapp.shell.currentWidget;
            return !!w && w.context && w.context.path === name
                && w.content.activeCellIndex === 1;
        }""",
        arg=[name],
        timeout=10_000,
    )
    expect(panel).to_have_attribute("data-view", "flows")  # the button does not filter runs

    # a click on the flow lists its runs only
    etl.locator(".fb-flows-row-name").click()
    expect(panel).to_have_attribute("data-view", "runs")
    runs = panel.locator(".fb-runs-view")
    expect(runs.locator(".fb-runs-filter-flow")).to_have_value("view-etl")
    chip = runs.locator(".fb-runs-filter-project")
    expect(chip).to_be_visible()
    expect(chip).to_have_text("Project: view-tutorial ✕")
    expect(runs.locator(".fb-runs-row", has_text="view-etl-4")).to_have_count(1, timeout=10_000)
    expect(runs.locator(".fb-runs-row", has_text="view-adhoc-run")).to_have_count(0)
    artifacts.element(panel, "flow-runs")

    # the chip removes the project filter, the flow filter stays
    chip.click()
    expect(chip).to_be_hidden()
    expect(runs.locator(".fb-runs-filter-flow")).to_have_value("view-etl")
    expect(runs.locator(".fb-runs-row", has_text="view-etl-4")).to_have_count(1)
    assert not console_errors
