"""The one place where a run's state changes.

Every state change of a task run or a flow run, on threads and on Dask alike, goes through
``set_task_run_state`` or ``set_flow_run_state``. A final state is *claimed*: the first final
state a run gets stands, and any later change (a finish racing a cancel, a worker's late
report after a timeout) is refused and reported to the caller as ``False``. Changes of one run
are made and announced (``StateChanged``) under that run's lock, so subscribers see each
run's states in the order they were set; the locks are a fixed set of stripes shared by all
runs (no lock object per run), re-entrant so that a subscriber may look at the run.

A task run's future is resolved after its final state is announced, outside the lock: the
future's callbacks start dependent runs, which must not wait for this run's lock. A change
stands once made: an interrupt a subscriber raises while it is announced (errors are caught
and warned about) is raised after the run's hooks and its future's resolution.

State hooks (``engine/hooks.py``) are called here too, after the state is announced and
outside the lock, on the thread that set the state; a task run's hooks before its future is
resolved, which happens whatever the hooks do (a hook's ``SystemExit`` included). A thread
that must not run user code (the Dask dispatcher) names, with ``hand_off_task_hooks``, where
its task runs' hook calls go; the future is then resolved there, after the hooks. A run
driven by an async driver leaves its hook calls (and the future's resolution) to the driver,
which awaits them on its event loop (``hooks.AsyncHooks``). A flow run's final state calls
its hooks from ``call_final_flow_hooks``, which the flow engine calls once the run's
bookkeeping is done. A flow or task without hooks costs one attribute look-up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from flowbook.engine.events import FIRST_STATE_KEY, RUNNING_STATE_KEY, StateChanged, bus
from flowbook.engine.hooks import (
    await_flow_hooks,
    await_task_hooks,
    pending_for,
    run_flow_hooks,
    run_task_hooks,
)
from flowbook.states import _FINAL_VALUES, _StateFields

if TYPE_CHECKING:
    from flowbook.engine.hooks import StateHooks
    from flowbook.engine.runs import FlowRun, TaskRun
    from flowbook.states import State

__all__ = [
    "announced_state",
    "call_final_flow_hooks",
    "first_task_run_state",
    "hand_off_task_hooks",
    "set_flow_run_state",
    "set_task_run_state",
]

_STRIPES = tuple(threading.RLock() for _ in range(64))
# a state's run id, set once by the run it is given to (states refuse changes to their users)
_SET_RUN_ID = _StateFields.__dict__["run_id"].__set__
_FINAL = _FINAL_VALUES
_subscribers = bus._subscribers  # (read without a lock, as EventBus.emit does)
_FIRST_KEY = FIRST_STATE_KEY
_RUNNING_KEY = RUNNING_STATE_KEY
_time = time.time
# per thread: where the task hook calls of states set on it go (None: run them here)
_hook_hand_off = threading.local()


def hand_off_task_hooks(submit: Callable[[str, Callable[[], None]], None] | None) -> None:
    """Task hooks of states set on this thread go to ``submit(run_id, call)`` from now on.

    ``call`` runs the hooks and then resolves the run's future; ``submit`` must run the
    calls of one run in order.
    """
    _hook_hand_off.submit = submit


# The two functions below are on every task run's path three times: they are written out
# (no helper calls) on purpose.


def set_task_run_state(run: TaskRun, state: State) -> bool:
    """Make ``state`` the task run's state; False (and no change) if the run is final."""
    if state.run_id is None:
        _SET_RUN_ID(state, run.id)
    type_value = state.type._value_
    final = type_value in _FINAL
    key = _RUNNING_KEY if type_value == "RUNNING" else StateChanged
    raised = None
    with _STRIPES[(id(run) >> 4) & 63]:
        previous = run.state
        if previous is not None and previous.type._value_ in _FINAL:
            return False
        run.state = state
        if final:
            run.end_s = state.timestamp_s  # (one float for both)
        if key in _subscribers:
            try:
                bus.emit_to(key, StateChanged(run, state, previous))
            except BaseException as exc:  # (subscribers' errors are caught: an interrupt)
                raised = exc
    task = run.task
    if raised is not None or (task is not None and task._state_hooks is not None):
        _after_change(run, state, previous, final, raised)
        return True
    if final:
        future = run.future
        if future is not None:
            future._set_final(state)
    return True


