"""The current run's context by the names Prefect 1 used: ``flowbook.context``.

Prefect 1 code reads it three ways, and all three work here: ``flowbook.context.get("logger")``,
``flowbook.context.flow_name`` and ``flowbook.context["flow_name"]``. ``with
flowbook.context(key=value):`` adds values of one's own for the block (they travel with the
task runs started inside it to their threads, as every run's context does, but not to Dask
worker processes).

The values are not stored anywhere: each one is read, when asked for, from the run records of
the current thread or coroutine (``flowbook.engine.runs``), so they are always those of the
run that asks. The keys, and what they are here (docs/prefect1.md has the same table):

| key | inside a flow run | inside a task run |
|---|---|---|
| ``logger`` | the run logger (outside runs: the ``flowbook`` logger) | the task run's logger |
| ``flow_name`` ``flow_run_name`` ``flow_run_id`` | the flow run's | of the task's flow run |
| ``parameters`` | the flow run's parameters | the flow run's parameters, as in Prefect 1 |
| ``date`` | the flow run's start, an aware UTC ``datetime`` | the flow run's |
| ``today`` ``yesterday`` ``tomorrow`` | ``date``'s day, -1, +1 as ``YYYY-MM-DD`` | same |
| ``today_nodash`` ... ``tomorrow_nodash`` | the same as ``YYYYMMDD`` | same |
| ``scheduled_start_time`` | ``date`` (runs start when asked; there are no schedules) | same |
| ``running_with_backend`` | ``False`` | ``False`` |
| ``resume`` | whether the run resumes an earlier one (``Flow.resume``) | same |
| ``config`` | flowbook's ``Settings`` | same |
| ``task_name`` ``task_run_name`` ``task_run_id`` | absent | the task run's |
| ``task_full_name`` | absent | ``name[i]`` for a mapped run, else the name |
| ``task_slug`` | absent | the task's identity (module or notebook + qualified name) |
| ``task_tags`` | absent | the task run's tags, a set |
| ``task_run_count`` | absent | the attempt: 1, then 2 on the first retry, ... |
| ``map_index`` | absent | the run's index in its ``.map()``, else ``None`` |
| ``tags`` ``run_count`` | the flow run's | the task run's (flowbook's own names) |

``flow_id``, ``task_id``, ``flow_run_version``, ``task_run_version``, ``task_loop_count`` and
``task_loop_result`` (Prefect 1's server and ``LOOP`` signal) are absent: ``get`` gives the
default. Outside runs only ``logger`` and one's own values are present.

Prefect 3's run context objects are here too: ``FlowRunContext.get()`` and
``TaskRunContext.get()`` give the current flow run's or task run's context, or ``None``
outside one (never raising); ``get_run_context()`` gives the task run's context inside a task
run, else the flow run's, and raises ``MissingContextError`` outside runs. A context object is
built when asked for, from the run records (``flowbook.engine.runs``): runs never make one.
Its ``flow_run``/``task_run`` are those records themselves (the objects state hooks receive),
so what they say is always current.

``with_context(fn)`` (Prefect 3's helper) wraps ``fn`` to run with the current run's context
in a process the user starts (``multiprocessing``, ``ProcessPoolExecutor``): there
``get_run_logger()`` logs to this run (``flowbook._carried_context``).
"""

from __future__ import annotations

import contextlib as _contextlib
import datetime as _dt
import sys as _sys
import types as _types
from collections.abc import Iterator as _Iterator
from contextvars import ContextVar as _ContextVar
from typing import Any as _Any

from flowbook._carried_context import with_context
from flowbook.engine.runs import FlowRun as _FlowRun
from flowbook.engine.runs import TaskRun as _TaskRun
from flowbook.engine.runs import current_flow_run as _current_flow_run
from flowbook.engine.runs import current_task_run as _current_task_run

__all__ = [
    "FlowRunContext",
    "RunContext",
    "TaskRunContext",
    "get",
    "get_run_context",
    "to_dict",
    "with_context",
]

# values given with ``with flowbook.context(...)``; a new dict per block, never mutated
_user_values: _ContextVar[dict[str, _Any]] = _ContextVar(
    "flowbook_user_context",
    default={},  # noqa: B039 - never mutated: each block sets a new dict
)

_MISSING: _Any = object()
_UTC = _dt.timezone.utc  # datetime.UTC is Python 3.11+

# keys with a value in any flow run (task keys are added inside task runs)
_FLOW_KEYS = (
    "flow_name", "flow_run_name", "flow_run_id", "parameters", "date", "today", "yesterday",
    "tomorrow", "today_nodash", "yesterday_nodash", "tomorrow_nodash", "scheduled_start_time",
    "running_with_backend", "resume", "config", "tags", "run_count",
)  # fmt: skip
_TASK_KEYS = (
    "task_name", "task_full_name", "task_slug", "task_tags", "task_run_id", "task_run_name",
    "task_run_count", "map_index",
)  # fmt: skip


