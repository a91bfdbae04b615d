"""Triggers: whether a task run starts, decided from the final states of its upstream runs.

Prefect 1's ``@task(trigger=...)``. A trigger is a function of one argument, the upstream
states as a mapping (each upstream run's future -> its final ``State``), which returns True
to start the run, or raises ``TriggerFailedError`` (or returns False) to end it ``Failed``
with the state name ``TriggerFailed`` without calling the task. The upstream runs are those
whose futures are among the call's arguments and ``wait_for``; a mapped upstream counts once
per mapped run. A task run with no upstream run always starts, as every Prefect 1 trigger
allowed.

A run that starts although an upstream run failed receives that run's exception in place of
its result (Prefect 1 passed the failed task's result, which was its exception too).

The upstream states are flowbook states: ``is_completed()`` is Prefect 1's
``is_successful()`` (a cached result is a success), and a failed, timed-out or crashed run
counts as failed; a cancelled run is neither, as in Prefect 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flowbook.exceptions import UpstreamTaskError
from flowbook.states import State, StateType

__all__ = [
    "TriggerFailedError",
    "all_failed",
    "all_finished",
    "all_successful",
    "always_run",
    "any_failed",
    "any_successful",
    "manual_only",
    "not_all_skipped",
    "some_failed",
    "some_successful",
]

UpstreamStates = Mapping[Any, State]
Trigger = Callable[[UpstreamStates], bool]


class TriggerFailedError(UpstreamTaskError):
    """A task run did not start because its trigger refused the states of its upstream runs."""


_FAILED = (StateType.FAILED, StateType.CRASHED)


def _succeeded(state: State) -> bool:
    return state.type is StateType.COMPLETED


def _failed(state: State) -> bool:
    return state.type in _FAILED


def all_finished(upstream_states: UpstreamStates) -> bool:
    """Start whatever the upstream runs ended in (they are always final when this is asked)."""
    if not all(state.is_final() for state in upstream_states.values()):
        raise TriggerFailedError(
            'Trigger was "all_finished" but some of the upstream tasks were not finished.'
        )
    return True


always_run = all_finished


def all_successful(upstream_states: UpstreamStates) -> bool:
    """Start if every upstream run completed (the default)."""
    if not all(_succeeded(state) for state in upstream_states.values()):
        raise TriggerFailedError(
            'Trigger was "all_successful" but some of the upstream tasks failed.'
        )
    return True


def all_failed(upstream_states: UpstreamStates) -> bool:
    """Start if every upstream run failed (a clean-up or alert task)."""
    if not all(_failed(state) for state in upstream_states.values()):
        raise TriggerFailedError(
            'Trigger was "all_failed" but some of the upstream tasks succeeded.'
        )
    return True


def any_successful(upstream_states: UpstreamStates) -> bool:
    """Start if at least one upstream run completed."""
    if upstream_states and not any(_succeeded(state) for state in upstream_states.values()):
        raise TriggerFailedError(
            'Trigger was "any_successful" but none of the upstream tasks succeeded.'
        )
    return True


def any_failed(upstream_states: UpstreamStates) -> bool:
    """Start if at least one upstream run failed."""
    if upstream_states and not any(_failed(state) for state in upstream_states.values()):
        raise TriggerFailedError('Trigger was "any_failed" but none of the upstream tasks failed.')
    return True


def not_all_skipped(upstream_states: UpstreamStates) -> bool:
    """Prefect 1's guard against all-skipped upstreams; flowbook runs are never skipped, so
    this starts exactly when every upstream run completed."""
    if not all(_succeeded(state) for state in upstream_states.values()):
        raise TriggerFailedError(
            'Trigger was "not_all_skipped" but some of the upstream tasks failed.'
        )
    return True


def some_failed(at_least: float | None = None, at_most: float | None = None) -> Trigger:
    """A trigger that starts if the number of failed upstream runs is within bounds.

    A bound below 1 is a fraction of the upstream runs, otherwise a count (Prefect 1's rule).
    """
    return _counting("some_failed", _failed, at_least, at_most)


def some_successful(at_least: float | None = None, at_most: float | None = None) -> Trigger:
    """A trigger that starts if the number of completed upstream runs is within bounds.

    A bound below 1 is a fraction of the upstream runs, otherwise a count (Prefect 1's rule).
    """
    return _counting("some_successful", _succeeded, at_least, at_most)


def _counting(
    name: str, counts: Callable[[State], bool], at_least: float | None, at_most: float | None
) -> Trigger:
    for label, bound in (("at_least", at_least), ("at_most", at_most)):
        if bound is not None and (
            isinstance(bound, bool) or not isinstance(bound, (int, float)) or bound < 0
        ):
            raise ValueError(
                f"{name}({label}={bound!r}): {label} must be a number >= 0 (below 1: a "
                "fraction of the upstream runs; from 1: a count), or None"
            )

    def trigger(upstream_states: UpstreamStates) -> bool:
        if not upstream_states:
            return True
        total = len(upstream_states)
        n = sum(1 for state in upstream_states.values() if counts(state))
        low = 0.0 if at_least is None else (total * at_least if at_least < 1 else at_least)
        high = float(total) if at_most is None else (total * at_most if at_most < 1 else at_most)
        if not low <= n <= high:
            raise TriggerFailedError(f'Trigger was "{name}" but thresholds were not met.')
        return True

    trigger.__name__ = trigger.__qualname__ = f"{name}(at_least={at_least}, at_most={at_most})"
    return trigger


def manual_only(upstream_states: UpstreamStates) -> bool:
    """Refused: Prefect 1 paused such a run until someone resumed it in its UI."""
    raise ValueError(MANUAL_ONLY_REFUSED)


MANUAL_ONLY_REFUSED = (
    "Prefect 1's manual_only trigger is not supported: in Prefect 1 it paused the task run "
    "until someone approved it in the Prefect UI, and flowbook has no approval step. Put the "
    "tasks that need approval in a flow of their own and run that flow once you approve, or "
    "gate them on a flow parameter (e.g. approved: bool = False) checked in the flow body"
)


def judge(trigger: Callable[[Any], bool], states: Mapping[Any, State]) -> State | None:
    """None when ``trigger`` lets the run start on these upstream states, else the state the
    run ends in: ``TriggerFailed`` (its exception a ``TriggerFailedError``), or ``Failed``
    naming the trigger when it raised anything else (as any part around a body that raises)."""
    name = getattr(trigger, "__name__", repr(trigger))
    try:
        if trigger(states):
            return None
        refusal = TriggerFailedError(f'Trigger was "{name}" and it returned False.')
    except TriggerFailedError as exc:
        refusal = exc
    except Exception as error:
        return State(
            StateType.FAILED,
            None,
            f"Task run's trigger {name!r} raised {type(error).__name__}: {error}",
            error,
        )
    return State(StateType.FAILED, "TriggerFailed", str(refusal), refusal)
