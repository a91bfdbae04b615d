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
An ``async def`` hook is run to completion before the next one.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from flowbook.engine.runs import current_flow_run, current_task_run

if TYPE_CHECKING:
    from flowbook.engine.runs import FlowRun, TaskRun
    from flowbook.states import State

__all__ = [
    "FLOW_HOOK_OPTIONS",
    "TASK_HOOK_OPTIONS",
    "StateHooks",
    "check_hooks",
    "hook_name",
    "run_flow_hooks",
    "run_task_hooks",
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
        from flowbook.logging import task_run_logger

        _call_all(fns, run.task, run, state, lambda: task_run_logger(run))


def run_flow_hooks(run: FlowRun, state: State, previous: State | None, hooks: StateHooks) -> None:
    """Call the flow's hooks for ``state`` (the lifecycle calls this for flows with hooks)."""
    fns = hooks.for_state(state, previous)
    if fns:
        from flowbook.logging import flow_run_logger

        _call_all(fns, run.flow, run, state, lambda: flow_run_logger(run))


def _call_all(
    fns: tuple[Hook, ...],
    owner: Any,
    run: Any,
    state: State,
    logger: Callable[[], logging.LoggerAdapter[Any]],
) -> None:
    log = logger()
    # outside any run context, as documented: the hook is not part of the run's body
    flow_token = current_flow_run.set(None)
    task_token = current_task_run.set(None)
    try:
        for fn in fns:
            name = hook_name(fn)
            log.info("Running hook %r in response to entering state %r", name, state.name)
            try:
                result = fn(owner, run, state)
                if inspect.isawaitable(result):
                    from flowbook.engine.timeouts import run_coro_sync

                    run_coro_sync(partial(_itself, result))
            except Exception:
                log.error("An error was encountered while running hook %r", name, exc_info=True)
            else:
                log.info("Hook %r finished running successfully", name)
    finally:
        current_task_run.reset(task_token)
        current_flow_run.reset(flow_token)
