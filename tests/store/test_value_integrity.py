"""Stored values are never wrong: checksums, file modes, a full disk, and resume.

- every task result and cache value carries the CRC-32 of its pickled bytes in its index
  row; one flipped byte (in a 300 KB file, or in a row) is a miss or an unusable result with
  a warning that names the file (or the task and key), and the value is recomputed;
- rows written before checksums were kept (NULL) are read as before;
- the results directory and its subdirectories are 0700 and every file 0600, whatever the
  umask; a results directory others can write to is refused with a message saying how to fix
  it;
- a cached task on a full disk (an injected ENOSPC) or a read-only results directory (a
  read-only bind mount) completes with its value, one warning names the file and the error,
  and no file is left behind;
- ``Flow.resume`` of a failed run holding Cached task runs, ``persist_result=False`` task
  runs, results that could not be stored, and results whose bytes changed.

Each test runs on SQLite (in ``FLOWBOOK_HOME``) and on a fresh database of the real PostgreSQL
server the test session starts; the rows are read through an engine of the test's own, the
files from the disk, and task bodies count their real executions.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pickle
import re
import shutil
import stat
import threading
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from store_under_test import (
    StoreUnderTest,
    read_only,  # the fixture and helpers of every store test
)

import flowbook.cache
import flowbook.runs
from flowbook import flow, task
from flowbook.caching.keys import CacheKeyWarning
from flowbook.settings import reload_settings
from flowbook.store import StoreError, close_store, get_store
from flowbook.tasks import task_input_hash


# -- the store under test -----------------------------------------------------------------------
def reopen() -> None:
    """Open the store afresh in this process: nothing of it is kept in memory any more."""
    close_store()
    reload_settings()
    assert get_store() is not None


def flip_byte(path: Path) -> tuple[bytes, bytes]:
    """Flip one bit in the middle of ``path``; (the bytes before, the bytes after)."""
    before = path.read_bytes()
    after = flipped(before)
    path.write_bytes(after)
    return before, after


def flipped(data: bytes) -> bytes:
    at = len(data) // 2
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def crc32(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


# -- tasks whose bodies count their executions ---------------------------------------------------
CALLS: list[str] = []
# ~300 KB pickled: more than a row keeps, so the value lives in a file
BIG = 300_000


@task(cache_key_fn=task_input_hash)
def big_cached(x: int) -> dict[str, Any]:
    CALLS.append(f"big {x}")
    return {"x": x, "pad": "a" * BIG}


@task(cache_key_fn=task_input_hash)
def small_cached(x: int) -> str:
    CALLS.append(f"small {x}")
    return f"value-{x}-" + "b" * 200


@flow(name="big-flow")
def big_flow(x: int) -> dict[str, Any]:
    return big_cached(x)


@flow(name="small-flow")
def small_flow(x: int) -> str:
    return small_cached(x)


@pytest.fixture(autouse=True)
def _no_calls() -> None:
    CALLS.clear()


# -- 1. checksums ---------------------------------------------------------------------------------
def test_a_flipped_byte_in_a_cache_file_is_a_miss_naming_the_file(store: StoreUnderTest) -> None:
    assert big_flow(1)["x"] == 1
    assert big_flow(1)["x"] == 1
    assert CALLS == ["big 1"]
    (file,) = files_under(store.results / "cache")
    assert file.stat().st_size > BIG
    ((kept,),) = store.rows("SELECT checksum FROM cache_entries")
    assert kept == crc32(file.read_bytes())

    before, after = flip_byte(file)
    # pickle alone would hand out a wrong value without a word: the flip is inside the padding
    wrong = pickle.loads(after)
    assert wrong != pickle.loads(before)
    assert wrong["x"] == 1

    with pytest.warns(CacheKeyWarning) as caught:
        value = big_flow(1)
    assert value == {"x": 1, "pad": "a" * BIG}
    assert CALLS == ["big 1", "big 1"], "the damaged value was served instead of recomputed"
    (message,) = [str(w.message) for w in caught]
    assert "big_cached" in message
    assert str(file) in message
    assert "does not match its checksum" in message

    # the re-made entry is whole again: a hit, no warning
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        assert big_flow(1) == {"x": 1, "pad": "a" * BIG}
    assert [str(w.message) for w in later] == []
    assert CALLS == ["big 1", "big 1"]
    ((kept,),) = store.rows("SELECT checksum FROM cache_entries")
    assert kept == crc32(file.read_bytes()) == crc32(before)


def test_a_flipped_byte_in_a_cache_row_is_a_miss_naming_the_task_and_key(
    store: StoreUnderTest,
) -> None:
    assert small_flow(2) == "value-2-" + "b" * 200
    ((key, value, kept),) = store.rows("SELECT key, value, checksum FROM cache_entries")
    assert files_under(store.results / "cache") == []
    assert kept == crc32(bytes(value))
    damaged = flipped(bytes(value))
    assert pickle.loads(damaged) != pickle.loads(bytes(value))  # silent for pickle
    store.execute("UPDATE cache_entries SET value = :v", v=damaged)

    reopen()  # a process that did not put the value: it reads the row
    with pytest.warns(CacheKeyWarning) as caught:
        assert small_flow(2) == "value-2-" + "b" * 200
    assert CALLS == ["small 2", "small 2"]
    (message,) = [str(w.message) for w in caught]
    assert "small_cached" in message
    assert key in message
    assert "index row" in message
    assert "does not match its checksum" in message
    ((value, kept),) = store.rows("SELECT value, checksum FROM cache_entries")
    assert kept == crc32(bytes(value))
    assert pickle.loads(bytes(value)) == "value-2-" + "b" * 200


def test_values_stored_without_a_checksum_are_read_as_before(store: StoreUnderTest) -> None:
    # rows of a store written before checksums were kept have NULL there
    assert big_flow(3)["x"] == 3
    assert small_flow(3).startswith("value-3-")
    store.execute("UPDATE cache_entries SET checksum = NULL")
    reopen()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert big_flow(3) == {"x": 3, "pad": "a" * BIG}
        assert small_flow(3) == "value-3-" + "b" * 200
    assert [str(w.message) for w in caught] == []
    assert CALLS == ["big 3", "small 3"]


# -- 2. modes -------------------------------------------------------------------------------------
@task(cache_key_fn=task_input_hash)
def big_and_kept(x: int) -> str:
    CALLS.append(f"kept {x}")
    return "k" * BIG


@flow(name="modes")
def modes_flow() -> int:
    return len(big_and_kept(1)) + len(big_cached(2)["pad"])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_results_directories_are_0700_and_files_0600_whatever_the_umask(
    store: StoreUnderTest,
) -> None:
    shutil.rmtree(store.results)  # made again by the first value file
    old = os.umask(0)
    try:
        assert modes_flow() == 2 * BIG
    finally:
        os.umask(old)
    written = files_under(store.results)
    assert {p.parent.name for p in written} == {"runs", "cache"}, written
    assert len(written) == 4  # two task results, two cache values
    assert {oct(mode(p)) for p in written} == {"0o600"}
    for directory in (store.results, store.results / "runs", store.results / "cache"):
        assert oct(mode(directory)) == "0o700", directory
    assert not [p for p in written if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("which", ["results", "results/cache"])
def test_a_results_directory_others_can_write_to_is_refused(
    store: StoreUnderTest, which: str
) -> None:
    assert big_flow(4)["x"] == 4  # the store made results/ and results/cache/
    shared = store.home / which
    shared.chmod(0o770)
    close_store()
    with pytest.raises(StoreError) as info:
        reload_settings()  # (opens the store)
    message = str(info.value)
    assert f"the results directory {shared} is writable by other users" in message
    assert f"run chmod 700 {shared}" in message
    assert "FLOWBOOK_RESULTS_DIR" in message

    shared.chmod(0o700)
    reload_settings()
    assert get_store() is not None
    assert big_flow(4)["x"] == 4
    assert CALLS == ["big 4"]


# -- 3. a full disk, a read-only results directory ----------------------------------------------
@contextlib.contextmanager
def disk_full_under(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """``os.write`` to a file under ``directory`` fails with ENOSPC; yields the files tried."""
    real_write = os.write
    tried: list[str] = []

    def write(fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(str(directory)):
            tried.append(target)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", write)
        yield tried


def recorded(store: StoreUnderTest, flow_name: str) -> list[tuple[Any, ...]]:
    return store.rows(
        "SELECT f.state_name, t.state_name, t.result, t.result_file FROM flow_runs f "
        "JOIN task_runs t ON t.flow_run_id = f.id WHERE f.flow_name = :n ORDER BY f.created_at",
        n=flow_name,
    )


def test_a_full_disk_leaves_a_cached_task_uncached_with_one_warning(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        disk_full_under(store.results, monkeypatch) as tried,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        assert big_flow(5) == {"x": 5, "pad": "a" * BIG}
        assert big_flow(5) == {"x": 5, "pad": "a" * BIG}
    assert tried, "the injected fault was never reached"
    assert CALLS == ["big 5", "big 5"], "a value that was not stored was served"
    cache_warnings = [str(w.message) for w in caught if w.category is CacheKeyWarning]
    assert len(cache_warnings) == 1, cache_warnings
    (message,) = cache_warnings
    assert "big_cached" in message
    assert re.search(rf"{re.escape(str(store.results))}/cache/[0-9a-f]{{64}}\.pkl ", message)
    assert "No space left on device" in message
    # the task result's file failed too: the run is recorded without it, and says so once
    runs_warnings = [
        str(w.message) for w in caught if str(store.results / "runs") in str(w.message)
    ]
    assert len(runs_warnings) == 1, [str(w.message) for w in caught]
    assert "No space left on device" in runs_warnings[0]
    assert files_under(store.results) == [], "a partial or temporary file was left behind"
    assert recorded(store, "big-flow") == [("Completed", "Completed", None, None)] * 2
    assert store.rows("SELECT count(*) FROM cache_entries") == [(0,)]

    # space again: the next call stores its value, and the one after hits
    assert big_flow(5)["x"] == 5
    assert big_flow(5)["x"] == 5
    assert CALLS == ["big 5"] * 3
    assert len(files_under(store.results / "cache")) == 1


def test_a_read_only_results_directory_leaves_a_cached_task_uncached(
    store: StoreUnderTest,
) -> None:
    assert big_flow(6)["x"] == 6  # an entry written while the directory was writable
    before = files_under(store.results)
    assert len(before) == 2
    with read_only(store.results):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert big_flow(7) == {"x": 7, "pad": "a" * BIG}
            assert big_flow(7)["x"] == 7
            assert big_flow(6)["x"] == 6  # what was stored is still served
        assert files_under(store.results) == before
    assert CALLS == ["big 6", "big 7", "big 7"]
    cache_warnings = [str(w.message) for w in caught if w.category is CacheKeyWarning]
    assert len(cache_warnings) == 1, cache_warnings
    reason = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    cache_file = rf"{re.escape(str(store.results))}/cache/[0-9a-f]{{64}}\.pkl "
    assert re.search(cache_file, cache_warnings[0]), cache_warnings[0]
    assert reason in cache_warnings[0]
    states = [row[:2] for row in recorded(store, "big-flow")]
    assert states == [("Completed", "Completed")] * 3 + [("Completed", "Cached")], states


# -- 4. resume ------------------------------------------------------------------------------------
def note(log: str, name: str) -> None:
    with open(log, "a") as f:
        f.write(name + "\n")


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@task(cache_key_fn=task_input_hash)
def cached_step(x: int, log: str) -> dict[str, Any]:
    note(log, "cached")
    return {"value": x + 1, "pad": "c" * BIG}


@task(persist_result=False)
def unpersisted(x: int, log: str) -> int:
    note(log, "unpersisted")
    return x * 2


@task
def unpicklable(x: int, log: str) -> tuple[int, Any]:
    note(log, "unpicklable")
    return x * 3, threading.Lock()  # neither pickle nor cloudpickle can store a lock


@task
def in_row(x: int, log: str) -> int:
    note(log, "in-row")
    return x * 4


@task
def in_file(x: int, log: str) -> str:
    note(log, "in-file")
    return str(x) * BIG


@task
def last(total: int, flag: str, log: str) -> int:
    note(log, "last")
    if Path(flag).read_text() == "fail":
        raise RuntimeError("last was told to fail")
    return total


@flow(name="resumable")
def resumable(x: int, flag: str, log: str) -> int:
    a = cached_step(x, log)["value"]
    b = unpersisted(x, log)
    c = unpicklable(x, log)[0]
    d = in_row(x, log)
    e = len(in_file(x, log))
    return last(a + b + c + d + e, flag, log)


EXPECTED = (10 + 1) + 20 + 30 + 40 + 2 * BIG  # resumable(10, ...)
ALL = ["cached", "unpersisted", "unpicklable", "in-row", "in-file", "last"]


@pytest.fixture
def flag_and_log(tmp_path: Path) -> tuple[Path, Path]:
    flag, log = tmp_path / "flag", tmp_path / "ran.log"
    flag.write_text("fail")
    return flag, log


def failed_run_with_a_cached_task(flag: Path, log: Path) -> str:
    """A failed run of ``resumable`` whose cached_step was served from the cache."""
    for _ in range(2):
        state = resumable(10, str(flag), str(log), return_state=True)
        assert state.is_failed()
    assert ran(log) == ALL + [n for n in ALL if n != "cached"]
    run = flowbook.runs.list(flow="resumable", limit=1)[0]
    states = {t["task_name"]: t["state"] for t in flowbook.runs.get(run.id).task_run_list}
    assert states["cached_step"] == "Cached"
    assert states["last"] == "Failed"
    log.write_text("")
    return run.id


def task_states(run_id: str) -> dict[str, tuple[str, str | None]]:
    return {
        t["task_name"]: (t["state"], t["message"]) for t in flowbook.runs.get(run_id).task_run_list
    }


def resumed(old: str) -> str:
    (new,) = flowbook.runs.list(flow="resumable", limit=1)
    assert new.id != old
    assert flowbook.runs.get(new.id).resumed_from == old
    return new.id


def test_resume_reuses_cached_and_stored_results_and_runs_the_rest(
    store: StoreUnderTest, flag_and_log: tuple[Path, Path]
) -> None:
    flag, log = flag_and_log
    old = failed_run_with_a_cached_task(flag, log)
    flag.write_text("ok")
    assert resumable.resume(old) == EXPECTED
    # the cached call reuses its entry; the stored results are reused; what was not stored
    # (persist_result=False, an unpicklable value) runs again
    assert ran(log) == ["unpersisted", "unpicklable", "last"]
    states = task_states(resumed(old))
    assert states["cached_step"] == ("Completed", f"Reused the cached result of flow run {old}.")
    assert states["in_row"] == ("Completed", f"Reused the result of flow run {old}.")
    assert states["in_file"] == ("Completed", f"Reused the result of flow run {old}.")
    assert states["unpersisted"][0] == states["unpicklable"][0] == "Completed"
    (entry,) = flowbook.cache.entries(task="cached_step")
    assert entry.hits == 2  # the failed run's hit, and the resume's


def test_resume_runs_a_cached_call_whose_entry_is_gone(
    store: StoreUnderTest, flag_and_log: tuple[Path, Path]
) -> None:
    flag, log = flag_and_log
    old = failed_run_with_a_cached_task(flag, log)
    assert flowbook.cache.clear(task="cached_step") == 1
    flag.write_text("ok")
    assert resumable.resume(old) == EXPECTED
    assert ran(log) == ["cached", "unpersisted", "unpicklable", "last"]


def test_resume_runs_a_cached_call_whose_entry_is_damaged(
    store: StoreUnderTest, flag_and_log: tuple[Path, Path]
) -> None:
    flag, log = flag_and_log
    old = failed_run_with_a_cached_task(flag, log)
    (file,) = files_under(store.results / "cache")
    flip_byte(file)
    flag.write_text("ok")
    with pytest.warns(CacheKeyWarning) as caught:
        assert resumable.resume(old) == EXPECTED
    assert ran(log) == ["cached", "unpersisted", "unpicklable", "last"]
    # (the unpicklable result's drop is warned about too)
    (message,) = [str(w.message) for w in caught if issubclass(w.category, CacheKeyWarning)]
    assert "cached_step" in message
    assert str(file) in message
    assert "does not match its checksum" in message


def test_resume_runs_calls_whose_stored_results_were_changed(
    store: StoreUnderTest, flag_and_log: tuple[Path, Path]
) -> None:
    flag, log = flag_and_log
    old = failed_run_with_a_cached_task(flag, log)
    rows = store.rows(
        "SELECT task_name, name, result, result_file, result_checksum FROM task_runs "
        "WHERE flow_run_id = :id AND task_name IN ('in_row', 'in_file')",
        id=old,
    )
    by_task = {r[0]: r[1:] for r in rows}
    row_name, blob, no_file, row_sum = by_task["in_row"]
    file_name, no_blob, result_file, file_sum = by_task["in_file"]
    assert no_file is None
    assert no_blob is None
    file = store.results / result_file
    assert row_sum == crc32(bytes(blob))
    assert file_sum == crc32(file.read_bytes())
    assert oct(mode(file)) == "0o600"

    store.execute(
        "UPDATE task_runs SET result = :v WHERE flow_run_id = :id AND task_name = 'in_row'",
        v=flipped(bytes(blob)),
        id=old,
    )
    flip_byte(file)
    flag.write_text("ok")
    with pytest.warns(RuntimeWarning) as caught:
        assert resumable.resume(old) == EXPECTED
    assert ran(log) == ["unpersisted", "unpicklable", "in-row", "in-file", "last"]
    # (the unpicklable result of the resumed run is reported as a drop, apart from these)
    messages = sorted(str(w.message) for w in caught if "could not write" not in str(w.message))
    assert len(messages) == 2, messages
    by_name = {name: [m for m in messages if repr(name) in m] for name in (row_name, file_name)}
    (row_message,) = by_name[row_name]
    (file_message,) = by_name[file_name]
    for message in (row_message, file_message):
        assert old in message
        assert "does not match its checksum" in message
        assert "runs again" in message
    assert str(file) in file_message


def test_resume_reads_results_stored_without_a_checksum(
    store: StoreUnderTest, flag_and_log: tuple[Path, Path]
) -> None:
    flag, log = flag_and_log
    old = failed_run_with_a_cached_task(flag, log)
    store.execute("UPDATE task_runs SET result_checksum = NULL")
    flag.write_text("ok")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resumable.resume(old) == EXPECTED
    # nothing about the stored results (only the unpicklable result's drop is reported)
    assert [str(w.message) for w in caught if "could not write" not in str(w.message)] == []
    assert ran(log) == ["unpersisted", "unpicklable", "last"]


def test_checksums_of_both_forms_are_checked() -> None:
    """CRC-32 (8 digits) is what the store writes; a 64-digit sha256, which development
    builds wrote, is still checked as sha256; a mismatch of either form is refused."""
    from flowbook._pickling import ResultError, checksum, verify

    data = pickle.dumps({"a": 1})
    assert checksum(data) == f"{zlib.crc32(data):08x}"
    verify(data, checksum(data), "value")
    verify(data, hashlib.sha256(data).hexdigest(), "value")
    verify(data, None, "value")  # a row from before checksums: unchecked
    changed = data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]
    for expected in (checksum(data), hashlib.sha256(data).hexdigest()):
        with pytest.raises(ResultError, match=r"value does not match its checksum: its \d+ bytes"):
            verify(changed, expected, "value")
