"""Settings that give defaults to every task and flow: Prefect 3's PREFECT_LOGGING_LOG_PRINTS,
PREFECT_LOGGING_EXTRA_LOGGERS, PREFECT_TASKS_DEFAULT_RETRIES, ..._RETRY_DELAY_SECONDS and
PREFECT_TASKS_REFRESH_CACHE, as flowbook's FLOWBOOK_* variables.

Pages followed (PrefectHQ/prefect repository):
- docs/v3/how-to-guides/workflows/retries.mdx, "Configure task retry behavior globally"
- docs/v3/how-to-guides/workflows/add-logging.mdx, "Log with print statements"
- docs/v3/advanced/logging-customization.mdx, "Include logs from other libraries"
- docs/v3/how-to-guides/workflows/cache-workflow-steps.mdx, "Ignore the cache"
- docs/v3/api-ref/settings-ref.mdx (names, types and defaults of the settings)

The first test of each lives with its page's other tests (test_docs_retries.py,
test_docs_logging.py, test_docs_caching.py); these are the rest, and how each fails.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import flowbook.runs
from flowbook import flow, get_run_logger, runtime, task
from flowbook.engine.events import LogEmitted
from flowbook.settings import get_settings, reload_settings
from flowbook.states import State
from flowbook.tasks import exponential_backoff

Setenv = Callable[..., None]


@pytest.fixture
def setting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Setenv]:
    """Set FLOWBOOK_* variables and reload the settings; reloaded again without them after."""

    def set_and_reload(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(f"FLOWBOOK_{name}", value)
        reload_settings()

    yield set_and_reload
    monkeypatch.undo()
    reload_settings()


def _lines(events: Any) -> dict[str, LogEmitted]:
    return {e.record.getMessage(): e for e in events.of(LogEmitted)}


# -- retries.mdx "Configure task retry behavior globally" -------------------------------------


# "The default values can be overridden on a per-task basis via the retries and
# retry_delay_seconds parameters"
def test_a_task_own_retries_override_the_default(setting: Setenv) -> None:
    setting(TASKS_DEFAULT_RETRIES="2", TASKS_DEFAULT_RETRY_DELAY_SECONDS="7")
    calls: list[int] = []

    @task(retries=0)
    def once() -> None:
        calls.append(1)
        raise ValueError("no retry")

    @task(retries=1, retry_delay_seconds=0)
    def own_delay() -> None:
        pass

    with pytest.raises(ValueError, match="no retry"):
        once()
    assert calls == [1]
    assert own_delay.retries == 1
    assert own_delay.retry_delay_seconds == 0


# PREFECT_TASKS_DEFAULT_RETRY_DELAY_SECONDS="1,10,100": a list of delays, one per retry; the
# delay default applies also to a task with retries of its own
def test_default_retry_delays_apply_to_tasks_without_their_own(setting: Setenv) -> None:
    setting(TASKS_DEFAULT_RETRY_DELAY_SECONDS="1,10,100")

    @task(retries=3)
    def listed() -> None:
        pass

    assert listed.retry_delay_seconds == [1.0, 10.0, 100.0]
    assert [listed.retry_delay_for(n) for n in (1, 2, 3)] == [1.0, 10.0, 100.0]

    setting(TASKS_DEFAULT_RETRIES="1", TASKS_DEFAULT_RETRY_DELAY_SECONDS="0.2")
    calls: list[float] = []

    @task
    def slow_to_succeed() -> int:
        calls.append(time.monotonic())
        if len(calls) < 2:
            raise ValueError("again")
        return len(calls)

    assert slow_to_succeed() == 2
    assert calls[1] - calls[0] >= 0.2


# tasks.py (Prefect): a retry_delay_seconds function is called with the number of retries,
# the default number when the task gives none
def test_a_delay_function_gets_the_default_number_of_retries(setting: Setenv) -> None:
    setting(TASKS_DEFAULT_RETRIES="3")

    @task(retry_delay_seconds=exponential_backoff(1))
    def backing_off() -> None:
        pass

    assert backing_off.retries == 3
    assert backing_off.retry_delay_seconds == [1, 2, 4]


# Prefect reads the retry defaults when a task is decorated: a task keeps the ones in force then
def test_retry_defaults_are_read_when_a_task_is_decorated(setting: Setenv) -> None:
    @task
    def before() -> None:
        pass

    setting(TASKS_DEFAULT_RETRIES="2")

    @task
    def after() -> None:
        pass

    assert (before.retries, after.retries) == (0, 2)
    assert after.with_options(name="copy").retries == 2
    assert after.with_options(retries=0).retries == 0


# how it fails: a task that keeps raising runs 1 + the default number of times, then fails
def test_a_task_failing_every_attempt_fails_after_the_default_retries(setting: Setenv) -> None:
    setting(TASKS_DEFAULT_RETRIES="2")
    calls: list[int] = []

    @task
    def broken() -> None:
        calls.append(1)
        raise RuntimeError("still broken")

    @flow
    def main() -> bool:
        state: State = broken(return_state=True)  # type: ignore[call-arg, assignment]
        return state.is_failed()

    assert main() is True
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("name", "value", "accepts"),
    [
        ("TASKS_DEFAULT_RETRIES", "abc", "a whole number of retries >= 0"),
        ("TASKS_DEFAULT_RETRIES", "-1", "a whole number of retries >= 0"),
        ("TASKS_DEFAULT_RETRIES", "1.5", "a whole number of retries >= 0"),
        ("TASKS_DEFAULT_RETRY_DELAY_SECONDS", "soon", "a number of seconds >= 0"),
        ("TASKS_DEFAULT_RETRY_DELAY_SECONDS", "1,-2", "a number of seconds >= 0"),
        ("TASKS_DEFAULT_RETRY_DELAY_SECONDS", "nan", "a number of seconds >= 0"),
        ("TASKS_DEFAULT_RETRY_DELAY_SECONDS", ",".join(["1"] * 51), "at most 50"),
        ("LOGGING_LOG_PRINTS", "maybe", "use true or false"),
        ("TASKS_REFRESH_CACHE", "2", "use true or false"),
        ("LOGGING_EXTRA_LOGGERS", "dask,flowbook.task_runs", "flowbook's own loggers"),
    ],
)
def test_bad_values_name_the_setting_and_the_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, accepts: str
) -> None:
    before = get_settings()
    monkeypatch.setenv(f"FLOWBOOK_{name}", value)
    with pytest.raises(ValueError, match=f"FLOWBOOK_{name}={re.escape(repr(value))}") as caught:
        reload_settings()
    message = str(caught.value)
    assert accepts in message
    assert get_settings() is before  # the settings in force are kept


def test_values_are_read_leniently_where_that_is_safe(setting: Setenv) -> None:
    setting(
        LOGGING_LOG_PRINTS=" ON ",
        TASKS_REFRESH_CACHE="0",
        TASKS_DEFAULT_RETRIES="",
        TASKS_DEFAULT_RETRY_DELAY_SECONDS=" 5 , ,10 ",
        LOGGING_EXTRA_LOGGERS=" a, ,b,a ",
    )
    settings = get_settings()
    assert settings.logging_log_prints is True
    assert settings.tasks_refresh_cache is False
    assert settings.tasks_default_retries == 0
    assert settings.tasks_default_retry_delay_seconds == (5.0, 10.0)
    assert settings.logging_extra_loggers == ("a", "b")


# -- add-logging.mdx "Log with print statements" ----------------------------------------------


# "configure the default log_prints setting for all Prefect flow and task runs": a task run
# outside any flow too; a flow or task that sets log_prints=False keeps printing
def test_the_log_prints_default_reaches_tasks_and_yields_to_their_own(
    events: Any, setting: Setenv, capsys: pytest.CaptureFixture[str]
) -> None:
    setting(LOGGING_LOG_PRINTS="true")

    @task
    def lone() -> None:
        print("from a task outside flows")

    @task(log_prints=False)
    def quiet() -> None:
        print("from a quiet task")

    @flow(log_prints=False)
    def quiet_flow() -> None:
        print("from a quiet flow")
        lone()  # inherits its flow run's False, as the page's "inherited by default" says

    @flow
    def loud_flow() -> None:
        print("from a loud flow")
        quiet()

    lone()
    quiet_flow()
    loud_flow()
    lines = _lines(events)
    assert "from a task outside flows" in lines
    assert "from a loud flow" in lines
    assert "from a quiet task" not in lines
    assert "from a quiet flow" not in lines
    out = capsys.readouterr().out
    assert "from a quiet task" in out
    assert "from a quiet flow" in out
    assert out.count("from a task outside flows") == 1  # only the run inside quiet_flow


# Prefect reads log_prints when a run starts: a flow defined before the setting changed follows it
def test_the_log_prints_default_is_read_when_a_run_starts(
    events: Any, setting: Setenv, capsys: pytest.CaptureFixture[str]
) -> None:
    @flow
    def chatty() -> None:
        print("chatting")

    setting(LOGGING_LOG_PRINTS="true")
    chatty()
    assert "chatting" in _lines(events)

    setting(LOGGING_LOG_PRINTS="false")
    events.events.clear()
    chatty()
    assert "chatting" not in _lines(events)
    assert "chatting" in capsys.readouterr().out


# -- cache-workflow-steps.mdx "Ignore the cache" ----------------------------------------------


def _static_key(context: Any, parameters: dict[str, Any]) -> str:
    return "docs-settings-refresh"


# "If you have tasks that should not refresh when this setting is enabled, set refresh_cache
# to False ... If a cache key exists it will be read, not updated"
def test_refresh_cache_false_reads_the_cache_under_the_setting(setting: Setenv) -> None:
    ran: list[str] = []

    @task(cache_key_fn=_static_key)
    def follows() -> int:
        ran.append("follows")
        return len(ran)

    @task(cache_key_fn=_static_key, refresh_cache=False)
    def keeps() -> int:
        ran.append("keeps")
        return len(ran)

    assert (follows(), keeps()) == (1, 2)
    setting(TASKS_REFRESH_CACHE="true")
    assert keeps() == 2  # read, not refreshed
    assert follows() == 3  # the task that does not choose refreshes: it runs again
    assert ran == ["follows", "keeps", "follows"]


# src/prefect/tasks.py, Task.__init__: "refresh_cache: Optional[bool] = None", kept as given:
# None for a task that leaves it unset (the setting decides when it runs), under any setting
def test_refresh_cache_left_unset_stays_none(setting: Setenv) -> None:
    ran: list[int] = []

    @task(cache_key_fn=_static_key)
    def unset() -> int:
        ran.append(1)
        return len(ran)

    setting(TASKS_REFRESH_CACHE="true")
    assert unset.refresh_cache is None
    assert task(refresh_cache=True)(_static_key).refresh_cache is True
    assert task(refresh_cache=False)(_static_key).refresh_cache is False
    assert unset.with_options(refresh_cache=False).refresh_cache is False
    assert (unset(), unset()) == (1, 2)  # the setting refreshes it
    unset.refresh_cache = False  # set on the task: its own from now on
    assert (unset.refresh_cache, unset()) == (False, 2)
    unset.refresh_cache = None  # unset again: the setting decides
    assert (unset.refresh_cache, unset()) == (None, 3)


# Prefect reads the setting when a task runs: a task decorated before it changed follows it
def test_the_refresh_setting_is_read_when_a_task_runs(setting: Setenv) -> None:
    ran: list[int] = []

    @task(cache_key_fn=_static_key)
    def cached() -> int:
        ran.append(1)
        return len(ran)

    copied = copy.copy(cached)
    assert cached() == 1
    assert cached() == 1
    setting(TASKS_REFRESH_CACHE="true")
    assert copied.refresh_cache is None  # left unset, as in Prefect ...
    assert copied._refresh_cache is True  # ... and copies follow the setting too
    assert cached() == 2
    setting(TASKS_REFRESH_CACHE="false")
    assert cached() == 2
    assert ran == [1, 1]


# -- logging-customization.mdx "Include logs from other libraries" ----------------------------


# the records become the run's log lines, as get_run_logger() lines are: tied to the task
# run they come from, printed by the console as that run's, stored with the flow run
def test_extra_logger_records_are_the_runs_lines(
    events: Any, setting: Setenv, capsys: pytest.CaptureFixture[str]
) -> None:
    setting(LOGGING_EXTRA_LOGGERS="docs_settings_lib,docs_settings_other")
    library = logging.getLogger("docs_settings_lib.sub")
    library.setLevel(logging.INFO)
    originals: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            originals.append(record)

    keeper = Keep()
    library.addHandler(keeper)
    try:

        @task
        def uses_the_library() -> None:
            library.info("library at work")

        @flow
        def main() -> str:
            get_run_logger().info("from the flow")
            uses_the_library()
            logging.getLogger("docs_settings_other").warning("other library")
            return str(runtime.flow_run.id)

        run_id = main()
    finally:
        library.removeHandler(keeper)
        library.setLevel(logging.NOTSET)
    lines = _lines(events)
    in_task = lines["library at work"]
    assert in_task.flow_run_id == run_id
    assert in_task.task_run_id is not None
    assert in_task.record.name == "docs_settings_lib.sub"
    assert lines["other library"].task_run_id is None
    assert lines["other library"].flow_run_id == run_id
    # the library's own record is left as it was
    assert not hasattr(originals[0], "flowbook_run")
    err = capsys.readouterr().err
    assert "| Task run 'uses_the_library-0' - library at work" in err
    stored = {line["message"]: line for line in flowbook.runs.get(run_id).logs}
    assert stored["library at work"]["task_run_id"] == in_task.task_run_id
    # stored as get_run_logger() lines are: named by their run
    assert stored["library at work"]["logger"] == "Task run 'uses_the_library-0'"
    assert "other library" in stored


# "nothing happens outside a run": no event, and Python's last-resort printing of warnings
# from a logger without handlers still happens (propagate=False here keeps pytest's own
# handler on the root logger out of the way)
def test_extra_loggers_outside_runs_are_left_alone(
    events: Any, setting: Setenv, capsys: pytest.CaptureFixture[str]
) -> None:
    setting(LOGGING_EXTRA_LOGGERS="docs_settings_alone")
    alone = logging.getLogger("docs_settings_alone")
    alone.propagate = False
    try:
        alone.warning("outside any run")
        alone.info("below the last resort's level")
    finally:
        alone.propagate = True
    assert events.of(LogEmitted) == []
    err = capsys.readouterr().err
    assert err.count("outside any run") == 1
    assert "below the last resort" not in err


# a record reaches the handler once per named logger on its way up: named "a" and "a.b", a
# record of "a.b" is one line; reloading the settings neither adds handlers nor leaves them
def test_extra_loggers_neither_duplicate_nor_leak(events: Any, setting: Setenv) -> None:
    parent = logging.getLogger("docs_settings_nest")
    child = logging.getLogger("docs_settings_nest.child")
    setting(LOGGING_EXTRA_LOGGERS="docs_settings_nest,docs_settings_nest.child")
    setting(LOGGING_EXTRA_LOGGERS="docs_settings_nest,docs_settings_nest.child")
    assert len(parent.handlers) == 1
    assert len(child.handlers) == 1

    @flow
    def main() -> None:
        child.warning("once")

    main()
    assert [e.record.getMessage() for e in events.of(LogEmitted)].count("once") == 1

    setting(LOGGING_EXTRA_LOGGERS="docs_settings_nest")
    assert len(child.handlers) == 0
    setting(LOGGING_EXTRA_LOGGERS="")
    assert parent.handlers == []


# FLOWBOOK_LOGGING_LEVEL drops extra loggers' run lines below it, as it drops run loggers'
def test_extra_logger_lines_follow_the_logging_level(events: Any, setting: Setenv) -> None:
    setting(LOGGING_EXTRA_LOGGERS="docs_settings_lib", LOGGING_LEVEL="ERROR")

    @flow
    def main() -> None:
        logging.getLogger("docs_settings_lib").warning("below the level")
        logging.getLogger("docs_settings_lib").error("at the level")

    main()
    lines = _lines(events)
    assert "at the level" in lines
    assert "below the level" not in lines


# how it fails: a library that logs an exception inside a task that then fails keeps its
# traceback on the run's line, and the task's failure is unchanged
def test_an_extra_logger_line_of_a_failing_task(events: Any, setting: Setenv) -> None:
    setting(LOGGING_EXTRA_LOGGERS="docs_settings_lib")

    @task
    def fails() -> None:
        try:
            raise KeyError("missing")
        except KeyError:
            logging.getLogger("docs_settings_lib").exception("library gave up")
            raise

    @flow
    def main() -> bool:
        state: State = fails(return_state=True)  # type: ignore[call-arg, assignment]
        return state.is_failed()

    assert main() is True
    line = _lines(events)["library gave up"]
    assert line.task_run_id is not None
    assert line.record.exc_info is not None
