"""The "Flow runs" side panel in a real browser, in JupyterLab 4 and Notebook 7.

Two notebooks run flows in two kernels, which share the server's store. The panel (the
prebuilt labextension of this package, over the server extension's API) must list both runs
with their states, filter them, show one run's details, open the cell a run came from, and
clear a cache entry. Screenshots go to the artifacts directory.
"""

from __future__ import annotations

import json
import textwrap
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

    # one run's details: state history, task runs, logs, parameters
    panel.locator(".fb-runs-row", has_text="beta-7").click()
    details = panel.locator(".fb-run-details")
    expect(details).to_be_visible(timeout=10_000)
    expect(details.locator(".fb-run-states")).to_contain_text("Running")
    expect(details.locator(".fb-run-states")).to_contain_text("Failed")
    expect(details.locator(".fb-run-tasks")).to_contain_text("fragile-0")
    expect(details.locator(".fb-run-tasks")).to_contain_text("fragile-1")
    expect(details.locator(".fb-run-logs")).to_contain_text("checking 8")
    expect(details.locator(".fb-run-params")).to_contain_text("7")
    artifacts.element(panel, "run-details")

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
