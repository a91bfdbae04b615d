"""Timeouts for sync bodies, and running coroutines from sync code.

A sync function cannot be stopped from outside, so a body with ``timeout_seconds`` runs on a
watcher-owned thread while the run's own thread waits. When time is up the run is finished
as ``TimedOut`` at once, and the body's thread gets an asynchronous ``RunTimeoutError``
that stops it at its next Python instruction (a long C call, such as ``time.sleep``, still
finishes first, but nobody waits for it).

``run_coro_sync`` runs a coroutine to completion from sync code. Where the current thread
already runs an event loop (a notebook cell, an async flow calling a sync subflow that calls
an async task) it uses a fresh thread with its own loop: flowbook never nests loops.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from flowbook.exceptions import RunTimeoutError

__all__ = ["await_with_timeout", "call_with_timeout", "raise_in_thread", "run_coro_sync"]

T = TypeVar("T")


def _raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    ident = thread.ident
    if ident is None or not thread.is_alive():
        return
    raise_in_thread(ident, exc_type)


def raise_in_thread(ident: int, exc_type: type[BaseException]) -> None:
    """Make the thread ``ident`` raise ``exc_type`` at its next Python instruction.

    A thread blocked in a C call (``time.sleep``, a socket read) raises once the call returns.
    """
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))


def call_with_timeout(
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float,
    what: str,
    run_id: str,
) -> T:
    """``fn(*args, **kwargs)``, or ``RunTimeoutError`` after ``timeout`` seconds."""
    ctx = contextvars.copy_context()
    outcome: list[Any] = []

    def body() -> None:
        try:
            outcome.append((True, ctx.run(fn, *args, **kwargs)))
        except BaseException as exc:  # handed to the waiting thread, which decides
            outcome.append((False, exc))

    thread = threading.Thread(target=body, name="flowbook-timeout", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _raise_in_thread(thread, RunTimeoutError)
        raise RunTimeoutError(f"{what} exceeded its timeout of {timeout:g} second(s)", run_id)
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


async def await_with_timeout(awaitable: Awaitable[T], timeout: float, what: str, run_id: str) -> T:
    """Await ``awaitable``; cancel it and raise ``RunTimeoutError`` after ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except (asyncio.TimeoutError, TimeoutError) as exc:
        if isinstance(exc, RunTimeoutError):
            raise  # a run inside this one timed out: not ours to report
        raise RunTimeoutError(
            f"{what} exceeded its timeout of {timeout:g} second(s)", run_id
        ) from None


def run_coro_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run the awaitable that ``make()`` returns to completion and return its value."""
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
