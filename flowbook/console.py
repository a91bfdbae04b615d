"""The console printer: Prefect-style run lines on stderr, for scripts and terminals.

An event subscriber. From state events it writes the engine's lines::

    12:00:00.000 | INFO    | flowbook.engine - Created flow run 'red-orca' for flow 'my-flow'
    12:00:00.100 | INFO    | Task run 'say_hello-0' - Finished in state Completed()
    12:00:00.200 | INFO    | Flow run 'red-orca' - Finished in state Completed('All states ...')

and from ``LogEmitted`` events the runs' own log lines, in the same format. It writes to the
``sys.stderr`` of the moment, so redirections and notebook output streams are honoured.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowbook.engine.events import FlowRunCreated, LogEmitted, StateChanged, TaskRunCreated, bus
from flowbook.engine.runs import FlowRun, TaskRun
from flowbook.exceptions import UpstreamTaskError
from flowbook.states import StateType

if TYPE_CHECKING:
    from flowbook.settings import Settings

__all__ = ["configure", "set_shown_elsewhere"]

_lock = threading.Lock()
_level = logging.INFO
# With console=auto: a predicate telling events of runs that a notebook widget shows
_shown_elsewhere: Callable[[Any], bool] | None = None
_console_mode = "auto"


def _stamp(ts: float) -> str:
    t = time.localtime(ts)
    return f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{int(ts * 1000) % 1000:03d}"


def _write(ts: float, level: int, who: str, message: str) -> None:
    line = f"{_stamp(ts)} | {logging.getLevelName(level):<7} | {who} - {message}\n"
    with _lock:
        stream = sys.stderr
        if stream is not None:
            stream.write(line)
            stream.flush()


def _who(run: FlowRun | TaskRun) -> str:
    return f"Task run {run.name!r}" if isinstance(run, TaskRun) else f"Flow run {run.name!r}"


def _on_flow_run_created(event: FlowRunCreated) -> None:
    if _level <= logging.INFO:
        run = event.flow_run
        _write(
            time.time(),
            logging.INFO,
            "flowbook.engine",
            f"Created flow run {run.name!r} for flow {run.flow.name!r}",
        )


def _on_task_run_created(event: TaskRunCreated) -> None:
    run = event.task_run
    if _level <= logging.DEBUG and run.flow_run is not None:
        _write(
            time.time(),
            logging.DEBUG,
            f"Flow run {run.flow_run.name!r}",
            f"Created task run {run.name!r} for task {run.task_name!r}",
        )


def _on_state_changed(event: StateChanged) -> None:
    state, run = event.state, event.run
    if state.name == "AwaitingRetry":
        if _level <= logging.INFO:
            _write(state.timestamp_s, logging.INFO, _who(run), state.message or "Awaiting retry")
        return
    if not state.is_final():
        if _level <= logging.DEBUG:
            _write(state.timestamp_s, logging.DEBUG, _who(run), f"Entered state {state.short()}")
        return
    exc = state.data if isinstance(state.data, BaseException) else None
    if (
        exc is not None
        and state.type is not StateType.CANCELLED
        and state.type is not StateType.COMPLETED  # an exception returned as a value
        and not isinstance(exc, UpstreamTaskError)
        and _level <= logging.ERROR
        and _owns_exception(run, exc)
    ):
        if isinstance(run, TaskRun):
            what, retries = "Task run", run.task.retries if run.task else 0
        else:
            what, retries = "Flow run", run.flow.retries
        tail = " - Retries are exhausted" if retries else ""
        tb = format_user_traceback(exc)
        _write(
            state.timestamp_s,
            logging.ERROR,
            _who(run),
            f"{what} failed with exception: {exc!r}{tail}\n{tb}",
        )
    level = logging.INFO if state.is_completed() else logging.ERROR
    if _level <= level:
        _write(state.timestamp_s, level, _who(run), f"Finished in state {state.short()}")


def _owns_exception(run: FlowRun | TaskRun, exc: BaseException) -> bool:
    """A flow that failed because a task failed does not print the task's traceback again."""
    if isinstance(run, TaskRun):
        return run.subflow_run is None
    return not any(r.state is not None and r.state.data is exc for r in run.task_runs)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def format_user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without flowbook's own frames in front of the user's code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__)).rstrip()


def _on_log(event: LogEmitted) -> None:
    record = event.record
    if record.levelno < _level:
        return
    who = getattr(record, "flowbook_run", None) or record.name
    message = record.getMessage()
    if record.exc_info and record.exc_info[0] is not None:
        message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
    _write(record.created, record.levelno, who, message)


_HANDLERS: dict[type[Any], Any] = {
    FlowRunCreated: _on_flow_run_created,
    TaskRunCreated: _on_task_run_created,
    StateChanged: _on_state_changed,
    LogEmitted: _on_log,
}


def _dispatch(event: Any) -> None:
    skip = _shown_elsewhere
    if skip is not None and _console_mode == "auto" and skip(event):
        return
    _HANDLERS[type(event)](event)


def configure(settings: Settings) -> None:
    """Subscribe or unsubscribe the printer according to ``settings``."""
    global _level, _console_mode
    _level = settings.logging_level_no
    _console_mode = settings.console
    bus.unsubscribe(_dispatch)
    if settings.console != "off":
        kinds: tuple[type[Any], ...] = (FlowRunCreated, StateChanged, LogEmitted)
        if _level <= logging.DEBUG:
            kinds += (TaskRunCreated,)
        bus.subscribe(kinds, _dispatch)


def set_shown_elsewhere(predicate: Callable[[Any], bool] | None) -> None:
    """With ``console=auto``, skip the events for which ``predicate(event)`` is true.

    A notebook front end that shows a run itself passes a predicate recognising that run's
    events, so the run is not printed a second time under its widget.
    """
    global _shown_elsewhere
    _shown_elsewhere = predicate
