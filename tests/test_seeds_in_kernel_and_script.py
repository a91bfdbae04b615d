"""The seed examples run in a real Jupyter kernel and in a plain script (SPEC: every seed
example must run "in a script and in a notebook kernel").

The kernel is the one of this virtual environment (the ``venv_kernel_env`` fixture of
conftest.py), and a cell prints ``sys.executable`` to prove it. Both the kernel and the script
run with flowbook's default settings (no ``FLOWBOOK_*`` variables) and a temporary
``FLOWBOOK_HOME``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

STAMP = r"\d\d:\d\d:\d\d\.\d{3}"
FLOW_RUN = r"'[a-z]+-[a-z]+'"

CELLS: dict[str, str] = {
    "executable": """
        import sys
        print(sys.executable)
        print(sys.prefix)
    """,
    "imports": """
        import time
        from flowbook import flow, task
        from flowbook.task_runners import SequentialTaskRunner
    """,
    "options": """
        @task(name="My Example Task",
              description="An example task for a tutorial.",
              retries=5,
              retry_delay_seconds=60)
        def my_task():
            print("Task1")

        @flow(name="My Example Flow",
              description="An example flow for a tutorial.")
        def my_flow():
            my_task()

        my_flow()
    """,
    "concurrent": """
        @task
        def print_values(values):
            for value in values:
                time.sleep(0.02)
                print(value, end="\\r")

        @flow
        def my_flow():
            print_values.submit(["AAAA"] * 15)
            print_values.submit(["BBBB"] * 10)

        if __name__ == "__main__":
            my_flow()
    """,
    "sequential": """
        @task
        def print_values(values):
            for value in values:
                time.sleep(0.02)
                print(value, end="\\r")

        @flow(task_runner=SequentialTaskRunner())
        def my_flow():
            print_values.submit(["AAAA"] * 15)
            print_values.submit(["BBBB"] * 10)

        if __name__ == "__main__":
            my_flow()
    """,
    "sequential_named": """
        @task(name="Sequential Task")
        def print_values(values):
            for value in values:
                time.sleep(0.02)
                print(value, end="\\r")

        @flow(name="Sequential Flow",
              task_runner=SequentialTaskRunner())
        def my_flow():
            print_values.submit(["AAAA"] * 15)
            print_values.submit(["BBBB"] * 10)

        if __name__ == "__main__":
            my_flow()
    """,
    "cache_define": """
        from datetime import timedelta
        from flowbook.tasks import task_input_hash

        @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=1))
        def hello_task(name_input):
            # Doing some work
            print(f"Saying hello {name_input}")
            return "hello " + name_input

        @flow
        def hello_flow(name_input):
            hello_task(name_input)
    """,
    "cache_marvin_1": 'hello_flow("Marvin")',
    "cache_marvin_2": 'hello_flow("Marvin")',
    "cache_trillian": 'hello_flow("Trillian")',
    "run_name": """
        import datetime

        @flow(flow_run_name="{name}-on-{date:%A}")
        def my_flow(name: str, date: datetime.datetime):
            pass

        # creates a flow run called 'marvin-on-Thursday'
        my_flow(name="marvin", date=datetime.datetime(2024, 1, 4))
    """,
    "async_flow": """
        import asyncio

        @task
        async def add_one(x):
            await asyncio.sleep(0.01)
            return x + 1

        @flow
        async def async_flow(x):
            return await add_one(x)

        await async_flow(41)
    """,
    "sync_flow": """
        try:
            asyncio.get_running_loop()
            print("event loop running")
        except RuntimeError:
            print("no event loop")

        @flow
        def sync_flow(x):
            return add_one(x) * 2

        result = sync_flow(20)
        print(type(result).__name__, result)
        result
    """,
}


@pytest.fixture(scope="module")
def kernel_cells(
    tmp_path_factory: pytest.TempPathFactory, venv_kernel_env: dict[str, str]
) -> dict[str, Any]:
    import nbformat
    from nbclient import NotebookClient

    home = tmp_path_factory.mktemp("kernel")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(src).strip()) for src in CELLS.values()]
    with pytest.MonkeyPatch.context() as mp:
        for name, value in venv_kernel_env.items():
            mp.setenv(name, value)
        mp.setenv("FLOWBOOK_HOME", str(home / "flowbook-home"))
        for name in list(os.environ):
            if name.startswith("FLOWBOOK_") and name != "FLOWBOOK_HOME":
                mp.delenv(name)
        client = NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(home)}},
        )
        client.execute()
    return dict(zip(CELLS, nb.cells, strict=True))


def _stream(cell: Any, name: str) -> str:
    return "".join(
        out["text"]
        for out in cell.outputs
        if out["output_type"] == "stream" and out["name"] == name
    )


def _result(cell: Any) -> str | None:
    for out in cell.outputs:
        if out["output_type"] == "execute_result":
            return str(out["data"]["text/plain"])
    return None


def _cell(cells: dict[str, Any], key: str) -> Any:
    cell = cells[key]
    errors = [out for out in cell.outputs if out["output_type"] == "error"]
    assert not errors, f"cell {key!r} raised: " + "\n".join(
        f"{e['ename']}: {e['evalue']}" for e in errors
    )
    return cell


def _has_line(text: str, level: str, who: str, message: str) -> bool:
    pattern = rf"^{STAMP} \| {level:<7} \| {who} - {message}$"
    return re.search(pattern, text, re.MULTILINE) is not None


# -- in a notebook kernel --------------------------------------------------------------------


def test_kernel_runs_this_venv_python(kernel_cells: dict[str, Any]) -> None:
    out = _stream(_cell(kernel_cells, "executable"), "stdout").splitlines()
    assert out == [sys.executable, sys.prefix]
    assert Path(sys.executable).parent == Path(sys.prefix) / "bin"


def test_kernel_task_and_flow_options(kernel_cells: dict[str, Any]) -> None:
    cell = _cell(kernel_cells, "options")
    assert _stream(cell, "stdout") == "Task1\n"
    err = _stream(cell, "stderr")
    assert _has_line(
        err, "INFO", "flowbook.engine", rf"Created flow run {FLOW_RUN} for flow 'My Example Flow'"
    )
    assert _has_line(
        err, "INFO", "Task run 'My Example Task-0'", re.escape("Finished in state Completed()")
    )
    assert _has_line(
        err,
        "INFO",
        f"Flow run {FLOW_RUN}",
        re.escape("Finished in state Completed('All states completed.')"),
    )


def test_kernel_concurrent_runner_interleaves(kernel_cells: dict[str, Any]) -> None:
    cell = _cell(kernel_cells, "concurrent")
    out = _stream(cell, "stdout")
    # print() writes a value and its end separately, so two threads can write "AAAABBBB\r\r"
    assert out.count("AAAA") == 15
    assert out.count("BBBB") == 10
    assert out.count("\r") == 25
    assert set(out) == {"A", "B", "\r"}
    # both tasks ran at once: B values appear before the last A value
    assert out.index("BBBB") < out.rindex("AAAA")
    err = _stream(cell, "stderr")
    finished = [line for line in err.splitlines() if "Finished in state" in line]
    assert len(finished) == 3
    assert "Task run 'print_values-1' - Finished in state Completed()" in finished[0]
    assert "Task run 'print_values-0' - Finished in state Completed()" in finished[1]
    assert "Finished in state Completed('All states completed.')" in finished[2]


def test_kernel_sequential_runner_keeps_order(kernel_cells: dict[str, Any]) -> None:
    cell = _cell(kernel_cells, "sequential")
    assert _stream(cell, "stdout") == "AAAA\r" * 15 + "BBBB\r" * 10
    err = _stream(cell, "stderr")
    finished = [line for line in err.splitlines() if "Finished in state" in line]
    assert len(finished) == 3
    assert "Task run 'print_values-0' - Finished in state Completed()" in finished[0]
    assert "Task run 'print_values-1' - Finished in state Completed()" in finished[1]


def test_kernel_named_sequential_flow(kernel_cells: dict[str, Any]) -> None:
    cell = _cell(kernel_cells, "sequential_named")
    assert _stream(cell, "stdout") == "AAAA\r" * 15 + "BBBB\r" * 10
    err = _stream(cell, "stderr")
    assert _has_line(
        err, "INFO", "flowbook.engine", rf"Created flow run {FLOW_RUN} for flow 'Sequential Flow'"
    )
    for i in (0, 1):
        assert _has_line(
            err,
            "INFO",
            f"Task run 'Sequential Task-{i}'",
            re.escape("Finished in state Completed()"),
        )


def test_kernel_task_input_hash_caching(kernel_cells: dict[str, Any]) -> None:
    _cell(kernel_cells, "cache_define")
    first, second, third = (
        _cell(kernel_cells, key) for key in ("cache_marvin_1", "cache_marvin_2", "cache_trillian")
    )
    marvin_out = _stream(first, "stdout") + _stream(second, "stdout")
    assert marvin_out.count("Saying hello Marvin") == 1
    assert _stream(first, "stdout") == "Saying hello Marvin\n"
    assert _stream(second, "stdout") == ""
    assert _stream(third, "stdout") == "Saying hello Trillian\n"
    assert _has_line(
        _stream(first, "stderr"),
        "INFO",
        "Task run 'hello_task-0'",
        re.escape("Finished in state Completed()"),
    )
    assert _has_line(
        _stream(second, "stderr"),
        "INFO",
        "Task run 'hello_task-0'",
        re.escape("Finished in state Cached(") + ".*",
    )
    for cell in (first, second, third):
        assert _has_line(
            _stream(cell, "stderr"),
            "INFO",
            f"Flow run {FLOW_RUN}",
            re.escape("Finished in state Completed('All states completed.')"),
        )


def test_kernel_flow_run_name_template(kernel_cells: dict[str, Any]) -> None:
    err = _stream(_cell(kernel_cells, "run_name"), "stderr")
    assert _has_line(
        err, "INFO", "flowbook.engine", "Created flow run 'marvin-on-Thursday' for flow 'my-flow'"
    )
    assert _has_line(
        err,
        "INFO",
        "Flow run 'marvin-on-Thursday'",
        re.escape("Finished in state Completed('All states completed.')"),
    )


def test_kernel_async_flow_awaited_at_top_level(kernel_cells: dict[str, Any]) -> None:
    cell = _cell(kernel_cells, "async_flow")
    assert _result(cell) == "42"
    assert _has_line(
        _stream(cell, "stderr"),
        "INFO",
        "Task run 'add_one-0'",
        re.escape("Finished in state Completed()"),
    )


def test_kernel_sync_flow_in_a_cell_returns_its_value(kernel_cells: dict[str, Any]) -> None:
    cell = _cell(kernel_cells, "sync_flow")
    assert _stream(cell, "stdout") == "event loop running\nint 42\n"
    assert _result(cell) == "42"
    assert _has_line(
        _stream(cell, "stderr"),
        "INFO",
        f"Flow run {FLOW_RUN}",
        re.escape("Finished in state Completed('All states completed.')"),
    )


# -- in a script -----------------------------------------------------------------------------

SCRIPT = """
import os

