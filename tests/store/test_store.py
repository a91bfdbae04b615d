"""The run store: rows written by runs, results, the persistent cache, the query API, the
command line, sharing one PostgreSQL store between processes, schema versions and an
unusable ``FLOWBOOK_HOME``.

Every test reads what flowbook wrote through a separate SQLAlchemy engine (and, for SQLite,
the file itself), or through other processes.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from store_under_test import back_to_version_5, read_only

import flowbook.cache
import flowbook.runs
from flowbook import flow, get_run_logger, task
from flowbook.settings import reload_settings
from flowbook.store import StoreError, close_store, get_store, schema
from flowbook.tasks import task_input_hash

PLAIN_HISTORY = ["Pending", "Running", "Completed"]
FLOW_CODE = "from flowbook import flow\n\n@flow\ndef f():\n    return 1\n\nf()\n"


@dataclass
class StoreUnderTest:
    backend: str
    home: Path
    url: str
    env: dict[str, str]
    engine: sa.Engine

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def one(self, sql: str, **params: Any) -> Any:
        rows = self.rows(sql, **params)
        assert len(rows) == 1, rows
        return rows[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[StoreUnderTest]:
    home = tmp_path / "home"
    env = {"FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"}
    if request.param == "postgresql":
        env["FLOWBOOK_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    opened = get_store()
    assert opened is not None
    engine = sa.create_engine(opened.url)
    yield StoreUnderTest(request.param, home, opened.url, env, engine)
    close_store()
    engine.dispose()


def _env(flowbook_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.update(flowbook_env)
    return env


def run_python(
    flowbook_env: dict[str, str], *args: str, cwd: Path | str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=_env(flowbook_env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_ok(flowbook_env: dict[str, str], *args: str, cwd: Path | str) -> str:
    done = run_python(flowbook_env, *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def cli_many(
    flowbook_env: dict[str, str], commands: Sequence[Sequence[str]], cwd: Path
) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``python -m flowbook.cli`` commands at once; their results in order."""
    started = [
        (
            list(cmd),
            subprocess.Popen(
                [sys.executable, "-m", "flowbook.cli", *cmd],
                env=_env(flowbook_env),
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for cmd in commands
    ]
    results = []
    for cmd, proc in started:
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return results


def cli(flowbook_env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_python(flowbook_env, "-m", "flowbook.cli", *args, cwd=cwd)


def by_call(stdout: str) -> dict[str, str]:
    """The output of a cache script, split by the ``-- <call>`` line printed after each call."""
    out: dict[str, str] = {}
    current: list[str] = []
    for line in stdout.splitlines(keepends=True):
        if line.startswith("-- "):
            out[line[3:].strip()] = "".join(current)
            current = []
        else:
            current.append(line)
    if current:
        out["(after the last call)"] = "".join(current)
    return out


# the seed 002 caching examples, driven by the script's arguments
CACHE_SCRIPT = """\
import sys
import time
from datetime import timedelta

from flowbook import flow, task
from flowbook.tasks import task_input_hash


@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=1))
def hello_task(name_input):
    # Doing some work
    print(f"Saying hello {name_input}")
    return "hello " + name_input


@flow
def hello_flow(name_input):
    hello_task(name_input)


def cache_key_from_sum(context, parameters):
    print(parameters)
    return sum(parameters["nums"])


@task(cache_key_fn=cache_key_from_sum, cache_expiration=timedelta(minutes=1))
def cached_task(nums):
    print('running an expensive operation')
    time.sleep(0)
    return sum(nums)


@flow
def test_caching(nums):
    cached_task(nums)


for arg in sys.argv[1:]:
    what, _, value = arg.partition("=")
    if what == "hello":
        hello_flow(value)
    else:
        test_caching([int(n) for n in value.split(",")])
    print(f"-- {arg}", flush=True)
"""

EXPIRING_SCRIPT = """\
import sys
from datetime import timedelta

from flowbook import flow, task
from flowbook.tasks import task_input_hash


@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(seconds=1))
def hello_task(name_input):
    print(f"Saying hello {name_input}")
    return "hello " + name_input


@flow
def hello_flow(name_input):
    hello_task(name_input)


for arg in sys.argv[1:]:
    hello_flow(arg)
    print(f"-- {arg}", flush=True)
"""


# one task with a value too large for the index row, so it is kept as a file
SHARED_SCRIPT = """\
import sys

from flowbook import flow, task
from flowbook.tasks import task_input_hash


@task(cache_key_fn=task_input_hash)
def big_task(n):
    print(f"computing {n}")
    return b"z" * n


@flow
def shared_flow(n):
    return len(big_task(n))


print(shared_flow(100_000))
"""


# -- the rows of a run -----------------------------------------------------------------------------


def test_a_finished_flow_run_has_all_its_rows(store: StoreUnderTest) -> None:
    @task
    def double(x: int) -> int:
        get_run_logger().info("doubling %s", x)
        return 2 * x

    @task
    def add(x: int, y: int) -> int:
        return x + y

    @task
    def shout() -> str:
        return "done"

    @flow(flow_run_name="rows-{n}")
    def my_flow(n: int) -> str:
        get_run_logger().info("flow starts")
        a = double.submit(n)
        b = add.submit(a, 1)
        c = shout.submit(wait_for=[b])
        return c.result()

    assert my_flow(3) == "done"

    # read at once, through another connection: the flow's end waited for these rows
    run = store.one("SELECT * FROM flow_runs")
    assert (run.name, run.flow_name) == ("rows-3", "my-flow")
    assert (run.state_type, run.state_name) == ("COMPLETED", "Completed")
    assert run.state_message == "All states completed."
    assert run.start_time is not None
    assert run.end_time is not None
    assert run.created_at <= run.start_time <= run.end_time

    tasks = {
        t.name: t for t in store.rows("SELECT * FROM task_runs WHERE flow_run_id = :id", id=run.id)
    }
    assert sorted(tasks) == ["add-0", "double-0", "shout-0"]
    for t in tasks.values():
        assert (t.state_type, t.state_name) == ("COMPLETED", "Completed"), t.name
        assert t.created_at <= t.start_time <= t.end_time <= run.end_time, t.name
        assert t.run_count == 1

    edges = {(e.upstream_id, e.downstream_id) for e in store.rows("SELECT * FROM task_run_edges")}
    assert edges == {
        (tasks["double-0"].id, tasks["add-0"].id),  # data dependency
        (tasks["add-0"].id, tasks["shout-0"].id),  # wait_for
    }

    logs = {
        (line.message, line.flow_run_id, line.task_run_id)
        for line in store.rows("SELECT * FROM logs")
    }
    assert ("flow starts", run.id, None) in logs
    assert ("doubling 3", run.id, tasks["double-0"].id) in logs

    # plain histories, of task runs and of a flow run written in one batch, are told by the
    # rows' times, not by state rows
    assert store.rows("SELECT * FROM states") == []

    detail = flowbook.runs.get(run.id)
    assert [s["name"] for s in detail.states] == PLAIN_HISTORY
    for item in detail.task_run_list:
        row = tasks[item["name"]]
        assert [s["name"] for s in item["states"]] == PLAIN_HISTORY, item["name"]
        times = [s["timestamp"] for s in item["states"]]
        assert times == [
            _iso(row.created_at),
            _iso(row.start_time),
            _iso(row.end_time),
        ], item["name"]
    assert sorted(item["name"] for item in detail.task_run_list) == sorted(tasks)

    if store.backend == "sqlite":
        db = sqlite3.connect(store.home / "flowbook.db")
        try:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            names = db.execute("SELECT name, state_name FROM task_runs ORDER BY name").fetchall()
            assert names == [
                ("add-0", "Completed"),
                ("double-0", "Completed"),
                ("shout-0", "Completed"),
            ]
        finally:
            db.close()


def _iso(ts: float) -> str:
    from flowbook.store.queries import iso

    result = iso(ts)
    assert result is not None
    return result


def test_a_retried_task_keeps_its_whole_history(store: StoreUnderTest) -> None:
    @task(retries=2)
    def flaky() -> None:
        raise ValueError("boom")

    @flow
    def retry_flow() -> str:
        try:
            flaky()
        except ValueError:
            return "handled"
        return "not raised"

    assert retry_flow() == "handled"

    expected = [
        "Pending",
        "Running",
        "AwaitingRetry",
        "Retrying",
        "Running",
        "AwaitingRetry",
        "Retrying",
        "Running",
        "Failed",
    ]
    row = store.one("SELECT * FROM task_runs WHERE name = 'flaky-0'")
    assert (row.state_name, row.run_count) == ("Failed", 3)
    history = store.rows(
        "SELECT name, message FROM states WHERE run_id = :id ORDER BY id", id=row.id
    )
    assert [s.name for s in history] == expected
    assert history[-1].message == "Task run encountered an exception ValueError: boom"

    detail = flowbook.runs.get(row.flow_run_id)
    (item,) = detail.task_run_list
    assert [s["name"] for s in item["states"]] == expected


# -- results ---------------------------------------------------------------------------------------


def test_results_inline_in_a_file_or_not_at_all(store: StoreUnderTest) -> None:
    big_value = b"x" * 200_000

    @task
    def small() -> dict[str, int]:
        return {"a": 1}

    @task
    def big() -> bytes:
        return big_value

    @task(persist_result=False)
    def unkept() -> int:
        return 5

    @flow
    def results_flow() -> None:
        small()
        big()
        unkept()

    @flow(persist_result=False)
    def unkept_flow() -> None:
        small()
        big()

    results_flow()
    unkept_flow()
    unkept_id = flowbook.runs.list(flow="unkept-flow")[0].id
    unkept_rows = store.rows(
        "SELECT name, result, result_file FROM task_runs WHERE flow_run_id = :id", id=unkept_id
    )
    assert sorted(tuple(r) for r in unkept_rows) == [("big-0", None, None), ("small-0", None, None)]

    rows = {
        r.name: r
        for r in store.rows("SELECT * FROM task_runs WHERE flow_run_id <> :id", id=unkept_id)
    }
    assert rows["small-0"].result_file is None
    assert pickle.loads(rows["small-0"].result) == {"a": 1}

    assert rows["big-0"].result is None
    assert rows["big-0"].result_file == f"runs/{rows['big-0'].id}.pkl"
    path = store.home / "results" / rows["big-0"].result_file
    assert pickle.loads(path.read_bytes()) == big_value

    assert (rows["unkept-0"].result, rows["unkept-0"].result_file) == (None, None)
    assert sorted(p.name for p in (store.home / "results" / "runs").iterdir()) == [path.name]


# -- the cache across processes --------------------------------------------------------------------


@pytest.mark.slow
def test_seed_caching_sequences_across_processes(store: StoreUnderTest, tmp_path: Path) -> None:
    script = tmp_path / "caching.py"
    script.write_text(CACHE_SCRIPT)

    first = by_call(run_ok(store.env, str(script), "hello=Marvin", "sum=2,2", cwd=tmp_path))
    assert first == {
        "hello=Marvin": "Saying hello Marvin\n",
        "sum=2,2": "{'nums': [2, 2]}\nrunning an expensive operation\n",
    }
    second = by_call(
        run_ok(store.env, str(script), "hello=Marvin", "hello=Trillian", "sum=2,2", cwd=tmp_path)
    )
    assert second == {
        "hello=Marvin": "",
        "hello=Trillian": "Saying hello Trillian\n",
        "sum=2,2": "{'nums': [2, 2]}\n",
    }
    third = by_call(run_ok(store.env, str(script), "sum=1,3", "sum=2,3", cwd=tmp_path))
    assert third == {
        "sum=1,3": "{'nums': [1, 3]}\n",
        "sum=2,3": "{'nums': [2, 3]}\nrunning an expensive operation\n",
    }

    entries = store.rows("SELECT * FROM cache_entries ORDER BY task_name, hits")
    assert [(e.task_name, e.flow_name, e.hits) for e in entries] == [
        ("cached_task", "test-caching", 0),  # sum 5
        ("cached_task", "test-caching", 2),  # sum 4: [2, 2] again and [1, 3]
        ("hello_task", "hello-flow", 0),  # Trillian
        ("hello_task", "hello-flow", 1),  # Marvin
    ]
    # values this small are kept in the index rows, not in files under results/cache
    assert [e.result_file for e in entries] == [None] * 4
    values = sorted(str(pickle.loads(e.value)) for e in entries)
    assert values == ["4", "5", "hello Marvin", "hello Trillian"]
    assert [e.size for e in entries] == [len(e.value) for e in entries]
    assert list((store.home / "results").glob("cache/*")) == []


@pytest.mark.slow
def test_an_expired_entry_runs_again_in_another_process(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    script = tmp_path / "expiring.py"
    script.write_text(EXPIRING_SCRIPT)

    out = run_ok(store.env, str(script), "Marvin", "Marvin", cwd=tmp_path)
    assert out == "Saying hello Marvin\n-- Marvin\n-- Marvin\n"
    before = store.one("SELECT * FROM cache_entries")
    assert before.expires - before.created == pytest.approx(1.0, abs=0.1)
    assert before.hits == 1

    time.sleep(1.2)
    out = run_ok(store.env, str(script), "Marvin", cwd=tmp_path)
    assert out == "Saying hello Marvin\n-- Marvin\n"
    after = store.one("SELECT * FROM cache_entries")
    assert after.created > before.expires
    assert after.expires > before.expires


def test_refresh_cache_runs_again_and_resets_the_expiration(store: StoreUnderTest) -> None:
    calls: list[str] = []

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=1))
    def hello_task(name_input: str) -> str:
        calls.append(name_input)
        return f"hello {name_input} #{len(calls)}"

    refreshing = hello_task.with_options(refresh_cache=True)

    @flow
    def hello_flow(name_input: str, refresh: bool = False) -> str:
        return (refreshing if refresh else hello_task)(name_input)

    assert hello_flow("Marvin") == "hello Marvin #1"
    (first,) = flowbook.cache.entries()
    time.sleep(0.05)
    assert hello_flow("Marvin", refresh=True) == "hello Marvin #2"
    assert calls == ["Marvin", "Marvin"]
    (second,) = flowbook.cache.entries()
    assert second.key == first.key
    assert second.expires is not None
    assert first.expires is not None
    assert second.expires > first.expires
    row = store.one("SELECT expires, created FROM cache_entries")
    assert row.expires == pytest.approx(row.created + 60, abs=1.0)

    # the refreshed entry serves the next plain call
    assert hello_flow("Marvin") == "hello Marvin #2"
    assert calls == ["Marvin", "Marvin"]


def test_cache_hits_are_counted(store: StoreUnderTest) -> None:
    calls: list[str] = []

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=1))
    def hello_task(name_input: str) -> str:
        calls.append(name_input)
        return "hello " + name_input

    @flow
    def hello_flow(name_input: str) -> str:
        return hello_task(name_input)

    for _ in range(3):
        assert hello_flow("Marvin") == "hello Marvin"
    assert calls == ["Marvin"]
    assert [e.hits for e in flowbook.cache.entries()] == [2]
    assert store.one("SELECT hits FROM cache_entries").hits == 2


