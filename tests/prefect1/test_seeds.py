"""Seed 001's Prefect 1 code blocks, read from the seed at test time and run as written with
``prefect`` renamed ``flowbook`` and the 10 s sleep made 1 s; nothing else is changed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flowbook.settings import reload_settings

REPO = Path(__file__).resolve().parents[2]


def _seeds_dir() -> Path | None:
    configured = os.environ.get("FLOWBOOK_SEEDS")
    for candidate in (Path(configured) if configured else None, REPO.parent / "shared" / "seeds"):
        if candidate is not None and candidate.is_dir():
            return candidate
    return None


def _seed_blocks(number: str) -> list[str]:
    seeds = _seeds_dir()
    if seeds is None:
        pytest.skip(
            "the seeds are not here: set FLOWBOOK_SEEDS to their directory (or put them in "
            f"{REPO.parent / 'shared' / 'seeds'})"
        )
    found = sorted(seeds.glob(f"{number}_*.txt"))
    if not found:
        pytest.skip(f"seed {number} is not in {seeds}")
    text = found[0].read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 2, f"seed {number} should hold two python blocks, has {len(blocks)}"
    return [
        re.sub(r"\bprefect\b", "flowbook", block).replace("time.sleep(10)", "time.sleep(1)")
        for block in blocks
    ]


def _run_block(code: str, script: Path) -> tuple[Any, str]:
    """Exec a seed block in a fresh namespace; its ``flow`` and what ``register`` returned.

    The block is written to ``script`` and compiled under that name, so that the registry
    sees a script it can load again. Its last line (``flow.register(...)``) is evaluated on
    its own, for its value.
    """
    script.write_text(code, encoding="utf-8")
    namespace: dict[str, Any] = {"__name__": "seed_001", "__file__": str(script)}
    lines = code.rstrip().splitlines()
    assert lines[-1].startswith("flow.register("), lines[-1]
    exec(compile("\n".join(lines[:-1]), str(script), "exec"), namespace)
    register = compile(lines[-1], str(script), "eval")
    registered: str = eval(register, namespace)
    return namespace["flow"], registered


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWBOOK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GREETING", raising=False)
    reload_settings()
    return tmp_path / "home"


def test_seed_001_env_reaches_the_tasks_and_is_restored(
    fresh_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _seed_blocks("001")[0]
    flow, registered = _run_block(code, fresh_home.parent / "seed_001_env.py")
    assert flow.project == "tutorial"
    assert _registered("hello-flow", "tutorial").id == registered
    state = flow.run()
    assert state.is_successful()
    err = capsys.readouterr().err
    for person in ("Arthur", "Ford", "Marvin"):
        assert f"Hello, {person}!" in err
    assert "GREETING" not in os.environ


def test_seed_001_local_dask_executor_overlaps_and_local_executor_does_not(
    fresh_home: Path,
) -> None:
    from flowbook.executors import LocalExecutor

    code = _seed_blocks("001")[1]
    flow, registered = _run_block(code, fresh_home.parent / "seed_001_parallel.py")
    assert _registered("hello-flow", "tutorial").id == registered
    assert _registered("hello-flow", "tutorial").executor["type"] == "LocalDaskExecutor"
    started = time.monotonic()
    assert flow.run().is_successful()
    assert time.monotonic() - started < 2.0  # three 1 s sleeps at once
    flow.executor = LocalExecutor()
    started = time.monotonic()
    assert flow.run().is_successful()
    assert time.monotonic() - started >= 3.0  # one after the other
    assert "GREETING" not in os.environ


def _registered(name: str, project: str) -> Any:
    from flowbook.store import get_store
    from flowbook.store.queries import find_registered_flow

    store = get_store()
    assert store is not None
    return find_registered_flow(store, name=name, project=project)


def test_seed_001_registered_then_run_by_flowbook_run_from_another_process(
    fresh_home: Path,
) -> None:
    """The seed's script registers the flow when run; ``flowbook run`` runs it again in a new
    process with a parameter, as Prefect 1's ``prefect run`` did through an agent."""
    code = _seed_blocks("001")[0]
    script = fresh_home.parent / "hello_flow.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "FLOWBOOK_HOME": str(fresh_home), "FLOWBOOK_CONSOLE": "on"}
    env.pop("GREETING", None)
    registering = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert registering.returncode == 0, registering.stderr
    assert " └── Project: tutorial" in registering.stdout
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowbook.cli",
            "run",
            "--name",
            "hello-flow",
            "--project",
            "tutorial",
            "--param",
            'people=["Zaphod", "Trillian"]',
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Hello, Zaphod!" in done.stderr
    assert "Hello, Trillian!" in done.stderr
    assert "Arthur" not in done.stderr
    import flowbook.runs

    [run] = flowbook.runs.list(flow="hello-flow")
    assert (run.project, run.state) == ("tutorial", "Completed")
    assert flowbook.runs.get(run.id).parameters == {"people": "['Zaphod', 'Trillian']"}
