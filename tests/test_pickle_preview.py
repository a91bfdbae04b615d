"""Previews of stored results read without unpickling (``flowbook._pickle_preview``): the same
text as the live preview for data, class names for objects, nothing the pickle names run."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import fractions
import os
import pickle
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from flowbook import flow, task
from flowbook._pickle_preview import (
    CUT,
    MAX_CHECKED_BYTES,
    MAX_CPU_SECONDS,
    MAX_READ_BYTES,
    MISMATCH,
    OUTSIDE,
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
    fractions.Fraction(-3, 4),
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
    assert stored_preview(None, path, checksum(data), root=tmp_path) == shown
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
    assert stored_preview(data, None, checksum(data), root=tmp_path) == "{'a': 1}"
    changed = data.replace(b"a", b"b")
    assert stored_preview(changed, None, checksum(data), root=tmp_path) == MISMATCH
    path = tmp_path / "value.pkl"
    path.write_bytes(changed)
    assert stored_preview(None, path, checksum(data), root=tmp_path) == MISMATCH
    assert (
        stored_preview(None, path, None, root=tmp_path) == "{'b': 1}"
    )  # an old row: no checksum kept
    missing = stored_preview(None, tmp_path / "gone.pkl", checksum(data), root=tmp_path)
    assert missing is not None
    assert missing.startswith("(result file cannot be read")
    assert stored_preview(None, None, None, root=tmp_path) is None


def test_a_large_result_file_is_previewed_from_its_first_bytes(tmp_path: Path) -> None:
    value = [f"row {i}" for i in range(300_000)]
    data = dumps(value)
    assert len(data) > MAX_CHECKED_BYTES
    path = tmp_path / "big.pkl"
    path.write_bytes(data)
    # a file past MAX_CHECKED_BYTES is not read whole: even a wrong checksum is not found
    shown = stored_preview(None, path, "00000000", root=tmp_path)
    assert shown == "['row 0', 'row 1', 'row 2', 'row 3', 'row 4', 'row 5', 'row 6', " + (
        "'row 7', ...]" + CUT
    )
    assert pickle_preview(data) == shown  # bytes past MAX_READ_BYTES are not walked
    assert len(data) > 10 * MAX_READ_BYTES


# -- hostile pickles: bounded work, nothing run ------------------------------------------------


def _text(value: str) -> bytes:
    raw = value.encode()
    if len(raw) < 256:
        return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def _global(module: str, name: str) -> bytes:
    return _text(module) + _text(name) + pickle.STACK_GLOBAL


def _long(number: int) -> bytes:
    raw = number.to_bytes(number.bit_length() // 8 + 1, "little", signed=True)
    return pickle.LONG4 + struct.pack("<i", len(raw)) + raw


def _get(index: int) -> bytes:
    return (
        pickle.BINGET + bytes([index])
        if index < 256
        else pickle.LONG_BINGET + struct.pack("<I", index)
    )


def _pickle(*parts: bytes) -> bytes:
    return pickle.PROTO + b"\x04" + b"".join(parts) + pickle.STOP


def _doubled(levels: int, first: int = 0) -> bytes:
    """t(levels), where t(0) = 0 and t(k + 1) = (t(k), t(k)) through the memo (from index
    ``first``): a few bytes a level, 2**levels items to hash or compare."""
    out = pickle.BININT1 + b"\x00" + pickle.MEMOIZE + pickle.POP
    for level in range(levels):
        at = first + level
        out += _get(at) + _get(at) + pickle.TUPLE2 + pickle.MEMOIZE + pickle.POP
    return out + _get(first + levels)


_MARK, _NONE = pickle.MARK, pickle.NONE
_T80 = _doubled(80)
HOSTILE: dict[str, bytes] = {
    # Fraction("1e1000000000") would compute 10**1000000000
    "fraction-exponent": b"\x80\x04\x8c\tfractions\x8c\x08Fraction\x93\x8c\x0c1e1000000000\x85R.",
    "set-additems": _pickle(pickle.EMPTY_SET + _MARK + _T80 + pickle.ADDITEMS),
    "dict-setitem": _pickle(pickle.EMPTY_DICT + _T80 + _NONE + pickle.SETITEM),
    "dict-setitems": _pickle(pickle.EMPTY_DICT + _MARK + _T80 + _NONE + pickle.SETITEMS),
    "dict-dict": _pickle(_MARK + _T80 + _NONE + pickle.DICT),
    "frozenset": _pickle(_MARK + _T80 + pickle.FROZENSET),
    "reduce-set": _pickle(
        _global("builtins", "set")
        + pickle.EMPTY_LIST
        + _T80
        + pickle.APPEND
        + pickle.TUPLE1
        + pickle.REDUCE
    ),
    "reduce-dict": _pickle(
        _global("builtins", "dict")
        + pickle.EMPTY_LIST
        + _T80
        + _NONE
        + pickle.TUPLE2
        + pickle.APPEND
        + pickle.TUPLE1
        + pickle.REDUCE
    ),
    "global-named-by-a-tuple": _pickle(_T80 + _get(80) + pickle.STACK_GLOBAL),
    "fraction-in-a-set-of-shared-tuples": _pickle(
        pickle.EMPTY_SET + _MARK + _T80 + _global("fractions", "Fraction") + pickle.ADDITEMS
    ),
    # Decimal(int) is quadratic in the int's length; the memo repeats the call
    "decimal-of-a-long-int-repeated": _pickle(
        _global("decimal", "Decimal")
        + pickle.MEMOIZE
        + pickle.POP
        + _long(7**48_000)
        + pickle.MEMOIZE
        + pickle.POP
        + pickle.EMPTY_LIST
        + (_get(0) + _get(1) + pickle.TUPLE1 + pickle.REDUCE + pickle.APPEND) * 2_500
    ),
    # each call is linear but slow, and the memo repeats it thousands of times
    "path-of-many-parts-repeated": _pickle(
        _global("pathlib", "PurePosixPath")
        + pickle.MEMOIZE
        + pickle.POP
        + _text("a/" * 10_000)
        + pickle.MEMOIZE
        + pickle.POP
        + pickle.EMPTY_LIST
        + (_get(0) + _get(1) + pickle.TUPLE1 + pickle.REDUCE + pickle.APPEND) * 5_000
    ),
}


def _marked(data: bytes, marker: Path) -> bytes:
    """``data``'s value in a list after a call that would create ``marker`` if it ran."""
    call = _global("os", "system") + _text(f"touch {marker}") + pickle.TUPLE1 + pickle.REDUCE
    return b"\x80\x04" + pickle.EMPTY_LIST + _MARK + call + data[2:-1] + pickle.APPENDS + b"."


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_pickle_is_previewed_quickly_and_never_run(name: str, tmp_path: Path) -> None:
    data = HOSTILE[name]
    assert len(data) <= MAX_READ_BYTES
    marker = tmp_path / "ran"
    for pickled in (data, _marked(data, marker)):
        started = time.perf_counter()
        shown = pickle_preview(pickled)
        took = time.perf_counter() - started
        assert took < 1.0, f"{name}: {took:.2f} s"
        assert shown
        assert len(shown) <= 1000
    assert not marker.exists()