# -- flowbook.runs and flowbook.cache --------------------------------------------------------------


def test_runs_list_get_and_delete(store: StoreUnderTest) -> None:
    @task
    def big() -> bytes:
        return b"y" * 100_000

    @flow(flow_run_name="child-run")
    def child() -> bytes:
        get_run_logger().info("child log")
        return big()

    @flow(flow_run_name="parent-run")
    def parent() -> int:
        get_run_logger().info("parent log")
        big()
        child()
        return 1

    @flow(flow_run_name="alpha-{i}")
    def alpha(i: int) -> int:
        return i

    @flow(flow_run_name="beta-run")
    def beta() -> None:
        raise ValueError("beta fails")

    alpha(1)
    alpha(2)
    with pytest.raises(ValueError, match="beta fails"):
        beta()
    parent()

    everything = flowbook.runs.list()
    assert {r.name for r in everything} == {
        "alpha-1",
        "alpha-2",
        "beta-run",
        "parent-run",
        "child-run",
    }
    assert [r.name for r in flowbook.runs.list(flow="alpha")] == ["alpha-2", "alpha-1"]
    assert [r.name for r in flowbook.runs.list(flow="alpha", limit=1)] == ["alpha-2"]
    failed = flowbook.runs.list(state="Failed")
    assert [(r.name, r.state, r.state_type) for r in failed] == [("beta-run", "Failed", "FAILED")]
    assert [r.name for r in flowbook.runs.list(limit=2)] == ["child-run", "parent-run"]

    alpha_1 = flowbook.runs.list(flow="alpha")[1]
    assert flowbook.runs.get(alpha_1.id).name == "alpha-1"
    assert flowbook.runs.get(alpha_1.id[:8]).id == alpha_1.id
    assert flowbook.runs.get("alpha-1").id == alpha_1.id

    parent_id = flowbook.runs.get("parent-run").id
    child_id = flowbook.runs.get("child-run").id
    ids = {"p": parent_id, "c": child_id}
    task_ids = [
        t.id for t in store.rows("SELECT id FROM task_runs WHERE flow_run_id IN (:p, :c)", **ids)
    ]
    assert len(task_ids) == 3  # big-0 of each, and the parent's record of the subflow
    files = [
        store.home / "results" / t.result_file
        for t in store.rows(
            "SELECT result_file FROM task_runs WHERE result_file IS NOT NULL "
            "AND flow_run_id IN (:p, :c)",
            **ids,
        )
    ]
    assert len(files) == 2
    assert all(f.is_file() for f in files)
    assert len(store.rows("SELECT * FROM logs WHERE flow_run_id IN (:p, :c)", **ids)) == 2

    assert flowbook.runs.delete("parent-run") == 2

    assert store.rows("SELECT id FROM flow_runs WHERE id IN (:p, :c)", **ids) == []
    assert store.rows("SELECT id FROM task_runs WHERE flow_run_id IN (:p, :c)", **ids) == []
    assert store.rows("SELECT id FROM logs WHERE flow_run_id IN (:p, :c)", **ids) == []
    doomed = [parent_id, child_id, *task_ids]
    for run_id in doomed:
        assert store.rows("SELECT id FROM states WHERE run_id = :r", r=run_id) == []
        assert (
            store.rows(
                "SELECT * FROM task_run_edges WHERE upstream_id = :r OR downstream_id = :r",
                r=run_id,
            )
            == []
        )
    assert [f for f in files if f.exists()] == []
    assert {r.name for r in flowbook.runs.list()} == {"alpha-1", "alpha-2", "beta-run"}

    with pytest.raises(LookupError, match="'nope'"):
        flowbook.runs.get("nope")
    with pytest.raises(ValueError, match="limit=0"):
        flowbook.runs.list(limit=0)


