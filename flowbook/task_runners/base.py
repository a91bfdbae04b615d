"""The task runner contract: where submitted task runs execute.

A task runner receives ``SubmittedCall`` objects: a task run that is ready to be started once
its upstream futures are final. The base class implements the dependency part once for every
local runner: a call whose upstream runs are still going is parked on their futures and handed
to ``_execute`` by the callback of the last one to finish, so no worker thread ever sits
blocked waiting for an upstream result. A distributed runner (Dask) overrides ``submit`` and
passes the dependencies to its scheduler instead.

One runner instance serves one flow run: ``Flow`` calls ``duplicate()`` on the instance given
to ``@flow(task_runner=...)``, enters the copy for the run and exits it when the run ends.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

    from flowbook.futures import TaskRunFuture

__all__ = ["SubmittedCall", "TaskRunner", "when_final"]


def when_final(futures: Sequence[TaskRunFuture[Any]], then: Callable[[], None]) -> None:
    """Call ``then()`` once every future in ``futures`` is final: at once if they all are,
    else on the thread that finishes the last one. Nothing blocks meanwhile."""
    waiting = [f for f in futures if not f.done()]
    if not waiting:
        then()
        return
    remaining = [len(waiting)]
    lock = threading.Lock()

    def one_done(_: TaskRunFuture[Any]) -> None:
        with lock:
            remaining[0] -= 1
            ready = remaining[0] == 0
        if ready:
            then()

    for f in waiting:
        f.add_done_callback(one_done)


class SubmittedCall(abc.ABC):
    """A submitted task run as a runner sees it."""

    upstream: Sequence[TaskRunFuture[Any]]

    @abc.abstractmethod
    def run(self) -> None:
        """Run the task run to its final state here (in the current thread)."""

    def run_as_call(self) -> None:
        """Run it here, on the thread that submitted it, as if the task were called: an
        interrupt of its body (a Ctrl-C, ``RunInterrupted``) ends the run and then goes on to
        the caller, where ``run`` (a worker's) keeps it."""
        self.run()

    @abc.abstractmethod
    def cancel(self, reason: str) -> None:
        """Finish the task run as Cancelled without running it."""


class TaskRunner(abc.ABC):
    """Base class of task runners."""

    # True for a runner whose ``queued_calls()`` counts the calls waiting for a worker: a
    # large ``.map()`` then keeps that queue short (flowbook.engine.pacing)
    queues_calls = False

    def __init__(self) -> None:
        self._started = False

    @property
    def name(self) -> str:
        return type(self).__name__

    @abc.abstractmethod
    def duplicate(self) -> Self:
        """A fresh, unstarted runner with the same configuration."""

    def start(self) -> None:
        self._started = True

    def shutdown(self, cancel_pending: bool = False) -> None:
        """Stop accepting work. With ``cancel_pending``, calls not started are dropped or
        cancelled (the flow run's engine ends the runs it has, whichever the runner does)."""
        self._started = False

    def cancel_all(self, reason: str) -> None:
        """The flow run was cancelled for ``reason``: ``shutdown(cancel_pending=True)``. The
        thread pool also ends every call it is given afterwards (from a body still inside
        flowbook code, or released by the end of its upstream runs) Cancelled with
        ``reason``; other runners end such runs by their own rules."""
        self.shutdown(cancel_pending=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(cancel_pending=exc_info[0] is not None)

    def submit(self, call: SubmittedCall) -> None:
        """Run ``call`` once its upstream futures are final."""
        when_final(call.upstream, lambda: self._execute(call))

    def queued_calls(self) -> int:
        """How many calls wait for a worker (given to ``_execute`` and not started)."""
        return 0

    @abc.abstractmethod
    def _execute(self, call: SubmittedCall) -> None:
        """Start ``call.run()`` now or soon; its upstream runs are final."""

    def __repr__(self) -> str:
        return f"{self.name}()"