def _start_date(flow_run: _Any, user: dict[str, _Any]) -> _dt.datetime:
    given = user.get("date")
    if isinstance(given, _dt.datetime):
        return given if given.tzinfo else given.replace(tzinfo=_UTC)
    if isinstance(given, str):
        with _contextlib.suppress(ValueError):
            parsed = _dt.datetime.fromisoformat(given)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=_UTC)
    started = getattr(flow_run, "start_s", None) or getattr(flow_run, "created_s", None)
    if started is None:
        return _dt.datetime.now(_UTC)
    return _dt.datetime.fromtimestamp(started, _UTC)


def _flow_value(key: str, flow_run: _Any, user: dict[str, _Any]) -> _Any:
    if key in ("flow_name", "parameters", "tags", "run_count"):
        return getattr(flow_run, key)
    if key == "flow_run_name":
        return flow_run.name
    if key == "flow_run_id":
        return flow_run.id
    if key == "running_with_backend":
        return False
    if key == "resume":
        return getattr(flow_run, "resumed_from", None) is not None
    if key == "config":
        from flowbook.settings import get_settings

        return get_settings()
    date = _start_date(flow_run, user)
    if key in ("date", "scheduled_start_time"):
        return date
    day = {"today": 0, "yesterday": -1, "tomorrow": 1}[key.removesuffix("_nodash")]
    return (date + _dt.timedelta(days=day)).strftime(
        "%Y%m%d" if key.endswith("_nodash") else "%Y-%m-%d"
    )


def _task_value(key: str, task_run: _Any) -> _Any:
    group = task_run.map_group
    if key == "map_index":
        return group[2] if group is not None else None
    if key == "task_full_name":
        name = task_run.task_name
        return f"{name}[{group[2]}]" if group is not None else name
    if key == "task_name":
        return task_run.task_name
    if key == "task_slug":
        task = task_run.task
        return getattr(task, "task_key", None) or task_run.task_name
    if key == "task_tags":
        return set(task_run.tags)
    if key == "task_run_id":
        return task_run.id
    if key == "task_run_name":
        return task_run.name
    if key == "task_run_count" or key == "run_count":
        return task_run.run_count
    if key == "tags":
        return tuple(task_run.tags)
    raise KeyError(key)


def _lookup(key: str) -> _Any:
    """The value of ``key`` here, or ``_MISSING``."""
    # the run's own values win over one's own, as Prefect 1's runners overwrote them; the
    # start date and time are the exceptions (Prefect 1 let them be given)
    user = _user_values.get()
    if (
        key in user
        and key in ("date", "scheduled_start_time")
        and (key == "scheduled_start_time" or _current_flow_run.get() is None)
    ):
        return user[key]
    flow_run = _current_flow_run.get()
    task_run = _current_task_run.get()
    if key == "logger":
        from flowbook.logging import get_run_logger, plain_logger

        return get_run_logger() if (task_run or flow_run) is not None else plain_logger()
    if task_run is not None and (key in _TASK_KEYS or key in ("tags", "run_count")):
        return _task_value(key, task_run)
    if flow_run is not None and key in _FLOW_KEYS:
        return _flow_value(key, flow_run, user)
    return user.get(key, _MISSING)


def get(key: str, default: _Any = None) -> _Any:
    """The value of ``key`` in the current run's context, or ``default`` when it has none
    (see the module's table of keys)."""
    value = _lookup(key)
    return default if value is _MISSING else value


def to_dict() -> dict[str, _Any]:
    """Every key with a value here, and its value."""
    keys = ["logger", *_user_values.get()]
    if _current_flow_run.get() is not None:
        keys += _FLOW_KEYS
    if _current_task_run.get() is not None:
        keys += _TASK_KEYS
    out: dict[str, _Any] = {}
    for key in keys:
        value = _lookup(key)
        if value is not _MISSING:
            out[key] = value
    return out


