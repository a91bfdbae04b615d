# ruff: noqa: RUF001  (the report's own text, with the multiplication sign and en dash)
"""The benchmark harness: its workloads run against flowbook, and its logic holds.

The slow tests prove that the adapter and the workloads work (a broken adapter would otherwise
go unnoticed until someone measures); timings are the job of ``benchmarks/run``, not of tests.
The others check the harness's own logic on fixture figures: report.py's three tables (flowbook
at the defaults, at the fresh-home settings, and at the defaults with FLOWBOOK_STORE_WAIT=off)
and issue 18's target column, merge.py's refusal to mix settings in ``--update``, suite.sh's
settings stamp, the adapter's settings reaching the measured process, benchmarks/run's options.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks"


def run_workload(workload: str, timeout: float = 120) -> dict[str, Any]:
    """Run one workload on flowbook in a fresh process; its JSON record."""
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--engine",
            str(BENCH / "adapter_flowbook.py"),
            "--workload",
            workload,
            "--here",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["workload"] == workload
    assert record["engine"].startswith("flowbook ")
    return record


@pytest.mark.slow
@pytest.mark.parametrize(
    "workload", ["seq_1000", "submit_1000", "map_1000", "chain_500", "retries", "flow_call_100"]
)
def test_workload_runs_on_flowbook(workload: str) -> None:
    assert run_workload(workload)["wall_s"] > 0


@pytest.mark.slow
def test_dask_100_cold_runs_on_flowbook() -> None:
    """flowbook's Dask adapter: a second run reuses the cluster, which dask_close() then closes."""
    record = run_workload("dask_100_cold", timeout=180)
    assert record["same_cluster"] is True
    assert record["close_s"] is not None
    assert record["wall_s"] >= record["to_results_s"] > 0


