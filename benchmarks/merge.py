"""Fold a partial measurement into the full one: ``benchmarks/run --update`` uses it.

  python merge.py --into out --from out/update --engines "flowbook flowbook-fresh plain" \
      --workloads "a b" --started ISO --finished ISO --repeat N [--alternate] \
      [--settings "defaults fresh"] [--earlier-started ISO]
  python merge.py --fresh --into out --engines ... --workloads ... --started ... (a whole run)

For each engine, the records of the given workloads in ``INTO/ENGINE.jsonl`` are replaced by
those in ``FROM/ENGINE.jsonl`` (the other workloads' records are kept as they are), and the
``FAILED:`` lines of those workloads in ``INTO/ENGINE.log`` by the new log. ``INTO/runs.json``
records, per workload, the run that measured it (report.py says which figures come from which
run). If it does not exist yet, the workloads already in ``INTO`` are entered as measured by
one earlier run (started ``--earlier-started``, if known).

With ``--fresh`` nothing is merged: a whole run writes ``INTO/runs.json`` for its workloads.

Settings. flowbook is measured at its defaults (``flowbook.jsonl``), with the fresh-home
settings (``flowbook-fresh.jsonl``) and/or at the defaults with ``FLOWBOOK_STORE_WAIT=off``
(``nowait``, ``flowbook-nowait.jsonl``; only the workloads of ``NOWAIT_WORKLOADS``, so for the
others a run's settings count without it); ``--settings`` names those a run measured, and both
``runs.json`` and every flowbook record (``"settings"``, stamped by suite.sh) keep them. An
update must measure the same settings as the figures it replaces: folding defaults figures into
a run that measured more (another table would then compare an old run with new plain
figures), a record of one setting into another's file, or figures whose settings were never
recorded, is refused (exit status 2, nothing written), with a message naming both settings and
the command that would measure the same ones.
"""

import argparse
import json
import os
import sys

# the file each flowbook setting's records go to, and benchmarks/run's option for it
SETTING_ENGINE = {"defaults": "flowbook", "fresh": "flowbook-fresh", "nowait": "flowbook-nowait"}
SETTING_OPTION = {"defaults": "--defaults", "fresh": "--fresh-home", "nowait": "--nowait"}
ORDER = ("defaults", "fresh", "nowait")
# the workloads measured at "nowait" (benchmarks/run reads this list): the quick ones whose
# flow calls' ends can differ when they do not wait for the store (not Dask, process pools,
# sleeps or the import)
NOWAIT_WORKLOADS = (
    "seq_1000",
    "submit_1000",
    "map_1000",
    "chain_500",
    "cache_hit_1000",
    "retries",
    "flow_call_100",
    "map_10000",
)


class Refused(Exception):
    """An update that would mix settings; its message says why and what to do."""


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


def jsonl_settings(path, workloads):
    """{workload: set of the "settings" of its records} in a JSONL file (None: not recorded)."""
    found = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    if rec["workload"] in workloads:
                        found.setdefault(rec["workload"], set()).add(rec.get("settings"))
    return found


def settings_of(name, settings):
    """The settings a run of SETTINGS measured workload NAME at: without "nowait" for a
    workload outside NOWAIT_WORKLOADS (None stays None: not recorded)."""
    if settings is None:
        return None
    return {s for s in settings if s != "nowait" or name in NOWAIT_WORKLOADS}


def settings_text(settings):
    """'defaults', 'fresh', 'defaults and fresh', ... (None: 'unrecorded settings')."""
    if settings is None:
        return "unrecorded settings"
    return " and ".join(s for s in ORDER if s in settings) or "no flowbook settings"


def run_flags(settings):
    """benchmarks/run's options that measure SETTINGS, or None when no run measures just those."""
    settings = set(settings)
    if settings == set(ORDER):
        return []
    if settings == {"defaults", "fresh"}:
        return ["--no-nowait"]
    if len(settings) == 1:
        return [SETTING_OPTION[settings.pop()]]
    return None


def run_command(settings, workloads):
    """The update that measures SETTINGS for WORKLOADS (None: no such benchmarks/run)."""
    flags = run_flags(settings)
    if flags is None:
        return None
    return " ".join(["benchmarks/run --update", *flags, f'--workloads "{" ".join(workloads)}"'])


