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
``with_context`` inside a run. There they are run logs like any other: the console, the store
and the widget show them under the run. The process running ``fn`` never opens the store or
prints run logs itself. Before the wrapper returns, the records it sent have been handled, so
a task run's logs are complete when its ``pool.map`` returns.

Called in the process that made it (directly, or on a thread), the wrapper runs ``fn`` in a
copy of the context it was made in: the real run records, nothing sent anywhere.

A parameter or context value that cannot be pickled is left out of the picture (the others
still travel). Nothing here is imported by ``import flowbook`` beyond the standard library.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import traceback
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
        if self._local is not None and picture.origin_pid == os.getpid():
            return self._local.copy().run(self.fn, *args, **kwargs)
        return contextvars.copy_context().run(self._call_elsewhere, args, kwargs)

    def _call_elsewhere(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from flowbook import _tags, context

        picture = self._picture
        _prepare_process(picture)
        if picture.flow_run is not None:
            flow_run = _FlowRunPicture(
                **{**vars(picture.flow_run), "parameters": _restored(picture.flow_run.parameters)}
            )
            current_flow_run.set(flow_run)  # type: ignore[arg-type]
        if picture.task_run is not None:
            current_task_run.set(_task_run(picture.task_run, picture.flow_run))
        _tags._current.set(picture.tags)
        context._user_values.set(_restored(picture.user_values))
        _sending.set(picture)
        try:
            return self.fn(*args, **kwargs)
        finally:
            _Sender.sync(picture)


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
    """Once per process: mark it configured (no store, no console here), replace the handler
    that makes run-log events with one sending records back."""
    global _prepared_pid
    if _prepared_pid == os.getpid():
        return
    with _prepared_lock:
        if _prepared_pid == os.getpid():
            return
        from flowbook import _setup
        from flowbook import logging as fb_logging

        _setup.mark_configured()
        root = logging.getLogger("flowbook")
        # a forked process inherits the handler and the event bus, not the threads behind it
        root.removeHandler(fb_logging._bridge)
        root.addHandler(_ForwardingHandler())
        root.propagate = False
        root.setLevel(picture.log_level)
        _prepared_pid = os.getpid()


class _ForwardingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        picture = _sending.get()
        if picture is None or picture.address is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        except Exception:  # a bad format string must not break the user's function
            message = str(record.msg)
        _Sender.send(
            picture,
            {
                "logger": record.name,
                "level": record.levelno,
                "msg": message,
                "t": record.created,
                "run": getattr(record, "flowbook_run", None),
                "flow_run_id": getattr(record, "flowbook_flow_run_id", None),
                "task_run_id": getattr(record, "flowbook_task_run_id", None),
                "pid": os.getpid(),
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
    logging.getLogger(record.name).handle(record)


_listener_lock = threading.Lock()
_the_listener: _Listener | None = None


def _listener() -> _Listener:
    global _the_listener
    with _listener_lock:
        if _the_listener is None or _the_listener.pid != os.getpid():
            _the_listener = _Listener()
        return _the_listener
