"""Values of any depth, and values that contain themselves, wherever flowbook walks them:
content hashing (cache keys), previews (records and displays), and the futures inside task
arguments. Each works as a plain Python call does: no RecursionError, no endless loop.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import pydantic
import pytest

import flowbook
from flowbook import flow, task
from flowbook._preview import parameters_preview, preview
from flowbook.caching.hashing import UnhashableInputError, stable_hash
from flowbook.caching.keys import task_input_hash
from flowbook.engine.events import StateChanged
from flowbook.engine.values import collect_futures, resolve_futures
from flowbook.futures import FutureList, TaskRunFuture

DEEP = 100_000
REPO_ROOT = Path(flowbook.__file__).resolve().parent.parent


def nested_lists(depth: int, leaf: Any = None) -> list[Any]:
    root: list[Any] = []
    current = root
    for _ in range(depth):
        inner: list[Any] = []
        current.append(inner)
        current = inner
    if leaf is not None:
        current.append(leaf)
    return root


def nested_dicts(depth: int, leaf: Any = 0) -> dict[str, Any]:
    root: dict[str, Any] = {}
    current = root
    for _ in range(depth):
        current["k"] = {}
        current = current["k"]
    current["leaf"] = leaf
    return root


@dataclasses.dataclass
class Node:
    value: int
    next: Any = None


def chain(depth: int, last: Any = None) -> Node:
    node = Node(depth, last)
    for value in range(depth - 1, -1, -1):
        node = Node(value, node)
    return node


class Box:
    def __init__(self, inner: Any) -> None:
        self.inner = inner


def self_containing() -> list[Any]:
    loop: list[Any] = [1]
    loop.append(loop)
    return loop


# -- content hashing ---------------------------------------------------------------------------


def test_values_that_contain_themselves_hash_by_their_structure() -> None:
    assert stable_hash(self_containing()) == stable_hash(self_containing())
    longer: list[Any] = [1, [1]]
    longer[1].append(longer)
    assert stable_hash(self_containing()) != stable_hash(longer)
    assert stable_hash(self_containing()) != stable_hash([1, []])

    node = Node(1)
    node.next = node
    other = Node(1)
    other.next = other
    assert stable_hash(node) == stable_hash(other)
    assert stable_hash(node) != stable_hash(Node(1, Node(1)))

    box = Box(None)
    box.inner = {"me": box, "tags": {1, 2}}
    twin = Box(None)
    twin.inner = {"tags": {2, 1}, "me": twin}
    assert stable_hash(box) == stable_hash(twin)

    namespace = SimpleNamespace(items=[])
    namespace.items.append(namespace)
    assert stable_hash(namespace) == stable_hash(
        (lambda n: (n.items.append(n), n)[1])(SimpleNamespace(items=[]))
    )


def test_shared_values_that_are_not_cycles_hash_like_copies() -> None:
    shared = [1, 2]
    assert stable_hash([shared, shared]) == stable_hash([[1, 2], [1, 2]])
    assert stable_hash({"a": shared, "b": shared}) == stable_hash({"a": [1, 2], "b": [1, 2]})


CYCLES_SCRIPT = """
import dataclasses
from flowbook.caching.hashing import stable_hash

@dataclasses.dataclass
class Node:
    value: int
    next: object = None

