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
top-level flow run goes on in the main thread, ``sigint_guard`` installs a handler in front
of Python's default one (or asyncio's) that treats it the same way: raised at once in the
user's code or while waiting for a run, else left pending until the thread is back in the
user's code. While a run's end is written (its cancel, its final state, its announcement) a
SIGINT is held (``shield``) and raised once the run has ended: a second Ctrl-C never leaves
a run half ended.

Async bodies are not interrupted this way: they are cancelled through their event loop
(``AsyncBody``), which is how asyncio code expects to be stopped.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (the C module, which has no stubs)
import functools
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "AsyncBody",
    "Body",
    "call_body",
    "call_unshielded",
    "current_body",
    "enter",
    "interrupt",
    "interruption_name",
    "leave",
    "pause_shield",
    "release_sigint",
    "resume_shield",
    "shield",
    "shields",
    "sigint_guard",
    "unshield",
]

T = TypeVar("T")

_local = threading.local()
# one interrupter at a time (re-entrant: a signal handler may cancel runs at a check in it)
_send_lock = threading.RLock()
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
        # (the thread's id as a ctypes value, and the process's id) once an exception was sent
        self.sent: Any = None
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


def interruption_name(exc: BaseException) -> str:
    """How a run's state message names what interrupted it: ``RunInterrupted`` for any of
    flowbook's own stops (whatever their class, also inside the exception group of a task
    group it passed through), else the exception's class."""
    from flowbook.exceptions import RunInterrupted

    def ours(e: BaseException) -> bool:
        inner = getattr(e, "exceptions", None)
        if isinstance(inner, tuple) and inner:
            return all(ours(x) for x in inner)
        return isinstance(e, RunInterrupted)

    return "RunInterrupted" if ours(exc) else type(exc).__name__


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
    if outer is not None and outer.pending is not None:
        # the caller's interrupt (a Ctrl-C while it was in flowbook code) stops this body
        # before it starts, rather than wait for it to end
        # (peeked, not taken: ``leave`` raises it to the caller once back in its code)
        from flowbook.exceptions import RunInterrupted

        raise RunInterrupted
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
        sent = body.sent
        if sent is not None and sent[1] == _pid:  # (not one sent in a parent process)
            # take back a sent exception that has not arrived, and have CPython's flag, which
            # that sets, cleared (``_settle_loop``; no Python call before)
            _ctypes_api[0](sent[0], None)
            settles = _settles
            if settles is not None:
                _wakes[0] += 1
                settles.put(None)
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
    return _send(body, exc_type)


def _send(body: Body, exc_type: type[BaseException], deadline: float = 0.0) -> bool:
    """``interrupt`` of a sync body; while threads are being started (``_starting``) the send
    is left to the settler, which makes it once they have started (``_send_later``)."""
    import ctypes  # at the first interrupt: not by ``import flowbook``

    settles = _settles if _settles is not None else _start_settler()
    set_async_exc = _ctypes_api[0]
    ident = ctypes.c_ulong(body.ident)
    exc = ctypes.py_object(exc_type)
    sent = (ident, _pid)
    with _send_lock:
        # From the check to the send there is no call, so no switch to the target thread.
        if body.done:
            return False
        if body.depth != 0:
            body.pending = exc_type
            return True
        if _starting and settles is not None and not _starting_keys <= _stale:
            # A thread is being started, maybe by the body's own code: on 3.10 and 3.11 the
            # new thread has its creator's id until it runs, and would get the exception
            # (it would end at once, and the body would wait in ``Thread.start`` for good).
            if not deadline:
                import time

                deadline = time.monotonic() + 1.0
            settles.put((body, exc_type, deadline))
            return True
        body.sent = sent
        set_async_exc(ident, exc)
        if settles is not None:  # have CPython's flag cleared (no Python call before)
            _wakes[0] += 1
            settles.put(None)
    return True


