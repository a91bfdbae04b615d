"""Many task runs in one Jupyter kernel with the run widget on (SPEC: memory, 100,000 task runs
in one kernel: bounded, no growth across repeated runs).

    python kernel_scale.py [--tasks 100000] [--runs 20] [--run-tasks 10000] [--big-first]
                           [--home DIR] [--level LEVEL] [--out out/kernel_scale.json]

    python kernel_scale.py --tasks 1000000 --runs 0 --home /tmp/copy-of-grown-store
                                            (issue 18: a 1,000,000-task map, about 3 minutes)

Starts one Jupyter kernel of this interpreter with ``%load_ext flowbook`` (the run widget is on,
the default) and a temporary ``FLOWBOOK_HOME``, warms it up with a 100-task flow, then, each
flow called at the top level of its own cell as a user would:

- repeated runs: a flow mapping a no-op task over ``--run-tasks`` inputs (10,000), ``--runs``
  times (20); the kernel's resident memory (``VmRSS`` in ``/proc/PID/status``) after each run;
- the big run: one flow mapping the task over ``--tasks`` inputs (100,000); whether it
  completed (final state Completed and every result back, in order), the kernel's RSS before
  and after it.

After the big run (and once the store's writer has written what it was given: its time is
``writer_flush_s``), the widget of the big run's cell is closed as a user closes it
(``widget.close()`` on the run's widget, the kernel side of clearing it away: a front end that
clears a cell's output keeps the widget's model in the kernel), and the kernel's RSS is read
again (``rss_after_close_mb``). The big run's target (issue 18, at 1,000,000 tasks): it
completed, its widget sent at most 10 updates in any second, the kernel's peak RSS stayed
under ``--peak-limit-mb`` (600) and its RSS after the close is within ``--close-limit-mb`` (50)
of its RSS before the run (``big_met``).

The kernel runs with ``FLOWBOOK_HOME`` a temporary directory, or ``--home`` (a copy of
benchmarks/grown-store: never the original, it is written to), and flowbook's default
logging level (INFO) unless ``--level`` names one.

For every run: the call's wall time (timed inside the kernel) and the kernel's peak RSS during
its cell (``VmHWM``, reset through ``/proc/PID/clear_refs`` just before the cell; if the reset is
refused, the peak since the kernel started). Before every RSS reading the cell drops its
references to the run and calls ``gc.collect()`` in the kernel, and records
``sys.getallocatedblocks()`` (Python's live small-object blocks, which, unlike RSS, do not hide
growth in memory that earlier runs freed).

The repeated runs come first: a big run before them leaves a heap of freed memory that later
runs reuse, so their RSS would stay flat even while they keep memory (``--big-first`` runs the
big run first, to see that). Memory is flat when the peak RSS after the runs of the last third
is at most ``--growth-limit-mb`` (5 MB) above that of the middle third, as memory.py compares
them (the first runs fill caches and pools, and RSS moves up and down as memory is freed and
reused, so peaks are compared, not single runs). The target is met when the big run completed,
every repeated run completed and memory is flat (with ``--runs 0``: the big run's target).

Each run's widget update messages on IOPub are counted (as widget.py does) with their size: the
widget must stay bounded by time, not by the number of tasks. A watchdog stops the measurement
if the kernel's RSS passes ``--max-rss-mb``; a run that does not finish in ``--timeout`` seconds
stops it too. Prints and writes one JSON object (with ``error`` set, and exit status 1, when
the measurement stopped early).
"""

import argparse
import datetime
import json
import os
import sys

from _kernel import execute, kernel, widget_messages, widget_model
from memory import thirds

HERE = os.path.dirname(os.path.abspath(__file__))
GROWTH_LIMIT_MB = 5.0

SETUP = """
%load_ext flowbook
import gc, json, os, sys, time
import flowbook
from flowbook import flow, task

@task
def noop(x):
    return x

@flow
def mapped(n):
    return noop.map(range(n)).result()

def bench_check(state, n, wall):
    value = state.result(raise_on_failure=False)
    completed = state.is_completed() and value == list(range(n))
    return {
        "wall_s": round(wall, 3),
        "state": state.name,
        "results": len(value) if isinstance(value, list) else None,
        "completed": completed,
        "error": None if state.is_completed() else repr(value)[:300],
    }

mapped(100)  # warm up: imports, the store, the widget module
collected = gc.collect()
print(json.dumps({
    "pid": os.getpid(),
    "engine": "flowbook " + flowbook.__version__,
    "py_blocks": sys.getallocatedblocks(),
}))
"""

# one run, called at the top level of a cell; the references to it go before gc.collect()
RUN = """
t0 = time.perf_counter()
state = mapped({n}, return_state=True)
wall = time.perf_counter() - t0
figures = bench_check(state, {n}, wall)
del state
collected = gc.collect()
figures["py_blocks"] = sys.getallocatedblocks()
print(json.dumps(figures))
"""


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_mb(pid):
    """The process's current and peak resident memory (MB), from /proc/PID/status."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB
    return {"rss_mb": round(values["VmRSS"], 1), "peak_mb": round(values["VmHWM"], 1)}


def reset_peak(pid):
    """Reset the process's peak RSS (VmHWM) to its current RSS; False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# the run's widget closed as a user closes it; model_id is the widget the run's cell displayed.
