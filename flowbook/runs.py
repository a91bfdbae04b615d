"""Past and present flow runs, from the run store: ``list``, ``get``, ``delete``.

import flowbook.runs
flowbook.runs.list(flow="my-flow", limit=10)
flowbook.runs.get("golden-heron")          # id, id prefix or run name
flowbook.runs.delete("3f2a9c1e")

A run is named by its id, the first 4 or more characters of its id, or its name (the newest
run of that name). A reference that is a run's name and also the start of another run's id
is ambiguous: ``get`` and ``delete`` raise a ``LookupError`` naming both runs, and the full
id chooses.
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
    """Flow runs, newest first; ``flow`` and ``state`` (e.g. ``"Failed"``) filter them.

    ``limit`` is a whole number from 1 to 1,000,000, or None for all runs.
    """
    from flowbook.store.queries import check_limit, check_state, list_runs

    # checked before the store is opened, so that a typo is reported as such
    if state is not None:
        state = check_state(state)
    if limit is not None:
        limit = check_limit(limit)
    return list_runs(_store(), flow=flow, state=state, limit=limit)


def get(run: str) -> FlowRunDetail:
    """One flow run with its state history, task runs and logs."""
    from flowbook.store.queries import get_run

    return get_run(_store(), _checked("get", run))


def delete(run: str) -> int:
    """Delete a flow run, its subflow runs and everything recorded for them."""
    from flowbook.store.queries import delete_run

    return delete_run(_store(), _checked("delete", run))


def _checked(function: str, run: object) -> str:
    from flowbook.store.queries import check_run_ref

    if not isinstance(run, str):
        raise TypeError(
            f"flowbook.runs.{function}({run!r}): give a flow run's id or name as a string, "
            "e.g. flowbook.runs.list()[0].id"
        )
    try:
        return check_run_ref(run)
    except ValueError as exc:
        raise ValueError(f"flowbook.runs.{function}({run!r}): {exc}") from None
