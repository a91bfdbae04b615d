"""Prefect 1's cache validators, as flowbook cache key functions.

Prefect 1 kept a task's last result for ``cache_for`` and asked a validator, on the next
call, whether that result still fitted the call. flowbook looks results up by key instead:
each validator here is a ``cache_key_fn(context, parameters)`` whose key holds exactly what
the Prefect 1 validator compared, and ``cache_for`` becomes the entry's expiration. Every
key also holds the task's identity and the code it runs (as ``task_input_hash`` does), so an
edited task never reuses a result of its old code.

``@task(cache_for=..., cache_validator=all_inputs)`` is thus ``@task(cache_expiration=...,
cache_key_fn=all_inputs)``. A Prefect 1 validator written by hand (a function of ``state,
inputs, parameters`` returning a bool) cannot be turned into a key; ``@task`` refuses it and
says to give a ``cache_key_fn``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

from flowbook.caching.keys import CacheKeyContext, task_input_hash

__all__ = [
    "all_inputs",
    "all_parameters",
    "duration_only",
    "is_validator",
    "never_use",
    "partial_inputs_only",
    "partial_parameters_only",
]

KeyFn = Callable[[CacheKeyContext, dict[str, Any]], str | None]

# The key functions defined here (and made by the two factories, forgotten with their
# tasks): the only values ``cache_validator=`` takes.
_VALIDATORS: weakref.WeakSet[KeyFn] = weakref.WeakSet()


def _validator(fn: KeyFn) -> KeyFn:
    _VALIDATORS.add(fn)
    return fn


def is_validator(value: object) -> bool:
    """True for the validators of this module (and those its factories made)."""
    try:
        return value in _VALIDATORS
    except TypeError:  # a value that cannot be weakly referenced is none of them
        return False


@_validator
def never_use(context: CacheKeyContext, parameters: dict[str, Any]) -> str | None:
    """Never cache: every call runs."""
    return None


@_validator
def duration_only(context: CacheKeyContext, parameters: dict[str, Any]) -> str | None:
    """One result per task, whatever its inputs, until it expires (``cache_for``'s default)."""
    return task_input_hash(context, {})


@_validator
def all_inputs(context: CacheKeyContext, parameters: dict[str, Any]) -> str | None:
    """A result per set of inputs (the task's arguments), as ``task_input_hash``."""
    return task_input_hash(context, parameters)


@_validator
def all_parameters(context: CacheKeyContext, parameters: dict[str, Any]) -> str | None:
    """A result per set of the flow run's parameters, whatever the task's own inputs."""
    return task_input_hash(context, _flow_parameters(context, None))


def partial_inputs_only(validate_on: Iterable[str] | None = None) -> KeyFn:
    """A key function: a result per value of the inputs named in ``validate_on``.

    With ``validate_on=None`` the inputs do not matter (as Prefect 1: the cache stays valid).
    """
    names = _names("partial_inputs_only", validate_on)

    def partial_inputs(context: CacheKeyContext, parameters: dict[str, Any]) -> str | None:
        if names is None:
            return task_input_hash(context, {})
        return task_input_hash(context, {k: v for k, v in parameters.items() if k in names})

    partial_inputs.__name__ = partial_inputs.__qualname__ = (
        f"partial_inputs_only(validate_on={_shown(names)})"
    )
    return _validator(partial_inputs)


def partial_parameters_only(validate_on: Iterable[str] | None = None) -> KeyFn:
    """A key function: a result per value of the flow parameters named in ``validate_on``.

    With ``validate_on=None`` the parameters do not matter (as Prefect 1: the cache stays
    valid).
    """
    names = _names("partial_parameters_only", validate_on)

    def partial_parameters(context: CacheKeyContext, parameters: dict[str, Any]) -> str | None:
        if names is None:
            return task_input_hash(context, {})
        return task_input_hash(context, _flow_parameters(context, names))

    partial_parameters.__name__ = partial_parameters.__qualname__ = (
        f"partial_parameters_only(validate_on={_shown(names)})"
    )
    return _validator(partial_parameters)


def _flow_parameters(context: CacheKeyContext, names: frozenset[str] | None) -> dict[str, Any]:
    """The flow run's parameters, named apart from the task's inputs in the key's parts (so
    that a miss is explained as "flow parameter 'n' changed")."""
    flow_run = context.flow_run
    given: dict[str, Any] = dict(flow_run.parameters) if flow_run is not None else {}
    return {f"flow parameter {k}": v for k, v in given.items() if names is None or k in names}


def _names(factory: str, validate_on: Iterable[str] | None) -> frozenset[str] | None:
    if validate_on is None:
        return None
    if isinstance(validate_on, str) or not isinstance(validate_on, Iterable):
        raise TypeError(
            f"{factory}(validate_on={validate_on!r}): validate_on must be a list of names, "
            f"e.g. {factory}(validate_on=[{str(validate_on)!r}])"
        )
    names = list(validate_on)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(
            f"{factory}(validate_on={names!r}): {bad[0]!r} is not a name; validate_on must "
            "be a list of strings"
        )
    return frozenset(names)


def _shown(names: frozenset[str] | None) -> str:
    return "None" if names is None else repr(sorted(names))
