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
