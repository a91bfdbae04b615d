"""Exceptions a user can meet. Each message names the value at fault and what to do."""

from __future__ import annotations

__all__ = [
    "EnvConflictError",
    "FlowbookError",
    "MissingContextError",
    "ParameterTypeError",
    "RunCancelledError",
    "RunFailedError",
    "RunInterrupted",
    "RunNameError",
    "RunTimeoutError",
    "UnfinishedRunError",
    "UpstreamTaskError",
]


class FlowbookError(Exception):
    """Base class of flowbook's own errors."""


class ParameterTypeError(FlowbookError, TypeError):
    """A flow was called with a parameter value that does not match its type hint."""


class MissingContextError(FlowbookError, RuntimeError):
    """A run-only API (such as ``get_run_logger``) was used outside a flow or task run."""


class UnfinishedRunError(FlowbookError, RuntimeError):
    """A result was asked of a run that has not reached a final state."""


class RunFailedError(FlowbookError, RuntimeError):
    """A run failed without an exception of its own (for example a flow whose tasks failed)."""


class UpstreamTaskError(FlowbookError, RuntimeError):
    """A task run did not start because a task run it depends on did not complete."""


class RunTimeoutError(FlowbookError, TimeoutError):
    """A run exceeded its ``timeout_seconds``. ``run_id`` names the run whose limit it was."""

    def __init__(self, message: str = "", run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class RunCancelledError(FlowbookError, RuntimeError):
    """A run was cancelled before it finished."""


class RunNameError(FlowbookError, ValueError):
    """A run's name could not be made from ``flow_run_name`` / ``task_run_name``: the template
    or function raised, or gave something that is not a usable name. The message names the
    flow or task, the template or function, and the original error (also the ``__cause__``).
    """


class EnvConflictError(FlowbookError, ValueError):
    """Two runs in one process asked for different values of one environment variable."""


class RunInterrupted(BaseException):
    """Raised inside a run's thread to stop it: its flow run was interrupted or cancelled.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that ``except Exception`` in user code
    does not swallow it; the run ends ``Cancelled``.
    """