def test_cache_entries_and_clear(store: StoreUnderTest) -> None:
    @task(cache_key_fn=task_input_hash)
    def t_a(x: int) -> bytes:
        return bytes([x]) * 100_000

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(milliseconds=100))
    def t_b(x: int) -> bytes:
        return bytes([x]) * 100_000

    @task(cache_key_fn=task_input_hash)
    def t_c(x: int) -> int:
        return x

    @flow
    def flow_a() -> None:
        t_a(1)
        t_a(2)
        t_c(1)

    @flow
    def flow_b() -> None:
        t_b(1)

    flow_a()
    flow_b()

    cache_dir = store.home / "results" / "cache"

    def files_of(task_name: str) -> list[Path]:
        return [
            store.home / "results" / r.result_file
            for r in store.rows(
                "SELECT result_file FROM cache_entries WHERE task_name = :t", t=task_name
            )
        ]

    assert len(flowbook.cache.entries()) == 4
    assert sorted((e.task_name, e.flow_name) for e in flowbook.cache.entries(task="t_a")) == [
        ("t_a", "flow-a"),
        ("t_a", "flow-a"),
    ]
    assert [(e.task_name, e.flow_name) for e in flowbook.cache.entries(flow="flow-b")] == [
        ("t_b", "flow-b")
    ]
    assert [e.task_name for e in flowbook.cache.entries(task="t_c", flow="flow-a")] == ["t_c"]
    assert flowbook.cache.entries(task="t_c", flow="flow-b") == []

    # values over 64 KiB are files under results/cache, smaller ones stay in the row
    a_files, b_files = files_of("t_a"), files_of("t_b")
    assert sorted([*a_files, *b_files]) == sorted(cache_dir.glob("*.pkl"))
    assert len(a_files) == 2
    assert len(b_files) == 1
    assert {pickle.loads(f.read_bytes())[:1] for f in a_files} == {b"\x01", b"\x02"}
    small = store.one("SELECT value, result_file FROM cache_entries WHERE task_name = 't_c'")
    assert (pickle.loads(small.value), small.result_file) == (1, None)

    time.sleep(0.15)
    assert [e.expired for e in flowbook.cache.entries(task="t_b")] == [True]
    assert [e.expired for e in flowbook.cache.entries(task="t_a")] == [False, False]
    assert flowbook.cache.clear(expired=True) == 1
    assert [f for f in b_files if f.exists()] == []
    assert all(f.is_file() for f in a_files)
    assert flowbook.cache.clear(task="t_a") == 2
    assert [f for f in a_files if f.exists()] == []
    assert [e.task_name for e in flowbook.cache.entries()] == ["t_c"]
    assert flowbook.cache.clear(all=True) == 1
    assert flowbook.cache.entries() == []
    assert store.rows("SELECT * FROM cache_entries") == []
    assert list(cache_dir.iterdir()) == []

    with pytest.raises(ValueError, match="say which cache entries to clear"):
        flowbook.cache.clear()