@pytest.mark.slow
def test_the_per_task_breakdown_measures_every_layer(tmp_path: Path) -> None:
    out = tmp_path / "breakdown.json"
    command = [sys.executable, str(BENCH / "breakdown.py"), "--repeat", "1", "--shapes", "seq"]
    proc = subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    seq = result["shapes"]["seq"]
    assert seq["tasks"] == 1000
    assert set(seq["us_per_task"]) == {
        "engine",
        "events",
        "store",
        "gc_freeze",
        "info",
        "console",
        "hashing",
    }
    assert all(us > 0 for us in seq["us_per_task"].values())
    # the console row prints a run line per task run of the timed call (and the flow's own
    # lines) to a file, and is compared with the row at INFO without the console
    assert 1000 <= seq["console"]["lines_per_run"] < 1010
    assert seq["console"]["us_per_line"] is not None
    assert seq["console"]["compared_with"] == "info"
    assert seq["medians"]["info"]["console_lines"] == 0
    assert seq["medians"]["gc_freeze"]["console_lines"] == 0
    assert result["settings"]["name"] == "fresh"
    assert "µs per console line" in proc.stdout
    # only the layers with the store on wait for it and have a writer
    assert seq["medians"]["engine"]["barrier_s"] == 0
    assert seq["medians"]["store"]["barrier_s"] > 0
    assert seq["medians"]["store"]["writer_cpu_s"] > 0
    assert result["task_input_hash_us"] > 0
    assert "| engine alone (no events, no store) |" in proc.stdout
    bad = subprocess.run(
        [sys.executable, str(BENCH / "breakdown.py"), "--shapes", "grid"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "--shapes 'grid': choose from seq, map" in bad.stderr


@pytest.mark.slow
def test_profile_records_a_workload_and_refuses_unknown_ones() -> None:
    script = BENCH / "profile"
    bad = subprocess.run([str(script), "no_such_workload"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "unknown workload 'no_such_workload'; one of:" in bad.stderr
    assert "seq_1000" in bad.stderr
    proc = subprocess.run(
        [str(script), "seq_1000", "--times", "3"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stacks = (BENCH / "out" / "profile-seq_1000.txt").read_text()
    assert "wl_seq_1000" in stacks
    assert "-- own time" in proc.stdout


# --- the harness's logic, on fixture figures (fast) ------------------------------------------


def write_jsonl(path: Path, walls: dict[str, list[float]], settings: str | None = None) -> None:
    """One run.py-like record per wall time; flowbook's records carry suite.sh's stamp."""
    engine = "plain" if settings is None else "flowbook 0.1.0"
    with path.open("a") as f:
        for workload, values in walls.items():
            for wall in values:
                record: dict[str, Any] = {
                    "engine": engine,
                    "workload": workload,
                    "wall_s": wall,
                    "rss_peak_mb": 50.0,
                }
                if settings is not None:
                    record = {"settings": settings, **record}
                f.write(json.dumps(record) + "\n")


def map_update(tmp_path: Path, fresh: float) -> Path:
    """An update's out dir: map_10000 measured for plain Python, the defaults and fresh home."""
    update = tmp_path / "update"
    update.mkdir()
    write_jsonl(update / "plain.jsonl", {"map_10000": [0.2]})
    write_jsonl(update / "flowbook.jsonl", {"map_10000": [0.3]}, "defaults")
    write_jsonl(update / "flowbook-fresh.jsonl", {"map_10000": [fresh]}, "fresh")
    return update


def merge_check(
    into: Path, engines: str, workloads: str, settings: str
) -> subprocess.CompletedProcess[str]:
    """``merge.py --check``: what benchmarks/run asks before it measures an update."""
    return script(
        "merge.py", "--check", "--into", into, "--engines", engines,
        "--workloads", workloads, "--settings", settings,
        "--started", "-", "--finished", "-", "--repeat", "5",
    )  # fmt: skip


def refused_as_mixed(
    into: Path, update: Path, settings: str, stamps: dict[str, str], message: str
) -> None:
    """The update's files (map_10000) written with ``stamps``: merging them is refused with
    ``message`` (after the update's directory) and changes nothing."""
    for name, stamp in stamps.items():
        (update / name).unlink(missing_ok=True)
        write_jsonl(update / name, {"map_10000": [0.3]}, stamp)
    before = snapshot(into)
    proc = merge(into, update, settings, "map_10000")
    assert proc.returncode == 2
    assert f"{update}/{message}" in proc.stderr
    assert snapshot(into) == before


def script(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def table_row(text: str, first_cell: str, after: str = "") -> list[str]:
    """The cells of the first Markdown table row starting with FIRST_CELL after AFTER."""
    start = text.index(after) if after else 0
    for line in text[start:].splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError(f"no row {first_cell!r} after {after!r} in:\n{text}")


# five processes a workload: issue 18's targets are judged on medians of at least five
PLAIN = {
    "map_10000": [0.10, 0.11, 0.09, 0.10, 0.12],
    "seq_1000": [0.002] * 5,
    "import_time": [0.015] * 5,
}
DEFAULTS = {
    "map_10000": [0.15, 0.16, 0.14, 0.15, 0.13],
    "seq_1000": [0.030] * 5,
    "import_time": [0.070] * 5,
}
FRESH = {"map_10000": [0.12] * 5, "seq_1000": [0.010] * 5, "import_time": [0.050] * 5}


def fixture_out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    write_jsonl(out / "plain.jsonl", PLAIN)
    write_jsonl(out / "flowbook.jsonl", DEFAULTS, "defaults")
    write_jsonl(out / "flowbook-fresh.jsonl", FRESH, "fresh")
    return out


def test_report_renders_the_defaults_and_the_fresh_home_tables_with_issue_targets(
    tmp_path: Path,
) -> None:
    out = fixture_out(tmp_path)
    results = tmp_path / "RESULTS.md"
    proc = script(
        "report.py",
        "--flowbook", out / "flowbook.jsonl",
        "--settings", "defaults (INFO, console on), grown store",
        "--fresh", out / "flowbook-fresh.jsonl",
        "--fresh-settings", "fresh home: WARNING",
        "--plain", out / "plain.jsonl",
        "--workloads", "map_10000 seq_1000 import_time",
        "--out", results,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = results.read_text()
    assert "- flowbook settings: defaults (INFO, console on), grown store" in text
    assert "- flowbook settings of the second table: fresh home: WARNING" in text
    # main table: the defaults against plain, issue 18's target and verdict beside each
    head = table_row(text, "workload")
    assert head[4:6] == ["target (issue 18)", "met?"]
    assert table_row(text, "map_10000")[1:6] == [
        "0.150",
        "0.100",
        "1.50×",
        "≤ 2× plain",
        "yes (1.50×)",
    ]
    assert table_row(text, "seq_1000")[3:6] == ["15×", "≤ 8× plain", "**NO** (15.00×)"]
    assert table_row(text, "import_time")[4:6] == ["≤ 60 ms", "**NO** (70.0 ms)"]
    assert (
        "issue 18 targets (at the defaults) met: 1 of 3; missed or failed: seq_1000, import_time."
        in text
    )
    # the second table: fresh home against the same plain figures, and defaults / fresh
    second = "## flowbook with the fresh-home settings"
    assert "Settings: fresh home: WARNING." in text
    assert table_row(text, "map_10000", second) == [
        "map_10000",
        "0.120",
        "0.100",
        "1.20×",
        "0.150",
        "1.25×",
    ]
    assert table_row(text, "seq_1000", second)[3:] == ["5.00×", "0.0300", "3.00×"]
    # the spread table has a column for each setting
    assert "| workload | flowbook s (min–max, n) | flowbook fresh home s (min–max, n) |" in text


def test_report_of_the_fresh_home_settings_alone_judges_no_issue_target(tmp_path: Path) -> None:
    out = fixture_out(tmp_path)
    results = tmp_path / "RESULTS.md"
    proc = script(
        "report.py",
        "--flowbook", out / "flowbook-fresh.jsonl",
        "--settings", "fresh home: WARNING",
        "--plain", out / "plain.jsonl",
        "--workloads", "map_10000 seq_1000",
        "--out", results,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = results.read_text()
    assert "## flowbook with the fresh-home settings" not in text
    assert table_row(text, "map_10000")[4:6] == ["≤ 2× plain", "– (a target at the defaults)"]
    assert "issue 18 targets are at the defaults; this table is at the fresh-home settings" in text


def test_report_shows_the_new_workloads_with_their_targets(tmp_path: Path) -> None:
    out = tmp_path
    write_jsonl(out / "plain.jsonl", {"dask_map_1000": [2.0] * 5, "cpu_process_8": [2.0] * 5})
    write_jsonl(
        out / "flowbook.jsonl", {"dask_map_1000": [2.4] * 5, "cpu_process_8": [2.3] * 5}, "defaults"
    )
    results = out / "RESULTS.md"
    proc = script(
        "report.py",
        "--flowbook", out / "flowbook.jsonl",
        "--plain", out / "plain.jsonl",
        "--workloads", "dask_map_1000 dask_map_5000 cpu_process_8",
        "--out", results,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = results.read_text()
    assert table_row(text, "dask_map_1000")[4:6] == ["≤ 1.3× plain Dask", "yes (1.20×)"]
    assert table_row(text, "dask_map_5000")[4:6] == ["≤ 1.3× plain Dask", "not measured"]
    assert table_row(text, "cpu_process_8")[4:6] == [
        "≤ 1.1× ProcessPoolExecutor (within 10%)",
        "**NO** (1.15×)",
    ]
    assert "met: 1 of 3; missed or failed: cpu_process_8; not measured: dask_map_5000." in text
    assert "plain Python is `client.map` on such a cluster" in text
    assert "plain Python is `ProcessPoolExecutor(2)`" in text


DEFAULTS_LINE = "defaults (INFO, console on, stderr to a file), each process on a grown store"


def report_main_table(tmp_path: Path, flowbook: Path, *extra: str | Path) -> str:
    """RESULTS.md of FLOWBOOK's figures given the defaults' settings line, as benchmarks/run did."""
    results = tmp_path / "RESULTS.md"
    proc = script(
        "report.py",
        "--flowbook", flowbook,
        "--settings", DEFAULTS_LINE,
        "--plain", tmp_path / "out" / "plain.jsonl",
        "--workloads", "map_10000 seq_1000 import_time",
        "--out", results,
        *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return results.read_text()


def test_report_judges_no_issue_target_on_figures_whose_settings_are_not_recorded(
    tmp_path: Path,
) -> None:
    """Figures left by an older harness (no stamp), or stamped with both settings, were not
    (all) measured at the defaults: no verdict, and not the defaults' settings line."""
    out = fixture_out(tmp_path)
    unstamped = out / "unstamped.jsonl"
    write_jsonl(unstamped, DEFAULTS, "defaults")
    records = [json.loads(line) for line in unstamped.read_text().splitlines()]
    records[0].pop("settings")  # one record without the stamp is enough
    unstamped.write_text("".join(json.dumps(r) + "\n" for r in records))
    mixed = out / "mixed.jsonl"
    write_jsonl(mixed, {"map_10000": DEFAULTS["map_10000"]}, "defaults")
    write_jsonl(mixed, {"seq_1000": FRESH["seq_1000"], "import_time": [0.01] * 5}, "fresh")
    for path, why in (
        (unstamped, "some of its records carry no settings stamp"),
        (mixed, "its records are stamped with different settings"),
    ):
        text = report_main_table(tmp_path, path)
        assert DEFAULTS_LINE not in text
        assert f"- flowbook settings: not recorded ({path.name}: {why}" in text
        for name in ("map_10000", "seq_1000", "import_time"):
            assert table_row(text, name)[5] == "– (settings not recorded)"
        assert "yes (" not in text
        assert "**NO** (" not in text
        assert "the settings of this table's figures are not recorded, so none is judged" in text
    # the same figures, every record stamped defaults: judged, under the given line
    text = report_main_table(tmp_path, out / "flowbook.jsonl")
    assert f"- flowbook settings: {DEFAULTS_LINE}" in text
    assert table_row(text, "map_10000")[5] == "yes (1.50×)"


def test_report_judges_issue_targets_on_five_runs_or_more(tmp_path: Path) -> None:
    out = fixture_out(tmp_path)
    few = out / "few.jsonl"
    # map_10000: four flowbook processes; seq_1000: five, but four plain ones; import_time:
    # an absolute target, five flowbook processes (the plain figures do not count)
    write_jsonl(
        few,
        {"map_10000": [0.15] * 4, "seq_1000": [0.012] * 5, "import_time": [0.05] * 5},
        "defaults",
    )
    plain = tmp_path / "plain-few.jsonl"
    write_jsonl(plain, {"map_10000": [0.1] * 5, "seq_1000": [0.002] * 4, "import_time": [0.01]})
    text = report_main_table(tmp_path, few, "--plain", plain)
    assert table_row(text, "map_10000")[5] == "– (fewer than 5 runs)"
    assert table_row(text, "seq_1000")[5] == "– (fewer than 5 runs)"
    assert table_row(text, "import_time")[5] == "yes (50.0 ms)"
    assert (
        "issue 18 targets (at the defaults) met: 1 of 3; not judged, fewer than 5 runs: "
        "seq_1000, map_10000." in text
    )


def load_breakdown() -> Any:
    spec = importlib.util.spec_from_file_location("breakdown", BENCH / "breakdown.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_breakdown_compares_the_console_row_at_its_own_level_and_counts_its_lines() -> None:
    bd = load_breakdown()
    for settings in ("fresh", "defaults"):
        layers = bd.layers_of(settings)
        below = layers[layers.index("console") - 1]
        levels = {
            layer: bd.child_env(layer, "/nonexistent", settings).get("FLOWBOOK_LOGGING_LEVEL")
            for layer in (below, "console")
        }
        # the console row and the row it is compared with: one level, only the console differs
        assert levels[below] == levels["console"], (settings, levels)
        assert bd.child_env(below, "/x", settings)["FLOWBOOK_CONSOLE"] == "off"
        assert "FLOWBOOK_CONSOLE" not in bd.child_env("console", "/x", settings)
    assert bd.layers_of("fresh")[3:5] == ("gc_freeze", "info")
    assert "info" not in bd.layers_of("defaults")
    assert bd.child_env("gc_freeze", "/x", "fresh")["FLOWBOOK_LOGGING_LEVEL"] == "WARNING"
    line = "12:00:00.{:03d} | INFO    | Task run 'inc-{}' - Finished in state Completed()"
    stderr = [
        line.format(1, 0),  # the warm-up call's lines
        "12:00:00.002 | INFO    | Flow run 'red-orca' - Finished in state Completed()",
        bd.MARK_START,
        "12:00:01.000 | INFO    | flowbook.engine - Created flow run 'blue-owl' for flow 'seq'",
        line.format(2, 1),
        "/work/x.py:3: UserWarning: something",  # not the console's
        "  warnings.warn('something')",
        "12:00:01.004 | WARNING | Task run 'inc-2' - a warning",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        line.format(5, 3),
        bd.MARK_END,
        line.format(9, 9),  # after the timed call
    ]
    assert bd.timed_console_lines(stderr) == 4
    with pytest.raises(RuntimeError, match="marks are missing"):
        bd.timed_console_lines(stderr[:-2])


def merge(
    into: Path, source: Path | None, settings: str, *workloads: str
) -> subprocess.CompletedProcess[str]:
    files = {"defaults": "flowbook", "fresh": "flowbook-fresh", "nowait": "flowbook-nowait"}
    engines = " ".join([*(files[s] for s in settings.split()), "plain"])
    args: list[str | Path] = ["--into", into]
    args += ["--from", source] if source is not None else ["--fresh"]
    args += ["--engines", engines, "--workloads", " ".join(workloads), "--settings", settings]
    args += ["--started", "2026-12-05T10:00:00Z", "--finished", "2026-12-05T11:00:00Z"]
    return script("merge.py", *args, "--repeat", "5", "--alternate")


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.iterdir()) if p.is_file()}


def test_update_folds_in_figures_of_the_same_settings(tmp_path: Path) -> None:
    into = fixture_out(tmp_path)
    assert (
        merge(into, None, "defaults fresh", "map_10000", "seq_1000", "import_time").returncode == 0
    )
    runs = json.loads((into / "runs.json").read_text())
    assert runs["map_10000"]["settings"] == ["defaults", "fresh"]
    update = map_update(tmp_path, fresh=0.25)
    proc = merge(into, update, "defaults fresh", "map_10000")
    assert proc.returncode == 0, proc.stderr
    walls = [json.loads(line) for line in (into / "flowbook-fresh.jsonl").read_text().splitlines()]
    assert [r["wall_s"] for r in walls if r["workload"] == "map_10000"] == [0.25]
    assert [r["wall_s"] for r in walls if r["workload"] == "seq_1000"] == FRESH["seq_1000"]


def test_update_refuses_to_mix_settings_and_changes_nothing(tmp_path: Path) -> None:
    into = fixture_out(tmp_path)
    assert (
        merge(into, None, "defaults fresh", "map_10000", "seq_1000", "import_time").returncode == 0
    )
    before = snapshot(into)
    update = tmp_path / "update"
    update.mkdir()
    write_jsonl(update / "plain.jsonl", {"map_10000": [0.2]})
    write_jsonl(update / "flowbook.jsonl", {"map_10000": [0.3]}, "defaults")
    # the defaults alone into a run of both: the fresh-home table would mix two runs
    proc = merge(into, update, "defaults", "map_10000")
    assert proc.returncode == 2
    assert "refusing to mix settings; nothing was changed" in proc.stderr
    assert (
        "map_10000: measured at defaults and fresh (run started 2026-12-05T10:00:00Z)"
        in proc.stderr
    )
    assert "this update measures defaults" in proc.stderr
    # (a run of defaults and fresh without nowait is benchmarks/run --no-nowait)
    assert 'benchmarks/run --update --no-nowait --workloads "map_10000"' in proc.stderr
    assert snapshot(into) == before
    # benchmarks/run asks the same before it measures anything (merge.py --check)
    check = merge_check(into, "flowbook plain", "map_10000", "defaults")
    assert check.returncode == 2
    assert "this update measures defaults" in check.stderr
    same = merge_check(into, "flowbook flowbook-fresh plain", "map_10000", "defaults fresh")
    assert same.returncode == 0, same.stderr
    assert snapshot(into) == before
    # a record of the other setting in a setting's file is refused too
    refused_as_mixed(
        into,
        update,
        "defaults fresh",
        {"flowbook.jsonl": "fresh", "flowbook-fresh.jsonl": "fresh"},
        "flowbook.jsonl holds records measured at fresh, not defaults",
    )
    assert snapshot(into) == before


def test_update_refuses_figures_whose_settings_were_never_recorded(tmp_path: Path) -> None:
    into = tmp_path / "out"
    into.mkdir()
    write_jsonl(into / "plain.jsonl", PLAIN)
    # an earlier harness: no "settings" in the records, no runs.json
    with (into / "flowbook.jsonl").open("w") as f:
        f.write(
            json.dumps(
                {"engine": "flowbook", "workload": "map_10000", "wall_s": 0.2, "rss_peak_mb": 1.0}
            )
            + "\n"
        )
    before = snapshot(into)
    update = map_update(tmp_path, fresh=0.3)
    proc = merge(into, update, "defaults fresh", "map_10000")
    assert proc.returncode == 2
    assert "do not record their settings" in proc.stderr
    assert "make a full run (benchmarks/run)" in proc.stderr
    assert snapshot(into) == before


def test_suite_stamps_the_settings_on_each_record_and_names_failures(tmp_path: Path) -> None:
    out = tmp_path / "plain.jsonl"
    env = {**os.environ, "PYTHON": sys.executable, "BENCH_SETTINGS": "defaults"}
    proc = subprocess.run(
        [str(BENCH / "suite.sh"), "plain", "2", str(out), "seq_1000", "no_such_workload"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["workload"], r["settings"]) for r in records] == [("seq_1000", "defaults")] * 2
    assert proc.stderr.count("FAILED: no_such_workload") == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--engines", "flowbook dask"],
            "unknown engine: dask (choose from flowbook, plain, prefect)",
        ),
        (
            ["--update", "--quick", "--workloads", "seq_1000"],
            "--update and --quick exclude each other",
        ),
        (["--update"], "--update needs --workloads"),
        (["--nowait", "--fresh-home"], "choose one of --defaults, --fresh-home, --nowait"),
        (["--defaults", "--nowait"], "choose one of --defaults, --fresh-home, --nowait"),
        (["--nowait", "--no-nowait"], "--nowait and --no-nowait exclude each other"),
        (
            ["--nowait", "--workloads", "seq_1000 dask_100"],
            "--nowait measures only seq_1000 submit_1000 map_1000 chain_500 cache_hit_1000 "
            "retries flow_call_100 map_10000; not dask_100",
        ),
        (
            ["--nowait", "--update", "--workloads", "flow_call_100 widget"],
            "; not widget",
        ),
    ],
)
def test_run_refuses_bad_options(args: list[str], message: str) -> None:
    proc = subprocess.run([str(BENCH / "run"), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr


# --- the nowait settings: the defaults with FLOWBOOK_STORE_WAIT=off ---------------------------

NOWAIT = {"map_10000": [0.12] * 5, "seq_1000": [0.020] * 5}
NOWAIT_LINE = "nowait: FLOWBOOK_STORE_WAIT=off, and otherwise the defaults"


def report_with_nowait(tmp_path: Path, nowait: Path, *extra: str | Path) -> str:
    """RESULTS.md of a full run's three settings, NOWAIT's figures in the third table."""
    out = tmp_path / "out"
    results = tmp_path / "RESULTS.md"
    proc = script(
        "report.py",
        "--flowbook", out / "flowbook.jsonl",
        "--settings", DEFAULTS_LINE,
        "--fresh", out / "flowbook-fresh.jsonl",
        "--fresh-settings", "fresh home: WARNING",
        "--nowait", nowait,
        "--nowait-settings", NOWAIT_LINE,
        "--plain", out / "plain.jsonl",
        "--workloads", "map_10000 seq_1000 import_time",
        "--out", results,
        *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return results.read_text()


def test_report_renders_the_nowait_table_and_judges_its_issue_targets(tmp_path: Path) -> None:
    out = fixture_out(tmp_path)
    write_jsonl(out / "flowbook-nowait.jsonl", NOWAIT, "nowait")
    text = report_with_nowait(tmp_path, out / "flowbook-nowait.jsonl")
    third = "## flowbook at the defaults with FLOWBOOK_STORE_WAIT=off"
    assert f"- flowbook settings of the FLOWBOOK_STORE_WAIT=off table: {NOWAIT_LINE}" in text
    # the tables before it are as they were: the main one the defaults', the second fresh's
    assert text.index("## flowbook with the fresh-home settings") < text.index(third)
    assert table_row(text, "map_10000")[1:6] == [
        "0.150",
        "0.100",
        "1.50×",
        "≤ 2× plain",
        "yes (1.50×)",
    ]
    assert "issue 18 targets (at the defaults) met: 1 of 3; missed or failed: seq_1000" in text
    # the third: nowait against the same plain figures, its own verdicts, nowait / defaults
    assert table_row(text, "workload", third) == [
        "workload",
        "flowbook nowait median s",
        "plain median s",
        "nowait/plain",
        "target (issue 18)",
        "met?",
        "defaults median s",
        "nowait / defaults",
    ]
    assert table_row(text, "map_10000", third) == [
        "map_10000", "0.120", "0.100", "1.20×", "≤ 2× plain", "yes (1.20×)", "0.150", "0.80×",
    ]  # fmt: skip
    assert table_row(text, "seq_1000", third)[3:] == [
        "10×", "≤ 8× plain", "**NO** (10.00×)", "0.0300", "0.67×",
    ]  # fmt: skip
    # import_time is not measured at nowait: no row of its own in the third table
    section = text[text.index(third) : text.index("## Spread and memory")]
    assert "| import_time |" not in section
    assert (
        "issue 18 targets (at the defaults with FLOWBOOK_STORE_WAIT=off) met: 1 of 2; "
        "missed or failed: seq_1000." in section
    )
    # what the setting does, and that the main table stays the default
    assert (
        "rows are committed; the store's writer thread commits them within about half a second"
        in section
    )
    assert (
        "a kill loses at most the rows of that last half second, not the run's final state"
        in section
    )
    assert "The main table stays flowbook's default (`FLOWBOOK_STORE_WAIT=on`" in section
    spread = table_row(text, "workload", "## Spread and memory")
    assert spread[1:4] == [
        "flowbook s (min–max, n)",
        "flowbook fresh home s (min–max, n)",
        "flowbook nowait s (min–max, n)",
    ]
    assert table_row(text, "map_10000", "## Spread and memory")[3] == "0.120 (0.120–0.120, n=5)"


def test_report_judges_the_nowait_table_only_on_nowait_records_of_five_runs(
    tmp_path: Path,
) -> None:
    out = fixture_out(tmp_path)
    third = "## flowbook at the defaults with FLOWBOOK_STORE_WAIT=off"
    # figures of the defaults in the nowait file: no verdict, and not the nowait line
    wrong = out / "wrong.jsonl"
    write_jsonl(wrong, NOWAIT, "defaults")
    text = report_with_nowait(tmp_path, wrong)
    assert NOWAIT_LINE not in text
    assert (
        "- flowbook settings of the FLOWBOOK_STORE_WAIT=off table: not recorded (wrong.jsonl: "
        "its records are stamped defaults, not nowait)" in text
    )
    assert table_row(text, "map_10000", third)[5] == "– (settings not recorded)"
    # the main table is judged as before
    assert table_row(text, "map_10000")[5] == "yes (1.50×)"
    # one record without a stamp
    unstamped = out / "unstamped.jsonl"
    write_jsonl(unstamped, NOWAIT, "nowait")
    records = [json.loads(line) for line in unstamped.read_text().splitlines()]
    records[-1].pop("settings")
    unstamped.write_text("".join(json.dumps(r) + "\n" for r in records))
    text = report_with_nowait(tmp_path, unstamped)
    assert "some of its records carry no settings stamp" in text
    assert table_row(text, "seq_1000", third)[5] == "– (settings not recorded)"
    # four processes of map_10000: not judged; a failed workload is named
    few = out / "flowbook-few.jsonl"
    write_jsonl(few, {"map_10000": [0.12] * 4, "seq_1000": [0.01] * 5}, "nowait")
    (out / "flowbook-few.log").write_text("== flowbook-nowait\nFAILED: import_time\n")
    text = report_with_nowait(tmp_path, few)
    few_log = os.path.relpath(out / "flowbook-few.log", BENCH)  # (as from benchmarks/)
    assert table_row(text, "map_10000", third)[5] == "– (fewer than 5 runs)"
    assert table_row(text, "seq_1000", third)[5] == "yes (5.00×)"
    assert table_row(text, "import_time", third)[1:6] == [
        "**FAILED**", "0.0150", "–", "≤ 60 ms", f"**FAILED** (see {few_log})",
    ]  # fmt: skip
    section = text[text.index(third) : text.index("## Spread and memory")]
    assert (
        "met: 1 of 3; missed or failed: import_time; not judged, fewer than 5 runs: map_10000."
        in section
    )
    assert (
        f"Failed at the defaults with FLOWBOOK_STORE_WAIT=off (see {few_log}): import_time."
        in section
    )


def test_report_of_the_nowait_settings_alone_judges_them_in_the_main_table(tmp_path: Path) -> None:
    out = fixture_out(tmp_path)
    write_jsonl(out / "flowbook-nowait.jsonl", NOWAIT, "nowait")
    text = report_main_table(tmp_path, out / "flowbook-nowait.jsonl")
    assert "## flowbook at the defaults with FLOWBOOK_STORE_WAIT=off" not in text
    assert table_row(text, "map_10000")[1:6] == [
        "0.120",
        "0.100",
        "1.20×",
        "≤ 2× plain",
        "yes (1.20×)",
    ]
    assert (
        "issue 18 targets (at the defaults with FLOWBOOK_STORE_WAIT=off) met: 1 of 3; "
        "missed or failed: seq_1000; not measured: import_time." in text
    )
    assert "a kill loses at most the rows of that last half second" in text


def nowait_full_run(tmp_path: Path) -> Path:
    """out/ of a full run of the three settings (import_time: not a nowait workload)."""
    into = fixture_out(tmp_path)
    write_jsonl(into / "flowbook-nowait.jsonl", NOWAIT, "nowait")
    proc = merge(into, None, "defaults fresh nowait", "map_10000", "seq_1000", "import_time")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads((into / "runs.json").read_text())
    assert runs["import_time"]["settings"] == ["defaults", "fresh", "nowait"]
    return into


def test_update_folds_in_nowait_figures_with_the_other_settings(tmp_path: Path) -> None:
    into = nowait_full_run(tmp_path)
    update = tmp_path / "update"
    update.mkdir()
    write_jsonl(update / "plain.jsonl", {"map_10000": [0.2], "import_time": [0.02]})
    write_jsonl(update / "flowbook.jsonl", {"map_10000": [0.3], "import_time": [0.07]}, "defaults")
    write_jsonl(
        update / "flowbook-fresh.jsonl", {"map_10000": [0.25], "import_time": [0.06]}, "fresh"
    )
    write_jsonl(update / "flowbook-nowait.jsonl", {"map_10000": [0.28]}, "nowait")
    proc = merge(into, update, "defaults fresh nowait", "map_10000", "import_time")
    assert proc.returncode == 0, proc.stderr
    walls = [json.loads(line) for line in (into / "flowbook-nowait.jsonl").read_text().splitlines()]
    assert [r["wall_s"] for r in walls if r["workload"] == "map_10000"] == [0.28]
    assert [r["wall_s"] for r in walls if r["workload"] == "seq_1000"] == NOWAIT["seq_1000"]
    # import_time, measured without nowait by any run, may be updated without it too
    write_jsonl(update / "flowbook.jsonl", {"import_time": [0.08]}, "defaults")
    proc = merge(into, update, "defaults fresh", "import_time")
    assert proc.returncode == 0, proc.stderr


def test_update_refuses_to_mix_the_nowait_settings_and_changes_nothing(tmp_path: Path) -> None:
    into = nowait_full_run(tmp_path)
    before = snapshot(into)
    update = map_update(tmp_path, fresh=0.3)
    # without nowait (--no-nowait): the third table would compare an old run with new plain
    proc = merge(into, update, "defaults fresh", "map_10000")
    assert proc.returncode == 2
    assert (
        "map_10000: measured at defaults and fresh and nowait (run started 2026-12-05T10:00:00Z); "
        "this update measures defaults and fresh" in proc.stderr
    )
    assert (
        'measure them with the same settings (benchmarks/run --update --workloads "map_10000")'
        in proc.stderr
    )
    assert snapshot(into) == before
    # nowait alone into a run of three: refused likewise, before anything is measured
    check = merge_check(into, "flowbook-nowait plain", "seq_1000", "nowait")
    assert check.returncode == 2
    assert "this update measures nowait" in check.stderr
    # a record of the defaults in the nowait file, and of nowait in the defaults' file
    write_jsonl(update / "flowbook-nowait.jsonl", {"map_10000": [0.3]}, "defaults")
    proc = merge(into, update, "defaults fresh nowait", "map_10000")
    assert proc.returncode == 2
    assert (
        f"{update / 'flowbook-nowait.jsonl'} holds records measured at defaults, not nowait"
        in proc.stderr
    )
    refused_as_mixed(
        into,
        update,
        "defaults fresh nowait",
        {"flowbook.jsonl": "nowait", "flowbook-nowait.jsonl": "nowait"},
        "flowbook.jsonl holds records measured at nowait, not defaults",
    )
    assert snapshot(into) == before


def run_suite_at(settings: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """suite.sh on adapter_flowbook, one seq_1000 process at SETTINGS, as benchmarks/run runs it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    return subprocess.run(
        [str(BENCH / "suite.sh"), "adapter_flowbook", "1", str(tmp_path / f"{settings}.jsonl"),
         "seq_1000"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**clean, "PYTHON": sys.executable, "BENCH_SETTINGS": settings, **env},
    )  # fmt: skip


def test_the_nowait_settings_reach_the_measured_process(tmp_path: Path) -> None:
    for settings, expected in (
        ("nowait", {"FLOWBOOK_STORE_WAIT": "off"}),
        ("defaults", {}),
        ("fresh", {"FLOWBOOK_LOGGING_LEVEL": "WARNING"}),
    ):
        proc = run_suite_at(settings, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "FAILED" not in proc.stderr, proc.stderr[-3000:]
        (record,) = [json.loads(line) for line in (tmp_path / f"{settings}.jsonl").open()]
        assert record["settings"] == settings
        assert record["workload"] == "seq_1000"
        assert record["settings_env"] == expected, settings
    # and flowbook, imported by the adapter, runs with it
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    for settings, store_wait in (("nowait", "off"), ("defaults", "on")):
        proc = subprocess.run(
            [sys.executable, "-c", "import adapter_flowbook, flowbook.settings as s; "
             "print(s.get_settings().store_wait)"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=BENCH,
            env={**clean, "BENCH_SETTINGS": settings},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [store_wait], settings
    # nowait with another FLOWBOOK_STORE_WAIT is refused: the stamp would not say what ran
    proc = run_suite_at("nowait", tmp_path, FLOWBOOK_STORE_WAIT="on")
    assert "BENCH_SETTINGS=nowait measures FLOWBOOK_STORE_WAIT=off, not" in proc.stderr
    assert "FAILED: seq_1000" in proc.stderr
    assert len((tmp_path / "nowait.jsonl").read_text().splitlines()) == 1
