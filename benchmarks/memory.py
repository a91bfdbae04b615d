"""Memory over many task runs in one process (SPEC: bounded, no growth across repeated runs).

    python memory.py [--runs 30] [--tasks 10000] [--out out/memory.json]
                     [--settings defaults --grown-store DIR [--console-log FILE]]

Runs one flow that maps a task over ``--tasks`` inputs, ``--runs`` times in one process with
the run store on (300,000 task runs by default), and records the resident memory after each
run. Prints and writes one JSON object: RSS per run (MB), the wall time per run, and the
growth between the peaks of the middle third and the last third of the runs (the first runs
fill caches and pools; RSS goes up and down as memory is freed and reused, so peaks are
compared, not single runs).

Settings (``--settings``, recorded in the JSON as ``settings``): ``fresh`` (the default here)
runs at WARNING with a fresh temporary ``FLOWBOOK_HOME``; ``defaults`` runs as a user's script
does, at INFO with the console printing every run line to stderr, appended to
``--console-log`` (default: out/memory.console.log), on a fresh copy of ``--grown-store``
(benchmarks/grown-store; ``benchmarks/run`` passes these when it measures at the defaults).
"""

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _settings  # noqa: E402


def rss_mb():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def thirds(rss):
    """(peak of the middle third, peak of the last third, growth) of a list of RSS figures."""
    third = max(1, len(rss) // 3)
    middle, last = rss[third : 2 * third] or rss, rss[2 * third :] or rss
    return max(middle), max(last), round(max(last) - max(middle), 1)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--out", default=os.path.join(HERE, "out", "memory.json"))
    p.add_argument("--settings", choices=_settings.CHOICES, default="fresh")
    p.add_argument("--grown-store", help="with --settings defaults: the store to copy")
    p.add_argument("--console-log", default=os.path.join(HERE, "out", "memory.console.log"))
    a = p.parse_args()
    if a.settings == "defaults" and not a.grown_store:
        p.error("--settings defaults needs --grown-store (benchmarks/grown-store)")
    settings = _settings.describe(a.settings, a.grown_store)
    os.environ["BENCH_SETTINGS"] = a.settings
    if a.settings == "defaults":
        home = tempfile.mkdtemp(prefix="bench-flowbook-memory-")
        os.environ["FLOWBOOK_HOME"] = _settings.copy_grown(a.grown_store, home)
        os.makedirs(os.path.dirname(os.path.abspath(a.console_log)), exist_ok=True)
        os.environ["BENCH_CONSOLE_LOG"] = a.console_log
    else:
        home = tempfile.mkdtemp(prefix="bench-flowbook-memory-")
        os.environ.setdefault("FLOWBOOK_HOME", home)
    try:
        run(a, settings)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(a, settings):
    import adapter_flowbook as e  # the settings above, like every other workload

    t = e.task(lambda x: x + 1)

    @e.flow
    def mapped(n):
        return t.map(range(n)).result()

    rss, walls = [], []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        assert mapped(a.tasks)[-1] == a.tasks
        walls.append(round(time.perf_counter() - t0, 3))
        gc.collect()
        rss.append(round(rss_mb(), 1))
    middle, last, growth = thirds(rss)
    out = {
        "engine": e.VERSION,
        "settings": settings,
        "runs": a.runs,
        "tasks_per_run": a.tasks,
        "task_runs": a.runs * a.tasks,
        "rss_mb": rss,
        "wall_s": walls,
        "peak_middle_third_mb": middle,
        "peak_last_third_mb": last,
        "growth_mb": growth,
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
