"""The engine's own run lines, made from state changes: one text for every place that shows them.

The console printer, the notebook's run widget and the run store all tell a run's state
changes as the same lines::

    Task run 'explode-0' - Task run failed with exception: ValueError('bad') - Retries ...
    Task run 'explode-0' - Finished in state Failed('Task run encountered an exception ...')
    Flow run 'red-orca' - Finished in state Cancelled('Cancelled by the user.')

``state_lines(run, state)`` gives them, with their levels: a completed state at INFO, a
cancelled one at WARNING (a cancel is something the user asked for, not a failure), a retry at
WARNING, a failure or a crash at ERROR, preceded by the exception and its traceback when the run
owns it (a flow run that failed because a task run failed does not repeat the task's
traceback). ``finished_text`` builds the "Finished in state ..." text from a state's stored
fields, so that the store can tell a completed task run's line from its row alone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flowbook.engine.runs import FlowRun, TaskRun
from flowbook.exceptions import UpstreamTaskError
from flowbook.states import _DEFAULT_NAMES

if TYPE_CHECKING:
    from flowbook.states import State

__all__ = [
    "created_flow_run_text",
    "finished_text",
    "level_of",
    "safe_repr",
    "silenced",
    "state_lines",
    "who",
]

# the run loggers (flowbook.logging): ``disable_run_logger()`` disables them
_FLOW_LOGGER = logging.getLogger("flowbook.flow_runs")
_TASK_LOGGER = logging.getLogger("flowbook.task_runs")

_LEVELS = {"COMPLETED": logging.INFO, "CANCELLED": logging.WARNING}


def who(run: FlowRun | TaskRun) -> str:
    """The name a run's lines carry: ``Task run 'name'`` or ``Flow run 'name'``."""
    return f"Task run {run.name!r}" if isinstance(run, TaskRun) else f"Flow run {run.name!r}"


def level_of(type_value: str) -> int:
    """The level of the line telling a run's final state of type ``type_value``."""
    return _LEVELS.get(type_value, logging.ERROR)


def finished_text(name: str, type_value: str, message: str | None) -> str:
    """``Finished in state Completed()``, from a state's name, type and message."""
    parts = [repr(message)] if message else []
    if name != _DEFAULT_NAMES[type_value]:
        parts.append(f"type={type_value}")
    return f"Finished in state {name}({', '.join(parts)})"


def created_flow_run_text(run_name: str, flow_name: str) -> str:
    return f"Created flow run {run_name!r} for flow {flow_name!r}"


def state_lines(run: FlowRun | TaskRun, state: State) -> list[tuple[int, str]]:
    """The engine's lines for ``run`` entering ``state``, as (level, text); none for a state
    that is neither final nor a retry, and none inside ``disable_run_logger()``."""
    if silenced(run):
        return []
    if state.name == "AwaitingRetry":
        return [(logging.INFO, state.message or "Awaiting retry")]  # INFO, as in Prefect 3
    type_value = state.type._value_
    if not state.is_final():
        return []
    lines: list[tuple[int, str]] = []
    exc = state.data if isinstance(state.data, BaseException) else None
    if (
        exc is not None
        and type_value in ("FAILED", "CRASHED")  # (a Completed state may return an exception)
        and not isinstance(exc, UpstreamTaskError)
        and _owns_exception(run, exc)
    ):
        from flowbook._tracebacks import format_user_traceback

        if isinstance(run, TaskRun):
            what, retries = "Task run", run.task.retries if run.task else 0
        else:
            what, retries = "Flow run", run.flow.retries
        tail = " - Retries are exhausted" if retries else ""
        try:  # (a broken __repr__ or traceback must not cost the "Finished" line)
            tb = format_user_traceback(exc)
        except Exception:
            tb = ""
        text = f"{what} failed with exception: {safe_repr(exc)}{tail}"
        lines.append((logging.ERROR, f"{text}\n{tb}" if tb else text))
    lines.append((level_of(type_value), finished_text(state.name, type_value, state.message)))
    return lines


def safe_repr(value: object) -> str:
    """``repr(value)``, or ``<unprintable T object>`` when its ``__repr__`` fails."""
    try:
        return repr(value)
    except Exception:
        return f"<unprintable {type(value).__name__} object>"


def silenced(run: FlowRun | TaskRun) -> bool:
    """True inside ``disable_run_logger()``: the run's lines are not told anywhere (console,
    widget, store), as its logger's records are not."""
    logger = _TASK_LOGGER if isinstance(run, TaskRun) else _FLOW_LOGGER
    return logger.disabled


def _owns_exception(run: FlowRun | TaskRun, exc: BaseException) -> bool:
    """A flow that failed because a task failed does not print the task's traceback again."""
    if isinstance(run, TaskRun):
        return run.subflow_run is None
    return not any(r.state is not None and r.state.data is exc for r in list(run.task_runs))