# The store's writer is waited for first (how long it took is reported): while it still has
# the run's events queued, they keep the run's records alive, whatever the widget does.
CLOSE = """
import warnings
from ipywidgets import Widget
from flowbook.store import get_store
store = get_store(open_if_needed=False)
t0 = time.perf_counter()
flushed = store.writer.flush(600) if store is not None else True
flush_s = time.perf_counter() - t0
del store
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # Widget.widgets: ipywidgets 8
    open_widgets = Widget.widgets
open_widgets[{model_id!r}].close()
collected = gc.collect()
print(json.dumps({{
    "py_blocks": sys.getallocatedblocks(),
    "open_widgets": len(open_widgets),
    "writer_flush_s": round(flush_s, 2),
    "writer_flushed": flushed,
}}))
"""


def _when(date):
    """A message header's date (jupyter_client gives a datetime, or ISO 8601 text) in seconds."""
    if not isinstance(date, datetime.datetime):
        date = datetime.datetime.fromisoformat(str(date))
    return date.timestamp()


def message_rate(msgs, model):
    """The most update messages the widget ``model`` sent in any one second (by their header
    time, as the kernel stamped them)."""
    times = sorted(
        _when(m["header"]["date"])
        for m in msgs
        if m["msg_type"] == "comm_msg" and m["content"].get("comm_id") == model
    )
    most = first = 0
    for last, t in enumerate(times):
        while t - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def one_run(km, kc, pid, n, a):
    """Run RUN for n tasks; returns the kernel's figures for it."""
    peak_reset = reset_peak(pid)

    def watchdog():
        rss = status_mb(pid)["rss_mb"]
        if rss > a.max_rss_mb:
            raise RuntimeError(
                f"the kernel's RSS reached {rss:.0f} MB (over --max-rss-mb {a.max_rss_mb:g}) "
                f"during a {n:,}-task run"
            )

    text, msgs = execute(km, kc, RUN.format(n=n), timeout=a.timeout, check=watchdog)
    run = json.loads(text.strip().splitlines()[-1])
    mem = status_mb(pid)
    model = widget_model(msgs)
    size = sum(
        len(json.dumps(m["content"]))
        for m in msgs
        if m["msg_type"] == "comm_msg" and m["content"].get("comm_id") == model
    )
    run.update(
        rss_after_mb=mem["rss_mb"],
        peak_mb=mem["peak_mb"],
        peak_reset=peak_reset,
        widget_messages=widget_messages(msgs, model),
        widget_kb=round(size / 1024, 1),
        max_updates_per_s=message_rate(msgs, model),
        model_id=model,
    )
    run["updates_per_s"] = round(run["widget_messages"] / max(run["wall_s"], 1e-9), 1)
    return run


def big_run(km, kc, pid, a, result, blocks_before):
    """The big run; its figures go into result["big"]."""
    before = status_mb(pid)["rss_mb"]
    big = one_run(km, kc, pid, a.tasks, a)
    big.update(rss_before_mb=before, py_blocks_before=blocks_before)
    result["big"].update(big)
    text, _msgs = execute(km, kc, CLOSE.format(model_id=big["model_id"]), timeout=a.timeout)
    closed = json.loads(text.strip().splitlines()[-1])
    after_close = status_mb(pid)["rss_mb"]
    result["big"].update(
        rss_after_close_mb=after_close,
        py_blocks_after_close=closed["py_blocks"],
        open_widgets_after_close=closed["open_widgets"],
        writer_flush_s=closed["writer_flush_s"],
        writer_flushed=closed["writer_flushed"],
    )
    result["big"]["met"] = bool(
        big["completed"]
        and big["max_updates_per_s"] <= 10
        and big["peak_mb"] < a.peak_limit_mb
        and after_close - before <= a.close_limit_mb
    )
    print(
        f"== {a.tasks:,} tasks: {big['state']} in {big['wall_s']:.2f} s, RSS "
        f"{before:.0f} -> {big['rss_after_mb']:.0f} MB, peak {big['peak_mb']:.0f} MB, "
        f"{after_close:.0f} MB after closing its widget (store writer waited for "
        f"{closed['writer_flush_s']:.1f} s); {big['widget_messages']} widget "
        f"messages, at most {big['max_updates_per_s']} in a second",
        file=sys.stderr,
    )
    return closed["py_blocks"]


def repeated_runs(km, kc, pid, a, result):
    """The repeated runs; their figures go into result["repeated"]."""
    runs = result["repeated"] = []
    for i in range(a.runs):
        run = one_run(km, kc, pid, a.run_tasks, a)
        runs.append(run)
        print(
            f"== run {i + 1}/{a.runs} ({a.run_tasks:,} tasks): {run['state']} in "
            f"{run['wall_s']:.2f} s, RSS {run['rss_after_mb']:.0f} MB, "
            f"{run['widget_messages']} widget messages",
            file=sys.stderr,
        )
    return runs[-1]["py_blocks"] if runs else None


