"""Content hashing for cache keys: equal content, equal hash; anything else, a different one."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import os
import pickle
import re
import subprocess
import sys
import textwrap
import threading
import uuid
from decimal import Decimal
from fractions import Fraction
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, NamedTuple

import pytest

import flowbook
from flowbook.caching.hashing import UnhashableInputError, stable_hash

REPO_ROOT = Path(flowbook.__file__).resolve().parent.parent


def all_distinct(values: list[Any]) -> bool:
    return len({stable_hash(value) for value in values}) == len(values)


def run_in_main(source: str) -> dict[str, Any]:
    """Execute ``source`` the way a notebook cell runs: as module ``__main__``."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(textwrap.dedent(source), namespace)
    return namespace


# --------------------------------------------------------------------------- atoms


def test_hash_is_sha256_hex() -> None:
    digest = stable_hash(None)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert stable_hash(None) == digest


def test_type_tags_separate_equal_looking_values() -> None:
    values = [1, 1.0, True, "1", b"1", bytearray(b"1"), 1 + 0j, Decimal(1), Fraction(1)]
    assert all_distinct(values)
    assert all_distinct([0, 0.0, False, "", b"", None, [], (), {}, set(), frozenset()])


def test_containers_are_tagged_by_kind() -> None:
    assert all_distinct([[1, 2], (1, 2), {1, 2}, frozenset({1, 2}), {1: 2}, range(1, 3)])


def test_ints_of_any_size() -> None:
    huge = 10**5000  # more digits than int->str conversion allows by default
    assert all_distinct([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, huge, -huge, huge + 1])
    assert stable_hash(huge) == stable_hash(10**5000)


def test_float_zero_signs_differ_and_nans_agree() -> None:
    assert stable_hash(0.0) != stable_hash(-0.0)
    computed_nan = float("inf") - float("inf")
    assert stable_hash(float("nan")) == stable_hash(computed_nan) == stable_hash(-float("nan"))
    assert stable_hash(float("nan")) != stable_hash(float("inf"))
    assert stable_hash(0.1 + 0.2) != stable_hash(0.3)
    assert stable_hash(complex(1, float("nan"))) == stable_hash(complex(1, -float("nan")))


def test_strings_with_lone_surrogates_hash() -> None:
    assert stable_hash("a\udcff") != stable_hash("a\udcfe")
    assert stable_hash("é") != stable_hash("e\u0301")


def test_long_strings_and_bytes_are_content_sensitive() -> None:
    text = "x" * 100_000
    assert stable_hash(text) == stable_hash("x" * 100_000)
    assert stable_hash(text) != stable_hash(text[:-1] + "y")
    assert stable_hash(text.encode()) != stable_hash(text)


# --------------------------------------------------------------------------- containers


def test_dict_order_does_not_matter() -> None:
    forward = {f"key{i}": i for i in range(50)}
    backward = {f"key{i}": i for i in reversed(range(50))}
    assert list(forward) != list(backward)
    assert stable_hash(forward) == stable_hash(backward)


def test_dict_with_mixed_key_types_is_order_independent() -> None:
    entries = [(1, "int"), ("1", "str"), ((1,), "tuple"), (None, "none"), (2.5, "float")]
    one = dict(entries)
    other = dict(reversed(entries))
    assert stable_hash(one) == stable_hash(other)
    assert stable_hash(one) != stable_hash({**one, 1: "changed"})


def test_dict_entries_are_paired() -> None:
    assert stable_hash({"a": 1, "b": 2}) != stable_hash({"a": 2, "b": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 1, "b": None})


def test_set_order_does_not_matter() -> None:
    words = [f"w{i}" for i in range(200)]
    extras = [f"extra{i}" for i in range(2000)]
    # Same elements, different table sizes: iteration orders differ.
    roomy = set(words + extras) - set(extras)
    assert roomy == set(words)
    assert stable_hash(set(words)) == stable_hash(roomy)
    assert stable_hash(frozenset(words)) == stable_hash(frozenset(roomy))
    mixed = [1, "1", (1, 2), None, 2.5, b"x"]
    assert stable_hash(set(mixed)) == stable_hash(set(mixed + extras) - set(extras))
    assert stable_hash(set(words)) != stable_hash(set(words[:-1]))


