"""Every message names the problem: names and run names, settings, the command line.

Names are checked when a flow or task is decorated (or copied with ``with_options``); a run
name that cannot be made when a run starts is a ``RunNameError`` naming the flow or task, the
template or function and the original error. ``FLOWBOOK_*`` variables that do not parse are
errors naming the variable. The command line (run as a real process) rejects unknown states,
limits out of range and empty run references, refuses a run reference that is a run's name
and the start of another run's id, and stops quietly when its reader closes the pipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flowbook.runs
from flowbook import flow, get_run_logger, task
from flowbook.exceptions import RunNameError
from flowbook.settings import get_settings, reload_settings
from flowbook.store import close_store, get_store

NAME_FIX = "give non-empty text on one line (no control characters), or leave name out to "
NAME_FIX += "use the function's name"
BAD_NAMES = [
    ("", "is empty"),
    ("   ", "is only whitespace"),
    ("a\nb", "contains the control character '\\n' at position 1"),
    ("\x00", "contains the control character '\\x00' at position 0"),
    ("tab\there", "contains the control character '\\t' at position 3"),
]
STATES = (
    "AwaitingRetry, Cached, Cancelled, Completed, Crashed, Failed, Pending, Retrying, Running, "
    "Scheduled, TimedOut"
)


def one() -> int:
    return 1


def pick(x: Any) -> Any:
    return x


# -- names given at decoration -----------------------------------------------------------------


@pytest.mark.parametrize(("value", "problem"), BAD_NAMES)
@pytest.mark.parametrize("kind", ["flow", "task"])
def test_a_bad_name_is_refused_at_decoration(kind: str, value: str, problem: str) -> None:
    decorator: Any = flow if kind == "flow" else task
    expected = f"@{kind}(name={value!r}): the name {problem}; {NAME_FIX}"
    makers: list[Callable[[], Any]] = [
        lambda: decorator(one, name=value),  # the function form
        lambda: decorator(name=value),  # the decorator factory, before any function
    ]
    for make in makers:
        with pytest.raises(ValueError, match=r"^@") as info:
            make()
        assert str(info.value) == expected
    with pytest.raises(ValueError, match=r"^@") as info:
        decorator(one).with_options(name=value)
    assert str(info.value) == expected


@pytest.mark.parametrize(("value", "problem"), BAD_NAMES)
@pytest.mark.parametrize("kind", ["flow", "task"])
def test_a_bad_run_name_template_is_refused_at_decoration(
    kind: str, value: str, problem: str
) -> None:
    decorator: Any = flow if kind == "flow" else task
    option = f"{kind}_run_name"
    with pytest.raises(ValueError, match=r"^@") as info:
        decorator(one, **{option: value})
    assert str(info.value) == (
        f"@{kind}({option}={value!r}): the run name template {problem}; give non-empty text "
        f"on one line (no control characters), or leave {option} out for generated run names"
    )


def test_names_with_spaces_and_other_scripts_are_accepted() -> None:
    assert flow(one, name="Daily ETL · 日次").name == "Daily ETL · 日次"
    assert task(one, name=" padded ").name == " padded "


# -- run names made when a run starts ------------------------------------------------------------


def test_a_failing_task_run_name_template_names_the_task_and_the_template() -> None:
    calls: list[int] = []
    first = task(pick, task_run_name="{x[0]}")

    @flow
    def outer() -> Any:
        calls.append(1)
        return first(5)

    with pytest.raises(RunNameError) as info:
        outer()
    assert str(info.value) == (
        "task 'pick' could not name its run: task_run_name='{x[0]}' raised TypeError: 'int' "
        "object is not subscriptable (formatted with x=5); change the template, or pass "
        "arguments it can format"
    )
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, TypeError)
    assert calls == [1]  # the flow ran; the task's body never did


def test_a_failing_flow_run_name_template_names_the_flow() -> None:
    ran: list[int] = []

    @flow(flow_run_name="day-{when:%Y-%m-%d}")
    def daily(when: Any) -> None:
        ran.append(1)

    with pytest.raises(RunNameError) as info:
        daily("yesterday")
    assert str(info.value) == (
        "flow 'daily' could not name its run: flow_run_name='day-{when:%Y-%m-%d}' raised "
        "ValueError: Invalid format specifier '%Y-%m-%d' for object of type 'str' (formatted "
        "with when='yesterday'); change the template, or pass arguments it can format"
    )
    assert ran == []


def test_a_raising_run_name_function_names_the_flow_and_the_function() -> None:
    def namer() -> str:
        return str(1 / 0)

    ran: list[int] = []

    @flow(flow_run_name=namer)
    def divided() -> None:
        ran.append(1)

    with pytest.raises(RunNameError) as info:
        divided()
    assert str(info.value) == (
        "flow 'divided' could not name its run: the flow_run_name function 'namer' raised "
        "ZeroDivisionError: division by zero"
    )
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert ran == []


def test_a_run_name_with_a_control_character_is_refused_when_made() -> None:
    labelled = task(pick, task_run_name="item-{x}")

    @flow
    def outer() -> Any:
        return labelled("a\nb")

    with pytest.raises(RunNameError) as info:
        outer()
    assert str(info.value) == (
        "task 'pick' could not name its run: task_run_name='item-{x}' gave the run name "
        "'item-a\\nb', which contains the control character '\\n' at position 6; a run name "
        "must be non-empty text on one line"
    )


# -- FLOWBOOK_* variables ----------------------------------------------------------------------

URL_FORMS = (
    "give a SQLAlchemy URL such as postgresql+psycopg://user:password@host:5432/dbname or "
    "sqlite:////absolute/path/flowbook.db, or unset it to use SQLite in FLOWBOOK_HOME"
)


@pytest.mark.parametrize(
    ("value", "shown", "why"),
    [
        (
            "garbage",
            "'garbage'",
            "is not valid (Could not parse SQLAlchemy URL from given URL string)",
        ),
        (
            "postgresql://me:s3cret@db:port/runs",
            "'postgresql://me:***@db:port/runs'",
            "is not valid (invalid literal for int() with base 10: 'port')",
        ),
        (
            "sqlite://",
            "'sqlite://'",
            "names an in-memory SQLite database, which no other process or connection can see",
        ),
    ],
)
def test_a_database_url_that_does_not_parse_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, shown: str, why: str
) -> None:
    monkeypatch.setenv("FLOWBOOK_DATABASE_URL", value)
    try:
        with pytest.raises(ValueError, match="FLOWBOOK_DATABASE_URL") as info:
            reload_settings()
        assert str(info.value) == (
            f"environment variable FLOWBOOK_DATABASE_URL={shown} {why}; {URL_FORMS}"
        )
        assert "s3cret" not in str(info.value)
    finally:
        monkeypatch.delenv("FLOWBOOK_DATABASE_URL")
        reload_settings()


def test_an_empty_home_variable_means_the_default_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    previous = os.environ["FLOWBOOK_HOME"]
    monkeypatch.setenv("HOME", str(tmp_path))  # where ~ is
    for empty in ("", "  "):
        monkeypatch.setenv("FLOWBOOK_HOME", empty)
        try:
            settings = reload_settings()
            assert settings.home == tmp_path / ".flowbook"
            assert settings.results_dir == tmp_path / ".flowbook" / "results"
            store = get_store()
            assert store is not None
            assert store.url == f"sqlite:///{tmp_path / '.flowbook' / 'flowbook.db'}"
            assert (tmp_path / ".flowbook" / "flowbook.db").is_file()
        finally:
            close_store()
            monkeypatch.setenv("FLOWBOOK_HOME", previous)
            reload_settings()
    assert get_settings().home == Path(previous)


# -- the command line, run as a process ----------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.update(FLOWBOOK_HOME=str(home), FLOWBOOK_CONSOLE="off")
    return env


@pytest.fixture
def cli_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A store of its own, used in this process (for the runs) and by the command line."""
    home = tmp_path / "home"
    monkeypatch.setenv("FLOWBOOK_HOME", str(home))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    reload_settings()
    yield home
    close_store()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowbook.cli", *args],
        env=_env(home),
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_all(home: Path, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Several commands at once (each is a process start and an import of SQLAlchemy)."""
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "flowbook.cli", *cmd],
            env=_env(home),
            cwd=home.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in commands
    ]
    done = []
    for cmd, process in zip(commands, started, strict=True):
        out, err = process.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(list(cmd), process.returncode, out, err))
    return done


def usage_error(done: subprocess.CompletedProcess[str], command: str) -> str:
    """The message of an argparse error (exit 2, usage then one error line)."""
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith(f"usage: flowbook {command}"), done.stderr
    prefix = f"flowbook {command}: error: "
    assert lines[-1].startswith(prefix), done.stderr
    return lines[-1][len(prefix) :]


@pytest.mark.slow
def test_the_command_line_names_bad_input(cli_home: Path) -> None:
    flow(one, name="kept")()
    bogus, huge, zero, empty, newline, good = cli_all(
        cli_home,
        ("runs", "--state", "bogus"),
        ("runs", "--limit", "99999999999999999999"),
        ("runs", "--limit", "0"),
        ("runs", "show", ""),
        ("runs", "delete", "a\nb"),
        ("runs", "--state", "completed", "--json"),
    )
    assert usage_error(bogus, "runs") == (
        f"argument --state: state 'bogus' is not a state name; use one of {STATES}"
    )
    assert usage_error(huge, "runs") == (
        "argument --limit: '99999999999999999999' is more than 1000000; give a whole number "
        "from 1 to 1000000"
    )
    assert usage_error(zero, "runs") == (
        "argument --limit: '0' is not a positive whole number; give one from 1 to 1000000"
    )
    assert usage_error(empty, "runs show") == (
        "argument run: the run '' is empty; give a flow run's id, the first 4 or more "
        "characters of its id, or its name (`flowbook runs` lists them)"
    )
    assert usage_error(newline, "runs delete") == (
        "argument run: the run 'a\\nb' contains the control character '\\n' at position 1; "
        "give a flow run's id, the first 4 or more characters of its id, or its name "
        "(`flowbook runs` lists them)"
    )
    assert good.returncode == 0, good.stderr
    assert [r["name"] for r in json.loads(good.stdout)] == [flowbook.runs.list()[0].name]
    assert len(flowbook.runs.list()) == 1  # nothing was deleted


def test_the_python_api_names_bad_input(cli_home: Path) -> None:
    flow(one, name="kept")()
    with pytest.raises(ValueError, match="bogus") as info:
        flowbook.runs.list(state="bogus")
    assert str(info.value) == f"state 'bogus' is not a state name; use one of {STATES}"
    with pytest.raises(ValueError, match="limit=") as info:
        flowbook.runs.list(limit=10**20)
    assert str(info.value) == (
        "limit=100000000000000000000 is not valid; give a whole number from 1 to 1000000, or "
        "None for all runs"
    )
    for ref, problem in (
        ("", "is empty"),
        ("x\x00", "contains the control character '\\x00' at position 1"),
    ):
        for call, name in ((flowbook.runs.get, "get"), (flowbook.runs.delete, "delete")):
            with pytest.raises(ValueError, match=r"^flowbook\.runs\.") as info:
                call(ref)
            assert str(info.value) == (
                f"flowbook.runs.{name}({ref!r}): the run {ref!r} {problem}; give a flow run's "
                "id, the first 4 or more characters of its id, or its name (`flowbook runs` "
                "lists them)"
            )
    with pytest.raises(LookupError) as missing:
        flowbook.runs.get("abc")
    assert str(missing.value) == (
        f"no flow run 'abc' in the store at {str(cli_home / 'flowbook.db')!r}; an id prefix "
        "needs 4 or more characters; list runs with `flowbook runs`"
    )
    assert [r.state for r in flowbook.runs.list(state="COMPLETED")] == ["Completed"]


def _name_and_prefix_runs() -> tuple[Any, Any, str]:
    """Two runs: ``first``, and ``second`` whose name is the start of ``first``'s id."""
    flow(one, name="first")()
    (first,) = flowbook.runs.list(flow="first")
    prefix = first.id[:8]
    flow(one, name="second", flow_run_name=prefix)()
    (second,) = flowbook.runs.list(flow="second")
    assert second.name == prefix
    return first, second, prefix


def _ambiguity(first: Any, second: Any, prefix: str) -> str:
    return (
        f"run {prefix!r} is ambiguous: it is the name of flow run {second.id} ({prefix!r} of "
        f"flow 'second') and the start of the id of flow run {first.id} ({first.name!r} of "
        "flow 'first'); give the full id of the run you mean"
    )


def test_a_name_that_is_also_an_id_prefix_is_ambiguous_in_python(cli_home: Path) -> None:
    first, second, prefix = _name_and_prefix_runs()
    calls: list[Callable[[str], Any]] = [flowbook.runs.get, flowbook.runs.delete]
    for call in calls:
        with pytest.raises(LookupError) as info:
            call(prefix)
        assert str(info.value) == _ambiguity(first, second, prefix)
    with pytest.raises(LookupError) as info:
        flow(one, name="first").resume(prefix)
    assert str(info.value) == _ambiguity(first, second, prefix)
    assert {r.id for r in flowbook.runs.list()} == {first.id, second.id}  # nothing deleted

    # the full id chooses; once the name is gone, the prefix names the other run alone
    assert flowbook.runs.get(second.id).name == prefix
    assert flowbook.runs.delete(second.id) == 1
    assert flowbook.runs.get(prefix).id == first.id


@pytest.mark.slow
def test_a_name_that_is_also_an_id_prefix_is_ambiguous_on_the_command_line(
    cli_home: Path,
) -> None:
    first, second, prefix = _name_and_prefix_runs()
    delete, show = cli_all(cli_home, ("runs", "delete", prefix), ("runs", "show", prefix))
    for done in (delete, show):
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr == f"flowbook: {_ambiguity(first, second, prefix)}\n"
    assert {r.id for r in flowbook.runs.list()} == {first.id, second.id}

    by_id = cli(cli_home, "runs", "delete", first.id)
    assert (by_id.returncode, by_id.stdout, by_id.stderr) == (0, "deleted 1 flow run(s)\n", "")
    assert [r.id for r in flowbook.runs.list()] == [second.id]


@pytest.mark.slow
def test_the_command_line_stops_quietly_when_its_reader_goes_away(cli_home: Path) -> None:
    @flow(flow_run_name="chatty")
    def chatty() -> None:
        logger = get_run_logger()
        for i in range(3000):
            logger.info("line %d of a long log, long enough to fill a pipe %s", i, "x" * 60)

    chatty()
    run_id = flowbook.runs.get("chatty").id
    whole = cli(cli_home, "runs", "show", run_id, "--json")
    assert whole.returncode == 0, whole.stderr
    assert len(whole.stdout) > 500_000  # far more than a pipe holds

    # flowbook runs show RUN --json | head -1, as two real processes joined by a pipe
    command = subprocess.Popen(
        [sys.executable, "-m", "flowbook.cli", "runs", "show", run_id, "--json"],
        env=_env(cli_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert command.stdout is not None
    head = subprocess.Popen(
        ["head", "-1"], stdin=command.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    command.stdout.close()  # head is now the pipe's only reader
    head_out, head_err = head.communicate(timeout=60)
    assert command.stderr is not None
    err = command.stderr.read().decode()
    command.stderr.close()
    assert command.wait(timeout=60) == 141
    assert (head_out, head_err) == (b"{\n", b"")
    assert err == ""

    # and a reader that reads a little and closes, with a short output in the pipe's buffer
    short = subprocess.Popen(
        [sys.executable, "-m", "flowbook.cli", "runs", "--json"],
        env=_env(cli_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert short.stdout is not None
    assert short.stderr is not None
    short.stdout.close()  # closed before anything was written
    err_short = short.stderr.read().decode()
    short.stderr.close()
    assert short.wait(timeout=60) == 141
    assert err_short == ""
