"""Past and present flow runs, from the run store: ``list``, ``get``, ``delete``.

import flowbook.runs
flowbook.runs.list(flow="my-flow", limit=10)
flowbook.runs.get("golden-heron")          # id, id prefix or run name
flowbook.runs.delete("3f2a9c1e")
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from flowbook.store.queries import FlowRunDetail, FlowRunInfo

if TYPE_CHECKING:
    from flowbook.store import Store

__all__ = ["FlowRunDetail", "FlowRunInfo", "delete", "get", "list"]


def _store() -> Store:
    from flowbook.store import StoreError, get_store

    store = get_store()
    if store is None:
        raise StoreError(
            "runs are not recorded because FLOWBOOK_STORE=off; unset it to keep a run store"
        )
    return store


def list(
    flow: str | None = None, state: str | None = None, limit: int | None = 50
) -> builtins.list[FlowRunInfo]:
    """Flow runs, newest first; ``flow`` and ``state`` (e.g. ``"Failed"``) filter them."""
    from flowbook.store.queries import list_runs

    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r}: give a positive whole number, or None for all runs")
    return list_runs(_store(), flow=flow, state=state, limit=limit)


def get(run: str) -> FlowRunDetail:
    """One flow run with its state history, task runs and logs."""
    from flowbook.store.queries import get_run

    if not isinstance(run, str) or not run:
        raise TypeError(
            f"flowbook.runs.get({run!r}): give a flow run's id or name as a string, e.g. "
            "flowbook.runs.list()[0].id"
        )

    return get_run(_store(), run)


def delete(run: str) -> int:
    """Delete a flow run, its subflow runs and everything recorded for them."""
    from flowbook.store.queries import delete_run

    return delete_run(_store(), run)
