"""Markdown table of median wall times from run.py JSON lines: engine A vs engine B.

python summarize.py A.jsonl B.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict


def load(path):
    """-> {workload: {"walls": [...], "rss": [...]}}; phases become workload:phase rows."""
    rows = defaultdict(lambda: {"walls": [], "rss": []})
    for line in open(path):
        rec = json.loads(line)
        items = (
            [(f"{rec['workload']}:{ph}", r) for ph, r in rec["phases"].items()]
            if "phases" in rec
            else [(rec["workload"], rec)]
        )
        for name, r in items:
            rows[name]["walls"] += r.get("walls", [r["wall_s"]])
            rows[name]["rss"].append(r["rss_peak_mb"])
    return rows


def cell(row):
    w = row["walls"]
    return f"{statistics.median(w):.3f} ({min(w):.3f}–{max(w):.3f}, n={len(w)})" if w else "–"


def main(a_path, b_path):
    a, b = load(a_path), load(b_path)
    print(f"| workload | A median s (min–max, n) | B median s (min–max, n) | A/B | A peak RSS MB |")  # noqa: F541
    print("|---|---|---|---|---|")
    for name in sorted(set(a) | set(b), key=lambda n: (n not in a, n)):
        ra, rb = a.get(name, {"walls": [], "rss": []}), b.get(name, {"walls": [], "rss": []})
        r = (
            statistics.median(ra["walls"]) / statistics.median(rb["walls"])
            if ra["walls"] and rb["walls"]
            else None
        )
        ratio = "–" if r is None else f"{r:.1f}×" if r < 10 else f"{r:,.0f}×"
        rss = f"{max(ra['rss']):.0f}" if ra["rss"] else "–"
        print(f"| {name} | {cell(ra)} | {cell(rb)} | {ratio} | {rss} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