def test_events_that_cannot_become_rows_are_dropped_with_a_warning_and_nothing_waits(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbook.store import writer

    preview = writer._safe_preview

    def broken(run: Any) -> str | None:
        if run.task is not None and run.task.name == "unrecordable":
            raise RuntimeError("this row cannot be built")
        return preview(run)

    @task
    def unrecordable() -> int:
        return 1

    @task
    def recordable() -> int:
        return 2

    @flow(flow_run_name="dropped-run")
    def dropped() -> int:
        return unrecordable()

    @flow(flow_run_name="kept-run")
    def kept() -> int:
        return recordable()

    monkeypatch.setattr(writer, "_safe_preview", broken)
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match="could not write .* this row cannot be built"):
        flushed = dropped() == 1 and get_store().writer.flush()  # type: ignore[union-attr]
    assert flushed
    assert time.monotonic() - start < 10  # the flow's end did not wait for rows never written
    assert kept() == 2  # the writer goes on
    assert store.rows("SELECT name FROM flow_runs WHERE name = :n", n="kept-run") == [("kept-run",)]
    assert store.rows("SELECT name FROM task_runs WHERE task_name = :n", n="recordable")


def test_a_refreshed_entry_is_a_hit_for_the_next_call(store: StoreUnderTest) -> None:
    @task(cache_key_fn=task_input_hash)
    def square(x: int) -> int:
        return x * x

    refreshing = square.with_options(refresh_cache=True)

    @flow
    def tour() -> list[str]:
        # the refreshing call is the task's first use in this process: no look-up came first
        return [
            refreshing(4, return_state=True).name,
            square(4, return_state=True).name,
            square(4, return_state=True).name,
        ]

    assert tour() == ["Completed", "Cached", "Cached"]


