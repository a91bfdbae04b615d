"""The worker side of ``DaskTaskRunner``: one attempt of one task run, on a Dask worker.

The kernel submits ``run_attempt(spec, args, kwargs)`` for each attempt. Dask resolves the
upstream futures in ``args``/``kwargs`` on the cluster, so data passes from task to task
without visiting the kernel. Here the attempt runs the task's body with what a task run has
on a thread: ``flowbook.runtime`` answers for it, ``get_run_logger()`` works, the flow's
``env`` is set, ``log_prints`` is honoured and ``timeout_seconds`` applies.

Everything the kernel needs besides the value travels as Dask events on the run's topic
(``Worker.log_event``): ``start`` (with the worker's address, process and thread), ``out``
(text the task wrote to stdout or stderr), ``log`` (log records), and ``end`` (times, a
short preview of the value and, when it is small and the worker is not a thread of the
kernel's process, the value itself pickled). They are plain msgpack-able dicts, sent in
batches (``_Batcher``). The value stays in the worker's memory as the Dask future's result,
for dependent tasks and for the kernel when it was not sent.

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
import pickle
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
# Events go to the kernel in batches: one Dask event (``{"op": "batch", "events": [...]}``)
# per topic carries every event of the worker's task runs since the last one. An event made
# when nothing was sent for ``BATCH_INTERVAL_S`` leaves at once (a lone task run is reported
# without delay); under a stream of short task runs the events of the next interval wait for
# its end, so the scheduler and the kernel handle one message per interval instead of two or
# more per task run. An attempt's "end" is sent before its value is handed back to Dask, so
# the kernel never learns of a finished attempt later than the interval.
BATCH_INTERVAL_S = 0.05
# A batch leaves early at this many events or bytes of values and text: the scheduler keeps
# the last ``distributed.admin.low-level-log-length`` (1,000) events of a topic, so a batch
# is kept small enough for that to stay a few tens of MB at most.
BATCH_MAX_EVENTS = 500
BATCH_MAX_BYTES = 64 * 1024

# The value of a finished attempt travels with its "end" event when it pickles to at most
# this many bytes: the kernel then needs no round trip to the cluster to read it (a flow's
# result, a cache or store write, ``future.result()``). Larger values stay on the worker
# until fetched.
INLINE_VALUE_BYTES = 16 * 1024

# Not under the ``flowbook`` logger: records of that tree made in a task run go to the kernel.
_log = logging.getLogger("distributed.flowbook")


class _Batcher:
    """The worker process's outgoing events, per worker and topic, sent in batches (see
    above). Batches leave in the order their events were made: they are taken and handed to
    the worker under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (the worker's id, topic) -> (the worker, its events); a process may hold workers of
        # several schedulers (in-process clusters), each event goes by the one that made it
        self._pending: dict[tuple[int, str], tuple[Any, list[dict[str, Any]]]] = {}
        self._count = 0
        self._bytes = 0
        self._last_sent = 0.0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0  # events Dask refused even one by one (counted and logged)

    def send(self, topic: str, msg: dict[str, Any], worker: Any, urgent: bool = False) -> None:
        with self._lock:
            key = (id(worker), topic)
            entry = self._pending.get(key)
            if entry is None:
                entry = self._pending[key] = (worker, [])
            entry[1].append(msg)
            self._count += 1
            for field_ in ("v", "text", "msg"):
                value = msg.get(field_)
                if value is not None:
                    self._bytes += len(value)
            due = time.monotonic() - self._last_sent >= BATCH_INTERVAL_S
            full = self._count >= BATCH_MAX_EVENTS or self._bytes >= BATCH_MAX_BYTES
            if due or urgent or full:
                self._ship()
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="flowbook-events", daemon=True
                )
                self._thread.start()
            self._wake.set()

    def flush(self) -> None:
        with self._lock:
            self._ship()

    def _ship(self) -> None:
        # under the lock; log_event only queues the message on the worker's event loop
        pending, self._pending = self._pending, {}
        self._count = self._bytes = 0
        self._last_sent = time.monotonic()
        for (_, topic), (worker, events) in pending.items():
            try:
                worker.log_event(topic, {"op": "batch", "events": events})
            except TypeError:
                # an event Dask refuses (see _plain): the others still go, one by one
                self._ship_each(worker, topic, events)
            except Exception:  # a worker closing: nothing left to tell through it
                pass

    def _ship_each(self, worker: Any, topic: str, events: list[dict[str, Any]]) -> None:
        for event in events:
            try:
                worker.log_event(topic, {"op": "batch", "events": [event]})
            except TypeError as exc:
                self.dropped += 1
                _log.warning(
                    "flowbook: an event of task run %s (%s) could not be sent and was "
                    "dropped (%d so far): %s",
                    event.get("id"),
                    event.get("op"),
                    self.dropped,
                    exc,
                )
            except Exception:  # a worker closing
                return

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                wait = self._last_sent + BATCH_INTERVAL_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.flush()


