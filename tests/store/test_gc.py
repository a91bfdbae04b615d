"""``flowbook gc``: old runs go with everything recorded for them, unfinished runs and valid
cache entries stay; a writer in another process loses nothing; a kill in the middle leaves a
consistent store that a rerun finishes; a read-only store and bad options are clear errors;
``flowbook doctor`` reports the store's size and what gc would free.

Runs are written by real flows into the ``store`` fixture (SQLite and PostgreSQL), made old by
moving their ``created_at`` back, and collected with the real command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from store_under_test import StoreUnderTest, child_env, read_only, store

import flowbook.cli
from flowbook import flow, get_run_logger, task
from flowbook.settings import reload_settings
from flowbook.store import close_store, get_store
from flowbook.store.schema import created_us
from flowbook.tasks import task_input_hash

__all__ = ["store"]

DAY = 86400.0


@task
def big(i: int) -> bytes:
    return bytes([i % 256]) * 100_000  # more than 64 KiB: a result file


@task(cache_key_fn=task_input_hash)
def cached(i: int) -> list[int]:
    return [i] * 50_000  # a cache entry kept in a file


@task
def chatty(n: int) -> int:
    for i in range(n):
        get_run_logger().info("line %d", i)
    return n


@flow
def child(i: int) -> int:
    return len(big(i + 100))


@flow(name="kept-or-not")
def runs_some(i: int) -> int:
    return len(big(i)) + len(cached(i)) + chatty(3) + child(i)


def _run(i: int) -> str:
    state: Any = runs_some(i, return_state=True)  # type: ignore[call-arg]
    assert state.is_completed()
    s = get_store()
    assert s is not None
    s.flush()
    rows = _rows(s.engine, "SELECT id FROM flow_runs WHERE parent_task_run_id IS NULL")
    return str(max(rows, key=lambda r: _created(s.engine, r[0]))[0])


def _rows(engine: Any, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def _created(engine: Any, run_id: str) -> float:
    return float(_rows(engine, "SELECT created_at FROM flow_runs WHERE id = :i", i=run_id)[0][0])


def _age(store: StoreUnderTest, run_id: str, days: float) -> None:
    """Move a run (and its subflows) ``days`` back."""
    store.execute(
        "UPDATE flow_runs SET created_at = created_at - :s WHERE id = :i "
        "OR parent_task_run_id IN (SELECT id FROM task_runs WHERE flow_run_id = :i)",
        s=days * DAY,
        i=run_id,
    )


def _gc(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert flowbook.cli.main(["gc", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def _recorded(store: StoreUnderTest, top: str) -> dict[str, int]:
    flows = [top] + [
        r[0]
        for r in store.rows(
            "SELECT subflow_run_id FROM task_runs WHERE flow_run_id = :i "
            "AND subflow_run_id IS NOT NULL",
            i=top,
        )
    ]
    marks = ",".join(f"'{f}'" for f in flows)
    tasks = f"SELECT id FROM task_runs WHERE flow_run_id IN ({marks})"
    return {
        "flow_runs": store.count(f"flow_runs WHERE id IN ({marks})"),
        "task_runs": store.count(f"task_runs WHERE flow_run_id IN ({marks})"),
        "logs": store.count(f"logs WHERE flow_run_id IN ({marks})"),
        "states": store.count(f"states WHERE run_id IN ({marks}) OR run_id IN ({tasks})"),
    }


def _files(store: StoreUnderTest, sub: str) -> set[str]:
    d = store.results / sub
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def test_gc_deletes_old_runs_with_their_rows_and_files(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _run(1)
    new = _run(2)
    before_old = _recorded(store, old)
    assert before_old["flow_runs"] == 2
    assert before_old["task_runs"] == 5
    old_files = {
        r[0]
        for r in store.rows(
            "SELECT result_file FROM task_runs WHERE result_file IS NOT NULL AND flow_run_id IN "
            "(SELECT id FROM flow_runs WHERE id = :i OR parent_task_run_id IN "
            "(SELECT id FROM task_runs WHERE flow_run_id = :i))",
            i=old,
        )
    }
    # big() in the run and in its subflow, cached()'s (its cache entry has a file of its own)
    assert len(old_files) == 3
    assert all(f.startswith("runs/") for f in old_files)
    _age(store, old, 40)
    # an old run that has not finished: a live process's, kept
    store.execute(
        "INSERT INTO flow_runs (id, name, flow_name, state_type, state_name, run_count, "
        "created_at) VALUES ('live-run', 'live', 'f', 'RUNNING', 'Running', 1, :t)",
        t=time.time() - 50 * DAY,
    )
    cache_files = _files(store, "cache")
    dry = _gc(capsys, "--older-than", "30", "--dry-run")
    assert _recorded(store, old) == before_old  # nothing deleted
    done = _gc(capsys, "--older-than", "30")
    assert _recorded(store, old) == {"flow_runs": 0, "task_runs": 0, "logs": 0, "states": 0}
    for key in ("flow_runs", "task_runs", "states", "files", "file_bytes"):
        assert dry[key] == done[key], key
    assert done["flow_runs"] == 2
    assert done["task_runs"] == 5
    assert done["log_lines"] == before_old["logs"]
    assert done["states"] == before_old["states"]
    assert done["files"] == 3
    assert done["unfinished_kept"] == 1
    assert not {f.split("/")[1] for f in old_files} & _files(store, "runs")
    # what the user still needs stays: the new run, the unfinished one, the valid cache
    assert _recorded(store, new)["task_runs"] == 5
    assert store.count("flow_runs WHERE id = 'live-run'") == 1
    assert store.count("cache_entries") == 2
    assert _files(store, "cache") == cache_files
    assert cached.fn(1) == [1] * 50_000  # and the cached call still hits
    assert _gc(capsys, "--older-than", "30")["flow_runs"] == 0  # nothing left to do


def test_keep_last_and_expired_cache(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [_run(i) for i in range(3)]
    assert _gc(capsys, "--keep-last", "1")["flow_runs"] == 4  # two runs and their subflows
    assert [
        r[0] for r in store.rows("SELECT id FROM flow_runs WHERE parent_task_run_id IS NULL")
    ] == [ids[2]]
    assert store.count("cache_entries") == 3  # valid entries stay, with their files
    assert len(_files(store, "cache")) == 3
    store.execute(
        "UPDATE cache_entries SET expires = :t WHERE key IN (SELECT key FROM "
        "cache_entries ORDER BY created LIMIT 2)",
        t=time.time() - 1,
    )
    done = _gc(capsys, "--expired-cache")
    assert done["cache_entries"] == 2
    assert done["flow_runs"] == 0
    assert store.count("cache_entries") == 1
    assert len(_files(store, "cache")) == 1


def test_result_files_a_cache_entry_points_at_stay(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _run(7)
    name = store.rows(
        "SELECT result_file FROM task_runs WHERE flow_run_id = :i AND result_file IS NOT NULL",
        i=old,
    )[0][0]
    store.execute("UPDATE cache_entries SET result_file = :n", n=name)  # shared with the entry
    _age(store, old, 10)
    assert _gc(capsys, "--older-than", "1")["task_runs"] == 5
    assert (store.results / name).is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "-1"], "'-1' is not a number of days >= 0"),
        (["--older-than", "soon"], "'soon' is not a number of days >= 0"),
        (["--older-than", "nan"], "'nan' is not a number of days >= 0"),
        (["--keep-last", "1.5"], "'1.5' is not a whole number of runs >= 0"),
    ],
)
def test_bad_options_name_the_value(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        flowbook.cli.main(["gc", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_gc_without_a_choice_or_with_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert flowbook.cli.main(["gc"]) == 1
    assert "say what to delete: --older-than DAYS" in capsys.readouterr().err
    monkeypatch.setenv("FLOWBOOK_RUN_RETENTION_DAYS", "a week")
    with pytest.raises(ValueError, match="FLOWBOOK_RUN_RETENTION_DAYS='a week' is not valid"):
        reload_settings()
    monkeypatch.setenv("FLOWBOOK_RUN_RETENTION_DAYS", "7")
    assert reload_settings().run_retention_days == 7.0
    close_store()


def test_the_retention_setting_is_the_default(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _run(1)
    _run(2)
    _age(store, old, 8)
    monkeypatch.setenv("FLOWBOOK_RUN_RETENTION_DAYS", "7")
    reload_settings()
    assert _gc(capsys)["flow_runs"] == 2
    assert store.count("flow_runs WHERE parent_task_run_id IS NULL") == 1


def _gc_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowbook.cli", "gc", *args],
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_a_read_only_store_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"}
    subprocess.run(
        [sys.executable, "-c", "from flowbook import flow\nflow(lambda: 1, name='f')()"],
        env=child_env(env),
        check=True,
        timeout=120,
    )
    with read_only(home):
        done = _gc_process(env, "--older-than", "0")
    assert done.returncode == 1, done.stderr
    assert "is read-only" in done.stderr
    assert "Traceback" not in done.stderr
    assert _gc_process(env, "--older-than", "0").returncode == 0


WRITER = """\
import sys
from flowbook import flow, task

