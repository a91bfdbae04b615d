"""Previews of stored results read without unpickling (``flowbook._pickle_preview``): the same
text as the live preview for data, class names for objects, nothing the pickle names run."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from flowbook import flow, task
from flowbook._pickle_preview import (
    CUT,
    MAX_CHECKED_BYTES,
    MAX_READ_BYTES,
    MISMATCH,
    pickle_preview,
    stored_preview,
)
from flowbook._pickling import checksum, dumps
from flowbook._preview import preview
from flowbook.settings import reload_settings
from flowbook.store import close_store, get_store


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Plain:
    def __init__(self) -> None:
        self.items = [1, 2, 3]


Pair = collections.namedtuple("Pair", "a b")


def _cycle() -> list[Any]:
    looped: list[Any] = [1]
    looped.append(looped)
    return looped


_shared = [1, 2]

VALUES: list[Any] = [
    0,
    -7,
    2**80,
    10**5000,
    1.25,
    float("inf"),
    True,
    None,
    "short",
    "x" * 500,
    "naïve ✓",
    b"\x00\x01" * 100,
    [],
    [1, [2, [3, [4, [5, [6, [7, [8]]]]]]]],
    list(range(30)),
    {"a": 1, "b": [1, 2], "c": {"d": (1, 2)}},
    {i: str(i) for i in range(20)},
    {3, 1, 2},
    set(range(50)),
    frozenset({"a", "b"}),
    set(),
    frozenset(),
    (),
    (1,),
    (1, "two", 3.0, None),
    [_shared, _shared],
    _cycle(),
    datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
    datetime.date(2020, 2, 29),
    datetime.timedelta(hours=5),
    decimal.Decimal("3.14"),
    uuid.UUID(int=12345),
    PurePosixPath("/data/file.csv"),
    3 + 4j,
    range(2, 20, 3),
    Point(1, 2),
    Plain(),
    [Point(1, 2), {"p": Plain()}],
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_a_pickled_value_previews_as_the_live_value_does(value: Any) -> None:
    assert pickle_preview(dumps(value)) == preview(value)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_older_protocols_give_the_same_previews(protocol: int) -> None:
    for value in ([1, "a", {2: (3, 4)}], {1, 2}, b"bytes", Point(1, 2)):
        assert pickle_preview(pickle.dumps(value, protocol=protocol)) == preview(value)


def test_objects_are_shown_by_their_class_name() -> None:
    assert pickle_preview(dumps(Point(1, 2))) == f"<{__name__}.Point>"
    assert pickle_preview(dumps({"k": Plain()})) == f"{{'k': <{__name__}.Plain>}}"
    # a namedtuple is built by calling its class: its name is all that is shown
    assert pickle_preview(dumps(Pair(1, 2))) == f"<{__name__}.Pair>"


def test_numpy_arrays_and_pandas_frames_show_their_class_and_shape() -> None:
    numpy = pytest.importorskip("numpy")
    pandas = pytest.importorskip("pandas")
    values = [
        numpy.zeros((3, 4)),
        numpy.arange(5),
        numpy.array(["a", None], dtype=object),
        pandas.DataFrame({"a": [1, 2, 3], "b": [1.0, 2.0, 3.0]}),
        pandas.DataFrame({"a": range(10)}, index=list("abcdefghij")),
        pandas.Series([1, 2]),
        {"frame": pandas.DataFrame({"a": [1]}), "array": numpy.ones(2)},
    ]
    for value in values:
        assert pickle_preview(dumps(value)) == preview(value)
    assert pickle_preview(dumps(numpy.zeros((3, 4)))) == "<numpy.ndarray shape=(3, 4)>"
    frame = pickle_preview(dumps(pandas.DataFrame({"a": [1, 2, 3]})))
    assert frame.startswith("<pandas.")
    assert frame.endswith("DataFrame shape=(3, 1)>")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_previewed_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = pickle.dumps(_Evil(marker))
    shown = pickle_preview(data)
    assert shown == f"<{os.system.__module__}.system>"
    inside = pickle_preview(pickle.dumps({"x": [_Evil(marker)]}))
    assert inside == f"{{'x': [<{os.system.__module__}.system>]}}"
    path = tmp_path / "result.pkl"
    path.write_bytes(data)
    assert stored_preview(None, path, checksum(data)) == shown
    assert not marker.exists()


def test_names_in_a_pickle_are_shown_cleaned_and_short() -> None:
    data = b"\x80\x04\x8c\x03a\x00b\x94\x8c\xc8" + b"n" * 200 + b"\x94\x93\x94)R."
    shown = pickle_preview(data)
    assert shown.startswith("<a?b.nnn")
    assert len(shown) < 250


def test_a_truncated_pickle_shows_what_was_read_then_a_cut() -> None:
    data = dumps(list(range(20)))
    assert pickle_preview(data[: len(data) // 2]) == "[0, 1, 2, 3, 4, 5, 6]" + CUT
    assert pickle_preview(data[:-8]) == "[0, 1, 2, 3, 4, 5, 6, 7, ...]" + CUT
    nested = dumps({"a": [1, 2, 3], "b": "x" * 100})
    cut = pickle_preview(nested[:-30])
    assert cut.startswith("{'a': [1, 2, 3]")
    assert cut.endswith(CUT)


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage bytes", b"\x80\x05\xff\xff", b"\x80\x05)R.", b"\x80\x05e.", os.urandom(300)],
    ids=["empty", "text", "unknown-opcode", "reduce-of-nothing", "appends-without-mark", "random"],
)
def test_garbage_is_previewed_without_an_error(data: bytes) -> None:
    shown = pickle_preview(data)
    assert shown.endswith("…")
    assert len(shown) <= 500


def test_a_checksum_mismatch_is_shown_instead_of_the_value(tmp_path: Path) -> None:
    data = dumps({"a": 1})
    assert stored_preview(data, None, checksum(data)) == "{'a': 1}"
    changed = data.replace(b"a", b"b")
    assert stored_preview(changed, None, checksum(data)) == MISMATCH
    path = tmp_path / "value.pkl"
    path.write_bytes(changed)
    assert stored_preview(None, path, checksum(data)) == MISMATCH
    assert stored_preview(None, path, None) == "{'b': 1}"  # an old row: no checksum kept
    missing = stored_preview(None, tmp_path / "gone.pkl", checksum(data))
    assert missing is not None
    assert missing.startswith("(result file cannot be read")
    assert stored_preview(None, None, None) is None


def test_a_large_result_file_is_previewed_from_its_first_bytes(tmp_path: Path) -> None:
    value = [f"row {i}" for i in range(300_000)]
    data = dumps(value)
    assert len(data) > MAX_CHECKED_BYTES
    path = tmp_path / "big.pkl"
    path.write_bytes(data)
    # a file past MAX_CHECKED_BYTES is not read whole: even a wrong checksum is not found
    shown = stored_preview(None, path, "00000000")
    assert shown == "['row 0', 'row 1', 'row 2', 'row 3', 'row 4', 'row 5', 'row 6', " + (
        "'row 7', ...]" + CUT
    )
    assert pickle_preview(data) == shown  # bytes past MAX_READ_BYTES are not walked
    assert len(data) > 10 * MAX_READ_BYTES


# -- the store, the panel's snapshot and the server's diff ---------------------------------------


@task
def make_point(x: int) -> Point:
    return Point(x, x + 1)


@task
def make_data(n: int) -> dict[str, Any]:
    return {"n": n, "items": list(range(n)), "tag": "t" * 200}


@task
def make_big(n: int) -> list[str]:
    return [f"line {i}" for i in range(n)]


@task(cache_key_fn=lambda context, parameters: f"sq-{parameters['x']}")
def square(x: int) -> int:
    return x * x


@flow(flow_run_name="previewed")
def previewed(n: int) -> int:
    make_point(n)
    make_data(n)
    make_big(20_000)  # pickled past the inline limit: kept in a file
    return square(n) + square(n)  # the second call is Cached


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("FLOWBOOK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    reload_settings()
    close_store()
    try:
        st = get_store()
        assert st is not None
        yield st
    finally:
        close_store()
        monkeypatch.undo()
        reload_settings()


def _run(store: Any) -> Any:
    from flowbook.store.queries import get_run, list_runs

    assert previewed(12, return_state=True).is_completed()
    store.flush()
    run_id = next(r.id for r in list_runs(store, limit=5) if r.name == "previewed")
    return get_run(store, run_id)


EXPECTED = {
    "make_point-0": f"<{__name__}.Point>",
    "make_data-0": preview({"n": 12, "items": list(range(12)), "tag": "t" * 200}),
    "make_big-0": preview([f"line {i}" for i in range(20_000)]) + CUT,  # a 64 KiB prefix
    "square-0": "144",
    "square-1": "144",
}


def test_stored_task_runs_get_result_previews_without_unpickling(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbook.store.queries import result_previews

    detail = _run(store)
    names = {t["id"]: t["name"] for t in detail.task_run_list}
    assert sorted(t["state"] for t in detail.task_run_list).count("Cached") == 1

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a preview unpickled a value")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    got = result_previews(store, list(names))
    assert {names[i]: text for i, text in got.items()} == EXPECTED


def test_a_changed_result_file_shows_a_checksum_mismatch(store: Any) -> None:
    from flowbook.store.queries import result_previews

    detail = _run(store)
    big = next(t for t in detail.task_run_list if t["name"] == "make_big-0")
    files = [p for p in store.results_dir.rglob("*") if p.is_file() and p.stat().st_size > 65536]
    assert len(files) == 1
    raw = bytearray(files[0].read_bytes())
    raw[-10] ^= 0xFF
    files[0].write_bytes(bytes(raw))
    assert result_previews(store, [big["id"]]) == {big["id"]: MISMATCH}


def test_the_panels_snapshot_carries_result_previews(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbook.jupyter.server import api

    detail = _run(store)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("the server unpickled"))
    snapshot = api.run_snapshot(detail.id)
    runs = {r["name"]: r for n in snapshot["graph"]["nodes"] for r in n["detail"]["runs"]}
    assert {name: runs[name]["result"] for name in EXPECTED} == EXPECTED


def test_the_servers_diff_previews_results_without_unpickling(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbook.jupyter.server import api
    from flowbook.store.queries import get_run, list_runs

    first = _run(store)
    assert previewed(13, return_state=True).is_completed()
    store.flush()
    second = get_run(store, next(r.id for r in list_runs(store, limit=5) if r.id != first.id))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("the server unpickled"))
    body = api.run_diff(first.id, second.id)
    by_name = {(t["a"] or t["b"])["name"]: t for t in body["task_runs"]}
    data = by_name["make_data-0"]
    assert "result" in data["changes"]
    assert data["a"]["result"] == EXPECTED["make_data-0"]
    assert data["b"]["result"] == preview({"n": 13, "items": list(range(13)), "tag": "t" * 200})
    assert by_name["make_point-0"]["b"]["result"] == f"<{__name__}.Point>"
