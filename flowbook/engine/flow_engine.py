"""The flow run engine: the lifecycle of one flow run, as named phases.

    create -> begin_run -> [attempt: call -> handle_success | handle_exception
                            (-> wait for retry -> next attempt)] -> finish

A flow body runs on the calling thread (``run_sync``) or in the caller's event loop
(``run_async``); both drivers share every phase. The task runner is created for the run in
``begin_run`` and shut down in ``finish``. Before a final state is decided, every task run
the body submitted is waited for, so the state summarises them all:

- the body returned a value, and no task run failed without the body seeing the failure:
  ``Completed('All states completed.')``;
- a task run failed and the body never looked at it (a submitted future never resolved):
  ``Failed('1/3 states failed.')``, and calling the flow raises that task's exception;
- a failure the body caught (``try: t() except ...``) was handled: the flow completes;
- the body raised: ``Failed``, with the tasks' count if the exception came from a task run.

Flow retries run the body again in the same flow run. Task calls that completed in an earlier
attempt are not executed again when their inputs are unchanged: they are matched by task, by
call order within the attempt, and by the content hash of their arguments.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextvars import Token
from typing import TYPE_CHECKING, Any

from flowbook._origin import run_origin
from flowbook._setup import ensure_configured
from flowbook.engine import heap
from flowbook.engine.env import acquire_env, release_env
from flowbook.engine.events import (
    FlowRunCreated,
    FlowRunFinished,
    StateChanged,
    TaskRunCreated,
    bus,
)
from flowbook.engine.runs import FlowRun, TaskRun, current_flow_run, current_task_run
from flowbook.engine.task_engine import THREADS_LOCK, _resolve, collect_futures, root_cause
from flowbook.engine.timeouts import await_with_timeout, call_with_timeout, raise_in_thread
from flowbook.exceptions import (
    RunCancelledError,
    RunFailedError,
    RunInterrupted,
    RunTimeoutError,
)
from flowbook.futures import TaskRunFuture
from flowbook.states import (
    AwaitingRetry,
    Cancelled,
    Completed,
    Failed,
    Pending,
    Retrying,
    Running,
    State,
    StateType,
    TimedOut,
    resolve_data,
)

if TYPE_CHECKING:
    from flowbook.flows import Flow

__all__ = ["FlowRunEngine"]

_FAILED = (StateType.FAILED, StateType.CRASHED)


_SET = object.__setattr__


class FlowRunEngine:
    """Runs one flow run through its lifecycle."""

    def __init__(self, flow: Flow[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.flow = flow
        self.args = args
        self.kwargs = kwargs
        self.parent_record: TaskRun | None = None
        self.env_held = False
        self.heap_held = False  # flowbook.engine.heap.hold() for a top-level run
        # set by Flow.resume: the run resumed and the results of its completed task calls
        self.resumed_from: str | None = None
        self.reusable: dict[tuple[str, int, str], State] = {}
        # task runs before this index belong to earlier attempts (flow retries)
        self.attempt_start = 0
        # why the run is being cancelled, when somebody asked (a background run's cancel())
        self.cancel_reason: str | None = None
        # the thread running a sync body, while it runs
        self.body_thread: int | None = None
        self.run: FlowRun

    # -- state ---------------------------------------------------------------------------------
    def _set_state(self, state: State) -> None:
        run = self.run
        previous = run.state
        if state.run_id is None:
            _SET(state, "run_id", run.id)  # (states are immutable to their users)
        run.state = state
        if bus.wants(StateChanged):
            bus.emit(StateChanged(run, state, previous))

    def _set_record_state(self, state: State) -> None:
        record = self.parent_record
        if record is None:
            return
        previous = record.state
        record.state = state
        if bus.wants(StateChanged):
            bus.emit(StateChanged(record, state, previous))

    # -- phases --------------------------------------------------------------------------------
    def create(self) -> FlowRun:
        flow = self.flow
        parent = current_flow_run.get()
        if parent is None:
            ensure_configured()
        upstream: list[TaskRunFuture[Any]] = []
        collect_futures(self.args, upstream)
        collect_futures(self.kwargs.values(), upstream)
        args, kwargs = self.args, self.kwargs
        if upstream:
            args = tuple(_resolve(a) for a in args)
            kwargs = {k: _resolve(v) for k, v in kwargs.items()}
            self.args, self.kwargs = args, kwargs
        parameters = flow.bind_parameters(args, kwargs)
        record = None
        if parent is not None:
            record = TaskRun(None, parent, (), parameters, parent.next_dynamic_key("subflow"))
            record.upstream_ids = tuple(dict.fromkeys(f.task_run.id for f in upstream))
            self.parent_record = record
        run = FlowRun(flow, parameters, record, flow.tags)
        if parent is None:
            run.notebook, run.cell_id = run_origin()
        run.resumed_from = self.resumed_from
        run.memo.update(self.reusable)
        self.run = run
        if record is not None:
            record.subflow_run = run
            record.tags = flow.tags
        token = current_flow_run.set(run)
        try:
            run.name = flow.run_name(run)
        finally:
            current_flow_run.reset(token)
        if record is not None and parent is not None:
            record.name = run.name
            parent.task_runs.append(record)
            if bus.wants(TaskRunCreated):
                bus.emit(TaskRunCreated(record, record.upstream_ids))
            self._set_record_state(Pending())
        if bus.wants(FlowRunCreated):
            bus.emit(FlowRunCreated(run))
        self._set_state(Pending())
        return run

    def begin_run(self) -> None:
        run, flow = self.run, self.flow
        if flow.env:
            acquire_env(f"flow run {run.name!r} of flow {flow.name!r}", flow.env)
            self.env_held = True
        runner = flow.task_runner.duplicate()
        runner.start()
        run.task_runner = runner
        run.start_s = time.time()
        if flow.log_prints:
            from flowbook.logging import enable_print_capture

            enable_print_capture()
        self._set_record_state(Running())

    def begin_attempt(self) -> None:
        run = self.run
        run.run_count += 1
        run._counters.clear()
        self.attempt_start = len(run.task_runs)
        if run.run_count > 1:
            self._set_state(Retrying(f"Retry {run.run_count - 1}/{self.flow.retries}"))
        self._set_state(Running())

    def call_sync(self) -> Any:
        flow = self.flow
        with THREADS_LOCK:
            self.body_thread = threading.get_ident()
        try:
            if flow.timeout_seconds is None:
                return flow.fn(*self.args, **self.kwargs)
            run = self.run
            return call_with_timeout(
                flow.fn,
                self.args,
                self.kwargs,
                flow.timeout_seconds,
                f"Flow run {run.name!r}",
                run.id,
            )
        finally:
            with THREADS_LOCK:
                self.body_thread = None

    def interrupt_body(self) -> None:
        """Stop a sync flow body running on another thread (``RunInterrupted`` in it)."""
        with THREADS_LOCK:
            ident = self.body_thread
            if ident is not None and ident != threading.get_ident():
                raise_in_thread(ident, RunInterrupted)

    async def call_async(self) -> Any:
        flow, run = self.flow, self.run
        if flow.timeout_seconds is None:
            return await flow.fn(*self.args, **self.kwargs)
        return await await_with_timeout(
            flow.fn(*self.args, **self.kwargs),
            flow.timeout_seconds,
            f"Flow run {run.name!r}",
            run.id,
        )

    def wait_for_task_runs(self) -> None:
        """Wait until every submitted task run is final, including ones submitted meanwhile."""
        runs, checked = self.run.task_runs, 0
        while checked < len(runs):
            future = runs[checked].future
            if future is not None:
                future.wait()
            checked += 1

    async def await_task_runs(self) -> None:
        runs, checked = self.run.task_runs, 0
        while checked < len(runs):
            future = runs[checked].future
            if future is not None and not future.done():
                await future.wait_async()
            checked += 1

    def handle_success(self, value: Any) -> State:
        self.wait_for_task_runs()
        returned = self._returned_state(value)
        if returned is not None and not returned.is_completed():
            return returned
        data = returned.data if returned is not None else value
        runs = self.run.task_runs[self.attempt_start :]
        failed = [r for r in runs if r.state is not None and r.state.type in _FAILED]
        cancelled = [r for r in runs if r.state is not None and r.state.is_cancelled()]
        unseen = [r for r in failed + cancelled if not r.observed]
        if unseen:
            first = unseen[0]
            assert first.state is not None
            exc = root_cause(first.state.data)
            if failed:
                return Failed(f"{len(failed)}/{len(runs)} states failed.", exc)
            return Cancelled(f"{len(cancelled)}/{len(runs)} states cancelled.", exc)
        if failed or cancelled:
            handled = len(failed) + len(cancelled)
            return Completed(
                f"All states completed; {handled}/{len(runs)} failed task runs were handled "
                "by the flow.",
                data,
            )
        return Completed("All states completed.", data)

    def _returned_state(self, value: Any) -> State | None:
        """The state a flow body returned, directly or as futures; None for plain values."""
        if isinstance(value, State):
            return value
        if isinstance(value, TaskRunFuture):
            value.wait()
            state = value.state
            value.task_run.observed = True
            if state.is_completed():
                return Completed(data=state.data)
            return self._failure_state(state)
        if (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, TaskRunFuture) for v in value)
        ):
            results = []
            for future in value:
                future.wait()
                future.task_run.observed = True
                if not future.state.is_completed():
                    return self._failure_state(future.state)
                results.append(resolve_data(future.state.data))
            return Completed(data=type(value)(results) if type(value) is tuple else results)
        return None

    def _failure_state(self, state: State) -> State:
        runs = self.run.task_runs[self.attempt_start :]
        failed = sum(1 for r in runs if r.state is not None and r.state.type in _FAILED)
        if state.is_cancelled():
            return Cancelled(state.message, state.data)
        return Failed(f"{max(failed, 1)}/{len(runs)} states failed.", root_cause(state.data))

    def handle_exception(self, exc: BaseException) -> tuple[State, float | None]:
        """The state after the body raised ``exc``, and a retry delay (None: no retry)."""
        run, flow = self.run, self.flow
        if not isinstance(exc, Exception) or self.cancel_reason is not None:
            reason = self.cancel_reason
            if reason is None:
                self.cancel(f"The flow run was interrupted ({type(exc).__name__}).")
                return Cancelled(f"Flow run was interrupted ({type(exc).__name__}).", exc), None
            self.cancel(reason)
            error = RunCancelledError(f"flow run {run.name!r} of flow {flow.name!r}: {reason}")
            return Cancelled(reason, error), None
        if isinstance(exc, RunTimeoutError) and exc.run_id == run.id:
            run.cancel_event.set()
            self.cancel("The flow run timed out before this task run started.")
            return TimedOut(
                f"Flow run exceeded its timeout of {flow.timeout_seconds:g} second(s).", exc
            ), None
        self.wait_for_task_runs()
        runs = run.task_runs[self.attempt_start :]
        from_task = any(r.state is not None and r.state.data is exc for r in runs)
        if from_task:
            failed = sum(1 for r in runs if r.state is not None and r.state.type in _FAILED)
            final = Failed(f"{max(failed, 1)}/{len(runs)} states failed.", root_cause(exc))
        else:
            final = Failed(f"Flow run encountered an exception {type(exc).__name__}: {exc}", exc)
        if run.run_count > flow.retries:
            return final, None
        delay = flow.retry_delay_for(run.run_count)
        return AwaitingRetry(
            f"Flow run failed with exception: {exc!r} - Retry {run.run_count}/{flow.retries} "
            f"will start {delay:g} second(s) from now",
            exc,
        ), delay

    def cancel(self, reason: str) -> None:
        """Cancel every task run of this flow run that has not finished.

        Pending runs never start; running ones end ``Cancelled`` at once, and the worker
        threads running them get ``RunInterrupted``, which stops their bodies at the next
        Python instruction. Safe to call from any thread, more than once.
        """
        run = self.run
        run.cancel_event.set()
        if run.task_runner is not None:
            run.task_runner.shutdown(cancel_pending=True)
        me = threading.get_ident()
        for record in list(run.task_runs):
            previous = record.state
            if previous is None or previous.is_final() or record.subflow_run is not None:
                continue
            state = Cancelled(
                reason, RunCancelledError(f"task run {record.name!r}: {reason}"), run_id=record.id
            )
            future = record.future
            if future is None or future._set_final(state):
                record.state = state
                record.end_s = time.time()
                if bus.wants(StateChanged):
                    bus.emit(StateChanged(record, state, previous))
                with THREADS_LOCK:
                    ident = record.thread_id
                    if ident is not None and ident != me:
                        raise_in_thread(ident, RunInterrupted)

    def finish(self, state: State) -> State:
        run = self.run
        runner = run.task_runner
        if runner is not None:
            runner.shutdown(cancel_pending=run.cancel_event.is_set())
        if self.env_held:
            release_env(f"flow run {run.name!r} of flow {self.flow.name!r}", self.flow.env)
            self.env_held = False
        run.end_s = time.time()
        self._set_state(state)
        record = self.parent_record
        if record is not None:
            record.start_s, record.end_s = run.start_s, run.end_s
            record.run_count = run.run_count
            self._set_record_state(state)
        if bus.wants(FlowRunFinished):
            bus.emit(FlowRunFinished(run, state))
        if record is None:
            bus.barrier(run)
        return state

    # -- drivers -------------------------------------------------------------------------------
    def _enter(self) -> tuple[Token[FlowRun | None], Token[TaskRun | None]]:
        """Create the run (unless done already), make it current and begin it.

        The tokens undo the context. A background run is created on the caller's thread (so
        that a notebook shows it in the calling cell) and entered on its own thread.
        """
        if not hasattr(self, "run"):
            self.create()
        tokens = (current_flow_run.set(self.run), current_task_run.set(None))
        if self.parent_record is None:
            self.heap_held = heap.hold()
        try:
            self.begin_run()
        except Exception as exc:
            self.finish(Failed(f"Flow run could not start: {exc}", exc))
            self._leave(tokens)
            raise
        return tokens

    def _leave(self, tokens: tuple[Token[FlowRun | None], Token[TaskRun | None]]) -> None:
        current_task_run.reset(tokens[1])
        current_flow_run.reset(tokens[0])
        if self.heap_held:
            self.heap_held = False
            heap.release()

    def run_sync(self) -> State:
        tokens = self._enter()
        try:
            while True:
                self.begin_attempt()
                try:
                    state = self.handle_success(self.call_sync())
                except BaseException as exc:
                    state, delay = self.handle_exception(exc)
                    if delay is not None:
                        self._set_state(state)
                        if not (delay > 0 and self.run.cancel_event.wait(delay)):
                            continue
                        state = Cancelled("The flow run was cancelled while awaiting a retry.")
                    elif not isinstance(exc, Exception):
                        self.finish(state)
                        raise
                return self.finish(state)
        finally:
            self._leave(tokens)

    async def run_async(self) -> State:
        tokens = self._enter()
        try:
            while True:
                self.begin_attempt()
                try:
                    value = await self.call_async()
                    await self.await_task_runs()
                    state = self.handle_success(value)
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        await self.await_task_runs()
                    state, delay = self.handle_exception(exc)
                    if delay is not None:
                        self._set_state(state)
                        await asyncio.sleep(delay)
                        if not self.run.cancel_event.is_set():
                            continue
                        state = Cancelled("The flow run was cancelled while awaiting a retry.")
                    elif not isinstance(exc, Exception):
                        self.finish(state)
                        raise
                return self.finish(state)
        finally:
            self._leave(tokens)

    # -- result --------------------------------------------------------------------------------
    def outcome(self, state: State, return_state: bool) -> Any:
        """What the flow call gives its caller: the value, the state, or the exception."""
        if return_state:
            return state
        if state.is_completed():
            return resolve_data(state.data)
        if self.parent_record is not None:
            self.parent_record.observed = True
        exc = state.data
        if isinstance(exc, BaseException):
            raise exc
        raise RunFailedError(f"Flow run {self.run.name!r} ended in state {state.short()}")
