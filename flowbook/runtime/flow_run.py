"""The current flow run, read when accessed: ``from flowbook.runtime import flow_run``.

| attribute | inside a flow run (or a task run of it) | outside runs |
|---|---|---|
| ``id`` ``name`` ``flow_name`` | the flow run's | ``None`` |
| ``parameters`` ``tags`` ``run_count`` | the run's (copied; a tuple; attempt) | ``{}`` ``()`` 0 |
| ``scheduled_start_time`` | when the run started (runs start when called), UTC | now, UTC |
| ``start_time`` | when the run started, UTC (``None`` before) | ``None`` |
| ``flow_version`` ``version`` | the flow's ``version`` | ``None`` |
| ``project`` | the flow's ``project`` | ``None`` |
| ``parent_flow_run_id`` | for a nested flow, the id of the flow run that called it | ``None`` |
| ``root_flow_run_id`` | the outermost flow run's id (the run's own at the top) | ``None`` |
| ``parent_deployment_id`` ``job_variables`` | ``None``: flowbook has no deployments | ``None`` |
| ``api_url`` ``ui_url`` | ``None``: flowbook serves no page per run | ``None`` |

``FLOWBOOK__RUNTIME__FLOW_RUN__{KEY}`` mocks an attribute (``flowbook.runtime._mock``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from flowbook.engine.runs import current_flow_run
from flowbook.runtime import _mock


def _field(attr: str, outside: Any) -> Callable[[], Any]:
    def get() -> Any:
        run = current_flow_run.get()
        return outside if run is None else getattr(run, attr)

    return get


def _parameters() -> dict[str, Any]:
    run = current_flow_run.get()
    return {} if run is None else dict(run.parameters)


def _utc(seconds: float | None) -> datetime.datetime | None:
    return (
        None if seconds is None else datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    )


def _start_time() -> datetime.datetime | None:
    run = current_flow_run.get()
    return None if run is None else _utc(run.start_s)


def _scheduled_start_time() -> datetime.datetime:
    run = current_flow_run.get()
    if run is None:
        return datetime.datetime.now(datetime.timezone.utc)
    started = run.start_s if run.start_s is not None else getattr(run, "created_s", None)
    return _utc(started) or datetime.datetime.now(datetime.timezone.utc)


def _root_flow_run_id() -> str | None:
    run: Any = current_flow_run.get()
    if run is None:
        return None
    # follow the calling task runs up; a picture of the run (on a Dask worker, in a process
    # started with with_context) has no such link: there the root is known only at the top
    while True:
        if run.parent_flow_run_id is None:
            return str(run.id)
        parent_task_run = getattr(run, "parent_task_run", None)
        if parent_task_run is None or parent_task_run.flow_run is None:
            return None
        run = parent_task_run.flow_run


def _none() -> None:
    return None


_FIELDS: dict[str, Callable[[], Any]] = {
    "id": _field("id", None),
    "name": _field("name", None),
    "flow_name": _field("flow_name", None),
    "parameters": _parameters,
    "tags": _field("tags", ()),
    "run_count": _field("run_count", 0),
    "scheduled_start_time": _scheduled_start_time,
    "start_time": _start_time,
    "flow_version": _field("version", None),
    "version": _field("version", None),
    "project": _field("project", None),
    "parent_flow_run_id": _field("parent_flow_run_id", None),
    "root_flow_run_id": _root_flow_run_id,
    "parent_deployment_id": _none,
    "job_variables": _none,
    "api_url": _none,
    "ui_url": _none,
}

# Served by the module __getattr__ below, read from the current run when accessed.
__all__ = sorted(_FIELDS)


def __getattr__(attr: str) -> Any:
    return _mock.read(__name__, "flow_run", attr, _FIELDS)


def __dir__() -> list[str]:
    return sorted(_FIELDS)