def _send_later(body: Body, exc_type: type[BaseException], deadline: float) -> None:
    """On the settler's thread: the send put off by ``_send``, made once no thread is being
    started (checked again with the send: else put off again). Meanwhile it goes to the back
    of the settler's queue every millisecond, so that clearing the flag and forks do not wait
    for it. Threads still in ``_starting`` at ``deadline`` (one whose start was cut short
    leaves its entry for good) are taken as started from then on."""
    import time

    if _starting and not _starting_keys <= _stale:
        if time.monotonic() < deadline:
            time.sleep(0.001)
            settles = _settles
            if settles is not None:
                settles.put((body, exc_type, deadline))
                return
        _stale.intersection_update(_starting)
        _stale.update(_starting)
    _send(body, exc_type, deadline)


# Threads being started through ``threading`` (``Thread.start`` puts them here before the new
# thread exists, and the new thread takes itself out once it runs); from 3.12 a new thread's
# state has no id before it runs, so nothing waits for them.
_starting: Any = getattr(threading, "_limbo", None) if sys.version_info < (3, 12) else None
# (a live view, compared with no call: ``_send`` makes no call from its checks to the send)
_starting_keys: Any = _starting.keys() if _starting is not None else None
_stale: set[Any] = set()  # entries of ``_starting`` taken as started (``_send_later``)


class _Settled(BaseException):
    """Raised by a thread in itself, and caught there (``_settle_loop``)."""


# CPython's flag for asynchronous exceptions, and the thread that clears it.
#
# ``PyThreadState_SetAsyncExc`` sets a flag for the whole interpreter that only the delivery
# of an exception clears (taking one back with NULL sets it too). While it is set, every
# thread stops at each call and loop to look for pending work, and on CPython 3.11 a thread
# with a trace function (a debugger, coverage) loops on entering its next Python function,
# for as long as the flag stays set: a target blocked in C for minutes held it that long, and
# an exception taken back held it for good. So after each send, and each taking back, a
# thread of flowbook's own is woken (a C call, ``SimpleQueue.put``: no Python call may come
# first, a traced thread would loop on entering it); it raises ``_Settled`` in itself and
# catches it, which clears the flag. A thread still owed an exception gets it all the same:
# CPython sets the flag again for it when it takes the GIL back.
#
# Not the interrupting thread itself: on 3.10 and 3.11 a thread being started has its
# creator's id until it runs (the exception would go to it), and on the main thread a signal
# handler could get it in place of a Ctrl-C. A fork waits for the settler first: the child has
# neither the settler nor the target to clear the flag.
_settles: Any = None  # the settler's queue (a ``queue.SimpleQueue``), once it runs
_ctypes_api: list[Any] = []  # PyThreadState_SetAsyncExc, py_object(_Settled)
_settler_lock = threading.Lock()
# wakes given, and the count of them that the settler's last settle covered (a wake counted
# before a settle starts is covered by it): a fork waits only when one is outstanding; an
# increment has no point where CPython switches threads
_wakes = [0]
_settled = [0]
_pid = os.getpid()


def _start_settler() -> Any:
    """Start the settler (at the first interrupt); its queue, or None when no thread can be
    started (at interpreter exit, or out of threads: the flag is left set)."""
    global _settles
    import _thread
    import ctypes
    import queue

    if not _ctypes_api:
        _ctypes_api[:] = ctypes.pythonapi.PyThreadState_SetAsyncExc, ctypes.py_object(_Settled)
    settles: Any = queue.SimpleQueue()
    pid = _pid
    try:
        # (not through ``threading``: a trace function given by ``threading.settrace`` would
        # make it loop on entering its own code while the flag is set, and nothing waits for
        # it to start; not under the lock, which a signal handler here could want)
        _thread.start_new_thread(_settle_loop, (settles,))
    except RuntimeError:  # "can't start new thread", at interpreter shutdown or out of threads
        return _settles
    with _settler_lock:
        if _settles is None and pid == _pid:  # (not a child forked meanwhile, by a handler)
            _settles = settles
            return settles
    settles.put(_STOP)  # (another thread started one meanwhile: this one ends)
    return _settles


