"""A small thread pool for task runs: a queue of calls and worker threads started on demand.

``concurrent.futures.ThreadPoolExecutor`` makes a ``Future`` (a ``Condition`` around an
``RLock``) and takes a Python-level ``Semaphore`` for every call it is given: for a map over
10,000 inputs that bookkeeping costs more than flowbook's own. Task runs report their end
through their own futures, so the pool needs neither: it queues the call itself (an object
with a ``run()`` method; a bound method per queued call would be 64 bytes more for each run
still waiting, up to a million in a large map), and a worker that finished a call leaves a
token in a deque (appending and popping are atomic), which the next submit takes instead of
starting a thread. Workers never take a lock.

Threads are daemon threads named ``{prefix}_N`` and start only as work arrives, up to
``max_workers``: a worker is started for a call when no idle worker is there to take it.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Protocol

__all__ = ["PoolClosedError", "Runnable", "WorkerPool"]


class Runnable(Protocol):
    def run(self) -> object: ...


class PoolClosedError(RuntimeError):
    """Raised by ``WorkerPool.submit`` after ``shutdown``."""


class WorkerPool:
    def __init__(self, max_workers: int, prefix: str) -> None:
        self.max_workers = max_workers
        self.prefix = prefix
        self._calls: queue.SimpleQueue[Runnable | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # one token per worker that finished a call and will take the next queued one
        self._idle: deque[None] = deque()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, call: Runnable) -> bool:
        """Queue ``call.run()``; raises ``PoolClosedError`` once the pool is shut down. True
        when ``call`` waits behind busy workers: every worker is running a call and none is
        idle."""
        busy = False
        with self._lock:
            if self._closed:
                raise PoolClosedError(f"the {self.prefix} pool is shut down")
            try:
                self._idle.pop()
                start = False
            except IndexError:
                start = len(self._threads) < self.max_workers
                busy = not start
            if start:
                thread = threading.Thread(
                    target=self._work,
                    name=f"{self.prefix}_{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
            self._calls.put(call)
        if start:
            thread.start()
        return busy

    def queued(self) -> int:
        """How many calls wait for a worker."""
        return self._calls.qsize()

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> list[Runnable]:
        """Stop taking calls. With ``cancel_pending``, calls not started yet are dropped and
        returned; with ``wait``, block until the workers have finished what they run."""
        dropped: list[Runnable] = []
        with self._lock:
            if self._closed:
                return dropped
            self._closed = True
            threads = list(self._threads)
        if cancel_pending:
            while True:
                try:
                    queued = self._calls.get_nowait()
                except queue.Empty:
                    break
                if queued is not None:
                    dropped.append(queued)
        for _ in threads:
            self._calls.put(None)  # a worker that takes None ends
        if wait:
            me = threading.current_thread()
            for thread in threads:
                if thread is not me:
                    thread.join()
        return dropped

    def _work(self) -> None:
        calls = self._calls
        idle = self._idle.append
        while True:
            try:
                call = calls.get()
                if call is None:
                    return
                call.run()
            except BaseException:  # a call's own errors end in its task run's state
                # (``RunInterrupted`` raised into this thread by a cancel, or an error the call
                # could not record): the worker stays for the next call
                pass
            call = None
            idle(None)
