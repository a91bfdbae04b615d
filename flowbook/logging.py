"""Run logging: ``get_run_logger()``, ``log_prints`` and the bridge from records to events.

Run loggers are ordinary ``logging`` loggers (``flowbook.flow_runs``, ``flowbook.task_runs``)
wrapped in an adapter that stamps each record with its run, so users can add their own
handlers. One handler on the ``flowbook`` logger turns stamped records into ``LogEmitted``
events; the console printer, the store and the widget receive them from the event bus.

``log_prints=True`` replaces ``builtins.print`` once, process-wide, with a function that asks
the current context whether the running task or flow captures prints; if not, it is the
original ``print``. Looking at a context variable is all it costs other code.

``FLOWBOOK_LOGGING_EXTRA_LOGGERS`` names other libraries' loggers: one handler, attached to
each, turns their records emitted inside a run into that run's ``LogEmitted`` events (stamped
like ``get_run_logger()`` records, on a copy so the library's record is left as it was).
Outside a run it does nothing, and ``install`` moves it to the loggers of the settings in force
so that reloading the settings neither duplicates nor leaves it behind.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import sys
import threading
import weakref
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from flowbook.engine.events import LogEmitted, bus
from flowbook.engine.runs import FlowRun, TaskRun, current_flow_run, current_task_run
from flowbook.exceptions import MissingContextError

if TYPE_CHECKING:
    from flowbook.settings import Settings

# Prefect's import path for run loggers (``prefect.logging.loggers``) names this module too
sys.modules.setdefault(f"{__name__}.loggers", sys.modules[__name__])

__all__ = [
    "RunLogger",
    "disable_run_logger",
    "flow_run_logger",
    "get_logger",
    "get_run_logger",
    "task_run_logger",
]

ROOT = logging.getLogger("flowbook")
_FLOW_LOGGER = logging.getLogger("flowbook.flow_runs")
_TASK_LOGGER = logging.getLogger("flowbook.task_runs")


class _Handling(threading.local):
    """``depth`` > 0 while this thread's logging handlers handle a run's record."""

    depth = 0


# read by the notebook's output routing (flowbook.jupyter.extension): what a handler writes to
# ``sys.stderr`` while handling a run's record is that record, which the store and the widget
# keep as a log line already, however deep in the handler the write is
handling_run_record = _Handling()


def _marking(call_handlers: Any) -> Any:
    """``Logger.callHandlers`` of a run logger, marking the thread while the handlers (its own
    and its ancestors', the root's included) handle a record stamped with a run."""

    def callHandlers(record: logging.LogRecord) -> None:
        if getattr(record, "flowbook_run", None) is None:
            call_handlers(record)
            return
        handling_run_record.depth += 1
        try:
            call_handlers(record)
        finally:
            handling_run_record.depth -= 1

    callHandlers.flowbook_unmarked = call_handlers  # type: ignore[attr-defined]
    return callHandlers


for _logger in (_FLOW_LOGGER, _TASK_LOGGER):
    # one layer, a reload of this module included
    _unmarked = getattr(_logger.callHandlers, "flowbook_unmarked", _logger.callHandlers)
    _logger.callHandlers = _marking(_unmarked)  # type: ignore[method-assign]


class RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose records carry the run they come from."""

    def __init__(self, logger: logging.Logger, run: FlowRun | TaskRun) -> None:
        super().__init__(logger, _run_stamp(run))
        self.run = run

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        given = kwargs.get("extra")
        kwargs["extra"] = {**given, **(self.extra or {})} if given else self.extra
        return msg, kwargs


def _run_stamp(run: FlowRun | TaskRun) -> dict[str, Any]:
    """The attributes that tie a record to ``run`` (read by the console, store and widget)."""
    if isinstance(run, TaskRun):
        return {
            "flowbook_run": f"Task run {run.name!r}",
            "flowbook_flow_run_id": run.flow_run.id if run.flow_run else None,
            "flowbook_task_run_id": run.id,
        }
    return {
        "flowbook_run": f"Flow run {run.name!r}",
        "flowbook_flow_run_id": run.id,
        "flowbook_task_run_id": None,
    }


