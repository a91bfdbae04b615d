"""Reliability of the run store under real failures and real concurrency.

- a process killed with ``kill -9`` leaves runs that the next opening of the store marks
  ``Crashed``, while runs of live or cleanly finished processes are left alone;
- a cached value (file or index row) that is truncated, overwritten or deleted is a miss
  with a ``CacheKeyWarning``, and the entry made by the re-run is a hit;
- two processes write 2,000 task runs each to one store (also while a third lists);
- ``Flow.resume`` reuses completed task calls and runs the rest, in one process or across two;
- task identity in notebooks: re-running a cell hits, editing the body misses, two notebooks
  never share entries, and a kernel restart keeps the entries.

Every test runs on both backends: SQLite in ``FLOWBOOK_HOME``, and a fresh database of a real
PostgreSQL server (``FLOWBOOK_DATABASE_URL``, given to every process and kernel a test starts).
Everything is observed in real files, real processes, real kernels and the database itself,
read through a separate SQLAlchemy engine.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from store_under_test import (
    StoreUnderTest,
    check_no_sqlite_fallback,
    child_env,
    store_env,
)

import flowbook.cache
import flowbook.runs
from flowbook import flow, task
from flowbook.caching.keys import CacheKeyWarning
from flowbook.settings import reload_settings
from flowbook.store import close_store
from flowbook.tasks import task_input_hash

pytestmark = pytest.mark.slow


# -- helpers ------------------------------------------------------------------------------------
@pytest.fixture
def untouched_store(
    store: StoreUnderTest, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[StoreUnderTest]:
    """A second store of the same backend that no process has opened yet."""
    home = tmp_path / "fresh-home"
    server: Any = None
    name = f"t_fresh_{uuid.uuid4().hex[:12]}"
    if store.backend == "postgresql":
        server = request.getfixturevalue("postgres_server")
        url = server.create_database(name)
    else:
        url = f"sqlite:///{home / 'flowbook.db'}"  # what FLOWBOOK_HOME alone means
    env = store_env(home, url if server is not None else None)
    engine = sa.create_engine(url)
    yield StoreUnderTest(store.backend, home, url, env, engine)
    close_store()  # the test may have opened it in this process: close before dropping it
    engine.dispose()
    if server is not None:
        server.drop_database(name)
    check_no_sqlite_fallback(store.backend, home)


def reopen(monkeypatch: pytest.MonkeyPatch, store: StoreUnderTest) -> None:
    """Open ``store`` afresh in this process (as any new process would)."""
    close_store()
    monkeypatch.delenv("FLOWBOOK_DATABASE_URL", raising=False)
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    reload_settings()


def write_script(path: Path, code: str) -> Path:
    path.write_text(textwrap.dedent(code))
    return path


def run_script(
    script: Path, *args: str, store: StoreUnderTest, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=child_env(store.env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.stdout.strip(), f"no output; exit {proc.returncode}, stderr:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# -- 1. crash recovery --------------------------------------------------------------------------
CRASHING_FLOW = """\
    import time

    from flowbook import flow, task


    @task
    def first():
        return {"answer": 42}


    @task
    def second(value):
        time.sleep(60)
        return value


    @flow(name="doomed")
    def doomed():
        return second(first())


    doomed()
