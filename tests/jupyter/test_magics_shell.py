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


# -- %flowbook dask ---------------------------------------------------------------------------
# Workers as threads of this process: the cluster starts in about a second.
IN_PROCESS = {
    "n_workers": 1,
    "threads_per_worker": 1,
    "processes": False,
    "dashboard_address": ":0",
}
NO_CLUSTER = "No Dask cluster is running in this kernel"


@pytest.fixture
def no_dask() -> Iterator[Any]:
    """No Dask connection before the test, and none left after it."""
    from flowbook.task_runners import dask as fb_dask

    fb_dask._close_all()  # also connections other tests' fixtures may keep
    try:
        yield fb_dask
    finally:
        fb_dask.close_cluster()
        fb_dask._close_all()


def run_on_dask(shell: Any, cluster_kwargs: dict[str, Any]) -> None:
    result = shell.run_cell(
        "from flowbook import flow, task\nfrom flowbook.task_runners import DaskTaskRunner\n"
        "@task\ndef inc(x):\n    return x + 1\n"
        f"@flow(task_runner=DaskTaskRunner(cluster_kwargs={cluster_kwargs!r}))\n"
        "def on_dask(n):\n    return sum(inc.map(range(n)).result())\n"
        "on_dask(3)\n"
    )
    assert result.error_in_exec is None
    assert result.result == 6


def test_flowbook_dask_without_a_cluster_says_how_to_start_one(
    shell: Any, no_dask: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    result = shell.run_cell("%flowbook dask")
    out = capsys.readouterr().out
    assert result.success
    assert result.result is None
    assert NO_CLUSTER in out
    assert "DaskTaskRunner()" in out
    assert "%%flow --task-runner dask" in out
    assert len(out.strip().splitlines()) == 1
    shell.run_cell("%flowbook dask close")
    assert "nothing to close" in capsys.readouterr().out
    shell.run_cell("%flowbook dask restart")
    assert "nothing to restart" in capsys.readouterr().out


def test_flowbook_dask_does_not_import_dask_without_a_cluster(tmp_path: Any) -> None:
    import subprocess
    import sys

    code = (
        "import sys\nfrom IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\nip.run_cell('%load_ext flowbook')\n"
        "for line in ('%flowbook dask', '%flowbook dask close', '%flowbook dask restart'):\n"
        "    assert ip.run_cell(line).success, line\n"
        "print('loaded:', sorted(m for m in ('dask', 'distributed') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert NO_CLUSTER in done.stdout
    assert "loaded: []" in done.stdout


def test_flowbook_dask_shows_the_cluster_then_closes_it(
    shell: Any, no_dask: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import html

    run_on_dask(shell, IN_PROCESS)
    info = no_dask.cluster_info()
    assert info is not None
    assert len(info["workers"]) == 1
    link = info["dashboard_link"]
    assert link
    assert link.startswith("http")

    shown = shell.run_cell("%flowbook dask").result
    data, _ = shell.display_formatter.format(shown)
    text, markup = data["text/plain"], data["text/html"]
    worker = info["workers"][0]
    for part in (text, markup):
        assert info["scheduler_address"] in part
        assert worker["address"] in part
        assert "owned by flowbook" in part
        assert "1 worker, 1 thread" in part
    assert f"Dashboard: {link}" in text
    assert f'<a href="{html.escape(link)}" target="_blank" rel="noopener">' in markup
    lines = text.splitlines()
    table_head = next(i for i, line in enumerate(lines) if line.startswith("worker"))
    assert lines[table_head].split() == ["worker", "address", "threads", "memory", "pid"]
    assert lines[table_head + 1].split()[:3] == [worker["name"], worker["address"], "1"]

    capsys.readouterr()
    assert shell.run_cell("%flowbook dask close").success
    assert "Closed the local Dask cluster." in capsys.readouterr().out
    assert no_dask.cluster_info() is None
    shell.run_cell("%flowbook dask")
    assert NO_CLUSTER in capsys.readouterr().out


@pytest.mark.slow
def test_flowbook_dask_restart_restarts_the_worker_processes(
    shell: Any, no_dask: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # restarting needs workers in their own processes (in-process workers cannot restart)
    run_on_dask(shell, {"n_workers": 1, "threads_per_worker": 1, "dashboard_address": ":0"})
    before = no_dask.cluster_info()["workers"]
    assert len(before) == 1
    assert before[0]["pid"] is not None
    capsys.readouterr()
    assert shell.run_cell("%flowbook dask restart").success
    assert "Restarted the workers of the local Dask cluster." in capsys.readouterr().out
    after = no_dask.cluster_info()["workers"]
    assert len(after) == 1
    assert after[0]["pid"] != before[0]["pid"]
    assert shell.run_cell("on_dask(4)").result == 10  # the cluster works on after the restart


def test_flowbook_dask_reports_bad_words(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for line, named in [
        ("%flowbook dask bogus", "'bogus'"),
        ("%flowbook dask close now", "'now'"),
        ("%flowbook dask restart --hard", "'--hard'"),
    ]:
        result = shell.run_cell(line)
        err = capsys.readouterr().err
        assert result.success is False, line
        assert "UsageError" in err, line
        assert named in err, line
        assert "Traceback" not in err
    shell.run_cell("%flowbook dask bogus")
    err = capsys.readouterr().err
    assert "'close' and 'restart'" in err
    assert "%flowbook dask restart" in err  # the usage lists the subcommands
