"""The current task run: ``id``, ``name``, ``task_name``, ``parameters``, ``tags``,
``run_count``."""

from __future__ import annotations

from typing import Any

from flowbook.engine.runs import current_task_run

_DEFAULTS: dict[str, Any] = {
    "id": None,
    "name": None,
    "task_name": None,
    "parameters": {},
    "tags": (),
    "run_count": 0,
}


# Served by the module __getattr__ below, read from the current run when accessed.
__all__ = sorted(_DEFAULTS)


def __getattr__(attr: str) -> Any:
    if attr not in _DEFAULTS:
        raise AttributeError(
            f"flowbook.runtime.task_run has no attribute {attr!r}; "
            f"available: {', '.join(sorted(_DEFAULTS))}"
        )
    run = current_task_run.get()
    if run is None:
        default = _DEFAULTS[attr]
        return dict(default) if isinstance(default, dict) else default
    if attr == "parameters":
        return dict(run.parameters)
    return getattr(run, attr)


def __dir__() -> list[str]:
    return sorted(_DEFAULTS)
