"""Build a grown flowbook store: a FLOWBOOK_HOME whose store already holds many task runs.

    python grow_store.py [--task-runs 1000000] [--home benchmarks/grown-store]

Users' stores grow: a store that has recorded a million task runs is what a regular user's
``~/.flowbook`` looks like after a few weeks. ``benchmarks/run`` measures flowbook on a copy of
this store. It is built fast, by bulk inserts of realistic rows through the store's own schema
(``flowbook.store.schema``, created and opened by ``flowbook.store.database.connect`` as
flowbook opens it), not by a million flow calls:

- flow runs of 100 task runs each (the last one smaller), all Completed, one in 50 Failed;
- per run (flow and task): its Pending, Running and final states in ``states``;
- one run log line per 10 task runs, one cache entry per 20 task runs, and an edge from each
  task run to the next in its flow run for half of the flow runs (chains);
- times spread over the 7 days before the build (flowbook deletes log lines older than
  ``FLOWBOOK_LOG_RETENTION_DAYS``, 30 by default, when a store opens: a store older than
  ``MAX_AGE_DAYS`` is rebuilt, so that no measured process pays for that deletion).

``manifest.json`` next to the store records what was built (schema version, flow runs, task
runs, states, log lines, cache entries, edges, file size, when, by which flowbook). The store
is reused when the manifest matches the request and this flowbook's schema version; otherwise
(a store built by an older schema, another size, a missing file) it is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_HOME = HERE / "grown-store"
DEFAULT_TASK_RUNS = 1_000_000
TASKS_PER_FLOW = 100
MAX_AGE_DAYS = 20.0
BATCH = 20_000

sys.path.insert(0, str(HERE.parent))  # this repository's flowbook


def _manifest_ok(home: Path, task_runs: int) -> dict[str, Any] | None:
    from flowbook.store import schema

    try:
        manifest: dict[str, Any] = json.loads((home / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    db = home / "flowbook.db"
    if (
        manifest.get("schema_version") != schema.SCHEMA_VERSION
        or manifest.get("task_runs") != task_runs
        or not db.is_file()
        or db.stat().st_size != manifest.get("file_size_bytes")
        or time.time() - float(manifest.get("built_at", 0)) > MAX_AGE_DAYS * 86400
    ):
        return None
    return manifest


def build(home: Path, task_runs: int, *, seed: int = 18) -> dict[str, Any]:
    """Build the store in ``home`` (replacing what is there); its manifest."""
    if task_runs < 1:
        raise ValueError(f"task_runs must be at least 1, not {task_runs!r}")
    import flowbook
    from flowbook.store import schema
    from flowbook.store.database import connect

    t0 = time.perf_counter()
    if home.exists():
        shutil.rmtree(home)
    rng = random.Random(seed)
    now = time.time()
    span = 7 * 86400.0
    engine = connect(f"sqlite:///{home / 'flowbook.db'}", home, home / "results")
    counts = {"flow_runs": 0, "task_runs": 0, "states": 0, "logs": 0, "cache_entries": 0}
    counts["edges"] = 0
    result = pickle.dumps(42)
    flows = ["etl", "train-model", "daily-report", "ingest", "score"]
    tasks = ["extract", "transform", "load", "fetch", "clean", "fit", "evaluate", "save"]
    with engine.begin() as conn:
        fr: list[dict[str, Any]] = []
        tr: list[dict[str, Any]] = []
        st: list[dict[str, Any]] = []
        lg: list[dict[str, Any]] = []
        ce: list[dict[str, Any]] = []
        ed: list[dict[str, Any]] = []

        def flush(final: bool = False) -> None:
            for table, rows in (
                (schema.flow_runs, fr),
                (schema.task_runs, tr),
                (schema.states, st),
                (schema.logs, lg),
                (schema.cache_entries, ce),
                (schema.task_run_edges, ed),
            ):
                if rows and (final or len(rows) >= BATCH):
                    conn.execute(table.insert(), rows)
                    rows.clear()

        left = task_runs
        while left > 0:
            n = min(TASKS_PER_FLOW, left)
            left -= n
            flow_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            flow_name = flows[counts["flow_runs"] % len(flows)]
            start = now - span + span * (task_runs - left - n) / task_runs
            failed = counts["flow_runs"] % 50 == 49
            end = start + 0.002 * n + 0.05
            final = ("FAILED", "Failed") if failed else ("COMPLETED", "Completed")
            flow_key = schema.created_us(start)
            fr.append(
                {
                    "id": flow_id,
                    "name": f"run-{counts['flow_runs']}",
                    "flow_name": flow_name,
                    "flow_version": None,
                    "project": None,
                    "process_id": None,
                    "parent_task_run_id": None,
                    "resumed_from": None,
                    "tags": "[]",
                    "parameters": pickle.dumps({"n": n}),
                    "parameters_preview": json.dumps({"n": str(n)}),
                    "state_type": final[0],
                    "state_name": final[1],
                    "state_message": "1/100 states failed" if failed else "All states completed.",
                    "run_count": 1,
                    "created_at": start,
                    "created_us": flow_key,
                    "start_time": start,
                    "end_time": end,
                }
            )
            for stype, sname, ts in (
                ("PENDING", "Pending", start),
                ("RUNNING", "Running", start),
                (final[0], final[1], end),
            ):
                st.append(
                    {
                        "run_id": flow_id,
                        "run_kind": "flow",
                        "type": stype,
                        "name": sname,
                        "message": None,
                        "timestamp": ts,
                    }
                )
            counts["states"] += 3
            previous = None
            for i in range(n):
                task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                task_name = tasks[i % len(tasks)]
                t_start = start + 0.002 * i
                t_end = t_start + 0.001
                bad = failed and i == n - 1
                t_final = ("FAILED", "Failed") if bad else ("COMPLETED", "Completed")
                key = f"{rng.getrandbits(64):016x}"
                tr.append(
                    {
                        "id": task_id,
                        "flow_run_id": flow_id,
                        "name": f"{task_name}-{i}",
                        "task_name": task_name,
                        "task_key": f"{flow_name}.{task_name}",
                        "dynamic_key": i,
                        "subflow_run_id": None,
                        "tags": "[]",
                        "parameters_preview": json.dumps({"x": str(i)}),
                        "input_hash": key,
                        "cache_key": None,
                        "state_type": t_final[0],
                        "state_name": t_final[1],
                        "state_message": "ValueError: bad input" if bad else None,
                        "run_count": 1,
                        "result": None if bad else result,
                        "result_file": None,
                        "result_checksum": None,
                        "created_at": t_start,
                        "start_time": t_start,
                        "end_time": t_end,
                        "flow_run_created_us": flow_key,
                    }
                )
                for stype, sname, ts in (
                    ("PENDING", "Pending", t_start),
                    ("RUNNING", "Running", t_start),
                    (t_final[0], t_final[1], t_end),
                ):
                    st.append(
                        {
                            "run_id": task_id,
                            "run_kind": "task",
                            "type": stype,
                            "name": sname,
                            "message": None,
                            "timestamp": ts,
                        }
                    )
                counts["states"] += 3
                counts["task_runs"] += 1
                if counts["task_runs"] % 10 == 0:
                    lg.append(
                        {
                            "flow_run_id": flow_id,
                            "task_run_id": task_id,
                            "level": 20,
                            "logger": "flowbook.task_runs",
                            "message": f"processed {i * 37 % 1000} rows",
                            "timestamp": t_start,
                            "flow_run_created_us": flow_key,
                        }
                    )
                    counts["logs"] += 1
                if counts["task_runs"] % 20 == 0:
                    ce.append(
                        {
                            "task_key": f"{flow_name}.{task_name}",
                            "key": key,
                            "task_name": task_name,
                            "flow_name": flow_name,
                            "value": result,
                            "result_file": None,
                            "size": len(result),
                            "created": t_end,
                            "expires": None,
                            "hits": 0,
                            "input_preview": json.dumps({"x": str(i)}),
                            "key_parts": None,
                            "checksum": None,
                        }
                    )
                    counts["cache_entries"] += 1
                if previous is not None and counts["flow_runs"] % 2 == 0:
                    ed.append({"upstream_id": previous, "downstream_id": task_id})
                    counts["edges"] += 1
                previous = task_id
            counts["flow_runs"] += 1
            flush()
        flush(final=True)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    db = home / "flowbook.db"
    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        **counts,
        "file_size_bytes": db.stat().st_size,
        "built_at": now,
        "build_s": round(time.perf_counter() - t0, 1),
        "flowbook": flowbook.__version__,
        "seed": seed,
    }
    (home / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def ensure(home: Path, task_runs: int) -> dict[str, Any]:
    """The manifest of a store of ``task_runs`` in ``home``: reused if current, else built."""
    return _manifest_ok(home, task_runs) or build(home, task_runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task-runs", type=int, default=DEFAULT_TASK_RUNS)
    p.add_argument("--home", type=Path, default=DEFAULT_HOME)
    p.add_argument("--rebuild", action="store_true", help="build even if the store is current")
    a = p.parse_args(argv)
    if a.task_runs < 1:
        p.error(f"--task-runs must be at least 1, not {a.task_runs}")
    os.environ.pop("FLOWBOOK_DATABASE_URL", None)
    reused = not a.rebuild and _manifest_ok(a.home, a.task_runs)
    manifest = reused or build(a.home, a.task_runs)
    what = "reused" if reused else "built"
    print(
        f"grow_store: {what} {a.home}: {manifest['task_runs']:,} task runs in "
        f"{manifest['flow_runs']:,} flow runs, {manifest['file_size_bytes'] / 1e6:.0f} MB",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
