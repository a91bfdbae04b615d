"""What a task run keeps while its flow run goes on: little, so that a million fit in a kernel.

A finished task run stays alive until its flow run ends (its future, the flow run's list of
task runs), so every byte it keeps counts a million times in a large map. These tests check
the outcome (names, map groups and times read the same as before) and the bytes held.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.engine.events import StateChanged
from flowbook.futures import TaskRunFuture
from flowbook.settings import reload_settings


@task
def ident(x: int) -> int:
    return x


@task(task_run_name="item-{x}")
def named(x: int) -> int:
    return x


def test_default_and_templated_names_and_map_groups_read_as_given(events: Any) -> None:
    kept: list[TaskRunFuture[Any]] = []

    @flow
    def two_maps() -> None:
        first = ident.map([10, 11, 12])
        second = ident.map([20, 21])  # dynamic keys go on (3, 4); indices start again at 0
        loose = ident.submit(30)
        templated = named.map([7, 8])
        futures = [*first, *second, loose, *templated]
        for f in futures:
            f.wait()
        kept.extend(futures)  # (a flow's return value gives results, not futures)

    two_maps()
    runs = [f.task_run for f in kept]
    assert [r.name for r in runs] == [
        "ident-0",
        "ident-1",
        "ident-2",
        "ident-3",
        "ident-4",
        "ident-5",
        "item-7",
        "item-8",
    ]
    groups = [r.map_group for r in runs]
    assert groups[5] is None  # the submitted run
    first_id, second_id, templated_id = groups[0][0], groups[3][0], groups[6][0]  # type: ignore[index]
    assert len({first_id, second_id, templated_id}) == 3
    assert groups[:5] == [
        (first_id, 3, 0),
        (first_id, 3, 1),
        (first_id, 3, 2),
        (second_id, 2, 0),
        (second_id, 2, 1),
    ]
    assert groups[6:] == [(templated_id, 2, 0), (templated_id, 2, 1)]
    # the names the events carried are the same ones
    named_events = {e.run.name for e in events.of(StateChanged) if e.run in runs}
    assert named_events == {r.name for r in runs}
    # a name set later is the name read
    runs[0].name = "renamed"
    assert runs[0].name == "renamed"


def test_a_runs_times_are_its_states_times(events: Any) -> None:
    kept: list[TaskRunFuture[Any]] = []

    @flow
    def one() -> None:
        kept.append(ident.submit(1))

    one()
    run = kept[0].task_run
    states = [e.state for e in events.of(StateChanged) if e.run is run]
    assert [s.name for s in states] == ["Pending", "Running", "Completed"]
    pending, running, completed = states
    assert pending.timestamp_s == run.created_s
    assert running.timestamp_s == run.start_s
    assert completed.timestamp_s == run.end_s
    assert run.created_s <= run.start_s <= run.end_s  # type: ignore[operator]


def test_a_finished_map_run_holds_few_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes held per finished task run of a 5,000-task map while its futures are alive:
    the run, its id, its final state, its future, its times and arguments (about 650; 820
    when each run kept its name string, its map group tuple, a time of its own beside each
    state's and a separate int for its index)."""
    monkeypatch.setenv("FLOWBOOK_STORE", "off")  # the store's queue of unwritten events aside
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    reload_settings()
    n = 5000
    held: list[int] = []

    @flow
    def mapped(n: int) -> None:
        futures = ident.map(range(n))
        assert futures.result() == list(range(n))
        gc.collect()
        held.append(tracemalloc.get_traced_memory()[0])

    mapped(10)  # imports and first-call caches
    gc.collect()
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        mapped(n)
    finally:
        if started_here:
            tracemalloc.stop()
    per_run = (held[-1] - base) / n
    assert per_run < 720, f"{per_run:.0f} bytes held per task run"
