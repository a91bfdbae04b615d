"""State hooks: user functions called when a flow run or task run enters a state.

Flows take ``on_running``, ``on_completion``, ``on_failure``, ``on_crashed`` and
``on_cancellation``; tasks take ``on_running``, ``on_completion`` and ``on_failure``. Each is
a list of functions called with ``(flow, flow_run, state)`` or ``(task, task_run, state)``.

The lifecycle (``engine/lifecycle.py``) calls ``run_task_hooks`` / ``run_flow_hooks`` right
after a state is set and announced, outside the run's lock, on the thread that set it; a task
run's future is resolved only after its hooks returned, so whoever waits for the run sees
what its hooks did. A flow or task without hooks has ``_state_hooks = None``, and that one
attribute is all the lifecycle looks at.

Which hooks a state calls is decided by its type: ``COMPLETED`` (``Cached`` too) calls
``on_completion``, ``FAILED`` (``TimedOut`` too) ``on_failure``, ``CRASHED`` ``on_crashed``,
``CANCELLED`` ``on_cancellation``, and the first ``RUNNING`` state of each attempt
(``Running``, or ``Retrying`` on a retry) ``on_running``. ``AwaitingRetry`` is ``SCHEDULED``,
so a run that is retried calls ``on_failure`` only when it finally fails.

Hooks run outside any run context (``get_run_logger()`` raises ``MissingContextError`` in
them; ``flow_run_logger`` / ``task_run_logger`` take the run they are given). A hook that
raises is logged, naming it, and the next hook runs; the run's state stays what it is.
An ``async def`` hook is run to completion before the next one: awaited on the run's event
loop when an async driver drives the run (the lifecycle leaves the calls to it, see
``AsyncHooks``), else run by ``run_coro_sync``.

A thread that must not wait for user code (the Dask dispatcher, which handles every event of
a connection) hands its task runs' hook calls to ``HookThreads``: the calls of one run in
the order they were made, those of different runs side by side, so a hook may wait for
another run (whose own events and hooks go on meanwhile).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable
from contextvars import ContextVar, Token
from functools import partial
from typing import TYPE_CHECKING, Any

from flowbook.engine.interrupts import pause_shield, resume_shield
from flowbook.engine.runs import current_flow_run, current_task_run

if TYPE_CHECKING:
    from flowbook.engine.runs import FlowRun, TaskRun
    from flowbook.states import State

__all__ = [
    "FLOW_HOOK_OPTIONS",
    "TASK_HOOK_OPTIONS",
    "AsyncHooks",
    "HookThreads",
    "StateHooks",
    "await_flow_hooks",
    "await_pending",
    "await_task_hooks",
    "check_hooks",
    "drive_async",
    "hook_name",
    "pending_for",
    "run_flow_hooks",
    "run_task_hooks",
    "stop_driving",
]

Hook = Callable[..., Any]

FLOW_HOOK_OPTIONS = ("on_completion", "on_failure", "on_cancellation", "on_crashed", "on_running")
TASK_HOOK_OPTIONS = ("on_completion", "on_failure", "on_running")

# the option whose hooks a final state type calls
_BY_TYPE = {
    "COMPLETED": "on_completion",
    "FAILED": "on_failure",
    "CRASHED": "on_crashed",
    "CANCELLED": "on_cancellation",
}


class StateHooks:
    """The hooks of one flow or task, by state type (built when its hooks change)."""

    __slots__ = ("by_type",)

    def __init__(self, hooks: dict[str, list[Hook]]) -> None:
        by_type = {t: tuple(hooks.get(option, ())) for t, option in _BY_TYPE.items()}
        by_type["RUNNING"] = tuple(hooks.get("on_running", ()))
        self.by_type = {t: fns for t, fns in by_type.items() if fns}

    @staticmethod
    def build(hooks: dict[str, list[Hook]]) -> StateHooks | None:
        """The hooks to call, or None when there are none (the lifecycle's one check)."""
        return StateHooks(hooks) if any(hooks.values()) else None

    def for_state(self, state: State, previous: State | None) -> tuple[Hook, ...]:
        kind = state.type._value_
        if kind == "RUNNING" and previous is not None and previous.type._value_ == "RUNNING":
            return ()  # Retrying -> Running: one attempt, its hooks ran on Retrying
        return self.by_type.get(kind, ())


def check_hooks(kind: str, option: str, value: Any) -> list[Hook]:
    """``value`` as a list of hooks; ``TypeError`` naming the option and value otherwise."""
    if callable(value) or isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"@{kind}({option}={value!r}): {option} must be a list of functions "
            f"({kind}, {kind}_run, state), not {type(value).__name__}; give a list, e.g. "
            f"@{kind}({option}=[{_name_for_message(value)}])"
        )
    hooks = list(value)
    for i, hook in enumerate(hooks):
        if not callable(hook):
            raise TypeError(
                f"@{kind}({option}={value!r}): {option}[{i}] is {hook!r} of type "
                f"{type(hook).__name__}; each hook must be a function ({kind}, {kind}_run, "
                "state)"
            )
    return hooks


