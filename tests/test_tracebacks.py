"""Tracebacks show the user's code: flowbook's frames are left out of every traceback it
formats or stores, and out of the exception a failed flow or task call raises.

Run in this process (the raised exception, post-mortem debugging) and as a script in a
subprocess (what a user sees on stderr, what the store keeps). The notebook side (``Cell
In[N]``, the widget) is in ``tests/jupyter/test_tracebacks_kernel.py``.
"""

from __future__ import annotations

import io
import os
import pdb
import re
import sqlite3
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest

import flowbook
from flowbook import flow, get_run_logger, task
from flowbook._tracebacks import format_user_traceback, without_internal_frames

PACKAGE = os.path.dirname(os.path.abspath(flowbook.__file__)) + os.sep


def _frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(exc.__traceback__))


@task
def inner(x: int) -> int:
    raise ValueError(f"bad value {x}")


@task
def outer(x: int) -> int:
    return inner(x) + 1


@flow
def nested(x: int) -> int:
    return outer(x)


def test_raised_exception_keeps_the_users_frames_and_one_call_site() -> None:
    with pytest.raises(ValueError, match="bad value 3") as info:
        nested(3)
    frames = _frames(info.value)
    names = [f.name for f in frames]
    # the test, the call site in Flow.__call__, then the user's three functions in order
    assert names == ["test_raised_exception_keeps_the_users_frames_and_one_call_site",
                     "__call__", "nested", "outer", "inner"]  # fmt: skip
    ours = [f for f in frames if f.filename.startswith(PACKAGE)]
    assert [(Path(f.filename).name, f.line) for f in ours] == [("flows.py", "raise exc")]


def test_the_call_site_frame_is_marked_hidden_for_ipython_and_pytest() -> None:
    with pytest.raises(ValueError, match="bad value 1") as info:
        nested(1)
    tb = info.value.__traceback__
    hidden = []
    while tb is not None:
        if tb.tb_frame.f_locals.get("__tracebackhide__"):
            hidden.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert hidden == ["__call__"]


def test_formatted_traceback_has_no_flowbook_frame_and_both_task_frames() -> None:
    state: Any = nested(4, return_state=True)  # type: ignore[call-arg]
    text = format_user_traceback(state.data)
    assert PACKAGE not in text
    assert "flowbook/" not in text
    assert f'File "{__file__}"' in text
    assert text.index("in nested") < text.index("in outer") < text.index("in inner")
    assert text.endswith("ValueError: bad value 4")


@task
def wraps_error() -> None:
    try:
        empty: dict[str, int] = {}
        empty["missing"]
    except KeyError as exc:
        raise RuntimeError("lookup failed") from exc


@flow
def chained() -> None:
    wraps_error()


def test_a_cause_is_kept_when_raised_and_when_formatted() -> None:
    with pytest.raises(RuntimeError) as info:
        chained()
    assert isinstance(info.value.__cause__, KeyError)
    text = format_user_traceback(info.value)
    assert "KeyError: 'missing'" in text
    assert "The above exception was the direct cause of the following exception" in text
    assert "flowbook/" not in text
    assert text.index("in wraps_error") < text.index("KeyError")  # the cause's own frame


@task
def fails_with_local() -> None:
    secret = 41
    raise ZeroDivisionError(secret + 1)


@flow
def for_debugger() -> None:
    fails_with_local()


def test_post_mortem_walks_the_users_frames_with_their_variables() -> None:
    with pytest.raises(ZeroDivisionError) as info:
        for_debugger()
    out = io.StringIO()
    debugger = pdb.Pdb(stdin=io.StringIO("p secret\nup\nwhere\nq\n"), stdout=out)
    debugger.use_rawinput = False
    debugger.reset()
    debugger.interaction(None, info.value.__traceback__)
    text = out.getvalue()
    assert "(Pdb) 41\n" in text  # the failing frame's local
    assert "fails_with_local()" in text  # one frame up: the flow body calling the task
    assert "task_engine.py" not in text


