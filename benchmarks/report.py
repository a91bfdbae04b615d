"""Write benchmarks/RESULTS.md: flowbook vs plain Python (vs Prefect) against SPEC.md's targets.

  python report.py --flowbook out/flowbook.jsonl --plain out/plain.jsonl [--settings TEXT] \
      [--fresh out/flowbook-fresh.jsonl [--fresh-settings TEXT]] \
      [--nowait out/flowbook-nowait.jsonl [--nowait-settings TEXT]] \
      [--prefect out/prefect.jsonl [--prefect-meta out/prefect.meta.json] [--prefect-reused]] \
      [--out RESULTS.md] [--repeat N] [--python PATH] [--started ISO] [--title TEXT] \
      [--runs out/runs.json] [--memory out/memory.json] [--workloads "a b"] \
      [--widget out/widget.json] [--kernel-scale out/kernel_scale.json]

Figures are medians of the wall times of fresh processes (run.py), loaded with
summarize.load. Two more SPEC targets come from measurements in a real Jupyter kernel:
widget_10000 (widget.py's JSON) and memory_kernel (kernel_scale.py's JSON); without their
files, their rows say "not measured". Text after the line ``<!-- notes -->`` in an existing
output file is kept, so that people can explain misses there.

The main table is ``--flowbook``'s figures (benchmarks/run: flowbook at its defaults), with
issue 18's targets beside each workload (``ISSUE_TARGETS``). They are targets at the defaults,
for medians of at least ``ISSUE_MIN_RUNS`` processes: a verdict (met or not) is given only when
every flowbook record of the main table carries suite.sh's stamp ``"settings": "defaults"`` and
the figures compared have that many runs; otherwise the cell says why there is none (the
fresh-home settings, settings not recorded or mixed, fewer runs). ``--settings`` is shown only
when the records' stamps agree (else the report says they are not recorded). ``--fresh`` adds a second table: flowbook with the fresh-home settings
(WARNING, a fresh empty home), its ratios to the same plain figures, and defaults / fresh.
``--nowait`` adds a third: flowbook at the defaults with ``FLOWBOOK_STORE_WAIT=off`` (a flow
call returns before its rows are committed), its ratios to the same plain figures, issue 18's
targets judged as in the main table but on records stamped ``"nowait"``, and nowait /
defaults. A main table of nowait figures alone (``benchmarks/run --nowait``) is judged so too.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import summarize  # noqa: E402

NOTES_MARK = "<!-- notes -->"

# workload order in the table
WORKLOADS = [
    "seq_1000",
    "submit_1000",
    "map_1000",
    "map_10000",
    "chain_500",
    "sleep_parallel",
    "cache_hit_1000:cold",
    "cache_hit_1000:warm",
    "retries",
    "dask_100_cold",
    "dask_100",
    "dask_map_1000",
    "dask_map_5000",
    "cpu_process_8",
    "flow_call_100",
    "import_time",
]

# SPEC.md targets: (kind, bound); kind "abs": flowbook median <= bound seconds,
# "ratio": flowbook median <= bound x plain median, "retry": see retries_check().
TARGETS = {
    "seq_1000": ("abs", 0.050),
    "submit_1000": ("ratio", 3),
    "map_10000": ("ratio", 3),
    "chain_500": ("ratio", 5),
    "sleep_parallel": ("abs", 2.05),
    "cache_hit_1000:warm": ("ratio", 2),
    "flow_call_100": ("abs", 0.100),
    "retries": ("retry", 0.001),
    "dask_100_cold": ("ratio", 1.2),
    "import_time": ("abs", 0.3),
}
NO_TARGET = {
    # dask_100 runs after dask_1 in the same process: flowbook reuses the cluster dask_1
    # started, the plain baseline starts (and closes) one per flow
    "dask_100": "no target (flowbook: warm cluster; plain: a new cluster per flow)",
}
# SPEC targets measured in a real kernel (widget.py, kernel_scale.py): row name -> target text
KERNEL_TARGETS = {
    "widget_10000": "≤ 1.2× without widget",
    "memory_kernel": "bounded: no growth across repeated runs",
}
WIDGET_RATIO, WIDGET_TASKS = 1.2, 10_000
KERNEL_BIG_TASKS, KERNEL_RUNS = 100_000, 20
SPEC_TARGETS = len(TARGETS) + len(KERNEL_TARGETS)

# issue 18's targets, at the defaults (console at INFO, a grown store): (kind, bound, text);
# kind "ratio": flowbook median <= bound x plain median; "abs": flowbook median <= bound s
ISSUE_TARGETS = {
    "seq_1000": ("ratio", 8, "≤ 8× plain"),
    "submit_1000": ("ratio", 2, "≤ 2× plain"),
    "map_10000": ("ratio", 2, "≤ 2× plain"),
    "chain_500": ("ratio", 2.5, "≤ 2.5× plain"),
    "retries": ("ratio", 2, "≤ 2× plain"),
    "flow_call_100": ("abs", 0.010, "≤ 10 ms per 100 calls"),
    "import_time": ("abs", 0.060, "≤ 60 ms"),
    "dask_map_1000": ("ratio", 1.3, "≤ 1.3× plain Dask"),
    "dask_map_5000": ("ratio", 1.3, "≤ 1.3× plain Dask"),
    "cpu_process_8": ("ratio", 1.1, "≤ 1.1× ProcessPoolExecutor (within 10%)"),
}
ISSUE = "issue 18"
ISSUE_MIN_RUNS = 5  # issue 18: medians of at least 5 processes
# the settings issue 18's targets are judged at: the defaults, and the defaults with the
# documented FLOWBOOK_STORE_WAIT=off (results in the store within a bounded delay)
JUDGED = {"defaults": "at the defaults", "nowait": "at the defaults with FLOWBOOK_STORE_WAIT=off"}
NOWAIT_TEXT = (
    "`FLOWBOOK_STORE_WAIT=off`: a top-level flow call returns at once instead of once its rows "
    "are committed; the store's writer thread commits them within about half a second, and the "
    "run's end is journalled, so a kill loses at most the rows of that last half second, not "
    "the run's final state."
)
RETRY_FLOWS, RETRIES_PER_FLOW = 20, 2  # workloads.wl_retries: 20 flows, 2 retries each, delay 0


def load(path):
    """summarize.load plus the workload extras run.py records (e.g. cache executions)."""
    if not path or not os.path.exists(path) or os.path.getsize(path) == 0:
        return {}, {}
    rows = summarize.load(path)
    extras = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            items = (
                [(f"{rec['workload']}:{ph}", r) for ph, r in rec["phases"].items()]
                if "phases" in rec
                else [(rec["workload"], rec)]
            )
            for name, r in items:
                extras.setdefault(name, []).append(r)
    return rows, extras


def runs_of(fb, pl, name):
    """(flowbook, plain) number of processes of NAME's figures."""
    return tuple(len(rows.get(name, {}).get("walls", ())) for rows in (fb, pl))