def test_shared_tuples_too_heavy_to_hash_stop_the_walk_where_they_start() -> None:
    shown = pickle_preview(
        _pickle(pickle.EMPTY_SET + _MARK + pickle.BININT1 + b"\x07" + _T80 + pickle.ADDITEMS)
    )
    assert shown == "{7}" + CUT  # what was added before the heavy member is kept
    shown = pickle_preview(_pickle(_MARK + _text("a") + _NONE + _T80 + _NONE + pickle.DICT))
    assert shown == "{'a': None}" + CUT
    # light shared tuples are hashed and shown as live
    light = tuple((i, i) for i in range(3))
    assert pickle_preview(dumps({light: {light}})) == preview({light: {light}})
    assert pickle_preview(_pickle(_MARK + _doubled(3) + pickle.FROZENSET)) == preview(
        frozenset({(((0, 0), (0, 0)), ((0, 0), (0, 0)))})
    )


def _shown_everywhere(memo: int) -> bytes:
    """The value at ``memo`` in a list eight times, that list in a list eight times, ...,
    six deep: the preview sorts a set or dict's keys each time it shows it."""
    out = b""
    for level in range(6):
        out += _MARK + _get(memo + level) * 8 + pickle.LIST + pickle.MEMOIZE + pickle.POP
    return out + _get(memo + 6)


def _set_of(members: bytes) -> bytes:
    return pickle.EMPTY_SET + _MARK + members + pickle.ADDITEMS + pickle.MEMOIZE + pickle.POP


def test_sets_shown_many_times_are_sorted_in_bounded_time() -> None:
    # members as heavy as allowed, equal up to their last item: each comparison walks them
    chains = members = b""
    for copy in range(2):
        chains += _doubled(12, copy * 13) + pickle.POP
        members += _get(copy * 13 + 12) + pickle.BININT1 + bytes([copy]) + pickle.TUPLE2
    heavy = _pickle(chains + _set_of(members) + _shown_everywhere(26))
    many = b"".join(pickle.BININT2 + struct.pack("<H", n) for n in range(19_000))
    for data in (heavy, _pickle(_set_of(many) + _shown_everywhere(0))):
        started = time.perf_counter()
        shown = pickle_preview(data)
        assert time.perf_counter() - started < 1.0
        assert shown.startswith("[[[[[[{...}, {...}")


def test_a_set_or_dict_with_too_many_keys_to_sort_is_cut() -> None:
    # both fit in the bytes read: their keys weigh more than a preview sorts
    assert pickle_preview(dumps(set(range(15_000)))) == preview(set(range(15_000)))
    many = set(range(20_500))
    assert len(dumps(many)) < MAX_READ_BYTES
    assert pickle_preview(dumps(many)) == preview(many) + CUT
    pairs = {(n, n): None for n in range(7_000)}
    assert len(dumps(pairs)) < MAX_READ_BYTES
    assert pickle_preview(dumps(pairs)) == preview(pairs) + CUT