def test_an_error_raised_by_flowbook_keeps_its_message_and_no_frames() -> None:
    with pytest.raises(TypeError, match="do not match its parameters") as info:
        nested(1, 2, 3)  # type: ignore[call-arg]
    assert [f.name for f in _frames(info.value)] == [
        "test_an_error_raised_by_flowbook_keeps_its_message_and_no_frames",
        "__call__",
    ]
    text = format_user_traceback(info.value)
    assert text.startswith("Traceback (most recent call last):")
    assert PACKAGE not in text
    assert "TypeError: flow 'nested' was called with arguments" in text
    assert without_internal_frames(info.value) is info.value  # trimmed in place


@task
def logs_an_exception() -> int:
    try:
        int("x")
    except ValueError:
        get_run_logger().exception("could not parse")
    return 1


@flow
def logging_flow() -> int:
    return logs_an_exception()


def test_logged_exception_line_shows_the_users_frames(capfd: pytest.CaptureFixture[str]) -> None:
    assert logging_flow() == 1
    err = capfd.readouterr().err
    line = err[err.index("could not parse") :]
    assert "in logs_an_exception" in line
    assert "invalid literal for int()" in line
    assert "flowbook/" not in line


SCRIPT = """
from flowbook import flow, get_run_logger, task

@task
def inner(x):
    raise ValueError(f"bad value {x}")

@task
def outer(x):
    return inner(x) + 1

@task
def parse(text):
    try:
        return int(text)
    except ValueError:
        get_run_logger().exception("could not parse")

@flow
def script_flow(x):
    parse("x")
    return outer(x)

script_flow(7)
"""


INNER_RAISE = '    raise ValueError(f"bad value {x}")'


def _at(code: str, fn: str) -> str:
    """How Python names the line ``code`` of the script in function ``fn``."""
    lineno = SCRIPT.splitlines().index(code) + 1
    return f"line {lineno}, in {fn}"


@pytest.mark.slow
def test_script_run_names_file_paths_on_stderr_and_in_the_store(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "FLOWBOOK_HOME": str(tmp_path / "home"), "FLOWBOOK_CONSOLE": "on"}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 1
    err = proc.stderr
    # Python's own traceback: the script, flowbook's call site, then the user's functions
    py_tb = err[err.rindex("Traceback (most recent call last)") :]
    assert f'File "{script}", {_at("script_flow(7)", "<module>")}' in py_tb
    assert f'File "{script}", {_at("    return outer(x)", "script_flow")}' in py_tb
    assert f'File "{script}", {_at("    return inner(x) + 1", "outer")}' in py_tb
    assert f'File "{script}", {_at(INNER_RAISE, "inner")}' in py_tb
    assert py_tb.count(PACKAGE) == 1
    assert "engine/" not in py_tb
    # the console's ERROR line for the outer task run: both user frames, none of flowbook's
    lines = re.split(r"\n(?=\d\d:\d\d:\d\d\.\d{3} \| )", err[: err.rindex("Traceback (most")])
    (outer_line,) = [line for line in lines if "Task run 'outer-0' - Task run failed" in line]
    assert f'File "{script}", {_at("    return inner(x) + 1", "outer")}' in outer_line
    assert f'File "{script}", {_at(INNER_RAISE, "inner")}' in outer_line
    assert PACKAGE not in outer_line
    # what the store keeps: no flowbook frame in any stored traceback
    db = sqlite3.connect(tmp_path / "home" / "flowbook.db")
    try:
        stored = [m for (m,) in db.execute("SELECT message FROM logs") if "Traceback" in m]
    finally:
        db.close()
    (logged,) = [m for m in stored if m.startswith("could not parse")]
    assert f'File "{script}", {_at("        return int(text)", "parse")}' in logged
    for message in stored:
        assert PACKAGE not in message, message


@task
async def fails_async(x: int) -> int:
    raise ValueError(f"async bad {x}")


@flow
def sync_flow_of_async_task() -> int:
    return fails_async(1)  # type: ignore[return-value]  # (run to its end in a sync flow)


