"""The console's task-run lines written off the task's thread (flowbook/console.py).

When ``sys.stderr`` is a plain file stream (a script's stderr: a terminal, a pipe or a file), a
task run's lines inside a flow run are formatted and written by the console's writer thread in
batches. These tests run scripts in fresh processes with stderr going to a file, as
``python script.py 2>>run.log`` does, and read what the file holds: every line, in the order the
engine told them, with their own timestamps, all written before the flow call returns (and so
kept by a kill right after it), and before an uncaught exception's traceback.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| (\w+) +\| (.*?) - (.*)$")


def _run(tmp_path: Path, body: str, *, expect_rc: int | None = 0) -> tuple[list[str], str]:
    """Run ``body`` as a script with stderr appended to a file; its lines and its stdout."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    log = tmp_path / "run.log"
    env = {**os.environ, "FLOWBOOK_HOME": str(tmp_path / "home"), "FLOWBOOK_CONSOLE": "auto"}
    env.pop("FLOWBOOK_LOGGING_LEVEL", None)
    with log.open("ab") as err:
        proc = subprocess.run(
            [sys.executable, str(script)], stderr=err, stdout=subprocess.PIPE, env=env, timeout=120
        )
    if expect_rc is not None:
        assert proc.returncode == expect_rc, log.read_text()[-3000:]
    return log.read_text().splitlines(), proc.stdout.decode()


def _millis(line: str) -> int:
    m = LINE.match(line)
    assert m, line
    h, mi, s, ms = (int(g) for g in m.groups()[:4])
    return ((h * 60 + mi) * 60 + s) * 1000 + ms


def test_every_task_line_is_written_in_order_before_the_flow_call_returns(
    tmp_path: Path,
) -> None:
    lines, _ = _run(
        tmp_path,
        """
        import sys
        from flowbook import flow, task, get_run_logger

        @task
        def work(x):
            get_run_logger().info("working on %d", x)
            return x + 1

        @flow(name="batch")
        def batch():
            return work.map(range(300)).result()

        assert batch() == list(range(1, 301))
        sys.stderr.write("AFTER THE CALL\\n")
        sys.stderr.flush()
        """,
    )
    after = lines.index("AFTER THE CALL")
    told = lines[:after]
    finished = [line for line in told if "Finished in state Completed()" in line]
    working = [line for line in told if "working on" in line]
    # 300 task lines and 300 log lines, then the flow run's own line, all before the marker
    assert len([f for f in finished if "Task run 'work-" in f]) == 300
    assert len(working) == 300
    assert "Flow run" in told[-1]
    assert "Finished in state Completed(" in told[-1]
    # each task's log line comes before its own Finished line
    for i in range(300):
        log_at = told.index(next(line for line in told if f"'work-{i}' - working on {i}" in line))
        end_at = told.index(next(line for line in told if f"'work-{i}' - Finished" in line))
        assert log_at < end_at
    # the timestamps are the events' own: in the order written they go backwards only where
    # lines of different worker threads interleave (by a few milliseconds, never a second),
    # and the whole run spans well under the writer's delay times the line count
    stamps = [_millis(line) for line in told]
    assert max(a - b for a, b in itertools.pairwise(stamps)) < 1000
    assert stamps[-1] - stamps[0] < 60_000
    assert not [line for line in lines if "Traceback" in line]