def median(rows, name):
    w = rows.get(name, {}).get("walls")
    return statistics.median(w) if w else None


def fmt_s(x):
    if x is None:
        return "–"
    return f"{x:.4f}" if x < 0.1 else f"{x:.3f}" if x < 100 else f"{x:.1f}"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    r = a / b
    return f"{r:.2f}×" if r < 10 else f"{r:,.0f}×"


def target_text(name):
    kind, bound = TARGETS[name]
    if kind == "abs":
        return f"≤ {bound:g} s"
    if kind == "ratio":
        return f"≤ {bound:g}× plain"
    return f"≤ {bound * 1000:g} ms per retry beyond the delay"


def failed_workloads(jsonl_path):
    """Workloads suite.sh reported as FAILED in the log benchmarks/run keeps beside the JSONL."""
    log = os.path.splitext(jsonl_path or "")[0] + ".log"
    if not jsonl_path or not os.path.exists(log):
        return set()
    with open(log, errors="replace") as f:
        return {line.split(":", 1)[1].strip() for line in f if line.startswith("FAILED:")}


FAILED = set()  # flowbook workloads that failed in this run (set in build)
FAILED_LOG = ["out/flowbook.log"]  # where their tracebacks are, relative to benchmarks/


def check(name, fb, plain, fb_extras):
    """-> text of the 'met?' cell."""
    if name not in TARGETS:
        return NO_TARGET.get(name, "no target")
    if fb is None:
        return (
            f"**FAILED** (see {FAILED_LOG[0]})" if name.split(":")[0] in FAILED else "not measured"
        )
    kind, bound = TARGETS[name]
    if kind == "abs":
        ok = fb <= bound
    elif kind == "ratio":
        if plain is None:
            return "no plain figure"
        ok = fb <= bound * plain
    else:
        if plain is None:
            return "no plain figure"
        per_retry = (fb - plain) / (RETRY_FLOWS * RETRIES_PER_FLOW)
        ok = per_retry <= bound
        return f"{'yes' if ok else '**NO**'} ({per_retry * 1000:.2f} ms per retry)"
    text = "yes" if ok else "**NO**"
    if name == "cache_hit_1000:warm":
        executed = [
            r.get("executed") for r in fb_extras.get(name, []) if r.get("executed") is not None
        ]
        if any(executed):
            text = f"**NO** (cache missed: {max(executed)} of 1000 executed)"
    return text


def issue_check(
    name, fb, plain, kind, runs=(ISSUE_MIN_RUNS, ISSUE_MIN_RUNS), failed=None, log=None
):
    """-> text of the issue-target 'met?' cell.

    KIND: the table's settings from its records' stamps (records_stamp): judged at "defaults"
    and at "nowait" (the defaults with FLOWBOOK_STORE_WAIT=off); RUNS: how many processes the
    flowbook and the plain median of the workload come from; FAILED, LOG: the table's failed
    workloads and their log (default: the main table's)."""
    if name not in ISSUE_TARGETS:
        return "–"
    if kind == "fresh":
        return "– (a target at the defaults)"
    if fb is None:
        failed, log = (FAILED, FAILED_LOG[0]) if failed is None else (failed, log)
        return f"**FAILED** (see {log})" if name in failed else "not measured"
    if kind not in JUDGED:
        return "– (settings not recorded)"
    how, bound, _ = ISSUE_TARGETS[name]
    if how == "ratio" and plain is None:
        return "no plain figure"
    if min(runs if how == "ratio" else runs[:1]) < ISSUE_MIN_RUNS:
        return f"– (fewer than {ISSUE_MIN_RUNS} runs)"
    if how == "abs":
        return f"{'yes' if fb <= bound else '**NO**'} ({fb * 1000:.1f} ms)"
    ratio = fb / plain
    return f"{'yes' if ratio <= bound else '**NO**'} ({ratio:.2f}×)"