"""


def wait_for_task_state(
    store: StoreUnderTest, task_name: str, state: str, proc: subprocess.Popen[Any]
) -> None:
    # the tables exist: the store fixture opened the store before the child started
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the child exited early with {proc.returncode}"
        rows = store.rows("SELECT state_type FROM task_runs WHERE task_name = :n", n=task_name)
        if rows and rows[0][0] == state:
            return
        time.sleep(0.05)
    pytest.fail(f"task run of {task_name!r} never reached {state} in {store.backend}")


def test_killed_process_runs_are_crashed_at_next_open(
    store: StoreUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = write_script(tmp_path / "doomed.py", CRASHING_FLOW)
    err = (tmp_path / "doomed.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=child_env(store.env), stdout=err, stderr=err
    )
    try:
        wait_for_task_state(store, "second", "RUNNING", proc)
        ((run_id,),) = store.rows("SELECT id FROM flow_runs WHERE flow_name = 'doomed'")

        # the process is alive: opening the store must leave its run alone
        reopen(monkeypatch, store)
        assert flowbook.runs.get(run_id).state == "Running"
        assert flowbook.runs.list(state="Crashed") == []

        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        err.close()

    # still what the killed process left behind: nobody opened the store since
    still = store.rows("SELECT state_type FROM flow_runs WHERE id = :id", id=run_id)
    assert still == [("RUNNING",)]

    reopen(monkeypatch, store)
    detail = flowbook.runs.get(run_id)
    assert detail.state == "Crashed"
    assert detail.state_type == "CRASHED"
    assert detail.message is not None
    assert "process" in detail.message
    assert "ended" in detail.message
    assert detail.end_time is not None
    assert detail.states[-1]["name"] == "Crashed"
    tasks = {t["task_name"]: t for t in detail.task_run_list}
    assert tasks["first"]["state"] == "Completed"
    assert tasks["second"]["state"] == "Crashed"
    assert "ended" in (tasks["second"]["message"] or "")
    assert tasks["second"]["states"][-1]["name"] == "Crashed"
    ((blob,),) = store.rows("SELECT result FROM task_runs WHERE task_name = 'first'")
    assert pickle.loads(bytes(blob)) == {"answer": 42}

    crashed = flowbook.runs.list(state="Crashed")
    assert [r.id for r in crashed] == [run_id]
    assert crashed[0].flow_name == "doomed"
    assert store.rows("SELECT count(*) FROM processes WHERE pid = :pid", pid=proc.pid) == [(0,)]

    # a later open changes nothing more
    reopen(monkeypatch, store)
    assert [r.id for r in flowbook.runs.list(state="Crashed")] == [run_id]
    assert flowbook.runs.get(run_id).task_run_list[0]["state"] == "Completed"


FINISHING_FLOWS = """\
    import sys

    from flowbook import flow, task


    @task
    def work(x):
        if x < 0:
            raise ValueError("negative")
        return x


    @flow(name="tidy")
    def tidy(x):
        return work(x)


    tidy(int(sys.argv[1]))
