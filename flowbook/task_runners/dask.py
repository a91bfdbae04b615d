"""DaskTaskRunner: submitted task runs execute on a Dask cluster.

The orchestration stays in the kernel; only task bodies go to the cluster. For each attempt
of a task run the runner submits ``_dask_worker.run_attempt`` with the run's arguments, in
which upstream task runs appear as their Dask futures: Dask hands the values from worker to
worker, and the kernel never fetches them unless somebody asks (``future.result()``, a flow's
return value, or a cache write). States, retries, caching and the store stay in the kernel,
exactly as for task runs on threads. Workers report an attempt's start, its prints and log
records, and its end as Dask events on a topic of the kernel's client.

Connections are shared per process. A local cluster (``DaskTaskRunner()``, or with
``cluster_class``/``cluster_kwargs``) is started by the first run that submits a task, kept
for later runs and cells, and closed when the process exits (a Jupyter kernel shutting down).
A runner with ``address=`` connects a client to that scheduler and never closes the
scheduler. The one local cluster of a process is replaced when a run asks for a different
configuration while no run is using it.

Everything kernel-side about a submission happens on one thread per connection, in the order
it arrived: the Dask futures' callbacks, the workers' events, and retry timers. User code
does not run there: the state hooks of its task runs (and the resolution of their futures,
which follows the hooks) are handed to threads of their own (``HookThreads``).
"""

from __future__ import annotations

import atexit
import contextlib
import heapq
import importlib
import itertools
import logging
import os
import pickle
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from typing_extensions import Self

from flowbook._annotations import Annotation, allow_failure, quote
from flowbook.engine.hooks import HookThreads
from flowbook.engine.lifecycle import hand_off_task_hooks
from flowbook.engine.runs import FlowRun, TaskRun, current_flow_run, current_task_run
from flowbook.engine.values import resolve_futures
from flowbook.exceptions import UpstreamTaskError
from flowbook.futures import FutureList, TaskRunFuture
from flowbook.states import Cancelled, DeferredResult, Failed, State
from flowbook.task_runners._dask_client import get_async_dask_client, get_dask_client
from flowbook.task_runners._dask_options import (
    InitializerKey,
    check_cluster,
    check_report_path,
    check_report_path_type,
    cluster_address,
    config_difference,
    finish_report,
    get_annotations,
    register_initializer,
    start_report,
    usable_annotations,
)
from flowbook.task_runners._dask_worker import AttemptSpec, FlowRunInfo, ReturnedState
from flowbook.task_runners.base import SubmittedCall, TaskRunner, when_final

if TYPE_CHECKING:
    from flowbook.engine.task_engine import TaskRunEngine

__all__ = [
    "DaskTaskRunner",
    "close_cluster",
    "cluster_info",
    "get_async_dask_client",
    "get_dask_client",
    "restart_cluster",
]

_log = logging.getLogger("flowbook.dask")

# How long a finished attempt waits for its worker's "end" event (which carries the times and
# the preview) before it is completed without it.
END_GRACE_S = 1.0


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "DaskTaskRunner needs Dask's distributed scheduler, which is not installed; "
            "install it with: pip install 'flowbook[dask]'"
        ) from exc
    return distributed


# -- results that stay on the cluster ---------------------------------------------------------
class DaskResult(DeferredResult):
    """A task run's value held by a Dask future; fetched on first ``get()``."""

    __slots__ = ("_inline", "_lock", "_value", "future", "preview")

    _MISSING: Any = object()

    def __init__(
        self, future: Any, preview: str = "", value: Any = _MISSING, inline: bytes | None = None
    ) -> None:
        self.future = future
        self.preview = preview
        self._value = value
        # the value pickled by the worker, sent with the attempt's end (small values only)
        self._inline = inline
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._value is DaskResult._MISSING:
            with self._lock:
                if self._value is DaskResult._MISSING:
                    inline, self._inline = self._inline, None
                    if inline is not None:
                        try:
                            self._value = pickle.loads(inline)
                        except Exception:  # not loadable here: Dask's own path says why
                            self._value = self.future.result()
                    else:
                        self._value = self.future.result()
        return self._value

    def __reduce__(self) -> tuple[Any, ...]:
        # persisting a result (or pickling a state) stores the value, not the future
        return (_identity, (self.get(),))


def _identity(value: Any) -> Any:
    return value