@task
def one(i):
    return i

@flow(name="live-writer")
def writes(k):
    return sum(one.map(range(50)).result())

for k in range(int(sys.argv[1])):
    assert writes(k) == 1225
from flowbook.store import get_store
print(sum(get_store().dropped.values()))
"""


def _bulk_runs(store: StoreUnderTest, runs: int, tasks: int, days: float) -> None:
    """``runs`` finished old top-level runs of ``tasks`` task runs each, written directly."""
    import sqlalchemy as sa

    now = time.time() - days * DAY
    with store.engine.begin() as conn:
        for r in range(runs):
            conn.execute(
                sa.text(
                    "INSERT INTO flow_runs (id, name, flow_name, state_type, state_name, "
                    "run_count, created_at, created_us) VALUES (:i, 'bulk', 'bulk', "
                    "'COMPLETED', 'Completed', 1, :t, :k)"
                ),
                {"i": f"bulk-{r}", "t": now + r, "k": created_us(now + r)},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO task_runs (id, flow_run_id, name, task_name, dynamic_key, "
                    "state_type, state_name, run_count, created_at, flow_run_created_us) "
                    "VALUES (:i, :f, 't', 't', 0, 'COMPLETED', 'Completed', 1, :t, :k)"
                ),
                [
                    {"i": f"bulk-{r}-{t}", "f": f"bulk-{r}", "t": now, "k": created_us(now + r)}
                    for t in range(tasks)
                ],
            )
            conn.execute(
                sa.text(
                    "INSERT INTO states (run_id, run_kind, type, name, timestamp) "
                    "VALUES (:i, 'task', 'COMPLETED', 'Completed', :t)"
                ),
                [{"i": f"bulk-{r}-{t}", "t": now} for t in range(tasks)],
            )
            conn.execute(
                sa.text(
                    "INSERT INTO logs (flow_run_id, task_run_id, level, logger, message, "
                    "timestamp, flow_run_created_us) VALUES (:f, :i, 20, 'x', 'm', :t, :k)"
                ),
                [
                    {"f": f"bulk-{r}", "i": f"bulk-{r}-{t}", "t": now, "k": created_us(now + r)}
                    for t in range(tasks)
                ],
            )


@pytest.mark.slow
def test_a_writer_in_another_process_loses_nothing(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    _bulk_runs(store, 20, 2000, days=40)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, "30"],
        env=child_env(store.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while store.count("flow_runs WHERE flow_name = 'live-writer'") == 0:
        assert time.time() < deadline
        assert writer.poll() is None
        time.sleep(0.05)
    done = _gc(capsys, "--older-than", "0")  # the writer's finished runs may go too
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    assert out.strip() == "0"  # no record dropped
    assert "Traceback" not in err
    assert "flowbook:" not in err
    assert store.count("flow_runs WHERE flow_name = 'bulk'") == 0
    assert done["task_runs"] >= 40_000
    # every run of the writer gc left holds its 50 task runs, each with its states
    for (run_id,) in store.rows("SELECT id FROM flow_runs WHERE flow_name = 'live-writer'"):
        assert store.count(f"task_runs WHERE flow_run_id = '{run_id}'") == 50
    assert store.count("task_runs WHERE flow_run_id NOT IN (SELECT id FROM flow_runs)") == 0


KILLED_GC = """\
import os, signal, sys
from pathlib import Path
from flowbook.store import gc, get_store