"""


def test_cleanly_finished_processes_are_never_crashed(
    store: StoreUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = write_script(tmp_path / "tidy.py", FINISHING_FLOWS)
    ok = run_script(script, "3", store=store)
    assert ok.returncode == 0, ok.stderr
    failing = run_script(script, "-1", store=store)
    assert failing.returncode == 1, failing.stderr
    assert "ValueError: negative" in failing.stderr

    for _ in range(2):
        reopen(monkeypatch, store)
        runs = flowbook.runs.list(flow="tidy")
        assert sorted(r.state for r in runs) == ["Completed", "Failed"]
        assert flowbook.runs.list(state="Crashed") == []
        for run in runs:
            states = [s["name"] for s in flowbook.runs.get(run.id).states]
            assert "Crashed" not in states
    pids = [row[0] for row in store.rows("SELECT pid FROM processes")]
    assert pids == [os.getpid()]


# -- 2. corrupt cache entries -------------------------------------------------------------------
SQUARE_CALLS: list[int] = []
# more than the store keeps in the index row: the value goes to a file in <results>/cache/
PAD = b"\0" * 100_000


@task(cache_key_fn=task_input_hash)
def square_cached(x: int) -> dict[str, Any]:
    SQUARE_CALLS.append(x)
    return {"square": x * x, "pad": PAD}


@flow(name="squares")
def squares(x: int) -> int:
    return int(square_cached(x)["square"])


def damage_file(file: Path, how: str) -> None:
    if how == "truncated":
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        file.write_bytes(b"\x00not a pickle\xff" * 8)
    else:
        file.unlink()


def damage_row(store: StoreUnderTest, how: str) -> None:
    with store.engine.begin() as conn:
        ((data,),) = conn.execute(sa.text("SELECT value FROM cache_entries")).all()
        assert data, "the small value is not kept in the index row"
        data = bytes(data)
        damaged = {"truncated": data[: len(data) // 2], "garbage": b"\x80garbage"}
        conn.execute(sa.text("UPDATE cache_entries SET value = :v"), {"v": damaged.get(how)})


def cache_files(home: Path) -> list[Path]:
    return list((home / "results" / "cache").glob("*.pkl"))


def test_corrupt_cache_files_are_misses_with_a_warning_in_process(store: StoreUnderTest) -> None:
    SQUARE_CALLS.clear()
    assert squares(7) == 49
    assert squares(7) == 49
    assert SQUARE_CALLS == [7]
    files = cache_files(store.home)
    assert len(files) == 1, files

    for n, how in enumerate(("truncated", "garbage", "deleted"), start=2):
        damage_file(files[0], how)
        with pytest.warns(CacheKeyWarning, match="square_cached") as caught:
            assert squares(7) == 49
        assert len(caught) == 1, [str(w.message) for w in caught]
        assert len(SQUARE_CALLS) == n, f"after the file was {how}, the body did not run again"
        with warnings.catch_warnings(record=True) as after:
            warnings.simplefilter("always")
            assert squares(7) == 49
        assert [str(w.message) for w in after] == [], f"the entry re-made after {how} is unusable"
        assert len(SQUARE_CALLS) == n, f"after the file was {how}, the next call missed"
        assert files[0].exists()
    (entry,) = flowbook.cache.entries(task="square_cached")
    assert entry.hits == 1


CACHED_SCRIPT = """\
    import json
    import sys
    import warnings

    from flowbook import flow, task
    from flowbook.tasks import task_input_hash


    @task(cache_key_fn=task_input_hash)
    def square_cached(x, pad):
        with open(sys.argv[1], "a") as f:
            f.write("ran\\n")
        return {"square": x * x, "pad": b"\\0" * pad}


    @flow(name="squares")
    def squares(x, pad):
        return square_cached(x, pad)["square"]


    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = squares(7, int(sys.argv[2]))
    print(json.dumps({
        "value": value,
        "warnings": [[w.category.__name__, str(w.message)] for w in caught],
    }))
"""


@pytest.mark.parametrize("kept_in", ["file", "row"])
def test_corrupt_cache_entries_are_misses_with_a_warning_across_processes(
    store: StoreUnderTest, tmp_path: Path, kept_in: str
) -> None:
    # a large value is kept in a file of <results>/cache/, a small one in the index row
    script = write_script(tmp_path / "cached.py", CACHED_SCRIPT)
    log = tmp_path / "ran.log"
    pad = "100000" if kept_in == "file" else "10"

    def call() -> list[list[str]]:
        out = last_json(run_script(script, str(log), pad, store=store))
        assert out["value"] == 49
        return list(out["warnings"])

    assert call() == []
    assert call() == []
    assert len(lines(log)) == 1
    files = cache_files(store.home)
    assert len(files) == (1 if kept_in == "file" else 0), files

    for n, how in enumerate(("truncated", "garbage", "deleted"), start=2):
        if kept_in == "file":
            damage_file(files[0], how)
        else:
            damage_row(store, how)
        warned = call()
        assert [w[0] for w in warned] == ["CacheKeyWarning"], (how, warned)
        assert "square_cached" in warned[0][1]
        assert len(lines(log)) == n, f"after the value was {how}, the body did not run again"
        assert call() == []
        assert len(lines(log)) == n, f"after the value was {how}, the next process missed"


# -- 3. concurrency -----------------------------------------------------------------------------
MANY_TASKS = """\
    import json
    import sys
    import time
    from pathlib import Path

    import flowbook.runs
    import flowbook.store.queries
    from flowbook import flow, task


    @task
    def inc(i, pause):
        if pause:
            time.sleep(pause)
        return i + 1


    @flow(name="many")
    def many(n, pause):
        futures = []
        total = 0
        for i in range(n):
            if i % 2:
                futures.append(inc.submit(i, pause))
            else:
                total += inc(i, pause)
        return total + sum(f.result() for f in futures)


    role, ready, go, done = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    if role == "write":
        value = many(2000, float(sys.argv[5]))
        done.touch()
        print(json.dumps({"value": value}))
    else:
        lists = 0
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:
            flowbook.runs.list()
            lists += 1
        print(json.dumps({"lists": lists}))
