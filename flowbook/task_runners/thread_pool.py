"""ThreadPoolTaskRunner: submitted task runs execute on a thread pool of the flow run.

The default runner of every flow. ``ConcurrentTaskRunner`` (``concurrent.py``) is the same
runner under Prefect 2's name.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from flowbook.task_runners._pool import PoolClosedError, WorkerPool
from flowbook.task_runners.base import SubmittedCall, TaskRunner

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["DEFAULT_MAX_WORKERS", "ThreadPoolTaskRunner", "check_max_workers"]

# Notebook tasks mostly wait (HTTP, files, databases) or run in C code that releases the GIL
# (NumPy, pandas), so the pool is larger than the core count; it is bounded so that a map over
# 10,000 inputs does not start 10,000 threads. Threads are created only as work arrives.
DEFAULT_MAX_WORKERS = min(32, 4 * (os.cpu_count() or 1) + 4)

_NOT_STARTED = "The flow run's task runner shut down before this task run started."


def check_max_workers(runner: str, max_workers: object, default: str) -> None:
    """Refuse a ``max_workers`` that is not None or a positive int (``runner`` names the class
    in the message, ``default`` says what None gives); the thread and process pools share it."""
    if max_workers is None:
        return
    if not isinstance(max_workers, int) or isinstance(max_workers, bool):
        raise TypeError(
            f"{runner}(max_workers={max_workers!r}): max_workers must be an int, not "
            f"{type(max_workers).__name__}"
        )
    if max_workers < 1:
        raise ValueError(
            f"{runner}(max_workers={max_workers!r}): max_workers must be a positive integer, "
            f"or None for {default}"
        )


_refusing = threading.local()
# refusals nested directly in one another (each ending run releasing the next) before the
# next ones wait for the outermost to end them
_NESTED = 16


def _refuse(call: SubmittedCall, reason: str) -> None:
    """End ``call`` Cancelled.

    Ending a run calls its dependents' callbacks on this thread, which give them to the
    runner, which refuses them here: a chain of a thousand runs waiting on each other would
    exhaust the stack. So up to ``_NESTED`` refusals nest as calls (a dependent is final when
    the run before it has ended, as user code in a state hook may expect), and deeper ones are
    queued and ended in turn by the outermost refusal, which ends every queued one even when
    one of them raises (the first error is raised after)."""
    local = _refusing
    depth: int = getattr(local, "depth", 0)
    if depth >= _NESTED:
        local.todo.append((call, reason))
        return
    if depth == 0:
        local.todo = deque()
    error: BaseException | None = None
    local.depth = depth + 1
    try:
        call.cancel(reason)
    except BaseException as exc:
        if depth:
            raise
        error = exc
    finally:
        local.depth = depth
    if depth:
        return
    todo: deque[tuple[SubmittedCall, str]] = local.todo
    try:
        while todo:
            local.depth = 1
            try:
                next_call, next_reason = todo.popleft()
                next_call.cancel(next_reason)
            except BaseException as exc:  # the others still end
                if error is None:
                    error = exc
            finally:
                local.depth = 0
    finally:
        local.todo = None
    if error is not None:
        raise error


class ThreadPoolTaskRunner(TaskRunner):
    """Runs submitted task runs concurrently on a pool of ``max_workers`` threads.

    Without ``max_workers`` the pool is bounded by ``DEFAULT_MAX_WORKERS``, where Prefect 3
    has no bound.
    """

    queues_calls = True

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        check_max_workers(
            type(self).__name__, max_workers, f"the default ({DEFAULT_MAX_WORKERS} on this machine)"
        )
        self.max_workers = max_workers or DEFAULT_MAX_WORKERS
        self._explicit_max_workers = max_workers
        self._pool: WorkerPool | None = None
        self._pool_lock = threading.Lock()
        self._warned_nested = False
        # shut down by a cancel: calls given now end Cancelled with this reason
        self._refusal: str | None = None

    def duplicate(self) -> Self:
        return type(self)(max_workers=self._explicit_max_workers)

    def start(self) -> None:
        self._refusal = None
        super().start()

    def cancel_all(self, reason: str) -> None:
        with self._pool_lock:
            self._refusal = reason
        self.shutdown(cancel_pending=True)

    def queued_calls(self) -> int:
        pool = self._pool
        return pool.queued() if pool is not None else 0

    # A runner pickles as its configuration (its attributes, a subclass's own among them): a
    # flow pickled with its runner (cloudpickle, a copy for another process) gets a fresh,
    # unstarted runner, as duplicate() gives; the pool and its lock stay behind.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_pool"], state["_pool_lock"]
        state["_started"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pool = None
        self._pool_lock = threading.Lock()
        self._refusal = None

    def _execute(self, call: SubmittedCall) -> None:
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                refusal = self._refusal
                if refusal is None and self._pool is None:
                    self._pool = WorkerPool(self.max_workers, "flowbook-task")
                pool = self._pool
            if refusal is not None:
                _refuse(call, refusal)
                return
            assert pool is not None
        try:
            if pool.submit(call) and not self._warned_nested:
                self._warn_if_nested(pool)
        except PoolClosedError:
            # The pool was shut down (the flow run was cancelled) while this call waited for
            # its upstream runs: it must end, not hang.
            _refuse(call, self._refusal or _NOT_STARTED)

    def _warn_if_nested(self, pool: WorkerPool) -> None:
        """Warn once per runner when a running task submits a task run that must queue
        behind busy workers: if the task then waits for it, no worker is free to run it."""
        from flowbook.engine.runs import current_task_run
        from flowbook.logging import get_run_logger
        from flowbook.states import StateType

        parent = current_task_run.get()
        if parent is None or parent.state is None or parent.state.type is not StateType.RUNNING:
            return  # the flow's own thread, or a parked call released as its upstream ended
        if not threading.current_thread().name.startswith(pool.prefix + "_"):
            return
        with self._pool_lock:  # once per runner, even when two workers get here together
            if self._warned_nested:
                return
            self._warned_nested = True
        get_run_logger().warning(
            "Task run %r submitted a task run while all %d worker threads of its %s were "
            "busy: if it waits for that run's result and every worker is such a task, no "
            "worker is free to run it and the wait may only end at its timeout. Give the "
            "runner more workers than the deepest nesting of tasks that wait on tasks "
            "(%s(max_workers=N)), or submit the child tasks from the flow.",
            parent.name,
            pool.max_workers,
            type(self).__name__,
            type(self).__name__,
        )

    def shutdown(self, cancel_pending: bool = False) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
            if cancel_pending and self._refusal is None:
                # the flow run was cancelled (a timeout, an interrupt, a cancel): its engine
                # ends the runs it has, and a call given after this one ends Cancelled at once
                # (a body still inside `.map()` may go on submitting until it is back in its
                # own code) instead of starting a new pool that nobody would shut down
                self._refusal = _NOT_STARTED
        if pool is not None:
            pool.shutdown(wait=not cancel_pending, cancel_pending=cancel_pending)
        super().shutdown(cancel_pending)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_workers={self.max_workers})"