def test_flowbooks_own_handling_is_not_shown_as_a_context() -> None:
    # the async task runs inside flowbook's "no running loop" handler: that RuntimeError
    # would show as "During handling of the above exception" before the user's error
    with pytest.raises(ValueError, match="async bad 1") as info:
        sync_flow_of_async_task()
    assert info.value.__context__ is None
    text = format_user_traceback(info.value)
    assert "During handling" not in text
    assert "in fails_async" in text


@task
def handles_badly() -> None:
    try:
        raise KeyError("first")
    except KeyError:
        raise RuntimeError("second")  # noqa: B904 (a context on purpose)


@flow
def users_context() -> None:
    handles_badly()


def test_a_context_from_the_users_code_is_kept() -> None:
    with pytest.raises(RuntimeError, match="second") as info:
        users_context()
    assert isinstance(info.value.__context__, KeyError)
    text = format_user_traceback(info.value)
    assert "During handling of the above exception, another exception occurred" in text
    assert "KeyError: 'first'" in text
    assert "flowbook/" not in text


def _visible_flowbook_frames(exc: BaseException) -> list[str]:
    """The flowbook frames of ``exc``'s traceback that IPython would show (no
    ``__tracebackhide__`` in their locals)."""
    out = []
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename.startswith(PACKAGE) and not frame.f_locals.get(
            "__tracebackhide__"
        ):
            out.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}")
        tb = tb.tb_next
    return out


@pytest.mark.parametrize("how", ["future", "future_list", "state", "background"])
def test_a_result_raised_in_a_cell_hides_flowbooks_frames(how: str) -> None:
    # what a cell shows after `future.result()`, `state.result()` or a background run's
    # result() called at the top level: IPython hides frames marked __tracebackhide__
    @flow
    def fails() -> int:
        return inner(1)

    calls = {
        "future": lambda: inner.submit(1).result(),
        "future_list": lambda: inner.map([1, 2]).result(),
        "state": lambda: fails(return_state=True).result(),
        "background": lambda: fails.run_background().result(timeout=30),
    }
    # (future_list: both runs fail, and the first to end is raised, as in Prefect 3)
    with pytest.raises(ValueError, match=r"bad value [12]") as info:
        calls[how]()
    assert _visible_flowbook_frames(info.value) == []
    assert "inner" in [f.name for f in _frames(info.value)]


def test_a_mistake_inside_flowbook_keeps_every_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    # an AttributeError raised by flowbook's own code is a bug to report, not an error the
    # user caused: its frames are shown whole, in the raised exception and in the text
    from flowbook.engine import task_engine

    # a function whose code is in flowbook's package (as a bug of flowbook's would be)
    namespace: dict[str, Any] = {}
    source = "def broken(*args, **kwargs):\n    return None.get\n"
    exec(compile(source, os.path.join(PACKAGE, "engine", "task_engine.py"), "exec"), namespace)
    broken = namespace["broken"]

    @task
    def fine() -> int:
        return 1

    @flow
    def calls_fine() -> int:
        return fine()

    engine_cls = task_engine.TaskRunEngine
    monkeypatch.setattr(engine_cls, "begin_run", broken, raising=True)
    with pytest.raises(AttributeError) as info:
        calls_fine()
    ours = [f for f in _frames(info.value) if f.filename.startswith(PACKAGE)]
    assert ours, "flowbook's frames were hidden"
    assert any(f.name == "broken" for f in _frames(info.value))
    text = format_user_traceback(info.value)
    assert os.path.join("flowbook", "engine", "task_engine.py") in text
    assert "AttributeError" in text


def test_an_error_flowbook_reports_on_purpose_keeps_only_its_message() -> None:
    # a ValueError about bad input is raised by flowbook on purpose: no frames of flowbook's
    from flowbook.task_runners import ThreadPoolTaskRunner

    with pytest.raises(ValueError, match="max_workers") as info:
        ThreadPoolTaskRunner(max_workers=0)
    assert "max_workers" in format_user_traceback(info.value)
