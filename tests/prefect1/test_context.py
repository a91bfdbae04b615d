"""``flowbook.context``: the Prefect 1 context keys, read inside flow and task runs."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest

import flowbook
from flowbook import flow, task
from flowbook.runtime import flow_run, task_run
from flowbook.task_runners import ConcurrentTaskRunner

DATE_KEYS = (
    "today",
    "yesterday",
    "tomorrow",
    "today_nodash",
    "yesterday_nodash",
    "tomorrow_nodash",
)


def test_flow_run_keys_and_the_three_ways_to_read_them() -> None:
    @flow(name="context-flow")
    def reads(n: int = 2) -> dict[str, Any]:
        ctx = flowbook.context
        assert ctx.flow_name == ctx["flow_name"] == ctx.get("flow_name") == "context-flow"
        assert "flow_name" in ctx
        assert "task_name" not in ctx
        with pytest.raises(AttributeError) as info:
            ctx.task_name  # noqa: B018 - the attribute read is the test
        assert str(info.value) == (
            "flowbook.context has no 'task_name' here: it has a value only inside task runs; "
            "flowbook.context.get('task_name') gives None instead of raising"
        )
        with pytest.raises(KeyError):
            ctx["map_index"]
        return {
            "flow_run_name": ctx.flow_run_name == flow_run.name,
            "flow_run_id": ctx.flow_run_id == flow_run.id,
            "keys": ctx.to_dict(),
        }

    seen = reads(5)
    assert seen["flow_run_name"]
    assert seen["flow_run_id"]
    keys = seen["keys"]
    assert keys["parameters"] == {"n": 5}
    assert keys["running_with_backend"] is False
    assert keys["resume"] is False
    assert isinstance(keys["logger"], logging.LoggerAdapter | logging.Logger)
    date = keys["date"]
    assert isinstance(date, dt.datetime)
    assert date.tzinfo is not None
    assert abs((dt.datetime.now(dt.timezone.utc) - date).total_seconds()) < 60
    assert keys["scheduled_start_time"] == date
    assert keys["today"] == date.strftime("%Y-%m-%d")
    assert keys["tomorrow_nodash"] == (date + dt.timedelta(days=1)).strftime("%Y%m%d")
    assert keys["config"].home == Path(flowbook.settings.get_settings().home)
    assert not any(k.startswith("task_") for k in keys)
    assert "map_index" not in keys


def test_task_run_keys_plain_and_mapped() -> None:
    attempts: list[int] = []

    @task(name="greet", tags=["p1", "hello"], retries=1)
    def greet(name: str, fail_once: bool = False) -> dict[str, Any]:
        ctx = flowbook.context
        attempts.append(ctx.task_run_count)
        if fail_once and ctx.task_run_count == 1:
            raise ConnectionError("first attempt fails")
        assert ctx.task_run_id == task_run.id
        assert ctx.task_run_name == task_run.name
        ctx.logger.info("context says hello to %s", name)
        return {k: v for k, v in ctx.to_dict().items() if k not in ("logger", "config")}

    @flow(name="mapped-context", task_runner=ConcurrentTaskRunner())
    def run_them(people: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        single = greet.submit("Zaphod", fail_once=True).result()
        return single, greet.map(people).result()

    single, mapped = run_them(["Arthur", "Ford", "Marvin"])
    assert single["task_name"] == "greet"
    assert single["task_full_name"] == "greet"
    assert single["map_index"] is None
    assert single["task_tags"] == {"p1", "hello"}
    assert single["task_run_count"] == 2  # the retry
    assert single["task_slug"].endswith(":test_task_run_keys_plain_and_mapped.<locals>.greet")
    assert single["flow_name"] == "mapped-context"
    # Prefect 1: the flow run's parameters, also inside a task
    assert single["parameters"] == {"people": ["Arthur", "Ford", "Marvin"]}
    assert sorted(attempts[:2]) == [1, 2]

    assert [m["map_index"] for m in mapped] == [0, 1, 2]
    assert [m["task_full_name"] for m in mapped] == ["greet[0]", "greet[1]", "greet[2]"]
    assert {m["task_run_count"] for m in mapped} == {1}
    assert len({m["task_run_id"] for m in mapped}) == 3
    assert all(m["flow_run_id"] == single["flow_run_id"] for m in mapped)


def test_outside_runs_only_the_logger_and_given_values(caplog: pytest.LogCaptureFixture) -> None:
    assert flowbook.context.get("logger").name == "flowbook"
    assert flowbook.context.get("flow_name") is None
    assert flowbook.context.get("today", "no date") == "no date"
    with pytest.raises(AttributeError) as info:
        flowbook.context.nothing_here  # noqa: B018
    assert str(info.value) == (
        "flowbook.context has no 'nothing_here' here: it is not one of the keys flowbook "
        "provides (see help(flowbook.context)); flowbook.context.get('nothing_here') gives None "
        "instead of raising"
    )
    with flowbook.context({"region": "eu"}, team="ops") as ctx:
        assert ctx is flowbook.context
        assert flowbook.context.region == "eu"
        assert flowbook.context["team"] == "ops"
        with flowbook.context(team="dev"):
            assert flowbook.context.get("team") == "dev"
        assert flowbook.context.get("team") == "ops"
    assert flowbook.context.get("region") is None


def test_given_values_reach_task_runs_and_a_given_date_sets_the_day_keys() -> None:
    @task
    def report() -> dict[str, Any]:
        return {k: flowbook.context.get(k) for k in ("region", "flow_name", *DATE_KEYS)}

    @flow(name="dated", task_runner=ConcurrentTaskRunner())
    def dated() -> dict[str, Any]:
        return report.submit().result()

    with flowbook.context(date="2024-02-29T12:00:00", region="eu", flow_name="not this"):
        seen = dated()
    assert seen == {
        "region": "eu",
        "flow_name": "dated",  # the run's own keys win over given ones
        "today": "2024-02-29",
        "yesterday": "2024-02-28",
        "tomorrow": "2024-03-01",
        "today_nodash": "20240229",
        "yesterday_nodash": "20240228",
        "tomorrow_nodash": "20240301",
    }


def test_the_context_logger_writes_run_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    @task
    def say_hello(name: str) -> None:
        flowbook.context.get("logger").info(f"Hello, {name}!")

    @flow(name="hello-flow")
    def hello(people: list[str]) -> None:
        flowbook.context.logger.info("starting %d greetings", len(people))
        say_hello.map(people).result()

    hello(["Arthur", "Ford"])
    err = capsys.readouterr().err
    assert "- starting 2 greetings" in err
    assert "| INFO    | Task run 'say_hello-0' - Hello, Arthur!" in err
    assert "| INFO    | Task run 'say_hello-1' - Hello, Ford!" in err