def _after_change(
    run: TaskRun,
    state: State,
    previous: State | None,
    final: bool,
    raised: BaseException | None,
) -> None:
    """The task's hooks for a change, then (when final) the future; ``raised`` (what a
    subscriber raised: an interrupt, as errors are caught) goes on after them, as the change
    stands (a run final but unresolved would block whoever waits for it)."""
    try:
        task = run.task
        hooks = task._state_hooks if task is not None else None
        if hooks is None:
            if final:
                _resolve(run, state)
            return
        submit = getattr(_hook_hand_off, "submit", None)
        pending = pending_for(run) if submit is None else None
        if pending is not None:  # an async driver awaits them on its loop
            pending.add(
                partial(await_task_hooks, run, state, previous, hooks),
                partial(_resolve, run, state) if final else None,
            )
        elif submit is None:
            _task_hooks_then_future(run, state, previous, hooks, final)
        else:
            submit(run.id, partial(_task_hooks_then_future, run, state, previous, hooks, final))
    finally:
        if raised is not None:
            raise raised


def announced_state(run: TaskRun) -> State | None:
    """The task run's state, read under the run's lock: the change that set it has been
    announced (``StateChanged``) to every subscriber."""
    with _STRIPES[(id(run) >> 4) & 63]:
        return run.state


def first_task_run_state(run: TaskRun, state: State) -> None:
    """A new task run's first (non-final) state, without the lock: no other thread changes
    a run before it has a state (a cancel skips runs without one; they check for it before
    they start)."""
    _SET_RUN_ID(state, run.id)
    run.state = state
    if _FIRST_KEY in _subscribers:
        bus.emit_to(_FIRST_KEY, StateChanged(run, state, None))


def set_flow_run_state(run: FlowRun, state: State) -> bool:
    """Make ``state`` the flow run's state; False (and no change) if the run is final."""
    if state.run_id is None:
        _SET_RUN_ID(state, run.id)
    with _STRIPES[(id(run) >> 4) & 63]:
        previous = run.state
        if previous is not None and previous.type._value_ in _FINAL:
            return False
        run.state = state
        type_value = state.type._value_
        if type_value in _FINAL:
            run.end_s = _time()
        key = _RUNNING_KEY if type_value == "RUNNING" else StateChanged
        if key in _subscribers:
            bus.emit_to(key, StateChanged(run, state, previous))
    hooks = run.flow._state_hooks
    if hooks is not None and state.type._value_ not in _FINAL:
        _flow_hooks(run, state, previous, hooks)
    return True


def call_final_flow_hooks(run: FlowRun, state: State) -> None:
    """The flow's hooks for the run's final ``state`` (once the run's bookkeeping is done:
    a hook that raises ``KeyboardInterrupt`` or ``SystemExit`` leaves the run ended)."""
    hooks = run.flow._state_hooks
    if hooks is not None:
        _flow_hooks(run, state, None, hooks)


def _flow_hooks(run: FlowRun, state: State, previous: State | None, hooks: StateHooks) -> None:
    pending = pending_for(run)
    if pending is None:
        run_flow_hooks(run, state, previous, hooks)
    else:  # an async driver awaits them on its loop
        pending.add(partial(await_flow_hooks, run, state, previous, hooks), None)


def _task_hooks_then_future(
    run: TaskRun, state: State, previous: State | None, hooks: StateHooks, final: bool
) -> None:
    try:
        run_task_hooks(run, state, previous, hooks)
    finally:
        if final:
            _resolve(run, state)


def _resolve(run: TaskRun, state: State) -> None:
    future = run.future
    if future is not None:
        future._set_final(state)