loop = [1, {"k", "j"}]
loop.append(loop)
node = Node(1)
node.next = {"back": node, "names": frozenset({"a", "b", "c"})}
print(stable_hash(loop), stable_hash(node))
"""


def test_cycles_hash_alike_in_every_process(tmp_path: Path) -> None:
    script = tmp_path / "cycles.py"
    script.write_text(textwrap.dedent(CYCLES_SCRIPT))
    outputs = {
        subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)},
        ).stdout
        for seed in ("0", "1", "77")
    }
    assert len(outputs) == 1


@pytest.mark.parametrize(
    "build",
    [
        nested_lists,
        nested_dicts,
        lambda depth, leaf=0: chain(depth, leaf),
        lambda depth, leaf=0: SimpleNamespace(v=nested_lists(depth, leaf)),
    ],
    ids=["lists", "dicts", "dataclasses", "namespace"],
)
def test_values_nested_100000_deep_hash(build: Any) -> None:
    started = time.perf_counter()
    one = stable_hash(build(DEEP, 1))
    assert time.perf_counter() - started < 5
    assert one == stable_hash(build(DEEP, 1))
    # what differs at the bottom, or in depth, differs (checked less deep: it is slow enough)
    assert stable_hash(build(1000, 1)) != stable_hash(build(1000, 2))
    assert stable_hash(build(1000, 1)) != stable_hash(build(999, 1))


def test_tuples_nested_100000_deep_hash() -> None:
    def tuples(leaf: int) -> Any:
        value: Any = (leaf,)
        for _ in range(DEEP):
            value = (value,)
        return value

    assert stable_hash(tuples(1)) != stable_hash(tuples(2))
    # a dict key is encoded apart (to order the keys): deep keys too
    assert stable_hash({tuples(1): "deep key", 1: 2}) != stable_hash({tuples(2): "deep key", 1: 2})


def test_what_cannot_be_hashed_at_the_bottom_of_a_deep_value_is_named() -> None:
    value = nested_dicts(DEEP, leaf=iter([]))
    with pytest.raises(UnhashableInputError) as caught:
        stable_hash(value)
    message = str(caught.value)
    assert message.startswith(
        "cannot hash value of type 'list_iterator' at k['k']['k']['k']['k']['k']['k']['k']"
        "...(99,985 levels)...['k']['k']['k']['k']['k']['k']['k']['leaf']: iterators are "
        "used up as they are read"
    )
    assert caught.value.path == "k" + "['k']" * (DEEP - 1) + "['leaf']"


class ShowMe:
    def __repr__(self) -> str:  # a preview never calls it
        raise AssertionError("called")


def test_task_input_hash_keys_deep_and_self_containing_arguments() -> None:
    @task(cache_key_fn=task_input_hash)
    def consume(value: Any) -> int:
        return 1

    context = SimpleNamespace(task=consume)
    deep = task_input_hash(context, {"value": nested_lists(DEEP, 1)})  # type: ignore[arg-type]
    assert deep == task_input_hash(context, {"value": nested_lists(DEEP, 1)})  # type: ignore[arg-type]
    loop = task_input_hash(context, {"value": self_containing()})  # type: ignore[arg-type]
    assert loop == task_input_hash(context, {"value": self_containing()})  # type: ignore[arg-type]
    assert loop != deep


# -- previews ----------------------------------------------------------------------------------


def test_previews_show_a_value_inside_itself_as_repr_does() -> None:
    loop = self_containing()
    assert preview(loop) == repr(loop) == "[1, [...]]"
    mapping: dict[str, Any] = {"name": "a"}
    mapping["self"] = mapping
    assert preview(mapping) == repr(mapping) == "{'name': 'a', 'self': {...}}"
    holder: tuple[list[Any]] = ([],)
    holder[0].append(holder)
    assert preview(holder) == "([(...)],)"
    assert parameters_preview({"x": loop, "n": 3}) == '{"x": "[1, [...]]", "n": "3"}'


def test_previews_of_deep_and_wide_values_stay_short() -> None:
    assert preview(nested_lists(DEEP, 1)) == "[[[[[[[...]]]]]]]"
    assert preview(nested_dicts(DEEP)) == "{'k': {'k': {'k': {'k': {'k': {'k': {...}}}}}}}"
    wide = [[list(range(100)) for _ in range(8)] for _ in range(8)]
    shown = preview(wide)
    assert 400 < len(shown) < 500
    assert shown.startswith("[[[0, 1, 2, 3, 4, 5, 6, 7, ...], [0, 1,")
    assert shown.endswith("...]]")
    assert parameters_preview({"deep": nested_lists(DEEP)}) == '{"deep": "[[[[[[[...]]]]]]]"}'


def test_previews_never_call_a_repr_inside_a_container() -> None:
    class Row(NamedTuple):
        key: str
        value: Any

    assert preview([ShowMe(), {"x": ShowMe()}]) == (
        f"[<{__name__}.ShowMe>, {{'x': <{__name__}.ShowMe>}}]"
    )
    assert preview(Row("a", [1, ShowMe()])) == f"Row(key='a', value=[1, <{__name__}.ShowMe>])"
    assert preview([10**5000]) == "[<int of 16610 bits>]"


# -- futures inside arguments ------------------------------------------------------------------


@task
def plus_one(x: int) -> int:
    return x + 1


@dataclasses.dataclass
class Pair:
    left: Any
    right: Any = 0


@dataclasses.dataclass(frozen=True)
class Frozen:
    value: Any


class Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    value: Any
    count: int = 1


class Point(NamedTuple):
    x: Any
    y: int


def test_futures_are_found_in_any_container_in_call_order() -> None:
    @flow
    def gather() -> list[str]:
        a, b = plus_one.submit(1), plus_one.submit(2)
        found: list[TaskRunFuture[Any]] = []
        collect_futures(
            [3, [a, {"k": b}], Pair(b, {a}), Model(value=(a,)), Point(b, 1), "x"], found
        )
        collect_futures([FutureList([a, b])], found)
        return [future.task_run.name for future in found]

    assert gather() == [
        "plus_one-0",
        "plus_one-1",
        "plus_one-1",
        "plus_one-0",
        "plus_one-0",
        "plus_one-1",
        "plus_one-0",
        "plus_one-1",
    ]


def test_futures_are_replaced_by_their_results_in_containers_of_the_same_type() -> None:
    plain = {"rows": [1, 2, (3, "x")], "tags": {"a"}}
    opaque = Box(None)

    @flow
    def resolve() -> dict[str, Any]:
        a, b = plus_one.submit(1), plus_one.submit(10)
        opaque.inner = a
        value = {
            "list": [a, plain],
            "tuple": (b,),
            "pair": Pair([a], 3),
            "frozen": Frozen(b),
            "model": Model(value=a),
            "point": Point(b, 5),
            "set": frozenset({(a, 1)}),
            "map": FutureList([a, b]),
            "opaque": opaque,
        }
        return {"resolved": resolve_futures(value), "plain": resolve_futures(plain)}

    out = resolve()
    resolved = out["resolved"]
    assert resolved == {
        "list": [2, plain],
        "tuple": (11,),
        "pair": Pair([2], 3),
        "frozen": Frozen(11),
        "model": Model(value=2),
        "point": Point(11, 5),
        "set": frozenset({(2, 1)}),
        "map": [2, 11],
        "opaque": opaque,
    }
    assert type(resolved["map"]) is list
    assert resolved["list"][1] is plain  # no future in it: the very object
    assert out["plain"] is plain
    assert isinstance(opaque.inner, TaskRunFuture)  # other objects are passed as they are


def test_futures_in_values_that_contain_themselves_or_are_deep() -> None:
    @flow
    def walk() -> dict[str, Any]:
        a = plus_one.submit(1)
        loop: list[Any] = [a]
        loop.append(loop)
        found: list[TaskRunFuture[Any]] = []
        collect_futures([loop, loop], found)
        resolved = resolve_futures(loop)
        deep = nested_lists(DEEP, a)
        deep_found: list[TaskRunFuture[Any]] = []
        started = time.perf_counter()
        collect_futures([deep], deep_found)
        deep_resolved = resolve_futures(deep)
        seconds = time.perf_counter() - started
        bottom = deep_resolved
        while bottom and isinstance(bottom[0], list):
            bottom = bottom[0]
        untouched = nested_lists(DEEP)
        return {
            "found": len(found),
            "loop": (resolved[0], resolved[1] is resolved, loop[0] is a),
            "deep": (len(deep_found), bottom, seconds),
            "untouched": resolve_futures(untouched) is untouched,
        }

    out = walk()
    assert out["found"] == 1  # a container reached again is looked into once
    assert out["loop"] == (2, True, True)  # the copy refers to itself; the original is kept
    found, bottom, seconds = out["deep"]
    assert (found, bottom) == (1, [2])
    assert seconds < 5
    assert out["untouched"]


# -- through real flows ---------------------------------------------------------------------------
@dataclasses.dataclass
class Holder:
    inner: Any


@task(cache_key_fn=task_input_hash)
def size_of(value: Any) -> int:
    return 1 if not isinstance(value, Holder) else value.inner + 1


@task
def zero() -> int:
    return 0


def test_cyclic_deep_and_dataclass_wrapped_arguments_run_as_a_plain_call_does(
    events: Any,
) -> None:
    @flow
    def walks() -> tuple[int, int, int, int]:
        x = self_containing()
        deep = nested_lists(100_000)
        return (
            size_of(x),
            size_of(deep),
            size_of.submit(Holder(zero.submit())).result(),
            size_of.submit(x).result(),
        )

    assert walks() == (1, 1, 1, 1)
    # the second call is served by the cache, for the cycle and the deep value alike
    assert walks() == (1, 1, 1, 1)
    cached = [e for e in events.of(StateChanged) if e.state.name == "Cached"]
    # first call: the cycle passed again hits; second call: all four size_of runs hit
    assert len(cached) == 1 + 4
