"""The current task run, read when accessed: ``from flowbook.runtime import task_run``.

``id``, ``name``, ``task_name`` (``None`` outside a task run), ``parameters`` (a copy; ``{}``
outside), ``tags`` (``()``), ``run_count`` (the attempt: 1, then 2 on the first retry; ``0``
outside). ``api_url`` and ``ui_url`` are ``None``: flowbook has no server pages for runs.

``FLOWBOOK__RUNTIME__TASK_RUN__{KEY}`` mocks an attribute (``flowbook.runtime._mock``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowbook.engine.runs import current_task_run
from flowbook.runtime import _mock


def _field(attr: str, outside: Any) -> Callable[[], Any]:
    def get() -> Any:
        run = current_task_run.get()
        return outside if run is None else getattr(run, attr)

    return get


def _parameters() -> dict[str, Any]:
    run = current_task_run.get()
    return {} if run is None else dict(run.parameters)


def _none() -> None:
    return None


_FIELDS: dict[str, Callable[[], Any]] = {
    "id": _field("id", None),
    "name": _field("name", None),
    "task_name": _field("task_name", None),
    "parameters": _parameters,
    "tags": _field("tags", ()),
    "run_count": _field("run_count", 0),
    "api_url": _none,
    "ui_url": _none,
}

# Served by the module __getattr__ below, read from the current run when accessed.
__all__ = sorted(_FIELDS)


def __getattr__(attr: str) -> Any:
    return _mock.read(__name__, "task_run", attr, _FIELDS)


def __dir__() -> list[str]:
    return sorted(_FIELDS)
