"""With the console on in a notebook, its lines and a user's logging handler's output are not
stored a second time as the run's stderr text; the run's own stderr writes still are.

A real kernel: the output routing of ``flowbook.jupyter.extension`` diverts a run's writes to
its widget and the store, and the console and the handlers write to the same ``sys.stderr``.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator

import pytest
from kernel_session import KernelSession

pytestmark = pytest.mark.slow

CODE = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="HANDLER %(name)s %(message)s")
from flowbook import flow, task, get_run_logger

@task
def talk():
    get_run_logger().info("from the task logger")
    logging.getLogger("mine").warning("from my own logger")
    sys.stderr.write("own stderr text\\n")
    return 1

@flow
def chat():
    get_run_logger().warning("from the flow logger")
    return talk()

chat()
"""

READ = """
from flowbook.store import get_store
from sqlalchemy import text
st = get_store(); st.writer.flush()
with st.engine.connect() as c:
    for level, logger, message in c.execute(text("select level, logger, message from logs")):
        print(f"ROW {level} {logger} | {message}")
"""


@pytest.fixture(scope="module")
def kernel(
    venv_kernel_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KernelSession]:
    home = tmp_path_factory.mktemp("console-home")
    env = {**os.environ, **venv_kernel_env, "FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "on"}
    k = KernelSession(env)
    assert k.error(k.run("%load_ext flowbook")) is None
    yield k
    k.close()


def test_console_lines_and_handler_output_are_stored_once(kernel: KernelSession) -> None:
    msgs = kernel.run(textwrap.dedent(CODE))
    assert kernel.error(msgs) is None
    shown = kernel.stdout(msgs, "stderr")
    # the console still prints in the cell, and the user's handler too
    assert "Finished in state Completed()" in shown
    assert "HANDLER flowbook.task_runs from the task logger" in shown
    rows = kernel.stdout(kernel.run(READ)).splitlines()
    stderr_rows = [r for r in rows if " stderr | " in r]
    # stored as text written to stderr: the run's own write and a record of a logger the
    # store does not keep otherwise; no console line, no second copy of a run logger's record
    assert sorted(r.split(" | ", 1)[1] for r in stderr_rows) == [
        "HANDLER mine from my own logger",
        "own stderr text",
    ]
    assert sum("from the task logger" in r for r in rows) == 1
    assert sum("from the flow logger" in r for r in rows) == 1


DEEP = """
import logging, sys
from flowbook import flow, task, get_run_logger

class DeepHandler(logging.Handler):
    # writes through many nested calls, as rich's handler does (emit -> Console.print -> ...)
    def emit(self, record):
        self.down(20, f"DEEP {record.name} {record.getMessage()}\\n")

    def down(self, n, text):
        if n:
            return self.down(n - 1, text)
        sys.stderr.write(text)

deep = DeepHandler()
logging.getLogger().addHandler(deep)
try:
    @task
    def deep_talk():
        get_run_logger().warning("deep task line")
        logging.getLogger("theirs").warning("deep other line")

    @flow
    def deep_chat():
        get_run_logger().warning("deep flow line")
        deep_talk()

    deep_chat()
finally:
    logging.getLogger().removeHandler(deep)
"""


def test_a_deep_handler_s_output_of_run_records_is_stored_once(kernel: KernelSession) -> None:
    msgs = kernel.run(textwrap.dedent(DEEP))
    assert kernel.error(msgs) is None
    shown = kernel.stdout(msgs, "stderr")
    # the handler still writes in the cell
    assert "DEEP flowbook.task_runs deep task line" in shown
    assert "DEEP flowbook.flow_runs deep flow line" in shown
    rows = kernel.stdout(kernel.run(READ)).splitlines()
    # the run loggers' records once each, as log lines; the other logger's record (which the
    # store keeps only as the text the handler wrote) once, as stderr text
    assert sum("deep task line" in r for r in rows) == 1
    assert sum("deep flow line" in r for r in rows) == 1
    assert [r for r in rows if "DEEP theirs deep other line" in r] == [
        "ROW 30 stderr | DEEP theirs deep other line"
    ]
    assert not any(" stderr | " in r and "DEEP flowbook." in r for r in rows)


MANY = """
%flowbook widgets off
import sys
from flowbook import flow, task

@task
def each(i):
    return i

@flow(name="many-lines")
def many(n):
    return each.map(range(n)).result()

stream = sys.stderr
kind = type(stream)
flushes = [0]
real_flush = kind.flush

def counted(self):
    flushes[0] += 1
    return real_flush(self)

kind.flush = counted
try:
    assert many(2000) == list(range(2000))
finally:
    kind.flush = real_flush
print("FLUSHES", flushes[0])
"""


def test_with_the_widget_off_every_line_reaches_the_cell_without_a_flush_per_line(
    kernel: KernelSession,
) -> None:
    """The kernel's stderr sends what is written by itself (within 0.2 s, and before the
    cell's reply); its ``flush()`` waits for the kernel's IO thread, a round trip per line."""
    try:
        msgs = kernel.run(textwrap.dedent(MANY), timeout=120)
        assert kernel.error(msgs) is None
        shown = kernel.stdout(msgs, "stderr").splitlines()
        finished = [line for line in shown if "Finished in state Completed(" in line]
        # every task run's line and the flow run's, the flow run's last
        assert len(finished) == 2001
        assert sum("| Task run 'each-" in line for line in finished) == 2000
        assert "| Flow run '" in finished[-1]
        assert sum("for flow 'many-lines'" in line for line in shown) == 1
        flushes = int(kernel.stdout(msgs).split("FLUSHES", 1)[1].split()[0])
        assert flushes < 100, flushes  # not one per line (2,002 before)
    finally:
        assert kernel.error(kernel.run("%flowbook widgets on")) is None
