"""Fold a partial measurement into the full one: ``benchmarks/run --update`` uses it.

  python merge.py --into out --from out/update --engines "flowbook plain" \
      --workloads "a b" --started ISO --finished ISO --repeat N [--alternate] \
      [--earlier-started ISO]
  python merge.py --fresh --into out --engines ... --workloads ... --started ... (a whole run)

For each engine, the records of the given workloads in ``INTO/ENGINE.jsonl`` are replaced by
those in ``FROM/ENGINE.jsonl`` (the other workloads' records are kept as they are), and the
``FAILED:`` lines of those workloads in ``INTO/ENGINE.log`` by the new log. ``INTO/runs.json``
records, per workload, the run that measured it (report.py says which figures come from which
run). If it does not exist yet, the workloads already in ``INTO`` are entered as measured by
one earlier run (started ``--earlier-started``, if known).

With ``--fresh`` nothing is merged: a whole run writes ``INTO/runs.json`` for its workloads.
"""

import argparse
import json
import os


def jsonl_workloads(path):
    """The workloads with records in a JSONL file, in order."""
    names = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    name = json.loads(line)["workload"]
                    if name not in names:
                        names.append(name)
    return names


def read_runs(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def write_runs(path, runs):
    with open(path, "w") as f:
        json.dump(runs, f, indent=1, sort_keys=True)
        f.write("\n")


def run_entry(a):
    return {
        "started": a.started,
        "finished": a.finished,
        "repeat": int(a.repeat),
        "engines": a.engines.split(),
        "alternate": a.alternate,
    }


def merge_engine(into, source, engine, workloads):
    dst, src = os.path.join(into, f"{engine}.jsonl"), os.path.join(source, f"{engine}.jsonl")
    kept = []
    if os.path.exists(dst):
        with open(dst) as f:
            kept = [ln for ln in f if ln.strip() and json.loads(ln)["workload"] not in workloads]
    new = []
    if os.path.exists(src):
        with open(src) as f:
            new = [ln for ln in f if ln.strip()]
    with open(dst + ".tmp", "w") as f:
        f.writelines(ln if ln.endswith("\n") else ln + "\n" for ln in kept + new)
    os.replace(dst + ".tmp", dst)

    dst_log, src_log = os.path.splitext(dst)[0] + ".log", os.path.splitext(src)[0] + ".log"
    old_log = []
    if os.path.exists(dst_log):
        with open(dst_log, errors="replace") as f:
            old_log = [
                ln
                for ln in f
                if not (ln.startswith("FAILED:") and ln.split(":", 1)[1].strip() in workloads)
            ]
    new_log = []
    if os.path.exists(src_log):
        with open(src_log, errors="replace") as f:
            new_log = list(f)
    with open(dst_log, "w") as f:
        f.writelines(old_log)
        f.write(f"== update: {' '.join(workloads)}\n")
        f.writelines(new_log)
    return len(new)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--into", required=True)
    p.add_argument("--from", dest="source")
    p.add_argument("--fresh", action="store_true", help="only write INTO/runs.json")
    p.add_argument("--engines", required=True)
    p.add_argument("--workloads", required=True)
    p.add_argument("--started", required=True)
    p.add_argument("--finished", required=True)
    p.add_argument("--repeat", required=True)
    p.add_argument("--alternate", action="store_true")
    p.add_argument("--earlier-started", default=None)
    a = p.parse_args(argv)
    workloads = a.workloads.split()
    runs_path = os.path.join(a.into, "runs.json")
    if a.fresh:
        write_runs(runs_path, {name: run_entry(a) for name in workloads})
        return
    if not a.source:
        p.error("--from is needed unless --fresh")
    runs = read_runs(runs_path)
    if not runs:
        earlier = {"started": a.earlier_started or None}
        for engine in a.engines.split():
            for name in jsonl_workloads(os.path.join(a.into, f"{engine}.jsonl")):
                runs.setdefault(name, earlier)
    for engine in a.engines.split():
        n = merge_engine(a.into, a.source, engine, workloads)
        print(f"merge: {engine}: {n} new records of {' '.join(workloads)}")
    for name in workloads:
        runs[name] = run_entry(a)
    write_runs(runs_path, runs)


if __name__ == "__main__":
    main()