def summarize_runs(result, a):
    """The per-run lists, the thirds' peaks and whether the target is met."""
    runs = result.get("repeated", [])
    rss = [r["rss_after_mb"] for r in runs]
    blocks = [r["py_blocks"] for r in runs]
    result.update(
        rss_mb=rss,
        peak_rss_mb=[r["peak_mb"] for r in runs],
        wall_s=[r["wall_s"] for r in runs],
        py_blocks=blocks,
        widget_messages=[r["widget_messages"] for r in runs],
        widget_kb=[r["widget_kb"] for r in runs],
        completed_runs=sum(bool(r["completed"]) for r in runs),
    )
    if a.runs and len(rss) == a.runs:
        middle, last, growth = thirds(rss)
        result.update(peak_middle_third_mb=middle, peak_last_third_mb=last, growth_mb=growth)
        result["flat"] = growth <= a.growth_limit_mb
        # live blocks added per run after the first third (the same span as the RSS figure)
        third = max(1, len(blocks) // 3)
        result["py_blocks_per_run"] = round(
            (blocks[-1] - blocks[third - 1]) / (len(blocks) - third)
        )
    result["met"] = bool(
        "error" not in result
        and result["big"].get("completed")
        and result["completed_runs"] == a.runs
        and (result.get("flat") if a.runs else result["big"].get("met"))
    )


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=100_000, help="tasks of the big run")
    p.add_argument("--runs", type=int, default=20, help="number of repeated runs")
    p.add_argument("--run-tasks", type=int, default=10_000, help="tasks of each repeated run")
    p.add_argument("--big-first", action="store_true", help="the big run before the others")
    p.add_argument("--out", default=os.path.join(HERE, "out", "kernel_scale.json"))
    p.add_argument("--growth-limit-mb", type=float, default=GROWTH_LIMIT_MB)
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per run")
    p.add_argument("--max-rss-mb", type=float, default=8192, help="stop above this kernel RSS")
    p.add_argument("--peak-limit-mb", type=float, default=600, help="the big run's peak target")
    p.add_argument(
        "--close-limit-mb", type=float, default=50, help="RSS after the close above before the run"
    )
    p.add_argument("--home", help="the kernel's FLOWBOOK_HOME (default: a temporary one)")
    p.add_argument("--level", help="FLOWBOOK_LOGGING_LEVEL (default: flowbook's default, INFO)")
    a = p.parse_args()
    for name, value, low in (
        ("--tasks", a.tasks, 1),
        ("--runs", a.runs, 0),
        ("--run-tasks", a.run_tasks, 1),
        ("--timeout", a.timeout, 1),
        ("--max-rss-mb", a.max_rss_mb, 1),
        ("--growth-limit-mb", a.growth_limit_mb, 0),
    ):
        if value < low:
            p.error(f"{name} must be at least {low:g}; got {value:g}")
    if 0 < a.runs < 3:
        p.error(f"--runs must be 0 (the big run only) or at least 3; got {a.runs}")
    if a.home is not None and os.path.realpath(a.home) == os.path.join(HERE, "grown-store"):
        p.error("--home must be a copy of benchmarks/grown-store, not the original")

    result = {
        "started": now(),
        "widget": "on",
        "gc_collect_before_rss": True,
        "order": "big run first" if a.big_first else "repeated runs first",
        "growth_limit_mb": a.growth_limit_mb,
        "big": {"tasks": a.tasks},
        "runs": a.runs,
        "tasks_per_run": a.run_tasks,
        "task_runs": a.tasks + a.runs * a.run_tasks,
        "home": a.home or "temporary",
        "logging_level": a.level or "default (INFO)",
    }
    try:
        with kernel("bench-flowbook-kernel-", home=a.home, level=a.level) as (km, kc):
            text, _msgs = execute(km, kc, SETUP)
            info = json.loads(text.strip().splitlines()[-1])
            pid = info["pid"]
            result.update(engine=info["engine"], kernel_pid=pid)
            result["rss_after_warmup_mb"] = status_mb(pid)["rss_mb"]
            result["py_blocks_after_warmup"] = blocks = info["py_blocks"]
            print(f"== kernel {pid}: {result['rss_after_warmup_mb']:.0f} MB", file=sys.stderr)
            if a.big_first:
                blocks = big_run(km, kc, pid, a, result, blocks)
                repeated_runs(km, kc, pid, a, result)
            else:
                blocks = repeated_runs(km, kc, pid, a, result) or blocks
                big_run(km, kc, pid, a, result, blocks)
    except (RuntimeError, TimeoutError, OSError, ValueError, KeyError) as e:
        result["error"] = f"{type(e).__name__}: {e}"
        print(f"== kernel_scale stopped: {result['error']}", file=sys.stderr)
    result["finished"] = now()
    summarize_runs(result, a)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    if "error" in result:
        sys.exit(1)


if __name__ == "__main__":
    main()
