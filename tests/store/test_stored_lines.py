"""The store keeps a run's whole story: the engine's lines and printed text, in order.

- a failed, retried run's engine lines (the retry warning, the failure with its traceback, the
  "Finished in state ..." lines) are stored and read back in time order, the lines of completed
  runs told from their rows;
- printed text handed to the writer becomes whole lines with the time they were written, and a
  flood of prints is bounded per flow run, with one line that counts what was dropped;
- lines the database refuses, or that cannot be made, cost no run row.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from store_under_test import StoreUnderTest

from flowbook import flow, task
from flowbook.engine.runs import current_flow_run, current_task_run
from flowbook.store import get_store
from flowbook.store.printed import PrintedLines
from flowbook.store.queries import get_run


def _print_to_store(text: str, stream: str = "stdout") -> None:
    """What the notebook's output routing does with a write of a run shown in a widget."""
    store = get_store()
    assert store is not None
    task_run = current_task_run.get()
    flow_run = task_run.flow_run if task_run is not None else current_flow_run.get()
    assert flow_run is not None
    task_run_id = task_run.id if task_run is not None else None
    store.writer.put(("output", flow_run.id, task_run_id, stream, text, time.time()))


def _flushed(run: Any) -> Any:
    try:
        return run()
    finally:
        opened = get_store()
        assert opened is not None
        assert opened.writer.flush()


def test_a_retried_failure_is_stored_with_its_traceback_in_time_order(
    store: StoreUnderTest,
) -> None:
    @task
    def fine(i: int) -> int:
        _print_to_store(f"fine {i} ")
        _print_to_store("done\n")
        return i

    @task(retries=1, retry_delay_seconds=0)
    def explode() -> None:
        raise ValueError("bad input 42")

    @flow(flow_run_name="story")
    def story() -> None:
        fine(1)
        explode()

    with pytest.raises(ValueError, match="bad input 42"):
        _flushed(story)
    opened = get_store()
    assert opened is not None
    detail = get_run(opened, "story")
    lines = [(line["level"], line["logger"], line["message"]) for line in detail.logs]
    messages = [m for _, _, m in lines]
    stamps = [line["timestamp"] for line in detail.logs]
    assert stamps == sorted(stamps)
    assert lines[0] == (
        logging.INFO,
        "flowbook.engine",
        "Created flow run 'story' for flow 'story'",
    )
    assert (logging.INFO, "stdout", "fine 1 done") in lines
    assert (logging.INFO, "Task run 'fine-0'", "Finished in state Completed()") in lines
    [retry] = [line for line in lines if "Retry 1/1" in line[2]]
    assert retry[:2] == (logging.WARNING, "Task run 'explode-0'")
    assert retry[2].startswith("Task run failed with exception: ValueError('bad input 42')")
    [failure] = [line for line in lines if "Retries are exhausted" in line[2]]
    assert failure[:2] == (logging.ERROR, "Task run 'explode-0'")
    assert 'raise ValueError("bad input 42")' in failure[2]
    assert "ValueError: bad input 42" in failure[2]
    # the flow failed because its task did: the traceback is told once
    assert sum("Traceback" in m for m in messages) == 1
    assert messages[-2].startswith("Finished in state Failed(")
    assert lines[-1][:2] == (logging.ERROR, "Flow run 'story'")
    assert lines[-1][2].startswith("Finished in state Failed(")
    # the print came before its task run ended, the retry before the failure
    assert messages.index("fine 1 done") < messages.index("Finished in state Completed()")
    assert messages.index(retry[2]) < messages.index(failure[2])


def test_a_completed_run_stores_no_line_of_its_own_and_shows_its_lines(
    store: StoreUnderTest,
) -> None:
    @task
    def one(i: int) -> int:
        return i

    @flow(flow_run_name="plain")
    def plain() -> int:
        return sum(one.map(range(5)).result())

    assert _flushed(plain) == 10
    assert store.count("logs") == 0  # the common path writes no log row
    opened = get_store()
    assert opened is not None
    detail = get_run(opened, "plain")
    finished = [line for line in detail.logs if line["message"].startswith("Finished")]
    assert len(finished) == 6
    assert {line["logger"] for line in finished[:5]} == {f"Task run 'one-{i}'" for i in range(5)}
    assert finished[-1]["logger"] == "Flow run 'plain'"
    assert finished[-1]["message"] == "Finished in state Completed('All states completed.')"


def test_printed_lines_are_bounded_per_flow_run_and_the_drop_is_counted() -> None:
    printed = PrintedLines(limit=3)
    rows: list[tuple[Any, ...]] = []
    printed.add(rows, "flow", "task", "stdout", "one\ntw", 1.0)
    printed.add(rows, "flow", "task", "stdout", "o\nthree\nfour\n", 2.0)
    printed.add(rows, "flow", None, "stderr", "five\r\nsix", 3.0)
    printed.add(rows, "other", None, "stderr", "kept\n", 3.5)
    printed.end(rows, "flow", 4.0)
    assert rows == [
        ("flow", "task", logging.INFO, "stdout", "one", 1.0),
        ("flow", "task", logging.INFO, "stdout", "two", 1.0),  # the time its line began
        ("flow", "task", logging.INFO, "stdout", "three", 2.0),
        ("other", None, logging.WARNING, "stderr", "kept", 3.5),
        (
            "flow",
            None,
            logging.WARNING,
            "flowbook.store",
            "3 printed line(s) dropped: the store keeps the first 3 printed lines of a flow run",
            4.0,
        ),
    ]
    # a new run of the same id would start counting again (the run's counts are gone)
    rows.clear()
    printed.end(rows, "flow", 5.0)
    assert rows == []


def test_lines_the_store_cannot_take_cost_no_run_row(store: StoreUnderTest) -> None:
    class Unprintable(Exception):
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    @task
    def noisy() -> int:
        _print_to_store("bad \udcff name\n")  # no database takes a lone surrogate
        _print_to_store("good line\n")
        return 1

    @task
    def odd() -> None:
        raise Unprintable("odd")

    @flow(flow_run_name="refused")
    def refused() -> int:
        odd.submit().wait()
        return noisy()

    with pytest.warns(RuntimeWarning):
        assert _flushed(refused) == 1
    assert store.rows("SELECT name, state_type FROM flow_runs") == [("refused", "COMPLETED")]
    assert sorted(store.rows("SELECT name, state_type FROM task_runs")) == [
        ("noisy-0", "COMPLETED"),
        ("odd-0", "FAILED"),
    ]
    messages = [m for (m,) in store.rows("SELECT message FROM logs")]
    assert "good line" in messages
    assert not any(m.startswith("bad") for m in messages)
    assert {what for (what,) in store.rows("SELECT what FROM write_drops")} == {"log"}
