"""Where a task run's time goes: flowbook's per-task cost, layer by layer.

    python breakdown.py [--repeat 5] [--out out/breakdown.json]
                        [--settings defaults --grown-store DIR]

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
5. ``+ INFO logging``, only at the fresh-home settings (``--settings fresh``): the rows above
   at WARNING, this one at INFO with the console still off, so that the console row is
   compared with a row at its own level (the log records INFO creates are not the console's).
6. ``+ console``: the default ``FLOWBOOK_CONSOLE=auto`` at INFO, the process's stderr appended
   to a file (as ``python script.py 2>>run.log``): every run line formatted and written. The
   console lines of the timed flow call are counted (the lines in the console's format written
   between two marks the process puts on stderr around that call; the flow call writes all its
   lines before it returns), and the time this row adds to the row above (at the same level),
   divided by them, is the console's cost per line on the flow's own threads (issue 18's
   target: at most 5 µs per run line).
7. ``+ hashing``: the same task with ``cache_key_fn=task_input_hash``, every call a cache
   miss (new inputs each run): hashing the inputs and writing each result as a cache entry.

Settings (``--settings``, recorded in the JSON): ``fresh`` (the default here) runs the rows up
to the collector freeze at WARNING and the rows from ``+ INFO logging`` on at INFO (or the
console would print nothing), each with a temporary, empty ``FLOWBOOK_HOME``; ``defaults`` runs every row at flowbook's default level (INFO), and the rows
with the store on each on a fresh copy of ``--grown-store`` (benchmarks/grown-store, copied
and synced before the process starts, untimed). ``benchmarks/run`` passes ``defaults`` when it
measures at the defaults.

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
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _settings  # noqa: E402

LAYERS = ("engine", "events", "store", "gc_freeze", "info", "console", "hashing")
CONSOLE_TARGET_US = 5.0  # issue 18: at most 5 µs per run line on the task's thread
STORE_LAYERS = ("store", "gc_freeze", "info", "console", "hashing")
FREEZE_LAYERS = ("gc_freeze", "info", "console", "hashing")
INFO_LAYERS = ("info", "console", "hashing")  # at INFO with the fresh-home settings too
CONSOLE_LAYERS = ("console", "hashing")
SHAPES = {"seq": 1_000, "map": 10_000}
# the child's marks on stderr around the timed flow call, and a console line (console._format)
MARK_START, MARK_END = "@@breakdown: timed call starts@@", "@@breakdown: timed call ended@@"
CONSOLE_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} \| [A-Z]+ *\| .* - ")


def layers_of(settings):
    """The rows measured at SETTINGS: the INFO row only where the rows above are at WARNING."""
    return tuple(layer for layer in LAYERS if layer != "info" or settings == "fresh")


_CHILD = r"""
import gc, json, os, sys, threading, time
layer, shape, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
MARK_START, MARK_END = sys.argv[4], sys.argv[5]
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

if layer in ("store", "gc_freeze", "info", "console", "hashing"):
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
sys.stderr.write(MARK_START + "\n"); sys.stderr.flush()
t0 = time.perf_counter()
out = body(n)
wall = time.perf_counter() - t0
sys.stderr.write(MARK_END + "\n"); sys.stderr.flush()
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