def test_nested_structures() -> None:
    def build(leaf: int) -> Any:
        return {"runs": [{"id": 1, "tags": {"a", "b"}, "m": (1.5, [leaf])}], "n": None}

    assert stable_hash(build(3)) == stable_hash(build(3))
    assert stable_hash(build(3)) != stable_hash(build(4))
    assert stable_hash([[1, 2], [3]]) != stable_hash([[1], [2, 3]])
    assert stable_hash(["ab", "c"]) != stable_hash(["a", "bc"])


def test_shared_references_hash_like_copies() -> None:
    inner = [1, 2]
    assert stable_hash([inner, inner]) == stable_hash([[1, 2], [1, 2]])


def test_ordered_and_default_dicts() -> None:
    import collections

    plain = {"a": 1, "b": 2}
    ordered = collections.OrderedDict(plain)
    default = collections.defaultdict(list, plain)
    assert all_distinct([plain, ordered, default])
    assert stable_hash(collections.defaultdict(list, plain)) != stable_hash(
        collections.defaultdict(set, plain)
    )
    assert stable_hash(collections.deque([1, 2])) != stable_hash(collections.deque([1, 2], 5))


# --------------------------------------------------------------------------- stdlib values


class Colour(enum.Enum):
    RED = 1
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1


def test_standard_library_values() -> None:
    utc = dt.timezone.utc
    plus_one = dt.timezone(dt.timedelta(hours=1))
    values = [
        dt.datetime(2024, 5, 1, 12, 0),
        dt.datetime(2024, 5, 1, 12, 0, tzinfo=utc),
        dt.datetime(2024, 5, 1, 13, 0, tzinfo=plus_one),
        dt.datetime(2024, 5, 1, 12, 0, 0, 1),
        dt.date(2024, 5, 1),
        dt.time(12, 0),
        dt.time(12, 0, tzinfo=utc),
        dt.timedelta(days=1),
        dt.timedelta(seconds=86400, microseconds=1),
        Decimal("1.0"),
        Decimal("1.00"),
        Fraction(1, 3),
        uuid.UUID(int=1),
        uuid.UUID(int=2),
        Path("data/a.csv"),
        PurePosixPath("data/a.csv"),
        PureWindowsPath("data/a.csv"),
        Path("data/b.csv"),
        range(3),
        range(0, 3, 2),
        slice(1, 2),
        ...,
    ]
    assert all_distinct(values)
    assert stable_hash(dt.datetime(2024, 5, 1, tzinfo=utc)) == stable_hash(
        dt.datetime(2024, 5, 1, tzinfo=dt.timezone(dt.timedelta(0)))
    )
    assert stable_hash(uuid.UUID(int=7)) == stable_hash(uuid.UUID(int=7))


