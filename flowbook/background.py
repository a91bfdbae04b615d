"""Background runs: ``my_flow.run_background(...)`` starts a flow run on its own thread.

The run is created on the calling thread, so everything that watches runs (a notebook's run
widget, the store) sees it start where it was called; its body then runs on a thread of its
own and the call returns a ``BackgroundRun`` handle at once. The handle gives the run's
``state``, waits for its ``result()``, and ``cancel()`` stops it: task runs that have not
started never start, running ones end ``Cancelled``, and the flow body's thread is
interrupted.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from flowbook.engine import interrupts
from flowbook.engine.interrupts import shields, unshield
from flowbook.engine.runs import current_flow_run, current_task_run
from flowbook.states import Pending, State

if TYPE_CHECKING:
    from flowbook.engine.flow_engine import FlowRunEngine

__all__ = ["BackgroundRun"]

R = TypeVar("R")


class BackgroundRun(Generic[R]):
    """A handle on a flow run started with ``Flow.run_background``."""

    def __init__(self, engine: FlowRunEngine) -> None:
        if current_flow_run.get() is not None or current_task_run.get() is not None:
            raise RuntimeError(
                f"{engine.flow.name}.run_background() was called inside a flow or task run; "
                "start background runs from top-level code, or call the flow directly to run it "
                "as a subflow"
            )
        self._engine = engine
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._final: State | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        engine.create()
        try:
            engine.run.background = self
            context = contextvars.copy_context()
            self._thread = threading.Thread(
                target=context.run,
                args=(self._main,),
                name=f"flowbook-background-{engine.run.name}",
                daemon=True,
            )
            self._thread.start()
        except BaseException as exc:  # an interrupt before the run's thread started: it ends
            shields.stack.append(None)  # (no interrupt lands from here on)
            try:
                engine.could_not_start(exc)
            finally:
                unshield()
            raise

    # -- the run's thread ----------------------------------------------------------------------
    def _main(self) -> None:
        engine = self._engine
        try:
            if engine.flow.is_async:
                self._final = asyncio.run(self._main_async())
            else:
                self._final = engine.run_sync()
        except BaseException:  # the final state carries it; result() raises it
            self._final = engine.run.state
        finally:
            with self._lock:
                self._loop = self._task = None
            self._done.set()

    async def _main_async(self) -> State:
        task = asyncio.current_task()
        with self._lock:
            self._loop, self._task = asyncio.get_running_loop(), task
        return await self._engine.run_async()

    # -- the handle ----------------------------------------------------------------------------
    @property
    def flow_run_id(self) -> str:
        return self._engine.run.id

    @property
    def name(self) -> str:
        """The flow run's name."""
        return self._engine.run.name

    @property
    def state(self) -> State:
        """The run's latest state (``Pending`` until it starts)."""
        return self._engine.run.state or Pending()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run ends; False if ``timeout`` seconds passed first."""
        return self._done.wait(timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        """The flow's return value, once the run ends (``TimeoutError`` after ``timeout`` s).

        A run that failed or was cancelled raises its exception, unless ``raise_on_failure``
        is False: then its final state is returned.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(
                f"background run {self.name!r} of flow {self._engine.flow.name!r} did not end "
                f"within {timeout:g} second(s); it is {self.state.short()}"
            )
        state = self._final or self.state
        if not raise_on_failure and not state.is_completed():
            return state
        __tracebackhide__ = True  # a failure raised here shows the caller's frame, not this one
        return self._engine.outcome(state, return_state=False)

    def cancel(self, reason: str = "Cancelled by the user.") -> bool:
        """Stop the run; False if it had already ended."""
        if self._done.is_set():
            return False
        # called from a task's or flow's body: flowbook code, where an interrupt of that
        # body waits until the cancel is done (``interrupts.enter``)
        body = interrupts.enter()
        try:
            return self._cancel(reason)
        finally:
            interrupts.leave(body)

    def _cancel(self, reason: str) -> bool:
        engine = self._engine
        with self._lock:
            if engine.cancel_reason is not None:
                return True  # already cancelling
            engine.cancel_reason = reason
            loop, task = self._loop, self._task
        try:
            engine.cancel(reason)
        finally:  # (an interrupt raised by the cancel still stops the body first)
            if loop is not None and task is not None:
                loop.call_soon_threadsafe(task.cancel)
            else:
                engine.interrupt_body()
        return True

    def __repr__(self) -> str:
        return (
            f"<BackgroundRun {self.name!r} of flow {self._engine.flow.name!r}: "
            f"{self.state.short()}>"
        )
