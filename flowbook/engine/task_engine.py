"""The task run engine: the lifecycle of one task run, as named phases.

    create -> resolve_inputs -> check_cache -> begin_run -> call
           -> handle_success | handle_exception (-> wait for retry -> begin_run ...) -> finish

The phases are plain sync methods shared by both drivers: ``run_sync`` for ``def`` tasks and
``run_async`` for ``async def`` tasks. The drivers are the only place where sync and async
differ (how the body is called, how a retry delay is waited for), so the engine is written
once.

This is the per-task hot path. It does no I/O: it creates state objects and emits events,
and subscribers that do I/O queue the work for their own threads. Work that only some runs
need (binding parameters, hashing inputs, building log text) is done only for those runs.
"""

from __future__ import annotations

import contextvars
import logging
import random
import time
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flowbook import _run_defaults, _tags
from flowbook._setup import ensure_configured
from flowbook._tags import with_context_tags
from flowbook._tracebacks import without_internal_frames
from flowbook.engine.events import TaskRunCreated, bus
from flowbook.engine.hooks import await_pending, drive_async, stop_driving
from flowbook.engine.interrupts import AsyncBody, Body, call_body, interruption_name
from flowbook.engine.lifecycle import first_task_run_state, set_task_run_state
from flowbook.engine.runs import TaskRun, current_flow_run, current_task_run, ended_attempt
from flowbook.engine.timeouts import await_body, call_with_timeout, run_coro_sync
from flowbook.engine.values import (
    collect_futures,
    resolve_futures,
    tolerated_futures,
    unwrap_annotations,
)
from flowbook.exceptions import (
    RunCancelledError,
    RunFailedError,
    RunInterrupted,
    RunTimeoutError,
    UpstreamTaskError,
)
from flowbook.futures import TaskRunFuture
from flowbook.states import (
    _FINAL_VALUES,
    AwaitingRetry,
    Cached,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Pending,
    Retrying,
    Running,
    State,
    StateType,
    TimedOut,
)
from flowbook.task_runners.base import SubmittedCall

if TYPE_CHECKING:
    from flowbook.tasks import Task

__all__ = ["TaskRunEngine", "await_task", "call_task"]

_COLLECTIONS = (list, tuple, set, frozenset, dict)


def wait_for_list(wait_for: Any) -> Any:
    """``wait_for=`` as a collection: one future (or any single value) becomes a tuple of
    it, other iterables (a generator) a tuple of their items. A dict is one value, so that
    the futures among its values are waited for (iterating it would give only its keys)."""
    if isinstance(wait_for, dict):
        return (wait_for,)
    if isinstance(wait_for, _COLLECTIONS):
        return wait_for
    if isinstance(wait_for, Iterable) and not isinstance(wait_for, (str, bytes)):
        return tuple(wait_for)
    return (wait_for,)


def root_cause(error: Any) -> BaseException | None:
    """The exception behind a chain of skipped task runs (the first one that really failed)."""
    while isinstance(error, UpstreamTaskError) and error.__cause__ is not None:
        error = error.__cause__
    return error if isinstance(error, BaseException) else None


_log = logging.getLogger("flowbook.task_runs")

_FAILED_TYPES = (StateType.FAILED, StateType.CRASHED)


class _FailedStateReturned(Exception):
    """A task body returned a failed state: the run fails (and may retry) as if it raised."""

    def __init__(self, state: State) -> None:
        super().__init__(f"the task returned the state {state.short()}")
        self.state = state

    def final_state(self) -> State:
        """The returned state, as the run's final state: a state the body made itself is
        used as given, with a ``RunFailedError`` as its exception when it has none (so
        calling the task raises); another run's state is copied."""
        state = self.state
        data = state.data
        if not isinstance(data, BaseException):
            data = RunFailedError(f"the task returned the state {state.short()}")
        return state.copy(data=data, run_id=None)

    def __repr__(self) -> str:
        return f"returned {self.state.short()}"