def test_zoneinfo_is_part_of_a_datetime() -> None:
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        paris = zoneinfo.ZoneInfo("Europe/Paris")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database")
    fixed = dt.timezone(dt.timedelta(hours=2))
    summer = dt.datetime(2024, 7, 1, 12, 0)
    assert summer.replace(tzinfo=paris).isoformat() == summer.replace(tzinfo=fixed).isoformat()
    assert stable_hash(summer.replace(tzinfo=paris)) != stable_hash(summer.replace(tzinfo=fixed))
    assert stable_hash(summer.replace(tzinfo=paris)) == stable_hash(
        summer.replace(tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    )


def test_enum_members_are_not_their_values() -> None:
    assert all_distinct([Colour.RED, Colour.GREEN, 1, Level.LOW, "RED"])
    assert stable_hash(Colour.RED) == stable_hash(Colour(1))


# --------------------------------------------------------------------------- records


@dataclasses.dataclass
class Point:
    x: int
    y: int
    label: str = ""


@dataclasses.dataclass
class OtherPoint:
    x: int
    y: int
    label: str = ""


class Pair(NamedTuple):
    left: int
    right: int


def test_dataclasses_by_class_and_fields() -> None:
    assert stable_hash(Point(1, 2)) == stable_hash(Point(1, 2))
    assert stable_hash(Point(1, 2)) != stable_hash(Point(2, 1))
    assert stable_hash(Point(1, 2)) != stable_hash(Point(1, 2, "a"))
    assert stable_hash(Point(1, 2)) != stable_hash(OtherPoint(1, 2))


def test_namedtuples_are_not_plain_tuples() -> None:
    assert stable_hash(Pair(1, 2)) == stable_hash(Pair(left=1, right=2))
    assert all_distinct([Pair(1, 2), Pair(2, 1), (1, 2)])


def test_pydantic_models_by_class_and_content() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Config(pydantic.BaseModel):
        name: str
        sizes: tuple[int, ...] = ()

    class Other(pydantic.BaseModel):
        name: str
        sizes: tuple[int, ...] = ()

    assert stable_hash(Config(name="a", sizes=(1,))) == stable_hash(Config(name="a", sizes=(1,)))
    assert stable_hash(Config(name="a", sizes=(1,))) != stable_hash(Config(name="a", sizes=(2,)))
    assert stable_hash(Config(name="a")) != stable_hash(Other(name="a"))

    class Holder(pydantic.BaseModel):
        payload: Any

    with pytest.raises(UnhashableInputError) as caught:
        stable_hash({"cfg": Holder(payload=[iter(())])})
    assert caught.value.path == "cfg.payload[0]"


# --------------------------------------------------------------------------- other objects

MAIN_CELL = """
class Settings:
    def __init__(self, depth, tags):
        self.depth = depth
        self.tags = tags

class Slotted:
    __slots__ = ("a", "__b")
    def __init__(self, a, b):
        self.a = a
        self.__b = b
"""


def test_main_module_instances_survive_a_cell_rerun() -> None:
    first = run_in_main(MAIN_CELL)
    rerun = run_in_main(MAIN_CELL)
    assert first["Settings"] is not rerun["Settings"]
    assert first["Settings"].__module__ == "__main__"
    old = first["Settings"](3, {"x", "y"})
    new = rerun["Settings"](3, {"y", "x"})
    assert stable_hash(old) == stable_hash(new)
    assert stable_hash(old) != stable_hash(rerun["Settings"](4, {"x", "y"}))
    assert stable_hash(first["Slotted"](1, 2)) == stable_hash(rerun["Slotted"](1, 2))
    assert stable_hash(first["Slotted"](1, 2)) != stable_hash(rerun["Slotted"](1, 3))


def test_class_identity_includes_module() -> None:
    in_main = run_in_main(MAIN_CELL)
    in_module = {"__name__": "some_module"}
    exec(MAIN_CELL, in_module)
    assert stable_hash(in_main["Settings"](1, set())) != stable_hash(
        in_module["Settings"](1, set())
    )
    assert stable_hash(in_main["Settings"]) == stable_hash(run_in_main(MAIN_CELL)["Settings"])
    assert stable_hash(in_main["Settings"]) != stable_hash(in_module["Settings"])


class WithState:
    def __init__(self, payload: int, cache: object) -> None:
        self.payload = payload
        self.cache = cache

    def __getstate__(self) -> dict[str, int]:
        return {"payload": self.payload}


def test_getstate_decides_what_is_hashed() -> None:
    assert stable_hash(WithState(1, threading.Lock())) == stable_hash(WithState(1, object()))
    assert stable_hash(WithState(1, None)) != stable_hash(WithState(2, None))


def test_objects_with_state_in_c_hash_by_pickle() -> None:
    import array

    assert stable_hash(re.compile("a+")) == stable_hash(re.compile("a+"))
    assert stable_hash(re.compile("a+")) != stable_hash(re.compile("b+"))
    assert stable_hash(array.array("i", [1, 2])) != stable_hash(array.array("i", [1, 3]))


def test_exceptions_by_class_and_args() -> None:
    assert stable_hash(ValueError("x")) == stable_hash(ValueError("x"))
    assert all_distinct([ValueError("x"), ValueError("y"), KeyError("x")])


# --------------------------------------------------------------------------- code


def module_level(x: int) -> int:
    return x + 1


def make_adder(step: int) -> Any:
    return lambda x: x + step


def test_functions_by_name_and_lambdas_by_code() -> None:
    assert stable_hash(module_level) == stable_hash(module_level)
    assert stable_hash(module_level) != stable_hash(make_adder)
    assert stable_hash(lambda x: x + 1) != stable_hash(lambda x: x + 2)
    assert stable_hash(make_adder(1)) == stable_hash(make_adder(1))
    assert stable_hash(make_adder(1)) != stable_hash(make_adder(2))
    assert stable_hash(len) != stable_hash(sum)
    assert stable_hash(int) != stable_hash(float)


def test_main_functions_follow_their_body() -> None:
    first = run_in_main("def step(x):\n    return x * 2\n")["step"]
    rerun = run_in_main("\n\n# moved down a few lines\ndef step(x):\n    return x * 2\n")["step"]
    edited = run_in_main("def step(x):\n    return x * 3\n")["step"]
    assert stable_hash(first) == stable_hash(rerun)
    assert stable_hash(first) != stable_hash(edited)


def test_recursive_nested_function_hashes() -> None:
    def outer() -> Any:
        def fact(n: int) -> int:
            return 1 if n <= 1 else n * fact(n - 1)

        return fact

    assert stable_hash(outer()) == stable_hash(outer())


def test_partials_and_bound_methods() -> None:
    import functools

    assert stable_hash(functools.partial(module_level, 1)) != stable_hash(
        functools.partial(module_level, 2)
    )
    assert stable_hash(Point(1, 2).__eq__) != stable_hash(Point(1, 3).__eq__)


# --------------------------------------------------------------------------- numpy, pandas


def test_numpy_arrays_by_content() -> None:
    np = pytest.importorskip("numpy")
    grid = np.arange(12.0).reshape(3, 4)
    assert stable_hash(grid) == stable_hash(np.asfortranarray(grid))
    assert stable_hash(grid[:, ::2]) == stable_hash(np.ascontiguousarray(grid[:, ::2]))
    assert stable_hash(grid) == stable_hash(grid.copy())
    changed = grid.copy()
    changed[2, 3] = -1.0
    assert all_distinct([grid, changed, grid.reshape(4, 3), grid.astype(np.float32), grid.tolist()])
    dates = np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]")
    assert stable_hash(dates) != stable_hash(dates[::-1])


