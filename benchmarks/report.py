"""Write benchmarks/RESULTS.md: flowbook vs plain Python (vs Prefect) against SPEC.md's targets.

  python report.py --flowbook out/flowbook.jsonl --plain out/plain.jsonl \
      [--prefect out/prefect.jsonl [--prefect-meta out/prefect.meta.json] [--prefect-reused]] \
      [--out RESULTS.md] [--repeat N] [--python PATH] [--started ISO] [--title TEXT]

Figures are medians of the wall times of fresh processes (run.py), loaded with
summarize.load. Text after the line ``<!-- notes -->`` in an existing output file is
kept, so that people can explain misses there.
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
    "dask_100",
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
    "import_time": ("abs", 0.3),
}
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
        return "no target" if name != "dask_100" else "no target (not measured for flowbook yet)"
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


def build(a):
    fb, fb_x = load(a.flowbook)
    FAILED.clear()
    FAILED.update(failed_workloads(a.flowbook))
    FAILED_LOG[0] = os.path.relpath(
        os.path.splitext(a.flowbook)[0] + ".log", os.path.dirname(os.path.abspath(__file__))
    )
    pl, pl_x = load(a.plain)
    pf, pf_x = load(a.prefect) if a.prefect else ({}, {})
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
    out.append(
        f"- Repeats: {a.repeat} fresh processes per workload for flowbook and plain Python"
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
    head += ["SPEC target", "met?"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    names = [
        n for n in WORKLOADS if n in fb or n in pl or n in pf or n in TARGETS or n == "dask_100"
    ]
    names += sorted((set(fb) | set(pl) | set(pf)) - set(names))
    if a.workloads:
        chosen = a.workloads.split()
        names = [n for n in names if n.split(":")[0] in chosen]
    targets = [n for n in names if n in TARGETS]
    for name in names:
        f, p, q = median(fb, name), median(pl, name), median(pf, name)
        fb_cell = fmt_s(f)
        if name == "retries" and f is not None:
            fb_cell += f" ({f / RETRY_FLOWS * 1000:.2f} ms/flow)"
        row = [name, fb_cell, fmt_s(p), fmt_ratio(f, p)]
        if have_prefect:
            row += [fmt_s(q), fmt_ratio(q, f)]
        row += [target_text(name) if name in TARGETS else "–", check(name, f, p, fb_x)]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    met = [check(n, median(fb, n), median(pl, n), fb_x) for n in targets]
    n_yes = sum(m.startswith("yes") for m in met)
    n_no = sum(m.startswith(("**NO**", "**FAILED**")) for m in met)
    n_other = len(targets) - n_yes - n_no
    out.append(
        f"SPEC targets met: {n_yes} of {len(targets)}"
        + (f", missed or failed: {n_no}" if n_no else "")
        + (f", not measured: {n_other}" if n_other else "")
        + (
            f" (of {len(TARGETS)} in SPEC.md; this run measured a subset)"
            if len(targets) < len(TARGETS)
            else ""
        )
        + "."
    )
    if FAILED:
        out.append(
            f"Failed for flowbook (some or all repeats; see {FAILED_LOG[0]}): {', '.join(sorted(FAILED))}."
        )
    out.append("")
    if "retries" in names:
        out.append(
            "retries: 20 flows, each with a task that fails twice (2 retries, delay 0); "
            "met if (flowbook wall − plain wall) / 40 retries ≤ 1 ms."
        )
        out.append("")

    out.append("## Spread and memory")
    out.append("")
    head = ["workload", "flowbook s (min–max, n)", "plain s (min–max, n)"]
    if have_prefect:
        head.append("Prefect s (min–max, n)")
    head += ["flowbook peak RSS MB"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    empty = {"walls": [], "rss": []}
    for name in names:
        row = [name, summarize.cell(fb.get(name, empty)), summarize.cell(pl.get(name, empty))]
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
            f"(SPEC: bounded, no growth across repeated runs)."
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
    p.add_argument("--repeat", default="?")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--started", default=None)
    p.add_argument("--title", default="flowbook benchmarks")
    p.add_argument("--workloads", default=None, help="only these workloads (space-separated)")
    p.add_argument("--memory", default=None, help="memory.py's JSON, for the memory section")
    a = p.parse_args(argv)
    text = build(a)
    with open(a.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