def test_an_entry_cleared_by_another_process_is_a_miss_in_a_warm_kernel(
    store: StoreUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    @task(cache_key_fn=task_input_hash)
    def remembered(x: int) -> int:
        calls.append(x)
        return x

    @flow
    def uses_it() -> int:
        return remembered(1)

    uses_it()
    uses_it()
    assert calls == [1]  # the second run was a hit, served from this process's memory
    # another process (the side panel's server, the command line) clears the entry
    script = "import flowbook.cache; print(flowbook.cache.clear(all=True))"
    assert run_ok(store.env, "-c", script, cwd=tmp_path).strip() == "1"
    monkeypatch.setattr("flowbook.store.cache.REFRESH_AFTER_S", 0.0)
    uses_it()
    assert calls == [1, 1]


SHARED_TASKS = """\
from flowbook import flow, task
from flowbook.tasks import task_input_hash


@task(cache_key_fn=task_input_hash)
def shared_square(x):
    return x * x


@flow
def shared_squares(xs):
    return [shared_square(x, return_state=True).name for x in xs]
"""


def test_cold_misses_cost_no_query_and_entries_from_elsewhere_arrive_within_the_refresh(
    store: StoreUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shared_tasks.py").write_text(SHARED_TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import shared_tasks  # type: ignore[import-not-found]

    def elsewhere(x: int) -> None:
        code = f"import shared_tasks; print(shared_tasks.shared_squares([{x}]))"
        out = run_ok({**store.env, "PYTHONPATH": str(tmp_path)}, "-c", code, cwd=tmp_path)
        assert out.strip() == "['Completed']"

    engine = get_store().engine  # type: ignore[union-attr]
    lookups: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "cache_entries" in statement:
            lookups.append(statement)

    monkeypatch.setattr("flowbook.store.cache.REFRESH_AFTER_S", 3600.0)
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        assert shared_tasks.shared_squares(range(50)) == ["Completed"] * 50
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(lookups) <= 2  # the index is loaded once; 50 misses need no query

    elsewhere(100)  # another process stores an entry
    # within the refresh time the index still says the key was not there: a miss
    assert shared_tasks.shared_squares([100]) == ["Completed"]
    monkeypatch.setattr("flowbook.store.cache.REFRESH_AFTER_S", 0.0)
    elsewhere(200)
    # the next look-up checks the index against the database and finds the new key
    assert shared_tasks.shared_squares([200, 3]) == ["Cached", "Cached"]


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.slow
def test_command_line(store: StoreUnderTest, tmp_path: Path) -> None:
    @task
    def plain(x: int) -> int:
        return x

    @task(cache_key_fn=task_input_hash)
    def cli_cached(x: int) -> int:
        return x

    @task(cache_key_fn=task_input_hash)
    def other_cached(x: int) -> int:
        return x

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(milliseconds=100))
    def short_lived(x: int) -> int:
        return x

    @flow(flow_run_name="cli-ok-run")
    def cli_ok() -> None:
        get_run_logger().info("hello from cli-ok")
        plain(1)
        cli_cached(1)
        cli_cached(2)

    @flow(flow_run_name="cli-bad-run")
    def cli_bad() -> None:
        raise RuntimeError("cli-bad fails")

    @flow(flow_run_name="cli-ok-run-2")
    def cli_ok_again() -> None:
        other_cached(1)
        short_lived(1)

    cli_ok()
    with pytest.raises(RuntimeError, match="cli-bad fails"):
        cli_bad()
    cli_ok_again()
    time.sleep(0.15)  # short_lived's entry expires

    ok_id = flowbook.runs.get("cli-ok-run").id
    (
        runs_json,
        flow_limited,
        show,
        show_nope,
        cache_ls,
        limit_zero,
        clear_alone,
    ) = cli_many(
        store.env,
        [
            ["runs", "--json"],
            ["runs", "--flow", "cli-ok", "--limit", "1", "--json"],
            ["runs", "show", ok_id[:8], "--json"],
            ["runs", "show", "nope"],
            ["cache", "ls", "--json"],
            ["runs", "--limit", "0"],
            ["cache", "clear"],
        ],
        tmp_path,
    )

    assert runs_json.returncode == 0, runs_json.stderr
    listed = json.loads(runs_json.stdout)
    assert isinstance(listed, list)
    keys = {"id", "name", "flow_name", "state", "start_time", "end_time", "task_runs"}
    for item in listed:
        assert keys <= set(item), item
    summary = {(r["name"], r["flow_name"], r["state"], r["task_runs"]) for r in listed}
    assert summary == {
        ("cli-ok-run", "cli-ok", "Completed", 3),
        ("cli-bad-run", "cli-bad", "Failed", 0),
        ("cli-ok-run-2", "cli-ok-again", "Completed", 2),
    }
    ok = next(r for r in listed if r["name"] == "cli-ok-run")
    assert ok["id"] == ok_id
    assert ok["start_time"] <= ok["end_time"]

    assert flow_limited.returncode == 0, flow_limited.stderr
    assert [r["name"] for r in json.loads(flow_limited.stdout)] == ["cli-ok-run"]

    assert show.returncode == 0, show.stderr
    detail = json.loads(show.stdout)
    assert detail["id"] == ok_id
    assert [s["name"] for s in detail["states"]] == PLAIN_HISTORY
    assert sorted(t["name"] for t in detail["task_run_list"]) == [
        "cli_cached-0",
        "cli_cached-1",
        "plain-0",
    ]
    for t in detail["task_run_list"]:
        assert [s["name"] for s in t["states"]] == PLAIN_HISTORY, t["name"]
    messages = [line["message"] for line in detail["logs"]]
    # the run's own line, between the engine's lines (told from the rows: none is stored)
    assert messages[0] == "Created flow run 'cli-ok-run' for flow 'cli-ok'"
    assert "hello from cli-ok" in messages
    assert messages[-1] == "Finished in state Completed('All states completed.')"

    assert show_nope.returncode == 1
    assert show_nope.stdout == ""
    assert show_nope.stderr.startswith("flowbook: ")
    assert "'nope'" in show_nope.stderr

    assert cache_ls.returncode == 0, cache_ls.stderr
    entries = json.loads(cache_ls.stdout)
    for item in entries:
        assert {"key", "task_name", "created", "expires", "size", "hits"} <= set(item), item
        assert isinstance(item["size"], int)
        assert item["size"] > 0
        assert item["hits"] == 0
    assert sorted(e["task_name"] for e in entries) == [
        "cli_cached",
        "cli_cached",
        "other_cached",
        "short_lived",
    ]
    assert [e["expires"] is None for e in entries if e["task_name"] != "short_lived"] == [
        True,
        True,
        True,
    ]

    assert limit_zero.returncode == 2
    assert limit_zero.stdout == ""
    assert "usage: flowbook runs" in limit_zero.stderr
    assert "'0' is not a positive whole number" in limit_zero.stderr

    assert clear_alone.returncode == 2
    assert clear_alone.stdout == ""
    for option in ("--task", "--flow", "--expired", "--all"):
        assert option in clear_alone.stderr
    assert len(store.rows("SELECT * FROM cache_entries")) == 4

    cleared = cli(store.env, "cache", "clear", "--expired", cwd=tmp_path)
    assert (cleared.returncode, cleared.stdout) == (0, "cleared 1 cache entry\n"), cleared.stderr
    assert sorted(r.task_name for r in store.rows("SELECT task_name FROM cache_entries")) == [
        "cli_cached",
        "cli_cached",
        "other_cached",
    ]
    cleared = cli(store.env, "cache", "clear", "--task", "cli_cached", cwd=tmp_path)
    assert (cleared.returncode, cleared.stdout) == (0, "cleared 2 cache entries\n"), cleared.stderr
    assert [r.task_name for r in store.rows("SELECT task_name FROM cache_entries")] == [
        "other_cached"
    ]
    cleared = cli(store.env, "cache", "clear", "--all", cwd=tmp_path)
    assert (cleared.returncode, cleared.stdout) == (0, "cleared 1 cache entry\n"), cleared.stderr
    assert store.rows("SELECT * FROM cache_entries") == []
    assert list((store.home / "results" / "cache").glob("*.pkl")) == []


# -- one PostgreSQL store, two processes -----------------------------------------------------------


@pytest.mark.slow
def test_two_processes_share_one_postgres_store(postgres_url: str, tmp_path: Path) -> None:
    script = tmp_path / "shared.py"
    script.write_text(SHARED_SCRIPT)
    results_dir = tmp_path / "shared-results"
    common = {
        "FLOWBOOK_DATABASE_URL": postgres_url,
        "FLOWBOOK_RESULTS_DIR": str(results_dir),
        "FLOWBOOK_CONSOLE": "off",
    }
    env_a = {**common, "FLOWBOOK_HOME": str(tmp_path / "home-a")}
    env_b = {**common, "FLOWBOOK_HOME": str(tmp_path / "home-b")}

    assert run_ok(env_a, str(script), cwd=tmp_path) == "computing 100000\n100000\n"

    listed = json.loads(run_ok(env_b, "-m", "flowbook.cli", "runs", "--json", cwd=tmp_path))
    assert [(r["flow_name"], r["state"], r["task_runs"]) for r in listed] == [
        ("shared-flow", "Completed", 1)
    ]

    # B finds A's entry, and reads its value from the shared results directory
    assert run_ok(env_b, str(script), cwd=tmp_path) == "100000\n"

    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            entries = conn.execute(
                sa.text("SELECT task_name, hits, result_file FROM cache_entries")
            ).all()
            flows = conn.execute(sa.text("SELECT flow_name FROM flow_runs")).scalars().all()
    finally:
        engine.dispose()
    assert [(e.task_name, e.hits) for e in entries] == [("big_task", 1)]
    assert sorted((results_dir / "cache").glob("*.pkl")) == [results_dir / entries[0].result_file]
    assert flows == ["shared-flow", "shared-flow"]
    assert not (tmp_path / "home-a" / "results").exists()
    assert not (tmp_path / "home-b" / "results").exists()


# -- schema versions -------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_new_store_has_the_current_schema_version(store: StoreUnderTest) -> None:
    row = store.one("SELECT value FROM flowbook_meta WHERE key = 'schema_version'")
    assert row.value == str(schema.SCHEMA_VERSION)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_store_of_a_newer_flowbook_is_refused(store: StoreUnderTest) -> None:
    close_store()
    newer = schema.SCHEMA_VERSION + 1
    db = sqlite3.connect(store.home / "flowbook.db")
    with db:
        db.execute("UPDATE flowbook_meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
    db.close()

    with pytest.raises(StoreError) as refused:
        get_store()
    message = str(refused.value)
    assert "newer flowbook" in message
    assert f"schema version {newer}" in message
    assert store.one("SELECT value FROM flowbook_meta").value == str(newer)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_opening_an_old_store_migrates_it_and_keeps_its_runs(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    @flow(flow_run_name="old-run")
    def old_flow() -> int:
        return 1

    old_flow()
    close_store()

    old = schema.SCHEMA_VERSION

    def add_note(conn: sa.Connection) -> None:
        conn.execute(sa.text("ALTER TABLE flow_runs ADD COLUMN note TEXT"))

    monkeypatch.setattr(schema, "SCHEMA_VERSION", old + 1)
    monkeypatch.setitem(schema.MIGRATIONS, old, add_note)

    assert get_store() is not None
    db = sqlite3.connect(store.home / "flowbook.db")
    try:
        version = db.execute("SELECT value FROM flowbook_meta WHERE key = 'schema_version'")
        assert version.fetchall() == [(str(old + 1),)]
        columns = [c[1] for c in db.execute("PRAGMA table_info(flow_runs)")]
        assert "note" in columns
    finally:
        db.close()
    assert [r.name for r in flowbook.runs.list()] == ["old-run"]

    # the migrated store goes on recording runs
    old_flow()
    assert [r.name for r in flowbook.runs.list()] == ["old-run", "old-run"]


def test_a_version_2_store_gains_the_run_origin_and_keeps_its_rows(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    @task(cache_key_fn=task_input_hash)
    def double(x: int) -> int:
        return 2 * x

    @flow(flow_run_name="v2-run")
    def v2_flow() -> int:
        get_run_logger().info("written at version 2")
        return double(1) + double(2)

    v2_flow()
    close_store()
    # back to version 2: the flow_runs table without the columns version 3 added, and
    # without the checksum columns and the table version 4 added
    back_to_version_3(store)
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE flow_runs DROP COLUMN notebook"))
        conn.execute(sa.text("ALTER TABLE flow_runs DROP COLUMN cell_id"))
        conn.execute(sa.text("UPDATE flowbook_meta SET value = '2'"))
    before = {
        table: store.one(f"SELECT count(*) AS n FROM {table}").n
        for table in ("flow_runs", "task_runs", "states", "logs", "cache_entries")
    }
    assert before["flow_runs"] == 1
    assert before["task_runs"] == before["cache_entries"] == 2

    assert get_store() is not None
    assert store.one("SELECT value FROM flowbook_meta").value == str(schema.SCHEMA_VERSION)
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("flow_runs")}
    assert {"notebook", "cell_id"} <= columns
    for table, count in before.items():
        assert store.one(f"SELECT count(*) AS n FROM {table}").n == count, table
    (old,) = flowbook.runs.list()
    assert (old.name, old.state, old.task_runs) == ("v2-run", "Completed", 2)
    assert (old.notebook, old.cell_id) == (None, None)
    detail = flowbook.runs.get(old.id)
    logged = [line["message"] for line in detail.logs if line["logger"] != "flowbook.engine"]
    assert "written at version 2" in logged
    assert len(flowbook.cache.entries()) == 2

    # the migrated store records where new runs came from
    monkeypatch.setattr(
        "flowbook.engine.flow_engine.run_origin", lambda: ("/nb/demo.ipynb", "cell-1")
    )
    assert v2_flow() == 6  # both calls served by the old entries
    new, _ = flowbook.runs.list()
    assert (new.notebook, new.cell_id) == ("/nb/demo.ipynb", "cell-1")
    assert [t["state"] for t in flowbook.runs.get(new.id).task_run_list] == ["Cached", "Cached"]


def back_to_version_3(store: StoreUnderTest) -> None:
    """Undo what schema versions 4, 5 and 6 added (checksum columns, the write_drops table;
    the flows table; the flow-run keys)."""
    back_to_version_5(store.engine)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE flows"))
        conn.execute(sa.text("ALTER TABLE task_runs DROP COLUMN result_checksum"))
        conn.execute(sa.text("ALTER TABLE cache_entries DROP COLUMN checksum"))
        conn.execute(sa.text("DROP TABLE write_drops"))
        conn.execute(sa.text("UPDATE flowbook_meta SET value = '3'"))


def test_a_version_3_store_gains_checksums_and_keeps_its_rows(store: StoreUnderTest) -> None:
    calls: list[int] = []

    @task(cache_key_fn=task_input_hash)
    def triple(x: int) -> int:
        calls.append(x)
        return 3 * x

    @flow(flow_run_name="v3-run")
    def v3_flow() -> int:
        return triple(1) + triple(2)

    assert v3_flow() == 9
    close_store()
    back_to_version_3(store)
    before = {
        table: store.one(f"SELECT count(*) AS n FROM {table}").n
        for table in ("flow_runs", "task_runs", "states", "logs", "cache_entries")
    }

    assert get_store() is not None
    assert store.one("SELECT value FROM flowbook_meta").value == str(schema.SCHEMA_VERSION)
    inspector = sa.inspect(store.engine)
    assert "result_checksum" in {c["name"] for c in inspector.get_columns("task_runs")}
    assert "checksum" in {c["name"] for c in inspector.get_columns("cache_entries")}
    assert "write_drops" in inspector.get_table_names()
    # version 5's table of registered flows, with every column, empty
    assert {c["name"] for c in inspector.get_columns("flows")} == set(schema.flows.c.keys())
    assert store.one("SELECT count(*) AS n FROM flows").n == 0
    for table, count in before.items():
        assert store.one(f"SELECT count(*) AS n FROM {table}").n == count, table
    # entries written before version 4 have no checksum and are still served
    assert store.one("SELECT count(*) AS n FROM cache_entries WHERE checksum IS NULL").n == 2
    assert v3_flow() == 9
    assert calls == [1, 2]


# -- an unusable FLOWBOOK_HOME ---------------------------------------------------------------------


def test_a_home_that_cannot_be_created_is_an_error(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    bad_home = blocker / "home"
    monkeypatch.setenv("FLOWBOOK_HOME", str(bad_home))

    @flow
    def my_flow() -> int:
        return 1

    try:
        # reload_settings opens the store at once and reports the error to its caller
        with pytest.raises(StoreError) as at_reload:
            reload_settings()
        assert "FLOWBOOK_HOME" in str(at_reload.value)
        assert repr(str(bad_home)) in str(at_reload.value)

        # and a run started after that tries again rather than running unrecorded
        with pytest.raises(StoreError) as at_run:
            my_flow()
        assert "FLOWBOOK_HOME" in str(at_run.value)
        assert repr(str(bad_home)) in str(at_run.value)
    finally:
        monkeypatch.setenv("FLOWBOOK_HOME", str(store.home))
        reload_settings()


def test_a_home_that_cannot_be_created_fails_the_first_flow_of_a_process(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    bad_home = blocker / "home"
    code = FLOW_CODE
    done = run_python({**store.env, "FLOWBOOK_HOME": str(bad_home)}, "-c", code, cwd=tmp_path)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "StoreError: FLOWBOOK_HOME=" in last
    assert repr(str(bad_home)) in last


def test_a_read_only_home_is_an_error_naming_it(store: StoreUnderTest) -> None:
    base = Path(tempfile.mkdtemp(prefix="flowbook-ro-"))
    try:
        home = base / "home"
        home.mkdir()
        with read_only(home):
            done = subprocess.run(
                [sys.executable, "-c", FLOW_CODE],
                cwd="/",
                env=_env({**store.env, "FLOWBOOK_HOME": str(home)}),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert list(home.iterdir()) == []
        assert done.returncode != 0
        assert "FLOWBOOK_HOME" in done.stderr
        assert repr(str(home)) in done.stderr
        assert "is not writable" in done.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)
