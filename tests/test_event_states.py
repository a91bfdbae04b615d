"""Which ``StateChanged`` events a subscriber is told (``EventBus.subscribe(..., states=...)``).

A task run's first state (the Pending it is created in), states of type RUNNING and every
other state go to the subscribers of their kind only; a subscriber of every kind (the default)
sees them all, in the order the engine set them. The console at INFO is not called for the
states it does not print; at DEBUG it still prints every "Entered state" line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.engine.events import (
    ALL_STATES,
    FIRST_STATES,
    OTHER_STATES,
    RUNNING_STATES,
    StateChanged,
    bus,
)


class _Seen:
    def __init__(self) -> None:
        self.states: list[tuple[str, str, bool]] = []

    def __call__(self, event: Any) -> None:
        self.states.append((event.run.name, event.state.name, event.previous is None))


@pytest.fixture
def seen() -> Iterator[dict[str, _Seen]]:
    kinds = {
        "first": FIRST_STATES,
        "running": RUNNING_STATES,
        "other": OTHER_STATES,
        "all": ALL_STATES,
    }
    subscribers = {name: _Seen() for name in kinds}
    for name, states in kinds.items():
        bus.subscribe((StateChanged,), subscribers[name], states=states)
    yield subscribers
    for fn in subscribers.values():
        bus.unsubscribe(fn)


def test_each_kind_of_state_goes_to_its_subscribers_and_all_of_them_in_order(
    seen: dict[str, _Seen],
) -> None:
    calls = {"n": 0}

    @task(retries=1, retry_delay_seconds=0, task_run_name="flaky")
    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("once")
        return 1

    @flow(flow_run_name="the-flow")
    def the_flow() -> int:
        return flaky()

    assert the_flow() == 1
    flaky_states = [s for s in seen["all"].states if s[0] == "flaky"]
    assert [name for _, name, _ in flaky_states] == [
        "Pending",
        "Running",
        "AwaitingRetry",
        "Retrying",
        "Running",
        "Completed",
    ]
    assert [s for s in seen["first"].states if s[0] == "flaky"] == [("flaky", "Pending", True)]
    assert [name for run, name, _ in seen["running"].states if run == "flaky"] == [
        "Running",
        "Retrying",
        "Running",
    ]
    assert [name for run, name, _ in seen["other"].states if run == "flaky"] == [
        "AwaitingRetry",
        "Completed",
    ]
    # the flow run: its Pending is not a task run's first state; its Running is a running one
    assert [name for run, name, _ in seen["running"].states if run == "the-flow"] == ["Running"]
    assert [name for run, name, _ in seen["other"].states if run == "the-flow"] == [
        "Pending",
        "Completed",
    ]
    assert not [s for s in seen["first"].states if s[0] == "the-flow"]
    # nothing told twice, nothing left out: the kinds add up to every state, in order
    assert sorted(seen["first"].states + seen["running"].states + seen["other"].states) == sorted(
        seen["all"].states
    )


@pytest.mark.parametrize("states", [0, 8, -1, ALL_STATES | 16])
def test_a_states_value_that_names_no_kind_is_refused_with_the_value(states: int) -> None:
    def nobody(_event: Any) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match=rf"states={states!r}: use FIRST_STATES"):
        bus.subscribe((StateChanged,), nobody, states=states)
    assert all(nobody not in subs for subs in bus._subscribers.values())


def test_a_subscriber_raising_on_a_running_state_is_warned_about_once_and_the_run_goes_on() -> None:
    def broken(_event: Any) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe((StateChanged,), broken, states=RUNNING_STATES)
    try:

        @task
        def one(x: int) -> int:
            return x + 1

        @flow
        def two() -> list[int]:
            return [one(1), one(2)]

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert two() == [2, 3]
        told = [w for w in caught if "subscriber bug" in str(w.message)]
        assert len(told) == 1
    finally:
        bus.unsubscribe(broken)
    assert all(broken not in subs for subs in bus._subscribers.values())


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_the_console_prints_entered_state_lines_at_debug_only(tmp_path: Path, level: str) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            from flowbook import flow, task

            @task(task_run_name="step")
            def step():
                return 1

            @flow(flow_run_name="f")
            def f():
                return step.submit().result() + step()

            assert f() == 2

            from flowbook import console
            from flowbook.engine.events import FIRST_STATE_KEY, RUNNING_STATE_KEY, StateChanged, bus

            # which kinds of state the console's subscriber is called for
            print(*(console._dispatch in bus._subscribers.get(key, ())
                    for key in (FIRST_STATE_KEY, RUNNING_STATE_KEY, StateChanged)))
            """
        )
    )
    env = {
        **os.environ,
        "FLOWBOOK_HOME": str(tmp_path / "home"),
        "FLOWBOOK_CONSOLE": "auto",
        "FLOWBOOK_LOGGING_LEVEL": level,
    }
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    entered = [line for line in out.stderr.splitlines() if "Entered state" in line]
    finished = [line for line in out.stderr.splitlines() if "Task run 'step' - Finished" in line]
    assert len(finished) == 2
    called_for = out.stdout.split()
    if level == "INFO":
        assert entered == []
        assert called_for == ["False", "False", "True"]  # final and other states only
        return
    assert called_for == ["True", "True", "True"]
    step_lines = [line.split(" | ", 2)[2] for line in entered if "Task run 'step'" in line]
    # the submitted run's, then (after its result) the inline call's
    assert (
        step_lines
        == [
            "Task run 'step' - Entered state Pending()",
            "Task run 'step' - Entered state Running()",
        ]
        * 2
    )
    assert any("Flow run 'f' - Entered state Running()" in line for line in entered)