def get_run_logger() -> RunLogger | logging.Logger:
    """The logger of the current task run, or of the current flow run outside tasks.

    Outside runs it raises ``MissingContextError``, except inside ``disable_run_logger()``,
    where it gives a disabled logger (so a task's function can be tested with ``.fn()``)."""
    from flowbook._setup import ensure_configured

    ensure_configured()
    task_run = current_task_run.get()
    if task_run is not None:
        return RunLogger(_TASK_LOGGER, task_run)
    flow_run = current_flow_run.get()
    if flow_run is not None:
        return RunLogger(_FLOW_LOGGER, flow_run)
    if _FLOW_LOGGER.disabled and _TASK_LOGGER.disabled:
        return _NULL_LOGGER
    raise MissingContextError(
        "get_run_logger() was called outside a flow or task run; call it inside a function "
        "decorated with @flow or @task, use logging.getLogger(__name__) elsewhere, or call "
        "the function inside `with disable_run_logger():` (flowbook.logging) to test it"
    )


# what get_run_logger() gives outside runs inside disable_run_logger(): drops every record
_NULL_LOGGER = logging.getLogger("flowbook.disabled_run_logger")
_NULL_LOGGER.disabled = True


@contextlib.contextmanager
def disable_run_logger() -> Iterator[None]:
    """Disable the run loggers (``flowbook.flow_runs``, ``flowbook.task_runs``) for the block.

    For tests of a task's or flow's function called with ``.fn()``: there
    ``get_run_logger()`` gives a disabled logger instead of raising. Runs inside the block
    log nothing through their run loggers (nor their captured prints), in any thread: the
    loggers are the process's. On leaving, each logger is as it was.
    """
    was = _FLOW_LOGGER.disabled, _TASK_LOGGER.disabled
    _FLOW_LOGGER.disabled = _TASK_LOGGER.disabled = True
    try:
        yield
    finally:
        _FLOW_LOGGER.disabled, _TASK_LOGGER.disabled = was


def flow_run_logger(flow_run: FlowRun, flow: Any = None, **kwargs: Any) -> RunLogger:
    """The logger of ``flow_run``, wherever it is called (a state hook runs outside the run's
    context, so ``get_run_logger()`` cannot find it there). ``flow`` is accepted for
    compatibility: the run knows its flow. ``kwargs`` are added to every record."""
    return _run_logger(_FLOW_LOGGER, flow_run, FlowRun, "flow_run_logger", kwargs)


def task_run_logger(
    task_run: TaskRun, task: Any = None, flow_run: Any = None, flow: Any = None, **kwargs: Any
) -> RunLogger:
    """The logger of ``task_run`` (see ``flow_run_logger``); ``task``, ``flow_run`` and
    ``flow`` are accepted for compatibility: the run knows them."""
    return _run_logger(_TASK_LOGGER, task_run, TaskRun, "task_run_logger", kwargs)


def _run_logger(
    logger: logging.Logger, run: Any, kind: type[Any], name: str, extra: dict[str, Any]
) -> RunLogger:
    if not isinstance(run, kind):
        raise TypeError(
            f"{name}() takes a {kind.__name__} (the run a hook is given), not {run!r} of "
            f"type {type(run).__name__}"
        )
    from flowbook._setup import ensure_configured

    ensure_configured()
    adapter = RunLogger(logger, run)
    if extra:
        adapter.extra = {**extra, **(adapter.extra or {})}
    return adapter


