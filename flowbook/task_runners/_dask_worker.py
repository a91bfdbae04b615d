"""The worker side of ``DaskTaskRunner``: one attempt of one task run, on a Dask worker.

The kernel submits ``run_attempt(spec, args, kwargs)`` for each attempt. Dask resolves the
upstream futures in ``args``/``kwargs`` on the cluster, so data passes from task to task
without visiting the kernel. Here the attempt runs the task's body with what a task run has
on a thread: ``flowbook.runtime`` answers for it, ``get_run_logger()`` works, the flow's
``env`` is set, ``log_prints`` is honoured and ``timeout_seconds`` applies.

Everything the kernel needs besides the value travels as Dask events on the run's topic
(``Worker.log_event``): ``start`` (with the worker's address, process and thread), ``out``
(text the task wrote to stdout or stderr), ``log`` (log records), and ``end`` (times and a
short preview of the value). They are plain msgpack-able dicts. The value itself stays in the
worker's memory as the Dask future's result until somebody asks for it.

A body that returns a state (``return Failed(...)``) ends its attempt with ``ReturnedState``
carrying it: Dask must not hand a state to dependent tasks as a value, and the kernel applies
the returned-state rules (a failed state fails the run and is retried, like on threads).

Nothing here touches a store or a console: a worker is not configured as a flowbook process.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from flowbook.engine.env import acquire_env, release_env
from flowbook.engine.interrupts import AsyncBody, Body, interrupt
from flowbook.engine.runs import TaskRun, current_flow_run, current_task_run
from flowbook.engine.task_engine import await_task, call_task
from flowbook.exceptions import RunInterrupted
from flowbook.states import State

if TYPE_CHECKING:
    from flowbook.tasks import Task

__all__ = [
    "AttemptSpec",
    "FlowRunInfo",
    "ReturnedState",
    "ignore_interrupts",
    "interrupt_task_runs",
    "run_attempt",
]


def ignore_interrupts(dask_worker: Any = None) -> None:
    """Make this worker process ignore SIGINT (set up by a worker plugin, on its main thread).

    Worker processes of a local cluster share the kernel's process group, so interrupting
    the kernel signals them too: the signal would stop a worker's event loop and leave its
    task threads running unsupervised. The kernel cancels its tasks itself, through Dask.
    """
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class FlowRunInfo:
    """What ``flowbook.runtime.flow_run`` tells inside a task run on a worker."""

    id: str
    name: str
    flow_name: str
    parameters: dict[str, Any]
    tags: tuple[str, ...]
    run_count: int
    project: str | None
    version: str | None
    parent_flow_run_id: str | None
    start_s: float | None
    log_prints: bool


@dataclass
class AttemptSpec:
    """Everything but the arguments that one attempt of a task run needs on a worker.

    The task travels pickled with cloudpickle by the kernel, so that a task defined in a
    notebook, a script, or a module registered with ``cloudpickle.register_pickle_by_value``
    reaches the workers by value, whatever Dask's own serialization chooses for the rest.
    """

    task_pickle: bytes
    task_run_id: str
    name: str
    tags: tuple[str, ...]
    dynamic_key: int
    run_count: int  # the attempt's number: 1 on the first try, 2 on the first retry
    log_prints: bool
    flow_run: FlowRunInfo | None
    env: dict[str, str] = field(default_factory=dict)
    topic: str = ""
    log_level: int = logging.INFO
    origin_pid: int = 0  # the submitting process: workers inside it are threads of the kernel
    map_group: tuple[str, int, int] | None = None  # for flowbook.context's map_index


class ReturnedState(Exception):
    """The task body returned ``state``: the kernel decides the run's final state from it."""

    def __init__(self, state: State) -> None:
        super().__init__(f"the task returned the state {state.short()}")
        self.state = state

    def __reduce__(self) -> tuple[Any, ...]:
        # states are not picklable themselves: the exception travels as the state's fields
        state = self.state
        fields = (state.type._value_, state.name, state.message, state.data, state.run_id)
        return (_returned_state, (*fields, state.timestamp_s))


def _returned_state(
    kind: str, name: str, message: str | None, data: Any, run_id: str | None, at: float
) -> ReturnedState:
    from flowbook.states import StateType

    state = State(StateType(kind), name, message, data, run_id=run_id, timestamp_s=at)
    return ReturnedState(state)


# -- what is running on this worker, for interrupts --------------------------------------------
_running_lock = threading.Lock()
_running: dict[str, Body | AsyncBody] = {}  # task run id -> its body
# Runs interrupted here: an attempt of one of them that starts later (its cancellation and
# the interrupt travel separately, so the worker may start it in between) stops at once.
_interrupted: dict[str, None] = {}
_INTERRUPTED_KEPT = 10_000


def interrupt_task_runs(task_run_ids: list[str]) -> int:
    """Stop the listed task runs' bodies on this worker (run by ``Client.run``).

    Their threads get ``RunInterrupted`` at their next Python instruction, and attempts of
    them that have not started yet will not run; the number of bodies interrupted is
    returned.
    """
    stopped = 0
    with _running_lock:
        for run_id in task_run_ids:
            _interrupted[run_id] = None
            if interrupt(_running.get(run_id), RunInterrupted):
                stopped += 1
        while len(_interrupted) > _INTERRUPTED_KEPT:
            del _interrupted[next(iter(_interrupted))]
    return stopped


# -- sending events to the kernel --------------------------------------------------------------
def _send(topic: str, msg: dict[str, Any]) -> None:
    if not topic:
        return
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not on a worker (a test calling run_attempt directly)
        return
    worker.log_event(topic, msg)