def check_settings(into, source, runs, settings, workloads):
    """Raise Refused if folding SOURCE into INTO would mix flowbook's settings."""
    problems = []
    for name in workloads:
        earlier = runs.get(name)
        if earlier is None:
            continue
        had = settings_of(name, earlier.get("settings"))
        if had is None and any(
            name in jsonl_workloads(os.path.join(into, f"{SETTING_ENGINE[s]}.jsonl")) for s in ORDER
        ):
            problems.append(
                f"{name}: the figures in {into} do not record their settings (measured before "
                "settings were recorded)"
            )
        elif had is not None and had != settings_of(name, settings):
            when = earlier.get("started") or "an earlier run"
            problems.append(
                f"{name}: measured at {settings_text(had)} (run started {when}); this update "
                f"measures {settings_text(settings_of(name, settings))}"
            )
    for setting in ORDER:
        engine = SETTING_ENGINE[setting]
        for where in (into, source) if source else (into,):
            path = os.path.join(where, f"{engine}.jsonl")
            for name, found in sorted(jsonl_settings(path, workloads).items()):
                wrong = sorted(
                    "unrecorded settings" if s is None else s for s in found if s != setting
                )
                if wrong:
                    problems.append(
                        f"{name}: {path} holds records measured at {', '.join(wrong)}, "
                        f"not {setting}"
                    )
        kept = set(jsonl_workloads(os.path.join(into, f"{engine}.jsonl")))
        for name in sorted(set(workloads) & kept):
            if setting in settings_of(name, settings):
                continue
            message = (
                f"{name}: {engine}.jsonl keeps figures at {setting} that would then be "
                "compared with this update's plain figures"
            )
            if not any(p.startswith(f"{name}: measured at") for p in problems):
                problems.append(message)
    if problems:
        had = {s for n in workloads for s in (runs.get(n) or {}).get("settings") or ()}
        command = run_command(sorted(had, key=ORDER.index), workloads) if had else None
        advice = (
            f"measure them with the same settings ({command})"
            if command
            else "make a full run (benchmarks/run)"
        )
        raise Refused(
            "merge.py: refusing to mix settings; nothing was changed:\n  "
            + "\n  ".join(problems)
            + f"\nEither {advice}, or make a full run at the settings you want."
        )


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
        "settings": [s for s in ORDER if s in a.settings.split()],
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
    p.add_argument(
        "--check",
        action="store_true",
        help="only check, before measuring, that an update of these settings may be folded in",
    )
    p.add_argument("--engines", required=True)
    p.add_argument("--workloads", required=True)
    p.add_argument("--started", required=True)
    p.add_argument("--finished", required=True)
    p.add_argument("--repeat", required=True)
    p.add_argument("--alternate", action="store_true")
    p.add_argument("--earlier-started", default=None)
    p.add_argument(
        "--settings",
        default="",
        help='flowbook settings measured: any of "defaults", "fresh", "nowait"',
    )

    a = p.parse_args(argv)
    unknown = [s for s in a.settings.split() if s not in ORDER]
    if unknown:
        p.error(f"--settings {a.settings!r}: choose from {', '.join(ORDER)}")
    workloads = a.workloads.split()
    runs_path = os.path.join(a.into, "runs.json")
    if a.fresh:
        write_runs(runs_path, {name: run_entry(a) for name in workloads})
        return
    if not a.source and not a.check:
        p.error("--from is needed unless --fresh or --check")
    runs = read_runs(runs_path)
    if not runs:
        earlier = {"started": a.earlier_started or None}
        for engine in a.engines.split():
            for name in jsonl_workloads(os.path.join(a.into, f"{engine}.jsonl")):
                runs.setdefault(name, earlier)
    try:
        check_settings(a.into, a.source, runs, a.settings.split(), workloads)
    except Refused as refused:
        print(refused, file=sys.stderr)
        sys.exit(2)
    if a.check:
        return
    for engine in a.engines.split():
        n = merge_engine(a.into, a.source, engine, workloads)
        print(f"merge: {engine}: {n} new records of {' '.join(workloads)}")
    for name in workloads:
        runs[name] = run_entry(a)
    write_runs(runs_path, runs)


if __name__ == "__main__":
    main()