"""


def start_together(
    script: Path, tmp_path: Path, store: StoreUnderTest, roles: list[tuple[str, ...]]
) -> list[subprocess.CompletedProcess[str]]:
    """Start one process per role, release them at the same moment, wait for all."""
    go = tmp_path / "go"
    procs = []
    for i, role in enumerate(roles):
        ready = tmp_path / f"ready-{i}"
        args = [role[0], str(ready), str(go), str(tmp_path / f"done-{role[1]}"), *role[2:]]
        procs.append(
            (
                ready,
                subprocess.Popen(
                    [sys.executable, str(script), *args],
                    env=child_env(store.env),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    deadline = time.monotonic() + 30
    while not all(ready.exists() for ready, _ in procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = []
    for _, proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def check_clean(results: list[subprocess.CompletedProcess[str]]) -> None:
    for r in results:
        assert r.returncode == 0, r.stderr
        assert "database is locked" not in r.stderr
        assert "could not write" not in r.stderr


def check_many_runs(store: StoreUnderTest, expected_runs: int) -> None:
    counts = store.rows(
        "SELECT f.state_type, count(t.id), "
        "sum(CASE WHEN t.state_type = 'COMPLETED' THEN 1 ELSE 0 END) FROM flow_runs f "
        "JOIN task_runs t ON t.flow_run_id = f.id WHERE f.flow_name = 'many' GROUP BY f.id",
    )
    assert counts == [("COMPLETED", 2000, 2000)] * expected_runs
    runs = flowbook.runs.list(flow="many")
    assert [(r.state, r.task_runs) for r in runs] == [("Completed", 2000)] * expected_runs


@pytest.mark.parametrize("store_state", ["fresh", "existing"])
def test_two_processes_write_2000_task_runs_each_to_one_store(
    store: StoreUnderTest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    store_state: str,
) -> None:
    # "fresh": both processes create the store (the SQLite file, or the tables in an empty
    # PostgreSQL database) at the same moment; "existing": it exists
    shared = request.getfixturevalue("untouched_store") if store_state == "fresh" else store
    script = write_script(tmp_path / "many.py", MANY_TASKS)
    results = start_together(script, tmp_path, shared, [("write", "0", "0"), ("write", "1", "0")])
    check_clean(results)
    assert [last_json(r)["value"] for r in results] == [2001000, 2001000]
    reopen(monkeypatch, shared)
    check_many_runs(shared, 2)


def test_listing_runs_while_another_process_writes(
    store: StoreUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = write_script(tmp_path / "many.py", MANY_TASKS)
    results = start_together(script, tmp_path, store, [("write", "w", "0.0005"), ("list", "w")])
    check_clean(results)
    assert last_json(results[0])["value"] == 2001000
    assert last_json(results[1])["lists"] >= 1
    reopen(monkeypatch, store)
    check_many_runs(store, 1)


# -- 4. resume ----------------------------------------------------------------------------------
def note(log: str, name: str) -> None:
    with open(log, "a") as f:
        f.write(name + "\n")


@task
def read_a(src: str, log: str) -> int:
    note(log, "a")
    return int(Path(src).read_text())


@task
def parse_a(text: str, log: str) -> int:
    note(log, "a")
    return int(text)


@task
def times_ten(x: int, log: str) -> int:
    note(log, "b")
    return x * 10


@task
def plus_one(y: int, flag: str, log: str) -> int:
    note(log, "c")
    if Path(flag).read_text() == "fail":
        raise RuntimeError("c was told to fail")
    return y + 1


@flow(name="abc-by-path")
def abc_by_path(src: str, flag: str, log: str) -> int:
    return plus_one(times_ten(read_a(src, log), log), flag, log)


@flow(name="abc-by-value")
def abc_by_value(src: str, flag: str, log: str) -> int:
    return plus_one(times_ten(parse_a(Path(src).read_text(), log), log), flag, log)


@flow(name="other-flow")
def other_flow() -> int:
    return 1


@pytest.fixture
def abc_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    src, flag, log = tmp_path / "a.txt", tmp_path / "flag.txt", tmp_path / "ran.log"
    src.write_text("4")
    flag.write_text("fail")
    return src, flag, log


def failed_run(the_flow: Any, src: Path, flag: Path, log: Path) -> flowbook.runs.FlowRunInfo:
    flag.write_text("fail")
    state = the_flow(str(src), str(flag), str(log), return_state=True)
    assert state.is_failed()
    (run,) = flowbook.runs.list(flow=the_flow.name, limit=1)
    assert run.state == "Failed"
    return run


def test_resume_runs_only_what_did_not_complete(
    store: StoreUnderTest, abc_files: tuple[Path, Path, Path]
) -> None:
    src, flag, log = abc_files
    old = failed_run(abc_by_path, src, flag, log)
    assert lines(log) == ["a", "b", "c"]

    flag.write_text("ok")
    assert abc_by_path.resume(old.id) == 41
    assert lines(log) == ["a", "b", "c", "c"]
    (new,) = flowbook.runs.list(flow="abc-by-path", limit=1)
    assert new.id != old.id
    detail = flowbook.runs.get(new.id)
    assert detail.resumed_from == old.id
    assert detail.state == "Completed"
    tasks = {t["task_name"]: t for t in detail.task_run_list}
    assert tasks["read_a"]["state"] == "Completed"
    assert old.id in (tasks["read_a"]["message"] or "")
    assert old.id in (tasks["times_ten"]["message"] or "")
    assert tasks["plus_one"]["run_count"] == 1

    # by run name
    log.write_text("")
    named = failed_run(abc_by_path, src, flag, log)
    assert lines(log) == ["a", "b", "c"]
    flag.write_text("ok")
    assert abc_by_path.resume(named.name) == 41
    assert lines(log) == ["a", "b", "c", "c"]
    (newest,) = flowbook.runs.list(flow="abc-by-path", limit=1)
    assert flowbook.runs.get(newest.id).resumed_from == named.id


def test_resume_reuses_a_call_whose_arguments_are_unchanged(
    store: StoreUnderTest, abc_files: tuple[Path, Path, Path]
) -> None:
    src, flag, log = abc_files
    old = failed_run(abc_by_path, src, flag, log)
    src.write_text("5")
    flag.write_text("ok")
    # read_a(src, log) is called with the same arguments (the path, not what it reads), so
    # its stored result 4 is reused; times_ten(4, log) then has the same arguments too and is
    # reused; only plus_one runs: 4 * 10 + 1, although the file now says 5.
    assert abc_by_path.resume(old.id) == 41
    assert lines(log) == ["a", "b", "c", "c"]


def test_resume_runs_again_calls_whose_arguments_changed(
    store: StoreUnderTest, abc_files: tuple[Path, Path, Path]
) -> None:
    src, flag, log = abc_files
    old = failed_run(abc_by_value, src, flag, log)
    src.write_text("5")
    flag.write_text("ok")
    # the flow body reads the file and passes its content: parse_a gets "5" instead of "4",
    # so it runs; times_ten then gets 5 instead of 4 and runs; plus_one runs: 5 * 10 + 1.
    assert abc_by_value.resume(old.id) == 51
    assert lines(log) == ["a", "b", "c", "a", "b", "c"]
    detail = flowbook.runs.get(flowbook.runs.list(flow="abc-by-value", limit=1)[0].id)
    assert detail.resumed_from == old.id
    assert all(old.id not in (t["message"] or "") for t in detail.task_run_list)


def test_resume_refuses_what_it_cannot_resume(
    store: StoreUnderTest, abc_files: tuple[Path, Path, Path]
) -> None:
    src, flag, log = abc_files
    old = failed_run(abc_by_path, src, flag, log)
    ran = len(lines(log))
    with pytest.raises(ValueError, match="other-flow") as info:
        other_flow.resume(old.id)
    assert "abc-by-path" in str(info.value)
    assert len(lines(log)) == ran

    flag.write_text("ok")
    assert abc_by_path(str(src), str(flag), str(log)) == 41
    (done,) = flowbook.runs.list(flow="abc-by-path", limit=1)
    assert done.state == "Completed"
    ran = len(lines(log))
    with pytest.raises(ValueError, match="nothing to resume"):
        abc_by_path.resume(done.id)
    with pytest.raises(LookupError, match="no-such-run-anywhere"):
        abc_by_path.resume("no-such-run-anywhere")
    assert len(lines(log)) == ran
    assert len(flowbook.runs.list(flow="abc-by-path")) == 2


RESUMABLE_SCRIPT = """\
    import json
    import sys
    from pathlib import Path

    import flowbook.runs
    from flowbook import flow, task


    def note(log, name):
        with open(log, "a") as f:
            f.write(name + "\\n")


    @task
    def read_a(src, log):
        note(log, "a")
        return int(Path(src).read_text())


    @task
    def padded(x, log):
        note(log, "b")
        return {"value": x * 10, "pad": "p" * 100_000}


    @task
    def plus_one(y, flag, log):
        note(log, "c")
        if Path(flag).read_text() == "fail":
            raise RuntimeError("c was told to fail")
        return y["value"] + 1


    @flow(name="pipeline")
    def pipeline(src, flag, log):
        return plus_one(padded(read_a(src, log), log), flag, log)


    if sys.argv[1] == "run":
        state = pipeline(sys.argv[2], sys.argv[3], sys.argv[4], return_state=True)
        out = {"state": state.name}
    else:
        out = {"value": pipeline.resume(sys.argv[2])}
    run = flowbook.runs.get(flowbook.runs.list(flow="pipeline", limit=1)[0].id)
    out.update(id=run.id, resumed_from=run.resumed_from)
    print(json.dumps(out))
