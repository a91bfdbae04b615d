"""The current deployment: ``id``, ``name``, ``version``, ``flow_run_id``, ``parameters``.

flowbook runs flows where they are called and has no deployments, so ``id``, ``name`` and
``version`` are always ``None``. As in Prefect when a flow runs without a deployment,
``flow_run_id`` is the current flow run's id and ``parameters`` its parameters (``None`` and
``{}`` outside a flow run).

``FLOWBOOK__RUNTIME__DEPLOYMENT__{KEY}`` mocks an attribute (``flowbook.runtime._mock``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowbook.engine.runs import current_flow_run
from flowbook.runtime import _mock


def _flow_run_id() -> str | None:
    run = current_flow_run.get()
    return run.id if run is not None else None


def _parameters() -> dict[str, Any]:
    run = current_flow_run.get()
    return dict(run.parameters) if run is not None else {}


def _none() -> None:
    return None


_FIELDS: dict[str, Callable[[], Any]] = {
    "flow_run_id": _flow_run_id,
    "id": _none,
    "name": _none,
    "parameters": _parameters,
    "version": _none,
}

# Served by the module __getattr__ below, read when accessed.
__all__ = sorted(_FIELDS)


def __getattr__(attr: str) -> Any:
    return _mock.read(__name__, "deployment", attr, _FIELDS)


def __dir__() -> list[str]:
    return sorted(_FIELDS)
