"""``flowbook flows`` and ``flowbook run``: registered flows listed next to flows that only
have runs, and a registered flow run from another process, with parameters and variables,
its exit status and messages, and the run recorded with its project.

Runs on SQLite and on the real PostgreSQL server (the ``store`` fixture of tests/store).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "store"))
from store_under_test import StoreUnderTest, child_env, store

from flowbook import flow
from flowbook.cli import main
from flowbook.registry import flow_id, register_flow

__all__ = ["store"]

SCRIPT = """\
import os
from pathlib import Path

from flowbook import flow, task, get_run_logger
from flowbook.registry import register_flow


@task
def say_hello(name):
    greeting = os.environ.get("GREETING")
    get_run_logger().info(f"{greeting}, {name}! (IMPORTED={os.environ.get('IMPORTED')})")
    if name == "Vogon":
        raise ValueError("no poetry")


@flow(name="hello-flow", env={"GREETING": "Hello"})
def hello(people=["Arthur", "Ford"]):
    for person in people:
        say_hello(person)
    return len(people)


@flow(name="needs-a-count")
def needs_a_count(count: int):
    return count


# the variables of `flowbook run --env` are set while the script is imported too
os.environ.setdefault("IMPORTED", os.environ.get("SEEN_AT_IMPORT", "unset"))
register_flow(hello, project_name="tutorial")
register_flow(needs_a_count, project_name="tutorial")

if __name__ == "__main__":
    Path(__file__).with_suffix(".main-ran").write_text("yes")
"""


def cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowbook.cli", *args],
        env=child_env({**env, "FLOWBOOK_CONSOLE": "on"}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def register_script(store: StoreUnderTest, tmp_path: Path) -> Path:
    script = tmp_path / "hello_flow.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)],
        env=child_env(store.env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f" └── ID: {flow_id('hello-flow', 'tutorial')}" in done.stdout
    script.with_suffix(".main-ran").unlink()
    return script


def test_a_registered_flow_runs_from_another_process(store: StoreUnderTest, tmp_path: Path) -> None:
    script = register_script(store, tmp_path)

    done = cli(
        store.env,
        "run",
        "--name",
        "hello-flow",
        "--project",
        "tutorial",
        "--param",
        'people=["Zaphod", "Trillian"]',
        "--env",
        "GREETING=Howdy",
        "--env",
        "SEEN_AT_IMPORT=yes",
        "--watch",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    # --env wins over the flow's own env; the script's import saw the variables too
    assert "Howdy, Zaphod! (IMPORTED=yes)" in done.stderr
    assert "Howdy, Trillian! (IMPORTED=yes)" in done.stderr
    assert "Hello" not in done.stderr
    assert done.stdout.splitlines()[-1] == "flow 'hello-flow': Completed (All states completed.)"
    # the script was imported, not run as a program, and its register call printed nothing
    assert not script.with_suffix(".main-ran").exists()
    assert "Flow URL" not in done.stdout

    # the flow's default, its own env, and the run recorded with its project
    done = cli(store.env, "run", "-n", "hello-flow", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Hello, Arthur! (IMPORTED=unset)" in done.stderr
    runs = store.rows(
        "SELECT flow_name, project, state_name, parameters_preview FROM flow_runs "
        "ORDER BY created_at"
    )
    assert [r[:3] for r in runs] == [
        ("hello-flow", "tutorial", "Completed"),
        ("hello-flow", "tutorial", "Completed"),
    ]
    assert "Trillian" in runs[0][3]

    # bad input from another process: exit status 2, nothing run
    done = cli(store.env, "run", "-n", "hello-flow", "--param", "crowd=[]", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "flowbook: 'crowd' is not a parameter of flow 'hello-flow'; its parameters are: people"
    )
    assert store.count("flow_runs") == 2

    # a failing run: exit status 1
    done = cli(store.env, "run", "--id", flow_id("hello-flow", "tutorial"), "--param",
               'people=["Vogon"]', cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "ValueError: no poetry" in done.stderr
    assert done.stdout.splitlines()[-1].startswith("flow 'hello-flow': Failed")
    assert store.rows("SELECT state_name, project FROM flow_runs ORDER BY created_at")[-1] == (
        "Failed",
        "tutorial",
    )


FUNCTIONAL_SCRIPT = """\
import os

import flowbook
from flowbook import task, Flow, Parameter
from flowbook.run_configs import LocalRun


