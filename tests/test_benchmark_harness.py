"""The benchmark harness runs against flowbook: each workload checks its own results.

This only proves that the adapter and the workloads work (a broken adapter would otherwise go
unnoticed until someone measures); timings are the job of ``benchmarks/run``, not of tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks"

pytestmark = pytest.mark.slow


def run_workload(workload: str, timeout: float = 120) -> dict[str, Any]:
    """Run one workload on flowbook in a fresh process; its JSON record."""
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
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["workload"] == workload
    assert record["engine"].startswith("flowbook ")
    return record


@pytest.mark.parametrize(
    "workload", ["seq_1000", "submit_1000", "map_1000", "chain_500", "retries", "flow_call_100"]
)
def test_workload_runs_on_flowbook(workload: str) -> None:
    assert run_workload(workload)["wall_s"] > 0


def test_dask_100_cold_runs_on_flowbook() -> None:
    """flowbook's Dask adapter: a second run reuses the cluster, which dask_close() then closes."""
    record = run_workload("dask_100_cold", timeout=180)
    assert record["same_cluster"] is True
    assert record["close_s"] is not None
    assert record["wall_s"] >= record["to_results_s"] > 0
