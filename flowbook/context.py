"""The current run context, also in the Prefect 1 form ``flowbook.context.get("logger")``."""

from __future__ import annotations

from typing import Any

from flowbook.engine.runs import current_flow_run, current_task_run

__all__ = ["get"]


def get(key: str, default: Any = None) -> Any:
    """A value of the current run's context, by the names Prefect 1 used.

    Keys: ``logger`` (the run logger; outside runs the ``flowbook`` logger), ``flow_name``,
    ``flow_run_name``, ``flow_run_id``, ``task_name``, ``task_run_name``, ``task_run_id``,
    ``parameters`` (of the task run if inside one, else of the flow run), ``tags``,
    ``run_count``.
    """
    from flowbook.logging import get_run_logger, plain_logger

    flow_run = current_flow_run.get()
    task_run = current_task_run.get()
    run = task_run or flow_run
    if key == "logger":
        return get_run_logger() if run is not None else plain_logger()
    values: dict[str, Any] = {}
    if flow_run is not None:
        values.update(
            flow_name=flow_run.flow.name,
            flow_run_name=flow_run.name,
            flow_run_id=flow_run.id,
            parameters=flow_run.parameters,
            tags=flow_run.tags,
            run_count=flow_run.run_count,
        )
    if task_run is not None:
        values.update(
            task_name=task_run.task_name,
            task_run_name=task_run.name,
            task_run_id=task_run.id,
            parameters=task_run.parameters,
            tags=task_run.tags,
            run_count=task_run.run_count,
        )
    return values.get(key, default)
