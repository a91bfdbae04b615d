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
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowbook import _run_lines

# one formatter for every traceback flowbook shows or stores; its name stays importable here
from flowbook._tracebacks import format_exc_info
from flowbook._tracebacks import format_user_traceback as format_user_traceback
from flowbook.engine.events import FlowRunCreated, LogEmitted, StateChanged, TaskRunCreated, bus

if TYPE_CHECKING:
    from flowbook.settings import Settings

__all__ = ["configure", "set_shown_elsewhere", "writing"]

_lock = threading.Lock()
_level = logging.INFO
# With console=auto: a predicate telling events of runs that a notebook widget shows
_shown_elsewhere: Callable[[Any], bool] | None = None
_console_mode = "auto"


def _stamp(ts: float) -> str:
    t = time.localtime(ts)
    return f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{int(ts * 1000) % 1000:03d}"


# set on the thread writing a console line: a notebook's output routing leaves those writes
# to the cell's output instead of storing them as the run's printed text (they are stored as
# the engine's or the run's own lines already)
_writing = threading.local()


def writing() -> bool:
    """True while this thread writes a console line."""
    return getattr(_writing, "on", False)


def _write(ts: float, level: int, who: str, message: str) -> None:
    line = f"{_stamp(ts)} | {logging.getLevelName(level):<7} | {who} - {message}\n"
    with _lock:
        stream = sys.stderr
        if stream is not None:
            _writing.on = True
            try:
                stream.write(line)
                stream.flush()
            finally:
                _writing.on = False


def _on_flow_run_created(event: FlowRunCreated) -> None:
    if _level <= logging.INFO and not _run_lines.silenced(event.flow_run):
        run = event.flow_run
        _write(
            time.time(),
            logging.INFO,
            "flowbook.engine",
            _run_lines.created_flow_run_text(run.name, run.flow.name),
        )


def _on_task_run_created(event: TaskRunCreated) -> None:
    run = event.task_run
    if _level <= logging.DEBUG and run.flow_run is not None and not _run_lines.silenced(run):
        _write(
            time.time(),
            logging.DEBUG,
            f"Flow run {run.flow_run.name!r}",
            f"Created task run {run.name!r} for task {run.task_name!r}",
        )


def _on_state_changed(event: StateChanged) -> None:
    state, run = event.state, event.run
    if not state.is_final() and state.name != "AwaitingRetry":
        if _level <= logging.DEBUG and not _run_lines.silenced(run):
            _write(
                state.timestamp_s,
                logging.DEBUG,
                _run_lines.who(run),
                f"Entered state {state.short()}",
            )
        return
    if _level > logging.INFO and state.type._value_ == "COMPLETED":
        return  # the common end of a task run, told at INFO only: nothing to build
    for level, text in _run_lines.state_lines(run, state):
        if _level <= level:
            _write(state.timestamp_s, level, _run_lines.who(run), text)


def _on_log(event: LogEmitted) -> None:
    record = event.record
    if record.levelno < _level:
        return
    who = getattr(record, "flowbook_run", None) or record.name
    message = record.getMessage()
    if record.exc_info and record.exc_info[0] is not None:
        message += "\n" + format_exc_info(*record.exc_info)
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
