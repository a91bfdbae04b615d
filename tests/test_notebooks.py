"""The tutorial notebooks: one per topic, each with its title and saved outputs.

Running them is nbval's job: pytest collects every notebook in notebooks/ (see pyproject.toml)
and runs it cell by cell in a fresh kernel of this environment, comparing the saved output of
the cells marked ``# NBVAL_CHECK_OUTPUT``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
TOPICS = {
    "01": "first flow and tasks",
    "02": "flow and task configuration",
    "03": "retries and states",
    "04": "caching across sessions and the cache explorer",
    "05": "task runners side by side",
    "06": "parameters, env, .map and the speed-up",
    "07": "Dask in a notebook and on an existing cluster",
    "08": "inspecting and resuming past runs",
    "09": "Prefect 1 flows as written, and the same flow with @flow",
}


def test_one_notebook_per_topic() -> None:
    found = sorted(p.name[:2] for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == sorted(TOPICS), f"expected one notebook per topic {TOPICS}, found {found}"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_a_notebook_starts_with_a_title_and_keeps_its_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith("# ")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("%load_ext flowbook" in c.source for c in code)
    # saved by scripts/refresh-notebooks: static summaries instead of live widget state
    assert "widgets" not in nb.metadata
    assert path.stat().st_size < 200_000
    checked = [c for c in code if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    # the cells nbval compares must carry the output they are compared with
    assert all(c.outputs for c in checked), [c.source[:60] for c in checked if not c.outputs]