def records_stamp(path):
    """The settings every flowbook record in PATH is stamped with (suite.sh's "settings"):
    "defaults", "fresh" or "nowait"; "mixed" when they differ, "unrecorded" when some carry none,
    None when there is no record."""
    if not path or not os.path.exists(path):
        return None
    stamps = set()
    with open(path) as f:
        for line in f:
            if line.strip():
                stamps.add(json.loads(line).get("settings"))
    if not stamps:
        return None
    if None in stamps:
        return "unrecorded"
    return stamps.pop() if len(stamps) == 1 else "mixed"


def settings_line(given, stamp, path, expected=None):
    """The text of a table's settings line: GIVEN (the --settings text) when its records'
    stamps agree (and are EXPECTED, when given), else what the stamps say (None: no line)."""
    if expected and stamp not in (expected, "unrecorded", "mixed", None):
        return (
            f"not recorded ({os.path.basename(path)}: its records are stamped {stamp}, not "
            f"{expected}); {ISSUE}'s targets are not judged on these figures"
        )
    if stamp in ("unrecorded", "mixed"):
        why = (
            "some of its records carry no settings stamp, measured before settings were recorded"
            if stamp == "unrecorded"
            else "its records are stamped with different settings"
        )
        return (
            f"not recorded ({os.path.basename(path)}: {why}); {ISSUE}'s targets are not "
            "judged on these figures"
        )
    if given:
        return given
    return f"{stamp} (stamped on the figures)" if stamp else None