def get_logger(name: str | None = None) -> logging.Logger:
    """A plain logger with flowbook's configuration, usable anywhere: ``flowbook`` or
    ``flowbook.<name>``. Its records belong to no run (as Prefect's ``get_logger``)."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"get_logger() takes a logger name (a str), not {name!r}")
    root = plain_logger()
    return root.getChild(name) if name else root


def plain_logger() -> logging.Logger:
    from flowbook._setup import ensure_configured

    ensure_configured()
    return ROOT


class _EventBridge(logging.Handler):
    """Turns records of the ``flowbook`` logger tree into ``LogEmitted`` events."""

    def emit(self, record: logging.LogRecord) -> None:
        if bus.wants(LogEmitted):
            bus.emit(
                LogEmitted(
                    record,
                    getattr(record, "flowbook_flow_run_id", None),
                    getattr(record, "flowbook_task_run_id", None),
                )
            )


_bridge = _EventBridge()


class _ExtraLoggersBridge(logging.Handler):
    """Records of the loggers ``FLOWBOOK_LOGGING_EXTRA_LOGGERS`` names, emitted inside a run,
    as ``LogEmitted`` events of that run; outside a run, nothing."""

    def __init__(self) -> None:
        super().__init__()
        # the record this thread handled last: a record of ``a.b`` reaches the handler once
        # on ``a.b`` and again on ``a`` when both are named (a weak reference: the record and
        # its arguments are not kept alive)
        self._last = threading.local()
        # FLOWBOOK_LOGGING_LEVEL, for run log lines only: the handler's own level stays NOTSET
        # so that records outside runs still reach _last_resort
        self.run_level = logging.INFO

    def emit(self, record: logging.LogRecord) -> None:
        last = getattr(self._last, "record", None)
        if last is not None and last() is record:
            return
        self._last.record = weakref.ref(record)
        run: FlowRun | TaskRun | None = current_task_run.get() or current_flow_run.get()
        if run is None:
            _last_resort(record)
            return
        if record.levelno >= self.run_level and bus.wants(LogEmitted):
            copy = logging.makeLogRecord(record.__dict__)
            stamp = _run_stamp(run)
            copy.__dict__.update(stamp)
            bus.emit(LogEmitted(copy, stamp["flowbook_flow_run_id"], stamp["flowbook_task_run_id"]))


def _last_resort(record: logging.LogRecord) -> None:
    """What ``logging`` does for a record no handler takes (``logging.lastResort``: WARNING
    and above to stderr); attaching the handler must not silence it outside runs."""
    resort = logging.lastResort
    if resort is None or record.levelno < resort.level:
        return
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(h is not _extra_bridge for h in logger.handlers):
            return
        if not logger.propagate:
            break
        logger = logger.parent
    resort.handle(record)


_extra_bridge = _ExtraLoggersBridge()
_extra_attached: tuple[str, ...] = ()


def install(settings: Settings) -> None:
    """Attach the bridge handler to the ``flowbook`` logger and set its level; attach the
    extra loggers' handler to the loggers the settings name (and to no other)."""
    global _extra_attached
    if _bridge not in ROOT.handlers:
        ROOT.addHandler(_bridge)
    ROOT.setLevel(settings.logging_level_no)
    names = settings.logging_extra_loggers
    for name in _extra_attached:
        if name not in names:
            logging.getLogger(name).removeHandler(_extra_bridge)
    for name in names:
        logging.getLogger(name).addHandler(_extra_bridge)  # a no-op if attached already
    _extra_attached = names
    # the level of run log lines; the library's own logger level still decides first which
    # records exist, as in Prefect
    _extra_bridge.run_level = settings.logging_level_no


# -- print capture ---------------------------------------------------------------------------

_original_print = builtins.print
_print_patched = False


def _capturing_print(
    *values: object,
    sep: str | None = " ",
    end: str | None = "\n",
    file: Any = None,
    flush: bool = False,
) -> None:
    run: FlowRun | TaskRun | None = current_task_run.get() or current_flow_run.get()
    if run is None or not run.log_prints or (file is not None and file is not sys.stdout):
        _original_print(*values, sep=sep, end=end, file=file, flush=flush)
        return
    text = (" " if sep is None else sep).join(str(v) for v in values)
    get_run_logger().info(text.rstrip("\r\n"))


def enable_print_capture() -> None:
    """Install the capturing ``print`` (idempotent); runs with ``log_prints`` use it."""
    global _print_patched
    if not _print_patched:
        builtins.print = _capturing_print
        _print_patched = True