def child_env(layer, home, settings="fresh"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["FLOWBOOK_HOME"] = home
    if settings == "fresh":
        # at WARNING the console prints no run line: its rows (and the one it is compared
        # with) run at INFO
        env["FLOWBOOK_LOGGING_LEVEL"] = "INFO" if layer in INFO_LAYERS else "WARNING"
    if layer not in CONSOLE_LAYERS:
        env["FLOWBOOK_CONSOLE"] = "off"
    env["FLOWBOOK_STORE"] = "on" if layer in STORE_LAYERS else "off"
    env["FLOWBOOK_GC_FREEZE"] = "on" if layer in FREEZE_LAYERS else "off"
    root = os.path.dirname(HERE)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def measure(layer, shape, python, settings="fresh", grown_store=None):
    with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as tmp:
        home = os.path.join(tmp, "home")
        if settings == "defaults" and layer in STORE_LAYERS:
            _settings.copy_grown(grown_store, home)
        console = os.path.join(tmp, "stderr.log")
        with open(console, "a") as err:  # stderr to a file, as `2>>run.log`
            proc = subprocess.run(
                [python, "-c", _CHILD, layer, shape, str(SHAPES[shape]), MARK_START, MARK_END],
                env=child_env(layer, home, settings),
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                timeout=600,
            )
        with open(console, errors="replace") as f:
            lines = f.read().splitlines()
    if proc.returncode != 0:
        tail = "\n".join(lines[-40:])
        raise RuntimeError(f"breakdown layer {layer!r}, shape {shape!r} failed:\n{tail}")
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    facts["console_lines"] = float(timed_console_lines(lines))
    return facts


def timed_console_lines(lines):
    """The console lines among LINES (a process's stderr) written during the timed call."""
    if lines.count(MARK_START) != 1 or lines.count(MARK_END) != 1:
        raise RuntimeError("breakdown: the timed call's marks are missing from stderr")
    start, end = lines.index(MARK_START), lines.index(MARK_END)
    return sum(1 for line in lines[start + 1 : end] if CONSOLE_LINE.match(line))


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--shapes", default="seq map", help='"seq map" (default), or one of them')
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--out", default=os.path.join(HERE, "out", "breakdown.json"))
    p.add_argument("--settings", choices=_settings.CHOICES, default="fresh")
    p.add_argument("--grown-store", help="with --settings defaults: the store to copy")
    a = p.parse_args(argv)
    if a.settings == "defaults" and not a.grown_store:
        p.error("--settings defaults needs --grown-store (benchmarks/grown-store)")
    if a.repeat < 1:
        p.error(f"--repeat {a.repeat}: give a positive number of processes per configuration")
    shapes = a.shapes.split()
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        p.error(f"--shapes {a.shapes!r}: choose from {', '.join(SHAPES)}")

    layers = layers_of(a.settings)
    runs = {(s, layer): [] for s in shapes for layer in layers}
    for r in range(a.repeat):
        for s in shapes:
            for layer in layers:
                print(f"== breakdown {s} {layer} run {r + 1}", file=sys.stderr)
                runs[(s, layer)].append(measure(layer, s, a.python, a.settings, a.grown_store))

    result = {
        "settings": _settings.describe(a.settings, a.grown_store),
        "repeat": a.repeat,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "shapes": {},
    }
    for s in shapes:
        n = SHAPES[s]
        rows = {}
        for layer in layers:
            facts = runs[(s, layer)]
            rows[layer] = {
                key: statistics.median(f[key] for f in facts)
                for key in facts[0]
                if isinstance(facts[0][key], float)
            }
        per_task = {layer: rows[layer]["wall_s"] / n * 1e6 for layer in layers}
        lines = statistics.median(f["console_lines"] for f in runs[(s, "console")])
        # the row above the console's, at the same level (INFO)
        base = layers[layers.index("console") - 1]
        added = rows["console"]["wall_s"] - rows[base]["wall_s"]
        console = {
            "lines_per_run": lines,
            "compared_with": base,
            "added_s": added,
            "us_per_line": added / lines * 1e6 if lines else None,
        }
        result["shapes"][s] = {
            "tasks": n,
            "medians": rows,
            "us_per_task": per_task,
            "console": console,
        }
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
        "info": "+ logging at INFO (console off)",
        "console": "+ console at INFO, stderr to a file (default)",
        "hashing": "+ `task_input_hash` cache key, all misses",
    }
    layers = [
        layer
        for layer in LAYERS
        if all(layer in sh["us_per_task"] for sh in result["shapes"].values())
    ]
    for i, layer in enumerate(layers):
        cells = []
        for s, shape in result["shapes"].items():
            us = shape["us_per_task"][layer]
            if i == 0:
                cells.append(f"{us:.1f}")
            else:
                added = us - shape["us_per_task"][layers[i - 1]]
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
    for s, shape in result["shapes"].items():
        c = shape.get("console")
        if c is None:
            continue
        if c["us_per_line"] is None:
            extra.append(f"{s}, console row: no console line was written in the timed call")
            continue
        met = "met" if c["us_per_line"] <= CONSOLE_TARGET_US else "**not met**"
        if "compared_with" in c or (result.get("settings") or {}).get("name") == "defaults":
            at_level = " to the row above, at the same level (INFO)"
        else:  # measured before the INFO row: the row above ran at WARNING
            at_level = " to the row above at WARNING (so with INFO's log records)"
        if c["added_s"] < 0:
            met += "; no cost measurable: the row is faster than the one above, within the noise"
        extra.append(
            f"{s}, console row: {c['lines_per_run']:,.0f} console lines in the timed call, "
            f"{c['added_s'] * 1000:.1f} ms added{at_level}: "
            f"**{c['us_per_line']:.1f} µs per console line** "
            f"on the flow's threads (issue 18: ≤ {CONSOLE_TARGET_US:g} µs; {met})"
        )
    extra.append(
        f"`task_input_hash` alone, one integer argument: {result['task_input_hash_us']:.1f} µs"
    )
    if result.get("settings"):
        text = result["settings"]["text"]
        if "info" in layers:
            text += " (the rows from logging at INFO on: INFO)"
        extra.append(f"Settings: {text}")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {e}" for e in extra) + "\n"


if __name__ == "__main__":
    main()
