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

import atexit
import contextlib
import threading
import time
import warnings
from collections.abc import Callable, Generator
from contextvars import Token
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from flowbook import _tags
from flowbook._origin import run_origin
from flowbook._setup import ensure_configured
from flowbook._tags import with_context_tags
from flowbook._tracebacks import without_internal_frames
from flowbook.engine import heap
from flowbook.engine.env import acquire_env, release_env
from flowbook.engine.events import FlowRunCreated, FlowRunFinished, TaskRunCreated, bus
from flowbook.engine.hooks import await_pending, drive_async, stop_driving
from flowbook.engine.interrupts import (
    AsyncBody,
    Body,
    call_body,
    call_unshielded,
    interrupt,
    interruption_name,
    release_sigint,
    shield,
    shields,
    sigint_guard,
    unshield,
)
from flowbook.engine.lifecycle import (
    call_final_flow_hooks,
    set_flow_run_state,
    set_task_run_state,
)
from flowbook.engine.returns import aggregate, state_returned
from flowbook.engine.runs import (
    FlowRun,
    TaskRun,
    current_attempt,
    current_flow_run,
    current_task_run,
    ended_attempt,
)
from flowbook.engine.task_engine import root_cause
from flowbook.engine.timeouts import await_body, call_with_timeout
from flowbook.engine.values import collect_futures, resolve_futures
from flowbook.exceptions import (
    RunCancelledError,
    RunFailedError,
    RunInterrupted,
    RunTimeoutError,
)
from flowbook.futures import TaskRunFuture
from flowbook.states import (
    _FINAL_VALUES,
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


# Flow runs of this process that have not ended (subflows too, after their callers), for
# the exit handler.
_active: dict[int, FlowRunEngine] = {}
_active_lock = threading.Lock()
_EXITED = "The process exited while this flow run was running."
_exit_handler_held = False


def end_active_runs() -> None:
    """At interpreter exit: runs still going (background runs, a script's last run) end
    ``Cancelled``, with their task runs, and so reach the store before it closes."""
    shields.stack.append(None)  # (a Ctrl-C while they end is held, then dropped: exiting)
    guarded = False
    try:
        try:
            guarded = sigint_guard()  # (on the main thread: so that the shield holds)
        except BaseException:
            pass
        with _active_lock:
            engines = list(_active.values())
        for engine in reversed(engines):  # (a subflow before the run that called it)
            try:
                try:
                    engine.cancel(_EXITED)
                finally:
                    engine.finish(Cancelled(_EXITED, RunCancelledError(_EXITED)))
            except BaseException:  # exiting: nothing is left to tell, and the others still end
                pass
    finally:
        try:
            if guarded:
                release_sigint()  # (done by the unshield below)
        finally:
            unshield()


def _hold_exit_handler() -> None:
    """Make sure ``end_active_runs`` runs at exit (the store's own exit handler calls it too,
    before it writes its last rows, whichever runs first)."""
    global _exit_handler_held
    if not _exit_handler_held:
        _exit_handler_held = True
        atexit.register(end_active_runs)


def _warn(message: str) -> None:
    warnings.warn(f"flowbook: {message}", RuntimeWarning, stacklevel=3)


class FlowRunEngine:
    """Runs one flow run through its lifecycle."""

    def __init__(self, flow: Flow[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.flow = flow
        self.args = args
        self.kwargs = kwargs
        self.parent_record: TaskRun | None = None
        self.env_held = False
        self.heap_held = False  # flowbook.engine.heap.hold() for a top-level run
        self.sigint_held = False  # flowbook.engine.interrupts.sigint_guard() for one
        # set by Flow.resume: the run resumed and the results of its completed task calls
        self.resumed_from: str | None = None
        self.reusable: dict[tuple[str, int, str], State] = {}
        # task runs before this index belong to earlier attempts (flow retries)
        self.attempt_start = 0
        # why the run is being cancelled, when somebody asked (a background run's cancel())
        self.cancel_reason: str | None = None
        # the flow body, while it runs (what a cancel interrupts)
        self.body: Body | AsyncBody | None = None
        # a state the run ends in before its body starts (its name could not be made)
        self.early: State | None = None
        # the time a generator flow's body has run so far (its timeout counts only that)
        self.body_seconds = 0.0
        self.run: FlowRun

    # -- state ---------------------------------------------------------------------------------
    def _set_state(self, state: State) -> bool:
        return set_flow_run_state(self.run, state)

    def _set_record_state(self, state: State) -> None:
        record = self.parent_record
        if record is not None:
            set_task_run_state(record, state)

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
            args = tuple(resolve_futures(a) for a in args)
            kwargs = {k: resolve_futures(v) for k, v in kwargs.items()}
            self.args, self.kwargs = args, kwargs
        parameters = flow.bind_parameters(args, kwargs)
        # a flow on a method: the bound object (``self``, ``cls``) is passed, not recorded
        # (it is not pickled, previewed, hashed for retries, nor a runtime parameter)
        bound = flow.bound_parameter()
        bound_value = parameters.pop(bound) if bound is not None else None
        invalid: Exception | None = None
        if flow._validator is not None:
            try:
                parameters = flow.validated_parameters(parameters)
                called = parameters if bound is None else {bound: bound_value, **parameters}
                self.args, self.kwargs = flow.call_arguments(called)
            except Exception as exc:  # the run is recorded, and fails before its body
                invalid = exc
        record = None
        ended = ended_attempt(parent) if parent is not None else None
        if parent is not None:
            # (a call of an ended attempt takes no place among the current attempt's calls)
            key = parent.next_dynamic_key("subflow") if ended is None else 0
            record = TaskRun(None, parent, (), parameters, key)
            record.upstream_ids = tuple(dict.fromkeys(f.task_run.id for f in upstream))
            self.parent_record = record
        run_tags = flow.tags if not _tags.open_blocks else with_context_tags(flow.tags)
        run = FlowRun(flow, parameters, record, run_tags)
        if parent is None:
            run.notebook, run.cell_id = run_origin()
        run.resumed_from = self.resumed_from
        run.memo.update(self.reusable)
        self.run = run
        try:
            self._name_and_announce(record, parent, upstream, ended, invalid, run_tags)
        except BaseException as exc:  # an interrupt: a run that exists ends (Exceptions:
            shields.stack.append(None)  # the parts raising them are guarded)
            try:
                if not isinstance(exc, Exception):
                    self._ended_by(exc)
            finally:
                unshield()
            raise
        return run

    def _name_and_announce(
        self,
        record: TaskRun | None,
        parent: FlowRun | None,
        upstream: list[TaskRunFuture[Any]],
        ended: str | None,
        invalid: Exception | None,
        run_tags: tuple[str, ...],
    ) -> None:
        run, flow = self.run, self.flow
        if record is not None:
            record.subflow_run = run
            record.tags = run_tags
        token = current_flow_run.set(run)
        try:
            run.name = flow.run_name(run)
        except Exception as exc:
            from flowbook.names import generate_run_name

            run.name = generate_run_name()
            self.early = Failed(f"Flow run could not be named: {exc}", exc)
        finally:
            current_flow_run.reset(token)
        if invalid is not None and self.early is None:
            self.early = Failed(
                f"Validation of flow parameters failed with error: {invalid}", invalid
            )
        if ended is not None:  # recorded, never run, not counted in the current attempt
            self.early = Cancelled(ended, RunCancelledError(ended))
        if record is not None and parent is not None:
            record.name = run.name
            if ended is None:
                parent.task_runs.append(record)
            if bus.wants(TaskRunCreated):
                up_runs = tuple(f.task_run for f in upstream)
                bus.emit(TaskRunCreated(record, record.upstream_ids, up_runs))
            self._set_record_state(Pending())
        if bus.wants(FlowRunCreated):
            bus.emit(FlowRunCreated(run))
        # (a top-level run's creation is journalled by the store on this thread, before its
        # body starts: a kill at any moment leaves a trace the next open marks Crashed)
        self._set_state(Pending())

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

    def begin_attempt(self) -> bool:
        """Start an attempt of the body; False if the run is final already."""
        run = self.run
        run.run_count += 1
        run._counters.clear()
        self.attempt_start = len(run.task_runs)
        if run.run_count > 1 and not self._set_state(
            Retrying(f"Retry {run.run_count - 1}/{self.flow.retries}")
        ):
            return False
        return self._set_state(Running())

    def _register_body(self, body: Body | AsyncBody | None) -> None:
        self.body = body
        if body is not None and self.run.cancel_event.is_set():
            raise RunInterrupted  # cancelled before the body started: it never starts

    def call_sync(self) -> Any:
        flow, run = self.flow, self.run
        token = current_attempt.set(run.run_count)  # (what a timed-out body calls is refused)
        try:
            if flow.timeout_seconds is None:
                return call_body(flow.fn, self.args, self.kwargs, self._register_body)
            return call_with_timeout(
                flow.fn,
                self.args,
                self.kwargs,
                flow.timeout_seconds,
                f"Flow run {run.name!r}",
                run.id,
                self._register_body,
            )
        finally:
            current_attempt.reset(token)

    def interrupt_body(self) -> None:
        """Stop the flow body (``RunInterrupted`` in it, once it runs its own code)."""
        body = self.body
        if isinstance(body, Body) and body.ident == threading.get_ident():
            return  # the body's own thread: it is stopping by itself
        interrupt(body, RunInterrupted)

    async def call_async(self) -> Any:
        flow, run = self.flow, self.run
        token = current_attempt.set(run.run_count)
        try:
            return await await_body(
                lambda: flow.fn(*self.args, **self.kwargs),
                flow.timeout_seconds,
                f"Flow run {run.name!r}",
                run.id,
                self._register_body,
            )
        finally:
            current_attempt.reset(token)

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
        """The final state of a body that returned ``value`` (Prefect 3's rules).

        A state the body made itself decides; task runs' states (or an iterable of states)
        decide by the aggregate rule; futures are resolved to their results. A task run that
        failed without the body looking at it no longer fails the flow: the return decides.
        """
        if isinstance(value, GeneratorType):
            value = list(value)  # a returned generator is consumed: its values, as a list
        reason = self.cancel_reason
        if reason is not None:  # cancelled meanwhile: whatever the body returned
            self.cancel(reason)
            error = RunCancelledError(
                f"flow run {self.run.name!r} of flow {self.flow.name!r}: {reason}"
            )
            return Cancelled(reason, error)
        self.wait_for_task_runs()
        returned = self._returned_state(value)
        if returned is not None and (
            not returned.is_completed() or self._is_manual(value) or returned.message
        ):
            return returned
        data = returned.data if returned is not None else value
        runs = self.run.task_runs[self.attempt_start :]
        failed = [r for r in runs if r.state is not None and r.state.type in _FAILED]
        cancelled = [r for r in runs if r.state is not None and r.state.is_cancelled()]
        if failed or cancelled:
            unseen = sum(1 for r in failed + cancelled if not r.observed)
            handled = len(failed) + len(cancelled) - unseen
            if not unseen:
                return Completed(
                    f"All states completed; {handled}/{len(runs)} failed task runs were handled "
                    "by the flow.",
                    data,
                )
            parts = []
            if handled:
                parts.append(f"{handled}/{len(runs)} failed task runs were handled by the flow")
            parts.append(f"{unseen}/{len(runs)} task runs failed without the flow looking at them")
            return Completed(f"The flow returned; {'; '.join(parts)}.", data)
        return Completed("All states completed.", data)

    @staticmethod
    def _is_manual(value: Any) -> bool:
        """A state the body made itself (no run has entered it): it is the final state."""
        return isinstance(value, State) and value.run_id is None

    def _returned_state(self, value: Any) -> State | None:
        """The state a flow body's return value decides, directly or as futures; None for
        plain values."""
        if isinstance(value, State):
            return state_returned(value, self._not_final)
        if isinstance(value, TaskRunFuture):
            value.wait()
            state = value.state
            value.task_run.observed = True
            if state.is_completed():
                return Completed(data=state.data)
            return self._failure_state(state)
        if isinstance(value, (list, tuple, set, frozenset)) and value:
            if all(isinstance(v, State) for v in value):
                return aggregate(value, list(value))
            # ``all`` first: it stops at the first plain value, so a long list of plain
            # values is not scanned end to end
            if all(isinstance(v, (State, TaskRunFuture)) for v in value) and any(
                isinstance(v, State) for v in value
            ):
                # states and futures: the futures' states count, and are what is returned
                states = [self._state_of(v) for v in value]
                return aggregate(type(value)(states), states)
            if isinstance(value, (list, tuple)) and all(
                isinstance(v, TaskRunFuture) for v in value
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

    @staticmethod
    def _state_of(value: State | TaskRunFuture[Any]) -> State:
        if isinstance(value, State):
            return value
        value.wait()
        value.task_run.observed = True
        return value.state

    @staticmethod
    def _not_final(state: State) -> State:
        message = (
            f"The flow returned the state {state.short()}, which is not final; a flow "
            "returns a final state (Completed, Failed, Cancelled, Crashed) or a value."
        )
        return Failed(message, ValueError(message))

    def _failure_state(self, state: State) -> State:
        runs = self.run.task_runs[self.attempt_start :]
        failed = sum(1 for r in runs if r.state is not None and r.state.type in _FAILED)
        if state.is_cancelled():
            return Cancelled(state.message, state.data)
        return Failed(f"{max(failed, 1)}/{len(runs)} states failed.", root_cause(state.data))

    def handle_exception(
        self, exc: BaseException, retry: bool = True
    ) -> tuple[State, float | None]:
        """The state after the body raised ``exc``, and a retry delay (None: no retry;
        never with ``retry=False``). A timeout is retried like a failure."""
        run, flow = self.run, self.flow
        without_internal_frames(exc)  # the state keeps the user's frames only
        if not isinstance(exc, Exception) or self.cancel_reason is not None:
            reason = self.cancel_reason
            if reason is None:
                self.cancel(f"The flow run was interrupted ({interruption_name(exc)}).")
                return Cancelled(f"Flow run was interrupted ({interruption_name(exc)}).", exc), None
            self.cancel(reason)
            error = RunCancelledError(f"flow run {run.name!r} of flow {flow.name!r}: {reason}")
            return Cancelled(reason, error), None
        if isinstance(exc, RunTimeoutError) and exc.run_id == run.id:
            run.cancel_event.set()
            self.cancel(
                "The flow run timed out before this task run started.",
                running="The flow run timed out while this task run was running.",
            )
            timed_out = TimedOut(
                f"Flow run exceeded its timeout of {flow.timeout_seconds:g} second(s).", exc
            )
            if not retry or run.run_count > flow.retries:
                return timed_out, None
            # the attempt's task runs were cancelled with its runner: the next attempt gets
            # a fresh one, and the run is no longer cancelled
            run.cancel_event.clear()
            runner = flow.task_runner.duplicate()
            runner.start()
            run.task_runner = runner
            return self._awaiting_retry(exc)
        self.wait_for_task_runs()
        runs = run.task_runs[self.attempt_start :]
        from_task = any(r.state is not None and r.state.data is exc for r in runs)
        if from_task:
            failed = sum(1 for r in runs if r.state is not None and r.state.type in _FAILED)
            final = Failed(f"{max(failed, 1)}/{len(runs)} states failed.", root_cause(exc))
        else:
            final = Failed(f"Flow run encountered an exception {type(exc).__name__}: {exc}", exc)
        if not retry or run.run_count > flow.retries:
            return final, None
        return self._awaiting_retry(exc)

    def _cancelled_awaiting_retry(self) -> State:
        reason = self.cancel_reason or "The flow run was cancelled while awaiting a retry."
        run, flow = self.run, self.flow
        error = RunCancelledError(f"flow run {run.name!r} of flow {flow.name!r}: {reason}")
        return Cancelled(reason, error)

    def _awaiting_retry(self, exc: BaseException) -> tuple[State, float]:
        run, flow = self.run, self.flow
        delay = flow.retry_delay_for(run.run_count)
        return AwaitingRetry(
            f"Flow run failed with exception: {exc!r} - Retry {run.run_count}/{flow.retries} "
            f"will start {delay:g} second(s) from now",
            exc,
        ), delay

    def cancel(self, reason: str, running: str | None = None) -> None:
        """Cancel every task run of this flow run that has not finished.

        Pending runs never start; running ones end ``Cancelled`` at once (with the message
        ``running`` when given), and their bodies get ``RunInterrupted`` (sync bodies at
        their next instruction of their own code, async ones through their cancel scope).
        Safe to call from any thread, more than once. Done whatever interrupts it (see
        ``finish``); the first interrupt is raised at the end.
        """
        held: list[BaseException] = []
        shield()
        try:
            run = self.run
            run.cancel_event.set()
            runner = run.task_runner
            if runner is not None:
                self._runner_call(held, runner.cancel_all, reason)
            self._end_open_task_runs(reason, running, held)
        finally:
            if unshield() and not held:
                held.append(KeyboardInterrupt())
        if held:
            raise held[0]

    def _runner_call(
        self, held: list[BaseException], call: Callable[..., None], *args: Any
    ) -> None:
        """``call(*args)`` on the task runner while the run ends: it may wait (threads, a
        Dask cluster), so a Ctrl-C stops it; its error is warned about, its interrupt held."""
        try:
            call_unshielded(call, *args)
        except Exception as exc:  # the runs still end; say why the runner did not
            _warn(f"the task runner of flow run {self.run.name!r} failed to shut down: {exc!r}")
        except BaseException as exc:
            held.append(exc)

    def _end_open_task_runs(
        self, reason: str, running: str | None, held: list[BaseException]
    ) -> None:
        """End ``Cancelled`` each task run that is not final (subflow records end with
        their subflow), and interrupt its body; interrupts are added to ``held``."""
        runs, i = self.run.task_runs, 0
        me = threading.get_ident()
        while i < len(runs):  # (runs a body still submits are ended too)
            record = runs[i]
            i += 1
            previous = record.state
            if previous is None or previous.type._value_ in _FINAL_VALUES:
                continue
            if record.subflow_run is not None:
                continue
            message = running if running is not None and previous.is_running() else reason
            state = Cancelled(message, RunCancelledError(f"task run {record.name!r}: {message}"))
            try:
                ended = set_task_run_state(record, state)
            except BaseException as exc:  # a subscriber's interrupt: the change stands
                held.append(exc)
                ended = record.state is state
            if ended:
                body = record.body
                if not (isinstance(body, Body) and body.ident == me):
                    interrupt(body, RunInterrupted)

    def finish(self, state: State) -> State:
        """End the run in ``state`` unless it is final already; returns its final state.

        Its bookkeeping (the runner's shutdown, its task runs that are still open ended
        ``Cancelled``, the final state, ``FlowRunFinished``) is done whatever interrupts it:
        a SIGINT meanwhile is held (``interrupts.shield``), and it, or an interrupt a
        subscriber or the runner raised, is raised once the bookkeeping is done, before the
        store's commit is waited for and before the final hooks."""
        run = self.run
        held: list[BaseException] = []
        shield()
        try:
            ended = self._end_record(state, held)
        finally:
            if unshield() and not held:
                held.append(KeyboardInterrupt())
        if held:
            raise held[0]
        if not ended:
            final = run.state
            assert final is not None
            return final  # ended already (at interpreter exit, by another thread)
        if self.parent_record is None:
            call_unshielded(bus.barrier, run)  # (a wait: a Ctrl-C stops it; the run has ended)
        # after the bookkeeping above: a hook that never returns normally leaves the run ended
        call_final_flow_hooks(run, state)
        return state

    def _end_record(self, state: State, held: list[BaseException]) -> bool:
        """``finish``'s bookkeeping: False when the run was final already. What raises a
        ``BaseException`` is added to ``held``, and the bookkeeping goes on."""
        run = self.run
        runner = run.task_runner
        cancelled = run.cancel_event.is_set()
        if runner is not None:
            self._runner_call(held, runner.shutdown, cancelled)
        if self.env_held:
            self.env_held = False
            try:
                release_env(f"flow run {run.name!r} of flow {self.flow.name!r}", self.flow.env)
            except BaseException as exc:
                held.append(exc)
        # a flow run is final only once its task runs are: one that was not cancelled waited
        # for them; one cancelled may have had its cancel cut short
        if cancelled:
            if state.is_cancelled():
                message = state.message or "The flow run was cancelled."
            else:
                message = f"The flow run ended {state.name} before this task run did."
            self._end_open_task_runs(message, None, held)
        try:
            if not self._set_state(state):
                return False
        except BaseException as exc:  # a subscriber's interrupt: the state is set
            held.append(exc)
            if run.state is not state:
                return False
        record = self.parent_record
        if record is not None:
            record.start_s, record.end_s = run.start_s, run.end_s
            record.run_count = run.run_count
            try:
                self._set_record_state(state)
            except BaseException as exc:
                held.append(exc)
        with _active_lock:
            _active.pop(id(self), None)
        if bus.wants(FlowRunFinished):
            try:
                bus.emit(FlowRunFinished(run, state))
            except BaseException as exc:
                held.append(exc)
        return True

    def _ended_by(self, exc: BaseException) -> None:
        """The lifecycle outside the body raised ``exc``, not an ``Exception`` (a second
        Ctrl-C while a cancel went on, a subscriber's or hook's interrupt): the run ends
        ``Cancelled`` now, unless it has ended, and ``exc`` goes on. Further interrupts
        while it ends are dropped: ``exc`` is raised anyway."""
        run = getattr(self, "run", None)
        if run is None or (run.state is not None and run.state.is_final()):
            return
        shield()
        try:
            reason = (
                self.cancel_reason or f"The flow run was interrupted ({interruption_name(exc)})."
            )
            error = RunCancelledError(f"flow run {run.name!r} of flow {self.flow.name!r}: {reason}")
            with contextlib.suppress(BaseException):
                self.cancel(reason)
            with contextlib.suppress(BaseException):
                self.finish(Cancelled(reason, error))
        finally:
            unshield()  # (a SIGINT held meanwhile: ``exc`` goes on anyway)

    # -- drivers -------------------------------------------------------------------------------
    def _enter(self) -> tuple[Token[FlowRun | None], Token[TaskRun | None]]:
        """Create the run (unless done already), make it current and begin it.

        The tokens undo the context. A background run is created on the caller's thread (so
        that a notebook shows it in the calling cell) and entered on its own thread.
        """
        tokens = None
        try:
            if not hasattr(self, "run"):
                self.create()
            with _active_lock:
                _active[id(self)] = self  # (subflows too: one in a background run is ended)
            _hold_exit_handler()
            tokens = self._set_context()
            if self.parent_record is None:
                self.heap_held = heap.hold()
                shields.stack.append(None)  # (installed and recorded with no SIGINT between)
                try:
                    self.sigint_held = sigint_guard()
                finally:
                    if unshield():
                        raise KeyboardInterrupt
            self.begin_run()
        except BaseException as exc:
            shields.stack.append(None)  # (no interrupt lands from here on: interrupts.shields)
            try:
                self.could_not_start(exc)
            finally:
                try:
                    self._leave(tokens)
                finally:
                    unshield()
            raise
        return tokens

    def could_not_start(self, exc: BaseException) -> None:
        """``exc`` was raised while the run was made or began (the caller has entered a
        shield): a run that exists ends, ``Failed`` for an error, ``Cancelled`` for an
        interrupt (``_ended_by``)."""
        if not isinstance(exc, Exception):
            self._ended_by(exc)
        elif hasattr(self, "run"):
            self.finish(Failed(f"Flow run could not start: {exc}", exc))

    def _leave(self, tokens: tuple[Token[FlowRun | None], Token[TaskRun | None]] | None) -> None:
        """Undo the run's context (``tokens``, None when it was not set), and ``_release``."""
        try:
            if tokens is not None:
                self._reset_context(tokens)
        finally:
            self._release()

    def _leave_shielded(
        self, tokens: tuple[Token[FlowRun | None], Token[TaskRun | None]] | None
    ) -> None:
        """``_leave`` (``_release`` without tokens) in a shield the caller entered: the SIGINT
        guard and the gc freeze are given back whatever interrupts, and a SIGINT meanwhile is
        raised after."""
        try:
            self._leave(tokens)
        finally:
            if unshield():
                raise KeyboardInterrupt

    def _set_context(self) -> tuple[Token[FlowRun | None], Token[TaskRun | None]]:
        return current_flow_run.set(self.run), current_task_run.set(None)

    @staticmethod
    def _reset_context(tokens: tuple[Token[FlowRun | None], Token[TaskRun | None]]) -> None:
        current_task_run.reset(tokens[1])
        current_flow_run.reset(tokens[0])

    def _release(self) -> None:
        """Give back what a top-level run holds while it runs (the gc freeze, the SIGINT
        guard); safe to call more than once."""
        if self.heap_held:
            self.heap_held = False
            heap.release()
        if self.sigint_held:
            self.sigint_held = False
            release_sigint()

    def _lifecycle_raised(self, exc: BaseException) -> State:
        """The lifecycle raised ``exc`` outside the body; the caller has entered a shield
        (ended here). An ``Exception`` fails the run, which is returned; anything else ends
        it ``Cancelled`` (``_ended_by``) and goes on."""
        state: State | None = None
        try:
            if isinstance(exc, Exception):
                state = self._outside_body(exc)
            else:
                self._ended_by(exc)
        finally:
            interrupted = unshield()
        if state is None:
            raise exc
        if interrupted:
            raise KeyboardInterrupt
        return state

    def _outside_body(self, exc: Exception) -> State:
        """The run's lifecycle itself raised: end what it started, and fail the run."""
        message = f"Flow run failed outside its body ({type(exc).__name__}: {exc})."
        try:
            self.cancel(message)
        finally:  # (an interrupt held by the cancel goes on once the run has ended)
            state = self.finish(Failed(message, exc))
        return state

    def run_sync(self) -> State:
        tokens = self._enter()
        try:
            if self.early is not None:
                return self.finish(self.early)
            while True:
                if not self.begin_attempt():
                    return self.finish(Cancelled("The flow run was cancelled."))
                try:
                    state = self.handle_success(self.call_sync())
                except BaseException as exc:
                    state, delay = self.handle_exception(exc)
                    if delay is not None:
                        self._set_state(state)
                        if not (delay > 0 and self.run.cancel_event.wait(delay)):
                            continue
                        state = self._cancelled_awaiting_retry()
                    elif not isinstance(exc, Exception):
                        self.finish(state)
                        raise
                return self.finish(state)
        except BaseException as exc:
            shields.stack.append(None)  # (no interrupt lands from here on: interrupts.shields)
            return self._lifecycle_raised(exc)
        finally:
            shields.stack.append(None)  # (no interrupt lands from here on: interrupts.shields)
            self._leave_shielded(tokens)

    async def run_async(self) -> State:
        tokens = self._enter()
        hooks_token = None
        try:
            hooks_token = drive_async(self.run)  # its hooks are awaited here, on this loop
            if self.early is not None:
                return self.finish(self.early)
            while True:
                if not self.begin_attempt():
                    return self.finish(Cancelled("The flow run was cancelled."))
                await await_pending()  # on_running hooks, before the body
                try:
                    value = await self.call_async()
                    await self.await_task_runs()
                    state = self.handle_success(value)
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        await self.await_task_runs()
                    state, delay = self.handle_exception(exc)
                    if delay is not None:
                        import asyncio  # async flows only: not imported by ``import flowbook``

                        self._set_state(state)
                        await asyncio.sleep(delay)
                        if not self.run.cancel_event.is_set():
                            continue
                        state = self._cancelled_awaiting_retry()
                    elif not isinstance(exc, Exception):
                        self.finish(state)
                        raise
                return self.finish(state)
        except BaseException as exc:
            shields.stack.append(None)  # (no interrupt lands from here on: interrupts.shields)
            return self._lifecycle_raised(exc)
        finally:
            try:
                await await_pending()
            finally:
                shields.stack.append(None)  # (no interrupt lands from here on)
                try:
                    if hooks_token is not None:
                        stop_driving(hooks_token)
                finally:
                    self._leave_shielded(tokens)

    def run_generator(self) -> Generator[Any, None, Any]:
        """Drive a generator flow (a body with ``yield``): each value it yields is handed to
        the caller as the caller iterates, and the run ends when the body returns (its
        return value decides the final state, as for any flow), raises, or the caller stops
        iterating (``close()``: the run completes with ``None``). Not retried.

        The run is the current flow run only while the body runs (each step to its next
        ``yield``): the caller's code between values runs in the caller's own context. The
        gc freeze and the SIGINT guard of a top-level run are held until the run ends."""
        tokens = self._enter()
        state: State | None = None
        try:
            if self.early is not None:
                state = self.finish(self.early)
            elif not self.begin_attempt():
                state = self.finish(Cancelled("The flow run was cancelled."))
            else:
                gen = self.flow.fn(*self.args, **self.kwargs)  # runs nothing of the body yet
        except BaseException as exc:
            shields.stack.append(None)  # (no interrupt lands from here on: interrupts.shields)
            try:
                if isinstance(exc, Exception):
                    self._outside_body(exc)
                else:
                    self._ended_by(exc)
            finally:
                try:
                    self._leave(tokens)
                finally:
                    unshield()
            raise
        if state is not None:
            shields.stack.append(None)
            self._leave_shielded(tokens)
            return self.outcome(state, False)
        try:
            shields.stack.append(None)
            try:
                self._reset_context(tokens)
            finally:
                if unshield():
                    raise KeyboardInterrupt
            state = yield from self._drive(gen)
        except BaseException as exc:  # (one that landed before ``_drive`` began; after, the
            shields.stack.append(None)  # run has ended, and this ends nothing)
            try:
                if not isinstance(exc, Exception):
                    self._ended_by(exc)
                elif self.run.state is None or not self.run.state.is_final():
                    self._outside_body(exc)
            finally:
                self._leave_shielded(None)
            raise
        return self.outcome(state, False)

    def _drive(self, gen: Any) -> Generator[Any, None, State]:
        thrown: BaseException | None = None  # what the caller threw in at a ``yield``
        try:
            while True:
                tokens = self._set_context()
                try:
                    try:
                        item = self._step(gen, thrown)
                    except StopIteration as stop:
                        return self.finish(self.handle_success(stop.value))
                    except BaseException as exc:
                        # a generator flow is not retried: its values went out already
                        state, _ = self.handle_exception(exc, retry=False)
                        self.finish(state)
                        if not isinstance(exc, Exception):
                            raise
                        return state
                finally:
                    self._reset_context(tokens)
                thrown = None
                try:
                    yield item
                except GeneratorExit:
                    tokens = self._set_context()
                    try:
                        try:
                            gen.close()
                        except Exception as exc:  # the body's cleanup failed: so does the run
                            self.finish(self.handle_exception(exc, retry=False)[0])
                        else:
                            self.finish(self.handle_success(None))
                    finally:
                        self._reset_context(tokens)
                    raise
                except BaseException as exc:
                    thrown = exc
        except BaseException as exc:  # the lifecycle raised, not the body: the run ends
            shields.stack.append(None)  # (no interrupt lands from here on: interrupts.shields)
            return self._lifecycle_raised(exc)  # (GeneratorExit: the run has ended)
        finally:
            shields.stack.append(None)
            self._leave_shielded(None)

    def _step(self, gen: Any, thrown: BaseException | None) -> Any:
        """Run the body to its next ``yield`` (throwing ``thrown`` in at the last one);
        ``timeout_seconds`` bounds the body's own running time over all its steps."""
        fn, args = (gen.throw, (thrown,)) if thrown is not None else (next, (gen,))
        timeout = self.flow.timeout_seconds
        if timeout is None:
            return call_body(fn, args, {}, self._register_body)
        started, what = time.monotonic(), f"Flow run {self.run.name!r}"
        try:
            left = max(timeout - self.body_seconds, 0.0)
            return call_with_timeout(fn, args, {}, left, what, self.run.id, self._register_body)
        except RunTimeoutError as exc:
            if exc.run_id != self.run.id:
                raise
            message = f"{what} exceeded its timeout of {timeout:g} second(s)"
            raise RunTimeoutError(message, self.run.id) from None
        finally:
            self.body_seconds += time.monotonic() - started

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
        __tracebackhide__ = True  # the caller's frame is shown, not this one
        if isinstance(exc, BaseException):
            raise exc
        raise RunFailedError(f"Flow run {self.run.name!r} ended in state {state.short()}")
