"""Futures: handles on task runs submitted to a task runner.

A ``TaskRunFuture`` resolves once its task run reaches a final state. It is deliberately
small: one final state, callbacks, and a waiting event created only when somebody actually
blocks (most futures in a large ``.map`` are never waited on one by one). All futures share
one short-held lock, which is cheaper than a lock and an event per future.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from flowbook.engine.interrupts import call_unshielded, current_body
from flowbook.states import State

if TYPE_CHECKING:
    from flowbook.engine.runs import TaskRun

__all__ = [
    "DoneAndNotDone",
    "FutureList",
    "PrefectFuture",
    "PrefectFutureList",
    "TaskRunFuture",
    "as_completed",
    "resolve_futures_to_results",
    "resolve_futures_to_states",
    "wait",
]

R = TypeVar("R")
_lock = threading.Lock()
# The FutureList.result() calls now waiting (_FailureWaiter), by the id of the flow run (of
# None outside flows) of the runs they wait for: a run that ends in a state other than
# Completed is handed to those of its flow run, so that a failure later in a list is raised at
# once. Replaced whole (under _lock), read without it: a run that completes pays one truth
# test. (Keyed by id: a waiter left behind by an exception landing in its removal keeps no
# flow run alive; another run reusing the id only wakes it for nothing.)
_failure_waiters: dict[int, frozenset[_FailureWaiter]] = {}


class TaskRunFuture(Generic[R]):
    """The future of one submitted task run: ``result()``, ``wait()``, ``state``."""

    __slots__ = ("_callbacks", "_event", "_final", "task_run")

    def __init__(self, task_run: TaskRun) -> None:
        self.task_run = task_run
        self._final: State | None = None
        self._event: threading.Event | None = None
        self._callbacks: list[Callable[[TaskRunFuture[R]], None]] | None = None

    @property
    def task_run_id(self) -> str:
        return self.task_run.id

    @property
    def state(self) -> State:
        """The task run's current state (its final state once done)."""
        final = self._final
        if final is not None:
            return final
        state = self.task_run.state
        assert state is not None  # the engine sets Pending before handing out a future
        return state

    def done(self) -> bool:
        return self._final is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task run is final, or ``timeout`` seconds; True if it is final."""
        if self._final is not None:
            return True
        with _lock:
            # another thread may have finished the run since the unlocked check
            if self._final is not None:
                return True  # type: ignore[unreachable]
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return _wait_event(event, timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The task's return value; raises the task's exception if it failed.

        ``timeout`` (seconds) raises ``TimeoutError`` if the run is not final by then.
        """
        if not self.wait(timeout):
            raise TimeoutError(
                f"task run {self.task_run.name!r} did not finish within {timeout} s "
                f"(state: {self.state.short()})"
            )
        state = self._final
        assert state is not None
        if raise_on_failure and not state.is_completed():
            __tracebackhide__ = True  # IPython shows the caller's frame, not this one
            self.task_run.observed = True
        result: R = state.result(raise_on_failure=raise_on_failure)
        return result

    def add_done_callback(self, fn: Callable[[TaskRunFuture[R]], None]) -> None:
        """Call ``fn(future)`` once the run is final (at once if it already is)."""
        with _lock:
            if self._final is None:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        fn(self)

    async def wait_async(self) -> None:
        """Wait for the run to be final without blocking the running event loop."""
        if self._final is not None:
            return
        import asyncio  # awaited futures only: not imported by ``import flowbook``

        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not woken.done():
                woken.set_result(None)

        def wake(_: TaskRunFuture[R]) -> None:
            loop.call_soon_threadsafe(settle)

        self.add_done_callback(wake)
        await woken

    def __await__(self) -> Generator[Any, None, R]:
        """``await future`` in async flows gives the result without blocking the loop."""
        yield from self.wait_async().__await__()
        return self.result()

    # -- engine side ---------------------------------------------------------------------------
    def _set_final(self, state: State) -> bool:
        """Resolve the future; False (and no effect) if it was already resolved."""
        with _lock:
            if self._final is not None:
                return False
            self._final = state
            event, callbacks = self._event, self._callbacks
            self._callbacks = None
        if event is not None:
            event.set()
        try:
            if callbacks:
                _call_back(self, callbacks)
        finally:  # (an interrupt in a callback: the failure is still told)
            if _failure_waiters and state.type._value_ != "COMPLETED":
                for waiter in _failure_waiters.get(id(self.task_run.flow_run), ()):
                    waiter.failures.append(self)
                    waiter.event.set()
        return True

    def __repr__(self) -> str:
        return f"TaskRunFuture({self.task_run.name!r}, state={self.state.short()})"


