"""``@task`` and the ``Task`` object: calls, ``.submit()``, ``.map()``.

A task called inside a flow runs at once on the calling thread and returns its value (or
raises its exception). ``.submit()`` hands it to the flow run's task runner and returns a
future; futures among the arguments become dependencies. ``.map()`` submits one task run per
element. Called outside any flow, a task still runs with its own run record, and
``.submit()``/``.map()`` use a process-wide thread pool.
"""

from __future__ import annotations

import datetime
import inspect
import itertools
import threading
import weakref
from collections.abc import Callable, Iterable, Sized
from collections.abc import Mapping as MappingABC
from typing import Any, Generic, ParamSpec, TypeVar, overload

from flowbook._hook_methods import HookMethods
from flowbook._options import (
    check_template,
    check_unknown,
    render_run_name,
    replaced_by,
    translate_task_options,
    validate_options,
)
from flowbook._tracebacks import without_internal_frames
from flowbook.engine import interrupts
from flowbook.engine.pacing import CHECK_EVERY, MapPacer
from flowbook.engine.runs import (
    TaskRun,
    current_flow_run,
    current_task_run,
    is_async_run,
    new_id,
)
from flowbook.engine.task_engine import TaskRunEngine, jittered
from flowbook.engine.timeouts import run_coro_sync
from flowbook.futures import FutureList, TaskRunFuture
from flowbook.states import State