# -- the kernel-side thread of a connection ---------------------------------------------------
class _Dispatcher:
    """One thread running posted callables in order, and timed ones when they are due."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._timers: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._timers_lock = threading.Lock()
        self._seq = itertools.count()
        self._hooks = HookThreads(f"{name}-hooks")
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        self._queue.put((fn, args))

    def later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        with self._timers_lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn, args))
        self._queue.put((_noop, ()))  # wake the loop so it sees the new deadline

    def stop(self) -> None:
        self._queue.put(None)

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _loop(self) -> None:
        hand_off_task_hooks(self._hooks.submit)
        while True:
            timeout = None
            with self._timers_lock:
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = (_noop, ())
            if item is None:
                return
            self._run(*item)
            now = time.monotonic()
            while True:
                with self._timers_lock:
                    if not self._timers or self._timers[0][0] > now:
                        break
                    _, _, fn, args = heapq.heappop(self._timers)
                self._run(fn, args)

    @staticmethod
    def _run(fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception as exc:  # one broken callback must not stop every run's bookkeeping
            _log.exception("flowbook: error while handling a Dask task run event")
            call = getattr(fn, "__self__", None)
            if isinstance(call, _DaskCall):
                # its run would otherwise wait for an event that never comes
                try:
                    call.finish(_failed_outside(exc))
                except Exception:
                    _log.exception("flowbook: a Dask task run could not be ended")


def _noop() -> None:
    pass


# -- shared connections -----------------------------------------------------------------------
_UNKNOWN = object()

# The most attempts submitted to Dask in one client.map (a long map starts running on the
# cluster while the rest of it is still being queued).
SUBMIT_BATCH = 250


class _Submission:
    """One attempt queued for the connection's next ``client.map``."""

    __slots__ = ("args", "call", "key", "kwargs", "number", "spec")

    def __init__(
        self,
        call: _DaskCall,
        number: int,
        key: str,
        spec: AttemptSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.call = call
        self.number = number
        self.key = key
        self.spec = spec
        self.args = args
        self.kwargs = kwargs


class _Connection:
    """A client (and, for a local cluster, the cluster) shared by runners of one process."""

    def __init__(self, key: tuple[Any, ...], client: Any, cluster: Any | None) -> None:
        self.key = key
        self.client = client
        self.cluster = cluster
        self.owned = cluster is not None
        self.topic = f"flowbook-{client.id}"
        self.calls: dict[str, _DaskCall] = {}
        self.runners = 0
        self.closed = False
        self._dashboard: object = _UNKNOWN
        self.dispatcher = _Dispatcher("flowbook-dask")
        # blocking kernel-side work: fetching values for cache keys and cache writes
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="flowbook-dask-io")
        # attempts waiting for the next client.map (touched on the dispatcher only)
        self._submissions: list[_Submission] = []
        client.subscribe_topic(self.topic, self._on_event)

    # -- submitting attempts ---------------------------------------------------------------
    def queue_submission(self, item: _Submission) -> None:
        """Queue an attempt for Dask (on the dispatcher). The queue is submitted as one
        ``client.map`` once the dispatcher has handled what was posted before the first of
        them (a map's task runs arrive together), or at ``SUBMIT_BATCH`` attempts."""
        pending = self._submissions
        pending.append(item)
        if len(pending) == 1:
            self.dispatcher.post(self.flush_submissions)
        elif len(pending) >= SUBMIT_BATCH:
            self.flush_submissions()

    def queued(self, call: _DaskCall) -> bool:
        return any(item.call is call for item in self._submissions)

    def flush_submissions(self) -> None:
        """Submit the queued attempts to Dask (on the dispatcher): one ``client.map`` for
        all of them; one ``client.submit`` each if that fails, so that an attempt that
        cannot be submitted (an argument Dask cannot serialize) fails alone."""
        items, self._submissions = self._submissions, []
        # an attempt whose run ended (cancelled) or that was replaced meanwhile is dropped
        items = [
            i
            for i in items
            if i.number == i.call.submissions
            and not i.call.is_final()
            and i.call.cancel_reason is None
        ]
        if not items:
            return
        from flowbook.task_runners._dask_worker import run_attempt

        client = self.client
        if len(items) > 1:
            try:
                futures = client.map(
                    run_attempt,
                    [i.spec for i in items],
                    [i.args for i in items],
                    [i.kwargs for i in items],
                    key=[i.key for i in items],
                    pure=False,
                    retries=0,
                )
            except Exception:
                futures = None
            if futures is not None:
                for item, future in zip(items, futures, strict=True):
                    item.call.submitted(future, item.number)
                return
        for item in items:
            try:
                future = client.submit(
                    run_attempt,
                    item.spec,
                    item.args,
                    item.kwargs,
                    key=item.key,
                    pure=False,
                    retries=0,
                )
            except Exception as exc:
                _log.exception("flowbook: a task run could not be submitted to Dask")
                with contextlib.suppress(Exception):
                    item.call.finish(_failed_outside(exc))
                continue
            item.call.submitted(future, item.number)

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's address (asked once: for a remote scheduler it is a round trip)."""
        if self._dashboard is _UNKNOWN:
            link = None
            with contextlib.suppress(Exception):
                link = self.client.dashboard_link
            self._dashboard = str(link) if link else None
        return self._dashboard  # type: ignore[return-value]

    @property
    def scheduler_address(self) -> str:
        return str(self.client.scheduler.address)

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        # runs on the client's event loop: hand over, never block
        msg = event[1]
        if isinstance(msg, dict):
            self.dispatcher.post(self._handle, msg)

    def _handle(self, msg: dict[str, Any]) -> None:
        if msg.get("op") == "batch":  # a worker's events since its last batch, in order
            for event in msg.get("events", ()):
                if isinstance(event, dict):
                    try:
                        self._handle_one(event)
                    except Exception as exc:  # the others in the batch are still applied
                        _log.exception("flowbook: error while handling a Dask task run event")
                        call = self.calls.get(event.get("id", ""))
                        if call is not None and not call.is_final():
                            # its run would otherwise wait for an event that never comes
                            with contextlib.suppress(Exception):
                                call.finish(_failed_outside(exc))
            return
        self._handle_one(msg)

    def _handle_one(self, msg: dict[str, Any]) -> None:
        call = self.calls.get(msg.get("id", ""))
        if call is None:
            return
        op = msg.get("op")
        if op == "start":
            call.on_start(msg)
        elif op == "end":
            call.on_end(msg)
        elif op == "out":
            call.on_output(msg)
        elif op == "log":
            call.on_log(msg)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.client.unsubscribe_topic(self.topic)
        with contextlib.suppress(Exception):
            self.client.close(timeout=10)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=10)
        self.dispatcher.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)