class Killed(gc._Timed):
    n = 0
    def __exit__(self, *exc):
        super().__exit__(*exc)
        Killed.n += 1
        if Killed.n == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)

gc._Timed = Killed
gc._unlink = lambda *a: None  # killed before the files of the deleted rows go
s = get_store()
gc.collect(s.engine, s.results_dir, older_than_days=1, batch=100)
"""


@pytest.mark.slow
def test_a_kill_in_the_middle_leaves_a_consistent_store_and_a_rerun_finishes(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    olds = [_run(i) for i in range(3)]
    keep = _run(9)
    for old in olds:
        _age(store, old, 6)  # older than the bulk runs: the first to go
    _bulk_runs(store, 2, 450, days=5)
    total = store.count("task_runs")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_GC, "4"], env=child_env(store.env), timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    left = store.count("task_runs")
    assert 0 < total - left < total - 5  # killed half way
    # consistent: no task run, state or log line lost its flow run
    assert store.count("task_runs WHERE flow_run_id NOT IN (SELECT id FROM flow_runs)") == 0
    assert store.count("logs WHERE flow_run_id NOT IN (SELECT id FROM flow_runs)") == 0
    # files of deleted rows were left: the rerun removes them once old enough
    old_time = time.time() - 2 * 3600
    for sub in ("runs", "cache"):
        for path in (store.results / sub).iterdir():
            os.utime(path, (old_time, old_time))
    done = _gc(capsys, "--older-than", "1")
    assert store.count("flow_runs WHERE parent_task_run_id IS NULL") == 1
    assert _recorded(store, keep)["task_runs"] == 5
    assert store.count("task_runs") == 5
    assert (
        store.count(
            "states WHERE run_id NOT IN (SELECT id FROM task_runs UNION SELECT id FROM flow_runs)"
        )
        == 0
    )
    referenced = {
        r[0]
        for r in store.rows(
            "SELECT result_file FROM task_runs WHERE result_file IS NOT NULL UNION "
            "SELECT result_file FROM cache_entries WHERE result_file IS NOT NULL"
        )
    }
    present = {f"{sub}/{n}" for sub in ("runs", "cache") for n in _files(store, sub)}
    assert present == referenced
    assert done["orphan_files"] >= 1


@pytest.mark.slow
def test_batches_keep_transactions_short(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    _bulk_runs(store, 4, 25_000, days=40)  # 100,000 task runs
    started = time.perf_counter()
    done = _gc(capsys, "--older-than", "1")
    took = time.perf_counter() - started
    assert done["task_runs"] == 100_000
    assert done["log_lines"] == 100_000
    assert done["longest_transaction_ms"] < 1000, done
    print(
        f"\n{store.backend}: 100,000 task runs in {took:.1f} s, {done['transactions']} "
        f"transactions, longest {done['longest_transaction_ms']:.0f} ms"
    )


def test_doctor_reports_sizes_and_what_gc_would_free(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _run(1)
    _run(2)
    _age(store, old, 10)
    store.execute("UPDATE cache_entries SET expires = :t", t=time.time() - 1)
    monkeypatch.setenv("FLOWBOOK_RUN_RETENTION_DAYS", "5")
    reload_settings()
    assert flowbook.cli.main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size_bytes"] > 0
    assert report["results_files"] == 8
    assert report["results_bytes"] > 400_000
    assert report["reclaimable"]["runs_older_than_retention"] == 1
    assert report["reclaimable"]["expired_cache_entries"] == 2
    if store.backend == "postgresql":
        assert report["relation_bytes"]["task_runs"] > 0
        assert report["size_bytes"] == sum(report["relation_bytes"].values())
    else:
        assert report["wal_bytes"] is not None
        assert "free_page_bytes" in report["reclaimable"]
    assert flowbook.cli.main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "1 finished run(s) older than FLOWBOOK_RUN_RETENTION_DAYS=5" in text
    assert "2 expired cache entr(ies)" in text


def test_log_retention_deletes_in_batches(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbook.store import database

    monkeypatch.setattr(database, "_PRUNE_BATCH", 10)
    for i, age in enumerate([40.0] * 25 + [1.0] * 3):
        store.execute(
            "INSERT INTO logs (flow_run_id, level, logger, message, timestamp) "
            "VALUES ('r', 20, 'x', :m, :t)",
            m=f"m{i}",
            t=time.time() - age * DAY,
        )
    database.prune_logs(store.engine, 30)
    assert sorted(r[0] for r in store.rows("SELECT message FROM logs WHERE flow_run_id = 'r'")) == [
        "m25",
        "m26",
        "m27",
    ]


def _free_pages(store: StoreUnderTest) -> int:
    return int(store.rows("PRAGMA freelist_count")[0][0])


def test_sqlite_space_is_reported_or_given_back(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    if store.backend != "sqlite":
        _bulk_runs(store, 1, 100, days=40)
        assert "autovacuum" in _gc(capsys, "--older-than", "1")["vacuum"]
        return
    db = store.home / "flowbook.db"
    _bulk_runs(store, 2, 5000, days=40)
    assert flowbook.cli.main(["gc", "--older-than", "1", "--keep-last", "1"]) == 0
    out = capsys.readouterr().out
    assert "gc: deleted 1 flow run(s), 5000 task run(s), 5000 log line(s), 5000 state(s)" in out
    assert "bytes of free pages: the store reuses them; `flowbook gc --vacuum`" in out
    assert _free_pages(store) > 0
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db.stat().st_size
    done = _gc(capsys, "--older-than", "1", "--keep-last", "1", "--vacuum")
    assert done["vacuum"].startswith("VACUUM gave back about")
    assert _free_pages(store) == 0
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert db.stat().st_size < before
    # a store made with auto_vacuum=INCREMENTAL gives its free pages back at every gc
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
        conn.exec_driver_sql("VACUUM")
    _bulk_runs(store, 1, 5000, days=40)
    done = _gc(capsys, "--older-than", "1")
    assert done["vacuum"].startswith("incremental_vacuum gave back")
    assert _free_pages(store) == 0
