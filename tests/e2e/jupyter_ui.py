"""Driving JupyterLab 4 and Notebook 7 from Playwright: open a notebook, wait for its kernel,
run cells, read what the cells produced, save screenshots.

Everything here goes through the page's DOM or through ``window.jupyterapp`` (the server runs
with ``--expose-app-in-browser``); both apps share the notebook and command implementations,
so the same calls work in either.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from playwright.sync_api import Locator, Page

# The notebook panel of the current tab. Scope every locator to it: JupyterLab may keep
# other (hidden) panels in the DOM.
PANEL = ".jp-NotebookPanel:visible"

KERNEL_IDLE_JS = """() => {
    const app = window.jupyterapp;
    const w = app && app.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!k && k.status === 'idle' && k.connectionStatus === 'connected';
}"""

# Selects cells [first, last] of the current notebook and runs them with the same command
# as Shift+Enter without advancing. Returns the command's promise only when asked to wait:
# it settles when the last selected cell has finished.
RUN_CELLS_JS = """([first, last, wait]) => {
    const app = window.jupyterapp;
    const nb = app.shell.currentWidget.content;
    nb.deselectAll();
    nb.activeCellIndex = first;
    nb.extendContiguousSelectionTo(last);
    const done = app.commands.execute('notebook:run-cell');
    return wait ? done.then(() => true) : true;
}"""

COLLAPSE_LEFT_JS = """() => {
    const shell = window.jupyterapp.shell;
    if (typeof shell.collapseLeft === 'function') shell.collapseLeft();
}"""

CELL_OUTPUTS_JS = """(index) => {
    const nb = window.jupyterapp.shell.currentWidget.content;
    const cell = nb.model.cells.get(index);
    return {execution_count: cell.executionCount, outputs: cell.outputs.toJSON()};
}"""


def new_notebook(cells: list[str]) -> nbformat.NotebookNode:
    """A notebook of code cells for this venv's ``python3`` kernel (no kernel picker)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    return nb


def notebook_url(base_url: str, token: str, app: str, name: str) -> str:
    """The notebook's URL. In Lab a fresh workspace, so no tab of an earlier test comes back."""
    if app == "lab":
        return f"{base_url}/lab/workspaces/t{uuid.uuid4().hex[:12]}/tree/{name}?token={token}"
    return f"{base_url}/notebooks/{name}?token={token}"


def open_notebook(page: Page, url: str, timeout_ms: float = 60_000) -> Locator:
    """Load ``url``, wait for the notebook and an idle, connected kernel; return the panel."""
    page.goto(url)
    panel = page.locator(PANEL)
    panel.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=timeout_ms)
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=timeout_ms)
    wait_kernel_idle(page, timeout_ms)
    # Lab: fold the file browser away, so the notebook (and its screenshots) gets the width
    page.evaluate(COLLAPSE_LEFT_JS)
    return panel


def wait_kernel_idle(page: Page, timeout_ms: float = 60_000) -> None:
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout_ms)


def run_all(page: Page) -> None:
    """Run every cell and return once the last one has finished."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def run_cells(page: Page, first: int, last: int, *, wait: bool = True) -> None:
    """Run cells ``first..last`` (0-based, inclusive); with ``wait=False`` return at once."""
    page.evaluate(RUN_CELLS_JS, [first, last, wait])


def cell(panel: Locator, index: int) -> Locator:
    return panel.locator(".jp-CodeCell").nth(index)


def cell_outputs(page: Page, index: int) -> dict[str, Any]:
    """The cell's execution count and its outputs as nbformat JSON (from the notebook model)."""
    result: dict[str, Any] = page.evaluate(CELL_OUTPUTS_JS, index)
    return result


def stream_text(outputs: list[dict[str, Any]], name: str = "stdout") -> str:
    text = []
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == name:
            value = out.get("text", "")
            text.append("".join(value) if isinstance(value, list) else value)
    return "".join(text)


def error_outputs(outputs: list[dict[str, Any]]) -> list[str]:
    return [
        f"{out.get('ename')}: {out.get('evalue')}"
        for out in outputs
        if out.get("output_type") == "error"
    ]


def wait_executed(page: Page, index: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Wait until cell ``index`` has an execution count, then return its outputs."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = cell_outputs(page, index)
        if result["execution_count"] is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"cell {index} did not finish within {timeout_s} s: {result}")
        page.wait_for_timeout(100)


def assert_no_cell_errors(page: Page, n_cells: int) -> None:
    errors = {i: error_outputs(cell_outputs(page, i)["outputs"]) for i in range(n_cells)}
    raised = {i: e for i, e in errors.items() if e}
    assert not raised, f"cells raised: {raised}"


@dataclass
class Artifacts:
    """Screenshots of one test, saved as ``<dir>/<test id>-<what>.png``."""

    directory: Path
    test_id: str
    saved: list[Path] = field(default_factory=list)

    def path(self, what: str) -> Path:
        stem = re.sub(r"[^A-Za-z0-9_.]+", "-", f"{self.test_id}-{what}").strip("-")
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f"{stem}.png"

    def element(self, locator: Locator, what: str) -> Path:
        """An element's screenshot (scrolled into view first)."""
        path = self.path(what)
        locator.screenshot(path=str(path))
        self.saved.append(path)
        return path

    def viewport(self, page: Page, what: str = "viewport") -> Path:
        path = self.path(what)
        page.screenshot(path=str(path))
        self.saved.append(path)
        return path
