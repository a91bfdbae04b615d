"""Plain-Python baseline engine: the physical limit for the same workload code.

Engine adapter interface (what workloads.py uses):
  flow            decorator, bare or flow(task_runner=...)
  task            decorator, bare or task(retries=, retry_delay_seconds=, cache_key_fn=)
                  -> callable with .submit(*args) -> future (.result()) and
                     .map(iterable) -> list of futures with .result()
  sequential(), threads(n=None), dask(n_workers, threads_per_worker)  task runners
  dask_warm(n_workers, threads_per_worker), processes(n)  runners whose cluster or pool
                  is shared by the process's flow runs (started on first use)
  task_input_hash cache_key_fn(context, arguments) -> str
  IMPORT          module imported by the import_time workload (None: none)
  VERSION         engine version string; warmup() optional, run before timing

Here flow/task add nothing but a runner context, retries, and an SQLite cache.
"""

import atexit
import concurrent.futures as cf
import contextvars
import functools
import hashlib
import inspect
import os
import pickle
import sqlite3
import sys
import threading
import time

IMPORT = None
VERSION = "python " + sys.version.split()[0]
CACHE_PATH = os.environ.get("BENCH_PLAIN_CACHE", "/tmp/bench-plain-cache.sqlite")

_runner = contextvars.ContextVar("runner", default=None)


class _Inline:
    """Sequential runner: runs at submit time."""

    def submit(self, fn, *args):
        f = cf.Future()
        try:
            f.set_result(fn(*args))
        except BaseException as exc:
            f.set_exception(exc)
        return f

    def shutdown(self):
        pass


class _Dask:
    def __init__(self, **cluster_kwargs):
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(**cluster_kwargs)
        self.client = Client(self.cluster)

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def shutdown(self):
        self.client.close()
        self.cluster.close()


class _Gathered(list):
    """client.map's futures; result() is one client.gather for all of them."""

    def __init__(self, client, futures):
        super().__init__(futures)
        self.client = client

    def result(self):
        return self.client.gather(list(self))


class _DaskWarm(_Dask):
    """A LocalCluster kept for the process's later flow runs (closed at exit)."""

    def map_tasks(self, task, iterable):
        return _Gathered(self.client, self.client.map(task, list(iterable), pure=False))

    def shutdown(self):
        pass


_warm = {}


def dask_warm(n_workers=2, threads_per_worker=1):
    """Flow runs share one warm cluster, which is started on first use."""
    key = ("dask", n_workers, threads_per_worker)

    def make():
        if key not in _warm:
            _warm[key] = _DaskWarm(n_workers=n_workers, threads_per_worker=threads_per_worker)
            atexit.register(_Dask.shutdown, _warm[key])
        return _warm[key]

    return make


class _Processes(cf.ProcessPoolExecutor):
    def shutdown(self, *args, **kwargs):  # flow runs share the pool; closed at exit
        pass


def processes(n):
    """Flow runs share one ProcessPoolExecutor(n), started on first use."""
    key = ("processes", n)

    def make():
        if key not in _warm:
            _warm[key] = _Processes(n)
            atexit.register(cf.ProcessPoolExecutor.shutdown, _warm[key])
        return _warm[key]

    return make


def sequential():
    return _Inline


def threads(n=None):
    return lambda: cf.ThreadPoolExecutor(n)


def dask(n_workers=2, threads_per_worker=1):
    return lambda: _Dask(n_workers=n_workers, threads_per_worker=threads_per_worker)


def flow(fn=None, *, task_runner=None, **_ignored):
    if fn is None:
        return functools.partial(flow, task_runner=task_runner)
    make_runner = task_runner or threads()

    @functools.wraps(fn)
    def run(*args, **kwargs):
        runner = make_runner()
        token = _runner.set(runner)
        try:
            return fn(*args, **kwargs)
        finally:
            _runner.reset(token)
            runner.shutdown()

    return run


class _FutureList(list):
    def result(self):
        return [f.result() for f in self]


class _Cache:
    def __init__(self, path):
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value BLOB)")
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            row = self.db.execute("SELECT value FROM cache WHERE key=?", (key,)).fetchone()
        return None if row is None else pickle.loads(row[0])

    def put(self, key, value):
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO cache VALUES (?, ?)", (key, pickle.dumps(value))
            )


_cache = None


def _get_cache():
    global _cache
    if _cache is None:
        _cache = _Cache(CACHE_PATH)
    return _cache


class _Context:
    def __init__(self, task):
        self.task = task


def task_input_hash(context, arguments):
    payload = (context.task.task_key, context.task.fn.__code__.co_code, arguments)
    return hashlib.sha256(pickle.dumps(payload)).hexdigest()


class Task:
    def __init__(self, fn, retries=0, retry_delay_seconds=0, cache_key_fn=None, **_ignored):
        self.fn, self.retries, self.delay, self.cache_key_fn = (
            fn,
            retries,
            retry_delay_seconds,
            cache_key_fn,
        )
        self.task_key = f"{fn.__module__}.{fn.__qualname__}"

    def __call__(self, *args):
        args = [a.result() if isinstance(a, cf.Future) else a for a in args]
        key = None
        if self.cache_key_fn:
            params = inspect.signature(self.fn).bind(*args).arguments
            key = self.cache_key_fn(_Context(self), params)
            cached = _get_cache().get(key)
            if cached is not None:
                return cached[0]
        for attempt in range(self.retries + 1):
            try:
                result = self.fn(*args)
                break
            except Exception:
                if attempt == self.retries:
                    raise
                time.sleep(self.delay)
        if key is not None:
            _get_cache().put(key, (result,))
        return result

    def submit(self, *args):
        runner = _runner.get() or _Inline()
        return runner.submit(self, *args)

    def map(self, iterable):
        runner = _runner.get()
        if hasattr(runner, "map_tasks"):  # client.map, and one client.gather in result()
            return runner.map_tasks(self, iterable)
        return _FutureList(self.submit(x) for x in iterable)


def task(fn=None, **options):
    if fn is None:
        return functools.partial(task, **options)
    return Task(fn, **options)
