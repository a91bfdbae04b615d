"""Prefect's rules for a state a flow or task body returns, shared by both engines.

A state the body made itself (no run has entered it) is the final state as given, when it is
final; another run's state (from ``return_state=True``, ``future.state``) counts by the
aggregate rule, as a list of such states does: all completed → ``Completed`` (the value is
what was returned), any cancelled → ``Cancelled``, else ``Failed`` with the first failure's
exception. Each engine decides first what it does with a failed state (a task retries it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowbook.engine.task_engine import root_cause
from flowbook.exceptions import RunFailedError
from flowbook.states import Cancelled, Completed, Failed, State, StateType

__all__ = ["aggregate", "state_returned"]

_FAILED = (StateType.FAILED, StateType.CRASHED)


def state_returned(state: State, not_final: Callable[[State], State]) -> State:
    """The final state a body that returned ``state`` ends in; ``not_final(state)`` decides
    for a state the body made that is not final (it may raise)."""
    if state.run_id is None:
        return state.copy() if state.is_final() else not_final(state)
    return aggregate(state, [state])


def aggregate(value: Any, states: list[State]) -> State:
    """The aggregate rule over returned ``states``; ``value`` is what a completed call gives."""
    total = len(states)
    if all(s.is_completed() for s in states):
        return Completed("All states completed.", value)
    cancelled = [s for s in states if s.is_cancelled()]
    if cancelled:
        return Cancelled(
            f"{len(cancelled)}/{total} states cancelled.", root_cause(cancelled[0].data)
        )
    bad = [s for s in states if not s.is_completed()]
    failed = [s for s in bad if s.type in _FAILED]
    first = (failed or bad)[0]
    exc = root_cause(first.data) if isinstance(first.data, BaseException) else None
    if exc is None:
        exc = RunFailedError(f"A returned state is {first.short()}")
    if failed:
        return Failed(f"{len(failed)}/{total} states failed.", exc)
    return Failed(f"{len(bad)}/{total} states are not final.", exc)
