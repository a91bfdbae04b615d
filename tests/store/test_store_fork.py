"""A process forked from one with an open store (``os.fork``, multiprocessing's default start
method on Linux) records its own runs: the parent's writer thread, connections and journal stay
the parent's, and the child opens a store of its own at its first run."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = """
import os, sys, time
from flowbook import flow, task

@task
def work(x):
    return x + 1

@flow(name=sys.argv[1])
def numbers(n):
    return work.map(range(n)).result()

assert numbers(5) == [1, 2, 3, 4, 5]
pid = os.fork()
if pid == 0:
    started = time.monotonic()
    ok = numbers(3) == [1, 2, 3]
    # the child's flow call returned with its rows committed, without waiting for a writer
    # thread that only exists in the parent
    took = time.monotonic() - started
    os._exit(0 if ok and took < 10 else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert numbers(2) == [1, 2]
"""


def test_a_forked_child_records_its_own_runs_and_the_parent_goes_on(tmp_path: Path) -> None:
    script = tmp_path / "fork.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "FLOWBOOK_HOME": str(tmp_path / "home"), "FLOWBOOK_CONSOLE": "off"}
    proc = subprocess.run(
        [sys.executable, str(script), "forked"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "did not confirm" not in proc.stderr
    with sqlite3.connect(tmp_path / "home" / "flowbook.db") as db:
        runs = db.execute(
            "SELECT state_type, process_id FROM flow_runs WHERE flow_name = 'forked'"
        ).fetchall()
        tasks = db.execute(
            "SELECT count(*) FROM task_runs JOIN flow_runs ON flow_runs.id = task_runs.flow_run_id"
            " WHERE flow_runs.flow_name = 'forked' AND task_runs.state_type = 'COMPLETED'"
        ).fetchone()[0]
    assert len(runs) == 3
    assert {state for state, _ in runs} == {"COMPLETED"}
    # the parent's two runs under its process record, the child's under one of its own
    assert len({process for _, process in runs}) == 2
    assert tasks == 5 + 3 + 2
