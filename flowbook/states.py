"""Run states: immutable data, built by small constructors, changed only by the engine.

A state is a frozen value: its type (the coarse kind that orchestration logic looks at),
its name (what a person reads: ``Cached`` is a ``COMPLETED`` state, ``AwaitingRetry`` a
``SCHEDULED`` one, ``TimedOut`` a ``FAILED`` one), an optional message, the time it was
entered, and the data it carries: the return value for a completed state, the exception for
a failed one. ``State.result()`` gives that value back or raises that exception. A value
kept elsewhere (a task's result on a Dask cluster) is a ``DeferredResult``, which
``State.result()`` fetches when first asked for.

The engine creates a new state object for every transition and emits it as an event; nothing
ever mutates a state, so subscribers (console, store, widget) can keep references freely.
"""

from __future__ import annotations

import datetime
import enum
import time
from typing import Any

__all__ = [
    "AwaitingRetry",
    "Cached",
    "Cancelled",
    "Completed",
    "Crashed",
    "DeferredResult",
    "Failed",
    "Pending",
    "Retrying",
    "Running",
    "Scheduled",
    "State",
    "StateType",
    "TimedOut",
]


class StateType(str, enum.Enum):
    """The coarse kind of a state; several named states share one type."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value


FINAL_TYPES = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
)
# Keyed by the plain string: hashing an enum member calls a Python-level method, and states
# are created several times per task run.
_DEFAULT_NAMES = {t._value_: t._value_.capitalize() for t in StateType}
_FINAL_VALUES = frozenset(t._value_ for t in FINAL_TYPES)

_NO_DATA: Any = object()


class _StateFields:
    """A state's fields, assignable: states are built as this and then become ``State``
    (``_make``). Assigning through ``object.__setattr__`` past ``State``'s refusal costs about
    0.1 µs a field, and every task run makes three states."""

    __slots__ = ("data", "message", "name", "run_id", "timestamp_s", "type")

    type: StateType
    name: str
    message: str | None
    data: Any
    timestamp_s: float
    run_id: str | None


class State(_StateFields):
    """One state of a flow run or task run. Immutable; compare states by identity."""

    __slots__ = ()

    def __new__(
        cls,
        type: StateType,
        name: str | None = None,
        message: str | None = None,
        data: Any = _NO_DATA,
        *,
        run_id: str | None = None,
        timestamp_s: float | None = None,
    ) -> State:
        if not isinstance(type, StateType):
            raise TypeError(
                f"State type must be a StateType, got {type!r}; use e.g. StateType.COMPLETED"
            )
        return _make(
            type,
            name or _DEFAULT_NAMES[type._value_],
            message,
            None if data is _NO_DATA else data,
            run_id,
            timestamp_s,
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"State is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"State is immutable; cannot delete {name!r}")

    def copy(self, **changes: Any) -> State:
        """A new state equal to this one but for ``changes`` (and a fresh timestamp)."""
        fields: dict[str, Any] = {
            "type": self.type,
            "name": self.name,
            "message": self.message,
            "data": self.data,
            "run_id": self.run_id,
            "timestamp_s": None,
        }
        fields.update(changes)
        return State(**fields)

    # -- when --------------------------------------------------------------------------------
    @property
    def timestamp(self) -> datetime.datetime:
        """When the state was entered (UTC)."""
        return datetime.datetime.fromtimestamp(self.timestamp_s, tz=datetime.timezone.utc)

    # -- predicates --------------------------------------------------------------------------
    def is_scheduled(self) -> bool:
        return self.type is StateType.SCHEDULED

    def is_pending(self) -> bool:
        return self.type is StateType.PENDING

    def is_running(self) -> bool:
        return self.type is StateType.RUNNING

    def is_completed(self) -> bool:
        return self.type is StateType.COMPLETED

    def is_failed(self) -> bool:
        return self.type is StateType.FAILED

    def is_crashed(self) -> bool:
        return self.type is StateType.CRASHED

    def is_cancelled(self) -> bool:
        return self.type is StateType.CANCELLED

    def is_final(self) -> bool:
        return self.type._value_ in _FINAL_VALUES

    # -- value -------------------------------------------------------------------------------
    def result(self, raise_on_failure: bool = True) -> Any:
        """The run's return value; for a failed, crashed or cancelled state, its exception.

        With ``raise_on_failure=False`` the exception is returned instead of raised.
        A state that is not final has no result yet.
        """
        if self.type is StateType.COMPLETED:
            data = self.data
            return data.get() if isinstance(data, DeferredResult) else data
        if self.type._value_ in _FINAL_VALUES:
            exc = self.data if isinstance(self.data, BaseException) else None
            if exc is None:
                from flowbook.exceptions import RunFailedError

                exc = RunFailedError(f"Run ended in state {self.short()} with no exception")
            if raise_on_failure:
                __tracebackhide__ = True  # IPython shows the caller's frame, not this one
                raise exc
            return exc
        from flowbook.exceptions import UnfinishedRunError

        raise UnfinishedRunError(
            f"The run is in state {self.short()}, which has no result yet; wait for it to finish"
        )

    # -- text --------------------------------------------------------------------------------
    def short(self) -> str:
        """The form used in log lines: ``Completed()``, ``Failed('1/3 states failed.')``."""
        parts = [repr(self.message)] if self.message else []
        if self.name != _DEFAULT_NAMES[self.type._value_]:
            parts.append(f"type={self.type.value}")
        return f"{self.name}({', '.join(parts)})"

    def __repr__(self) -> str:
        parts = [f"message={self.message!r}", f"type={self.type.value}"]
        if self.type is StateType.COMPLETED:
            parts.append(f"result={_preview(self.data)}")
        elif self.type._value_ in _FINAL_VALUES and isinstance(self.data, BaseException):
            parts.append(f"result={type(self.data).__name__}({_preview_exc(self.data)})")
        return f"{self.name}({', '.join(parts)})"


class DeferredResult:
    """A completed run's value that lives elsewhere, fetched by ``get()`` when needed.

    ``preview`` is a short text of the value made where it lives, for displays that must not
    fetch it.
    """

    __slots__ = ()

    preview: str = ""

    def get(self) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.preview or f"<{type(self).__name__}>"


def resolve_data(data: Any) -> Any:
    """``data`` itself, or the value of a ``DeferredResult``."""
    return data.get() if isinstance(data, DeferredResult) else data


def _preview(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break a state's repr
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _preview_exc(exc: BaseException) -> str:
    return _preview(str(exc))


# -- constructors ----------------------------------------------------------------------------


def _make(
    type: StateType,
    name: str,
    message: str | None,
    data: Any,
    run_id: str | None = None,
    timestamp_s: float | None = None,
) -> State:
    """A new state, its fields given in full (the constructors below; no checks)."""
    state = _StateFields()
    state.type = type
    state.name = name
    state.message = message
    state.data = data
    state.run_id = run_id
    state.timestamp_s = _time() if timestamp_s is None else timestamp_s
    state.__class__ = State  # (same layout: from here on the fields refuse changes)
    return state  # type: ignore[return-value]


_time = time.time
_SCHEDULED = StateType.SCHEDULED
_PENDING = StateType.PENDING
_RUNNING = StateType.RUNNING
_COMPLETED = StateType.COMPLETED
_FAILED = StateType.FAILED
_CRASHED = StateType.CRASHED
_CANCELLED = StateType.CANCELLED


def Scheduled(
    message: str | None = None,
    *,
    name: str | None = None,
    run_id: str | None = None,
    timestamp_s: float | None = None,
) -> State:
    return _make(_SCHEDULED, name or "Scheduled", message, None, run_id, timestamp_s)


def AwaitingRetry(
    message: str | None = None,
    data: Any = None,
    *,
    run_id: str | None = None,
    timestamp_s: float | None = None,
) -> State:
    return _make(_SCHEDULED, "AwaitingRetry", message, data, run_id, timestamp_s)


def Pending(
    message: str | None = None,
    *,
    name: str | None = None,
    run_id: str | None = None,
    timestamp_s: float | None = None,
) -> State:
    return _make(_PENDING, name or "Pending", message, None, run_id, timestamp_s)


def Running(
    message: str | None = None,
    *,
    name: str | None = None,
    run_id: str | None = None,
    timestamp_s: float | None = None,
) -> State:
    return _make(_RUNNING, name or "Running", message, None, run_id, timestamp_s)


def Retrying(
    message: str | None = None, *, run_id: str | None = None, timestamp_s: float | None = None
) -> State:
    return _make(_RUNNING, "Retrying", message, None, run_id, timestamp_s)


def Completed(
    message: str | None = None,
    data: Any = None,
    *,
    name: str | None = None,
    run_id: str | None = None,
    timestamp_s: float | None = None,
) -> State:
    return _make(_COMPLETED, name or "Completed", message, data, run_id, timestamp_s)


def Cached(
    message: str | None = None,
    data: Any = None,
    *,
    run_id: str | None = None,
    timestamp_s: float | None = None,
) -> State:
    return _make(_COMPLETED, "Cached", message, data, run_id, timestamp_s)


def Failed(
    message: str | None = None,
    data: Any = None,
    *,
    name: str | None = None,
    run_id: str | None = None,
    timestamp_s: float | None = None,
) -> State:
    return _make(_FAILED, name or "Failed", message, data, run_id, timestamp_s)


def TimedOut(
    message: str | None = None,
    data: Any = None,
    *,
    run_id: str | None = None,
    timestamp_s: float | None = None,
) -> State:
    return _make(_FAILED, "TimedOut", message, data, run_id, timestamp_s)


def Crashed(
    message: str | None = None,
    data: Any = None,
    *,
    name: str | None = None,
    run_id: str | None = None,
    timestamp_s: float | None = None,
) -> State:
    return _make(_CRASHED, name or "Crashed", message, data, run_id, timestamp_s)


def Cancelled(
    message: str | None = None,
    data: Any = None,
    *,
    name: str | None = None,
    run_id: str | None = None,
    timestamp_s: float | None = None,
) -> State:
    return _make(_CANCELLED, name or "Cancelled", message, data, run_id, timestamp_s)