_STOP = object()


def _settle_loop(settles: Any) -> None:
    import ctypes

    own = ctypes.c_ulong(_get_ident())
    set_async_exc, settled = _ctypes_api
    wait = settles.get
    wakes, done = _wakes, _settled
    while True:
        item = wait()  # (one settle a wake: a wake while one goes on costs one more)
        if item is _STOP:
            return
        if type(item) is tuple:
            _send_later(*item)  # (which wakes this thread again for its settle)
            continue
        covered = wakes[0]
        try:
            set_async_exc(own, settled)  # (raised as this call returns)
            while True:  # (or at the loop's first jump back)
                pass
        except _Settled:
            pass
        done[0] = covered
        if item is not None:
            item.release()  # (a fork waits for this: ``_before_fork``)


def _before_fork() -> None:
    # a settle still to come (a send since the settler's last one): wait for it, or a child
    # with a trace function would loop at its first Python call (the child has neither the
    # settler nor the target to clear the flag)
    settles = _settles
    if settles is None or _settled[0] >= _wakes[0]:
        return
    # a send to this thread's body meanwhile (the settler may make one) is left pending, and
    # made again after the fork: raised in this hook, CPython would drop it
    body: Body | None = getattr(_local, "body", None)
    if body is not None:
        body.depth += 1
    try:
        done = threading.Lock()
        done.acquire()
        settles.put(done)
        done.acquire(timeout=1.0)
    finally:
        if body is not None:
            body.depth -= 1
            if body.depth == 0 and body.pending is not None:
                import time

                exc_type, body.pending = body.pending, None
                settles.put((body, exc_type, time.monotonic() + 1.0))


def _after_fork_in_child() -> None:
    # no settler in the child (started again at its first interrupt); fresh locks, which a
    # thread of the parent may have held at the fork
    global _settles, _send_lock, _settler_lock, _pid
    _settles = None
    _send_lock = threading.RLock()
    _settler_lock = threading.Lock()
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


