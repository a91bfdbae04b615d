"""``import flowbook`` stays light, and what it leaves out still arrives when it is needed.

Each test runs a fresh interpreter: in the test process itself, other tests have long since
imported everything.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Imported by a run or a notebook when it needs them, never by ``import flowbook``.
NOT_AT_IMPORT = (
    "anyio",
    "asyncio",
    "cloudpickle",
    "ctypes",
    "dask",
    "distributed",
    "flowbook._carried_context",
    "flowbook.context",
    "flowbook.functional",
    "flowbook.jupyter",
    "flowbook.settings",
    "flowbook.store",
    "IPython",
    "ipykernel",
    "ipywidgets",
    "pydantic",
    "pydantic_core",
    "sqlalchemy",
    "typing_extensions",
)


def _run(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter, with no FLOWBOOK_* or coverage variable but ``env``."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLOWBOOK_", "COVERAGE_")) and k != "PYTHONPATH"
    }
    clean["HOME"] = str(cwd)  # the default home, if a run needs one, is the test's own
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _loaded_at_import(tmp_path: Path, **env: str) -> list[str]:
    code = f"""
        import json, sys
        import flowbook
        names = {list(NOT_AT_IMPORT)!r}
        print(json.dumps([n for n in names if n in sys.modules]))
    """
    done = _run(code, tmp_path, **env)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_import_flowbook_leaves_out_the_store_jupyter_dask_pydantic_and_asyncio(
    tmp_path: Path,
) -> None:
    assert _loaded_at_import(tmp_path) == []


def test_import_flowbook_leaves_them_out_with_a_home_that_holds_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = _run(
        """
        from flowbook import flow
        @flow
        def f():
            return 1
        assert f() == 1
        """,
        tmp_path,
        FLOWBOOK_HOME=str(home),
    )
    assert made.returncode == 0, made.stderr
    assert (home / "flowbook.db").is_file()
    assert _loaded_at_import(tmp_path, FLOWBOOK_HOME=str(home)) == []


def test_every_public_name_and_prefect_import_path_resolves_after_a_light_import(
    tmp_path: Path,
) -> None:
    code = """
        import sys
        import flowbook
        assert "flowbook.context" not in sys.modules
        missing = set(flowbook.__all__) - set(dir(flowbook))
        assert not missing, missing
        for name in flowbook.__all__:
            assert getattr(flowbook, name) is not None, name

        from flowbook import Parameter, context
        import flowbook.context
        import flowbook.functional
        assert context is flowbook.context and flowbook.context is sys.modules["flowbook.context"]
        assert Parameter is flowbook.functional.Parameter
        with context(answer=42):  # the module is callable, as in Prefect 1
            assert context.get("answer") == 42

        import flowbook.futures, flowbook.logging.loggers, flowbook.task_runners
        from flowbook.logging.loggers import get_run_logger
        from flowbook.task_runners import ThreadPoolTaskRunner
        assert get_run_logger is flowbook.get_run_logger
        try:
            flowbook.no_such_name
        except AttributeError as exc:
            print(exc)
    """
    done = _run(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "module 'flowbook' has no attribute 'no_such_name'"


def test_the_first_flow_call_after_a_light_import_has_written_its_rows_when_it_returns(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    code = """
        import os, sys
        from flowbook import flow, task
        assert "sqlalchemy" not in sys.modules

        @task
        def one(x):
            return x + 1

        @flow
        def first_call():
            return one(1)

        assert first_call() == 2
        os._exit(0)  # at once: no exit handler, no flush after the call
    """
    done = _run(code, tmp_path, FLOWBOOK_HOME=str(home))
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(home / "flowbook.db") as db:
        flow_runs = db.execute("select flow_name, state_type from flow_runs").fetchall()
        task_runs = db.execute("select state_type from task_runs").fetchall()
    assert flow_runs == [("first-call", "COMPLETED")]  # the name, as in Prefect
    assert task_runs == [("COMPLETED",)]


def test_a_timeout_stops_a_busy_task_when_ctypes_was_left_out_of_the_import(
    tmp_path: Path,
) -> None:
    code = """
        import sys, time
        from flowbook import flow, task
        assert "ctypes" not in sys.modules
        spins = [0]

        @task(timeout_seconds=0.3)
        def busy():
            while True:
                spins[0] += 1

        @flow
        def waits():
            seen["state"] = busy(return_state=True)

        seen = {}
        waits()
        stopped_at = spins[0]
        time.sleep(0.3)
        print(seen["state"].name, stopped_at > 0, spins[0] == stopped_at)
    """
    done = _run(code, tmp_path, FLOWBOOK_STORE="off")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["TimedOut", "True", "True"]


@pytest.mark.parametrize("how", ["called", "submitted"])
def test_async_tasks_in_a_sync_flow_run_when_asyncio_was_left_out_of_the_import(
    tmp_path: Path, how: str
) -> None:
    code = f"""
        import sys
        from flowbook import flow, task
        assert "asyncio" not in sys.modules
        attempts = []

        @task(retries=1, retry_delay_seconds=0.01)
        async def twice(x):
            attempts.append(x)
            if len(attempts) == 1:
                raise ValueError("first attempt")
            return x * 2

        @flow
        def sync_flow():
            return {"twice(21)" if how == "called" else "twice.submit(21).result()"}

        print(sync_flow(), len(attempts))
    """
    done = _run(code, tmp_path, FLOWBOOK_STORE="off")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["42", "2"]
