"""The benchmark harness runs against flowbook: each workload checks its own results.

This only proves that the adapter and the workloads work (a broken adapter would otherwise go
unnoticed until someone measures); timings are the job of ``benchmarks/run``, not of tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks"

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "workload", ["seq_1000", "submit_1000", "map_1000", "chain_500", "retries", "flow_call_100"]
)
def test_workload_runs_on_flowbook(workload: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--engine",
            str(BENCH / "adapter_flowbook.py"),
            "--workload",
            workload,
            "--here",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["workload"] == workload
    assert record["engine"].startswith("flowbook ")
    assert record["wall_s"] > 0
