"""``GET flowbook/api/flows``: the Flows view's data, served by a real ``jupyter server``.

A script registers flows in two projects (one name in both) and runs them, and runs a flow it
never registers; a real kernel, told its notebook as a Jupyter server tells it, registers a
flow from a cell. A server with the extension then lists them all: registered flows with
their project, version, where they are defined (the notebook relative to the server's root),
parameters with defaults, number of runs and last run's state; flows that only have runs with
their count and last run; the project filter; the projects of every flow; authentication.

In the test process, on SQLite and PostgreSQL: the view reads the store in the same two
queries whatever the number of flows (the panel asks every few seconds), and each flow's last
run is its own project's newest top-level run, once even when two runs share a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from server_process import ENABLE_BY_FLAG, ServerProcess, start_server

from flowbook import flow
from flowbook.jupyter.server import api
from flowbook.registry import flow_id, register_flow
from flowbook.settings import reload_settings
from flowbook.store import get_store
from flowbook.store.queries import list_runs

sys.path.insert(0, str(Path(__file__).parents[1] / "jupyter"))
from kernel_session import KernelSession

sys.path.insert(0, str(Path(__file__).parents[1] / "store"))
from store_under_test import StoreUnderTest, store

__all__ = ["store"]

API = "flowbook/api/"

POPULATE = """\
from flowbook import flow, task
from flowbook.registry import register_flow

@task
def add(x, y):
    return x + y

@flow
def etl(n: int, label: str = "rows", scale=1.5):
    return add(n, 1)

@flow(name="etl")
def etl_elsewhere(day: str = "monday"):
    return day

@flow
def report(fail: bool = False):
    if fail:
        raise ValueError("report failed on purpose")

@flow
def adhoc():
    return add(1, 2)

register_flow(etl, project_name="tutorial")
register_flow(etl_elsewhere, project_name="other")
register_flow(report, project_name="tutorial", labels=["nightly"])
etl(1)
etl(2)
etl_elsewhere()
try:
    report(fail=True)
except ValueError:
    pass
adhoc()
"""

KERNEL_CELL = """
from flowbook import flow
from flowbook.registry import register_flow

@flow
def from_notebook(x: int = 7):
    return x