def python_version(python):
    try:
        return subprocess.run(
            [python, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return platform.python_version()


def engine_version(extras):
    for recs in extras.values():
        for r in recs:
            if "engine" in r:
                return r["engine"]
    return None


def old_notes(path):
    if not os.path.exists(path):
        return None
    text = open(path).read()
    if NOTES_MARK not in text:
        return None
    return text.split(NOTES_MARK, 1)[1].strip("\n")


def median_extra(extras, name, key):
    values = [r[key] for r in extras.get(name, []) if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def dask_cold_text(fb_x, pl_x, pf_x):
    """What wl_dask_100_cold records besides its wall time: to results, close, second run."""
    name = "dask_100_cold"
    if not fb_x.get(name) and not pl_x.get(name):
        return []
    lines = [
        f"{name}: the first Dask use of a fresh process: import Dask, start a 2-worker × "
        "1-thread LocalCluster, 100 × 50 ms CPU-bound tasks, results in hand, the cluster "
        "closed. The plain baseline and Prefect close their cluster when the flow ends; "
        "flowbook keeps it for later runs (closed at exit), so its close "
        "(`dask_close()`, timed after the second run) is added to its first run."
    ]
    parts = []
    f_res, p_res = (
        median_extra(fb_x, name, "to_results_s"),
        median_extra(pl_x, name, "to_results_s"),
    )
    if f_res is not None or p_res is not None:
        parts.append(
            f"Up to the results, no close: flowbook {fmt_s(f_res)} s, plain {fmt_s(p_res)} s "
            f"({fmt_ratio(f_res, p_res)})."
        )
    f_close = median_extra(fb_x, name, "close_s")
    p_first = median_extra(pl_x, name, "first_call_s")
    p_after = p_first - p_res if p_first is not None and p_res is not None else None
    parts.append(
        f"Closing the cluster: flowbook {fmt_s(f_close)} s; plain {fmt_s(p_after)} s "
        "(from the results to the end of its flow call)."
    )
    f_second = median_extra(fb_x, name, "second_run_s")
    if f_second is not None:
        same = [r.get("same_cluster") for r in fb_x.get(name, [])]
        text = (
            f"A second, identical flow run in the same process: flowbook {fmt_s(f_second)} s "
            f"(ideal 2.5 s; same scheduler and workers as the first run in {sum(map(bool, same))} "
            f"of {len(same)} processes)"
        )
        p_second = median_extra(pl_x, name, "second_run_s")
        if p_second is not None:
            text += f", plain {fmt_s(p_second)} s (a new cluster for each flow run)"
        q_second = median_extra(pf_x, name, "second_run_s")
        if q_second is not None:
            text += f", Prefect {fmt_s(q_second)} s"
        parts.append(text + ".")
    return [lines[0] + " " + " ".join(parts), ""]


def runs_lines(path, names):
    """A line per run when the figures shown come from more than one run (runs.json)."""
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        runs = json.load(f)
    groups = {}
    for name in names:
        run = runs.get(name.split(":")[0])
        if run is None:
            continue
        key = json.dumps(run, sort_keys=True)
        groups.setdefault(key, (run, []))
        if name.split(":")[0] not in groups[key][1]:
            groups[key][1].append(name.split(":")[0])
    if len(groups) < 2:
        return []
    out = [
        f"- These figures come from {len(groups)} runs; flowbook and plain Python of a "
        "workload always come from the same run (every ratio compares one run's figures):"
    ]
    for run, members in groups.values():
        when = f"run started {run['started']}" if run.get("started") else "an earlier run"
        how = []
        if run.get("repeat"):
            how.append(f"{run['repeat']} repeat{'s' if run['repeat'] != 1 else ''}")
        if "alternate" in run:
            how.append("engines alternated" if run["alternate"] else "one engine after the other")
        if run.get("settings"):
            how.append("flowbook at " + " and ".join(run["settings"]))
        out.append(f"  - {when}{' (' + ', '.join(how) + ')' if how else ''}: {', '.join(members)}")
    return out


def load_json(path, option):
    """A JSON file's object, or None when no path is given."""
    if not path:
        return None
    if not os.path.exists(path):
        sys.exit(f"report.py: {option} {path}: no such file")
    with open(path) as f:
        return json.load(f)


def when_measured(data, path):
    if data.get("finished"):
        return data["finished"].replace("T", " ").replace("Z", " UTC")
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return f"{mtime:%Y-%m-%d %H:%M UTC} (file written)"


def span(values, fmt="{}"):
    """'low–high' of a list of figures (one figure if they are all the same)."""
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}–{high}"


def widget_row(w):
    """-> (flowbook cell, plain cell, ratio cell, met cell) for the widget_10000 row."""
    if w is None:
        return "–", "–", "–", "not measured (`benchmarks/run --update --workloads widget`)"
    on, off = w["median_on_s"], w["median_off_s"]
    cells = (f"{fmt_s(on)} (widget on)", f"{fmt_s(off)} (flowbook, widget off)", fmt_ratio(on, off))
    if w["tasks"] != WIDGET_TASKS:
        return (*cells, f"not measured at SPEC size ({w['tasks']:,} tasks, not {WIDGET_TASKS:,})")
    return (*cells, "yes" if on <= WIDGET_RATIO * off else "**NO**")


def kernel_row(k):
    """-> (flowbook cell, plain cell, ratio cell, met cell) for the memory_kernel row."""
    if k is None:
        return "–", "–", "–", "not measured (`benchmarks/run --update --workloads kernel_scale`)"
    big = k["big"]
    parts = []
    if "peak_mb" in big:
        parts.append(f"{big['tasks']:,} tasks: peak {big['peak_mb']:.0f} MB")
    if "growth_mb" in k:
        parts.append(f"{k['runs']} × {k['tasks_per_run']:,}: {k['growth_mb']:+.1f} MB")
    cell = "; ".join(parts) or "–"
    if k.get("error"):
        return cell, "–", "–", f"**NO** (stopped: {k['error']})"
    if big["tasks"] < KERNEL_BIG_TASKS or k["runs"] < KERNEL_RUNS:
        return (
            cell,
            "–",
            "–",
            f"not measured at SPEC size ({big['tasks']:,} tasks and {k['runs']} runs, "
            f"not {KERNEL_BIG_TASKS:,} and {KERNEL_RUNS})",
        )
    if not big.get("completed"):
        return cell, "–", "–", f"**NO** ({big['tasks']:,}-task run: {big.get('state')})"
    if k["completed_runs"] != k["runs"]:
        return cell, "–", "–", f"**NO** ({k['runs'] - k['completed_runs']} runs did not complete)"
    ok = k["growth_mb"] <= k["growth_limit_mb"]
    text = f"{k['growth_mb']:+.1f} MB over the last runs, limit +{k['growth_limit_mb']:g} MB"
    return cell, "–", "–", f"{'yes' if ok else '**NO**'} ({text})"


def widget_text(w, path):
    if w is None:
        return []
    msgs, rates = w["widget_messages"], w["widget_messages_per_s"]
    return [
        f"widget_{w['tasks']}: in a real Jupyter kernel (`widget.py`), a flow mapping a no-op task over "
        f"{w['tasks']:,} inputs, {w['repeat']} runs with the run widget on and {w['repeat']} "
        f"with it off, alternating, each timed inside the kernel: medians "
        f"{fmt_s(w['median_on_s'])} s on, {fmt_s(w['median_off_s'])} s off "
        f"({fmt_ratio(w['median_on_s'], w['median_off_s'])}; runs on "
        f"{span(w['widget_on_s'], '{:.2f}')} s, off {span(w['widget_off_s'], '{:.2f}')} s). "
        f"The widget sent {span(msgs)} update messages a run ({span(rates, '{:.1f}')} a second): "
        f"bounded by the run's time, not by its tasks. Measured {when_measured(w, path)}.",
        "",
    ]


def kernel_text(k, path):
    if k is None:
        return []
    big = k["big"]
    text = (
        "memory_kernel: one Jupyter kernel with the run widget on (`kernel_scale.py`; each "
        "flow called at the top level of its own cell; before each reading the cell drops its "
        "references to the run and calls `gc.collect()`)."
    )
    if k.get("rss_mb"):
        text += (
            f" {len(k['rss_mb'])} runs of a flow mapping a no-op task over "
            f"{k['tasks_per_run']:,} inputs: kernel RSS after each run "
            f"{', '.join(f'{x:.0f}' for x in k['rss_mb'])} MB"
        )
        if "growth_mb" in k:
            text += (
                f"; peak of the middle third of the runs {k['peak_middle_third_mb']:.1f} MB, of "
                f"the last third {k['peak_last_third_mb']:.1f} MB ({k['growth_mb']:+.1f} MB; flat "
                f"if at most +{k['growth_limit_mb']:g} MB). Python's live memory blocks "
                f"(`sys.getallocatedblocks()`) changed by {k['py_blocks_per_run']:+,} a run "
                "after the first third"
            )
        text += (
            f". Widget update messages a run: {', '.join(map(str, k['widget_messages']))} "
            f"({span(k['widget_kb'], '{:.0f}')} KB a run)."
        )
    if "wall_s" in big:
        done = (
            f"completed (state {big['state']}, all {big['results']:,} results)"
            if big["completed"]
            else f"did **not** complete (state {big['state']}, "
            f"{big['results'] if big['results'] is not None else 'no'} results)"
        )
        order = "before" if k.get("order") == "big run first" else "after"
        peak = "during its cell" if big["peak_reset"] else "since the kernel started"
        text += (
            f" One flow mapping it over {big['tasks']:,} inputs, {order} those runs: {done} in "
            f"{big['wall_s']:.1f} s; kernel RSS {big['rss_before_mb']:.0f} MB before, "
            f"{big['rss_after_mb']:.0f} MB after, peak {big['peak_mb']:.0f} MB {peak}; "
            f"Python's live blocks {big['py_blocks_before']:,} before, {big['py_blocks']:,} "
            f"after; {big['widget_messages']} widget messages ({big['widget_kb']:.0f} KB)."
        )
    if k.get("error"):
        text += f" The measurement stopped early: {k['error']}."
    return [text + f" Measured {when_measured(k, path)}.", ""]


def repeats_text(a, fb, pl):
    if a.repeat is not None:
        return str(a.repeat)
    counts = sorted({len(r["walls"]) for r in [*fb.values(), *pl.values()] if r["walls"]})
    if not counts:
        return "?"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def breakdown_text(path):
    """The per-task cost section (breakdown.py's JSON), or nothing without it."""
    if not path or not os.path.exists(path):
        return []
    import breakdown

    with open(path) as f:
        result = json.load(f)
    when = result.get("measured_at")
    return [
        "## Per-task cost, layer by layer",
        "",
        f"`breakdown.py`: each layer adds one part of flowbook to the row above; medians of "
        f"{result['repeat']} fresh processes per row"
        + (f", measured {when}" if when else "")
        + ". The run widget's share is the widget_10000 row above.",
        "",
        breakdown.render(result),
    ]


def settings_sentence(data):
    """'Settings: ...' of a one-process measurement's JSON (memory.py, breakdown.py)."""
    settings = data.get("settings")
    if not settings:
        return "Settings: not recorded (WARNING, a temporary home, before settings were recorded)."
    return f"Settings: {settings['text']}."


def issue_summary(names, verdicts, kind):
    """The line under a table counting issue 18's targets."""
    if not names:
        return f"{ISSUE} targets: none of their workloads in this report."
    if kind == "fresh":
        return (
            f"{ISSUE} targets are at the defaults; this table is at the fresh-home settings, "
            "so none is judged here."
        )
    if kind in ("unrecorded", "mixed"):
        return (
            f"{ISSUE} targets are at the defaults; the settings of this table's figures are not "
            "recorded, so none is judged here (measure them again: `benchmarks/run`)."
        )
    yes = [n for n, v in zip(names, verdicts) if v.startswith("yes")]
    no = [n for n, v in zip(names, verdicts) if v.startswith(("**NO**", "**FAILED**"))]
    few = [n for n, v in zip(names, verdicts) if v == f"– (fewer than {ISSUE_MIN_RUNS} runs)"]
    other = [n for n in names if n not in yes and n not in no and n not in few]
    return (
        f"{ISSUE} targets ({JUDGED.get(kind, 'at the defaults')}) met: {len(yes)} of {len(names)}"
        + (f"; missed or failed: {', '.join(no)}" if no else "")
        + (f"; not judged, fewer than {ISSUE_MIN_RUNS} runs: {', '.join(few)}" if few else "")
        + (f"; not measured: {', '.join(other)}" if other else "")
        + "."
    )


def fresh_table(a, names, fb, pl, fr, failed):
    """The second table: flowbook at the fresh-home settings against the same plain figures."""
    out = [
        "## flowbook with the fresh-home settings",
        "",
        f"Settings: {a.fresh_settings_line}. Measured "
        "in the same run as the table above, the settings taking turns with the defaults and "
        "plain Python round by round; the ratios are to the same plain figures. "
        "defaults / fresh is what the defaults (console lines, the grown store) add.",
        "",
        "| workload | flowbook fresh home median s | plain median s | fresh/plain "
        "| defaults median s | defaults / fresh |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        if name not in fr and name not in fb:
            continue
        f, p, d = median(fr, name), median(pl, name), median(fb, name)
        cell = fmt_s(f)
        if f is None and name.split(":")[0] in failed:
            cell = "**FAILED**"
        out.append(
            f"| {name} | {cell} | {fmt_s(p)} | {fmt_ratio(f, p)} | {fmt_s(d)} | {fmt_ratio(d, f)} |"
        )
    out.append("")
    if failed:
        log = os.path.relpath(
            os.path.splitext(a.fresh)[0] + ".log", os.path.dirname(os.path.abspath(__file__))
        )
        out += [f"Failed at the fresh-home settings (see {log}): {', '.join(sorted(failed))}.", ""]
    return out


def nowait_table(a, names, fb, pl, nw, failed):
    """The third table: flowbook at the defaults with FLOWBOOK_STORE_WAIT=off against the same
    plain figures, issue 18's targets judged on records stamped nowait, and nowait / defaults."""
    stamp = records_stamp(a.nowait)
    # (a file of other stamps is judged as one whose settings are not recorded)
    kind = stamp if stamp in ("nowait", None) else "unrecorded"
    log = os.path.relpath(
        os.path.splitext(a.nowait)[0] + ".log", os.path.dirname(os.path.abspath(__file__))
    )
    out = [
        "## flowbook at the defaults with FLOWBOOK_STORE_WAIT=off",
        "",
        f"Settings: {a.nowait_settings_line}. {NOWAIT_TEXT} The main table stays flowbook's "
        "default (`FLOWBOOK_STORE_WAIT=on`: a flow call returns once its rows are committed). "
        "Measured in the same run as the main table, for the workloads whose flow calls the "
        "setting can change, taking turns with the other settings and plain Python round by "
        "round; the ratios are to the same plain figures, the targets judged as in the main "
        "table (on figures stamped nowait, medians of at least "
        f"{ISSUE_MIN_RUNS} processes). nowait / defaults is what not waiting for the store saves.",
        "",
        "| workload | flowbook nowait median s | plain median s | nowait/plain "
        f"| target ({ISSUE}) | met? | defaults median s | nowait / defaults |",
        "|---|---|---|---|---|---|---|---|",
    ]
    shown = [n for n in names if n in nw or n.split(":")[0] in failed]
    verdicts = {}
    for name in shown:
        w, p, d = median(nw, name), median(pl, name), median(fb, name)
        cell = fmt_s(w)
        if w is None:
            cell = "**FAILED**"
        if name in ISSUE_TARGETS:
            verdicts[name] = issue_check(name, w, p, kind, runs_of(nw, pl, name), failed, log)
        out.append(
            f"| {name} | {cell} | {fmt_s(p)} | {fmt_ratio(w, p)} "
            f"| {ISSUE_TARGETS[name][2] if name in ISSUE_TARGETS else '–'} "
            f"| {verdicts.get(name, '–')} | {fmt_s(d)} | {fmt_ratio(w, d)} |"
        )
    out += ["", issue_summary(list(verdicts), list(verdicts.values()), kind)]
    if failed:
        out.append(
            f"Failed at the defaults with FLOWBOOK_STORE_WAIT=off (see {log}): "
            f"{', '.join(sorted(failed))}."
        )
    return [*out, ""]


def build(a):
    fb, fb_x = load(a.flowbook)
    FAILED.clear()
    FAILED.update(failed_workloads(a.flowbook))
    FAILED_LOG[0] = os.path.relpath(
        os.path.splitext(a.flowbook)[0] + ".log", os.path.dirname(os.path.abspath(__file__))
    )
    pl, pl_x = load(a.plain)
    pf, pf_x = load(a.prefect) if a.prefect else ({}, {})
    fr, fr_x = load(a.fresh) if a.fresh else ({}, {})
    fresh_failed = failed_workloads(a.fresh) if a.fresh else set()
    nw, _ = load(a.nowait) if a.nowait else ({}, {})
    nowait_failed = failed_workloads(a.nowait) if a.nowait else set()
    # the settings come from the records' stamps; a given settings line only when they agree
    kind = records_stamp(a.flowbook)
    shown_settings = settings_line(a.settings, kind, a.flowbook)
    if a.fresh:
        a.fresh_settings_line = settings_line(
            a.fresh_settings, records_stamp(a.fresh), a.fresh
        ) or ("fresh home (benchmarks/run --fresh-home)")
    if a.nowait:
        a.nowait_settings_line = settings_line(
            a.nowait_settings, records_stamp(a.nowait), a.nowait, expected="nowait"
        ) or ("nowait: the defaults with FLOWBOOK_STORE_WAIT=off (benchmarks/run --nowait)")
    meta = {}
    if a.prefect_meta and os.path.exists(a.prefect_meta):
        with open(a.prefect_meta) as f:
            meta = json.load(f)
    have_prefect = bool(pf)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# {a.title}", ""]
    out.append(
        "Generated by `benchmarks/run` (`benchmarks/report.py`); do not edit above the Notes section."
    )
    out.append("")
    out.append(f"- Date: {now}" + (f" (run started {a.started})" if a.started else ""))
    out.append(
        f"- Machine: {os.cpu_count()} cores (nproc), {platform.machine()}, "
        f"Python {python_version(a.python)} ({platform.python_implementation()})"
    )
    out.append(
        f"- Engines: {engine_version(fb_x) or 'flowbook (no figures)'}; "
        f"plain Python baseline ({engine_version(pl_x) or 'no figures'})"
        + (f"; {engine_version(pf_x) or 'prefect'} (anchor, own venv)" if have_prefect else "")
    )
    if shown_settings:
        out.append(f"- flowbook settings: {shown_settings}")
    if a.fresh:
        out.append(f"- flowbook settings of the second table: {a.fresh_settings_line}")
    if a.nowait:
        out.append(
            f"- flowbook settings of the FLOWBOOK_STORE_WAIT=off table: {a.nowait_settings_line}"
        )
    out.append(
        f"- Repeats: {repeats_text(a, fb, pl)} fresh processes per workload for flowbook and "
        "plain Python"
        + (
            f"; Prefect: {meta.get('repeat') or max(len(r['walls']) for r in pf.values())}"
            if have_prefect
            else ""
        )
    )
    out.append(
        "- Figures are medians of fresh processes measured in one run "
        "(wall time of the workload only, after import and a warm-up flow; "
        'import_time is the whole `python -c "import ENGINE"` process).'
    )
    runs_at = len(out)  # the runs lines go here once the workloads shown are known
    if have_prefect:
        if meta.get("started"):
            when = f"{meta['started']} to {meta.get('finished', '?')}"
        else:
            mtime = datetime.datetime.fromtimestamp(
                os.path.getmtime(a.prefect), datetime.timezone.utc
            )
            when = f"file last written {mtime:%Y-%m-%d %H:%M UTC}"
        if a.prefect_reused:
            out.append(
                f"- Prefect figures were **reused** from an earlier measurement ({when}), "
                "not measured in this run."
            )
        else:
            out.append(f"- Prefect figures measured in this run ({when}).")
    else:
        out.append("- Prefect: not measured (`benchmarks/run --prefect` or `--reuse-prefect`).")
    out.append("")

    head = ["workload", "flowbook median s", "plain median s", "flowbook/plain"]
    if have_prefect:
        head += ["Prefect median s", "Prefect/flowbook"]
    head += [f"target ({ISSUE})", "met?", "SPEC target", "met?"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    names = [
        n
        for n in WORKLOADS
        if n in fb
        or n in pl
        or n in pf
        or n in fr
        or n in nw
        or n in TARGETS
        or n in ISSUE_TARGETS
        or n == "dask_100"
    ]
    names += sorted((set(fb) | set(pl) | set(pf) | set(fr) | set(nw)) - set(names))
    if a.workloads:
        chosen = a.workloads.split()
        names = [n for n in names if n.split(":")[0] in chosen]
    targets = [n for n in names if n in TARGETS]
    out[runs_at:runs_at] = runs_lines(a.runs, names)
    for name in names:
        f, p, q = median(fb, name), median(pl, name), median(pf, name)
        fb_cell = fmt_s(f)
        if name == "retries" and f is not None:
            fb_cell += f" ({f / RETRY_FLOWS * 1000:.2f} ms/flow)"
        row = [name, fb_cell, fmt_s(p), fmt_ratio(f, p)]
        if have_prefect:
            row += [fmt_s(q), fmt_ratio(q, f)]
        row += [
            ISSUE_TARGETS[name][2] if name in ISSUE_TARGETS else "–",
            issue_check(name, f, p, kind, runs_of(fb, pl, name)),
            target_text(name) if name in TARGETS else "–",
            check(name, f, p, fb_x),
        ]
        out.append("| " + " | ".join(row) + " |")
    met = [check(n, median(fb, n), median(pl, n), fb_x) for n in targets]
    issue_names = [n for n in names if n in ISSUE_TARGETS]
    issue_met = [
        issue_check(n, median(fb, n), median(pl, n), kind, runs_of(fb, pl, n)) for n in issue_names
    ]
    # the targets measured in a real kernel: shown when measured, when their measurement is
    # among the workloads chosen (benchmarks/run names it so when it failed), or in a report of
    # every workload
    widget = load_json(a.widget, "--widget")
    kscale = load_json(a.kernel_scale, "--kernel-scale")
    chosen = (a.workloads or "").split()
    kernel_rows = [
        (name, data, cells)
        for name, measurement, data, cells in (
            ("widget_10000", "widget", widget, widget_row),
            ("memory_kernel", "kernel_scale", kscale, kernel_row),
        )
        if data is not None or not chosen or measurement in chosen or name in chosen
    ]
    for name, data, cells in kernel_rows:
        f_cell, p_cell, ratio, verdict = cells(data)
        shown = f"widget_{data['tasks']}" if name == "widget_10000" and data else name
        row = [shown, f_cell, p_cell, ratio]
        if have_prefect:
            row += ["–", "–"]
        row += ["–", "–", KERNEL_TARGETS[name], verdict]
        out.append("| " + " | ".join(row) + " |")
        met.append(verdict)
        targets.append(name)
    out.append("")
    n_yes = sum(m.startswith("yes") for m in met)
    n_no = sum(m.startswith(("**NO**", "**FAILED**")) for m in met)
    n_other = len(targets) - n_yes - n_no
    out.append(
        f"SPEC targets met: {n_yes} of {len(targets)}"
        + (f", missed or failed: {n_no}" if n_no else "")
        + (f", not measured: {n_other}" if n_other else "")
        + (
            f" (of {SPEC_TARGETS} in SPEC.md; this run measured a subset)"
            if len(targets) < SPEC_TARGETS
            else ""
        )
        + "."
    )
    out.append(issue_summary(issue_names, issue_met, kind))
    if kind == "nowait":
        out.append(
            f"{NOWAIT_TEXT} flowbook's default is `FLOWBOOK_STORE_WAIT=on` (a flow call returns "
            "once its rows are committed)."
        )
    if FAILED:
        out.append(
            f"Failed for flowbook (some or all repeats; see {FAILED_LOG[0]}): {', '.join(sorted(FAILED))}."
        )
    out.append("")
    if a.fresh:
        out += fresh_table(a, names, fb, pl, fr, fresh_failed)
    if a.nowait:
        out += nowait_table(a, names, fb, pl, nw, nowait_failed)
    if "retries" in names:
        out.append(
            "retries: 20 flows, each with a task that fails twice (2 retries, delay 0); "
            "met if (flowbook wall − plain wall) / 40 retries ≤ 1 ms."
        )
        out.append("")
    if "dask_100_cold" in names:
        out += dask_cold_text(fb_x, pl_x, pf_x)
    if "dask_100" in names and ("dask_100" in fb or "dask_100" in pl):
        out.append(
            "dask_100: the same 100 tasks in a flow run after a 1-task Dask flow run in the same "
            "process: flowbook's cluster is already running (warm), the plain baseline starts "
            "and closes a new one in each flow run."
        )
        out.append("")
    if any(n.startswith("dask_map_") for n in names):
        out.append(
            "dask_map_1000, dask_map_5000: 1,000 or 5,000 `inc` tasks mapped on a warm "
            "2-worker × 1-thread LocalCluster (worker processes; the cluster started by an "
            "untimed run first); plain Python is `client.map` on such a cluster. Target "
            f"({ISSUE}): within 1.3× of plain Dask."
        )
        out.append("")
    if "cpu_process_8" in names:
        out.append(
            "cpu_process_8: 8 × 0.5 s CPU-bound tasks on a warm pool of 2 worker processes "
            "(ideal 2 s on 2 cores); plain Python is `ProcessPoolExecutor(2)`. Target "
            f"({ISSUE}): within 10% of plain."
        )
        out.append("")
    out += widget_text(widget, a.widget)
    out += kernel_text(kscale, a.kernel_scale)
    out += breakdown_text(a.breakdown)

    out.append("## Spread and memory")
    out.append("")
    head = ["workload", "flowbook s (min–max, n)", "plain s (min–max, n)"]
    if a.fresh:
        head.insert(2, "flowbook fresh home s (min–max, n)")
    if a.nowait:
        head.insert(2 + bool(a.fresh), "flowbook nowait s (min–max, n)")
    if have_prefect:
        head.append("Prefect s (min–max, n)")
    head += ["flowbook peak RSS MB"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    empty = {"walls": [], "rss": []}
    for name in names:
        row = [name, summarize.cell(fb.get(name, empty)), summarize.cell(pl.get(name, empty))]
        if a.fresh:
            row.insert(2, summarize.cell(fr.get(name, empty)))
        if a.nowait:
            row.insert(2 + bool(a.fresh), summarize.cell(nw.get(name, empty)))
        if have_prefect:
            row.append(summarize.cell(pf.get(name, empty)))
        rss = fb.get(name, empty)["rss"]
        row.append(f"{max(rss):.0f}" if rss else "–")
        out.append("| " + " | ".join(row) + " |")
    out.append("")

    if a.memory and os.path.exists(a.memory):
        with open(a.memory) as f:
            mem = json.load(f)
        rss = mem["rss_mb"]
        out.append("## Memory over repeated runs")
        out.append("")
        out.append(
            f"{mem['runs']} runs of a flow mapping a task over {mem['tasks_per_run']:,} inputs "
            f"in one process, run store on ({mem['task_runs']:,} task runs): resident memory "
            f"after each run {', '.join(f'{x:.0f}' for x in rss)} MB; peak of the middle "
            f"third of the runs {mem['peak_middle_third_mb']:.1f} MB, of the last third "
            f"{mem['peak_last_third_mb']:.1f} MB ({mem['growth_mb']:+.1f} MB) "
            f"(SPEC: bounded, no growth across repeated runs). " + settings_sentence(mem)
        )
        out.append("")

    notes = old_notes(a.out)
    out.append("## Notes")
    out.append("")
    out.append(NOTES_MARK)
    out.append(
        notes
        if notes
        else "(Explain misses here; text below the marker above is kept by report.py.)"
    )
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--flowbook", default=os.path.join(here, "out", "flowbook.jsonl"))
    p.add_argument("--plain", default=os.path.join(here, "out", "plain.jsonl"))
    p.add_argument("--prefect", default=None)
    p.add_argument("--prefect-meta", default=None)
    p.add_argument("--prefect-reused", action="store_true")
    p.add_argument("--out", default=os.path.join(here, "RESULTS.md"))
    p.add_argument("--repeat", default=None, help="default: from the figures")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--started", default=None)
    p.add_argument("--title", default="flowbook benchmarks")
    p.add_argument("--settings", default=None, help="what flowbook ran with (one line)")
    p.add_argument(
        "--fresh", default=None, help="flowbook's figures at the fresh-home settings (2nd table)"
    )
    p.add_argument("--fresh-settings", default=None, help="the second table's settings line")
    p.add_argument(
        "--nowait",
        default=None,
        help="flowbook's figures at the defaults with FLOWBOOK_STORE_WAIT=off (3rd table)",
    )
    p.add_argument("--nowait-settings", default=None, help="the nowait table's settings line")
    p.add_argument("--workloads", default=None, help="only these workloads (space-separated)")
    p.add_argument("--memory", default=None, help="memory.py's JSON, for the memory section")
    p.add_argument("--runs", default=None, help="runs.json (merge.py): which run measured what")
    p.add_argument("--widget", default=None, help="widget.py's JSON (row widget_10000)")
    p.add_argument("--kernel-scale", default=None, help="kernel_scale.py's JSON (memory_kernel)")
    p.add_argument("--breakdown", default=None, help="breakdown.py's JSON (per-task cost)")
    a = p.parse_args(argv)
    text = build(a)
    with open(a.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
