"""The server's stored snapshot (``GET runs/<id>/snapshot``, ``api.run_snapshot``) of a run
whose subflow was deleted since, and the stored tracebacks of its failed task runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.settings import reload_settings
from flowbook.store import close_store, get_store


@task
def double(x: int) -> int:
    return 2 * x


@task
def explode(x: int) -> int:
    raise ValueError(f"exploded on {x}")


@flow(name="child-flow")
def child(x: int) -> int:
    return double(x)


@flow(name="parent-flow")
def parent(x: int) -> int:
    try:
        explode(x)
    except ValueError:
        pass
    return child(x) + double(x)


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


def _parent_id(store: Any) -> str:
    from flowbook.store.queries import list_runs

    return next(r.id for r in list_runs(store, limit=10) if r.flow_name == "parent-flow")


def test_a_deleted_subflow_leaves_the_parents_node(store: Any) -> None:
    from flowbook.jupyter.server import api
    from flowbook.store.queries import delete_run, get_run

    state = parent(4, return_state=True)
    assert state.is_completed()
    store.flush()
    detail = get_run(store, _parent_id(store))
    sub_ids = [t["subflow_run_id"] for t in detail.task_run_list if t.get("subflow_run_id")]
    assert len(sub_ids) == 1
    before = api.run_snapshot(detail.id)
    assert [n["kind"] for n in before["graph"]["nodes"]].count("flow") == 1
    assert len(before["graph"]["nodes"]) == 4  # explode, the subflow, its double, double
    delete_run(store, sub_ids[0])

    after = api.run_snapshot(detail.id)  # was a 500: the subflow's LookupError
    nodes = after["graph"]["nodes"]
    subflows = [n for n in nodes if n["kind"] == "flow"]
    assert len(subflows) == 1  # the parent's call of it still shows
    assert [r["state"] for r in subflows[0]["detail"]["runs"]] == ["Completed"]
    assert sorted(n["label"] for n in nodes if n["kind"] == "task") == ["double-0", "explode-0"]


def test_a_stored_failed_task_run_shows_its_traceback(store: Any) -> None:
    from flowbook.jupyter.server import api

    parent(5, return_state=True)
    store.flush()
    snapshot = api.run_snapshot(_parent_id(store))
    runs = {r["name"]: r for n in snapshot["graph"]["nodes"] for r in n["detail"]["runs"]}
    failed = runs["explode-0"]
    assert failed["state"] == "Failed"
    assert failed["traceback"].startswith("Traceback (most recent call last):")
    assert ", in explode\n    raise ValueError" in failed["traceback"]
    assert failed["traceback"].endswith("ValueError: exploded on 5")
    assert runs["double-0"]["traceback"] is None


def test_the_run_and_its_snapshot_come_from_one_read(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbook.jupyter.server import api
    from flowbook.store import queries

    parent(6, return_state=True)
    store.flush()
    run_id = _parent_id(store)
    reads: list[str] = []
    real = queries.get_run

    def counting(st: Any, ref: str) -> Any:
        reads.append(ref)
        return real(st, ref)

    monkeypatch.setattr(queries, "get_run", counting)
    both = api.run_snapshot(run_id, with_run=True)
    assert reads.count(run_id) == 1
    assert both["run"] == api.run_detail(run_id, None)
    alone = api.run_snapshot(run_id)
    assert both["snapshot"]["graph"] == alone["graph"]
    assert both["snapshot"]["header"]["run_id"] == run_id
    assert both["run"]["state_type"] == "COMPLETED"
    assert {t["name"] for t in both["run"]["task_runs"]} >= {"explode-0", "double-0"}