def test_values_are_only_rebuilt_from_what_their_pickling_writes() -> None:
    assert pickle_preview(dumps(fractions.Fraction(-3, 4))) == "Fraction(-3, 4)"
    fraction = _global("fractions", "Fraction")
    assert pickle_preview(_pickle(fraction + _text("-3/4") + pickle.TUPLE1 + pickle.REDUCE)) == (
        "Fraction(-3, 4)"
    )
    for text in ("1e1000000000", "1.5", "1/0", " 1", "\u0661"):
        shown = pickle_preview(_pickle(fraction + _text(text) + pickle.TUPLE1 + pickle.REDUCE))
        assert shown == "<fractions.Fraction>", text
    # ints over 4,300 digits (what int -> str converts) are not passed to a constructor
    for module, name in [
        ("decimal", "Decimal"),
        ("builtins", "range"),
        ("builtins", "complex"),
        ("datetime", "timedelta"),
    ]:
        call = _pickle(_global(module, name) + _long(10**4400) + pickle.TUPLE1 + pickle.REDUCE)
        assert pickle_preview(call) == f"<{module}.{name}>"
    # Decimal strings are cheap whatever their exponent
    assert pickle_preview(dumps(decimal.Decimal("1e999999999"))) == "Decimal('1E+999999999')"
    assert pickle_preview(dumps([1, range(10**5000)])) == "[1, <builtins.range>]"
    assert pickle_preview(dumps(range(10**4000, 10**4000 + 3))) == preview(
        range(10**4000, 10**4000 + 3)
    )


def test_a_walk_stops_after_its_cpu_time() -> None:
    data = HOSTILE["path-of-many-parts-repeated"]
    started = time.thread_time()
    shown = pickle_preview(data)
    took = time.thread_time() - started
    assert shown.startswith("[PurePosixPath('a/a/a/")
    assert shown.endswith(", ...]" + CUT)
    assert took < MAX_CPU_SECONDS + 0.2


def test_a_pandas_frame_with_an_impossible_length_is_shown_without_its_shape() -> None:
    # a RangeIndex of 10**30 rows: more than len() can count
    def axis(stop: int) -> bytes:
        fields = (
            _MARK
            + _text("start")
            + pickle.BININT1
            + b"\x00"
            + _text("stop")
            + _long(stop)
            + _text("step")
            + pickle.BININT1
            + b"\x01"
            + pickle.DICT
        )
        index = _global("pandas.core.indexes.range", "RangeIndex")
        return (
            _global("pandas.core.indexes.base", "_new_Index")
            + index
            + fields
            + pickle.TUPLE2
            + pickle.REDUCE
        )

    def frame(stop: int) -> bytes:
        manager = (
            _global("pandas.core.internals.managers", "BlockManager")
            + pickle.EMPTY_TUPLE
            + _MARK
            + axis(1)
            + axis(stop)
            + pickle.LIST
            + pickle.TUPLE2
            + pickle.REDUCE
        )
        return _pickle(
            _global("pandas.core.frame", "DataFrame")
            + pickle.EMPTY_TUPLE
            + pickle.NEWOBJ
            + pickle.EMPTY_DICT
            + _text("_mgr")
            + manager
            + pickle.SETITEM
            + pickle.BUILD
        )

    assert pickle_preview(frame(3)) == "<pandas.core.frame.DataFrame shape=(3, 1)>"
    assert pickle_preview(frame(10**30)) == "<pandas.core.frame.DataFrame>"
    assert pickle_preview(frame(10**5000)) == "<pandas.core.frame.DataFrame>"


def test_a_result_file_outside_the_results_directory_is_not_read(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    secret = tmp_path / "secret.pkl"
    secret.write_bytes(dumps("the secret"))
    inside = results / "ok.pkl"
    inside.write_bytes(dumps("fine"))
    (results / "link.pkl").symlink_to(secret)
    assert stored_preview(None, inside, None, root=results) == "'fine'"
    for name in ("../secret.pkl", str(secret), "link.pkl", "sub/../../secret.pkl"):
        assert stored_preview(None, results / name, None, root=results) == OUTSIDE, name


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


def test_a_row_naming_a_file_outside_the_results_directory_is_not_read(
    store: Any, tmp_path: Path
) -> None:
    from sqlalchemy import update

    from flowbook.store.queries import result_previews
    from flowbook.store.schema import task_runs

    detail = _run(store)
    big = next(t for t in detail.task_run_list if t["name"] == "make_big-0")
    secret = tmp_path / "secret.pkl"
    secret.write_bytes(dumps("the secret"))
    crafted = os.path.relpath(secret, store.results_dir)
    assert crafted.startswith("..")
    with store.engine.begin() as conn:
        conn.execute(
            update(task_runs)
            .where(task_runs.c.id == big["id"])
            .values(result_file=crafted, result_checksum=None)
        )
    assert result_previews(store, [big["id"]]) == {big["id"]: OUTSIDE}


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
