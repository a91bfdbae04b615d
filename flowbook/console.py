"""The console printer: Prefect-style run lines on stderr, for scripts and terminals.

An event subscriber. From state events it writes the engine's lines::

    12:00:00.000 | INFO    | flowbook.engine - Created flow run 'red-orca' for flow 'my-flow'
    12:00:00.100 | INFO    | Task run 'say_hello-0' - Finished in state Completed()
    12:00:00.200 | INFO    | Flow run 'red-orca' - Finished in state Completed('All states ...')

and from ``LogEmitted`` events the runs' own log lines, in the same format. It writes to the
``sys.stderr`` of the moment, so redirections and notebook output streams are honoured.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowbook import _run_lines

# one formatter for every traceback flowbook shows or stores; its name stays importable here
from flowbook._tracebacks import format_exc_info
from flowbook._tracebacks import format_user_traceback as format_user_traceback
from flowbook.engine.events import (
    ALL_STATES,
    OTHER_STATES,
    FlowRunCreated,
    LogEmitted,
    StateChanged,
    TaskRunCreated,
    bus,
)
from flowbook.engine.runs import TaskRun

if TYPE_CHECKING:
    from flowbook.settings import Settings

__all__ = ["configure", "flush", "set_shown_elsewhere", "writing"]

_lock = threading.Lock()
_level = logging.INFO
# With console=auto: a predicate telling events of runs that a notebook widget shows
_shown_elsewhere: Callable[[Any], bool] | None = None
_console_mode = "auto"

# -- timestamps ----------------------------------------------------------------------------------
# "HH:MM:SS." of the second last formatted (time.localtime once a second, not once a line)
_stamp_second = -1
_stamp_prefix = ""


def _stamp(ts: float) -> str:
    global _stamp_second, _stamp_prefix
    second = int(ts)
    if second != _stamp_second:
        t = time.localtime(ts)
        _stamp_prefix = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}."
        _stamp_second = second
    return f"{_stamp_prefix}{int(ts * 1000) % 1000:03d}"


_LEVEL_NAMES = {
    level: f"{logging.getLevelName(level):<7}"
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
}


def _format(ts: float, level: int, who: Any, text: Any) -> str:
    """One console line. ``who`` is a run (a deferred completed task run's line, ``text`` its
    final state) or the line's source as text."""
    if not isinstance(who, str):
        state = text
        who = _run_lines.who(who)
        if state.message is None and state.name == "Completed":
            text = "Finished in state Completed()"
        else:
            text = _run_lines.finished_text(state.name, state.type._value_, state.message)
    name = _LEVEL_NAMES.get(level)
    if name is None:
        name = f"{logging.getLevelName(level):<7}"
    return f"{_stamp(ts)} | {name} | {who} - {text}\n"


# set on the thread writing a console line: a notebook's output routing leaves those writes
# to the cell's output instead of storing them as the run's printed text (they are stored as
# the engine's or the run's own lines already)
_writing = threading.local()


def writing() -> bool:
    """True while this thread writes a console line."""
    return getattr(_writing, "on", False)


# -- deferred lines ------------------------------------------------------------------------------
# The lines of task runs inside a flow run, printed to a plain file stream (a script's stderr,
# a terminal or a file), are not formatted nor written on the task's thread: the thread appends
# (stream, timestamp, level, who, text) to ``_pending`` and a writer thread formats and writes
# them in batches, one write and one flush each, at most ``_BATCH_S`` after the first line of a
# batch. The order of lines is the order of the appends and each line keeps the time of its
# event. Everything pending is written first whenever a line is written at once (a flow run's
# lines, any line to another kind of stream: a notebook's, a test's capture), when a top-level
# flow run ends (before its call returns), and at interpreter exit; so a flow call's lines are all
# out when it returns, and nothing the engine told is lost but by a kill within ``_BATCH_S``.
_BATCH_S = 0.02
_pending: deque[tuple[Any, float, int, Any, Any]] = deque()
_armed = False
_wake = threading.Event()
_writer: threading.Thread | None = None
# lines the stream refused (closed, full, a non-blocking pipe that was not ready): dropped
# whole, counted here (the store keeps the runs' lines)
dropped_lines = 0


def _arm() -> None:
    global _armed, _writer
    _armed = True
    if _writer is None or not _writer.is_alive():
        with _lock:
            if _writer is None or not _writer.is_alive():
                _writer = threading.Thread(
                    target=_writer_loop, name="flowbook-console", daemon=True
                )
                _writer.start()
    _wake.set()


def _writer_loop() -> None:
    while True:
        _wake.wait()
        time.sleep(_BATCH_S)  # let the batch gather
        try:
            flush()
        except Exception:  # a broken stream: its lines are dropped, the runs go on
            pass


def _take_pending() -> list[tuple[Any, float, int, Any, Any]]:
    """Everything pending, in order; disarms the writer (caller holds ``_lock``). A line
    appended after this arms it again."""
    global _armed
    if not _armed and not _pending:
        # nothing queued (a line queued right now arms the writer itself): every line
        # written at once passes here, and clearing the event takes its lock
        return []
    _armed = False
    _wake.clear()
    items = []
    pop = _pending.popleft
    try:
        while True:
            items.append(pop())
    except IndexError:
        pass
    return items


