"""Run one workload against one engine and print one JSON line.

  python run.py --engine prefect|plain|<module or path/to/adapter.py> --workload NAME [--repeat N]

wall_s is measured around the workload call only, after import and engine.warmup()
(both reported separately). --repeat N runs N fresh processes and reports the median.
Workloads with phases (cache_hit_1000: cold, warm) run each phase in a new process.
"""

import argparse
import importlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
ENGINES = {"prefect": "adapter_prefect", "plain": "adapter_plain"}


def load_engine(name):
    if name.endswith(".py"):
        spec = importlib.util.spec_from_file_location("bench_adapter", name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(ENGINES.get(name, name))


def descendants_hwm_mb():
    """Sum of peak RSS (VmHWM) of this process's live descendants, e.g. a server subprocess."""
    children, total = {}, 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    stack = list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))  # noqa: E741
        except (OSError, StopIteration):
            pass
    return round(total / 1024, 1)


def run_here(engine_name, workload):
    t0 = time.perf_counter()
    engine = load_engine(engine_name)
    import_s = time.perf_counter() - t0
    import workloads

    fn = getattr(workloads, "wl_" + workload)
    t0 = time.perf_counter()
    getattr(engine, "warmup", lambda: None)()
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    extra = fn(engine) or {}
    wall = extra.pop("wall_s", time.perf_counter() - t0)
    out = {
        "engine": getattr(engine, "VERSION", engine_name),
        "workload": workload,
        "wall_s": round(wall, 4),
        "import_s": round(import_s, 3),
        "warmup_s": round(warmup_s, 3),
        "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "live_children_peak_mb": descendants_hwm_mb(),
        "reaped_children_peak_mb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
    }
    if "n" in extra:
        out["per_unit_ms"] = round(1000 * wall / extra["n"], 3)
    out.update(extra)
    # the engine's own settings variables, when its adapter names them (adapter_flowbook)
    if hasattr(engine, "SETTINGS_ENV"):
        out["settings_env"] = engine.SETTINGS_ENV
    return out


def run_child(engine_name, workload, env=None):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--engine",
        engine_name,
        "--workload",
        workload,
        "--here",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child failed: {workload} on {engine_name} (rc={proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(runs):
    walls = [r["wall_s"] for r in runs]
    return {
        **runs[0],
        "wall_s": statistics.median(walls),
        "wall_min_s": min(walls),
        "wall_max_s": max(walls),
        "repeats": len(runs),
        "rss_peak_mb": max(r["rss_peak_mb"] for r in runs),
        "walls": walls,
    }


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--engine", required=True)
    p.add_argument("--workload", required=True)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument(
        "--here", action="store_true", help="run in this process (no phases, no repeats)"
    )
    a = p.parse_args()
    import workloads

    phases = getattr(getattr(workloads, "wl_" + a.workload), "phases", None)
    if a.here or (a.repeat == 1 and not phases):
        print(json.dumps(run_here(a.engine, a.workload)))
    elif phases:
        per_phase = {ph: [] for ph in phases}
        for _ in range(a.repeat):
            env = {"BENCH_SALT": uuid.uuid4().hex}
            for ph in phases:
                per_phase[ph].append(run_child(a.engine, a.workload, env))
        print(
            json.dumps(
                {
                    "workload": a.workload,
                    "phases": {ph: summarize(r) for ph, r in per_phase.items()},
                }
            )
        )
    else:
        print(json.dumps(summarize([run_child(a.engine, a.workload) for _ in range(a.repeat)])))


if __name__ == "__main__":
    main()