import flowbook
from flowbook import flow, task
from flowbook.task_runners import SequentialTaskRunner


# seed 002, retries (the seed waits 5 s between attempts)
@task(retries=2, retry_delay_seconds=0)
def failure():
    print('running')
    raise ValueError("bad code")


@flow
def test_retries():
    return failure()


# seed 002, task runners
@task
def first_task(num):
    return num + num


@task
def second_task(num):
    return num * num


@flow(name="My Example Flow",
      task_runner=SequentialTaskRunner(),
)
def my_flow(num):
    plusnum = first_task.submit(num)
    sqnum = second_task.submit(plusnum)
    print(f"add: {plusnum.result()}, square: {sqnum.result()}")


# seeds 000/001 in their flowbook form
@task
def say_hello(name):
    # Load the greeting to use from an environment variable
    greeting = os.environ.get("GREETING")
    logger = flowbook.context.get("logger")
    logger.info(f"{greeting}, {name}!")


@flow(name="hello-flow", env={"GREETING": "Hello"})
def hello_flow(people=["Arthur", "Ford", "Marvin"]):
    say_hello.map(people)


if __name__ == "__main__":
    state = test_retries(return_state=True)
    print(f"state: {state.short()}")
    try:
        test_retries()
    except ValueError as exc:
        print(f"raised: {exc}")
    my_flow(5)
    hello_flow()
    print(f"GREETING after the run: {os.environ.get('GREETING')}")