class _Stack(list):  # type: ignore[type-arg]
    """The shields in force on a thread, an entry each, and whether a SIGINT came meanwhile
    (``held``). A list, so that entering and leaving a shield are one C call each (``append``,
    ``pop``); pausing swaps the whole object, with its ``held``."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        super().__init__()
        self.held = False


class _Shields(threading.local):
    def __init__(self) -> None:
        self.stack = _Stack()
        self.restore = False  # ``release_sigint`` was asked while shielded


# ``shields.stack.append(None)`` enters a shield in one C call: a SIGINT is handled only on
# entering a Python function, after a C call or on a loop's jump back, so code that has just
# caught an interrupt shields itself this way, with no point between where another one could
# land (``shield()`` is a Python function: one could land on entering it); ``unshield`` ends it.
shields = _Shields()
# The SIGINT handler ``sigint_guard`` stands in front of (Python's default, or asyncio's under
# ``asyncio.run``): called for a SIGINT that is neither held nor left pending, so that it
# behaves as without flowbook (asyncio's first one cancels the main task).
_previous: Any = None


def _on_sigint(signum: int, frame: Any) -> None:
    body: Body | None = getattr(_local, "body", None)
    if body is not None and body.depth > 0 and body.waiting == 0:
        body.pending = KeyboardInterrupt  # raised when the thread is back in the user's code
        return
    stack = shields.stack
    if stack:
        stack.held = True  # raised by the run's end once its bookkeeping is done
        return
    previous = _previous
    if previous is None or previous is _default_int_handler:
        raise KeyboardInterrupt
    previous(signum, frame)


def shield() -> None:
    """A run's end is being written on this thread: until ``unshield``, a SIGINT that
    reaches it outside user code is held instead of raised in the middle of it (a second
    Ctrl-C while a cancel goes on). Nests. Only flowbook's own bookkeeping is shielded: what
    may run user code or wait (hooks, future callbacks, a runner's shutdown) runs with the
    shield paused (``pause_shield``), its interrupt caught and raised after the rest. A
    held SIGINT goes, once the outermost ``unshield`` is done, to the caller (Python's
    default handler) or to the handler ``sigint_guard`` stands in front of (asyncio's)."""
    stack = shields.stack
    if not stack:
        stack.held = False  # (one left by an interrupt that cut an unshield short)
    stack.append(None)


def unshield() -> bool:
    """End a ``shield``; True when the outermost one held a SIGINT for which the caller
    raises ``KeyboardInterrupt`` once it is done (another handler's is called here)."""
    stack = shields.stack
    if len(stack) > 1:
        stack.pop()
        return False
    previous = _previous
    try:
        if shields.restore:
            shields.restore = False
            _restore_previous()
    finally:
        if stack:
            stack.pop()  # (whatever a SIGINT raises above, the shields stay balanced)
    if not stack.held:
        return False
    stack.held = False
    if previous is not None and previous is not _default_int_handler:
        previous(_SIGINT, None)  # (asyncio's cancels its main task, or raises)
        return False
    return True


def pause_shield() -> _Stack:
    """User code (a hook, a future's callback) or a wait for it is about to run in a
    shielded part: a SIGINT raises there at once. Returns what ``resume_shield`` restores
    (shields entered meanwhile, by a run inside a hook, are that run's own)."""
    stack = shields.stack
    if stack:
        shields.stack = _Stack()
    return stack


# ``resume_shield(paused)`` ends a ``pause_shield``: a C call, not a Python function, because
# a SIGINT is handled on entering a Python function, which here would still be unshielded
# (the interrupt raised there would leave the rest of the shielded part unshielded)
resume_shield: Callable[[_Stack], None] = functools.partial(setattr, shields, "stack")


def call_unshielded(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with the shield paused: user code or a wait inside a shielded part (a
    SIGINT raises in it at once). Entered while still shielded, resumed in one C call, so
    what the caller does with its outcome (log it, hold an interrupt) is shielded again."""
    shielded = pause_shield()
    try:
        return fn(*args)
    finally:
        resume_shield(shielded)


def sigint_guard() -> bool:
    """On the main thread, route SIGINT through ``_on_sigint`` while a top-level run goes on,
    in front of the handler in place when it is Python's default or ``asyncio.run``'s (which
    ``_on_sigint`` calls for what it neither holds nor leaves pending; a program's own handler
    is left alone). True when ``release_sigint`` must put that handler back. (``_signal``
    directly: the ``signal`` module's wrappers convert numbers to enums, several µs a call.)
    """
    global _previous
    if _get_ident() != _MAIN_IDENT:
        return False
    try:
        current = _signal.getsignal(_SIGINT)
        if current is _on_sigint:
            return False  # (another run's guard: the run that installed it releases it)
        if current is not _default_int_handler and not _is_asyncio_handler(current):
            return False  # the program's own handler (or none) is left alone
        _previous = current
        _signal.signal(_SIGINT, _on_sigint)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        return False
    return True


def _is_asyncio_handler(handler: Any) -> bool:
    """``asyncio.Runner``'s SIGINT handler (a method of the runner, with its main task bound
    by ``functools.partial``)."""
    owner = getattr(getattr(handler, "func", handler), "__self__", None)
    return owner is not None and type(owner).__module__ == "asyncio.runners"


def release_sigint() -> None:
    """Put back the handler ``sigint_guard`` stood in front of; while shielded, the
    outermost ``unshield`` does it (a SIGINT that handler got meanwhile would be raised
    inside the unshield, cutting it short)."""
    if shields.stack:
        shields.restore = True
    else:
        _restore_previous()


def _restore_previous() -> None:
    global _previous
    previous, _previous = _previous, None
    try:
        if previous is not None and _signal.getsignal(_SIGINT) is _on_sigint:
            task = getattr(previous, "keywords", {}).get("main_task")
            if task is not None and task.done():  # asyncio.run has ended: its handler too
                previous = _default_int_handler
            _signal.signal(_SIGINT, previous)
    except (ValueError, OSError):
        pass