_registry_lock = threading.RLock()
_local: _Connection | None = None
_remote: dict[tuple[Any, ...], _Connection] = {}
_atexit_registered = False


def _close_all() -> None:
    global _local
    with _registry_lock:
        conns = [*_remote.values(), *([_local] if _local is not None else [])]
        _remote.clear()
        _local = None
    for conn in conns:
        conn.close()


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        # registered after distributed is imported, so it runs before distributed's own
        # exit handlers (atexit runs in reverse order) while the clients still work
        atexit.register(_close_all)
        _atexit_registered = True


def _connect(runner: DaskTaskRunner, for_run: bool) -> _Connection:
    global _local
    distributed = _import_distributed()
    _register_atexit()
    key = runner._config_key()
    with _registry_lock:
        if runner.address is not None or runner.cluster is not None:
            conn = _remote.get(key)
            if conn is not None and not conn.closed and _client_gone(conn.client):
                # the scheduler went away for longer than the client waits to reconnect:
                # Dask closed the client; connect again (the scheduler may be back)
                conn.close()
            if conn is None or conn.closed:
                # key[1] is the scheduler's address (of address=, or of the cluster object)
                client = distributed.Client(key[1], **runner.client_kwargs)
                conn = _remote[key] = _Connection(key, client, None)
                if runner.cluster is not None and runner.adapt_kwargs is not None:
                    runner.cluster.adapt(**runner.adapt_kwargs)
            conn.runners += for_run
            return conn
        conn = _local
        if conn is not None and not conn.closed and _client_gone(conn.client):
            conn.close()
        if conn is not None and (conn.closed or conn.key != key):
            if not conn.closed and conn.runners > 0:
                raise RuntimeError(
                    f"{runner!r} asks for a local Dask cluster configured differently from the "
                    f"one this process is running for another flow run ({conn.key[1]}, "
                    f"another {config_difference(conn.key, key)}); "
                    "one local cluster serves a process: wait for that run to end, or use "
                    "the same DaskTaskRunner configuration"
                )
            _log.info("Closing the local Dask cluster to start one with a new configuration")
            conn.close()
            _local = conn = None
        if conn is None:
            _local = conn = _start_local(runner, key, distributed)
        conn.runners += for_run
        return conn


def _client_gone(client: Any) -> bool:
    """Whether Dask has closed this client (its scheduler was unreachable for too long)."""
    return str(getattr(client, "status", "running")) in ("closing", "closed")


def _start_local(runner: DaskTaskRunner, key: tuple[Any, ...], distributed: Any) -> _Connection:
    import dask

    cluster_class = runner._resolve_cluster_class(distributed)
    # A task that kills its worker is reported at once (Crashed, then flowbook's retries)
    # instead of being re-run by the scheduler behind the run's back.
    _spawn_without_main()
    config: dict[str, Any] = {"distributed.scheduler.allowed-failures": 0}
    kwargs = dict(runner.cluster_kwargs)
    if cluster_class is distributed.LocalCluster:
        # Dask's worker warnings (a cancelled task, a restarted worker) would land in
        # whatever cell runs; flowbook reports those events on the runs themselves
        kwargs.setdefault("silence_logs", logging.ERROR)
    from flowbook.engine.env import env_without_runs

    # the worker processes inherit this process's environment, with the values of the runs
    # going on now (the run starting the cluster among them)
    held = env_without_runs()
    with dask.config.set(config):
        cluster = cluster_class(**kwargs)
    try:
        if runner.adapt_kwargs is not None:
            cluster.adapt(**runner.adapt_kwargs)
        client = distributed.Client(cluster, **runner.client_kwargs)
        from flowbook.task_runners._dask_plugins import IgnoreInterrupts, RestoreEnvironment

        client.register_plugin(IgnoreInterrupts(), name=IgnoreInterrupts.name)
        if held:
            client.register_plugin(RestoreEnvironment(held), name=RestoreEnvironment.name)
        if runner._initializer is not None:
            register_initializer(client, runner)
    except BaseException:
        with contextlib.suppress(Exception):
            cluster.close()
        raise
    return _Connection(key, client, cluster)


_WORKER_PROCESS_NAME = "Dask Worker process (from Nanny)"
_spawn_patched = False


def _spawn_without_main() -> None:
    """Start Dask's worker processes without importing the main module in them.

    ``multiprocessing`` imports the parent's main module in every spawned child. For a
    script (or ``python -m``) without an ``if __name__ == "__main__"`` guard that runs the
    script again in each worker, which would start clusters of its own. A worker process
    needs nothing from the main module (tasks defined there reach it pickled by value), so
    for processes the Dask nanny starts, the main module is left out of what the child
    prepares. Other processes are not affected. (A Jupyter kernel's main module is not
    imported by children in any case.)
    """
    global _spawn_patched
    if _spawn_patched:
        return
    from multiprocessing import spawn

    original = spawn.get_preparation_data

    def get_preparation_data(name: str) -> dict[str, Any]:
        data: dict[str, Any] = original(name)
        if name == _WORKER_PROCESS_NAME:
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
        return data

    spawn.get_preparation_data = get_preparation_data
    _spawn_patched = True


def cluster_info() -> dict[str, Any] | None:
    """The local cluster of this process (None if there is none): address, dashboard, workers.

    ``workers`` lists each worker's ``name``, ``address``, ``nthreads``, ``memory_limit``
    (bytes) and ``pid``.
    """
    conn = _local
    if conn is None or conn.closed:
        return None
    return _describe(conn)


