"""Timeouts for sync bodies, and running coroutines from sync code.

A sync function cannot be stopped from outside, so a body with ``timeout_seconds`` runs on a
watcher-owned thread while the run's own thread waits. When time is up the run is finished
as ``TimedOut`` at once, and the body's thread gets an asynchronous ``RunTimeoutError``
that stops it at its next Python instruction of its own code (a long C call, such as
``time.sleep``, still finishes first, but nobody waits for it). Async bodies run in an anyio
cancel scope whose deadline is the timeout.

``run_coro_sync`` runs a coroutine to completion from sync code. Where the current thread
already runs an event loop (a notebook cell, an async flow calling a sync subflow that calls
an async task) it uses a fresh thread with its own loop: flowbook never nests loops. While it
waits, the loop it blocks can deliver neither an async body's deadline nor its interrupt, nor
a cancel of its asyncio task (``asyncio.run``'s answer to a Ctrl-C); so the wait watches
those the loop would have delivered at the body's next ``await`` (``_Watch``: bodies of its
own asyncio task, none past a shielded anyio scope), and the stops of the waits it runs under
(when the coroutine's own loop is the one blocked). On any of them it cancels the coroutine
it runs, waits for that to end, and raises ``_BodyStopped`` for the body concerned: a
``RunInterrupted`` that ``await_body`` of that body turns into what its scope would have
raised, so user code between them cannot take it for an error of its own.
"""

from __future__ import annotations

import contextvars
import math
import sys
import threading
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar

from flowbook.engine.interrupts import AsyncBody, Body, call_body, current_body, interrupt
from flowbook.exceptions import RunInterrupted, RunTimeoutError

__all__ = ["await_body", "call_with_timeout", "run_coro_sync"]

T = TypeVar("T")


# How often a wait that blocks an event loop looks at what it watches (a deadline ends the
# wait itself)
_WATCH_S = 0.02


class _Watched(NamedTuple):
    """An async body the current coroutine runs in, with what a blocked wait watches."""

    body: AsyncBody
    scope: Any  # its anyio cancel scope
    task: Any  # the asyncio task it runs in
    deadline: float  # its loop's time (``loop.time()``); inf without a timeout
    timeout: float | None
    what: str
    run_id: str
    outer: _Watched | None  # the async body this one runs in (on any loop), if any


# the innermost async body the current code runs in
_watched: ContextVar[_Watched | None] = ContextVar("flowbook_async_body", default=None)
# set by each blocking wait of ``run_coro_sync`` in the context of the coroutine it runs: one
# flag per wait it runs under, set when that wait stops (a wait nested in that coroutine, on
# that coroutine's loop, then stops too)
_stops: ContextVar[tuple[threading.Event, ...]] = ContextVar("flowbook_waits", default=())


class _BodyStopped(RunInterrupted):
    """Raised out of a wait that blocked the loop of ``body``, for that body's
    ``await_body`` to raise ``exc`` in its stead. On its way it stops what it passes
    through as an interrupt does (the runs between end ``Cancelled``)."""

    def __init__(self, body: AsyncBody, exc: BaseException) -> None:
        super().__init__()
        self.body = body
        self.exc = exc


def _timed_out(what: str, timeout: float | None, run_id: str) -> RunTimeoutError:
    return RunTimeoutError(f"{what} exceeded its timeout of {timeout:g} second(s)", run_id)


def call_with_timeout(
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float,
    what: str,
    run_id: str,
    register: Callable[[Body | None], None] | None = None,
) -> T:
    """``fn(*args, **kwargs)``, or ``RunTimeoutError`` after ``timeout`` seconds.

    The body runs as user code (``call_body``) on a thread of its own; ``register`` is told
    its ``Body`` there, so that a cancel reaches it. At the deadline the body gets
    ``RunTimeoutError`` (only while it runs its own code: see ``flowbook.engine.interrupts``);
    when the waiting thread is interrupted (a Ctrl-C), the body gets ``RunInterrupted``.
    """
    ctx = contextvars.copy_context()
    outcome: list[Any] = []
    bodies: list[Body | None] = []

    def note(body: Body | None) -> None:
        bodies.append(body)
        if register is not None:
            register(body)

    def run() -> None:
        try:
            outcome.append((True, ctx.run(call_body, fn, args, kwargs, note)))
        except BaseException as exc:  # handed to the waiting thread, which decides
            outcome.append((False, exc))

    # (a subflow's: its caller's body is in flowbook code, where a Ctrl-C would wait; this
    # is a wait for a run, where it is raised at once)
    caller = current_body()
    if caller is not None and caller.pending is not None:
        raise RunInterrupted  # (a Ctrl-C that came while the subflow was set up: it never starts)
    thread = threading.Thread(target=run, name="flowbook-timeout", daemon=True)
    thread.start()
    if caller is not None:
        caller.waiting += 1
    try:
        if caller is not None and caller.pending is not None:  # (one that came just now)
            raise RunInterrupted
        thread.join(timeout)
    except BaseException:  # a Ctrl-C on this (the waiting) thread stops the body too
        if bodies:
            interrupt(bodies[0], RunInterrupted)
        raise
    finally:
        if caller is not None:
            caller.waiting -= 1
    if thread.is_alive():
        if bodies:
            interrupt(bodies[0], RunTimeoutError)
        raise _timed_out(what, timeout, run_id)
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


