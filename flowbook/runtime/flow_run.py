"""The current flow run: ``id``, ``name``, ``flow_name``, ``parameters``, ``tags``, ``run_count``.

Also ``project``, ``version`` (the flow's), ``parent_flow_run_id`` (for subflows) and
``start_time``.
"""

from __future__ import annotations

import datetime
from typing import Any

from flowbook.engine.runs import current_flow_run

_DEFAULTS: dict[str, Any] = {
    "id": None,
    "name": None,
    "flow_name": None,
    "parameters": {},
    "tags": (),
    "run_count": 0,
    "project": None,
    "version": None,
    "parent_flow_run_id": None,
    "start_time": None,
}


# Served by the module __getattr__ below, read from the current run when accessed.
__all__ = sorted(_DEFAULTS)


def __getattr__(attr: str) -> Any:
    if attr not in _DEFAULTS:
        raise AttributeError(
            f"flowbook.runtime.flow_run has no attribute {attr!r}; "
            f"available: {', '.join(sorted(_DEFAULTS))}"
        )
    run = current_flow_run.get()
    if run is None:
        default = _DEFAULTS[attr]
        return dict(default) if isinstance(default, dict) else default
    if attr == "flow_name":
        return run.flow_name
    if attr == "parameters":
        return dict(run.parameters)
    if attr == "start_time":
        if run.start_s is None:
            return None
        return datetime.datetime.fromtimestamp(run.start_s, tz=datetime.timezone.utc)
    return getattr(run, attr)


def __dir__() -> list[str]:
    return sorted(_DEFAULTS)