# -- stdout / stderr of task runs --------------------------------------------------------------
_current_spec: contextvars.ContextVar[AttemptSpec | None] = contextvars.ContextVar(
    "flowbook_worker_attempt", default=None
)


class _ForwardingStream(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr`` of a worker process.

    Text written by a flowbook task run (found through a context variable, so concurrent
    tasks on other threads are told apart) goes to the kernel a line at a time; anything
    else goes to the stream it replaced.
    """

    def __init__(self, original: TextIO, name: str) -> None:
        super().__init__()
        self.original = original
        self.stream_name = name
        self._partial: dict[str, str] = {}
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        spec = _current_spec.get()
        if spec is None:
            return self.original.write(text)
        with self._lock:
            buffered = self._partial.pop(spec.task_run_id, "") + text
            head, sep, tail = buffered.rpartition("\n")
            if tail:
                self._partial[spec.task_run_id] = tail
        if sep:
            _send(
                spec.topic,
                {"op": "out", "id": spec.task_run_id, "s": self.stream_name, "text": head + sep},
            )
        return len(text)

    def flush_run(self, spec: AttemptSpec) -> None:
        with self._lock:
            rest = self._partial.pop(spec.task_run_id, "")
        if rest:
            _send(
                spec.topic,
                {"op": "out", "id": spec.task_run_id, "s": self.stream_name, "text": rest},
            )

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")


class _ForwardingHandler(logging.Handler):
    """Sends records of the ``flowbook`` logger tree made inside a task run to the kernel."""

    def emit(self, record: logging.LogRecord) -> None:
        spec = _current_spec.get()
        if spec is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                from flowbook._tracebacks import format_exc_info

                message += "\n" + format_exc_info(*record.exc_info)
        except Exception:  # a bad format string must not break the task
            message = str(record.msg)
        _send(
            spec.topic,
            {
                "op": "log",
                "id": spec.task_run_id,
                "logger": record.name,
                "level": record.levelno,
                "msg": message,
                "t": record.created,
            },
        )


_install_lock = threading.Lock()
_streams: list[_ForwardingStream] = []


def _install() -> None:
    """Once per worker process: forwarding streams and the log handler.

    The process is also marked as configured, so that nothing in a task (``get_run_logger``)
    opens a store or a console printer here.
    """
    if _streams:
        return
    with _install_lock:
        if _streams:
            return
        from flowbook import _setup

        _setup.mark_configured()
        out = _ForwardingStream(sys.stdout, "stdout")
        err = _ForwardingStream(sys.stderr, "stderr")
        sys.stdout, sys.stderr = out, err
        root = logging.getLogger("flowbook")
        root.addHandler(_ForwardingHandler())
        root.propagate = False
        _streams.extend((out, err))


# -- one attempt --------------------------------------------------------------------------------
def _task_run(
    spec: AttemptSpec, task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TaskRun:
    run = TaskRun(task, None, args, kwargs, spec.dynamic_key)
    run.id = spec.task_run_id
    run.name = spec.name
    run.tags = spec.tags
    run.run_count = spec.run_count
    run.log_prints = spec.log_prints
    run.flow_run = spec.flow_run  # type: ignore[assignment]
    run.map_group = spec.map_group
    return run


def run_attempt(spec: AttemptSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run one attempt of a task run here, sending its events; returns the task's value."""
    if spec.origin_pid != os.getpid():
        _install()
        logging.getLogger("flowbook").setLevel(spec.log_level)
    # else: a worker thread of the kernel's own process (LocalCluster(processes=False)): logs
    # and prints reach the kernel's handlers and streams directly
    if spec.log_prints:
        from flowbook.logging import enable_print_capture

        enable_print_capture()
    import cloudpickle  # type: ignore[import-untyped]

    task: Task[..., Any] = cloudpickle.loads(spec.task_pickle)
    run = _task_run(spec, task, args, kwargs)
    label = f"task run {spec.name!r} on a Dask worker"
    start = time.time()
    _send(
        spec.topic,
        {
            "op": "start",
            "id": spec.task_run_id,
            "n": spec.run_count,
            "t": start,
            "pid": os.getpid(),
            "thread": threading.get_ident(),
            "worker": _worker_address(),
        },
    )
    context = contextvars.copy_context()
    acquire_env(label, spec.env)
    ok = False
    try:
        value = context.run(_call, spec, run, task)
        if isinstance(value, State):
            raise ReturnedState(value)
        ok = True
        return value
    finally:
        release_env(label, spec.env)
        for stream in _streams:
            stream.flush_run(spec)
        end: dict[str, Any] = {
            "op": "end",
            "id": spec.task_run_id,
            "n": spec.run_count,
            "t0": start,
            "t": time.time(),
            "ok": ok,
        }
        if ok:
            from flowbook._preview import preview

            end["preview"] = preview(value)
        _send(spec.topic, end)


def _call(spec: AttemptSpec, run: TaskRun, task: Task[..., Any]) -> Any:
    _current_spec.set(spec)
    current_task_run.set(run)
    current_flow_run.set(spec.flow_run)  # type: ignore[arg-type]

    def register(body: Body | AsyncBody | None) -> None:
        with _running_lock:
            if spec.task_run_id in _interrupted:
                raise RunInterrupted(f"task run {spec.name!r} was cancelled before it started")
            if body is not None:
                _running[spec.task_run_id] = body

    try:
        if task.is_async:
            return asyncio.run(await_task(task, run, register))
        return call_task(task, run, register)
    finally:
        with _running_lock:
            _running.pop(spec.task_run_id, None)


def _worker_address() -> str:
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:
        return ""