__all__ = ["Task", "exponential_backoff", "task", "task_input_hash", "unmapped"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def task_input_hash(context: Any, arguments: dict[str, Any]) -> str | None:
    """Cache key function: the task's identity and source, and its arguments' content."""
    from flowbook.caching.keys import task_input_hash as _impl

    return _impl(context, arguments)


# How many ``with Flow(...)`` blocks (Prefect 1's functional API) are open in the process, on
# any thread. ``Task.__call__`` and ``Task.map`` test it first, so that outside such blocks the
# hook costs one global look-up; flowbook.functional changes it.
_flow_blocks = 0
NOT_BUILDING: Any = object()


def _build_call(task: Task[Any, Any], args: Any, kwargs: Any, mapped: bool) -> Any:
    """A node of the flow whose block is open on this thread, else ``NOT_BUILDING``."""
    from flowbook.functional import add_call

    return add_call(task, args, kwargs, mapped)


class unmapped(Generic[T]):
    """Wrap an argument of ``Task.map()`` that every mapped run receives whole."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"unmapped({self.value!r})"


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """For ``retry_delay_seconds=``: retry ``n`` (from 0) waits ``backoff_factor * 2**n``
    seconds; at most 50 delays."""
    if (
        not isinstance(backoff_factor, (int, float))
        or isinstance(backoff_factor, bool)
        or backoff_factor < 0
    ):
        raise ValueError(
            f"exponential_backoff(backoff_factor={backoff_factor!r}): give a number of seconds "
            ">= 0, the delay before the first retry"
        )

    def delays(retries: int) -> list[float]:
        return [backoff_factor * 2**n for n in range(min(retries, 50))]

    return delays


def _delays_from_callable(options: dict[str, Any]) -> dict[str, Any]:
    """``retry_delay_seconds=exponential_backoff(...)``: a function of the number of retries
    that gives the list of delays (none without retries)."""
    make = options["retry_delay_seconds"]
    retries = options.get("retries")
    if retries is None:  # called with the settings' default number, as in Prefect
        from flowbook.settings import task_defaults

        retries = task_defaults(None, 0)[0]
    try:
        delays = make(retries)
    except Exception as exc:
        raise ValueError(
            f"@task(retry_delay_seconds={make!r}): the function raised {type(exc).__name__}: "
            f"{exc} when called with the number of retries ({retries})"
        ) from exc
    return {**options, "retry_delay_seconds": list(delays) or None}


# FLOWBOOK_TASKS_REFRESH_CACHE, read when a task runs as Prefect does, at no cost per call:
# the settings write it into every live task without refresh_cache= of its own, so the engine
# reads the same instance attribute (_refresh_cache, the value in force) as for a task that
# sets it; task.refresh_cache stays None for those, as in Prefect
_refresh_default = False
_refresh_followers: weakref.WeakSet[Task[Any, Any]] = weakref.WeakSet()
_refresh_lock = threading.Lock()  # a task decorated on another thread during a reload


def _follow_refresh_default(task: Task[Any, Any]) -> None:
    with _refresh_lock:
        task._refresh_cache = _refresh_default
        _refresh_followers.add(task)


def _set_refresh_default(value: bool) -> None:
    global _refresh_default
    with _refresh_lock:
        _refresh_default = value
        for follower in list(_refresh_followers):
            follower._refresh_cache = value


class Task(HookMethods, Generic[P, R]):
    """A function decorated with ``@task``."""

    _hook_kind = "task"
    _hook_options = ("on_completion", "on_failure", "on_running")

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        tags: Iterable[str] | None = None,
        task_run_name: str | Callable[[], str] | None = None,
        retries: int | None = None,
        retry_delay_seconds: float | list[float] | Callable[[int], list[float]] | None = None,
        retry_jitter_factor: float | None = None,
        retry_condition_fn: Callable[..., bool] | None = None,
        timeout_seconds: float | None = None,
        cache_key_fn: Callable[..., Any] | None = None,
        cache_policy: Any = None,
        cache_expiration: datetime.timedelta | None = None,
        refresh_cache: bool | None = None,
        log_prints: bool | None = None,
        persist_result: bool | None = None,
        trigger: Callable[[Any], bool] | None = None,
        nout: int | None = None,
        on_completion: list[Callable[..., Any]] | None = None,
        on_failure: list[Callable[..., Any]] | None = None,
        on_running: list[Callable[..., Any]] | None = None,
        **prefect1_options: Any,
    ) -> None:
        """``prefect1_options``: Prefect 1's ``@task`` options (``max_retries``,
        ``retry_delay``, ``timeout``, ``cache_for``, ...), turned into flowbook's."""
        if not callable(fn):
            raise TypeError(f"@task decorates a function; got {fn!r} of type {type(fn).__name__}")
        given = {
            k: v
            for k, v in locals().items()
            if k not in ("self", "fn", "__class__", "prefect1_options") and v is not None
        }
        if prefect1_options:
            given = translate_task_options({**given, **prefect1_options})
        self._init_options(fn, given)

    def _init_options(self, fn: Callable[P, R], options: dict[str, Any]) -> None:
        if callable(options.get("retry_delay_seconds")):
            options = _delays_from_callable(options)
        validate_options("task", options)
        self._options = options
        name: str | None = options.get("name")
        description: str | None = options.get("description")
        tags: Iterable[str] | None = options.get("tags")
        retries: int | None = options.get("retries")
        retry_delay_seconds: float | list[float] | None = options.get("retry_delay_seconds")
        timeout_seconds: float | None = options.get("timeout_seconds")
        task_run_name: str | Callable[[], str] | None = options.get("task_run_name")
        if retries is None or retry_delay_seconds is None:
            from flowbook.settings import task_defaults

            # the settings' defaults, read at decoration as Prefect does (not in _options)
            retries, retry_delay_seconds = task_defaults(retries, retry_delay_seconds)
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        self.description: str | None = (
            description if description is not None else inspect.getdoc(fn)
        )
        self.version: str | None = options.get("version")
        self.tags: tuple[str, ...] = tuple(sorted(set(tags))) if tags else ()
        self.retries: int = retries or 0
        self.retry_delay_seconds: float | list[float] = retry_delay_seconds or 0
        self.retry_jitter_factor: float | None = options.get("retry_jitter_factor")
        self.retry_condition_fn: Callable[..., bool] | None = options.get("retry_condition_fn")
        self.timeout_seconds = None if timeout_seconds is None else float(timeout_seconds)
        from flowbook.cache_policies import _for_task

        # the key function the engine calls (None: not cached), from cache_policy/cache_key_fn
        self.cache_policy, self.cache_key_fn = _for_task(self.name, fn, options)
        self.cache_expiration: datetime.timedelta | None = options.get("cache_expiration")
        # refresh_cache as given (None: the settings' default, kept up to date in
        # _refresh_cache by _set_refresh_default); the setter sets _refresh_cache
        self.refresh_cache = options.get("refresh_cache")
        self.log_prints: bool | None = options.get("log_prints")
        self.persist_result: bool | None = options.get("persist_result")
        # Prefect 1: whether a run starts, from its upstream runs' states (None: all of them
        # completed), and how many values a call inside a ``with Flow(...)`` block unpacks to
        self.trigger: Callable[[Any], bool] | None = options.get("trigger")
        self.nout: int | None = options.get("nout")
        # state hooks (flowbook.engine.hooks); _state_hooks is None for a task without any
        self.on_completion_hooks: list[Callable[..., Any]] = list(options.get("on_completion", ()))
        self.on_failure_hooks: list[Callable[..., Any]] = list(options.get("on_failure", ()))
        self.on_running_hooks: list[Callable[..., Any]] = list(options.get("on_running", ()))
        self._hooks_changed()
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        # Calls with exactly this many positional arguments and no keywords need no binding
        # to be known valid: the common case in a tight loop or a large map stays cheap.
        self._plain_arity = _plain_arity(self.signature)
        self._param_names = tuple(self.signature.parameters)
        if callable(task_run_name) and _takes_keywords(task_run_name):
            task_run_name = _KeywordRunName(task_run_name)
        self.task_run_name = task_run_name
        if isinstance(task_run_name, str):
            check_template("task", "task_run_name", task_run_name, *_param_names(self.signature))
        from flowbook.caching.identity import task_identity

        self.task_key = task_identity(fn)
        self._counter = itertools.count()
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__ = self.name
        self.__wrapped__ = fn

    def with_options(self, **changes: Any) -> Task[P, R]:
        """A copy of this task with some options changed (Prefect 1 names too)."""
        # translated together with the options kept, so that a new cache_for keeps the
        # task's cache_validator and a new cache_validator its cache_for
        options = translate_task_options({**replaced_by(changes, self._options), **changes})
        return Task(self.fn, **options)

    @property
    def refresh_cache(self) -> bool | None:
        """``refresh_cache`` as given to ``@task`` (None: FLOWBOOK_TASKS_REFRESH_CACHE decides
        when the task runs)."""
        return self._refresh_cache_option

    @refresh_cache.setter
    def refresh_cache(self, value: bool | None) -> None:
        self._refresh_cache_option = value
        if value is None:
            _follow_refresh_default(self)
            return
        with _refresh_lock:
            _refresh_followers.discard(self)
            self._refresh_cache = bool(value)

    def __repr__(self) -> str:
        return f"Task(name={self.name!r}, fn={getattr(self.fn, '__qualname__', self.fn)!r})"

    def __copy__(self) -> Task[P, R]:
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)  # hooks included (pickling leaves them out)
        if self in _refresh_followers:
            _follow_refresh_default(copy)
        return copy

    def __getstate__(self) -> dict[str, Any]:
        # A task is pickled to run its body elsewhere (Dask, process pools); its hooks run
        # where its lifecycle does, in this process, so they stay here and need not pickle.
        state = dict(self.__dict__)
        if self._state_hooks is not None:
            hooks = self._hook_options
            state["_options"] = {k: v for k, v in self._options.items() if k not in hooks}
            state.update(
                on_completion_hooks=[], on_failure_hooks=[], on_running_hooks=[], _state_hooks=None
            )
        return state

    # -- calling -------------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task now and return its value (``return_state=True``: its final state)."""
        if _flow_blocks:  # a ``with Flow(...)`` block is open somewhere: maybe building
            node = _build_call(self, args, kwargs, False)
            if node is not NOT_BUILDING:
                return node  # type: ignore[no-any-return]
        body = interrupts.enter()
        try:
            return_state = bool(kwargs.pop("return_state", False))
            wait_for: Any = kwargs.pop("wait_for", None)
            engine = TaskRunEngine(self, args, kwargs, wait_for, with_future=False)
            if self.is_async:
                caller = current_task_run.get() or current_flow_run.get()
                if caller is None or is_async_run(caller):
                    return self._run_inline_async(engine, return_state)  # type: ignore[return-value]
                return run_coro_sync(  # type: ignore[no-any-return]
                    lambda: self._run_inline_async(engine, return_state)
                )
            token = current_task_run.set(engine.task_run)
            try:
                state = engine.run_sync()
            finally:
                current_task_run.reset(token)
            return _unwrap(engine.task_run, state, return_state)  # type: ignore[no-any-return]
        except BaseException as exc:
            # the caller sees its own frames and the user's, not the engine's (IPython and
            # pytest also hide this frame, marked by the local below); failure path only
            __tracebackhide__ = True
            without_internal_frames(exc)
            raise exc
        finally:
            interrupts.leave(body)

    async def _run_inline_async(self, engine: TaskRunEngine, return_state: bool) -> Any:
        token = current_task_run.set(engine.task_run)
        try:
            state = await engine.run_async()
        finally:
            current_task_run.reset(token)
        try:
            return _unwrap(engine.task_run, state, return_state)
        except BaseException as exc:
            __tracebackhide__ = True
            without_internal_frames(exc)
            raise exc

    def submit(self, *args: Any, **kwargs: Any) -> TaskRunFuture[Any]:
        """Hand the task to the flow run's task runner; returns a future at once."""
        wait_for: Any = kwargs.pop("wait_for", None)
        body = interrupts.enter()
        try:
            return self._submit(args, kwargs, wait_for, None)
        finally:
            interrupts.leave(body)

    def _submit(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Any,
        map_group: tuple[str, int, int] | None,
    ) -> TaskRunFuture[Any]:
        engine = TaskRunEngine(self, args, kwargs, wait_for, with_future=True, map_group=map_group)
        flow_run = engine.flow_run
        runner = flow_run.task_runner if flow_run is not None else None
        if runner is None:
            runner = _background_runner()
        engine.prepare_submit()
        try:
            runner.submit(engine)
        except BaseException as exc:
            # the runner could not take it (a Dask cluster that does not start): the run
            # ends Failed, so that nobody waits for it, and the caller gets the error
            from flowbook.states import Failed

            engine.finish(Failed(f"Task run could not be submitted: {exc}", exc))
            engine.task_run.observed = True
            raise
        future = engine.future
        assert future is not None
        return future

    def map(self, *args: Any, **kwargs: Any) -> FutureList[Any]:
        """Submit one task run per element of the iterable arguments.

        Lists, tuples, ranges, sets, generators and other iterables are mapped over, element
        by element; strings, bytes, mappings and non-iterables, and arguments wrapped in
        ``unmapped(...)``, are given whole to every run. A future argument is waited for
        first, and its result is mapped over if it is iterable. All mapped arguments must have
        the same length.
        """
        if _flow_blocks:  # a ``with Flow(...)`` block is open somewhere: maybe building
            node = _build_call(self, args, kwargs, True)
            if node is not NOT_BUILDING:
                return node  # type: ignore[no-any-return]
        body = interrupts.enter()
        try:
            return self._map(args, kwargs)
        finally:
            interrupts.leave(body)

    def _map(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FutureList[Any]:
        wait_for: Any = kwargs.pop("wait_for", None)
        names = list(self.signature.parameters)
        columns: dict[str, list[Any]] = {}
        static_args: list[Any] = []
        mapped_pos: dict[int, list[Any]] = {}
        futures_used: list[TaskRunFuture[Any]] = []
        for i, value in enumerate(args):
            label = names[i] if i < len(names) else f"argument {i}"
            seq = self._map_column(value, futures_used)
            if seq is None:
                static_args.append(value.value if isinstance(value, unmapped) else value)
            else:
                mapped_pos[i] = seq
                columns[label] = seq
                static_args.append(None)
        static_kwargs: dict[str, Any] = {}
        mapped_kw: dict[str, list[Any]] = {}
        for key, value in kwargs.items():
            seq = self._map_column(value, futures_used)
            if seq is None:
                static_kwargs[key] = value.value if isinstance(value, unmapped) else value
            else:
                mapped_kw[key] = columns[key] = seq
        if not columns:
            raise ValueError(
                f"{self.name}.map() needs at least one iterable argument to map over; all "
                "arguments given are static (unmapped, strings, mappings or non-iterables)"
            )
        lengths = {label: len(seq) for label, seq in columns.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{label} has {n}" for label, n in lengths.items())
            raise ValueError(
                f"{self.name}.map() got iterables of different lengths ({shown}); map over "
                "iterables of one length, or wrap the ones meant whole in unmapped(...)"
            )
        n = next(iter(lengths.values()))
        extra_wait = futures_used
        if wait_for is not None:
            from flowbook.engine.task_engine import wait_for_list

            extra_wait = [*wait_for_list(wait_for), *futures_used]
        result: FutureList[Any] = FutureList()
        group = new_id()
        pacer = MapPacer.for_map(n, current_flow_run.get(), current_task_run.get() is not None)
        for j in range(n):
            if pacer is not None and not j % CHECK_EVERY:
                pacer.pace()
            call_args = list(static_args)
            for i, seq in mapped_pos.items():
                call_args[i] = seq[j]
            if mapped_kw:
                call_kwargs = dict(static_kwargs)
                for key, seq in mapped_kw.items():
                    call_kwargs[key] = seq[j]
            else:  # one dict for every run (the engine never changes a run's kwargs)
                call_kwargs = static_kwargs
            result.append(
                self._submit(tuple(call_args), call_kwargs, extra_wait or None, (group, n, j))
            )
        return result

    @staticmethod
    def _map_column(value: Any, futures_used: list[TaskRunFuture[Any]]) -> list[Any] | None:
        if isinstance(value, unmapped):
            return None
        if isinstance(value, TaskRunFuture):
            futures_used.append(value)
            value = value.result()
        if isinstance(value, (str, bytes, bytearray, MappingABC)):
            return None
        if isinstance(value, Sized) and isinstance(value, (list, tuple, range)):
            return list(value)
        try:
            return list(value)
        except TypeError:
            return None

    # -- engine helpers ------------------------------------------------------------------------
    def bind_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The call's parameters by name, or None when they need not be bound yet.

        Raises a ``TypeError`` naming the task when the arguments do not fit its signature,
        before any run is created (so a bad call is never retried).
        """
        if not kwargs and len(args) == self._plain_arity:
            return None
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"task {self.name!r} was called with arguments that do not match its "
                f"parameters {self.signature}: {exc}"
            ) from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def _next_dynamic_key(self) -> int:
        return next(self._counter)

    def _run_name(self, run: TaskRun) -> str:
        template = self.task_run_name
        if template is None:
            return f"{self.name}-{run.dynamic_key}"
        token = current_task_run.set(run)
        try:
            return render_run_name("task", self.name, template, run.parameters)
        finally:
            current_task_run.reset(token)

    def retry_delay_for(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delays = self.retry_delay_seconds
        if isinstance(delays, list):
            delay = float(delays[min(attempt, len(delays)) - 1])
        else:
            delay = float(delays)
        return jittered(delay, self.retry_jitter_factor)


def _plain_arity(sig: inspect.Signature) -> int:
    """The parameter count if all are positional-or-keyword without defaults, else -1."""
    params = sig.parameters.values()
    plain = all(
        p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params
    )
    return len(sig.parameters) if plain else -1


def _param_names(sig: inspect.Signature) -> tuple[list[str], bool]:
    names = [
        p.name
        for p in sig.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    varkw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return names, varkw


def _takes_keywords(fn: Callable[..., Any]) -> bool:
    """Whether a run name function wants the run's values as keywords (Prefect 1's
    ``task_run_name=lambda **kwargs: ...``) rather than nothing (flowbook's form)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (
            p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and p.default is p.empty
        )
        for p in params
    )


