"""Where a task run's time goes: flowbook's per-task cost, layer by layer.

    python breakdown.py [--repeat 5] [--out out/breakdown.json]

Runs two shapes, each in fresh processes, with flowbook's layers switched on one at a time:

- ``seq``: 1,000 task calls in sequence in one flow (the caller's thread does everything);
- ``map``: a ``.map`` over 10,000 inputs on the default thread pool.

Layers (each row adds one to the row above):

1. ``engine``: the run store off (``FLOWBOOK_STORE=off``), the console off, no event
   subscriber, so the engine does not even build its events; the collector freeze off.
2. ``+ events``: one subscriber that takes every event and does nothing with it: the cost of
   building and delivering the events (states, task runs created, logs).
3. ``+ store``: the run store on (SQLite in a temporary home), the console still off. The
   store's cost is split in two: the time the flow body takes longer (putting events on the
   writer's queue, and the garbage collector walking what the queue holds) and the time the
   flow's end waits for its rows to be committed (``barrier``); the writer thread's CPU time
   for the run's batches is reported beside it.
4. ``+ gc freeze``: the default ``FLOWBOOK_GC_FREEZE=on`` (see flowbook/engine/heap.py).
5. ``+ hashing``: the same task with ``cache_key_fn=task_input_hash``, every call a cache
   miss (new inputs each run): hashing the inputs and writing each result as a cache entry.

Plus, measured apart: ``task_input_hash`` alone on one integer argument, and the garbage
collector's time during the run (``gc.callbacks``). The run widget's cost is measured in a
real kernel by widget.py (its ratio is in RESULTS.md); it is not repeated here.

Each process times the second of two identical flow calls (the first warms up imports and
the store). Medians over ``--repeat`` processes, configurations alternating.
Prints a table and writes one JSON object.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

LAYERS = ("engine", "events", "store", "gc_freeze", "hashing")
SHAPES = {"seq": 1_000, "map": 10_000}

_CHILD = r"""
import gc, json, os, sys, threading, time
layer, shape, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
from flowbook import flow, task
from flowbook.engine.events import bus, FlowRunCreated, FlowRunFinished, LogEmitted, StateChanged, TaskRunCreated
from flowbook.tasks import task_input_hash

if layer != "engine":
    bus.subscribe((FlowRunCreated, FlowRunFinished, LogEmitted, StateChanged, TaskRunCreated), lambda e: None)

facts = {"gc_s": 0.0, "barrier_s": 0.0, "writer_cpu_s": 0.0}
started = {}
def on_gc(phase, info):
    if phase == "start":
        started["gc"] = time.perf_counter()
    else:
        facts["gc_s"] += time.perf_counter() - started["gc"]
gc.callbacks.append(on_gc)

if layer in ("store", "gc_freeze", "hashing"):
    from flowbook.store import writer as W
    write_batch, barrier = W.StoreWriter._write_batch, W.StoreWriter.barrier
    def timed_batch(self, batch):
        t = time.thread_time(); write_batch(self, batch)
        facts["writer_cpu_s"] += time.thread_time() - t
    def timed_barrier(self, flow_run, timeout=60.0):
        t = time.perf_counter(); barrier(self, flow_run, timeout)
        facts["barrier_s"] += time.perf_counter() - t
    W.StoreWriter._write_batch, W.StoreWriter.barrier = timed_batch, timed_barrier

def inc(x):
    return x + 1
kw = {"cache_key_fn": task_input_hash} if layer == "hashing" else {}
t = task(inc, name="inc", **kw)
offset = [0]

@flow
def seq(n):
    base = offset[0]
    return [t(base + i) for i in range(n)]

@flow
def mapped(n):
    base = offset[0]
    return t.map(range(base, base + n)).result()

body = seq if shape == "seq" else mapped
body(n)
offset[0] = 10 * n  # new inputs: with hashing, every call of the timed run is a miss
for k in facts:
    facts[k] = 0.0
t0 = time.perf_counter()
out = body(n)
wall = time.perf_counter() - t0
assert out == list(range(offset[0] + 1, offset[0] + n + 1))
facts["wall_s"] = wall
if layer == "engine":
    # task_input_hash alone, on the arguments one call gets
    from flowbook.caching.keys import CacheKeyContext
    context = CacheKeyContext(t, None, None)
    reps = 20000
    t0 = time.perf_counter()
    for i in range(reps):
        task_input_hash(context, {"x": i})
    facts["hash_call_s"] = (time.perf_counter() - t0) / reps