def _name_for_message(value: Any) -> str:
    return hook_name(value) if callable(value) else "my_hook"


def _itself(value: Any) -> Any:
    return value


def hook_name(hook: Hook) -> str:
    """How log lines name a hook: its ``__name__`` (a partial's function's), else its type."""
    name = getattr(hook, "__name__", None)
    if isinstance(name, str):
        return name
    if isinstance(hook, functools.partial):
        return hook_name(hook.func)
    return type(hook).__name__


def run_task_hooks(run: TaskRun, state: State, previous: State | None, hooks: StateHooks) -> None:
    """Call the task's hooks for ``state`` (the lifecycle calls this for tasks with hooks)."""
    fns = hooks.for_state(state, previous)
    if fns:
        _call_all(_steps(fns, run.task, run, state, _task_logger(run)))


def run_flow_hooks(run: FlowRun, state: State, previous: State | None, hooks: StateHooks) -> None:
    """Call the flow's hooks for ``state`` (the lifecycle calls this for flows with hooks)."""
    fns = hooks.for_state(state, previous)
    if fns:
        _call_all(_steps(fns, run.flow, run, state, _flow_logger(run)))


async def await_task_hooks(
    run: TaskRun, state: State, previous: State | None, hooks: StateHooks
) -> None:
    """``run_task_hooks`` on the running event loop: ``async def`` hooks are awaited there."""
    fns = hooks.for_state(state, previous)
    if fns:
        await _await_all(_steps(fns, run.task, run, state, _task_logger(run)))


async def await_flow_hooks(
    run: FlowRun, state: State, previous: State | None, hooks: StateHooks
) -> None:
    """``run_flow_hooks`` on the running event loop: ``async def`` hooks are awaited there."""
    fns = hooks.for_state(state, previous)
    if fns:
        await _await_all(_steps(fns, run.flow, run, state, _flow_logger(run)))


def _task_logger(run: TaskRun) -> logging.LoggerAdapter[Any]:
    from flowbook.logging import task_run_logger

    return task_run_logger(run)


def _flow_logger(run: FlowRun) -> logging.LoggerAdapter[Any]:
    from flowbook.logging import flow_run_logger

    return flow_run_logger(run)


def _steps(
    fns: tuple[Hook, ...], owner: Any, run: Any, state: State, log: logging.LoggerAdapter[Any]
) -> Generator[Awaitable[Any], None, None]:
    """Call the hooks in order; an ``async def`` hook's awaitable is yielded to the driver,
    which sends back nothing or throws in what awaiting it raised."""
    for fn in fns:
        name = hook_name(fn)
        log.info("Running hook %r in response to entering state %r", name, state.name)
        try:
            result = fn(owner, run, state)
            if inspect.isawaitable(result):
                yield result
        except Exception:
            log.error("An error was encountered while running hook %r", name, exc_info=True)
        else:
            log.info("Hook %r finished running successfully", name)


