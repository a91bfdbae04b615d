"""The Jupyter server extension (``flowbook.jupyter.server``) over real components.

A store is filled by real flows run in a subprocess; a real ``jupyter server`` subprocess with
the extension serves it, and the tests call its HTTP API with urllib: authentication on every
endpoint, the run list and its filters, run details, the cache list and clearing, and the
errors. A flow run started in a real kernel records its notebook and cell, and a server
enabled by the config file ``jupyter-config/jupyter_server_config.d/flowbook.json`` shows them
relative to its root.

The tests share one server and run in file order: the test that clears cache entries comes
after the ones that list them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from server_process import ENABLE_BY_FLAG, ServerProcess, start_server

import flowbook.cache
import flowbook.runs
from flowbook.jupyter.server.api import relative_notebook
from flowbook.settings import reload_settings
from flowbook.store import close_store

sys.path.insert(0, str(Path(__file__).parents[1] / "jupyter"))
from kernel_session import KernelSession

REPO = Path(__file__).parents[2]
CONFIG_DIR = REPO / "jupyter-config"
CONFIG_FILE = CONFIG_DIR / "jupyter_server_config.d" / "flowbook.json"
API = "flowbook/api/"

RUN_KEYS = {
    "id",
    "name",
    "flow_name",
    "state",
    "state_type",
    "message",
    "start_time",
    "end_time",
    "duration_s",
    "task_runs",
    "notebook",
    "cell_id",
}
DETAIL_KEYS = (RUN_KEYS - {"task_runs"}) | {"parameters", "tags", "states", "task_runs", "logs"}
TASK_KEYS = {
    "id",
    "name",
    "task_name",
    "state",
    "state_type",
    "start_time",
    "end_time",
    "duration_s",
}
ENTRY_KEYS = {
    "task_key",
    "key",
    "task_name",
    "flow_name",
    "created",
    "expires",
    "expired",
    "size",
    "hits",
    "input_preview",
}
# a valid XSRF cookie and header pair: a POST without the token then fails on authentication
# alone (the same request with the token passes)
XSRF = {"Cookie": "_xsrf=abcd1234", "X-XSRFToken": "abcd1234"}

POPULATE = """\
from flowbook import flow, get_run_logger, task
from flowbook.tasks import task_input_hash

@task
def load(n):
    return list(range(n))

@task
def total(xs):
    return sum(xs)

@flow(flow_run_name="etl-ok")
def etl(n: int = 3):
    get_run_logger().info("loaded %d rows", n)
    return total(load(n))

@task
def explode():
    raise ValueError("bad input 42")

@flow(flow_run_name="boom-run")
def boom():
    explode()

@task(cache_key_fn=task_input_hash)
def square(x):
    return x * x

@flow(flow_run_name="cached-{x}")
def cached(x: int):
    return square(x)

@flow
def child():
    return 1

@flow(flow_run_name="parent-run", tags=["nightly"])
def parent():
    return child()

etl(3)
try:
    boom()
except ValueError:
    pass
cached(2)
cached(2)  # served from the cache
cached(3)
parent()
"""
NEWEST_FIRST = ["parent-run", "cached-3", "cached-2", "cached-2", "boom-run", "etl-ok"]


def _clean_env(**flowbook_env: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.update(flowbook_env)
    return env


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FLOWBOOK_HOME of a store written by POPULATE in another process."""
    work = tmp_path_factory.mktemp("server-store")
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
    return home


