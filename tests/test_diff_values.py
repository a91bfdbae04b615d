"""Two runs' results compared by value (``flowbook.diff``): values whose previews look alike
but differ, equal values that pickle differently, arrays, and values that cannot be read in
the comparing process (compared by checksum, as the server compares)."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowbook import flow, task
from flowbook.diff import compare_runs, render_text
from flowbook.settings import reload_settings
from flowbook.store import close_store, get_store

VALUES: dict[str, Any] = {}


@task
def long_list() -> list[int]:
    return [*range(1000), VALUES["last"]]


@task
def mapping() -> dict[str, int]:
    return dict(VALUES["mapping"])


@task
def array() -> Any:
    return VALUES["array"]


@task
def custom() -> Any:
    import y2_value_type

    return y2_value_type.Box(VALUES["box"])


@flow(name="values-flow", flow_run_name="{tag}")
def values(tag: str) -> None:
    long_list()
    mapping()
    array()
    custom()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("FLOWBOOK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "y2_value_type.py").write_text(
        textwrap.dedent(
            """
            class Box:
                def __init__(self, v):
                    self.v = v
                def __eq__(self, other):
                    return isinstance(other, Box) and self.v == other.v
            """
        )
    )
    monkeypatch.syspath_prepend(str(module_dir))
    reload_settings()
    close_store()
    try:
        st = get_store()
        assert st is not None
        yield st
    finally:
        close_store()
        sys.modules.pop("y2_value_type", None)
        monkeypatch.undo()
        reload_settings()


def _run(a: dict[str, Any], b: dict[str, Any], store: Any) -> dict[str, list[str]]:
    VALUES.clear()
    VALUES.update(a)
    values("a")
    VALUES.clear()
    VALUES.update(b)
    values("b")
    store.flush()
    diff = compare_runs(store, "a", "b")
    return {t.a.name: t.changes for t in diff.task_runs if t.a is not None}


def test_results_whose_previews_look_alike_differ_by_value(store: Any) -> None:
    base = {"mapping": {"x": 1}, "array": np.arange(3), "box": 1}
    changes = _run({**base, "last": 7}, {**base, "last": 8}, store)
    assert changes == {"long_list-0": ["result"]}
    diff = compare_runs(store, "a", "b")
    assert diff.identical == 3
    assert "long_list-0" in render_text(diff)


def test_equal_values_that_pickle_differently_are_identical(store: Any) -> None:
    a = {"last": 1, "mapping": {"x": 1, "y": 2}, "array": np.arange(4), "box": 1}
    b = {"last": 1, "mapping": {"y": 2, "x": 1}, "array": np.arange(4)[::-1][::-1], "box": 1}
    assert _run(a, b, store) == {}
    assert compare_runs(store, "a", "b").identical == 4


def test_arrays_compare_whole_and_never_raise(store: Any) -> None:
    a = {"last": 1, "mapping": {}, "array": np.arange(4), "box": [np.arange(2)]}
    b = {"last": 1, "mapping": {}, "array": np.array([0, 1, 2, 9]), "box": [np.arange(2) + 1]}
    changes = _run(a, b, store)
    # the arrays differ whole; a list of arrays has no plain truth value: different
    assert changes == {"array-0": ["result"], "custom-0": ["result"]}
    c = {"last": 1, "mapping": {}, "array": np.arange(4), "box": 1}
    d = {"last": 1, "mapping": {}, "array": np.arange(5), "box": 1}
    assert _run(c, d, store) == {"array-0": ["result"]}  # other shapes: different, no error


def test_values_that_cannot_be_read_differ_by_checksum_like_the_server(store: Any) -> None:
    from flowbook.jupyter.server import api

    base = {"last": 1, "mapping": {}, "array": np.arange(1)}
    VALUES.clear()
    VALUES.update({**base, "box": 1})
    values("a")
    VALUES.update({**base, "box": 2})
    values("b")
    store.flush()
    sys.modules.pop("y2_value_type", None)
    sys.path[:] = [p for p in sys.path if not p.endswith(os.sep + "mods")]
    diff = compare_runs(store, "a", "b")
    by_name = {t.a.name: t for t in diff.task_runs if t.a is not None}
    assert set(by_name) == {"custom-0"}
    assert by_name["custom-0"].changes == ["result"]
    assert by_name["custom-0"].b is not None
    assert (by_name["custom-0"].b.result or "").startswith("(cannot be read here: ")
    assert any("compared by checksum only" in note for note in diff.notes)
    server = compare_runs(store, "a", "b", read_results=False)
    assert [(t.a.name, t.changes) for t in server.task_runs if t.a is not None] == [
        ("custom-0", ["result"])
    ]
    assert api is not None