print(json.dumps(facts))
"""


def child_env(layer, home):
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["FLOWBOOK_HOME"] = home
    env["FLOWBOOK_LOGGING_LEVEL"] = "WARNING"
    env["FLOWBOOK_CONSOLE"] = "off"
    env["FLOWBOOK_STORE"] = "off" if layer in ("engine", "events") else "on"
    env["FLOWBOOK_GC_FREEZE"] = "on" if layer in ("gc_freeze", "hashing") else "off"
    root = os.path.dirname(HERE)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def measure(layer, shape, python):
    with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as home:
        proc = subprocess.run(
            [python, "-c", _CHILD, layer, shape, str(SHAPES[shape])],
            env=child_env(layer, home),
            capture_output=True,
            text=True,
            timeout=600,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"breakdown layer {layer!r}, shape {shape!r} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--shapes", default="seq map", help='"seq map" (default), or one of them')
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--out", default=os.path.join(HERE, "out", "breakdown.json"))
    a = p.parse_args(argv)
    if a.repeat < 1:
        p.error(f"--repeat {a.repeat}: give a positive number of processes per configuration")
    shapes = a.shapes.split()
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        p.error(f"--shapes {a.shapes!r}: choose from {', '.join(SHAPES)}")

    runs = {(s, layer): [] for s in shapes for layer in LAYERS}
    for r in range(a.repeat):
        for s in shapes:
            for layer in LAYERS:
                print(f"== breakdown {s} {layer} run {r + 1}", file=sys.stderr)
                runs[(s, layer)].append(measure(layer, s, a.python))

    result = {
        "repeat": a.repeat,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "shapes": {},
    }
    for s in shapes:
        n = SHAPES[s]
        rows = {}
        for layer in LAYERS:
            facts = runs[(s, layer)]
            rows[layer] = {
                key: statistics.median(f[key] for f in facts)
                for key in facts[0]
                if isinstance(facts[0][key], float)
            }
        per_task = {layer: rows[layer]["wall_s"] / n * 1e6 for layer in LAYERS}
        result["shapes"][s] = {"tasks": n, "medians": rows, "us_per_task": per_task}
    result["task_input_hash_us"] = (
        statistics.median(f["hash_call_s"] for f in runs[(shapes[0], "engine")]) * 1e6
    )

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(render(result))


def render(result):
    """The breakdown as Markdown (also used by report.py)."""
    lines = [
        "| layer | " + " | ".join(f"{s}: µs per task (added)" for s in result["shapes"]) + " |",
        "|---|" + "---|" * len(result["shapes"]),
    ]
    names = {
        "engine": "engine alone (no events, no store)",
        "events": "+ events built and delivered",
        "store": "+ run store (SQLite)",
        "gc_freeze": "+ collector freeze during runs (default)",
        "hashing": "+ `task_input_hash` cache key, all misses",
    }
    for i, layer in enumerate(LAYERS):
        cells = []
        for s, shape in result["shapes"].items():
            us = shape["us_per_task"][layer]
            if i == 0:
                cells.append(f"{us:.1f}")
            else:
                added = us - shape["us_per_task"][LAYERS[i - 1]]
                cells.append(f"{us:.1f} ({added:+.1f})")
        lines.append(f"| {names[layer]} | " + " | ".join(cells) + " |")
    extra = []
    for s, shape in result["shapes"].items():
        m = shape["medians"]["store"]
        n = shape["tasks"]
        extra.append(
            f"{s} with the store on (row 3): the flow's end waits {m['barrier_s'] / n * 1e6:.1f} µs "
            f"per task for its rows; the writer thread uses {m['writer_cpu_s'] / n * 1e6:.1f} µs "
            f"of CPU per task; the garbage collector runs {m['gc_s'] / n * 1e6:.1f} µs per task "
            f"(with the freeze, row 4: {shape['medians']['gc_freeze']['gc_s'] / n * 1e6:.1f})"
        )
    extra.append(
        f"`task_input_hash` alone, one integer argument: {result['task_input_hash_us']:.1f} µs"
    )
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {e}" for e in extra) + "\n"


if __name__ == "__main__":
    main()
