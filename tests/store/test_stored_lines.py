"""The store keeps a run's whole story: the engine's lines and printed text, in order.

- a failed, retried run's engine lines (the retry warning, the failure with its traceback, the
  "Finished in state ..." lines) are stored and read back in time order, the lines of completed
  runs told from their rows;
- printed text handed to the writer becomes whole lines with the time they were written, and a
  flood of prints is bounded per flow run, with one line that counts what was dropped;
- text the database cannot take as it is (lone surrogates) is stored escaped, and an exception
  whose repr fails still has its failure lines; a carriage return starts a printed line again,
  and a huge line is cut.
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
    assert retry[:2] == (logging.INFO, "Task run 'explode-0'")
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


def test_text_a_database_refuses_is_stored_escaped_and_odd_exceptions_keep_their_lines(
    store: StoreUnderTest,
) -> None:
    class Unprintable(Exception):
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    @task
    def noisy() -> int:
        _print_to_store("bad \udcff name\n")  # no database takes a lone surrogate as it is
        _print_to_store("good line\n")
        return 1

    @task
    def odd() -> None:
        raise Unprintable("odd")

    @task(task_run_name="surrogate-\udcfe")
    def named() -> None:
        raise ValueError("bad \udcff")

    @flow(flow_run_name="refused")
    def refused() -> int:
        odd.submit().wait()
        named.submit().wait()
        return noisy()

    assert _flushed(refused) == 1
    assert store.rows("SELECT name, state_type FROM flow_runs") == [("refused", "COMPLETED")]
    assert sorted(store.rows("SELECT name, state_type, state_message FROM task_runs")) == [
        ("noisy-0", "COMPLETED", None),
        ("odd-0", "FAILED", "Task run encountered an exception Unprintable: odd"),
        (
            "surrogate-\\udcfe",
            "FAILED",
            "Task run encountered an exception ValueError: bad \\udcff",
        ),
    ]
    messages = [m for (m,) in store.rows("SELECT message FROM logs")]
    assert "good line" in messages
    assert "bad \\udcff name" in messages
    # the failure lines of both tasks, the exception whose repr fails included
    assert any(
        m.startswith("Task run failed with exception: <unprintable Unprintable object>\nTraceback")
        for m in messages
    )
    assert any(
        m.startswith("Task run failed with exception: ValueError('bad \\udcff')") for m in messages
    )
    # the "Finished in state Failed(...)" lines are told from the state rows when read back
    assert not [m for m in messages if m.startswith("Finished in state")]
    import flowbook.runs

    told = [line["message"] for line in flowbook.runs.get("refused").logs]
    finished = [m for m in told if m.startswith("Finished in state Failed(")]
    assert len(finished) == 2
    assert store.rows("SELECT what FROM write_drops") == []


def test_a_progress_bar_is_one_line_as_a_terminal_shows_it_and_a_huge_line_is_cut() -> None:
    printed = PrintedLines()
    rows: list[tuple[Any, ...]] = []
    started = time.perf_counter()
    for i in range(20_000):  # a progress bar redrawn 20,000 times, never ended by a newline
        printed.add(rows, "flow", "task", "stderr", f"\r{i * 100 // 20_000:3d}%|####|", 1.0)
    printed.add(rows, "flow", "task", "stderr", "\r100%|####| done\r", 2.0)
    printed.add(rows, "flow", "task", "stderr", "\n", 3.0)  # "\r\n" split over two writes
    # one character at a time, a million of them: linear, not quadratic
    for _ in range(1_000_000 // 1000):
        printed.add(rows, "flow", None, "stdout", "x" * 1000, 4.0)
    printed.add(rows, "flow", None, "stdout", "tail\nnext\rover\n", 5.0)
    assert time.perf_counter() - started < 2.0
    assert rows[0] == ("flow", "task", logging.WARNING, "stderr", "100%|####| done", 1.0)
    huge = rows[1][4]
    assert huge.startswith("x" * 65536)
    assert huge.endswith(f" ... ({1_000_004 - 65536} characters cut)")
    assert rows[2][4] == "over"
    assert len(rows) == 3


def test_printed_lines_are_bounded_per_top_level_run_and_late_prints_are_dropped() -> None:
    printed = PrintedLines(limit=2)
    rows: list[tuple[Any, ...]] = []
    printed.add(rows, "sub", "t1", "stdout", "one\n", 1.0, "top")
    printed.add(rows, "sub", "t1", "stdout", "partial", 1.5, "top")
    printed.end(rows, "sub", 2.0, top=False)  # a subflow ended: the count goes on
    printed.add(rows, "top", None, "stdout", "three\nfour\n", 3.0)
    printed.end(rows, "top", 4.0)
    assert [(r[0], r[4]) for r in rows] == [
        ("sub", "one"),
        ("sub", "partial"),
        (
            "top",
            "2 printed line(s) dropped: the store keeps the first 2 printed lines of a flow run",
        ),
    ]
    # a thread still printing after its run ended: dropped and counted, nothing held
    rows.clear()
    printed.add(rows, "sub", "t1", "stdout", "late\nlate partial", 5.0, "top")
    printed.add(rows, "top", None, "stdout", "late too", 5.0)
    assert rows == []
    assert printed.late_writes == 2
    printed.end(rows, "top", 6.0)
    assert rows == []
