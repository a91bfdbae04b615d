"""The one place where a run's state changes.

Every state change of a task run or a flow run, on threads and on Dask alike, goes through
``set_task_run_state`` or ``set_flow_run_state``. A final state is *claimed*: the first final
state a run gets stands, and any later change (a finish racing a cancel, a worker's late
report after a timeout) is refused and reported to the caller as ``False``. Changes of one run
are made and announced (``StateChanged``) under that run's lock, so subscribers see each
run's states in the order they were set; the locks are a fixed set of stripes shared by all
runs (no lock object per run), re-entrant so that a subscriber may look at the run.

A task run's future is resolved after its final state is announced, outside the lock: the
future's callbacks start dependent runs, which must not wait for this run's lock.

State hooks (``engine/hooks.py``) are called here too, after the state is announced and
outside the lock, on the thread that set the state; a task run's hooks before its future is
resolved. A flow or task without hooks costs one attribute look-up.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from flowbook.engine.events import StateChanged, bus
from flowbook.engine.hooks import run_flow_hooks, run_task_hooks
from flowbook.states import _FINAL_VALUES, _StateFields

if TYPE_CHECKING:
    from flowbook.engine.runs import FlowRun, TaskRun
    from flowbook.states import State

__all__ = ["first_task_run_state", "set_flow_run_state", "set_task_run_state"]

_STRIPES = tuple(threading.RLock() for _ in range(64))
# a state's run id, set once by the run it is given to (states refuse changes to their users)
_SET_RUN_ID = _StateFields.__dict__["run_id"].__set__
_FINAL = _FINAL_VALUES
_subscribers = bus._subscribers  # (read without a lock, as EventBus.emit does)
_time = time.time

# The two functions below are on every task run's path three times: they are written out
# (no helper calls) on purpose.


def set_task_run_state(run: TaskRun, state: State) -> bool:
    """Make ``state`` the task run's state; False (and no change) if the run is final."""
    if state.run_id is None:
        _SET_RUN_ID(state, run.id)
    final = state.type._value_ in _FINAL
    with _STRIPES[(id(run) >> 4) & 63]:
        previous = run.state
        if previous is not None and previous.type._value_ in _FINAL:
            return False
        run.state = state
        if final:
            run.end_s = _time()
        if StateChanged in _subscribers:
            bus.emit(StateChanged(run, state, previous))
    task = run.task
    if task is not None and task._state_hooks is not None:
        run_task_hooks(run, state, previous, task._state_hooks)
    if final:
        future = run.future
        if future is not None:
            future._set_final(state)
    return True


def first_task_run_state(run: TaskRun, state: State) -> None:
    """A new task run's first (non-final) state, without the lock: no other thread changes
    a run before it has a state (a cancel skips runs without one; they check for it before
    they start)."""
    _SET_RUN_ID(state, run.id)
    run.state = state
    if StateChanged in _subscribers:
        bus.emit(StateChanged(run, state, None))


def set_flow_run_state(run: FlowRun, state: State) -> bool:
    """Make ``state`` the flow run's state; False (and no change) if the run is final."""
    if state.run_id is None:
        _SET_RUN_ID(state, run.id)
    with _STRIPES[(id(run) >> 4) & 63]:
        previous = run.state
        if previous is not None and previous.type._value_ in _FINAL:
            return False
        run.state = state
        if state.type._value_ in _FINAL:
            run.end_s = _time()
        if StateChanged in _subscribers:
            bus.emit(StateChanged(run, state, previous))
    hooks = run.flow._state_hooks
    if hooks is not None:
        run_flow_hooks(run, state, previous, hooks)
    return True
