"""Prefect 1-shaped states, as ``Flow.run()`` of a ``with Flow(...)`` block returns them.

Prefect 1 code checks a run's outcome through a class hierarchy (``Success``, ``Failed``,
``TriggerFailed``, ``Mapped``...) and predicates (``is_successful()``, ``is_failed()``...),
and reads ``state.result[task].result``. flowbook's own states (``flowbook.states``) are
flat data with a type; these classes are a read-only translation of them, built once a run
has ended, so that Prefect 1 code keeps working unchanged. The engine never sees them.
"""

from __future__ import annotations

from typing import Any

from flowbook.states import State as FlowbookState
from flowbook.states import StateType

__all__ = [
    "Cached",
    "Cancelled",
    "Failed",
    "Finished",
    "Mapped",
    "Pending",
    "Running",
    "Skipped",
    "State",
    "Success",
    "TimedOut",
    "TriggerFailed",
    "all_succeeded",
    "from_flowbook",
    "mapped_state",
]


class State:
    """A Prefect 1 state: ``message``, ``result`` and the ``is_*()`` predicates."""

    def __init__(
        self, message: str | None = None, result: Any = None, map_states: list[State] | None = None
    ) -> None:
        self.message = message
        self.result = result
        # the states of a mapped task's runs (Prefect 1 kept them on ``Mapped``)
        self.map_states: list[State] = list(map_states or [])

    def __repr__(self) -> str:
        message = f"({self.message!r})" if self.message else "()"
        return f"<{type(self).__name__}{message}>"

    def is_pending(self) -> bool:
        return isinstance(self, Pending)

    def is_running(self) -> bool:
        return isinstance(self, Running)

    def is_finished(self) -> bool:
        return isinstance(self, Finished)

    def is_successful(self) -> bool:
        return isinstance(self, Success)

    def is_failed(self) -> bool:
        return isinstance(self, Failed)

    def is_mapped(self) -> bool:
        return isinstance(self, Mapped)

    def is_skipped(self) -> bool:
        return isinstance(self, Skipped)

    def is_cached(self) -> bool:
        return isinstance(self, Cached)


class Pending(State):
    """Not started (Prefect 1 also used it for runs that never got to start)."""


class Running(State):
    """Started, not finished."""


class Finished(State):
    """Any final state."""


class Success(Finished):
    """The task (or, for a flow, every reference task) succeeded."""


class Cached(Success):
    """Succeeded with a cached result; the task's body did not run."""


class Skipped(Success):
    """Counted as a success without running."""


class Mapped(Success):
    """A mapped task: ``map_states`` holds its runs' states, in order (some may have failed:
    ``all_succeeded(state)`` tells)."""


class Failed(Finished):
    """The task raised (``result`` is the exception), or a reference task did not succeed."""


class TriggerFailed(Failed):
    """Not run because its trigger was not met (by default: an upstream task did not succeed)."""


class TimedOut(Failed):
    """Exceeded its timeout."""


class Cancelled(Finished):
    """Stopped before it finished."""


def _is_trigger_failure(exc: Any) -> bool:
    """True when the task did not run because of its upstream tasks or its trigger."""
    from flowbook.exceptions import UpstreamTaskError

    if isinstance(exc, UpstreamTaskError):
        return True
    # a trigger that is not met raises an exception named after Prefect 1's signal
    return any(cls.__name__ == "TriggerFailed" for cls in type(exc).__mro__)


def from_flowbook(state: FlowbookState | None) -> State:
    """The Prefect 1 form of one task run's flowbook state."""
    if state is None:
        return Pending("The task run was not created.")
    kind, message = state.type, state.message
    if kind is StateType.COMPLETED:
        value = state.result(raise_on_failure=False)
        if state.name == "Cached":
            return Cached(message, value)
        return Success(message, value)
    if kind is StateType.FAILED:
        if _is_trigger_failure(state.data):
            return TriggerFailed(message, state.data)
        if state.name == "TimedOut":
            return TimedOut(message, state.data)
        return Failed(message, state.data)
    if kind is StateType.CRASHED:
        return Failed(message, state.data)
    if kind is StateType.CANCELLED:
        return Cancelled(message, state.data)
    if kind is StateType.RUNNING:
        return Running(message)
    return Pending(message)


def mapped_state(children: list[State]) -> State:
    """The state of a mapped task from the states of its runs: Prefect 1's ``Mapped``.

    As in Prefect 1, the parent is ``Mapped`` (``is_mapped()`` and ``is_successful()``) even
    when some of its runs failed: ``map_states`` lists the runs' states and ``result`` their
    results, and whether the mapped task succeeded is ``all_succeeded(state)``.
    """
    results = [child.result for child in children]
    failed = sum(1 for child in children if not all_succeeded(child))
    message = f"Mapped tasks submitted for execution ({len(children)})."
    if failed:
        message = f"{message[:-1]}; {failed} of them did not succeed."
    return Mapped(message, results, children)


def all_succeeded(state: State) -> bool:
    """Whether ``state`` is a success, and for a ``Mapped`` state every one of its runs too
    (how a flow's reference tasks are judged, as Prefect 1 looked into ``map_states``)."""
    return state.is_successful() and all(all_succeeded(child) for child in state.map_states)
