"""Run logging: ``get_run_logger()``, ``log_prints`` and the bridge from records to events.

Run loggers are ordinary ``logging`` loggers (``flowbook.flow_runs``, ``flowbook.task_runs``)
wrapped in an adapter that stamps each record with its run, so users can add their own
handlers. One handler on the ``flowbook`` logger turns stamped records into ``LogEmitted``
events; the console printer, the store and the widget receive them from the event bus.

``log_prints=True`` replaces ``builtins.print`` once, process-wide, with a function that asks
the current context whether the running task or flow captures prints; if not, it is the
original ``print``. Looking at a context variable is all it costs other code.
"""

from __future__ import annotations

import builtins
import logging
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from flowbook.engine.events import LogEmitted, bus
from flowbook.engine.runs import FlowRun, TaskRun, current_flow_run, current_task_run
from flowbook.exceptions import MissingContextError

if TYPE_CHECKING:
    from flowbook.settings import Settings

# Prefect's import path for run loggers (``prefect.logging.loggers``) names this module too
sys.modules.setdefault(f"{__name__}.loggers", sys.modules[__name__])

__all__ = ["RunLogger", "flow_run_logger", "get_logger", "get_run_logger", "task_run_logger"]

ROOT = logging.getLogger("flowbook")
_FLOW_LOGGER = logging.getLogger("flowbook.flow_runs")
_TASK_LOGGER = logging.getLogger("flowbook.task_runs")


class RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose records carry the run they come from."""

    def __init__(self, logger: logging.Logger, run: FlowRun | TaskRun) -> None:
        if isinstance(run, TaskRun):
            flow_run_id = run.flow_run.id if run.flow_run else None
            extra = {
                "flowbook_run": f"Task run {run.name!r}",
                "flowbook_flow_run_id": flow_run_id,
                "flowbook_task_run_id": run.id,
            }
        else:
            extra = {
                "flowbook_run": f"Flow run {run.name!r}",
                "flowbook_flow_run_id": run.id,
                "flowbook_task_run_id": None,
            }
        super().__init__(logger, extra)
        self.run = run

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        given = kwargs.get("extra")
        kwargs["extra"] = {**given, **(self.extra or {})} if given else self.extra
        return msg, kwargs


def get_run_logger() -> RunLogger:
    """The logger of the current task run, or of the current flow run outside tasks."""
    from flowbook._setup import ensure_configured

    ensure_configured()
    task_run = current_task_run.get()
    if task_run is not None:
        return RunLogger(_TASK_LOGGER, task_run)
    flow_run = current_flow_run.get()
    if flow_run is not None:
        return RunLogger(_FLOW_LOGGER, flow_run)
    raise MissingContextError(
        "get_run_logger() was called outside a flow or task run; call it inside a function "
        "decorated with @flow or @task, or use logging.getLogger(__name__) elsewhere"
    )


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


def install(settings: Settings) -> None:
    """Attach the bridge handler to the ``flowbook`` logger and set its level."""
    if _bridge not in ROOT.handlers:
        ROOT.addHandler(_bridge)
    ROOT.setLevel(settings.logging_level_no)


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