def _write_batch(items: list[tuple[Any, float, int, Any, Any]]) -> None:
    """Write ``items`` in order, one write and one flush per run of items of the same stream
    (no flush for a stream that sends what is written by itself; caller holds ``_lock``)."""
    global dropped_lines
    start = 0
    while start < len(items):
        stream = items[start][0]
        end = start
        lines = []
        while end < len(items) and items[end][0] is stream:
            _, ts, level, who, text = items[end]
            try:
                lines.append(_format(ts, level, who, text))
            except Exception:  # a broken __repr__ of a name: that line only
                lines.append(f"{_stamp(ts)} | {level} | <unprintable line>\n")
            end += 1
        _writing.on = True
        try:
            stream.write("".join(lines))
            if not _sends_itself(stream):
                stream.flush()
        except (OSError, ValueError):
            # closed, full or not ready: the lines are counted as dropped, and not written
            # again (what a stream took into its buffer before its flush failed stays there,
            # and goes out if the stream recovers: a full pipe that drains)
            dropped_lines += len(lines)
        finally:
            _writing.on = False
        start = end


def flush() -> None:
    """Write every pending console line now."""
    with _lock:
        items = _take_pending()
        if items:
            _write_batch(items)


def _flush_after_fork() -> None:
    """In a forked child: no line pending, no writer thread, fresh locks (another thread of
    the parent may have held them at the fork)."""
    global _lock, _writer, _armed, _wake
    _lock = threading.Lock()
    _wake = threading.Event()
    _pending.clear()
    _writer = None
    _armed = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_flush_after_fork)
atexit.register(flush)


def _deferred(ts: float, level: int, who: Any, text: Any) -> None:
    """A task run's line: appended for the writer thread when the stream is the process's
    own stderr (another stream, such as a file given to ``redirect_stderr``, may be closed
    before the writer comes to it: its lines are written at once)."""
    stream = sys.stderr
    if stream is sys.__stderr__ and type(stream) is io.TextIOWrapper:
        _pending.append((stream, ts, level, who, text))
        if not _armed:
            _arm()
    elif stream is not None:
        _write(ts, level, who, text)


def _write(ts: float, level: int, who: Any, text: Any) -> None:
    """Write a line now, after the pending ones: with those of the same stream in one write
    and one flush (a flow call's end writes its task runs' last lines and its own so)."""
    stream = sys.stderr
    if stream is None:
        return
    with _lock:
        items = _take_pending()
        items.append((stream, ts, level, who, text))
        _write_batch(items)


def _sends_itself(stream: Any) -> bool:
    """True for a Jupyter kernel's output stream (ipykernel's ``OutStream``): it sends what
    was written within its ``flush_interval`` (0.2 s) and before the cell's reply, and its
    ``flush()`` waits for the kernel's IO thread to send, a round trip per line (10,000 lines
    of a map with the widget off: 4 s instead of 0.4)."""
    kind = type(stream)
    known = _SENDS_ITSELF.get(kind)
    if known is None:
        known = _SENDS_ITSELF[kind] = kind.__module__.startswith("ipykernel.") and isinstance(
            getattr(stream, "flush_interval", None), (int, float)
        )
    return known


_SENDS_ITSELF: dict[type, bool] = {}


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
        _deferred(
            time.time(),
            logging.DEBUG,
            f"Flow run {run.flow_run.name!r}",
            f"Created task run {run.name!r} for task {run.task_name!r}",
        )


def _on_state_changed(event: StateChanged) -> None:
    state, run = event.state, event.run
    type_value = state.type._value_
    in_flow = isinstance(run, TaskRun) and run.flow_run is not None
    if type_value == "COMPLETED":
        # the common end of a task run: told at INFO, its text made by the writer
        if _level <= logging.INFO and not _run_lines.silenced(run):
            if in_flow:
                _deferred(state.timestamp_s, logging.INFO, run, state)
            else:
                _write(state.timestamp_s, logging.INFO, run, state)
        return
    if not state.is_final() and state.name != "AwaitingRetry":
        if _level <= logging.DEBUG and not _run_lines.silenced(run):
            (_deferred if in_flow else _write)(
                state.timestamp_s,
                logging.DEBUG,
                _run_lines.who(run),
                f"Entered state {state.short()}",
            )
        return
    out = _deferred if in_flow else _write
    for level, text in _run_lines.state_lines(run, state):
        if _level <= level:
            out(state.timestamp_s, level, _run_lines.who(run), text)


def _on_log(event: LogEmitted) -> None:
    record = event.record
    if record.levelno < _level:
        return
    who = getattr(record, "flowbook_run", None) or record.name
    message = record.getMessage()
    if record.exc_info and record.exc_info[0] is not None:
        message += "\n" + format_exc_info(*record.exc_info)
    if event.task_run_id is not None and event.flow_run_id is not None:
        _deferred(record.created, record.levelno, who, message)
    else:
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
    bus.remove_barrier(_barrier)
    flush()
    if settings.console != "off":
        kinds: tuple[type[Any], ...] = (FlowRunCreated, StateChanged, LogEmitted)
        states = OTHER_STATES  # above DEBUG, "Entered state ..." lines are not printed
        if _level <= logging.DEBUG:
            kinds += (TaskRunCreated,)
            states = ALL_STATES
        bus.subscribe(kinds, _dispatch, states=states)
        bus.add_barrier(_barrier)


def _barrier(flow_run: Any) -> None:
    """A top-level flow run ended: its lines are written before its call returns."""
    flush()


def set_shown_elsewhere(predicate: Callable[[Any], bool] | None) -> None:
    """With ``console=auto``, skip the events for which ``predicate(event)`` is true.

    A notebook front end that shows a run itself passes a predicate recognising that run's
    events, so the run is not printed a second time under its widget.
    """
    global _shown_elsewhere
    _shown_elsewhere = predicate