"""


def test_resume_in_another_process(
    store: StoreUnderTest, tmp_path: Path, abc_files: tuple[Path, Path, Path]
) -> None:
    src, flag, log = abc_files
    script = write_script(tmp_path / "pipeline.py", RESUMABLE_SCRIPT)
    first = last_json(run_script(script, "run", str(src), str(flag), str(log), store=store))
    assert first["state"] == "Failed"
    assert lines(log) == ["a", "b", "c"]
    # the large result of padded lives in a file of the results directory
    ((result_file,),) = store.rows(
        "SELECT result_file FROM task_runs WHERE task_name = 'padded' AND flow_run_id = :id",
        id=first["id"],
    )
    assert result_file is not None
    assert (store.home / "results" / result_file).is_file()

    flag.write_text("ok")
    second = last_json(run_script(script, "resume", first["id"], store=store))
    assert second["value"] == 41
    assert second["resumed_from"] == first["id"]
    assert second["id"] != first["id"]
    assert lines(log) == ["a", "b", "c", "c"]


# -- 5. task identity in notebooks --------------------------------------------------------------
SETUP_CELL = """\
from flowbook import flow, task
from flowbook.tasks import task_input_hash


@flow(name="nb-flow")
def nb_flow(x):
    return shout(x)
"""
DEFINE_A = """\
@task(cache_key_fn=task_input_hash)
def shout(x):
    print("BODY-A ran")
    return x * 2