_batcher = _Batcher()


def _send(topic: str, msg: dict[str, Any], urgent: bool = False) -> None:
    if not topic:
        return
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not on a worker (a test calling run_attempt directly)
        return
    _batcher.send(topic, {k: _plain(v) for k, v in msg.items()}, worker, urgent)


def _plain(value: Any) -> Any:
    """``value`` as a plain str, int, float, bool or bytes: ``Worker.log_event`` refuses
    subclasses (a log level that is an ``IntEnum``, a ``str`` subclass written to stdout)."""
    kind = type(value)
    if value is None or kind in (str, int, float, bool, bytes):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value)


class _TooLarge(Exception):
    pass


class _BoundedWriter:
    """A file for ``pickle.Pickler`` that gives up once past ``limit`` bytes, so that a value
    whose size Dask underestimates (an object holding a large array) is not pickled whole
    only to be dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.size += n
        if self.size > self.limit:
            raise _TooLarge
        self.parts.append(bytes(data))
        return n


def _inline(value: Any) -> bytes | None:
    """``value`` pickled, when it is small enough to travel with the "end" event."""
    try:
        from dask.sizeof import sizeof

        if sizeof(value) > INLINE_VALUE_BYTES:
            return None
        out = _BoundedWriter(INLINE_VALUE_BYTES)
        pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except Exception:  # too large, or not picklable here: the kernel fetches it through Dask
        return None
    return b"".join(out.parts)


# The task of the last attempts, unpickled once per worker process for the attempts of a map
# (the kernel pickles a task once per flow run; the same bytes arrive with every attempt).
# Only small tasks are kept, and few: a task closing over a large object is not pinned in the
# worker's memory after its attempts.
_TASKS_KEPT = 8
_TASK_KEPT_BYTES = 1024 * 1024  # the largest pickled task kept
_TASKS_KEPT_BYTES = 4 * 1024 * 1024  # the pickled tasks kept, in all
_tasks_lock = threading.Lock()
_tasks: dict[bytes, Task[..., Any]] = {}
_tasks_bytes = 0


def _load_task(data: bytes) -> Task[..., Any]:
    global _tasks_bytes
    with _tasks_lock:
        task = _tasks.get(data)
    if task is None:
        import cloudpickle  # type: ignore[import-untyped]

        task = cloudpickle.loads(data)
        if len(data) <= _TASK_KEPT_BYTES:
            with _tasks_lock:
                if data not in _tasks:
                    _tasks[data] = task
                    _tasks_bytes += len(data)
                while len(_tasks) > _TASKS_KEPT or _tasks_bytes > _TASKS_KEPT_BYTES:
                    oldest = next(iter(_tasks))
                    del _tasks[oldest]
                    _tasks_bytes -= len(oldest)
    return task


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
    task = _load_task(spec.task_pickle)
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
            # a worker thread of the kernel's process hands the value itself to the kernel
            data = _inline(value) if spec.origin_pid != os.getpid() else None
            if data is not None:
                end["v"] = data
        # the end of an attempt leaves now only if it may (see _Batcher); a failed one's
        # events go before Dask reports the failure, as the kernel reads them with it
        _send(spec.topic, end, urgent=not ok)


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
