"""The current deployment: ``id``, ``name``, ``version``, ``flow_run_id``, ``parameters``.

flowbook runs flows where they are called and has no deployments, so ``id``, ``name`` and
``version`` are always ``None``. As in Prefect when a flow runs without a deployment,
``flow_run_id`` is the current flow run's id and ``parameters`` its parameters (``None`` and
``{}`` outside a flow run).
"""

from __future__ import annotations

from typing import Any

from flowbook.engine.runs import current_flow_run

_FIELDS = ("flow_run_id", "id", "name", "parameters", "version")

# Served by the module __getattr__ below, read when accessed.
__all__ = list(_FIELDS)


def __getattr__(attr: str) -> Any:
    if attr not in _FIELDS:
        raise AttributeError(
            f"flowbook.runtime.deployment has no attribute {attr!r}; "
            f"available: {', '.join(_FIELDS)}"
        )
    run = current_flow_run.get()
    if attr == "flow_run_id":
        return run.id if run is not None else None
    if attr == "parameters":
        return dict(run.parameters) if run is not None else {}
    return None


def __dir__() -> list[str]:
    return list(_FIELDS)