def test_numpy_object_arrays_and_scalars() -> None:
    np = pytest.importorskip("numpy")
    one = np.array([1, "x", {"k": [1]}], dtype=object)
    two = np.array([1, "x", {"k": [1]}], dtype=object)
    assert stable_hash(one) == stable_hash(two)
    two[2]["k"].append(2)
    assert stable_hash(one) != stable_hash(two)
    assert all_distinct([np.float64(1.0), np.float32(1.0), 1.0, np.int64(1), 1])


def test_pandas_objects_by_content() -> None:
    pd = pytest.importorskip("pandas")

    def frame() -> Any:
        return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})

    base = frame()
    assert stable_hash(base) == stable_hash(frame())
    changed = frame()
    changed.loc[1, "b"] = "q"
    variants = [
        base,
        changed,
        base.rename(columns={"a": "c"}),
        base.set_axis([10, 11, 12]),
        base.astype({"a": "float64"}),
        base[["b", "a"]],
    ]
    assert all_distinct(variants)
    assert stable_hash(base["a"]) == stable_hash(frame()["a"])
    assert stable_hash(base["a"]) != stable_hash(base["a"].rename("z"))
    assert stable_hash(pd.Index([1, 2])) != stable_hash(pd.Index([2, 1]))


def test_pandas_cells_pandas_cannot_hash() -> None:
    pd = pytest.importorskip("pandas")
    one = pd.DataFrame({"lists": [[1, 2], [3]]})
    assert stable_hash(one) == stable_hash(pd.DataFrame({"lists": [[1, 2], [3]]}))
    assert stable_hash(one) != stable_hash(pd.DataFrame({"lists": [[1, 2], [4]]}))