@pytest.fixture(scope="module")
def server(populated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("server")
    flowbook_env = {"FLOWBOOK_HOME": str(populated), "FLOWBOOK_CONSOLE": "off"}
    started = start_server(work, work / "root", flowbook_env, ENABLE_BY_FLAG)
    yield started
    started.stop()


def ok(server: ServerProcess, path: str) -> Any:
    response = server.get(API + path)
    assert response.status == 200, (path, response)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.body


def names(server: ServerProcess, query: str = "") -> list[str]:
    return [run["name"] for run in ok(server, "runs" + query)["runs"]]


def error(response: Any, status: int) -> str:
    """The message of an error answer, checking its status and shape."""
    assert response.status == status, response
    assert set(response.body) == {"message"}, response.body
    message: str = response.body["message"]
    return message


def run_id(server: ServerProcess, name: str) -> str:
    (found,) = [r["id"] for r in ok(server, "runs?limit=1000")["runs"] if r["name"] == name]
    return str(found)


@pytest.fixture
def store_of(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Point this process's flowbook at another store: ``store_of(home)``."""

    def use(home: Path) -> None:
        monkeypatch.setenv("FLOWBOOK_HOME", str(home))
        monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
        reload_settings()

    yield use
    close_store()


# -- authentication --------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_endpoint_needs_the_token(server: ServerProcess) -> None:
    some_id = run_id(server, "etl-ok")
    for path in ("runs", "runs?flow=etl&limit=5", f"runs/{some_id}", "cache", "cache?task=square"):
        for token in (None, "not-the-token"):
            response = server.get(API + path, token=token)
            assert response.status == 403, (path, token, response)
            assert "runs" not in (response.body or {})
            assert "entries" not in (response.body or {})
        ok(server, path)

    for token in (None, "not-the-token"):
        refused = server.post(API + "cache/clear", {"all": True}, token=token, headers=XSRF)
        assert refused.status == 403, refused
    assert len(ok(server, "cache")["entries"]) == 2  # nothing was cleared
    # the same request with the token passes: the 403s were the missing authentication
    passed = server.post(API + "cache/clear", {"task": "no-such-task"}, headers=XSRF)
    assert (passed.status, passed.body) == (200, {"cleared": 0})


# -- the run list ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_list_has_the_top_level_runs_newest_first(server: ServerProcess) -> None:
    body = ok(server, "runs")
    runs = body["runs"]
    # the subflow run of `child` is not listed, and neither is its flow
    assert [r["name"] for r in runs] == NEWEST_FIRST
    assert body["flows"] == ["boom", "cached", "etl", "parent"]
    for run in runs:
        assert set(run) >= RUN_KEYS, run
        # runs started outside Jupyter come from no notebook
        assert (run["notebook"], run["cell_id"]) == (None, None)
    by_name = {r["name"]: r for r in runs}
    etl = by_name["etl-ok"]
    assert (etl["flow_name"], etl["state"], etl["state_type"]) == ("etl", "Completed", "COMPLETED")
    assert (etl["message"], etl["task_runs"]) == ("All states completed.", 2)
    assert isinstance(etl["duration_s"], float)
    assert etl["duration_s"] >= 0
    boom = by_name["boom-run"]
    assert (boom["state"], boom["state_type"], boom["message"]) == (
        "Failed",
        "FAILED",
        "1/1 states failed.",
    )
    assert by_name["parent-run"]["task_runs"] == 1  # the subflow call


@pytest.mark.slow
def test_the_list_filters_by_flow_state_and_limit(server: ServerProcess) -> None:
    assert names(server, "?flow=etl") == ["etl-ok"]
    assert names(server, "?flow=cached") == ["cached-3", "cached-2", "cached-2"]
    assert names(server, "?flow=child") == []  # a flow that only ran as a subflow
    assert names(server, "?flow=no-such-flow") == []
    assert names(server, "?state=Failed") == ["boom-run"]
    assert names(server, "?state=failed") == ["boom-run"]
    assert names(server, "?state=Completed") == [n for n in NEWEST_FIRST if n != "boom-run"]
    assert names(server, "?state=Crashed") == []
    assert names(server, "?flow=cached&state=Failed") == []
    assert names(server, "?flow=boom&state=Failed") == ["boom-run"]
    assert names(server, "?flow=&state=") == NEWEST_FIRST  # empty filters filter nothing
    assert names(server, "?limit=2") == NEWEST_FIRST[:2]
    assert names(server, "?limit=1000") == NEWEST_FIRST
    assert names(server, "?flow=cached&limit=1") == ["cached-3"]
    # the flow names do not depend on the filters
    assert ok(server, "runs?flow=etl&limit=1")["flows"] == ["boom", "cached", "etl", "parent"]


@pytest.mark.slow
def test_bad_list_parameters_are_400_naming_them(server: ServerProcess) -> None:
    for value in ("0", "1001", "x", "-1", "2.5", "", "1e3"):
        message = error(server.get(API + f"runs?limit={value}"), 400)
        assert f"limit={value!r}" in message
        assert "1 to 1000" in message
    message = error(server.get(API + "runs?state=Bogus"), 400)
    assert "state='Bogus'" in message
    for allowed in ("Completed", "Failed", "Cancelled", "Crashed", "Running", "TimedOut"):
        assert allowed in message


# -- one run ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_ids_must_be_uuids_of_runs(server: ServerProcess) -> None:
    real = run_id(server, "etl-ok")
    for bad in ("etl-ok", real[:8], real + "0", real.replace("-", ""), "not a uuid"):
        message = error(server.get(API + f"runs/{quote(bad)}"), 400)
        assert f"run id {bad!r}" in message
    unknown = "00000000-0000-4000-8000-000000000000"
    assert unknown in error(server.get(API + f"runs/{unknown}"), 404)
    assert ok(server, f"runs/{real.upper()}")["id"] == real


@pytest.mark.slow
def test_a_run_has_its_states_task_runs_logs_and_parameters(server: ServerProcess) -> None:
    detail = ok(server, f"runs/{run_id(server, 'etl-ok')}")
    assert set(detail) >= DETAIL_KEYS
    assert (detail["name"], detail["flow_name"], detail["state"]) == ("etl-ok", "etl", "Completed")
    assert detail["parameters"] == {"n": "3"}
    assert detail["tags"] == []
    assert [s["name"] for s in detail["states"]] == ["Pending", "Running", "Completed"]
    assert all({"name", "type", "message", "timestamp"} <= set(s) for s in detail["states"])
    assert [t["name"] for t in detail["task_runs"]] == ["load-0", "total-0"]
    for task_run in detail["task_runs"]:
        assert set(task_run) >= TASK_KEYS, task_run
        assert (task_run["state"], task_run["state_type"]) == ("Completed", "COMPLETED")
        assert task_run["duration_s"] >= 0
        assert [s["name"] for s in task_run["states"]] == ["Pending", "Running", "Completed"]
    # the run logger's line, among the engine's lines rebuilt from the rows ("Created flow
    # run ...", "Finished in state Completed()")
    (line,) = [x for x in detail["logs"] if x["message"] == "loaded 3 rows"]
    assert any(x["message"].startswith("Finished in state Completed") for x in detail["logs"])
    assert (line["message"], line["level"], line["level_name"]) == ("loaded 3 rows", 20, "INFO")
    assert line["task_run_id"] is None
    assert isinstance(line["timestamp"], str)
    assert (detail["notebook"], detail["cell_id"]) == (None, None)

    failed = ok(server, f"runs/{run_id(server, 'boom-run')}")
    assert [s["name"] for s in failed["states"]] == ["Pending", "Running", "Failed"]
    (explode,) = failed["task_runs"]
    assert (explode["name"], explode["state"]) == ("explode-0", "Failed")
    assert "ValueError: bad input 42" in explode["message"]

    cached_runs = [r for r in ok(server, "runs?flow=cached")["runs"] if r["name"] == "cached-2"]
    served = ok(server, f"runs/{cached_runs[0]['id']}")  # the newer one
    assert served["parameters"] == {"x": "2"}
    assert [(t["name"], t["state"]) for t in served["task_runs"]] == [("square-0", "Cached")]

    parent = ok(server, f"runs/{run_id(server, 'parent-run')}")
    assert parent["tags"] == ["nightly"]
    (call,) = parent["task_runs"]
    sub = ok(server, f"runs/{call['subflow_run_id']}")  # subflow runs have details too
    assert (sub["flow_name"], sub["parent_task_run_id"]) == ("child", call["id"])


# -- the cache -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_cache_lists_its_entries(server: ServerProcess) -> None:
    entries = ok(server, "cache")["entries"]
    assert len(entries) == 2
    for entry in entries:
        assert set(entry) >= ENTRY_KEYS, entry
        assert (entry["task_name"], entry["flow_name"], entry["expired"]) == (
            "square",
            "cached",
            False,
        )
        assert entry["size"] > 0
    assert [(json.loads(e["input_preview"]), e["hits"]) for e in entries] == [
        ({"x": "3"}, 0),  # newest first
        ({"x": "2"}, 1),
    ]
    assert ok(server, "cache?task=square")["entries"] == entries
    assert ok(server, "cache?flow=cached&task=square")["entries"] == entries
    assert ok(server, "cache?task=load")["entries"] == []
    assert ok(server, "cache?flow=etl")["entries"] == []


@pytest.mark.slow
def test_bad_clear_bodies_are_400_and_clear_nothing(server: ServerProcess) -> None:
    before = ok(server, "cache")["entries"]
    pair = {"task_key": before[0]["task_key"], "key": before[0]["key"]}
    cases: list[tuple[Any, str]] = [
        (b"not json", "not JSON"),
        (b"", "non-empty JSON object"),
        ([], "non-empty JSON object"),
        ({}, "non-empty JSON object"),
        ({"bogus": 1}, "unknown field 'bogus'"),
        ({"all": True, "everything": True}, "unknown field 'everything'"),
        ({"task": ""}, "task"),
        ({"task": None}, "task=null"),
        ({"flow": 3}, "flow=3"),
        ({"expired": "yes"}, 'expired="yes"'),
        ({"all": 1}, "all=1"),
        ({"all": False}, "selects no cache entries"),
        ({"entries": []}, "entries=[]"),
        ({"entries": "x"}, "entries="),
        ({"entries": [{"task_key": pair["task_key"]}]}, "entries[0]"),
        ({"entries": [{**pair, "key": ""}]}, "entries[0]"),
        ({"entries": [pair, {**pair, "extra": 1}]}, "entries[1]"),
        ({"entries": [pair], "all": True}, "cannot be combined with all"),
    ]
    for body, expected in cases:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        message = error(server.post(API + "cache/clear", raw=raw), 400)
        assert expected in message, (body, message)
    assert ok(server, "cache")["entries"] == before


@pytest.mark.slow
def test_clearing_entries_removes_them_from_the_store(
    server: ServerProcess, populated: Path, store_of: Any
) -> None:
    entries = ok(server, "cache")["entries"]
    three, two = entries
    one = [{"task_key": three["task_key"], "key": three["key"]}]
    cleared = server.post(API + "cache/clear", {"entries": one})
    assert (cleared.status, cleared.body) == (200, {"cleared": 1})
    again = server.post(API + "cache/clear", {"entries": one})
    assert (again.status, again.body) == (200, {"cleared": 0})
    assert [e["key"] for e in ok(server, "cache")["entries"]] == [two["key"]]

    store_of(populated)
    assert [e.key for e in flowbook.cache.entries()] == [two["key"]]

    by_task = server.post(API + "cache/clear", {"task": "square", "flow": "cached"})
    assert (by_task.status, by_task.body) == (200, {"cleared": 1})
    assert flowbook.cache.entries() == []
    # the runs are still there
    assert len(flowbook.runs.list(limit=None)) == 7


# -- where a run came from -------------------------------------------------------------------------


def test_a_notebook_path_is_made_relative_to_the_server_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(root)
    inside = str(root / "sub" / "demo.ipynb")
    assert relative_notebook(inside, str(root)) == "sub/demo.ipynb"
    assert relative_notebook(inside, str(root) + "/") == "sub/demo.ipynb"
    assert relative_notebook(inside, str(tmp_path / "link")) == "sub/demo.ipynb"
    assert relative_notebook(str(tmp_path / "link" / "a.ipynb"), str(root)) == "a.ipynb"
    outside = "/some/dir/demo.ipynb"
    assert relative_notebook(outside, str(root)) == outside
    assert relative_notebook(str(tmp_path / "rootless.ipynb"), str(root)) == str(
        tmp_path / "rootless.ipynb"
    )
    assert relative_notebook("sub/demo.ipynb", str(root)) == "sub/demo.ipynb"  # already relative
    assert relative_notebook(None, str(root)) is None
    assert relative_notebook(inside, None) == inside


@dataclass
class KernelRuns:
    home: Path  # FLOWBOOK_HOME of the kernel
    root: Path  # a server root holding the notebook's path
    notebook: Path  # JPY_SESSION_NAME of the kernel


KERNEL_DEFS = """
import threading
from flowbook import flow, task

@task
def inc(x):
    return x + 1

@flow
def child():
    return 1

@flow(flow_run_name="nb-{label}")
def nb_flow(label: str):
    child()
    return inc(1)
"""


def _execute(kernel: KernelSession, code: str, cell_id: str | None) -> None:
    """Run ``code`` as JupyterLab does: an execute request with the cell's id in its metadata."""
    metadata = {} if cell_id is None else {"cellId": cell_id}
    msg = kernel.kc.session.msg(
        "execute_request",
        {
            "code": textwrap.dedent(code),
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        metadata=metadata,
    )
    kernel.kc.shell_channel.send(msg)
    messages = kernel.wait(msg["header"]["msg_id"])
    assert kernel.error(messages) is None, kernel.error(messages)


@pytest.fixture(scope="module")
def kernel_runs(
    venv_kernel_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> KernelRuns:
    """Runs started in a real kernel told its notebook, as a Jupyter server tells it."""
    work = tmp_path_factory.mktemp("kernel-origin")
    runs = KernelRuns(work / "home", work / "root", work / "root" / "sub" / "demo.ipynb")
    env = _clean_env(FLOWBOOK_HOME=str(runs.home), FLOWBOOK_CONSOLE="off")
    env.update(venv_kernel_env)
    env["JPY_SESSION_NAME"] = str(runs.notebook)
    kernel = KernelSession(env)
    try:
        _execute(kernel, KERNEL_DEFS, None)
        _execute(kernel, "nb_flow('plain')", None)  # a client that sends no cell id
        _execute(kernel, "nb_flow('direct')", "cell-direct")
        _execute(kernel, "nb_flow.run_background('background').result(timeout=60)", "cell-bg")
        _execute(
            kernel,
            """
            t = threading.Thread(target=nb_flow, args=("thread",))
            t.start()
            t.join()
            """,
            "cell-thread",
        )
    finally:
        kernel.close()
    return runs


@pytest.mark.slow
def test_a_run_started_in_a_kernel_records_its_notebook_and_cell(
    kernel_runs: KernelRuns, store_of: Any
) -> None:
    store_of(kernel_runs.home)
    runs = flowbook.runs.list(limit=None)
    notebook = str(kernel_runs.notebook)
    top = {r.name: (r.notebook, r.cell_id) for r in runs if r.parent_task_run_id is None}
    assert top == {
        "nb-plain": (notebook, None),
        "nb-direct": (notebook, "cell-direct"),
        # created on the main thread, in the cell that started it
        "nb-background": (notebook, "cell-bg"),
        # started on a thread of the user's: the notebook, but no cell
        "nb-thread": (notebook, None),
    }
    subflows = [r for r in runs if r.parent_task_run_id is not None]
    assert len(subflows) == 4
    assert all((r.notebook, r.cell_id) == (None, None) for r in subflows)
    (direct,) = [r for r in runs if r.name == "nb-direct"]
    detail = flowbook.runs.get(direct.id)
    assert (detail.notebook, detail.cell_id) == (notebook, "cell-direct")


@pytest.mark.slow
def test_the_config_file_enables_the_extension(kernel_runs: KernelRuns, tmp_path: Path) -> None:
    assert json.loads(CONFIG_FILE.read_text()) == {
        "ServerApp": {"jpserver_extensions": {"flowbook.jupyter.server": True}}
    }
    server = start_server(
        tmp_path,
        kernel_runs.root,
        {"FLOWBOOK_HOME": str(kernel_runs.home), "FLOWBOOK_CONSOLE": "off"},
        "--ServerApp.log_level=DEBUG",
        extra_env={"JUPYTER_CONFIG_PATH": str(CONFIG_DIR)},
    )
    try:
        log = server.log_text()
        # the server read this very file (the debug log lists the config files it used)
        assert "Paths used for configuration of jupyter_server_config" in log
        assert str(CONFIG_FILE) in log
        assert "flowbook.jupyter.server | extension was successfully loaded" in log
        assert server.get(API + "runs", token=None).status == 403
        body = ok(server, "runs")
        assert body["flows"] == ["nb-flow"]
        runs = {r["name"]: r for r in body["runs"]}
        assert sorted(runs) == ["nb-background", "nb-direct", "nb-plain", "nb-thread"]
        # the kernel recorded the absolute path; the server shows it relative to its root
        assert {r["notebook"] for r in runs.values()} == {"sub/demo.ipynb"}
        assert runs["nb-direct"]["cell_id"] == "cell-direct"
        detail = ok(server, f"runs/{runs['nb-direct']['id']}")
        assert (detail["notebook"], detail["cell_id"]) == ("sub/demo.ipynb", "cell-direct")
    finally:
        server.stop()


def test_importing_the_server_extension_imports_no_ipython() -> None:
    code = (
        "import sys, flowbook.jupyter.server, flowbook.jupyter.server.handlers\n"
        "points = flowbook.jupyter.server._jupyter_server_extension_points()\n"
        "print(points, sorted(m for m in ('IPython', 'ipykernel') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[{'module': 'flowbook.jupyter.server'}] []"


def test_without_a_store_the_api_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowbook.jupyter.server import api
    from flowbook.store import StoreError

    monkeypatch.setenv("FLOWBOOK_STORE", "off")
    reload_settings()
    for call in (lambda: api.run_list(None, None, 10, None), lambda: api.cache_entries(None, None)):
        with pytest.raises(StoreError, match="FLOWBOOK_STORE=off"):
            call()