def test_a_kill_right_after_the_flow_call_loses_no_line(tmp_path: Path) -> None:
    lines, _ = _run(
        tmp_path,
        """
        import os, signal
        from flowbook import flow, task

        @task
        def work(x):
            return x

        @flow(name="killed-after")
        def killed_after():
            return work.map(range(200)).result()

        killed_after()
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        expect_rc=-signal.SIGKILL,
    )
    assert len([line for line in lines if "Task run 'work-" in line]) == 200
    assert "Finished in state Completed(" in lines[-1]
    assert "Flow run" in lines[-1]


def test_lines_come_before_an_uncaught_exceptions_traceback(tmp_path: Path) -> None:
    lines, _ = _run(
        tmp_path,
        """
        from flowbook import flow, task

        @task
        def fine(x):
            return x

        @task
        def boom():
            raise ValueError("planned 42")

        @flow(name="fails")
        def fails():
            fine.map(range(50)).result()
            return boom()

        fails()
        """,
        expect_rc=1,
    )
    # the interpreter's traceback of the uncaught exception is the last one in the file (the
    # task's own is part of its failure line)
    uncaught = max(i for i, line in enumerate(lines) if line.startswith("Traceback (most recent"))
    before = lines[:uncaught]
    assert len([line for line in before if "Task run 'fine-" in line]) == 50
    assert any("Task run 'boom-0' - Finished in state Failed(" in line for line in before)
    assert any("Flow run" in line and "Finished in state Failed(" in line for line in before)


def test_a_task_called_alone_is_told_at_once(tmp_path: Path) -> None:
    # outside a flow run there is no flow end to write pending lines: the line is written at
    # once, so it comes before what the script writes next
    lines, _ = _run(
        tmp_path,
        """
        import sys
        from flowbook import task

        @task
        def alone(x):
            return x * 2

        assert alone(21) == 42
        sys.stderr.write("NEXT\\n")
        sys.stderr.flush()
        """,
    )
    told = [line for line in lines if "alone" in line or line == "NEXT"]
    assert told[-1] == "NEXT"
    assert "Finished in state Completed()" in told[-2]


def test_a_long_flow_shows_task_lines_while_it_runs(tmp_path: Path) -> None:
    # lines are not held until the flow ends: the writer thread writes them within a fraction
    # of a second, so a task reading the log file sees earlier tasks' lines
    lines, out = _run(
        tmp_path,
        f"""
        import time
        from flowbook import flow, task

        @task
        def first():
            return 1

        @task
        def look():
            time.sleep(0.5)
            with open({str(tmp_path / "run.log")!r}) as f:
                return "Task run 'first-0' - Finished" in f.read()

        @flow(name="long")
        def long():
            first()
            return look()

        print("seen" if long() else "not seen")
        """,
    )
    assert out.strip() == "seen"
    assert any("Task run 'look-0' - Finished in state Completed()" in line for line in lines)


def test_a_forked_child_prints_its_own_lines(tmp_path: Path) -> None:
    # a process forked while lines were pending starts with none pending and a writer of its own
    lines, _ = _run(
        tmp_path,
        """
        import os
        from flowbook import flow, task

        @task
        def work(x):
            return x

        @flow(name="parent-flow")
        def parent_flow():
            return work.map(range(20)).result()

        @flow(name="child-flow")
        def child_flow():
            return work.map(range(5)).result()

        parent_flow()
        pid = os.fork()
        if pid == 0:
            child_flow()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        """,
    )
    finished = [line for line in lines if "Task run 'work-" in line]
    assert len(finished) == 25


def test_the_writer_is_idle_once_everything_is_written(tmp_path: Path) -> None:
    # after a flow's lines are out, the writer thread waits: not armed, nothing to wake it
    _, out = _run(
        tmp_path,
        """
        import time
        from flowbook import console, flow, task

        @task
        def work(x):
            return x

        @flow(name="idle-after")
        def idle_after():
            return work.map(range(50)).result()

        idle_after()
        time.sleep(0.2)
        calls = []
        original = console.flush
        def counting():
            calls.append(1)
            original()
        console.flush = counting  # the writer thread calls it through the module
        time.sleep(0.5)
        print(console._armed, console._wake.is_set(), len(console._pending), len(calls))
        """,
    )
    assert out.split() == ["False", "False", "0", "0"]


def test_lines_to_a_redirected_file_are_written_before_it_closes(tmp_path: Path) -> None:
    # a stream other than the process's own stderr gets its lines at once: a file given to
    # redirect_stderr and closed right after holds them
    target = tmp_path / "redirected.log"
    _run(
        tmp_path,
        f"""
        import contextlib
        from flowbook import flow, task

        @task
        def work(x):
            return x

        @flow(name="redirected")
        def redirected():
            with open({str(target)!r}, "w") as fh, contextlib.redirect_stderr(fh):
                work(1)
            return 1

        redirected()
        """,
    )
    assert "Task run 'work-0' - Finished in state Completed()" in target.read_text()


def test_a_stderr_that_refuses_writes_costs_the_lines_not_the_run(tmp_path: Path) -> None:
    # stderr on a full device: every write fails; the flow returns its result, and the task
    # lines the writer thread could not write are counted
    script = tmp_path / "full.py"
    script.write_text(
        textwrap.dedent(
            """
            from flowbook import console, flow, task

            @task
            def work(x):
                return x

            @flow(name="full-stderr")
            def full():
                return work.map(range(50)).result()

            print(sum(full()), console.dropped_lines, flush=True)
            """
        )
    )
    env = {**os.environ, "FLOWBOOK_HOME": str(tmp_path / "home"), "FLOWBOOK_CONSOLE": "auto"}
    env.pop("FLOWBOOK_LOGGING_LEVEL", None)
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, str(script)], stderr=full, stdout=subprocess.PIPE, env=env, timeout=120
        )
    assert proc.returncode == 0
    # the 50 task runs' lines and the flow run's two (created, finished)
    assert proc.stdout.decode().split() == [str(sum(range(50))), "52"]


def test_a_flow_calls_end_writes_its_last_task_lines_and_its_own_at_once(tmp_path: Path) -> None:
    # stderr's raw writes counted: the flow run's "Created" line is one write, and its end
    # writes the task run's pending line and its own "Finished" line together (one write and
    # one flush: each is a system call, a few microseconds of a small flow call)
    _, out = _run(
        tmp_path,
        """
        import io, json, os, sys
        from flowbook import console, flow, task

        class Counted(io.RawIOBase):
            def __init__(self):
                self.writes = []
            def writable(self):
                return True
            def write(self, data):
                self.writes.append(bytes(data).decode())
                return os.write(2, data)

        raw = Counted()
        sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.BufferedWriter(raw), write_through=True)
        console._BATCH_S = 30.0  # the writer thread does not come first

        @task
        def work(x):
            return x

        @flow(name="small")
        def small(x):
            return work(x)

        for i in range(3):
            assert small(i) == i
        print(json.dumps(raw.writes))
        """,
    )
    writes = json.loads(out)
    assert len(writes) == 6, writes
    for created, ended in zip(writes[::2], writes[1::2], strict=True):
        assert "Created flow run" in created, created
        assert created.count("\n") == 1, created
        task_line, flow_line = ended.splitlines()
        assert "Task run 'work-0' - Finished in state Completed()" in task_line, ended
        assert "Flow run" in flow_line, ended
        assert "Finished in state Completed(" in flow_line, ended


def test_lines_a_full_pipe_refused_are_counted_once_and_not_written_twice(tmp_path: Path) -> None:
    # stderr a non-blocking pipe nobody reads yet: the flow run's line is refused (counted),
    # stays in the stream's buffer, and comes out once when the pipe drains, before the next
    _, out = _run(
        tmp_path,
        """
        import fcntl, io, json, os, sys, time
        from flowbook import console

        r, w = os.pipe()
        fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
        try:
            while True:
                os.write(w, b"#" * 4096)
        except BlockingIOError:
            pass
        sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(w, "w")), line_buffering=True)
        console._write(time.time(), 20, "flowbook.engine", "Created flow run 'a'")
        refused = console.dropped_lines
        fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_NONBLOCK)
        got = b""
        try:
            while True:
                got += os.read(r, 65536)
        except BlockingIOError:
            pass
        console._write(time.time(), 20, "flowbook.engine", "Finished")
        try:
            while True:
                got += os.read(r, 65536)
        except BlockingIOError:
            pass
        print(json.dumps([refused, console.dropped_lines, got.replace(b"#", b"").decode()]))
        """,
    )
    refused, dropped, text = json.loads(out)
    assert (refused, dropped) == (1, 1)
    lines = text.splitlines()
    assert [line.split(" - ")[-1] for line in lines] == ["Created flow run 'a'", "Finished"], text