async def await_body(
    make: Callable[[], Awaitable[T]],
    timeout: float | None,
    what: str,
    run_id: str,
    register: Callable[[Body | AsyncBody | None], None],
) -> T:
    """Await the body ``make()`` returns, inside an anyio cancel scope.

    The scope's deadline is the timeout (``RunTimeoutError``); ``register`` is told an
    ``AsyncBody`` whose ``cancel`` cancels the scope from any thread (a flow run's cancel),
    which ends the body with ``RunInterrupted``.
    """
    import asyncio

    import anyio

    loop = asyncio.get_running_loop()
    deadline = math.inf if timeout is None else anyio.current_time() + timeout
    groups = _exception_groups()
    stopped: BaseException | None = None
    with anyio.CancelScope(deadline=deadline) as scope:
        body = AsyncBody(loop, scope.cancel)
        token = _watched.set(
            _Watched(
                body, scope, asyncio.current_task(), deadline, timeout, what, run_id, _watched.get()
            )
        )
        try:
            register(body)
            return await make()
        except _BodyStopped as stop:
            if stop.body is not body:
                raise
            stopped = stop.exc
        except groups as group:
            # a task group the body waited in (as its host) wraps the stop: taken out of it;
            # the group's other errors go on without it, as anyio drops a cancel beside them
            mine, rest = group.split(lambda e: isinstance(e, _BodyStopped) and e.body is body)
            if mine is None:
                raise
            if rest is not None:
                raise rest from None
            stopped = _first_leaf(mine).exc
        finally:
            body.done = True
            _watched.reset(token)
    if stopped is not None:  # a wait that blocked this loop stopped for this body
        if isinstance(stopped, asyncio.CancelledError):
            # the task's cancel is still pending (the loop never got to deliver it): taken
            # here, not at the first ``await`` of whatever cleans up after the body
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                pass
        raise stopped
    # only reached when the scope was cancelled: by the deadline or by an interrupt
    if body.exc_type is not None:
        raise body.exc_type
    raise _timed_out(what, timeout, run_id)


def _exception_groups() -> Any:
    """``BaseExceptionGroup``: built in from Python 3.11; before, the backport anyio imports
    (looked up here, when anyio is imported already, not by ``import flowbook``)."""
    import builtins

    group = getattr(builtins, "BaseExceptionGroup", None)
    if group is None:  # (Python 3.10)
        group = sys.modules["exceptiongroup"].BaseExceptionGroup
    return group


def _first_leaf(group: Any) -> Any:
    """The first exception in ``group`` that is not itself a group."""
    while hasattr(group, "exceptions"):
        group = group.exceptions[0]
    return group


