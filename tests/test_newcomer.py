"""A newcomer's first minutes: clone, run the README's set-up command, import flowbook, run
the first tutorial.

The README's main command is ``scripts/lab``; its arguments go to ``jupyter lab``, so
``scripts/lab --version`` does the whole set-up (a new .venv, flowbook and JupyterLab, the
extension built) and exits instead of serving.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1500)
def test_from_a_fresh_clone_to_a_first_run(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("the newcomer check clones the repository: it needs git and a git checkout")
    clone = tmp_path / "flowbook"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLOWBOOK_", "JUPYTER", "VIRTUAL_ENV", "PYTHON"))
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    env["FLOWBOOK_HOME"] = str(tmp_path / "home")
    env.pop("DISPLAY", None)

    def run(*args: str, cwd: Path = clone, timeout: float = 1200) -> str:
        done = subprocess.run(
            list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout

    t0 = time.monotonic()
    assert run("scripts/lab", "--version").strip().splitlines()[-1].startswith("4.")
    setup_s = time.monotonic() - t0
    python = str(clone / ".venv" / "bin" / "python")
    imported = run(python, "-c", "import flowbook; print(flowbook.__file__)")
    assert imported.strip() == str(clone / "flowbook" / "__init__.py")
    run(
        str(clone / ".venv" / "bin" / "jupyter"),
        "execute",
        "--timeout=300",
        "01_first_flow.ipynb",
        cwd=clone / "notebooks",
    )
    print(f"scripts/lab set-up in a fresh clone: {setup_s:.0f} s")