class TaskRunEngine(SubmittedCall):
    """Runs one task run through its lifecycle.

    Every state change goes through ``set_task_run_state`` (``flowbook.engine.lifecycle``),
    and every part around the user's code that can raise (the run name, input resolution, the
    cache key function and the cache, the retry condition, the runner) is guarded: its error
    ends the run ``Failed`` with a message that names the part, so a task run never stays
    ``Pending`` or ``Running``.
    """

    # _key_parts: set by check_cache on a cache miss only (read when run.cache_key is set);
    # _tolerated: set for runs with annotated arguments only (read when an upstream run failed)
    __slots__ = (
        "_context",
        "_early",
        "_key_parts",
        "_tolerated",
        "flow_run",
        "future",
        "task",
        "task_run",
        "upstream",
    )

    def __init__(
        self,
        task: Task[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Iterable[Any] | None,
        *,
        with_future: bool,
        map_group: tuple[str, int, int] | None = None,
    ) -> None:
        self.task = task
        parameters = task.bind_arguments(args, kwargs)
        flow_run = current_flow_run.get()
        self.flow_run = flow_run
        ended = None
        if flow_run is None:
            ensure_configured()
        elif flow_run.run_count > 1:
            ended = ended_attempt(flow_run)
        key = task.task_key
        if flow_run is not None and ended is None:
            dynamic_key = flow_run.next_dynamic_key(key)
        else:  # (a call of an ended attempt takes no place among the current attempt's calls)
            dynamic_key = task._next_dynamic_key()
        run = TaskRun(task, flow_run, args, kwargs, dynamic_key)
        if parameters is not None:
            run.set_parameters(parameters)
        run.tags = task.tags if not _tags.open_blocks else with_context_tags(task.tags)
        run.map_group = map_group
        log_prints = task.log_prints
        if log_prints is None:
            log_prints = flow_run.log_prints if flow_run else _run_defaults.log_prints
        elif log_prints:
            from flowbook.logging import enable_print_capture

            enable_print_capture()
        run.log_prints = log_prints
        self.task_run = run
        upstream: list[TaskRunFuture[Any]] = []
        annotated = False  # quote / allow_failure among the arguments
        if args:
            annotated = collect_futures(args, upstream)
        if kwargs:
            annotated = collect_futures(kwargs.values(), upstream) or annotated
        if wait_for is not None:
            # one future or many, at any depth; values that are not futures have nothing to
            # wait for and are left alone (as in Prefect)
            wait_for = wait_for_list(wait_for)
            annotated = collect_futures(wait_for, upstream) or annotated
        self.upstream = upstream or ()  # (no list kept per waiting run without upstream runs)
        early = self._note_annotations(wait_for) if annotated else None
        if upstream:
            run.upstream_ids = tuple(dict.fromkeys(f.task_run.id for f in upstream))
        self.future: TaskRunFuture[Any] | None = TaskRunFuture(run) if with_future else None
        run.future = self.future
        self._context: contextvars.Context | None = None
        # a state the run ends in before anything else happens (its name could not be made)
        self._early: State | None = early
        try:
            if task.task_run_name is not None:  # else the run's default name, made when read
                run.name = task._run_name(run)
        except Exception as exc:
            run.name = f"{task.name}-{dynamic_key}"
            self._early = Failed(f"Task run could not be named: {exc}", exc)
        if ended is not None:  # recorded, never run, not counted in the current attempt
            self._early = Cancelled(ended, RunCancelledError(ended))
        elif flow_run is not None:
            flow_run.task_runs.append(run)
        if bus.wants(TaskRunCreated):
            up_runs = tuple(f.task_run for f in upstream) if upstream else ()
            bus.emit(TaskRunCreated(run, run.upstream_ids, up_runs))
        first_task_run_state(run, Pending(timestamp_s=run.created_s))

    def _note_annotations(self, wait_for: Iterable[Any] | None) -> State | None:
        """Arguments wrapped in ``quote`` or ``allow_failure``, or states: which upstream runs
        may fail, and, when there is no upstream run to wait for, the unwrapped arguments at
        once (``Failed`` if a state among them did not complete: the run does not start)."""
        run = self.task_run
        values = [*run.args, *run.kwargs.values(), *(wait_for or ())]
        self._tolerated = tolerated_futures(values, self.upstream)
        if not self.upstream:
            try:
                run.set_arguments(
                    tuple(unwrap_annotations(a) for a in run.args),
                    {k: unwrap_annotations(v) for k, v in run.kwargs.items()},
                )
            except UpstreamTaskError as exc:
                return Failed(f"Task run not run: {exc}", exc)
        return None

    # -- phases --------------------------------------------------------------------------------
    def resolve_inputs(self) -> State | None:
        """Replace futures in the arguments by their results; a final state if one failed."""
        if not self.upstream:
            return None
        for future in self.upstream:
            future.wait()
        failed = self.upstream_failure()
        if failed is not None:
            return failed
        run = self.task_run
        # a run whose trigger let it start gets a failed upstream run's exception as its value
        strict = self.task.trigger is None
        run.set_arguments(
            tuple(resolve_futures(a, strict) for a in run.args),
            {k: resolve_futures(v, strict) for k, v in run.kwargs.items()},
        )
        return None

    def upstream_failure(self) -> State | None:
        """``Failed`` if a final upstream run did not complete, else None.

        With a trigger (``flowbook.triggers``), the trigger decides instead: a run it
        refuses ends ``Failed`` with the name ``TriggerFailed``.
        """
        trigger = self.task.trigger
        if trigger is not None:
            return self._trigger_refusal(trigger)
        for future in self.upstream:
            state = future.state
            if future.done() and not state.is_completed():
                if state.type is StateType.FAILED and future in getattr(self, "_tolerated", ()):
                    continue  # given inside allow_failure(...): the run gets its exception
                upstream = future.task_run
                exc = UpstreamTaskError(
                    f"task run {self.task_run.name!r} did not start: upstream task run "
                    f"{upstream.name!r} ended in state {state.short()}"
                )
                exc.__cause__ = root_cause(state.data)
                return Failed(
                    f"Upstream task run {upstream.name!r} did not complete "
                    f"({state.name}); not run.",
                    exc,
                )
        return None

    def _trigger_refusal(self, trigger: Callable[[Any], bool]) -> State | None:
        """The ``TriggerFailed`` state if ``trigger`` refuses the upstream states, else None.

        A trigger that raises anything else than ``TriggerFailedError`` fails the run with a
        message naming it, as any other part around the body does.
        """
        from flowbook.triggers import judge

        states = {future: future.state for future in dict.fromkeys(self.upstream)}
        refused = judge(trigger, states)
        if refused is not None and refused.name == "TriggerFailed":
            failures = [s for s in states.values() if not s.is_completed()]
            if failures:  # the first failure behind it, as for runs without a trigger
                refused.data.__cause__ = root_cause(failures[0].data)
        return refused

    def check_cache(self) -> State | None:
        """A final state without running the body: a cache hit, or a reused earlier result.

        Earlier results are those of completed calls in a failed attempt of this flow run
        (flow retries) or in the failed run this one resumes. A ``cache_key_fn`` that raises
        fails the run (naming it); a cache that cannot be read is a miss, with a warning.
        """
        flow_run = self.flow_run
        if flow_run is not None and flow_run.memo:
            key = self._memo_key()
            reused = flow_run.memo.get(key) if key is not None else None
            if reused is not None:
                return reused.copy(run_id=None)  # (this run's id is set with it)
        task = self.task
        if task.cache_key_fn is None:
            return None
        from flowbook.caching.backend import get_cache_backend
        from flowbook.caching.keys import CacheKeyContext

        run = self.task_run
        try:
            context = CacheKeyContext(task, run, flow_run)
            raw_key = task.cache_key_fn(context, run.parameters)
            if raw_key is None:
                return None
            cache_key = raw_key if isinstance(raw_key, str) else str(raw_key)
        except Exception as exc:
            return Failed(f"cache_key_fn raised {type(exc).__name__}: {exc}", exc)
        run.cache_key = cache_key
        backend = get_cache_backend()
        if not task._refresh_cache:
            try:
                entry = backend.get(task.task_key, cache_key)
            except Exception as exc:
                _warn_once("cache-get", f"the cache could not be read ({exc!r}); running the task")
                entry = None
            if entry is not None:
                return Cached(data=entry.value)
        # a miss: what the key is made of (task_input_hash only) goes with the new entry, and
        # explains the miss (flowbook.cache.why_missed)
        try:
            self._key_parts = parts = context.parts_for(cache_key)
            backend.missed(context, cache_key, parts)
        except Exception as exc:
            self._key_parts = None
            _warn_once("cache-miss", f"a cache miss could not be recorded ({exc!r})")
        return None

    def begin_run(self) -> bool:
        """Start an attempt; False if the run is final already (cancelled meanwhile)."""
        run = self.task_run
        if run.state is not None and run.state.is_final():
            return False
        run.run_count += 1
        if run.run_count > 1 and not set_task_run_state(
            run, Retrying(f"Retry {run.run_count - 1}/{self.task.retries}")
        ):
            return False
        running = Running()
        if run.start_s is None:
            run.start_s = running.timestamp_s  # (one float for both)
        return set_task_run_state(run, running)

    def _register_body(self, body: Body | AsyncBody | None) -> None:
        run = self.task_run
        run.body = body
        state = run.state
        if state is not None and state.type._value_ in _FINAL_VALUES:
            raise RunInterrupted  # cancelled between begin_run and here: never start

    def call_sync(self) -> Any:
        return call_task(self.task, self.task_run, self._register_body)

    async def call_async(self) -> Any:
        return await await_task(self.task, self.task_run, self._register_body)

    def handle_success(self, value: Any) -> State:
        task, run = self.task, self.task_run
        if run.cache_key is not None:
            from flowbook._preview import parameters_preview
            from flowbook.caching.backend import get_cache_backend

            expires = None
            if task.cache_expiration is not None:
                expires = time.time() + task.cache_expiration.total_seconds()
            flow_run = self.flow_run
            try:
                get_cache_backend().put(
                    task.task_key,
                    run.cache_key,
                    value,
                    expires,
                    task_name=task.name,
                    flow_name=flow_run.flow.name if flow_run is not None else None,
                    input_preview=parameters_preview(run.parameters),
                    key_parts=self._key_parts,
                )
            except Exception as exc:  # the value is right; only its cache entry is missing
                _warn_once(
                    "cache-put",
                    f"task run {run.name!r}: its result could not be cached ({exc!r}); the "
                    "run completes, and the next call computes it again",
                )
        return Completed(data=value)

    def returned_state(self, state: State) -> State:
        """The final state of a body that returned ``state`` (Prefect's rules).

        A failed (or crashed) state fails the run and is retried like an exception
        (``_FailedStateReturned`` carries it to ``handle_exception``). A final state the body
        made itself is the run's final state as given; another run's state (from
        ``return_state=True``) completes the run with that state as its value.
        """
        # (imported here: flowbook.engine.returns imports this module)
        from flowbook.engine.returns import state_returned

        if state.type in _FAILED_TYPES:
            raise _FailedStateReturned(state)
        return state_returned(state, self._not_final)

    def _not_final(self, state: State) -> State:
        raise ValueError(
            f"task {self.task.name!r} returned the state {state.short()}, which is not "
            "final; a task returns a value or a final state (Completed, Failed, Cancelled)"
        )

    def handle_exception(
        self, exc: BaseException, crashed: str | None = None
    ) -> tuple[State, float | None]:
        """The state after ``exc``, and the delay before a retry (None: no retry).

        ``crashed`` is a message for runs whose process died (a Dask worker): they end
        ``Crashed`` instead of ``Failed``, and are retried the same way. A retry condition
        that raises is logged and means "don't retry".
        """
        task, run = self.task, self.task_run
        if not isinstance(exc, Exception):
            without_internal_frames(exc)  # a final state keeps the user's frames only
            return Cancelled(f"Task run was interrupted ({interruption_name(exc)}).", exc), None
        if crashed is not None:
            final = Crashed(crashed, exc)
        elif isinstance(exc, _FailedStateReturned):
            final = exc.final_state()
        elif isinstance(exc, RunTimeoutError) and exc.run_id == run.id:
            final = TimedOut(
                f"Task run exceeded its timeout of {task.timeout_seconds:g} second(s).", exc
            )
        else:
            final = Failed(f"Task run encountered an exception {type(exc).__name__}: {exc}", exc)
        if run.run_count > task.retries or self._cancelled():
            without_internal_frames(exc)
            return final, None
        condition = task.retry_condition_fn
        if condition is not None:
            try:
                retry = condition(task, run, final)
            except Exception as cond_exc:
                _log.error(
                    "Task run %r: retry_condition_fn raised %s: %s; not retrying",
                    run.name,
                    type(cond_exc).__name__,
                    cond_exc,
                    extra=_log_extra(run),
                )
                without_internal_frames(exc)
                return final, None
            if not retry:
                without_internal_frames(exc)
                return final, None
        # (an attempt that is retried is never raised to the caller: its exception is not
        # trimmed; the lines that show it format the user's frames only)
        delay = task.retry_delay_for(run.run_count)
        state = AwaitingRetry(
            f"Task run failed with exception: {exc!r} - Retry {run.run_count}/{task.retries} "
            f"will start {_seconds(delay)} from now",
            exc,
        )
        return state, delay

    def await_retry(self, state: State) -> bool:
        """Enter ``AwaitingRetry``; False if the run is final already."""
        return set_task_run_state(self.task_run, state)

    def finish(self, state: State) -> State:
        """End the run in ``state``, unless it is final already; returns its final state."""
        run = self.task_run
        flow_run = self.flow_run
        if (
            flow_run is not None
            and flow_run.flow.retries
            and state.is_completed()
            and state.name != "Cached"
        ):
            key = self._memo_key()
            if key is not None:
                flow_run.memo[key] = Completed(
                    f"Reused the result of attempt {flow_run.run_count} of this flow run.",
                    state.data,
                )
        set_task_run_state(run, state)
        # the body has ended: nothing is left to interrupt (a cancel finds a final run, or no
        # body, and stops nothing), and a large map keeps no Body per run
        run.body = None
        final = run.state
        assert final is not None
        return final

    # -- drivers -------------------------------------------------------------------------------
    def run_sync(self) -> State:
        try:
            early = self._start()
            if early is not None:
                return self.finish(early)
            while True:
                if not self.begin_run():
                    return self.finish(_CANCELLED_BEFORE_START())
                try:
                    value = self.call_sync()
                    returned = self.returned_state(value) if isinstance(value, State) else None
                except BaseException as exc:
                    state, delay = self.handle_exception(exc)
                    if delay is None:
                        final = self.finish(state)
                        if not isinstance(exc, Exception):
                            raise
                        return final
                    if self.await_retry(state) and self._wait_for_retry(delay):
                        continue
                    return self.finish(
                        Cancelled("The flow run was cancelled while awaiting a retry.")
                    )
                if returned is not None:
                    return self.finish(returned)
                return self.finish(self.handle_success(value))
        except Exception as exc:
            return self.finish(_internal_failure(exc))

    async def run_async(self) -> State:
        # the run's hooks are awaited here, on this loop (they would block it if called)
        token = drive_async(self.task_run)
        try:
            return await self._drive_async()
        finally:
            try:
                await await_pending()
            finally:
                stop_driving(token)

    async def _drive_async(self) -> State:
        try:
            early = self._start()
            if early is not None:
                return self.finish(early)
            while True:
                if not self.begin_run():
                    return self.finish(_CANCELLED_BEFORE_START())
                await await_pending()  # on_running hooks, before the body
                try:
                    value = await self.call_async()
                    returned = self.returned_state(value) if isinstance(value, State) else None
                except BaseException as exc:
                    state, delay = self.handle_exception(exc)
                    if delay is None:
                        final = self.finish(state)
                        if not isinstance(exc, Exception):
                            raise
                        return final
                    if self.await_retry(state):
                        import asyncio  # async tasks only: not imported by ``import flowbook``

                        await asyncio.sleep(delay)
                        if not self._cancelled():
                            continue
                    return self.finish(
                        Cancelled("The flow run was cancelled while awaiting a retry.")
                    )
                if returned is not None:
                    return self.finish(returned)
                return self.finish(self.handle_success(value))
        except Exception as exc:
            return self.finish(_internal_failure(exc))

    def _start(self) -> State | None:
        if self._early is not None:
            return self._early
        if self._cancelled():
            return _CANCELLED_BEFORE_START()
        try:
            resolved = self.resolve_inputs()
        except UpstreamTaskError as exc:  # a state among the arguments: as _note_annotations
            return Failed(f"Task run not run: {exc}", exc)
        except Exception as exc:
            return Failed(
                f"Task run's inputs could not be resolved ({type(exc).__name__}: {exc}).", exc
            )
        return resolved or self.check_cache()

    # -- as a submitted call (task runners) ----------------------------------------------------
    def prepare_submit(self) -> None:
        self._context = contextvars.copy_context()

    def run(self) -> None:
        context = self._context
        assert context is not None
        context.run(self._run_here, False)

    def run_as_call(self) -> None:
        context = self._context
        assert context is not None
        context.run(self._run_here, True)

    def _run_here(self, as_call: bool) -> None:
        run = self.task_run
        token = current_task_run.set(run)
        try:
            if self.task.is_async:
                run_coro_sync(self.run_async)
            else:
                self.run_sync()
        except BaseException as exc:
            # the run is final; a worker thread has nobody to tell, a caller is told
            self.finish(Cancelled(f"Task run was interrupted ({interruption_name(exc)}).", exc))
            if as_call:
                raise
        finally:
            current_task_run.reset(token)

    def cancel(self, reason: str) -> None:
        self.finish(
            Cancelled(reason, RunCancelledError(f"task run {self.task_run.name!r}: {reason}"))
        )

    # -- helpers -------------------------------------------------------------------------------
    def _cancelled(self) -> bool:
        flow_run = self.flow_run
        return flow_run is not None and flow_run.cancel_event.is_set()

    def _wait_for_retry(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; False if the flow run was cancelled meanwhile."""
        flow_run = self.flow_run
        if flow_run is None:
            if delay > 0:
                time.sleep(delay)
            return True
        return not flow_run.cancel_event.wait(delay) if delay > 0 else not self._cancelled()

    def _memo_key(self) -> tuple[str, int, str] | None:
        from flowbook.caching.hashing import UnhashableInputError, stable_hash

        try:
            digest = stable_hash(self.task_run.parameters)
        except (UnhashableInputError, RecursionError):
            return None
        return (self.task.task_key, self.task_run.dynamic_key, digest)


def call_task(task: Task[..., Any], run: TaskRun, register: Callable[[Any], None]) -> Any:
    """Call a sync task's body with the run's arguments, as user code (``register`` is told
    its body), within the task's timeout."""
    if task.timeout_seconds is None:
        return call_body(task.fn, run.args, run.kwargs, register)
    return call_with_timeout(
        task.fn,
        run.args,
        run.kwargs,
        task.timeout_seconds,
        f"Task run {run.name!r}",
        run.id,
        register,
    )


async def await_task(task: Task[..., Any], run: TaskRun, register: Callable[[Any], None]) -> Any:
    """Await an async task's body in a cancel scope (its deadline: the task's timeout)."""
    return await await_body(
        lambda: task.fn(*run.args, **run.kwargs),
        task.timeout_seconds,
        f"Task run {run.name!r}",
        run.id,
        register,
    )


def _CANCELLED_BEFORE_START() -> State:
    return Cancelled("The flow run was cancelled before this task run started.")


def _internal_failure(exc: Exception) -> State:
    """The state of a run whose lifecycle itself raised (flowbook's own code, or a part of the
    configuration around the body that had no guard of its own)."""
    return Failed(
        f"Task run failed outside its body ({type(exc).__name__}: {exc}).",
        exc,
    )


def _log_extra(run: TaskRun) -> dict[str, Any]:
    flow_run = run.flow_run
    return {
        "flowbook_run": f"Task run {run.name!r}",
        "flowbook_flow_run_id": flow_run.id if flow_run is not None else None,
        "flowbook_task_run_id": run.id,
    }


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"flowbook: {message}", RuntimeWarning, stacklevel=3)


def _seconds(delay: float) -> str:
    return f"{delay:g} second(s)"


def jittered(delay: float, factor: float | None) -> float:
    """``delay`` stretched by up to ``factor`` of itself, at random (spreads retry storms)."""
    if not factor or delay <= 0:
        return delay
    return delay * (1.0 + random.uniform(0.0, factor))