"""
DEFINE_B = """\
@task(cache_key_fn=task_input_hash)
def shout(x):
    print("BODY-B ran")
    return x * 3
"""
CALL_CELL = 'print("RESULT", nb_flow(21), shout.task_key)\n'


def write_notebook(path: Path, cells: list[str]) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, path)
    return path


def execute_notebook(
    path: Path,
    store: StoreUnderTest,
    monkeypatch: pytest.MonkeyPatch,
    kernel_env: dict[str, str],
    session: str | None,
) -> list[tuple[str | None, str]]:
    """Run the notebook in a new kernel; (result line, body prints) of each call cell.

    The kernel inherits this process's environment: the store's ``FLOWBOOK_*`` variables,
    the Jupyter paths of ``kernel_env`` and the session name.
    """
    import nbformat
    from nbclient import NotebookClient

    for name, value in {**store.env, **kernel_env}.items():
        monkeypatch.setenv(name, value)
    if session is None:
        monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    else:
        monkeypatch.setenv("JPY_SESSION_NAME", session)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    calls = []
    for cell in nb.cells:
        if cell.source != CALL_CELL.rstrip("\n") and cell.source != CALL_CELL:
            continue
        text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        result = next((line for line in text.splitlines() if line.startswith("RESULT")), None)
        bodies = " ".join(line for line in text.splitlines() if line.startswith("BODY"))
        calls.append((result, bodies))
    return calls


def test_notebook_cell_rerun_hits_edit_misses_and_restore_hits(
    store: StoreUnderTest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    venv_kernel_env: dict[str, str],
) -> None:
    cells = [SETUP_CELL, DEFINE_A, CALL_CELL, DEFINE_A, CALL_CELL, DEFINE_B, CALL_CELL]
    path = write_notebook(tmp_path / "edits.ipynb", [*cells, DEFINE_A, CALL_CELL])
    calls = execute_notebook(path, store, monkeypatch, venv_kernel_env, session=str(path))
    key = f"notebook:{path}:shout"
    assert calls == [
        (f"RESULT 42 {key}", "BODY-A ran"),
        (f"RESULT 42 {key}", ""),
        (f"RESULT 63 {key}", "BODY-B ran"),
        (f"RESULT 42 {key}", ""),
    ]
    assert store.rows("SELECT count(*) FROM flow_runs WHERE flow_name = 'nb-flow'") == [(4,)]


@pytest.mark.parametrize("with_session_name", [True, False], ids=["JPY_SESSION_NAME", "none"])
def test_two_notebooks_never_share_cache_entries(
    store: StoreUnderTest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    venv_kernel_env: dict[str, str],
    with_session_name: bool,
) -> None:
    # A kernel told its notebook (JPY_SESSION_NAME, as Jupyter servers do) keeps notebooks of
    # one folder apart; one that is not told (nbclient) is identified by its working directory,
    # the notebook's folder, so there the notebooks live in two folders.
    folders = ("", "") if with_session_name else ("a", "b")
    for folder in folders:
        (tmp_path / folder).mkdir(exist_ok=True)
    one = write_notebook(tmp_path / folders[0] / "one.ipynb", [SETUP_CELL, DEFINE_A, CALL_CELL])
    two = write_notebook(tmp_path / folders[1] / "two.ipynb", [SETUP_CELL, DEFINE_A, CALL_CELL])
    first = execute_notebook(
        one, store, monkeypatch, venv_kernel_env, str(one) if with_session_name else None
    )
    second = execute_notebook(
        two, store, monkeypatch, venv_kernel_env, str(two) if with_session_name else None
    )
    assert first[0][1] == "BODY-A ran"
    keys = [call[0] for call in first + second]
    assert second[0][1] == "BODY-A ran", (
        f"the second notebook got the first notebook's cached result; results and task keys: {keys}"
    )
    entries = flowbook.cache.entries(task="shout")
    assert len({e.task_key for e in entries}) == 2, [e.task_key for e in entries]


def test_notebook_cache_survives_a_kernel_restart(
    store: StoreUnderTest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    venv_kernel_env: dict[str, str],
) -> None:
    path = write_notebook(tmp_path / "restart.ipynb", [SETUP_CELL, DEFINE_A, CALL_CELL])
    before = execute_notebook(path, store, monkeypatch, venv_kernel_env, session=str(path))
    after = execute_notebook(path, store, monkeypatch, venv_kernel_env, session=str(path))
    key = f"notebook:{path}:shout"
    assert before == [(f"RESULT 42 {key}", "BODY-A ran")]
    assert after == [(f"RESULT 42 {key}", "")]
    (entry,) = flowbook.cache.entries(task="shout")
    assert entry.hits == 1