class _ContextModule(_types.ModuleType):
    """This module, made callable and subscriptable as Prefect 1's ``prefect.context`` was."""

    def __getattr__(self, key: str) -> _Any:
        # only called for names the module itself does not define
        if key.startswith("__"):
            raise AttributeError(key)
        value = _lookup(key)
        if value is _MISSING:
            where = (
                "inside task runs"
                if key in _TASK_KEYS
                else "inside flow runs"
                if key in _FLOW_KEYS
                else None
            )
            hint = (
                f"it has a value only {where}"
                if where
                else "it is not one of the keys flowbook provides (see help(flowbook.context))"
            )
            raise AttributeError(
                f"flowbook.context has no {key!r} here: {hint}; "
                f"flowbook.context.get({key!r}) gives None instead of raising"
            )
        return value

    def __getitem__(self, key: str) -> _Any:
        value = _lookup(key)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and _lookup(key) is not _MISSING

    @_contextlib.contextmanager
    def __call__(self, *args: _Any, **kwargs: _Any) -> _Iterator[_types.ModuleType]:
        """``with flowbook.context({"a": 1}, b=2):`` adds those values for the block."""
        values = {**_user_values.get(), **dict(*args, **kwargs)}
        token = _user_values.set(values)
        try:
            yield self
        finally:
            _user_values.reset(token)


# -- Prefect 3's run context objects ---------------------------------------------------------


class RunContext:
    """What flow run and task run contexts share: ``start_time``, ``parameters``,
    ``log_prints`` (the base class of Prefect's two run contexts)."""

    __slots__ = ("_run",)

    def __init__(self, run: _FlowRun | _TaskRun) -> None:
        self._run = run

    @property
    def start_time(self) -> _dt.datetime:
        """When the run started (before its first attempt, when it was created), UTC."""
        run = self._run
        started = run.start_s if run.start_s is not None else run.created_s
        return _dt.datetime.fromtimestamp(started, _UTC)

    @property
    def parameters(self) -> dict[str, _Any]:
        """The run's parameters by name (a copy)."""
        return dict(self._run.parameters)

    @property
    def log_prints(self) -> bool:
        return self._run.log_prints

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RunContext) and type(other) is type(self) and other._run is self._run
        )

    def __hash__(self) -> int:
        return hash((type(self), id(self._run)))


class FlowRunContext(RunContext):
    """The context of the current flow run: ``FlowRunContext.get()`` (``None`` outside one).

    Inside a task run it is the task's flow run's context, as in Prefect. On Dask workers and
    in processes started with ``with_context`` there is none (``None``): the flow run stays
    in the kernel, as Prefect does not send its flow run context to distributed workers.
    """

    __slots__ = ()
    _run: _FlowRun

    @classmethod
    def get(cls) -> FlowRunContext | None:
        run = _current_flow_run.get()
        # workers and child processes hold a picture of the flow run, not its record
        return cls(run) if isinstance(run, _FlowRun) else None

    @property
    def flow_run(self) -> _FlowRun:
        """The flow run's record: ``id``, ``name``, ``flow_name``, ``parameters``, ``tags``,
        ``run_count``, ``state``."""
        return self._run

    @property
    def flow(self) -> _Any:
        """The ``Flow`` that runs."""
        return self._run.flow

    @property
    def task_runner(self) -> _Any:
        """The flow run's task runner (``None`` before the run enters it)."""
        return self._run.task_runner

    @property
    def persist_result(self) -> bool | None:
        return self._run.flow.persist_result

    @property
    def detached(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"FlowRunContext(flow_run={self._run!r})"


class TaskRunContext(RunContext):
    """The context of the current task run: ``TaskRunContext.get()`` (``None`` outside one)."""

    __slots__ = ()
    _run: _TaskRun

    @classmethod
    def get(cls) -> TaskRunContext | None:
        run = _current_task_run.get()
        return cls(run) if isinstance(run, _TaskRun) else None

    @property
    def task_run(self) -> _TaskRun:
        """The task run's record: ``id``, ``name``, ``task_name``, ``parameters``, ``tags``,
        ``run_count``, ``flow_run_id``, ``state``."""
        return self._run

    @property
    def task(self) -> _Any:
        """The ``Task`` that runs."""
        return self._run.task

    @property
    def persist_result(self) -> bool | None:
        task = self._run.task
        return task.persist_result if task is not None else None

    def __repr__(self) -> str:
        return f"TaskRunContext(task_run={self._run!r})"


def get_run_context() -> FlowRunContext | TaskRunContext:
    """The current task run's context inside a task run, else the current flow run's.

    Raises ``MissingContextError`` outside flow and task runs (``FlowRunContext.get()`` and
    ``TaskRunContext.get()`` give ``None`` instead). A flow called inside a task runs with
    no task run of its own in context, so its body gets its flow run's context, as in Prefect.
    """
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        return task_ctx
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None:
        return flow_ctx
    from flowbook.exceptions import MissingContextError

    raise MissingContextError(
        "get_run_context() was called outside a flow or task run; call it inside a function "
        "decorated with @flow or @task, or use FlowRunContext.get() / TaskRunContext.get(), "
        "which give None outside runs"
    )


_sys.modules[__name__].__class__ = _ContextModule
