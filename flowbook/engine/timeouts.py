"""Timeouts for sync bodies, and running coroutines from sync code.

A sync function cannot be stopped from outside, so a body with ``timeout_seconds`` runs on a
watcher-owned thread while the run's own thread waits. When time is up the run is finished
as ``TimedOut`` at once, and the body's thread gets an asynchronous ``RunTimeoutError``
that stops it at its next Python instruction of its own code (a long C call, such as
``time.sleep``, still finishes first, but nobody waits for it). Async bodies run in an anyio
cancel scope whose deadline is the timeout.

``run_coro_sync`` runs a coroutine to completion from sync code. Where the current thread
already runs an event loop (a notebook cell, an async flow calling a sync subflow that calls
an async task) it uses a fresh thread with its own loop: flowbook never nests loops.
"""

from __future__ import annotations

import contextvars
import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from flowbook.engine.interrupts import AsyncBody, Body, call_body, current_body, interrupt
from flowbook.exceptions import RunInterrupted, RunTimeoutError

__all__ = ["await_body", "call_with_timeout", "run_coro_sync"]

T = TypeVar("T")


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
        raise RunTimeoutError(f"{what} exceeded its timeout of {timeout:g} second(s)", run_id)
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
    with anyio.CancelScope(deadline=deadline) as scope:
        body = AsyncBody(loop, scope.cancel)
        try:
            register(body)
            return await make()
        finally:
            body.done = True
    # only reached when the scope was cancelled: by the deadline or by an interrupt
    if body.exc_type is not None:
        raise body.exc_type
    raise RunTimeoutError(f"{what} exceeded its timeout of {timeout:g} second(s)", run_id)


def run_coro_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run the awaitable that ``make()`` returns to completion and return its value."""
    import asyncio  # async bodies only: not imported by ``import flowbook``

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(make))
    ctx = contextvars.copy_context()
    outcome: list[Any] = []

    def body() -> None:
        try:
            outcome.append((True, ctx.run(asyncio.run, _await(make))))
        except BaseException as exc:  # re-raised on the calling thread
            outcome.append((False, exc))

    thread = threading.Thread(target=body, name="flowbook-async", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


async def _await(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