def connections() -> list[dict[str, Any]]:
    """Every open connection of this process: the local cluster first, then ``address=`` ones."""
    with _registry_lock:
        conns = [c for c in [_local, *_remote.values()] if c is not None and not c.closed]
    return [_describe(c) for c in conns]


def _describe(conn: _Connection) -> dict[str, Any]:
    workers = []
    with contextlib.suppress(Exception):
        info = conn.client.scheduler_info(n_workers=-1)
        pids: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            pids = conn.client.run(os.getpid)
        for address, w in sorted(info.get("workers", {}).items()):
            workers.append(
                {
                    "name": str(w.get("name", address)),
                    "address": address,
                    "nthreads": int(w.get("nthreads", 0)),
                    "memory_limit": int(w.get("memory_limit", 0) or 0),
                    "pid": pids.get(address, w.get("pid")),
                }
            )
    return {
        "scheduler_address": conn.scheduler_address,
        "dashboard_link": conn.dashboard_link,
        "owned": conn.owned,
        "cluster_class": conn.key[1] if conn.owned else None,
        "workers": workers,
        "running_task_runs": len(conn.calls),
    }


def close_cluster() -> bool:
    """Close this process's local cluster; False if there was none. Runs on it are cancelled."""
    global _local
    with _registry_lock:
        conn, _local = _local, None
    if conn is None or conn.closed:
        return False
    for call in list(conn.calls.values()):
        call.runner._cancel_outstanding(
            "The local Dask cluster was closed while this task run was going."
        )
    conn.close()
    return True


def restart_cluster() -> bool:
    """Restart the local cluster's worker processes (clears their memory); False if none."""
    conn = _local
    if conn is None or conn.closed:
        return False
    workers = conn.client.scheduler_info(n_workers=-1).get("workers", {})
    if any(not w.get("nanny") for w in workers.values()):
        raise RuntimeError(
            "the local Dask cluster's workers run inside this process (processes=False), so "
            "they cannot be restarted; close the cluster instead (%flowbook dask close, or "
            "flowbook.task_runners.dask.close_cluster()) and the next run starts a new one"
        )
    for call in list(conn.calls.values()):
        call.runner._cancel_outstanding(
            "The local Dask cluster's workers were restarted while this task run was going."
        )
    conn.client.restart()
    return True