def _call_all(steps: Generator[Awaitable[Any], None, None]) -> None:
    # outside any run context, as documented: the hook is not part of the run's body
    flow_token = current_flow_run.set(None)
    task_token = current_task_run.set(None)
    shielded = pause_shield()  # user code: a Ctrl-C stops it, even while a run ends
    try:
        step = next(steps, None)
        while step is not None:
            try:
                from flowbook.engine.timeouts import run_coro_sync

                run_coro_sync(partial(_itself, step))
            except Exception as exc:
                step = _throw(steps, exc)
            else:
                step = next(steps, None)
    finally:
        resume_shield(shielded)
        current_task_run.reset(task_token)
        current_flow_run.reset(flow_token)


async def _await_all(steps: Generator[Awaitable[Any], None, None]) -> None:
    flow_token = current_flow_run.set(None)
    task_token = current_task_run.set(None)
    try:
        step = next(steps, None)
        while step is not None:
            try:
                await step
            except Exception as exc:
                step = _throw(steps, exc)
            else:
                step = next(steps, None)
    finally:
        current_task_run.reset(task_token)
        current_flow_run.reset(flow_token)


def _throw(steps: Generator[Awaitable[Any], None, None], exc: Exception) -> Awaitable[Any] | None:
    try:
        return steps.throw(exc)
    except StopIteration:
        return None


# -- async drivers: hooks awaited on the run's own event loop ---------------------------------
class AsyncHooks:
    """The hook calls of the run an async driver is driving, for the driver to await.

    The lifecycle adds them (``pending_for``) instead of calling the hooks; the driver awaits
    them (``await_pending``) after it began the run and before it returns. ``then`` (a task
    run's future resolution) runs after its hooks, and runs even when they do not.
    """

    __slots__ = ("pending", "run")

    def __init__(self, run: object) -> None:
        self.run = run
        self.pending: list[tuple[Callable[[], Awaitable[None]], Callable[[], Any] | None]] = []

    def add(self, call: Callable[[], Awaitable[None]], then: Callable[[], Any] | None) -> None:
        self.pending.append((call, then))


_async_hooks: ContextVar[AsyncHooks | None] = ContextVar("flowbook_async_hooks", default=None)


def pending_for(run: object) -> AsyncHooks | None:
    """Where the lifecycle puts ``run``'s hook calls when an async driver drives it here."""
    hooks = _async_hooks.get()
    return hooks if hooks is not None and hooks.run is run else None


def drive_async(run: object) -> Token[AsyncHooks | None]:
    """The calling coroutine drives ``run``: its hooks wait for ``await_pending``."""
    return _async_hooks.set(AsyncHooks(run))


def stop_driving(token: Token[AsyncHooks | None]) -> None:
    _async_hooks.reset(token)


async def await_pending() -> None:
    """Await the hook calls the lifecycle left for the driving coroutine, in order."""
    hooks = _async_hooks.get()
    if hooks is None or not hooks.pending:
        return
    pending, hooks.pending = hooks.pending, []
    for i, (call, then) in enumerate(pending):
        try:
            await call()
        except BaseException:
            for _, later in pending[i + 1 :]:  # their futures resolve all the same
                if later is not None:
                    later()
            raise
        finally:
            if then is not None:
                then()


class HookThreads:
    """Runs hook calls off the calling thread: one run's calls in order, runs side by side.

    A run with calls waiting has a thread of its own, which ends when the run's queue is
    empty; calls for a run whose thread is busy join its queue. There is no bound on the
    threads: a hook may wait for another run's hooks, which must not queue behind it.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Callable[[], None]]] = {}

    def submit(self, run_id: str, call: Callable[[], None]) -> None:
        with self._lock:
            queue = self._queues.get(run_id)
            if queue is not None:
                queue.append(call)
                return
            self._queues[run_id] = deque((call,))
        threading.Thread(
            target=self._drain, args=(run_id,), name=f"{self._name}-{run_id[:8]}", daemon=True
        ).start()

    def _drain(self, run_id: str) -> None:
        queue = self._queues[run_id]
        while True:
            with self._lock:
                if not queue:
                    del self._queues[run_id]
                    return
                call = queue[0]
            try:
                call()
            except BaseException:  # this thread serves the run's later calls: keep going
                logging.getLogger("flowbook.hooks").exception(
                    "flowbook: a state hook call ended with an error"
                )
            with self._lock:
                queue.popleft()