class _KeywordRunName:
    """A Prefect 1 run name function, called with the flow run's parameters and the task
    run's arguments as keywords (the arguments win a clash, as in Prefect 1)."""

    __slots__ = ("__name__", "fn")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = str(getattr(fn, "__name__", fn))

    def __call__(self) -> Any:
        run = current_task_run.get()
        if run is None:
            return self.fn()
        flow_run = run.flow_run
        values = dict(flow_run.parameters) if flow_run is not None else {}
        values.update(run.parameters)
        return self.fn(**values)


def _unwrap(run: TaskRun, state: State, return_state: bool) -> Any:
    if return_state:
        run.observed = True  # the caller has the state: a failure in it is the caller's to handle
        return state
    if state.is_completed():
        return state.data
    run.observed = True
    return state.result()


_background: Any = None
_background_lock = threading.Lock()


def _background_runner() -> Any:
    """The thread pool for tasks submitted outside any flow (created on first use)."""
    global _background
    with _background_lock:
        if _background is None:
            from flowbook.task_runners.concurrent import ConcurrentTaskRunner

            _background = ConcurrentTaskRunner()
            _background.start()
        return _background


@overload
def task(__fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(__fn: Callable[P, R], /, **options: Any) -> Task[P, R]: ...


@overload
def task(__fn: None = None, /, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    __fn: Callable[P, R] | None = None, /, **options: Any
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Decorate a function as a task: ``@task``, ``@task(retries=2)`` or ``task(fn, ...)``.

    Prefect 1's options (``@task(max_retries=2, retry_delay=timedelta(seconds=5))``) are
    turned into flowbook's here, once, with a warning for each one that does nothing here.
    """
    options = translate_task_options(options)
    check_unknown("task", options)
    if callable(options.get("retry_delay_seconds")):
        options = _delays_from_callable(options)
    if __fn is None:
        validate_options("task", options)
        return lambda fn: Task(fn, **options)
    return Task(__fn, **options)