register_flow(from_notebook, project_name="notebooks")
"""


def _clean_env(**flowbook_env: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.update(flowbook_env)
    return env


@pytest.fixture(scope="module")
def store_home(
    tmp_path_factory: pytest.TempPathFactory, venv_kernel_env: dict[str, str]
) -> tuple[Path, Path]:
    """(FLOWBOOK_HOME, the script that registered the flows) of a store written by POPULATE
    in another process and by a kernel registering a flow from a notebook's cell."""
    work = tmp_path_factory.mktemp("flows-store")
    home = work / "home"
    script = work / "populate.py"
    script.write_text(POPULATE)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=work,
        env=_clean_env(FLOWBOOK_HOME=str(home), FLOWBOOK_CONSOLE="off"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr

    env = _clean_env(FLOWBOOK_HOME=str(home), FLOWBOOK_CONSOLE="off")
    env.update(venv_kernel_env)
    env["JPY_SESSION_NAME"] = str(work / "root" / "sub" / "demo.ipynb")
    kernel = KernelSession(env)
    try:
        msg = kernel.kc.session.msg(
            "execute_request",
            {
                "code": textwrap.dedent(KERNEL_CELL),
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            metadata={"cellId": "cell-register"},
        )
        kernel.kc.shell_channel.send(msg)
        messages = kernel.wait(msg["header"]["msg_id"])
        assert kernel.error(messages) is None, kernel.error(messages)
    finally:
        kernel.close()
    return home, script


@pytest.fixture(scope="module")
def server(
    store_home: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    home, script = store_home
    work = script.parent
    flowbook_env = {"FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"}
    started = start_server(
        tmp_path_factory.mktemp("server"), work / "root", flowbook_env, ENABLE_BY_FLAG
    )
    yield started
    started.stop()


def ok(server: ServerProcess, path: str) -> Any:
    response = server.get(API + path)
    assert response.status == 200, (path, response)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.body


def by_key(flows: list[dict[str, Any]]) -> dict[tuple[bool, str | None, str], dict[str, Any]]:
    return {(f["registered"], f["project"], f["name"]): f for f in flows}


@pytest.mark.slow
def test_flows_needs_the_token(server: ServerProcess) -> None:
    for token in (None, "not-the-token"):
        response = server.get(API + "flows", token=token)
        assert response.status == 403, response
        assert "flows" not in (response.body or {})
    ok(server, "flows")


@pytest.mark.slow
def test_registered_flows_and_flows_with_runs_only(
    server: ServerProcess, store_home: tuple[Path, Path]
) -> None:
    _, script = store_home
    body = ok(server, "flows")
    assert body["projects"] == ["notebooks", "other", "tutorial"]
    flows = by_key(body["flows"])
    assert sorted(flows) == sorted(
        [
            (True, "tutorial", "etl"),
            (True, "other", "etl"),
            (True, "tutorial", "report"),
            (True, "notebooks", "from-notebook"),
            (False, None, "adhoc"),
        ]
    )

    etl = flows[(True, "tutorial", "etl")]
    assert etl["id"] == flow_id("etl", "tutorial")
    assert (etl["version"], etl["runs"]) == (1, 2)
    # a script's flow: where is its absolute path, and there is no notebook or cell
    assert (etl["where"], etl["script"]) == (str(script), str(script))
    assert (etl["notebook"], etl["cell_id"]) == (None, None)
    assert etl["parameters"] == [
        {"name": "label", "required": False, "default": "rows", "jsonable": True, "repr": "'rows'"},
        {"name": "n", "required": True},
        {"name": "scale", "required": False, "default": 1.5, "jsonable": True, "repr": "1.5"},
    ]
    assert (etl["last_state"], etl["last_state_type"]) == ("Completed", "COMPLETED")
    assert isinstance(etl["registered_at"], str)
    assert isinstance(etl["last_run"], str)
    assert etl["registered_at"] < etl["last_run"]

    # the same name in another project: its own runs, its own last run
    other = flows[(True, "other", "etl")]
    assert other["runs"] == 1
    assert other["last_run_id"] != etl["last_run_id"]
    runs = ok(server, "runs?flow=etl")["runs"]
    newest = {r["project"]: r["id"] for r in reversed(runs)}
    assert (etl["last_run_id"], other["last_run_id"]) == (newest["tutorial"], newest["other"])
    assert other["parameters"] == [
        {
            "name": "day",
            "required": False,
            "default": "monday",
            "jsonable": True,
            "repr": "'monday'",
        }
    ]

    report = flows[(True, "tutorial", "report")]
    assert (report["runs"], report["last_state"], report["last_state_type"]) == (
        1,
        "Failed",
        "FAILED",
    )
    assert report["labels"] == ["nightly"]

    # registered from a notebook's cell in a kernel: the notebook relative to the server root
    nb = flows[(True, "notebooks", "from-notebook")]
    assert (nb["notebook"], nb["cell_id"], nb["script"]) == (
        "sub/demo.ipynb",
        "cell-register",
        None,
    )
    assert nb["where"] == "sub/demo.ipynb (cell cell-register)"
    assert (nb["runs"], nb["last_run"], nb["last_run_id"], nb["last_state"]) == (
        0,
        None,
        None,
        None,
    )
    assert nb["parameters"] == [
        {"name": "x", "required": False, "default": 7, "jsonable": True, "repr": "7"}
    ]

    # a flow that only ran: its runs and its last run, nothing of a registration
    adhoc = flows[(False, None, "adhoc")]
    assert (adhoc["runs"], adhoc["last_state"]) == (1, "Completed")
    assert adhoc["last_run_id"] == ok(server, "runs?flow=adhoc")["runs"][0]["id"]
    for field in ("id", "version", "where", "registered_at", "parameters", "script", "notebook"):
        assert adhoc[field] is None, field


@pytest.mark.slow
def test_the_project_filter_keeps_one_project_and_every_project_name(
    server: ServerProcess,
) -> None:
    tutorial = ok(server, "flows?project=tutorial")
    assert [(f["project"], f["name"]) for f in tutorial["flows"]] == [
        ("tutorial", "etl"),
        ("tutorial", "report"),
    ]
    # the projects do not depend on the filter: the panel offers them all
    assert tutorial["projects"] == ["notebooks", "other", "tutorial"]
    assert [f["name"] for f in ok(server, "flows?project=other")["flows"]] == ["etl"]
    assert ok(server, "flows?project=no-such-project")["flows"] == []
    # an empty filter filters nothing
    assert len(ok(server, "flows?project=")["flows"]) == 5


def test_without_a_store_the_flows_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowbook.store import StoreError

    monkeypatch.setenv("FLOWBOOK_STORE", "off")
    reload_settings()
    try:
        with pytest.raises(StoreError, match="FLOWBOOK_STORE=off"):
            api.flow_list(None, None)
    finally:
        monkeypatch.delenv("FLOWBOOK_STORE")
        reload_settings()


def _register_and_run(name: str, project: str, runs: int) -> None:
    @flow(name=name, project=project)
    def numbered(n: int = 0) -> int:
        return n

    register_flow(numbered, project_name=project)
    for n in range(runs):
        numbered(n)


def _newest_run(name: str, project: str) -> str:
    opened = get_store()
    assert opened is not None
    return next(r.id for r in list_runs(opened, flow=name, limit=None) if r.project == project)


def _flow_list_and_its_selects(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str]]:
    """``api.flow_list``'s answer, and the SELECT statements it sent to the store."""
    opened = get_store()
    assert opened is not None
    opened.flush()
    monkeypatch.setattr(api, "_crash_checked_at", time.monotonic())  # no crash check now
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    sa.event.listen(opened.engine, "before_cursor_execute", record)
    try:
        body = api.flow_list(None, None)
    finally:
        sa.event.remove(opened.engine, "before_cursor_execute", record)
    return body, statements


def test_the_flows_view_reads_the_store_in_two_queries_whatever_the_number_of_flows(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one name in two projects, the newest run of that name in the other project
    _register_and_run("etl", "a", runs=2)
    _register_and_run("etl", "b", runs=1)
    body, few = _flow_list_and_its_selects(monkeypatch)
    assert len(few) == 2, few
    flows = by_key(body["flows"])
    assert (flows[(True, "a", "etl")]["runs"], flows[(True, "b", "etl")]["runs"]) == (2, 1)
    for project in ("a", "b"):
        assert flows[(True, project, "etl")]["last_run_id"] == _newest_run("etl", project)

    for i in range(12):
        _register_and_run(f"more-{i}", "c", runs=2)
    body, many = _flow_list_and_its_selects(monkeypatch)
    assert len(body["flows"]) == 14
    assert len(many) == 2, many
    more = by_key(body["flows"])[(True, "c", "more-7")]
    assert (more["runs"], more["last_run_id"]) == (2, _newest_run("more-7", "c"))


def test_runs_that_share_a_time_list_their_flow_once_with_one_last_run(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_and_run("tied", "a", runs=2)

    @flow(name="only-ran")
    def only_ran() -> int:
        return 1

    only_ran()
    only_ran()
    opened = get_store()
    assert opened is not None
    opened.flush()
    store.execute("UPDATE flow_runs SET created_at = 1700000000.5")

    for _ in range(2):  # the same answer each time
        body, _selects = _flow_list_and_its_selects(monkeypatch)
        assert [(f["name"], f["runs"]) for f in body["flows"]] == [("tied", 2), ("only-ran", 2)]
        for listed in body["flows"]:
            ids = [r.id for r in list_runs(opened, flow=listed["name"])]
            assert listed["last_run_id"] == max(ids)
            assert listed["last_run"] == "2023-11-14T22:13:20.500000+00:00"