def _call_back(future: TaskRunFuture[Any], callbacks: list[Callable[[Any], None]]) -> None:
    """Call a resolved future's callbacks, each whatever the others do: an error is logged
    (as ``concurrent.futures`` does), an interrupt raised after the last one. The engine's
    own callbacks (which start dependent runs) are among them: one that raised stopped the
    rest, and a dependent run never started. Callbacks are user code: a Ctrl-C stops them
    even while a run's end is being written (``interrupts.call_unshielded``)."""
    held: BaseException | None = None
    for fn in callbacks:
        try:
            call_unshielded(fn, future)
        except Exception:
            import logging

            logging.getLogger("flowbook.futures").exception(
                "A done callback of the future of task run %r raised; the other "
                "callbacks were called",
                future.task_run.name,
            )
        except BaseException as exc:
            held = held or exc
    if held is not None:
        raise held


class FutureList(list[TaskRunFuture[R]]):
    """The futures of a ``.map()`` call, with ``result()`` and ``wait()`` over all of them."""

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        """The results in the list's order. With ``raise_on_failure``, a run of the list that
        did not complete has its failure raised as soon as it ends, without waiting for the
        runs before it (as Prefect 3 does): of the runs failed before the call waits, the
        first in the list's order; then the first to end. ``timeout`` (seconds) bounds the
        whole call.

        Only the run being waited for gets a callback; a run that ends in a state other than
        Completed is handed to the calls waiting for runs of its flow run, which raise it if
        it is one of theirs (so a completed run pays nothing for this)."""
        __tracebackhide__ = True  # a failure raised here shows the caller's frame, not this one
        if timeout is not None and timeout < 0:
            raise ValueError(
                f"timeout={timeout!r}: give the seconds to wait, 0 or more (None waits as "
                "long as the runs take)"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[R] = []
        if not raise_on_failure:
            for f in self:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                out.append(f.result(left, False))
            return out
        waiter: _FailureWaiter | None = None
        members: set[TaskRunFuture[Any]] = set()
        try:
            for i, f in enumerate(self):
                if f._final is None:
                    if waiter is None:
                        # about to wait: handed the failures of the flow runs of the runs left
                        # from now on (in the try: an interrupt leaves nothing behind), then
                        # those that came before are looked for, so that none falls in between
                        waiter = _FailureWaiter()
                        members = set(itertools.islice(self, i, None))
                        _watch_failures(waiter, {id(g.task_run.flow_run) for g in members})
                        failed = _first_failed(self, i)
                        if failed is not None:
                            failed.result()  # (raises)
                    _wait_for(f, waiter, members, deadline, timeout)
                out.append(f.result())  # (raises if the run did not complete)
        finally:
            if waiter is not None:
                _unwatch_failures(waiter)
        return out

    def wait(self, timeout: float | None = None) -> bool:
        _, not_done = wait(self, timeout)
        return not not_done


def _wait_for(
    f: TaskRunFuture[Any],
    waiter: _FailureWaiter,
    members: set[TaskRunFuture[Any]],
    deadline: float | None,
    timeout: float | None,
) -> None:
    """Wait until ``f`` ends; raise the failure of a run among ``members`` that ended first
    (the first handed to ``waiter``), or ``TimeoutError`` at ``deadline``."""
    __tracebackhide__ = True
    woken = waiter.event
    failures = waiter.failures
    called_back = False
    while True:
        woken.clear()  # (before looking: an end or a failure from now on sets it again)
        if f._final is not None:
            return
        while failures:
            failed = failures.popleft()
            if failed in members:
                failed.result()  # (raises)
        if not called_back:
            f.add_done_callback(waiter.wake)
            called_back = True
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not _wait_event(woken, left):
            raise TimeoutError(
                f"task run {f.task_run.name!r} did not finish within {timeout} s "
                f"(state: {f.state.short()})"
            )


def _first_failed(futures: list[TaskRunFuture[Any]], start: int) -> TaskRunFuture[Any] | None:
    """The first future from ``start`` on whose run ended in a state other than Completed."""
    for i in range(start, len(futures)):
        final = futures[i]._final
        if final is not None and final.type._value_ != "COMPLETED":
            return futures[i]
    return None


class _FailureWaiter:
    """A ``FutureList.result()`` call waiting: the futures of the runs of ``flow_runs`` (ids)
    that end in a state other than Completed are appended to ``failures``, then ``event`` is
    set (as it is when the run waited for ends)."""

    __slots__ = ("event", "failures", "flow_runs")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.failures: deque[TaskRunFuture[Any]] = deque()
        self.flow_runs: list[int] = []

    def wake(self, _: TaskRunFuture[Any]) -> None:
        """The done callback of the run being waited for."""
        self.event.set()


def _watch_failures(waiter: _FailureWaiter, flow_runs: set[int]) -> None:
    """Hand ``waiter`` the failed runs of the flow runs ``flow_runs`` (ids) from now on."""
    global _failure_waiters
    with _lock:
        waiter.flow_runs.extend(flow_runs)
        changed = dict(_failure_waiters)
        for flow_run in flow_runs:
            changed[flow_run] = changed.get(flow_run, frozenset()) | {waiter}
        _failure_waiters = changed


def _unwatch_failures(waiter: _FailureWaiter) -> None:
    """Hand ``waiter`` no failed run any more."""
    global _failure_waiters
    with _lock:
        changed = dict(_failure_waiters)
        for flow_run in waiter.flow_runs:
            left = changed.get(flow_run, frozenset()) - {waiter}
            if left:
                changed[flow_run] = left
            else:
                changed.pop(flow_run, None)
        _failure_waiters = changed


def _wait_event(event: threading.Event, timeout: float | None) -> bool:
    """``event.wait(timeout)``, marked as a place where a kernel interrupt may stop the
    caller (a wait for runs)."""
    body = current_body()
    if body is None:
        return event.wait(timeout)
    body.waiting += 1
    try:
        return event.wait(timeout)
    finally:
        body.waiting -= 1


class DoneAndNotDone(NamedTuple):
    done: set[TaskRunFuture[Any]]
    not_done: set[TaskRunFuture[Any]]


def wait(futures: Iterable[TaskRunFuture[Any]], timeout: float | None = None) -> DoneAndNotDone:
    """Wait for all ``futures`` (or ``timeout`` seconds); returns (done, not_done) sets."""
    items = _check_futures(futures, "wait")
    deadline = None if timeout is None else time.monotonic() + timeout
    for f in items:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not f.wait(left):
            break
    done = {f for f in items if f.done()}
    return DoneAndNotDone(done, set(items) - done)


def as_completed(
    futures: Iterable[TaskRunFuture[R]], timeout: float | None = None
) -> Iterator[TaskRunFuture[R]]:
    """Yield ``futures`` as they finish; ``TimeoutError`` if some are not done in time."""
    items = _check_futures(futures, "as_completed")
    finished: queue.SimpleQueue[TaskRunFuture[R]] = queue.SimpleQueue()
    for f in items:
        f.add_done_callback(finished.put)
    deadline = None if timeout is None else time.monotonic() + timeout
    for _ in range(len(items)):
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            yield finished.get(timeout=left)
        except queue.Empty:
            pending = sum(1 for f in items if not f.done())
            raise TimeoutError(
                f"{pending} of {len(items)} futures unfinished after {timeout} s"
            ) from None


def resolve_futures_to_results(expr: Any) -> Any:
    """``expr`` with every future in it replaced by its result (waiting for it); containers
    holding a future are rebuilt with the same type, anything else is returned as it is."""
    from flowbook.engine.values import resolve_futures

    return resolve_futures(expr)


def resolve_futures_to_states(expr: Any) -> Any:
    """``expr`` with every future in a list, tuple, set or dict (at any depth) replaced by its
    final state (waiting for it); other objects are returned as they are."""
    if isinstance(expr, TaskRunFuture):
        expr.wait()
        return expr.state
    kind = type(expr)
    if kind is dict:
        return {k: resolve_futures_to_states(v) for k, v in expr.items()}
    if kind in (list, tuple, set, frozenset):
        return kind(resolve_futures_to_states(v) for v in expr)
    if isinstance(expr, tuple) and hasattr(expr, "_fields"):  # a namedtuple
        return kind(*(resolve_futures_to_states(v) for v in expr))
    return expr


# Prefect 3's names for the same classes (``from prefect.futures import PrefectFuture``)
PrefectFuture = TaskRunFuture
PrefectFutureList = FutureList


def _check_futures(futures: Iterable[Any], caller: str) -> list[Any]:
    items = list(dict.fromkeys(futures))
    for f in items:
        if not isinstance(f, TaskRunFuture):
            raise TypeError(
                f"{caller}() takes futures returned by Task.submit() or Task.map(); "
                f"got {f!r} of type {type(f).__name__}"
            )
    return items
