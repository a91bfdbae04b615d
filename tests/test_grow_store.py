"""benchmarks/grow_store.py builds a store flowbook opens, with a manifest of what is in it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).parent.parent / "benchmarks"
ROOT = BENCH.parent


def grow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / "grow_store.py"), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def flowbook_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env["FLOWBOOK_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "flowbook.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def manifest(home: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / "manifest.json").read_text())
    return data


def test_a_tiny_grown_store_opens_lists_and_matches_its_manifest(tmp_path: Path) -> None:
    home = tmp_path / "grown"
    proc = grow(home, "--task-runs", "1050")
    assert proc.returncode == 0, proc.stderr
    assert "built" in proc.stderr
    m = manifest(home)
    from flowbook.store.schema import SCHEMA_VERSION

    assert m["schema_version"] == SCHEMA_VERSION
    assert (m["task_runs"], m["flow_runs"]) == (1050, 11)  # 10 x 100, then 50
    assert m["file_size_bytes"] == (home / "flowbook.db").stat().st_size
    with sqlite3.connect(home / "flowbook.db") as db:
        counted = {
            name: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for name, table in (
                ("flow_runs", "flow_runs"),
                ("task_runs", "task_runs"),
                ("states", "states"),
                ("logs", "logs"),
                ("cache_entries", "cache_entries"),
                ("edges", "task_run_edges"),
            )
        }
    assert counted == {k: m[k] for k in counted}
    assert m["states"] == 3 * (1050 + 11)
    assert m["logs"] == 105
    assert m["cache_entries"] == 52

    listed = flowbook_cli(home, "runs", "--json", "--limit", "100")
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert len(runs) == 11
    assert sorted(r["task_runs"] for r in runs) == [50] + [100] * 10
    assert {r["state"] for r in runs} == {"Completed"}
    doctor = flowbook_cli(home, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "integrity:  ok" in doctor.stdout


def test_a_current_store_is_reused_and_an_older_schema_rebuilt(tmp_path: Path) -> None:
    home = tmp_path / "grown"
    assert grow(home, "--task-runs", "200").returncode == 0
    built_at = manifest(home)["built_at"]

    again = grow(home, "--task-runs", "200")
    assert again.returncode == 0
    assert "reused" in again.stderr
    assert manifest(home)["built_at"] == built_at

    # a store recorded as built by an older schema version is not trusted: it is rebuilt
    m = manifest(home)
    m["schema_version"] -= 1
    (home / "manifest.json").write_text(json.dumps(m))
    rebuilt = grow(home, "--task-runs", "200")
    assert rebuilt.returncode == 0
    assert "built" in rebuilt.stderr
    assert manifest(home)["schema_version"] == m["schema_version"] + 1

    # another size is another store
    bigger = grow(home, "--task-runs", "300")
    assert bigger.returncode == 0
    assert "built" in bigger.stderr
    assert manifest(home)["task_runs"] == 300


def test_a_bad_size_is_refused_naming_it(tmp_path: Path) -> None:
    proc = grow(tmp_path / "grown", "--task-runs", "0")
    assert proc.returncode == 2
    assert "--task-runs must be at least 1, not 0" in proc.stderr
    assert not (tmp_path / "grown").exists()


def run_seq_1000(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWBOOK_", "BENCH_"))}
    clean["PYTHONPATH"] = str(ROOT) + os.pathsep + clean.get("PYTHONPATH", "")
    return subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--engine",
            str(BENCH / "adapter_flowbook.py"),
            "--workload",
            "seq_1000",
            "--here",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
        cwd=BENCH,
    )


def test_at_the_defaults_the_console_lines_go_to_the_given_file(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    home = tmp_path / "home"
    grown = grow(home, "--task-runs", "100")
    assert grown.returncode == 0, grown.stderr
    proc = run_seq_1000(
        {"BENCH_SETTINGS": "defaults", "BENCH_CONSOLE_LOG": str(log), "FLOWBOOK_HOME": str(home)}
    )
    assert proc.returncode == 0, log.read_text() if log.exists() else proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["workload"] == "seq_1000"
    lines = log.read_text().splitlines()
    # INFO: a line per finished task run, 1,000 of them, plus the flow runs' lines
    assert sum("| INFO    | Task run" in line for line in lines) == 1000
    assert proc.stderr == ""
    with sqlite3.connect(home / "flowbook.db") as db:
        assert db.execute("SELECT count(*) FROM task_runs").fetchone()[0] == 1100


def test_an_unknown_setting_is_refused_naming_it() -> None:
    proc = run_seq_1000({"BENCH_SETTINGS": "fastest"})
    assert proc.returncode != 0
    assert "BENCH_SETTINGS='fastest'" in proc.stderr
