"""``flowbook.context.with_context(fn)``: the current run's context, carried with ``fn`` into
processes the user starts (``multiprocessing.Pool``, ``ProcessPoolExecutor``, ``Process``).

``with_context`` takes a picture of the context where it is called: the flow run and task run
(their ids, names, parameters, tags, attempt), the open ``flowbook.tags()`` blocks, the values
of ``with flowbook.context(...)`` blocks and the level of the ``flowbook`` loggers. The wrapper
it returns pickles with the standard pickler, as ``multiprocessing`` needs.

Called in another process, the wrapper runs ``fn`` inside that picture: ``get_run_logger()``,
``flowbook.runtime`` and ``flowbook.context`` answer as in the run, and records of the
``flowbook`` loggers travel back to the process that made the wrapper, over a local
connection (``multiprocessing.connection``, with a random key) it opens at the first
``with_context`` inside a run. So do the records of the loggers
``FLOWBOOK_LOGGING_EXTRA_LOGGERS`` named where the wrapper was made, and ``print`` when the
run has ``log_prints``. There they are run logs like any other: the console, the store and
the widget show them under the run. The process running ``fn`` never opens the store or
prints run logs itself (a forked one drops the handlers it inherited). Before the wrapper
returns, the records it sent have been handled, so a task run's logs are complete when its
``pool.map`` returns.

Called in the process that made it (directly, on a thread, or a copy of it: ``copy``,
``pickle`` and in-process executors make one), the wrapper runs ``fn`` in a copy of the
context it was made in: the real run records, nothing sent anywhere. A copy has no such
context (it is not pickled), so it runs ``fn`` with the picture's run set in a copy of the
caller's context: its records are still that run's, through this process's own logging.
Whether the wrapper is in another process is decided by the process id alone.

A parameter or context value that cannot be pickled is left out of the picture (the others
still travel). Nothing here is imported by ``import flowbook`` beyond the standard library.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flowbook.engine.runs import TaskRun, current_flow_run, current_task_run

__all__ = ["ContextWrappedCallable", "with_context"]


@dataclass
class _FlowRunPicture:
    """The flow run as code in another process sees it (``flowbook.runtime.flow_run``,
    ``flowbook.context``, the flow run's logger)."""

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
    created_s: float | None
    resumed_from: str | None
    log_prints: bool


class _TaskRunPicture(TaskRun):
    """The task run as code in another process sees it: a ``TaskRun`` record without its task
    (``get_run_logger()`` stamps records with its ids)."""

    __slots__ = ("_task_name",)
    _task_name: str

    @property
    def task_name(self) -> str:
        return self._task_name

    @property
    def parameters(self) -> dict[str, Any]:
        return self._parameters or {}


@dataclass
class _Picture:
    flow_run: _FlowRunPicture | None
    task_run: dict[str, Any] | None
    tags: frozenset[str]
    user_values: dict[str, bytes]
    log_level: int
    origin_pid: int
    # the loggers FLOWBOOK_LOGGING_EXTRA_LOGGERS named, and their level for run log lines
    extra_loggers: tuple[str, ...] = ()
    extra_level: int = logging.INFO
    address: Any = None  # where records go back to (None outside runs: nothing to send)
    authkey: bytes = b""
    dropped: list[str] = field(default_factory=list)


def _portable(values: dict[str, Any], what: str, dropped: list[str]) -> dict[str, bytes]:
    from flowbook import _pickling

    out: dict[str, bytes] = {}
    for key, value in values.items():
        try:
            out[key] = _pickling.dumps(value)
        except Exception:
            dropped.append(f"{what} {key!r}")
    return out


def _restored(values: dict[str, bytes]) -> dict[str, Any]:
    import pickle

    out: dict[str, Any] = {}
    for key, data in values.items():
        try:
            out[key] = pickle.loads(data)
        except Exception:  # its class is not importable here: left out, as unpicklable ones
            continue
    return out


def _take_picture() -> _Picture:
    from flowbook import _tags, context
    from flowbook import logging as fb_logging

    dropped: list[str] = []
    flow_run = current_flow_run.get()
    task_run = current_task_run.get()
    flow_picture = None
    if flow_run is not None:
        params = _portable(dict(flow_run.parameters), "parameter", dropped)
        flow_picture = _FlowRunPicture(
            id=flow_run.id,
            name=flow_run.name,
            flow_name=flow_run.flow_name,
            parameters=params,  # bytes until restored in the other process
            tags=tuple(flow_run.tags),
            run_count=flow_run.run_count,
            project=getattr(flow_run, "project", None),
            version=getattr(flow_run, "version", None),
            parent_flow_run_id=getattr(flow_run, "parent_flow_run_id", None),
            start_s=getattr(flow_run, "start_s", None),
            created_s=getattr(flow_run, "created_s", None),
            resumed_from=getattr(flow_run, "resumed_from", None),
            log_prints=bool(flow_run.log_prints),
        )
    task_picture = None
    if task_run is not None:
        task_picture = {
            "id": task_run.id,
            "name": task_run.name,
            "task_name": task_run.task_name,
            "parameters": _portable(dict(task_run.parameters), "task parameter", dropped),
            "tags": tuple(task_run.tags),
            "run_count": task_run.run_count,
            "log_prints": task_run.log_prints,
            "map_group": task_run.map_group,
            "created_s": task_run.created_s,
            "start_s": task_run.start_s,
        }
    picture = _Picture(
        flow_run=flow_picture,
        task_run=task_picture,
        tags=_tags.current_tags(),
        user_values=_portable(context._user_values.get(), "context value", dropped),
        log_level=logging.getLogger("flowbook").getEffectiveLevel(),
        origin_pid=os.getpid(),
        extra_loggers=tuple(fb_logging._extra_attached),
        extra_level=fb_logging._extra_bridge.run_level,
        dropped=dropped,
    )
    if flow_run is not None or task_run is not None:
        picture.address, picture.authkey = _listener().where()
    return picture


class ContextWrappedCallable:
    """``fn`` with the context it was wrapped in (``with_context``); picklable when ``fn`` is."""

    def __init__(self, fn: Callable[..., Any], picture: _Picture) -> None:
        self.fn = fn
        self._picture = picture
        # the real context, for calls in this process (never pickled)
        self._local: contextvars.Context | None = contextvars.copy_context()

    def __getstate__(self) -> dict[str, Any]:
        return {"fn": self.fn, "_picture": self._picture, "_local": None}

    def __repr__(self) -> str:
        return f"with_context({self.fn!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        picture = self._picture
        if picture.origin_pid == os.getpid():
            if self._local is not None:
                return self._local.copy().run(self.fn, *args, **kwargs)
            # a copy made in this process (pickle, copy.deepcopy): this process's logging
            return contextvars.copy_context().run(self._call_here, args, kwargs)
        return contextvars.copy_context().run(self._call_elsewhere, args, kwargs)

    def _call_here(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        _enter(self._picture)
        return self.fn(*args, **kwargs)

    def _call_elsewhere(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        picture = self._picture
        _prepare_process(picture)
        _enter(picture)
        _sending.set(picture)
        try:
            return self.fn(*args, **kwargs)
        finally:
            _Sender.sync(picture)


def _enter(picture: _Picture) -> None:
    """Set the picture's run, tags and context values in the current context."""
    from flowbook import _tags, context

    flow_run = None
    if picture.flow_run is not None:
        flow_run = _FlowRunPicture(
            **{**vars(picture.flow_run), "parameters": _restored(picture.flow_run.parameters)}
        )
        current_flow_run.set(flow_run)  # type: ignore[arg-type]
    if picture.task_run is not None:
        current_task_run.set(_task_run(picture.task_run, flow_run))
    _tags._current.set(picture.tags)
    context._user_values.set(_restored(picture.user_values))


def _task_run(data: dict[str, Any], flow_run: Any) -> TaskRun:
    run = _TaskRunPicture(None, flow_run, (), {}, 0)
    run.id = data["id"]
    run.name = data["name"]
    run._task_name = data["task_name"]
    run._parameters = _restored(data["parameters"])
    run.tags = data["tags"]
    run.run_count = data["run_count"]
    run.log_prints = data["log_prints"]
    run.map_group = data["map_group"]
    run.created_s = data["created_s"]
    run.start_s = data["start_s"]
    return run


def with_context(fn: Callable[..., Any]) -> ContextWrappedCallable:
    """``fn`` wrapped to run with the current run's context wherever it is called: in a
    process started by ``multiprocessing`` or ``ProcessPoolExecutor``, ``get_run_logger()``
    logs to the run that called ``with_context`` (see the module's notes)."""
    if not callable(fn):
        raise TypeError(
            f"with_context() takes the function to run in another process, not {fn!r} of "
            f"type {type(fn).__name__}"
        )
    return ContextWrappedCallable(fn, _take_picture())


# -- the other process: records go back to the process that made the wrapper -----------------
_sending: contextvars.ContextVar[_Picture | None] = contextvars.ContextVar(
    "flowbook_carried_context", default=None
)
_prepared_lock = threading.Lock()
_prepared_pid = 0


def _prepare_process(picture: _Picture) -> None:
    """In a process other than the one that made the wrapper: once per process, mark it
    configured (no store, no console here) and replace the handlers that make run-log events
    with ones sending records back; at each call, the extra loggers and ``log_prints`` of the
    picture's run."""
    global _prepared_pid
    if picture.origin_pid == os.getpid():
        return  # the process that made the wrapper keeps its own logging
    from flowbook import logging as fb_logging

    if _prepared_pid != os.getpid():
        with _prepared_lock:
            if _prepared_pid != os.getpid():
                from flowbook import _setup

                _setup.mark_configured()
                root = logging.getLogger("flowbook")
                # a forked process inherits the handlers and the event bus (with the console
                # and the store writer), not the threads behind them
                root.removeHandler(fb_logging._bridge)
                for name in fb_logging._extra_attached:
                    logging.getLogger(name).removeHandler(fb_logging._extra_bridge)
                root.addHandler(_ForwardingHandler())
                root.propagate = False
                root.setLevel(picture.log_level)
                _prepared_pid = os.getpid()
    for name in picture.extra_loggers:
        logging.getLogger(name).addHandler(_extra_forwarding)  # a no-op if attached already
    flow_run, task_run = picture.flow_run, picture.task_run
    if (task_run is not None and task_run["log_prints"]) or (
        flow_run is not None and flow_run.log_prints
    ):
        fb_logging.enable_print_capture()  # a spawned process starts with the plain print


class _ForwardingHandler(logging.Handler):
    """On the ``flowbook`` logger: its (stamped) records go back."""

    def emit(self, record: logging.LogRecord) -> None:
        picture = _sending.get()
        if picture is None or picture.address is None:
            return
        _forward(picture, record, vars(record), extra=False)


class _ExtraForwardingHandler(logging.Handler):
    """On the extra loggers: their records inside a wrapper's call go back stamped with the
    picture's run; elsewhere ``logging``'s last resort, as without the handler."""

    def __init__(self) -> None:
        super().__init__()
        self._last = threading.local()  # as _ExtraLoggersBridge: a record of a.b reaches a too

    def emit(self, record: logging.LogRecord) -> None:
        last = getattr(self._last, "record", None)
        if last is not None and last() is record:
            return
        self._last.record = weakref.ref(record)
        picture = _sending.get()
        run = current_task_run.get() or current_flow_run.get()
        if picture is None or picture.address is None or run is None:
            _last_resort(record)
            return
        if record.levelno >= picture.extra_level:
            from flowbook.logging import _run_stamp

            _forward(picture, record, _run_stamp(run), extra=True)


_extra_forwarding = _ExtraForwardingHandler()


def _last_resort(record: logging.LogRecord) -> None:
    resort = logging.lastResort
    if resort is None or record.levelno < resort.level:
        return
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(h is not _extra_forwarding for h in logger.handlers):
            return
        if not logger.propagate:
            break
        logger = logger.parent
    resort.handle(record)


def _forward(
    picture: _Picture, record: logging.LogRecord, stamp: dict[str, Any], *, extra: bool
) -> None:
    try:
        message = record.getMessage()
        if record.exc_info:
            from flowbook._tracebacks import format_exc_info

            message += "\n" + format_exc_info(*record.exc_info)
    except Exception:  # a bad format string must not break the user's function
        message = str(record.msg)
    _Sender.send(
        picture,
        {
            "logger": record.name,
            "level": record.levelno,
            "msg": message,
            "t": record.created,
            "run": stamp.get("flowbook_run"),
            "flow_run_id": stamp.get("flowbook_flow_run_id"),
            "task_run_id": stamp.get("flowbook_task_run_id"),
            "pid": os.getpid(),
            "extra": extra,
        },
    )


class _Sender:
    """This process's connection back to the process that made the wrapper (one per address,
    shared by threads)."""

    _lock = threading.Lock()
    _conns: ClassVar[dict[Any, Any]] = {}  # address -> (pid, Connection)
    _unsynced: ClassVar[set[Any]] = set()

    @classmethod
    def _conn(cls, picture: _Picture) -> Any:
        held = cls._conns.get(picture.address)
        if held is not None and held[0] == os.getpid():
            return held[1]
        from multiprocessing.connection import Client

        conn = Client(picture.address, authkey=picture.authkey)
        cls._conns[picture.address] = (os.getpid(), conn)
        return conn

    @classmethod
    def send(cls, picture: _Picture, msg: dict[str, Any]) -> None:
        with cls._lock:
            try:
                cls._conn(picture).send(msg)
                cls._unsynced.add(picture.address)
            except Exception:  # the process that made the wrapper is gone: nobody to tell
                cls._conns.pop(picture.address, None)

    @classmethod
    def sync(cls, picture: _Picture) -> None:
        """Wait until the records sent so far have been handled over there."""
        with cls._lock:
            if picture.address not in cls._unsynced:
                return
            cls._unsynced.discard(picture.address)
            try:
                conn = cls._conn(picture)
                conn.send(None)
                conn.recv()
            except Exception:
                cls._conns.pop(picture.address, None)


# -- the process that made the wrapper: records come back here --------------------------------
class _Listener:
    def __init__(self) -> None:
        import secrets
        from multiprocessing.connection import Listener

        self.authkey = secrets.token_bytes(32)
        self.listener = Listener(authkey=self.authkey)
        self.pid = os.getpid()
        threading.Thread(target=self._accept, name="flowbook-with-context", daemon=True).start()

    def where(self) -> tuple[Any, bytes]:
        return self.listener.address, self.authkey

    def _accept(self) -> None:
        while True:
            try:
                conn = self.listener.accept()
            except OSError:  # the listener is closed
                return
            except Exception:  # a client that failed authentication
                continue
            threading.Thread(
                target=self._receive, args=(conn,), name="flowbook-with-context", daemon=True
            ).start()

    @staticmethod
    def _receive(conn: Any) -> None:
        with conn:
            while True:
                try:
                    msg = conn.recv()
                except Exception:  # the other process ended
                    return
                if msg is None:
                    conn.send(True)  # a sync: everything before it was handled
                    continue
                _replay(msg)


def _replay(msg: dict[str, Any]) -> None:
    level = int(msg.get("level", logging.INFO))
    created = float(msg.get("t") or time.time())
    record = logging.makeLogRecord(
        {
            "name": msg.get("logger", "flowbook"),
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": msg.get("msg", ""),
            "created": created,
            "msecs": (created - int(created)) * 1000,
            "process": msg.get("pid"),
            "flowbook_run": msg.get("run"),
            "flowbook_flow_run_id": msg.get("flow_run_id"),
            "flowbook_task_run_id": msg.get("task_run_id"),
        }
    )
    if msg.get("extra"):
        # another library's record: straight to the run-log events (its logger here would
        # not know the run)
        from flowbook import logging as fb_logging

        fb_logging._bridge.handle(record)
        return
    logging.getLogger(record.name).handle(record)


_listener_lock = threading.Lock()
_the_listener: _Listener | None = None


def _listener() -> _Listener:
    global _the_listener
    with _listener_lock:
        if _the_listener is None or _the_listener.pid != os.getpid():
            _the_listener = _Listener()
        return _the_listener
