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


def test_the_per_task_breakdown_measures_every_layer(tmp_path: Path) -> None:
    out = tmp_path / "breakdown.json"
    command = [sys.executable, str(BENCH / "breakdown.py"), "--repeat", "1", "--shapes", "seq"]
    proc = subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    seq = result["shapes"]["seq"]
    assert seq["tasks"] == 1000
    assert set(seq["us_per_task"]) == {"engine", "events", "store", "gc_freeze", "hashing"}
    assert all(us > 0 for us in seq["us_per_task"].values())
    # only the layers with the store on wait for it and have a writer
    assert seq["medians"]["engine"]["barrier_s"] == 0
    assert seq["medians"]["store"]["barrier_s"] > 0
    assert seq["medians"]["store"]["writer_cpu_s"] > 0
    assert result["task_input_hash_us"] > 0
    assert "| engine alone (no events, no store) |" in proc.stdout
    bad = subprocess.run(
        [sys.executable, str(BENCH / "breakdown.py"), "--shapes", "grid"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "--shapes 'grid': choose from seq, map" in bad.stderr


def test_profile_records_a_workload_and_refuses_unknown_ones() -> None:
    script = BENCH / "profile"
    bad = subprocess.run([str(script), "no_such_workload"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "unknown workload 'no_such_workload'; one of:" in bad.stderr
    assert "seq_1000" in bad.stderr
    proc = subprocess.run(
        [str(script), "seq_1000", "--times", "3"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stacks = (BENCH / "out" / "profile-seq_1000.txt").read_text()
    assert "wl_seq_1000" in stacks
    assert "-- own time" in proc.stdout