# --------------------------------------------------------------------------- refusals


def test_generator_is_refused_with_its_path() -> None:
    numbers = (n for n in range(3))
    with pytest.raises(UnhashableInputError) as caught:
        stable_hash({"nums": [1, 2, numbers]})
    assert str(caught.value) == (
        "cannot hash value of type 'generator' at nums[2]: generators have no stable "
        "content; pass a list or tuple of the values instead"
    )
    assert caught.value.type_name == "generator"
    assert caught.value.path == "nums[2]"
    assert isinstance(caught.value, TypeError)


def test_paths_through_objects_and_keys() -> None:
    with pytest.raises(UnhashableInputError) as caught:
        stable_hash([Point(1, 2, label=iter([]))])  # type: ignore[arg-type]
    assert caught.value.path == "[0].label"
    assert caught.value.type_name == "list_iterator"
    with pytest.raises(UnhashableInputError) as caught:
        stable_hash({"my key": {3: threading.Lock()}})
    assert caught.value.path == "['my key'][3]"
    with pytest.raises(UnhashableInputError) as caught:
        stable_hash({"opts": {WithLock(): 1}})
    assert caught.value.path == "opts<key>.lock"
    with pytest.raises(UnhashableInputError) as caught:
        stable_hash({"tags": {1, WithLock()}})
    assert caught.value.path == "tags<set element>.lock"


class WithLock:
    def __init__(self) -> None:
        self.lock = threading.Lock()


def test_reference_cycles_hash_by_their_structure() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    same: list[Any] = [1]
    same.append(same)
    assert stable_hash(loop) == stable_hash(same)
    two_levels: list[Any] = [1, [1]]
    two_levels[1].append(two_levels)
    assert stable_hash(loop) != stable_hash(two_levels)
    assert stable_hash(loop) != stable_hash([1, [1, []]])
    node: dict[str, Any] = {"name": "a"}
    node["parent"] = {"child": node}
    other: dict[str, Any] = {"name": "b"}
    other["parent"] = {"child": other}
    assert stable_hash(node) != stable_hash(other)
    assert stable_hash(node) == stable_hash(
        (lambda n: (n.__setitem__("parent", {"child": n}), n)[1])({"name": "a"})
    )


def test_resources_are_refused() -> None:
    with open(__file__) as handle:
        refused = [handle, iter([1]), threading.Lock(), threading.Event(), os, threading.local()]
        for value in refused:
            with pytest.raises(UnhashableInputError, match="cannot hash value of type"):
                stable_hash(value)


def test_error_survives_pickling() -> None:
    with pytest.raises(UnhashableInputError) as caught:
        stable_hash({"x": [iter(())]})
    restored = pickle.loads(pickle.dumps(caught.value))
    assert str(restored) == str(caught.value)
    assert restored.path == "x[0]"


# --------------------------------------------------------------------------- across processes

CROSS_PROCESS_VALUE = """
import dataclasses
from decimal import Decimal

@dataclasses.dataclass
class Job:
    name: str
    tags: frozenset

class Box:
    def __init__(self, items):
        self.items = items

value = {
    "names": {"alpha", "beta", "gamma", "delta", "epsilon"},
    "frozen": frozenset({"x", "y", ("z", 1)}),
    "nested": {"k" + str(i): {str(i), i} for i in range(20)},
    "text": "héllo",
    "mixed": {1: "a", "1": "b", None: "c", (1, "2"): "d"},
    "job": Job("j", frozenset({"p", "q", "r"})),
    "box": Box({"s", "t"}),
    "fn": lambda x: x in {"a", "b", "c"},
    "amount": Decimal("12.50"),
}
"""


@pytest.mark.slow
@pytest.mark.parametrize("seed", ["0", "1", "4242"])
def test_hash_is_the_same_in_another_process(seed: str) -> None:
    expected = stable_hash(run_in_main(CROSS_PROCESS_VALUE)["value"])
    script = (
        CROSS_PROCESS_VALUE + "\nfrom flowbook.caching.hashing import stable_hash\n"
        "print(stable_hash(value))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == expected