@task
def say_hello(name):
    greeting = os.environ.get("GREETING")
    logger = flowbook.context.get("logger")
    logger.info(f"{greeting}, {name}!")


with Flow("hello-flow") as flow:
    people = Parameter("people", default=["Arthur", "Ford", "Marvin"])
    say_hello.map(people)

flow.run_config = LocalRun(env={"GREETING": "Hello"})
flow.register(project_name="tutorial")
"""


def test_a_registered_functional_flow_runs_from_another_process(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    script = tmp_path / "functional_hello.py"
    script.write_text(FUNCTIONAL_SCRIPT)
    registered = subprocess.run(
        [sys.executable, str(script)],
        env=child_env(store.env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert registered.returncode == 0, registered.stderr
    assert " └── Project: tutorial" in registered.stdout

    done = cli(
        store.env,
        "run",
        "--name",
        "hello-flow",
        "--project",
        "tutorial",
        "--param",
        'people=["Zaphod", "Trillian"]',
        "--env",
        "GREETING=Howdy",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Howdy, Zaphod!" in done.stderr
    assert "Howdy, Trillian!" in done.stderr
    assert "Arthur" not in done.stderr
    assert done.stdout.splitlines()[-1].startswith("flow 'hello-flow': Success")
    assert store.rows("SELECT flow_name, project, state_name FROM flow_runs") == [
        ("hello-flow", "tutorial", "Completed")
    ]
    assert store.count("task_runs") == 2

    # without --env the run config's variable is used
    done = cli(store.env, "run", "--name", "hello-flow", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Hello, Marvin!" in done.stderr


@flow(name="greeting-flow")
def greeting_flow(people: list[str] = ["Arthur"]) -> int:  # noqa: B006 - as Prefect 1 wrote it
    return len(people)


@flow(name="needs-a-count")
def needs_a_count(count: int) -> int:
    return count


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-n", "greeting-flow", "--param", "crowd=[]"],
            "flowbook: 'crowd' is not a parameter of flow 'greeting-flow'; its parameters "
            "are: people",
        ),
        (
            ["-n", "greeting-flow", "--param", "people=[Ford]"],
            "flowbook: the value of parameter 'people', '[Ford]', is not JSON; give a JSON "
            "value (a string in double quotes: --param 'people=\"[Ford]\"')",
        ),
        (
            ["-n", "greeting-flow", "--param", "people"],
            "flowbook: --param 'people' is not KEY=JSON; give e.g. --param 'people=[\"Ford\"]'",
        ),
        (
            ["-n", "needs-a-count"],
            "flowbook: flow 'needs-a-count' needs parameter 'count'; give it with --param "
            "'count=JSON'",
        ),
        (
            ["-n", "greeting-flow", "--env", "GREETING"],
            "flowbook: --env 'GREETING' is not KEY=VALUE; give e.g. --env GREETING=Hello",
        ),
        ([], "flowbook: say which flow: --name NAME [--project P], or --id ID"),
        (
            ["-n", "greeting-flow", "--id", "x"],
            "flowbook: say which flow: --name NAME [--project P], or --id ID",
        ),
    ],
)
def test_bad_input_exits_2_naming_it(
    store: StoreUnderTest,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    register_flow(greeting_flow, project_name="tutorial")
    register_flow(needs_a_count, project_name="tutorial")
    capsys.readouterr()
    assert main(["run", *args]) == 2
    assert capsys.readouterr().err.strip() == message
    assert store.count("flow_runs") == 0


CACHED_SCRIPT = """\
from datetime import timedelta
from pathlib import Path

import flowbook
from flowbook import flow, task
from flowbook.registry import register_flow


@task(cache_for=timedelta(hours=1))
def extract():
    with open(Path(__file__).with_suffix(".calls"), "a") as f:
        f.write("call\\n")
    print("slug=" + flowbook.context.get("task_slug"))
    return 42


@flow(name="cached-flow")
def cached_flow():
    return extract()


register_flow(cached_flow, project_name="a")

if __name__ == "__main__":
    cached_flow()
