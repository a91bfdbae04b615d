"""Every cache hit hands out a value of its own, with the store off (``MemoryCache``) and on.

A caller that mutates what a cached task returned must not change what later hits return;
values that cannot be pickled are not cached, with the same warning whichever cache is used.
Task bodies count their real executions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.caching.backend import MemoryCache, get_cache_backend
from flowbook.caching.keys import CacheKeyWarning
from flowbook.settings import reload_settings
from flowbook.store import close_store
from flowbook.tasks import task_input_hash

CALLS: list[str] = []


@pytest.fixture(params=["off", "on"])
def store_setting(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    monkeypatch.setenv("FLOWBOOK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    monkeypatch.setenv("FLOWBOOK_STORE", request.param)
    reload_settings()
    assert isinstance(get_cache_backend(), MemoryCache) == (request.param == "off")
    CALLS.clear()
    yield request.param
    close_store()


@task(cache_key_fn=task_input_hash)
def matrix(n: int) -> dict[str, Any]:
    CALLS.append(f"matrix {n}")
    return {"rows": [[0] * n for _ in range(n)], "name": "zeros"}


@flow(name="mutating")
def mutating(n: int) -> dict[str, Any]:
    first = matrix(n)
    first["rows"][0][0] = 99  # the caller changes what it got
    first["name"] = "changed"
    second = matrix(n)
    assert second is not first
    return second


def test_mutating_a_hit_never_changes_later_hits(store_setting: str) -> None:
    fresh = {"rows": [[0, 0], [0, 0]], "name": "zeros"}
    assert mutating(2) == fresh
    assert mutating(2) == fresh
    assert CALLS == ["matrix 2"]


def make_point_class() -> type:
    class Point:  # defined in a function: plain pickle cannot store it, cloudpickle can
        def __init__(self, x: int) -> None:
            self.x = x

    return Point


Point = make_point_class()


@task(cache_key_fn=task_input_hash)
def point(x: int) -> Any:
    CALLS.append(f"point {x}")
    return Point(x)


@flow(name="points")
def points(x: int) -> Any:
    return point(x)


def test_values_only_cloudpickle_can_store_keep_their_class(store_setting: str) -> None:
    a, b = points(3), points(3)
    assert CALLS == ["point 3"]
    assert a is not b
    # the class itself, not a copy of it
    assert type(a) is Point
    assert type(b) is Point
    assert (a.x, b.x) == (3, 3)


@task(cache_key_fn=task_input_hash)
def with_a_lock(x: int) -> Any:
    CALLS.append(f"lock {x}")
    return {"x": x, "lock": threading.Lock()}


@flow(name="locks")
def locks(x: int) -> int:
    return int(with_a_lock(x)["x"])


def test_values_that_cannot_be_pickled_are_not_cached(store_setting: str) -> None:
    for _ in range(2):
        with pytest.warns(CacheKeyWarning) as caught:
            assert locks(4) == 4
        (message,) = [str(w.message) for w in caught]
        assert "with_a_lock" in message
        assert "cannot be cached" in message
        assert "lock" in message
    assert CALLS == ["lock 4", "lock 4"]
