"""``%load_ext flowbook``, ``%%flow`` and ``%flowbook`` in a real IPython shell (no kernel).

Without a kernel there is no widget front end: runs print their console lines as in a script,
and everything else (the magics, the namespace, usage errors) works the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell


@pytest.fixture
def shell() -> Iterator[Any]:
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext flowbook")
    yield ip
    ip.run_cell("%unload_ext flowbook")
    InteractiveShell.clear_instance()


def test_flow_cell_keeps_its_variables_and_returns_its_last_value(shell: Any) -> None:
    shell.run_cell("from flowbook import task\n@task\ndef double(x):\n    return 2 * x\n")
    result = shell.run_cell(
        "%%flow doubling --param n=4 --param tag=abc --env FB_SHELL_TEST=1\n"
        "import os\n"
        "values = [double(i) for i in range(n)]\n"
        "seen_env = os.environ.get('FB_SHELL_TEST')\n"
        "(tag, sum(values))\n"
    )
    assert result.error_in_exec is None
    assert result.result == ("abc", 12)
    ns = shell.user_ns
    assert ns["values"] == [0, 2, 4, 6]
    assert ns["n"] == 4
    assert ns["seen_env"] == "1"
    import os

    assert "FB_SHELL_TEST" not in os.environ


def test_flow_cell_options_are_checked(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for line, named in [
        ("%%flow --retries -1", "--retries -1"),
        ("%%flow --retry-delay -2", "--retry-delay -2"),
        ("%%flow --param 1x=3", "'1x'"),
        ("%%flow --env NOEQUALS", "'NOEQUALS'"),
        ("%%flow --bogus", "--bogus"),
    ]:
        result = shell.run_cell(f"{line}\nran = True\n")
        err = capsys.readouterr().err
        assert "UsageError" in err, line
        assert named in err, line
        assert "Traceback" not in err
        assert result.success is False
    assert "ran" not in shell.user_ns


def test_background_cell_returns_a_handle(shell: Any) -> None:
    result = shell.run_cell("%%flow bg-cell --background\nx_bg = 41 + 1\n")
    handle = result.result
    assert handle.wait(10)
    assert handle.state.name == "Completed"
    assert shell.user_ns["x_bg"] == 42


def test_reload_and_unload(shell: Any) -> None:
    from flowbook.jupyter import extension

    first = extension.active()
    assert first is not None
    shell.run_cell("%reload_ext flowbook")
    second = extension.active()
    assert second is not None
    assert second is not first
    assert shell.run_cell("%flowbook widgets off").success
    shell.run_cell("%unload_ext flowbook")
    assert extension.active() is None
    shell.run_cell("%load_ext flowbook")
    assert extension.active() is not None


def test_runs_cache_and_rerun(shell: Any) -> None:
    shell.run_cell(
        "from flowbook import flow, task\nfrom flowbook.tasks import task_input_hash\n"
        "@task(cache_key_fn=task_input_hash)\n"
        "def square(x):\n    return x * x\n"
        "@flow(name='shell-squares')\n"
        "def squares(n):\n    return [square(i) for i in range(n)]\n"
        "squares(3)\n"
    )
    runs = shell.run_cell("%flowbook runs --flow shell-squares").result
    assert len(runs.runs) == 1
    assert "shell-squares" in repr(runs)
    name = runs.runs[0].name
    again = shell.run_cell(f"%flowbook rerun {name}")
    assert again.result == [0, 1, 4]
    explorer = shell.run_cell("%flowbook cache").result
    assert type(explorer).__name__ == "CacheExplorer"
    assert shell.run_cell("%flowbook cache clear --task square").success
    import flowbook.cache

    assert flowbook.cache.entries(task="square") == []