"""


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_flowbook_run_gives_tasks_the_identity_python_script_gives_them(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    script = tmp_path / "cached.py"
    script.write_text(CACHED_SCRIPT)
    ran = subprocess.run(
        [sys.executable, str(script)],
        env=child_env(store.env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert f"slug=script:{script}:extract" in ran.stdout
    done = cli(store.env, "run", "-n", "cached-flow", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # the cache entry `python cached.py` made is used: the task ran once
    assert script.with_suffix(".calls").read_text() == "call\n"
    assert store.rows("SELECT DISTINCT task_key FROM task_runs") == [(f"script:{script}:extract",)]


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_parameters_are_checked_against_the_script_as_it_is_now(
    store: StoreUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "changing.py"
    script.write_text(
        "from flowbook import flow\nfrom flowbook.registry import register_flow\n\n"
        "@flow(name='changing')\ndef changing(count: int = 1):\n    return count\n\n"
        "register_flow(changing, project_name='a')\n"
    )
    subprocess.run(
        [sys.executable, str(script)], env=child_env(store.env), check=True, capture_output=True
    )
    # edited since it was registered: `count` is gone, `day` (a default JSON cannot hold)
    # and `extra` are new
    script.write_text(
        "import datetime\nfrom flowbook import flow\n"
        "from flowbook.registry import register_flow\n\n"
        "@flow(name='changing')\n"
        "def changing(day=datetime.date(2020, 1, 1), extra: int = 0):\n"
        "    print(f'day={day!r} extra={extra!r}')\n\n"
        "register_flow(changing, project_name='a')\n"
    )
    capsys.readouterr()
    assert main(["run", "-n", "changing", "--param", "extra=2"]) == 0
    out = capsys.readouterr().out
    assert "day=datetime.date(2020, 1, 1) extra=2" in out
    assert out.splitlines()[-1].startswith("flow 'changing': Completed")

    assert main(["run", "-n", "changing", "--param", "count=3"]) == 2
    assert capsys.readouterr().err.strip() == (
        "flowbook: 'count' is not a parameter of flow 'changing'; its parameters are: day, extra"
    )
    assert store.rows("SELECT state_name FROM flow_runs") == [("Completed",)]


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_flows_that_cannot_be_found_or_loaded(
    store: StoreUnderTest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import datetime

    @flow(name="dated")
    def dated(day: datetime.date = datetime.date(2020, 1, 1)) -> str:
        return str(day)

    @flow(name="shared-name")
    def shared_name() -> int:
        return 1

    register_flow(dated, project_name="a")
    register_flow(shared_name, project_name="a")
    register_flow(shared_name, project_name="b")
    capsys.readouterr()

    def run(*args: str) -> tuple[int, str]:
        status = main(["run", *args])
        return status, capsys.readouterr().err.strip()

    assert run("-n", "nobody") == (
        1,
        "flowbook: no flow named 'nobody' is registered; `flowbook flows` lists the registered "
        "flows (register one with flow.register(project_name=...))",
    )
    assert run("-n", "dated", "-p", "b")[1].startswith(
        "flowbook: no flow named 'dated' is registered in project 'b'"
    )
    assert run("-n", "shared-name") == (
        2,
        "flowbook: flow name 'shared-name' is registered in several projects ('a', 'b'); say "
        "which with --project",
    )
    # the script (this test module) no longer defines the flow under that name
    assert run("-n", "dated", "--param", 'day="2021-01-01"') == (
        1,
        f"flowbook: the script {__file__} no longer defines flow 'dated' of project 'a'; "
        "register it again, or give the flow its name back",
    )

    # a script that fails while it is imported
    broken = tmp_path / "broken.py"
    broken.write_text(
        "import os\nfrom flowbook import flow\nfrom flowbook.registry import register_flow\n\n"
        "@flow(name='broken')\ndef broken():\n    return 1\n\n"
        "register_flow(broken, project_name='a')\n"
        "if os.environ.get('BREAK'):\n    raise RuntimeError('the database is down')\n"
    )
    subprocess.run(
        [sys.executable, str(broken)], env=child_env(store.env), check=True, capture_output=True
    )
    assert run("-n", "broken", "--env", "BREAK=1") == (
        1,
        f"flowbook: the script {broken} raised RuntimeError: the database is down while flow "
        f"'broken' of project 'a' was loaded; run python {broken} to see where",
    )
    assert "BREAK" not in os.environ

    # a script that is gone
    script = tmp_path / "gone.py"
    script.write_text(
        "from flowbook import flow\nfrom flowbook.registry import register_flow\n\n"
        "@flow(name='gone')\ndef gone():\n    return 1\n\nregister_flow(gone, project_name='a')\n"
    )
    subprocess.run(
        [sys.executable, str(script)], env=child_env(store.env), check=True, capture_output=True
    )
    script.unlink()
    assert run("-n", "gone") == (
        1,
        f"flowbook: flow 'gone' of project 'a' was registered from the script {str(script)!r}, "
        "which no longer exists; register it again from where it is now",
    )

    # a flow registered in a notebook
    monkeypatch.setattr("flowbook._origin.run_origin", lambda: ("/nb/tour.ipynb", "cell-3"))

    @flow(name="in-a-notebook")
    def in_a_notebook() -> int:
        return 1

    register_flow(in_a_notebook, project_name="a")
    capsys.readouterr()
    status, message = run("-n", "in-a-notebook")
    assert status == 1
    assert message.startswith(
        "flowbook: flow 'in-a-notebook' of project 'a' was registered from the notebook "
        "/nb/tour.ipynb (cell cell-3); `flowbook run` runs flows registered from scripts"
    )
    assert "jupyter nbconvert --to script" in message

    # a flow registered in a kernel that does not know its notebook: its cell's code is kept
    monkeypatch.setattr("flowbook._origin.run_origin", lambda: (None, None))
    monkeypatch.setattr("flowbook.registry._caller_file", lambda: None)
    monkeypatch.setattr("flowbook.registry._cell_code", lambda: "in_a_kernel.register()")

    @flow(name="in-a-kernel")
    def in_a_kernel() -> int:
        return 1

    register_flow(in_a_kernel, project_name="a")
    capsys.readouterr()
    listed = json.loads(cli(store.env, "flows", "--json", cwd=tmp_path).stdout)
    [kept] = [f for f in listed if f["name"] == "in-a-kernel"]
    assert kept["where"] == "an IPython session (no file)"
    assert run("-n", "in-a-kernel") == (
        1,
        "flowbook: flow 'in-a-kernel' of project 'a' was registered from an IPython session "
        "with no notebook or script file known; `flowbook run` runs flows registered from "
        "scripts: run it where it was defined (flow.run(), or call the flow), or register it "
        "from a Python script",
    )


def test_flows_lists_registered_flows_and_flows_with_runs(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    register_script(store, tmp_path)
    assert cli(store.env, "run", "-n", "hello-flow", cwd=tmp_path).returncode == 0

    @flow(name="never-registered", project="scratch")
    def never_registered() -> int:
        return 1

    never_registered()
    never_registered()

    done = cli(store.env, "flows", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    assert header.split() == [
        "KIND", "FLOW", "PROJECT", "VERSION", "REGISTERED", "RUNS", "LAST", "RUN",
        "PARAMETERS", "WHERE",
    ]  # fmt: skip
    assert len(lines) == 3
    hello, count, never = (line.split() for line in lines)
    assert hello[:4] == ["registered", "hello-flow", "tutorial", "1"]
    assert hello[6] == "1"  # runs
    assert hello[-3:] == ['people=["Arthur",', '"Ford"]', str(tmp_path / "hello_flow.py")]
    assert count[:4] == ["registered", "needs-a-count", "tutorial", "1"]
    assert count[-3:] == ["count", "(required)", str(tmp_path / "hello_flow.py")]
    assert never[:5] == ["runs", "only", "never-registered", "scratch", "-"]
    assert never[6] == "2"

    listed: list[dict[str, Any]] = json.loads(
        cli(store.env, "flows", "--json", cwd=tmp_path).stdout
    )
    assert [(f["registered"], f["name"], f["project"], f["runs"]) for f in listed] == [
        (True, "hello-flow", "tutorial", 1),
        (True, "needs-a-count", "tutorial", 0),
        (False, "never-registered", "scratch", 2),
    ]
    assert listed[0]["id"] == flow_id("hello-flow", "tutorial")
    assert listed[0]["parameters"] == [
        {"name": "people", "required": False, "default": ["Arthur", "Ford"], "jsonable": True,
         "repr": "['Arthur', 'Ford']"}
    ]  # fmt: skip
    assert listed[2]["version"] is None
    assert listed[2]["last_run"] is not None

    only = json.loads(
        cli(store.env, "flows", "--project", "scratch", "--json", cwd=tmp_path).stdout
    )
    assert [f["name"] for f in only] == ["never-registered"]