def run_coro_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run the awaitable that ``make()`` returns to completion and return its value."""
    import asyncio  # async bodies only: not imported by ``import flowbook``

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(make))
    watch = _Watch(loop, asyncio.current_task())
    stop = watch.stop()
    if stop is not None:  # (stopped already: the coroutine is not started)
        raise stop
    flag = threading.Event()
    ctx = contextvars.copy_context()
    ctx.run(_stops.set, (*_stops.get(), flag))
    outcome: list[Any] = []
    running: list[Any] = []  # (its loop, its task), once it runs
    ended = threading.Event()  # the coroutine has ended (its loop may still be closing)

    def body() -> None:
        try:
            outcome.append((True, ctx.run(asyncio.run, _await(make, running, ended))))
        except BaseException as exc:  # re-raised on the calling thread
            outcome.append((False, exc))
        finally:
            ended.set()

    # (a sync body's: this is a wait for a run, where its interrupt is raised at once)
    caller = current_body()
    if caller is not None and caller.pending is not None:
        raise RunInterrupted
    thread = threading.Thread(target=body, name="flowbook-async", daemon=True)
    thread.start()
    if caller is not None:
        caller.waiting += 1
    try:
        if caller is not None and caller.pending is not None:  # (one that came just now)
            raise RunInterrupted
        while True:
            thread.join(watch.wait_s())
            if not thread.is_alive():
                break
            if caller is not None and caller.pending is not None:
                raise RunInterrupted  # (a sync body's interrupt, left pending in flowbook code)
            stop = watch.stop()
            if stop is not None:
                break
    except BaseException:  # an interrupt of this thread: the coroutine stops too, unwaited
        _cancel_running(running, ended)
        flag.set()
        raise
    finally:
        if caller is not None:
            caller.waiting -= 1
    if stop is not None:
        # the cancel first: a wait inside the coroutine stops too when it sees the flag, and
        # the body it stops then takes that cancel, already queued, with its own
        _cancel_running(running, ended)
        flag.set()
        ended.wait()
        raise stop
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


class _Watch:
    """What a wait that blocks ``loop`` (running ``task``) watches, so that it stops where the
    loop would have stopped the task at its next ``await``: the deadlines and interrupts of the
    flowbook async bodies that task runs in whose scopes it sees (none past a shielded scope),
    and, while such a body is there to take it, a cancel of the task (one pending already, a
    new one, or the stop of a wait the current code runs under), which goes through anyio's
    shields as asyncio's own cancel does."""

    __slots__ = ("bodies", "cancels", "flags", "loop", "pending", "taker", "task")

    def __init__(self, loop: Any, task: Any) -> None:
        self.loop = loop
        self.task = task
        self.bodies: list[_Watched] = []  # (innermost first)
        # the innermost body of the task: it takes a cancel of the task (asyncio's cancel
        # goes through anyio's shields, as it would at an ``await``)
        self.taker: AsyncBody | None = None
        watched = _watched.get()
        # (read only under a flowbook async body: a plain loop's wait loads nothing of anyio)
        seen = _visible_scopes(task) if watched is not None else set()
        while watched is not None:
            if watched.task is task and not watched.body.done:
                if self.taker is None:
                    self.taker = watched.body
                if id(watched.scope) in seen:
                    self.bodies.append(watched)
            watched = watched.outer
        cancelling = getattr(task, "cancelling", None)  # (3.11+)
        self.cancels = cancelling() if cancelling is not None else None
        # a cancel requested and not delivered yet (asyncio's own flag, which anyio reads too)
        self.pending = bool(getattr(task, "_must_cancel", False))
        self.flags = _stops.get()

    def wait_s(self) -> float:
        deadline = min((w.deadline for w in self.bodies), default=math.inf)
        return max(0.0, min(deadline - float(self.loop.time()), _WATCH_S))

    def stop(self) -> _BodyStopped | None:
        """What to raise instead of waiting on; None: wait on."""
        import asyncio

        now = float(self.loop.time())
        for watched in self.bodies:
            body = watched.body
            if body.exc_type is not None:  # an interrupt: its callback waits for the loop
                return _BodyStopped(body, body.exc_type())
            if watched.deadline <= now:
                return _BodyStopped(body, _timed_out(watched.what, watched.timeout, watched.run_id))
        if self.taker is not None and (
            self.pending
            or (self.cancels is not None and self.task.cancelling() > self.cancels)
            or any(flag.is_set() for flag in self.flags)
        ):
            return _BodyStopped(self.taker, asyncio.CancelledError())
        return None  # (with no body to take a cancel, the wait waits as a plain one)


def _visible_scopes(task: Any) -> set[int]:
    """The ids of the anyio cancel scopes whose cancel reaches ``task`` now: from its
    innermost scope out to the first shielded one (empty if anyio's record of them cannot be
    read: then no body's deadline or interrupt is watched, only a cancel of the task)."""
    seen: set[int] = set()
    try:
        from anyio._backends._asyncio import _task_states

        state = _task_states.get(task)
        scope = state.cancel_scope if state is not None else None
        while scope is not None:
            seen.add(id(scope))
            if scope.shield:
                break
            scope = scope._parent_scope
    except Exception:  # another anyio: its internals are not these
        return set()
    return seen


def _cancel_running(running: list[Any], ended: threading.Event) -> None:
    """Cancel the task ``run_coro_sync`` runs on its loop, once it has one (it stops at its
    next ``await``, as in the body's own loop)."""
    while not running and not ended.is_set():
        ended.wait(0.001)
    if running:
        loop, task = running[0]
        try:
            loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:  # its loop has closed: it has ended
            pass


async def _await(
    make: Callable[[], Awaitable[T]],
    running: list[Any] | None = None,
    ended: threading.Event | None = None,
) -> T:
    if running is None:
        return await make()
    import asyncio

    running.append((asyncio.get_running_loop(), asyncio.current_task()))
    try:
        return await make()
    finally:
        if ended is not None:
            ended.set()