"""


@pytest.fixture(scope="module")
def script_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    home = tmp_path_factory.mktemp("script")
    path = home / "seeds.py"
    path.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.pop("GREETING", None)
    env["FLOWBOOK_HOME"] = str(home / "flowbook-home")
    return subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
        env=env,
    )


def test_script_runs_the_seeds(script_run: subprocess.CompletedProcess[str]) -> None:
    assert script_run.returncode == 0, script_run.stderr
    assert script_run.stdout.splitlines() == [
        "running",
        "running",
        "running",
        "state: Failed('1/1 states failed.')",
        "running",
        "running",
        "running",
        "raised: bad code",
        "add: 10, square: 100",
        "GREETING after the run: None",
    ]


def test_script_console_lines_for_retries(script_run: subprocess.CompletedProcess[str]) -> None:
    err = script_run.stderr
    assert _has_line(
        err, "INFO", "flowbook.engine", rf"Created flow run {FLOW_RUN} for flow 'test-retries'"
    )
    assert len(re.findall(r"Retry 1/2 will start 0 second\(s\) from now", err)) == 2
    assert _has_line(
        err, "ERROR", "Task run 'failure-0'", re.escape("Finished in state Failed(") + ".*"
    )
    assert (
        len(
            re.findall(
                rf"{STAMP} \| ERROR   \| Flow run {FLOW_RUN} - "
                + re.escape("Finished in state Failed('1/1 states failed.')"),
                err,
            )
        )
        == 2
    )


def test_script_console_lines_for_runners_and_env(
    script_run: subprocess.CompletedProcess[str],
) -> None:
    err = script_run.stderr
    assert _has_line(
        err, "INFO", "flowbook.engine", rf"Created flow run {FLOW_RUN} for flow 'My Example Flow'"
    )
    for name in ("first_task-0", "second_task-0"):
        assert _has_line(
            err, "INFO", f"Task run '{name}'", re.escape("Finished in state Completed()")
        )
    for i, person in enumerate(["Arthur", "Ford", "Marvin"]):
        assert _has_line(err, "INFO", f"Task run 'say_hello-{i}'", f"Hello, {person}!")
    completed = re.findall(
        rf"{STAMP} \| INFO    \| Flow run {FLOW_RUN} - "
        + re.escape("Finished in state Completed('All states completed.')"),
        err,
    )
    assert len(completed) == 2
