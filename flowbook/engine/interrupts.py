"""Stopping user code from another thread without ever stopping flowbook's own.

A sync function cannot be cancelled from outside; the only way to stop a ``time.sleep(30)``
task when its flow run is cancelled or times out is an asynchronous exception
(``PyThreadState_SetAsyncExc``), raised in the target thread at its next Python instruction.
Raised at a bad moment, such an exception breaks whatever the thread was doing: inside
flowbook's bookkeeping (a run half recorded) or inside ``Thread.start`` while ``.map()``
starts pool workers (the new thread never reports that it started, and the run hangs).

So an exception is only ever sent to a thread that is running the user's code:

- ``call_body(fn, ...)`` runs user code (a task or flow body) and registers a ``Body`` for it
  on the current thread; nested bodies (a task called inside a task) stack;
- user code calling back into flowbook (``Task.__call__``, ``.submit()``, ``.map()``, a
  subflow call) goes through ``enter()`` / ``leave()``, which count the depth of flowbook code
  on top of the innermost body;
- ``interrupt(body, exc)`` sends ``exc`` when the body's thread is in its own code (depth 0),
  and otherwise leaves it pending: ``leave()`` raises it, synchronously, when the thread
  returns to the user's code.

The decision and the send happen without a point where CPython could switch threads in
between (no call between the check and ``PyThreadState_SetAsyncExc``, which is a C function
called with the GIL held), and so do the target's changes of depth: an exception sent is
never delivered once the thread has moved into flowbook code. A body that returns at the same
moment clears a sent exception that has not arrived yet (``Body.done``).

A kernel interrupt (SIGINT) is delivered by Python to the main thread wherever it is. While a
top-level flow run goes on in the main thread, ``sigint_guard`` installs a handler that treats
it the same way: raised at once in the user's code or while waiting for a run, else left
pending until the thread is back in the user's code. While a run's end is written (its
cancel, its final state, the store's commit) a SIGINT is held (``shield``) and raised once
the run has ended: a second Ctrl-C never leaves a run half ended.

Async bodies are not interrupted this way: they are cancelled through their event loop
(``AsyncBody``), which is how asyncio code expects to be stopped.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (the C module, which has no stubs)
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "AsyncBody",
    "Body",
    "call_body",
    "current_body",
    "enter",
    "interrupt",
    "leave",
    "release_sigint",
    "shield",
    "sigint_guard",
    "unshield",
]

T = TypeVar("T")

_local = threading.local()
_send_lock = threading.Lock()  # one interrupter at a time
_get_ident = threading.get_ident
_MAIN_IDENT = threading.main_thread().ident
_SIGINT = _signal.SIGINT
_default_int_handler = _signal.default_int_handler


class Body:
    """User code running on one thread, as an interrupt target."""

    __slots__ = ("depth", "done", "ident", "pending", "sent", "waiting")

    def __init__(self) -> None:
        self.ident = _get_ident()
        self.depth = 0  # levels of flowbook code the user's code has called into
        self.waiting = 0  # >0 while blocked waiting for a run (a safe place to be stopped)
        self.pending: type[BaseException] | None = None
        self.sent = False
        self.done = False


class AsyncBody:
    """An ``async def`` body: interrupted by cancelling its cancel scope in its loop."""

    __slots__ = ("cancel", "done", "exc_type", "loop")

    def __init__(self, loop: Any, cancel: Callable[[], None]) -> None:
        self.loop = loop
        self.cancel = cancel
        self.exc_type: type[BaseException] | None = None
        self.done = False


def current_body() -> Body | None:
    body: Body | None = getattr(_local, "body", None)
    return body


def call_body(
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    register: Callable[[Body | None], None] | None = None,
) -> T:
    """``fn(*args, **kwargs)`` as user code that ``interrupt`` may stop.

    ``register(body)`` is called before the body starts (the run records where its body runs,
    so that a cancel can find it; it may raise to stop the body from starting). A body that
    ended stays registered: ``interrupt`` refuses it (``done``), so nobody needs telling.
    This is on every task run's path: it does no more than it must.
    """
    local = _local
    outer = getattr(local, "body", None)
    body = Body()
    local.body = body
    try:
        if register is not None:
            register(body)
        return fn(*args, **kwargs)
    finally:
        # (no call between these two lines: an interrupter's send is entirely before or
        # entirely after ``done`` is set)
        body.done = True
        if body.sent:  # (so ``interrupt`` has imported ctypes)
            import ctypes

            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(body.ident), None)  # withdraw
        local.body = outer


def enter() -> Body | None:
    """User code calls into flowbook: no asynchronous exception until ``leave``."""
    body: Body | None = getattr(_local, "body", None)
    if body is not None:
        body.depth += 1
    return body


def leave(body: Body | None) -> None:
    """Back to user code: an interrupt that arrived meanwhile is raised now."""
    if body is not None:
        body.depth -= 1
        if body.depth == 0 and body.pending is not None:
            exc_type, body.pending = body.pending, None
            raise exc_type


def interrupt(body: Body | AsyncBody | None, exc_type: type[BaseException]) -> bool:
    """Stop ``body`` with ``exc_type`` (now if it runs user code, else when it returns to
    it). False when there is nothing to stop (no body, or it has ended)."""
    if body is None:
        return False
    if isinstance(body, AsyncBody):
        if body.done:
            return False
        body.exc_type = exc_type
        try:
            body.loop.call_soon_threadsafe(body.cancel)
        except RuntimeError:  # the loop has closed: the body has ended
            return False
        return True
    import ctypes  # at the first interrupt: not by ``import flowbook``

    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    ident = ctypes.c_ulong(body.ident)
    exc = ctypes.py_object(exc_type)
    with _send_lock:
        # From the check to the send there is no call, so no switch to the target thread.
        if body.done:
            return False
        if body.depth == 0:
            body.sent = True
            set_async_exc(ident, exc)
        else:
            body.pending = exc_type
    return True


def _on_sigint(signum: int, frame: Any) -> None:
    body: Body | None = getattr(_local, "body", None)
    if body is not None and body.depth > 0 and body.waiting == 0:
        body.pending = KeyboardInterrupt  # raised when the thread is back in the user's code
        return
    if getattr(_local, "shield", 0) and (body is None or body.depth > 0):
        _local.held = True  # raised by the run's end once its bookkeeping is done
        return
    raise KeyboardInterrupt


def shield() -> None:
    """A run's end is being written on this thread: until ``unshield``, a SIGINT that the
    guard catches here outside user code is held instead of raised in the middle of it
    (a second Ctrl-C while a cancel goes on). Nests. Only flowbook's own bookkeeping is
    shielded, never user code or a wait for it: no state hook runs inside (task runs have
    no hook for ``Cancelled``; a flow's final hooks and the store's commit come after)."""
    _local.shield = getattr(_local, "shield", 0) + 1


def unshield() -> bool:
    """End a ``shield``; True when the outermost one held a SIGINT: the caller raises
    ``KeyboardInterrupt`` once it is done."""
    depth = _local.shield - 1
    _local.shield = depth
    if depth == 0 and getattr(_local, "held", False):
        _local.held = False
        return True
    return False


def sigint_guard() -> bool:
    """On the main thread, route SIGINT through ``_on_sigint`` while a top-level run goes on.

    Only Python's default handler is replaced (a kernel runs cells with it); True when the
    handler was installed and ``release_sigint`` must put the default back. (``_signal``
    directly: the ``signal`` module's wrappers convert numbers to enums, several µs a call.)
    """
    if _get_ident() != _MAIN_IDENT:
        return False
    try:
        if _signal.getsignal(_SIGINT) is not _default_int_handler:
            return False
        _signal.signal(_SIGINT, _on_sigint)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        return False
    return True


def release_sigint() -> None:
    try:
        if _signal.getsignal(_SIGINT) is _on_sigint:
            _signal.signal(_SIGINT, _default_int_handler)
    except (ValueError, OSError):
        pass
