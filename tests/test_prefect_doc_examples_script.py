"""scripts/prefect_doc_examples.py: the runner of Prefect's doc examples, on a small repository
of pages made here (the real one is PrefectHQ/prefect)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "prefect_doc_examples.py"

RUNS = """
```python
from prefect import flow, task

@task
def double(x):
    return 2 * x

@flow
def main():
    return double(21)

assert main() == 42
```
"""
FAILS = """
```python
from prefect import flow

@flow
def boom():
    raise ValueError("planned failure")

boom()
```
"""
SERVER = """
```python
from prefect import flow

@flow
def served():
    pass

served.serve(name="nightly")
```
"""
NOT_PREFECT = """
```python
print("plain python")
```
"""
DASK = """
```python
from prefect_dask import DaskTaskRunner
from prefect_dask.utils import get_dask_client
assert DaskTaskRunner.__module__.startswith("flowbook")
```
"""


def _pages_repo(tmp_path: Path, first: str = RUNS + FAILS + NOT_PREFECT) -> Path:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import prefect_doc_examples as script
    finally:
        sys.path.remove(str(SCRIPT.parent))
    repo = tmp_path / "prefect"
    for page in script.PAGES:
        (repo / page).parent.mkdir(parents=True, exist_ok=True)
        (repo / page).write_text("# a page\n")
    (repo / script.PAGES[0]).write_text(first)
    (repo / script.PAGES[1]).write_text(SERVER + DASK)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "pages"], check=True)
    return repo


def test_examples_run_with_the_imports_renamed_and_are_counted(tmp_path: Path) -> None:
    repo = _pages_repo(tmp_path)
    out_json = tmp_path / "outcomes.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--prefect-repo", str(repo), "--json", str(out_json)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "flowbook: 2/3 examples ran (1 more are out of scope and were not run)" in done.stdout
    outcomes = json.loads(out_json.read_text())
    assert [o["outcome"] for o in outcomes] == ["ran", "failed", "ran"]
    assert "ValueError: planned failure" in outcomes[1]["why"]


def test_a_missing_page_is_named(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    subprocess.run(["git", "-C", str(repo), "init", "-q"], check=True)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--prefect-repo", str(repo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "docs/v3/concepts/caching.mdx is not in" in done.stderr


def test_a_hanging_example_is_stopped_with_the_processes_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    hangs = f"""
```python
import subprocess, sys, time
import prefect
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open({str(pid_file)!r}, "w").write(str(child.pid))
time.sleep(600)
```
"""
    repo = _pages_repo(tmp_path, first=hangs)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--prefect-repo", str(repo), "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "timeout  caching.mdx#0" in done.stdout
    pid = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"the example's own process {pid} outlived it")