# -- the runner -------------------------------------------------------------------------------
class DaskTaskRunner(TaskRunner):
    """Runs submitted task runs on a Dask cluster: a local one shared by the process, the
    scheduler at ``address``, or a running ``cluster`` object's scheduler.

    ``cluster_class`` (a class, or its dotted name) and ``cluster_kwargs`` make the local
    cluster (``distributed.LocalCluster`` by default), ``adapt_kwargs`` make it (or the given
    ``cluster``) adaptive, and ``client_kwargs`` go to ``distributed.Client``. With
    ``performance_report_path`` each flow run writes a Dask performance report (HTML) there,
    covering the time from its first submitted task to its end.
    """

    def __init__(
        self,
        cluster_class: str | type | Callable[..., Any] | None = None,
        cluster_kwargs: dict[str, Any] | None = None,
        adapt_kwargs: dict[str, Any] | None = None,
        address: str | None = None,
        client_kwargs: dict[str, Any] | None = None,
        cluster: Any = None,
        performance_report_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if cluster is not None:
            check_cluster(cluster, address, cluster_class, cluster_kwargs)
        if performance_report_path is not None:
            performance_report_path = check_report_path_type(performance_report_path)
        for label, value in (
            ("cluster_kwargs", cluster_kwargs),
            ("adapt_kwargs", adapt_kwargs),
            ("client_kwargs", client_kwargs),
        ):
            if value is not None and not isinstance(value, dict):
                raise TypeError(
                    f"DaskTaskRunner({label}={value!r}): {label} must be a dict of keyword "
                    f"arguments, not {type(value).__name__}"
                )
        if address is not None:
            if not isinstance(address, str) or not address.strip():
                raise ValueError(
                    f"DaskTaskRunner(address={address!r}): address must be a scheduler "
                    "address such as 'tcp://127.0.0.1:8786'"
                )
            if cluster_class is not None or cluster_kwargs or adapt_kwargs is not None:
                raise ValueError(
                    f"DaskTaskRunner(address={address!r}) connects to an existing scheduler; "
                    "cluster_class, cluster_kwargs and adapt_kwargs make a new cluster and "
                    "cannot be given with it"
                )
        if cluster_class is not None and not (
            isinstance(cluster_class, str) or callable(cluster_class)
        ):
            raise TypeError(
                f"DaskTaskRunner(cluster_class={cluster_class!r}): give a cluster class, or "
                "its dotted name such as 'distributed.LocalCluster'"
            )
        self.cluster_class = cluster_class
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.adapt_kwargs = dict(adapt_kwargs) if adapt_kwargs is not None else None
        self.address = address
        self.client_kwargs = dict(client_kwargs or {})
        self.cluster = cluster
        self.performance_report_path: str | None = performance_report_path
        # (initializer, initargs) run once in each worker of the local cluster (set by
        # ProcessPoolTaskRunner)
        self._initializer: tuple[Callable[..., Any], tuple[Any, ...]] | None = None
        self._report: Any = None  # the running distributed.performance_report
        self._conn: _Connection | None = None
        self._conn_lock = threading.Lock()
        self._calls: dict[str, _DaskCall] = {}
        self._task_pickles: dict[int, tuple[Any, bytes]] = {}
        self._dashboard_link: str | None = None

    def _pickled(self, task: Any) -> bytes:
        """The task pickled by value where it must be (once per task and flow run)."""
        known = self._task_pickles.get(id(task))
        if known is not None and known[0] is task:
            return known[1]
        import cloudpickle  # type: ignore[import-untyped]

        data: bytes = cloudpickle.dumps(task)
        self._task_pickles[id(task)] = (task, data)
        return data

    def duplicate(self) -> Self:
        return type(self)(
            cluster_class=self.cluster_class,
            cluster_kwargs=self.cluster_kwargs,
            adapt_kwargs=self.adapt_kwargs,
            address=self.address,
            client_kwargs=self.client_kwargs,
            cluster=self.cluster,
            performance_report_path=self.performance_report_path,
        )

    # -- configuration ---------------------------------------------------------------------------
    def _class_name(self) -> str:
        cls = self.cluster_class
        if cls is None:
            return "distributed.LocalCluster"
        if isinstance(cls, str):
            return cls
        return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"

    def _config_key(self) -> tuple[Any, ...]:
        if self.address is not None:
            return ("address", self.address, repr(sorted(self.client_kwargs.items())))
        if self.cluster is not None:
            return (
                "address",
                cluster_address(self.cluster),
                repr(sorted(self.client_kwargs.items())),
                repr(sorted(self.adapt_kwargs.items())) if self.adapt_kwargs is not None else None,
            )
        return (
            "local",
            self._class_name(),
            repr(sorted(self.cluster_kwargs.items())),
            repr(sorted(self.adapt_kwargs.items())) if self.adapt_kwargs is not None else None,
            repr(sorted(self.client_kwargs.items())),
            InitializerKey(*self._initializer) if self._initializer is not None else None,
        )

    def _resolve_cluster_class(self, distributed: Any) -> Callable[..., Any]:
        cls = self.cluster_class
        if cls is None:
            return distributed.LocalCluster  # type: ignore[no-any-return]
        if not isinstance(cls, str):
            return cls
        module_name, _, attr = cls.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImportError(
                f"DaskTaskRunner(cluster_class={cls!r}): cannot import it ({exc}); give a "
                "dotted name such as 'distributed.LocalCluster' of an installed package"
            ) from exc

    # -- connection ------------------------------------------------------------------------------
    def connection(self) -> _Connection:
        """The shared connection of this runner's flow run, made (and the local cluster
        started) on first use."""
        conn = self._conn
        if conn is None:
            with self._conn_lock:
                if self._conn is None:
                    path = self.performance_report_path
                    if path is not None:
                        check_report_path(path)  # before a cluster starts
                    conn = _connect(self, for_run=True)
                    if path is not None:
                        try:
                            self._report = start_report(conn, path)
                        except BaseException:
                            with _registry_lock:
                                conn.runners = max(0, conn.runners - 1)
                            raise
                    self._conn = conn
                conn = self._conn
        return conn

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` of this configuration (connecting on first use)."""
        conn = self._conn
        return conn.client if conn is not None else _connect(self, for_run=False).client

    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard's address once the runner has connected (None before); it
        stays set after the run ends."""
        conn = self._conn
        if conn is not None and self._dashboard_link is None:
            self._dashboard_link = conn.dashboard_link
        return self._dashboard_link

    # -- submission ------------------------------------------------------------------------------
    def submit(self, call: SubmittedCall) -> None:
        conn = self.connection()
        dask_call = _DaskCall(self, conn, call)  # type: ignore[arg-type]
        # dask.annotate(...) in force here (the submitting thread) applies to the run's
        # Dask tasks, which the dispatcher thread submits; captured only when there are any
        annotations = get_annotations()
        if annotations:
            dask_call.annotations = usable_annotations(annotations)
        run_id = dask_call.run.id
        self._calls[run_id] = conn.calls[run_id] = dask_call
        conn.dispatcher.post(dask_call.begin)

    def _execute(self, call: SubmittedCall) -> None:  # pragma: no cover - submit is overridden
        raise NotImplementedError("DaskTaskRunner submits through submit()")

    def _cancel_outstanding(self, reason: str) -> None:
        conn = self._conn
        if conn is None:
            return
        calls = [c for c in list(self._calls.values()) if not c.is_final()]
        if not calls:
            return
        for c in calls:
            c.cancel_reason = reason  # before the futures' callbacks can see them cancelled
        futures = [c.future for c in calls if c.future is not None]
        if futures:
            with contextlib.suppress(Exception):
                conn.client.cancel(futures, force=True)
        with contextlib.suppress(Exception):
            conn.client.run(_interrupt_remote, [c.run.id for c in calls], wait=False)
        for c in calls:
            if not c.engine._cancelled():  # a cancelled flow run finishes its own task runs
                c.cancel(reason)

    def shutdown(self, cancel_pending: bool = False) -> None:
        conn = self._conn
        if conn is not None:
            if cancel_pending:
                self._cancel_outstanding(
                    "The flow run's task runner shut down before this task run finished."
                )
            report, self._report = self._report, None
            if report is not None:  # while the connection is still this run's
                finish_report(conn, report, self.performance_report_path)
            with _registry_lock:
                conn.runners = max(0, conn.runners - 1)
            if self._dashboard_link is None:
                self._dashboard_link = conn.dashboard_link
            calls, self._calls = self._calls, {}
            for run_id in calls:
                conn.calls.pop(run_id, None)
            self._conn = None
        super().shutdown(cancel_pending)

    def __repr__(self) -> str:
        report = (
            f", performance_report_path={self.performance_report_path!r}"
            if self.performance_report_path is not None
            else ""
        )
        if self.address is not None:
            return f"DaskTaskRunner(address={self.address!r}{report})"
        if self.cluster is not None:
            return f"DaskTaskRunner(cluster={self.cluster!r}{report})"
        parts = []
        if self.cluster_class is not None:
            parts.append(f"cluster_class={self._class_name()!r}")
        if self.cluster_kwargs:
            parts.append(f"cluster_kwargs={self.cluster_kwargs!r}")
        if self.adapt_kwargs is not None:
            parts.append(f"adapt_kwargs={self.adapt_kwargs!r}")
        if self.performance_report_path is not None:
            parts.append(f"performance_report_path={self.performance_report_path!r}")
        return f"DaskTaskRunner({', '.join(parts)})"


async def _interrupt_remote(task_run_ids: list[str]) -> int:
    # a coroutine: Client.run(..., wait=False) only sends those (on the worker's event loop)
    from flowbook.task_runners._dask_worker import interrupt_task_runs

    return interrupt_task_runs(task_run_ids)


# -- one submitted task run -------------------------------------------------------------------
_COLLECTIONS = (list, tuple, set, frozenset, dict)


class _DaskCall:
    """The kernel side of one task run on Dask, across its attempts.

    Every method but ``__init__`` and ``cancel`` runs on the connection's dispatcher thread.
    """

    def __init__(self, runner: DaskTaskRunner, conn: _Connection, engine: TaskRunEngine) -> None:
        self.runner = runner
        self.conn = conn
        self.engine = engine
        self.run: TaskRun = engine.task_run
        self.args = self.run.args  # as given: upstream futures still in them
        self.kwargs = self.run.kwargs
        self.future: Any = None
        self.deps: list[Any] = []
        self.submissions = 0
        self.started = False  # the current attempt's worker reported its start
        self.end_msg: dict[str, Any] | None = None
        self.waiting_end = False
        self.cancel_reason: str | None = None
        self.annotations: dict[str, Any] | None = None  # dask.annotate(...) at submission

    def is_final(self) -> bool:
        state = self.run.state
        return state is not None and state.is_final()

    # -- start -----------------------------------------------------------------------------------
    def begin(self) -> None:
        engine = self.engine
        if engine._cancelled():
            self.finish(Cancelled("The flow run was cancelled before this task run started."))
            return
        flow_run = engine.flow_run
        if engine.task.cache_key_fn is not None or (flow_run is not None and flow_run.memo):
            # the cache key (or the reuse of an earlier attempt's result) needs the input
            # values here, in the kernel
            self._after(engine.upstream, self._check_in_kernel)
            return
        self.submit_attempt()

    def _after(self, futures: Sequence[TaskRunFuture[Any]], then: Callable[[], None]) -> None:
        """Run ``then`` on the dispatcher once every future in ``futures`` is final."""
        dispatcher = self.conn.dispatcher
        when_final(futures, lambda: then() if dispatcher.on_thread() else dispatcher.post(then))

    def _check_in_kernel(self) -> None:
        self.conn.pool.submit(self._check_blocking)

    def _check_blocking(self) -> None:
        # on an I/O thread: fetching upstream values may wait for the cluster
        engine = self.engine
        try:
            early = engine.resolve_inputs() or engine.check_cache()
        except Exception as exc:
            from flowbook.states import Failed

            early = Failed(f"Task run could not check its cache: {exc}", exc)
        if early is not None:
            self.conn.dispatcher.post(self.finish, early)
        else:
            self.conn.dispatcher.post(self.submit_attempt)

    def submit_attempt(self) -> None:
        if self.is_final():
            return
        engine = self.engine
        if engine._cancelled():
            self.finish(Cancelled("The flow run was cancelled before this task run started."))
            return
        # a trigger decides from final upstream states: wait for all of them in the kernel
        gated = engine.task.trigger is not None
        # runs given inside allow_failure(...) may fail: their end is awaited here too, so
        # that a failure becomes its exception instead of failing the Dask dependency
        tolerated = getattr(engine, "_tolerated", ())
        pending = [
            f
            for f in engine.upstream
            if not f.done() and (gated or f in tolerated or self._live_future(f) is None)
        ]
        if pending:
            self._after(pending, self.submit_attempt)
            return
        failed = engine.upstream_failure()
        if failed is not None:
            self.finish(failed)
            return
        deps: list[Any] = []
        try:
            args = tuple(self._to_dask(a, deps) for a in self.args)
            kwargs = {k: self._to_dask(v, deps) for k, v in self.kwargs.items()}
        except UpstreamTaskError as exc:  # a state among the arguments did not complete
            self.finish(Failed(f"Task run not run: {exc}", exc))
            return
        run, task = self.run, engine.task
        self.submissions += 1
        attempt = run.run_count + 1
        spec = AttemptSpec(
            task_pickle=self.runner._pickled(task),
            task_run_id=run.id,
            name=run.name,
            tags=tuple(run.tags),
            dynamic_key=run.dynamic_key,
            run_count=attempt,
            log_prints=run.log_prints,
            flow_run=_flow_run_info(engine.flow_run),
            env=_env_of(engine.flow_run),
            topic=self.conn.topic,
            log_level=logging.getLogger("flowbook").getEffectiveLevel(),
            origin_pid=os.getpid(),
            map_group=run.map_group,
        )
        self.started = False
        self.end_msg = None
        self.waiting_end = False
        self.deps = deps
        key = f"{task.name}-{run.id}-{self.submissions}"
        self.future = None
        if self.annotations:
            from dask.base import annotate

            from flowbook.task_runners._dask_worker import run_attempt

            self.conn.flush_submissions()  # the queued ones first, in order
            with annotate(**self.annotations):
                future = self.conn.client.submit(
                    run_attempt, spec, args, kwargs, key=key, pure=False, retries=0
                )
            self.submitted(future, self.submissions)
        else:
            # queued: the connection submits what the dispatcher queued in one client.map
            self.conn.queue_submission(_Submission(self, self.submissions, key, spec, args, kwargs))

    def submitted(self, future: Any, number: int) -> None:
        """The Dask future of attempt ``number`` (on the dispatcher)."""
        self.future = future
        future.add_done_callback(lambda f: self.conn.dispatcher.post(self.on_done, f, number))

    def _live_future(self, future: TaskRunFuture[Any]) -> Any:
        """The Dask future of an upstream run's current attempt, if it has one in flight
        (not when the run is final: its future resolves once its hooks ran, wait for that)."""
        call = self.conn.calls.get(future.task_run.id)
        if call is None or call.is_final():
            return None
        if call.future is None and self.conn.queued(call):
            self.conn.flush_submissions()  # the upstream attempt is queued: submit it now
        return call.future

    def _to_dask(self, value: Any, deps: list[Any], tolerate: bool = False) -> Any:
        """``value`` as the worker gets it: upstream futures become Dask futures (``deps``),
        states their values, here in the kernel (states are not picklable), as on threads;
        ``tolerate`` inside ``allow_failure``: a failed state gives its exception."""
        if isinstance(value, TaskRunFuture):
            if value.done():
                data = value.state.data
                if isinstance(data, DaskResult):
                    deps.append(data.future)
                    return data.future
                # a failed run's exception: only a run whose trigger let it start gets here
                return value.result(raise_on_failure=False)
            live = self._live_future(value)
            deps.append(live)
            return live
        kind = type(value)
        if kind is list or kind is FutureList:
            return [self._to_dask(v, deps, tolerate) for v in value]
        if kind is tuple:
            return tuple(self._to_dask(v, deps, tolerate) for v in value)
        if kind is dict:
            return {k: self._to_dask(v, deps, tolerate) for k, v in value.items()}
        if kind is set or kind is frozenset:
            return kind(self._to_dask(v, deps, tolerate) for v in value)
        if isinstance(value, Annotation):  # quote, opaque, allow_failure: the value given
            inner = value.value
            if isinstance(value, quote):
                return inner
            return self._to_dask(inner, deps, tolerate or isinstance(value, allow_failure))
        if isinstance(value, State):
            return resolve_futures(value, raise_on_failure=not tolerate)
        return value

    # -- worker events -------------------------------------------------------------------------
    def _current(self, msg: dict[str, Any]) -> bool:
        return not self.is_final() and msg.get("n") == self.run.run_count + (
            0 if self.started else 1
        )

    def on_start(self, msg: dict[str, Any]) -> None:
        if self.started or not self._current(msg):
            return
        self._begin_run(float(msg.get("t") or time.time()))

    def _begin_run(self, start_s: float | None = None) -> None:
        self.started = True
        run = self.run
        if run.start_s is None and start_s is not None:
            run.start_s = start_s
        self.engine.begin_run()

    def on_end(self, msg: dict[str, Any]) -> None:
        if self.is_final() or msg.get("n") != self.run.run_count:
            return
        self.end_msg = msg
        if self.waiting_end and self.future is not None:
            self.waiting_end = False
            self._complete(self.future)

    def on_output(self, msg: dict[str, Any]) -> None:
        import sys

        text = msg.get("text", "")
        stream = sys.stderr if msg.get("s") == "stderr" else sys.stdout
        with self._as_run():
            stream.write(text)
            with contextlib.suppress(Exception):
                stream.flush()

    def on_log(self, msg: dict[str, Any]) -> None:
        run = self.run
        flow_run = run.flow_run
        level = int(msg.get("level", logging.INFO))
        created = float(msg.get("t") or time.time())
        record = logging.makeLogRecord(
            {
                "name": msg.get("logger", "flowbook.task_runs"),
                "levelno": level,
                "levelname": logging.getLevelName(level),
                "msg": msg.get("msg", ""),
                "created": created,
                "msecs": (created - int(created)) * 1000,
                "flowbook_run": f"Task run {run.name!r}",
                "flowbook_flow_run_id": flow_run.id if flow_run is not None else None,
                "flowbook_task_run_id": run.id,
            }
        )
        with self._as_run():
            logging.getLogger(record.name).handle(record)

    @contextlib.contextmanager
    def _as_run(self) -> Any:
        run = self.run
        flow_token = current_flow_run.set(run.flow_run)
        task_token = current_task_run.set(run)
        try:
            yield
        finally:
            current_task_run.reset(task_token)
            current_flow_run.reset(flow_token)

    # -- the attempt's end ---------------------------------------------------------------------
    def on_done(self, future: Any, number: int) -> None:
        if number != self.submissions or self.is_final():
            return
        if self.cancel_reason is not None or self.engine._cancelled():
            self.finish(
                Cancelled(
                    self.cancel_reason or "The flow run was cancelled while this task run ran."
                )
            )
            return
        status = future.status
        if status == "finished":
            if self.end_msg is None:
                # the worker's "end" event is normally here already; give it a moment
                self.waiting_end = True
                self.conn.dispatcher.later(END_GRACE_S, self._end_overdue, number)
                return
            self._complete(future)
        elif status == "error":
            self._errored(future)
        else:  # cancelled or lost, and not by this flow run (that one is final already)
            self._crashed(
                RuntimeError(f"the Dask future of task run {self.run.name!r} is {status}"),
                f"The Dask cluster dropped task run {self.run.name!r} ({status}).",
            )

    def _end_overdue(self, number: int) -> None:
        # Timers run between queued items: the kernel's Dask thread may be behind, with the
        # "end" still queued. Complete after what is queued now, so an event that reached the
        # kernel within the grace (the run's logs, its end) is applied first.
        if self.waiting_end and number == self.submissions and not self.is_final():
            self.conn.dispatcher.post(self._end_missing, number)

    def _end_missing(self, number: int) -> None:
        if self.waiting_end and number == self.submissions and not self.is_final():
            self.waiting_end = False
            self._complete(self.future)

    def _complete(self, future: Any) -> None:
        if not self.started:
            self._begin_run()
        end = self.end_msg or {}
        inline = end.pop("v", None)  # kept by the result only, until it is first read
        result = DaskResult(
            future, end.get("preview", ""), inline=inline if isinstance(inline, bytes) else None
        )
        if self.run.cache_key is not None:
            self.conn.pool.submit(self._complete_cached, result)
            return
        self.finish(_completed(result))

    def _complete_cached(self, result: DaskResult) -> None:
        # on an I/O thread: the kernel's store writes the value, so the value comes here
        try:
            value = result.get()
            self.engine.handle_success(value)
            state = _completed(result)
        except Exception as exc:
            from flowbook.states import Failed

            state = Failed(f"Task run's result could not be cached: {exc}", exc)
        self.conn.dispatcher.post(self.finish, state)

    def _errored(self, future: Any) -> None:
        if not self.started and any(
            d is not None and d.status in ("error", "cancelled", "lost") for d in self.deps
        ):
            # never ran: an upstream attempt failed. Its run may still retry; decide once
            # every upstream run is final.
            self._after(self.engine.upstream, self.submit_attempt)
            return
        try:
            exc = future.exception()
            tb = future.traceback()
            if exc is not None and tb is not None and exc.__traceback__ is None:
                exc = exc.with_traceback(tb)
        except Exception as fetch_error:
            exc = fetch_error
        if isinstance(exc, ReturnedState):
            self._returned(exc.state)
            return
        from distributed.scheduler import KilledWorker

        if isinstance(exc, KilledWorker):
            self._crashed(
                exc,
                f"The Dask worker running task run {self.run.name!r} died "
                f"(attempt {self.run.run_count + (0 if self.started else 1)}).",
            )
            return
        if exc is None:
            exc = RuntimeError(f"task run {self.run.name!r} failed on Dask without an exception")
        if not self.started:
            self._begin_run()
        self._after_failure(*self.engine.handle_exception(exc))

    def _returned(self, state: State) -> None:
        """The body returned ``state``: the run ends as a body returning it on a thread
        does (a failed state is a failure, retried like an exception; no cache entry)."""
        if not self.started:
            self._begin_run()
        try:
            final = self.engine.returned_state(state)
        except Exception as exc:
            self._after_failure(*self.engine.handle_exception(exc))
            return
        self.finish(final)

    def _crashed(self, exc: BaseException, message: str) -> None:
        if not self.started:
            self._begin_run()
        self._after_failure(*self.engine.handle_exception(exc, crashed=message))

    def _after_failure(self, state: State, delay: float | None) -> None:
        if delay is None:
            self.finish(state)
            return
        if not self.engine.await_retry(state):
            return
        self.conn.dispatcher.later(delay, self._retry)

    def _retry(self) -> None:
        if self.is_final():
            return
        if self.engine._cancelled():
            self.finish(Cancelled("The flow run was cancelled while awaiting a retry."))
            return
        self.submit_attempt()

    # -- final -----------------------------------------------------------------------------------
    def finish(self, state: State) -> None:
        self.engine.finish(state)

    def cancel(self, reason: str) -> None:
        """Cancel from any thread (the flow run's cancel, a cluster closed under the run)."""
        self.conn.dispatcher.post(self._cancel_here, reason)

    def _cancel_here(self, reason: str) -> None:
        if not self.is_final():
            self.engine.cancel(reason)


def _failed_outside(exc: Exception) -> State:
    from flowbook.states import Failed

    return Failed(f"Task run failed outside its body on Dask ({type(exc).__name__}: {exc}).", exc)


def _completed(result: DaskResult) -> State:
    from flowbook.states import Completed

    return Completed(data=result)


def _flow_run_info(flow_run: FlowRun | None) -> FlowRunInfo | None:
    if flow_run is None:
        return None
    parent = flow_run.parent_task_run
    flow = flow_run.flow
    return FlowRunInfo(
        id=flow_run.id,
        name=flow_run.name,
        flow_name=flow.name,
        parameters=dict(flow_run.parameters),
        tags=tuple(flow_run.tags),
        run_count=flow_run.run_count,
        project=getattr(flow, "project", None),
        version=getattr(flow, "version", None),
        parent_flow_run_id=(
            parent.flow_run.id if parent is not None and parent.flow_run is not None else None
        ),
        start_s=flow_run.start_s,
        log_prints=flow_run.log_prints,
    )


def _env_of(flow_run: FlowRun | None) -> dict[str, str]:
    """The ``env`` of the flow run and of the flow runs around it (inner ones win)."""
    chain: list[dict[str, str]] = []
    while flow_run is not None:
        env = flow_run.flow.env
        if env:
            chain.append(env)
        parent = flow_run.parent_task_run
        flow_run = parent.flow_run if parent is not None else None
    merged: dict[str, str] = {}
    for env in reversed(chain):
        merged.update(env)
    return merged
