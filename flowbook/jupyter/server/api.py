"""The server API's work, without tornado: checking requests and reading the store.

The handlers (``handlers.py``) check a request's parameters here on the event loop (cheap),
then run the store work on a thread. A bad request is an ``ApiError`` with the HTTP status
and a message that names the parameter, its value and what is allowed.

Nothing here runs user code, imports user modules or unpickles anything: runs, task runs,
logs, cache entries and registered flows are read as the store keeps them, with parameters
and inputs as the previews written when they were recorded, and results previewed by reading
their pickles without loading them (``flowbook._pickle_preview``).

A server runs for days, and the store's crash check (the unfinished runs of dead processes
become ``Crashed``) otherwise runs only when a process opens the store. So serving runs
repeats it, at most every ``CRASH_CHECK_EVERY_S`` seconds, on the worker thread that reads
the store: a killed kernel's run shows ``Crashed`` within that time, not ``Running`` for ever.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from flowbook.store.queries import STATE_NAMES

if TYPE_CHECKING:
    from flowbook.store import Store

__all__ = [
    "CRASH_CHECK_EVERY_S",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "STATE_NAMES",
    "ApiError",
    "ClearRequest",
    "cache_entries",
    "clear_cache",
    "flow_list",
    "parse_clear",
    "parse_diff",
    "parse_limit",
    "parse_run_id",
    "parse_state",
    "relative_notebook",
    "run_detail",
    "run_diff",
    "run_list",
    "run_snapshot",
    "view_asset",
]

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000

CRASH_CHECK_EVERY_S = 5.0

# STATE_NAMES: every state name flowbook gives a run. A filter matches a run's state name or its
# state type, as flowbook.runs.list does: "Failed" also lists runs that TimedOut, "Running"
# also those Retrying.
_STATES_BY_LOWER = {name.lower(): name for name in STATE_NAMES}

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGITS = re.compile(r"[0-9]{1,9}")


class ApiError(Exception):
    """A request the API answers with an error status and ``{"message": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- checking requests -----------------------------------------------------------------------


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if _DIGITS.fullmatch(raw) is None or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(
            400, f"limit={raw!r} is not valid; give a whole number from 1 to {MAX_LIMIT}"
        )
    return int(raw)


def parse_state(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    name = _STATES_BY_LOWER.get(raw.lower())
    if name is None:
        raise ApiError(
            400, f"state={raw!r} is not a state name; use one of {', '.join(STATE_NAMES)}"
        )
    return name


def parse_run_id(raw: str) -> str:
    if _UUID.fullmatch(raw) is None:
        raise ApiError(
            400,
            f"run id {raw!r} is not valid; give a flow run's id, a UUID such as "
            "'3f2a9c1e-5b7d-4e0f-9a1b-2c3d4e5f6a7b'",
        )
    return raw.lower()


@dataclass(frozen=True)
class ClearRequest:
    """What ``POST cache/clear`` asked for: ``entries``, or the ``flowbook.cache.clear``
    arguments."""

    entries: tuple[tuple[str, str], ...] = ()
    task: str | None = None
    flow: str | None = None
    expired: bool = False
    all: bool = False


_CLEAR_FIELDS = ("entries", "task", "flow", "expired", "all")


def parse_clear(body: bytes) -> ClearRequest:
    """The body of ``POST cache/clear``: ``{"entries": [{"task_key": ..., "key": ...}]}`` or
    any of ``{"task": ..., "flow": ..., "expired": true, "all": true}``."""
    allowed = "give {entries: [{task_key, key}, ...]} or any of {task, flow, expired, all}"
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not JSON ({exc}); {allowed}") from None
    if not isinstance(data, dict) or not data:
        raise ApiError(
            400, f"the body must be a non-empty JSON object, got {_short(data)}; {allowed}"
        )
    unknown = [name for name in data if name not in _CLEAR_FIELDS]
    if unknown:
        raise ApiError(
            400,
            f"unknown field {unknown[0]!r} in the body; the fields are {', '.join(_CLEAR_FIELDS)}",
        )
    if "entries" in data:
        others = [name for name in data if name != "entries"]
        if others:
            raise ApiError(
                400, f"entries cannot be combined with {', '.join(others)}; send one or the other"
            )
        return ClearRequest(entries=_parse_entries(data["entries"]))
    for name in ("task", "flow"):
        if name in data and not (isinstance(data[name], str) and data[name]):
            raise ApiError(
                400, f"{name}={_short(data[name])} is not valid; give a non-empty {name} name"
            )
    for name in ("expired", "all"):
        if name in data and not isinstance(data[name], bool):
            raise ApiError(400, f"{name}={_short(data[name])} is not valid; give true or false")
    request = ClearRequest(
        task=data.get("task"),
        flow=data.get("flow"),
        expired=data.get("expired", False),
        all=data.get("all", False),
    )
    if not (request.task or request.flow or request.expired or request.all):
        raise ApiError(400, f"the body selects no cache entries ({_short(data)}); {allowed}")
    return request


def _parse_entries(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(
            400,
            f"entries={_short(raw)} is not valid; give a non-empty list of "
            '{"task_key": ..., "key": ...} objects',
        )
    pairs = []
    for i, item in enumerate(raw):
        if (
            not isinstance(item, dict)
            or set(item) != {"task_key", "key"}
            or not all(isinstance(item[k], str) and item[k] for k in ("task_key", "key"))
        ):
            raise ApiError(
                400,
                f"entries[{i}]={_short(item)} is not valid; give an object with exactly "
                "task_key and key, both non-empty strings (as GET cache lists them)",
            )
        pairs.append((item["task_key"], item["key"]))
    return tuple(pairs)


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the store (called on a worker thread) ----------------------------------------------------


def _store() -> Store:
    """This process's store, opened from the FLOWBOOK_* settings as a kernel opens it."""
    from flowbook.store import StoreError, get_store

    try:
        store = get_store()
    except ValueError as exc:  # a bad FLOWBOOK_* environment variable
        raise StoreError(str(exc)) from None
    if store is None:
        raise StoreError(
            "the Jupyter server runs with FLOWBOOK_STORE=off, so it has no run store to show; "
            "start it without FLOWBOOK_STORE=off"
        )
    return store


_crash_check_lock = threading.Lock()
_crash_checked_at = float("-inf")


def _check_crashed(store: Store) -> None:
    """Mark the unfinished runs of dead processes ``Crashed``, at most every
    ``CRASH_CHECK_EVERY_S``; a request that finds another doing it does not wait."""
    global _crash_checked_at
    from flowbook.store.database import recover_crashed

    if time.monotonic() - _crash_checked_at < CRASH_CHECK_EVERY_S:
        return
    if not _crash_check_lock.acquire(blocking=False):
        return
    try:
        if time.monotonic() - _crash_checked_at < CRASH_CHECK_EVERY_S:
            return
        _crash_checked_at = time.monotonic()
        try:
            recover_crashed(store.engine, store.process_id, store.journal_dir)
        except Exception as exc:  # the runs are still worth serving as they are stored
            logging.getLogger(__name__).warning(
                "flowbook: the crash check of the run store failed: %s", exc
            )
    finally:
        _crash_check_lock.release()


def relative_notebook(path: str | None, root: str | None) -> str | None:
    """A run's notebook path relative to the server's root (with ``/``), when it is inside
    it; else as recorded."""
    if not path or not root or not os.path.isabs(path):
        return path
    for base, target in (
        (os.path.abspath(root), os.path.abspath(path)),
        (os.path.realpath(root), os.path.realpath(path)),
    ):
        try:
            rel = os.path.relpath(target, base)
        except ValueError:  # another drive (Windows)
            continue
        if rel != os.curdir and rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            return rel.replace(os.sep, "/")
    return path


def run_list(flow: str | None, state: str | None, limit: int, root: str | None) -> dict[str, Any]:
    from flowbook.store.queries import flow_names, list_runs

    store = _store()
    _check_crashed(store)
    runs = list_runs(store, flow=flow, state=state, limit=limit, top_level=True)
    out = []
    for run in runs:
        row = run.as_dict()
        row["notebook"] = relative_notebook(run.notebook, root)
        out.append(row)
    return {"runs": out, "flows": flow_names(store, top_level=True)}


def run_detail(run_id: str, root: str | None) -> dict[str, Any]:
    from flowbook.store.queries import get_run

    store = _store()
    _check_crashed(store)
    try:
        detail = get_run(store, run_id)
    except LookupError:
        detail = None
    if detail is None or detail.id != run_id:  # not a run named like this id
        raise ApiError(404, f"no flow run with id {run_id!r} in the store")
    return _run_body(detail, root)


def _run_body(detail: Any, root: str | None) -> dict[str, Any]:
    body: dict[str, Any] = detail.as_dict()
    body["task_runs"] = body.pop("task_run_list")
    body["notebook"] = relative_notebook(detail.notebook, root)
    for line in body["logs"]:
        line["level_name"] = logging.getLevelName(line["level"])
    return body


def run_snapshot(run_id: str, with_run: bool = False, root: str | None = None) -> dict[str, Any]:
    """The run widget's snapshot of a stored run (and its subflows): what ``%flowbook show``
    renders, for the panel to draw with the widget's own renderer (``view_asset``).

    ``with_run`` (``GET runs/<id>/snapshot?run=1``): ``{"run": run_detail's answer,
    "snapshot": ...}`` from one read of the run, for the panel's details of a running run,
    which need both at every refresh.
    """
    from flowbook.jupyter.model import StoredRun, stored_inputs
    from flowbook.store.queries import get_run, result_previews

    store = _store()
    _check_crashed(store)
    try:
        detail = get_run(store, run_id)
    except LookupError:
        detail = None
    if detail is None or detail.id != run_id:
        raise ApiError(404, f"no flow run with id {run_id!r} in the store")
    subflows: dict[str, Any] = {}
    pending = [t["subflow_run_id"] for t in detail.task_run_list if t.get("subflow_run_id")]
    while pending:
        sub_id = pending.pop()
        if sub_id in subflows:
            continue
        try:
            sub = get_run(store, sub_id)
        except LookupError:  # deleted since: its parent's node still shows the call
            continue
        if sub.id != sub_id:
            continue
        subflows[sub_id] = sub
        pending += [t["subflow_run_id"] for t in sub.task_run_list if t.get("subflow_run_id")]
    ids = [t["id"] for run in (detail, *subflows.values()) for t in run.task_run_list]
    snapshot = StoredRun(
        detail,
        subflows,
        inputs=stored_inputs(store, ids),
        results=lambda shown: result_previews(store, shown),
    ).snapshot()
    if with_run:
        return {"run": _run_body(detail, root), "snapshot": snapshot}
    return snapshot


# the run widget's front end, served to the panel: name -> (file, content type)
VIEW_ASSETS = {
    "run_view.js": ("run_view.js", "text/javascript; charset=utf-8"),
    "run_view.css": ("run_view.css", "text/css; charset=utf-8"),
}


def view_asset(name: str) -> tuple[bytes, str]:
    """A file of the run widget's front end (``GET view/<name>``) and its content type."""
    from pathlib import Path

    found = VIEW_ASSETS.get(name)
    if found is None:
        raise ApiError(404, f"no view file {name!r}; the files are {', '.join(VIEW_ASSETS)}")
    static = Path(__file__).resolve().parent.parent / "widgets" / "static"
    return (static / found[0]).read_bytes(), found[1]


def parse_diff(a: str | None, b: str | None) -> tuple[str, str]:
    """The two run ids of ``GET diff?a=RUN_ID&b=RUN_ID``."""
    if a is None or b is None:
        missing = "a" if a is None else "b"
        raise ApiError(400, f"{missing} is missing; give two flow run ids: diff?a=RUN_ID&b=RUN_ID")
    checked = parse_run_id(a), parse_run_id(b)
    if checked[0] == checked[1]:
        raise ApiError(400, f"a and b are the same run {a!r}; give two different runs to compare")
    return checked


def run_diff(a: str, b: str) -> dict[str, Any]:
    """Two runs compared (``flowbook.diff``). Results are compared by checksum only, and
    previewed by reading their pickles without loading them: the server never unpickles."""
    from flowbook.diff import compare_runs

    store = _store()
    _check_crashed(store)
    try:
        return compare_runs(store, a, b, read_results=False).as_dict()
    except LookupError as exc:
        raise ApiError(404, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def cache_entries(task: str | None, flow: str | None) -> dict[str, Any]:
    from flowbook.store.queries import cache_entries_info

    entries = cache_entries_info(_store(), task=task, flow=flow)
    return {"entries": [entry.as_dict() for entry in entries]}


def clear_cache(request: ClearRequest) -> dict[str, Any]:
    from flowbook.store import queries

    store = _store()
    if request.entries:
        cleared = queries.invalidate_cache(store, request.entries)
    else:
        cleared = queries.clear_cache(
            store,
            task=request.task,
            flow=request.flow,
            expired=request.expired,
            all=request.all,
        )
    return {"cleared": cleared}


def flow_list(project: str | None, root: str | None) -> dict[str, Any]:
    """The flows the store knows (``flowbook flows``): registered flows and flows that only
    have top-level runs, each with its last run's state; ``project`` keeps one project. The
    projects are those of all flows, whatever the filter, so the panel can offer them all.

    The panel asks every few seconds: ``list_flows`` answers with two queries, whatever the
    number of flows and runs."""
    from flowbook.store.queries import list_flows

    store = _store()
    _check_crashed(store)
    every = list_flows(store)
    projects = sorted({flow.project for flow in every if flow.project is not None})
    out = []
    for flow in every:
        if project is not None and flow.project != project:
            continue
        row = asdict(flow)
        row["notebook"] = notebook = relative_notebook(flow.notebook, root)
        if notebook is not None:
            row["where"] = notebook + (f" (cell {flow.cell_id})" if flow.cell_id else "")
        out.append(row)
    return {"flows": out, "projects": projects}
