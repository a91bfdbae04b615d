"""binder/ holds all Binder needs: an environment built from its files alone runs every
tutorial notebook.

The test does what repo2docker does with them: a fresh virtual environment, ``pip install -r
binder/requirements.txt``, then ``binder/postBuild`` from the repository's root. Then every
notebook runs top to bottom in that environment's kernel, in a copy of notebooks/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"

pytestmark = pytest.mark.slow


def _requirements() -> list[str]:
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_binder_requirements_are_the_package_and_lab_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["lab"]
    assert sorted(_requirements()) == sorted(expected)


@pytest.mark.timeout(1500)
def test_a_binder_environment_runs_every_notebook(tmp_path: Path) -> None:
    venv = tmp_path / "binder-venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWBOOK_", "JUPYTER"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        FLOWBOOK_HOME=str(tmp_path / "home"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )

    def run(*args: str | Path, cwd: Path = ROOT, timeout: float = 900) -> str:
        done = subprocess.run(
            [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    run(bin_dir / "python", "-m", "pip", "install", "-q", "-r", BINDER / "requirements.txt")
    run("bash", BINDER / "postBuild")
    listing = run(bin_dir / "jupyter", "labextension", "list")
    assert re.search(r"flowbook-labextension v\S+ .*enabled", listing), listing

    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    for path in sorted(notebooks.glob("*.ipynb")):
        run(bin_dir / "jupyter", "execute", "--timeout=300", path.name, cwd=notebooks)
