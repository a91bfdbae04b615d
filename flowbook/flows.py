"""``@flow`` and the ``Flow`` object.

Calling a flow runs it now, on the calling thread, and returns the body's value (or raises
its failure); ``return_state=True`` returns the final state instead. An ``async def`` flow
returns a coroutine to await, except when called from inside a sync flow or task, where it
runs to completion like any other call. A sync flow called in a notebook cell simply runs:
flowbook never touches the kernel's event loop.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from flowbook._hook_methods import HookMethods
from flowbook._options import check_template, check_unknown, render_run_name, validate_options
from flowbook._tracebacks import without_internal_frames
from flowbook._validation import compile_validator, has_annotations
from flowbook.engine import interrupts
from flowbook.engine.flow_engine import FlowRunEngine
from flowbook.engine.runs import FlowRun, current_flow_run, current_task_run, is_async_run
from flowbook.engine.timeouts import run_coro_sync
from flowbook.task_runners.base import TaskRunner

if TYPE_CHECKING:
    from flowbook.background import BackgroundRun
from flowbook.task_runners.thread_pool import ThreadPoolTaskRunner

__all__ = ["Flow", "flow"]

_UNBOUND: Any = object()
_NOT_COMPILED: Any = object()

P = ParamSpec("P")
R = TypeVar("R")


def check_run_config(value: Any) -> None:
    """``TypeError`` unless ``value`` is None or a run config (``flowbook.run_configs``)."""
    if value is not None and not isinstance(getattr(value, "env", None), dict):
        raise TypeError(
            f"flow.run_config = {value!r}: a run config is one of flowbook.run_configs "
            "(LocalRun(env=...), UniversalRun(), ...)"
        )


def check_executor(value: Any, given: str | None = None) -> None:
    """``TypeError`` unless ``value`` is None or an executor (``flowbook.executors``);
    ``given`` is how the message names where it was given (``flow.executor = ...``)."""
    if value is not None and not callable(getattr(value, "task_runner", None)):
        raise TypeError(
            f"{given or f'flow.executor = {value!r}'}: an executor is one of "
            "flowbook.executors (LocalExecutor(), LocalDaskExecutor(), DaskExecutor(...))"
        )


class Flow(HookMethods, Generic[P, R]):
    """A function decorated with ``@flow``; ``Flow("name")`` is a Prefect 1 functional flow."""

    _hook_kind = "flow"
    _hook_options = ("on_completion", "on_failure", "on_cancellation", "on_crashed", "on_running")

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # Prefect 1 spelled a flow ``with Flow("name") as flow:``: a name where ``@flow``'s
        # object takes a function gives a flowbook.functional.FunctionalFlow instead
        named = bool(args) and isinstance(args[0], str)
        if cls is Flow and (named or (not args and "fn" not in kwargs and "name" in kwargs)):
            from flowbook.functional import FunctionalFlow

            return object.__new__(FunctionalFlow)
        return object.__new__(cls)

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        flow_run_name: str | Callable[[], str] | None = None,
        task_runner: TaskRunner | type[TaskRunner] | None = None,
        retries: int | None = None,
        retry_delay_seconds: float | list[float] | None = None,
        timeout_seconds: float | None = None,
        log_prints: bool | None = None,
        env: dict[str, str] | None = None,
        tags: Iterable[str] | None = None,
        project: str | None = None,
        persist_result: bool | None = None,
        validate_parameters: bool | None = None,
        on_completion: list[Callable[..., Any]] | None = None,
        on_failure: list[Callable[..., Any]] | None = None,
        on_cancellation: list[Callable[..., Any]] | None = None,
        on_crashed: list[Callable[..., Any]] | None = None,
        on_running: list[Callable[..., Any]] | None = None,
    ) -> None:
        # @flow over @classmethod / @staticmethod: the function inside; __get__ binds ``cls``
        self._isclassmethod = isinstance(fn, classmethod)
        self._isstaticmethod = isinstance(fn, staticmethod)
        if isinstance(fn, (classmethod, staticmethod)):
            fn = fn.__func__
        if not callable(fn):
            raise TypeError(f"@flow decorates a function; got {fn!r} of type {type(fn).__name__}")
        if inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"@flow cannot decorate the async generator function "
                f"{getattr(fn, '__qualname__', fn)!r}: async generator flows are not supported; "
                "make it a generator flow (def with yield) or an async flow that returns a list"
            )
        options = {k: v for k, v in locals().items() if k not in ("self", "fn", "__class__")}
        self._options = {k: v for k, v in options.items() if v is not None}
        validate_options("flow", self._options)
        self.fn = fn
        fn_name = getattr(fn, "__name__", type(fn).__name__)
        self.name: str = name or fn_name.replace("_", "-")
        self.description: str | None = (
            description if description is not None else inspect.getdoc(fn)
        )
        self._version = version
        if isinstance(task_runner, type):
            task_runner = task_runner()
        self.task_runner: TaskRunner = task_runner or ThreadPoolTaskRunner()
        self.retries: int = retries or 0
        self.retry_delay_seconds: float | list[float] = retry_delay_seconds or 0
        self.timeout_seconds = None if timeout_seconds is None else float(timeout_seconds)
        self.log_prints = log_prints
        self.env: dict[str, str] = dict(env or {})
        self.tags: tuple[str, ...] = tuple(sorted(set(tags))) if tags else ()
        self.project = project
        self.persist_result = persist_result
        self.is_async = inspect.iscoroutinefunction(fn)
        self.is_generator = inspect.isgeneratorfunction(fn)
        self.signature = inspect.signature(fn)
        self.flow_run_name = flow_run_name
        if isinstance(flow_run_name, str):
            names = [
                p.name
                for p in self.signature.parameters.values()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            varkw = any(p.kind is p.VAR_KEYWORD for p in self.signature.parameters.values())
            check_template("flow", "flow_run_name", flow_run_name, names, varkw)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__ = fn_name
        self.__wrapped__ = fn
        # what a flow accessed on an instance (or a classmethod flow on its class) is bound to
        self._bound_to: Any = _UNBOUND
        self.validate_parameters = validate_parameters is not False
        # compiled at the first call (None: nothing to check, so calls pay nothing)
        self._validator: Any = (
            _NOT_COMPILED if self.validate_parameters and has_annotations(self.signature) else None
        )
        self._run_config: Any = None
        self._executor: Any = None
        # state hooks (flowbook.engine.hooks); _state_hooks is None for a flow without any
        self.on_completion_hooks: list[Callable[..., Any]] = list(on_completion or ())
        self.on_failure_hooks: list[Callable[..., Any]] = list(on_failure or ())
        self.on_cancellation_hooks: list[Callable[..., Any]] = list(on_cancellation or ())
        self.on_crashed_hooks: list[Callable[..., Any]] = list(on_crashed or ())
        self.on_running_hooks: list[Callable[..., Any]] = list(on_running or ())
        self._hooks_changed()

    # -- Prefect 1's run config and executor ---------------------------------------------------
    @property
    def run_config(self) -> Any:
        """A Prefect 1 run config (``flowbook.run_configs``): its ``env`` is set for this
        flow's runs over ``@flow(env=...)``; ``None`` leaves the flow's own ``env``."""
        return self._run_config

    @run_config.setter
    def run_config(self, value: Any) -> None:
        check_run_config(value)
        if getattr(value, "working_dir", None) is not None:
            raise TypeError(
                f"flow.run_config = {value!r}: working_dir applies to the runs of a Prefect 1 "
                f"flow (with Flow(...)), not to the @flow {self.name!r}; use absolute paths in "
                "its tasks, or leave working_dir out"
            )
        self._run_config = value
        own = self._options.get("env") or {}
        self.env = {**own, **value.env} if value is not None else dict(own)

    @property
    def executor(self) -> Any:
        """A Prefect 1 executor (``flowbook.executors``): the task runner of this flow's runs;
        ``None`` goes back to ``@flow(task_runner=...)``."""
        return self._executor

    @executor.setter
    def executor(self, value: Any) -> None:
        check_executor(value)
        self._executor = value
        if value is not None:
            self.task_runner = value.task_runner()
        else:
            runner = self._options.get("task_runner")
            self.task_runner = (
                runner() if isinstance(runner, type) else runner or ThreadPoolTaskRunner()
            )

    @property
    def version(self) -> str:
        """The given version, else a hash of the function's normalised source."""
        if self._version is None:
            from flowbook.caching.source import source_hash

            self._version = source_hash(self.fn)[:16]
        return self._version

    @property
    def parameters(self) -> Any:
        """The parameters as a JSON schema object (Prefect's ``ParameterSchema``), built with
        pydantic at the first read: decorating and calling a flow never build it."""
        schema = self.__dict__.get("_parameter_schema")
        if schema is None:
            from flowbook._parameter_schema import parameter_schema

            schema = self.__dict__["_parameter_schema"] = parameter_schema(self.fn, self.signature)
        return schema

    def __get__(self, instance: Any, owner: Any = None) -> Flow[P, R]:
        """A flow defined in a class binds like a method: ``obj.flow(...)`` passes ``obj`` as
        its first parameter, and a flow over a ``classmethod`` gets the class."""
        if self._isclassmethod:
            target = owner if owner is not None else type(instance)
        elif instance is not None and not self._isstaticmethod:
            target = instance
        else:
            return self
        if self._validator is _NOT_COMPILED:  # once here, not once per bound copy
            self._validator = compile_validator(self.name, self.fn, self.signature)
        bound = copy.copy(self)
        bound._bound_to = target
        bound._copy_hooks()  # a hook added to the bound copy stays on it
        return bound

    def bound_parameter(self) -> str | None:
        """The name of the parameter the bound object fills (``self``, ``cls``), or None
        for a flow that is not bound."""
        if self._bound_to is _UNBOUND:
            return None
        return next(iter(self.signature.parameters))

    def with_options(self, **changes: Any) -> Flow[P, R]:
        """A copy of this flow with some options changed (its run config and executor kept)."""
        copy = Flow(self.fn, **{**self._options, **changes})
        copy._isclassmethod, copy._isstaticmethod = self._isclassmethod, self._isstaticmethod
        copy._bound_to = self._bound_to
        if self._executor is not None and "task_runner" not in changes:
            copy.executor = self._executor
        if self._run_config is not None:
            copy.run_config = self._run_config
        return copy

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r}, fn={getattr(self.fn, '__qualname__', self.fn)!r})"

    # -- state hooks (decorators: ``@my_flow.on_failure``; flowbook._hook_methods) ------------
    def on_cancellation(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add ``fn(flow, flow_run, state)`` to the hooks of a run's ``Cancelled`` state."""
        return self._add_hook("on_cancellation", fn)

    def on_crashed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add ``fn(flow, flow_run, state)`` to the hooks of a run's ``Crashed`` state."""
        return self._add_hook("on_crashed", fn)

    # -- calling -------------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the flow now; returns its value (``return_state=True``: its final state)."""
        body = interrupts.enter()
        try:
            return self._call(args, kwargs)  # type: ignore[no-any-return]
        except BaseException as exc:
            # the caller sees its own frames and the user's, not the engine's (IPython and
            # pytest also hide this frame, marked by the local below); failure path only
            __tracebackhide__ = True
            without_internal_frames(exc)
            raise exc
        finally:
            interrupts.leave(body)

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return_state = bool(kwargs.pop("return_state", False))
        if self._bound_to is not _UNBOUND:
            args = (self._bound_to, *args)
        engine = FlowRunEngine(self, args, kwargs)
        if self.is_generator:
            if return_state:
                raise ValueError(
                    f"flow {self.name!r} is a generator flow: calling it returns a generator "
                    "of the values it yields, not a state; call it without return_state=True"
                )
            return engine.run_generator()
        if self.is_async:
            caller = current_task_run.get() or current_flow_run.get()
            if caller is None or is_async_run(caller):
                return self._run_async(engine, return_state)
            return run_coro_sync(lambda: self._run_async(engine, return_state))
        return engine.outcome(engine.run_sync(), return_state)

    def run_background(self, *args: P.args, **kwargs: P.kwargs) -> BackgroundRun[R]:
        """Start a run of this flow on its own thread; returns a handle at once.

        The handle has ``state``, ``result(timeout=None)``, ``wait()``, ``done()`` and
        ``cancel()``. In a notebook the run's widget shows in the calling cell and stays live
        while other cells run.
        """
        from flowbook.background import BackgroundRun

        if self._bound_to is not _UNBOUND:
            args = (self._bound_to, *args)  # type: ignore[assignment]
        return BackgroundRun(FlowRunEngine(self, args, kwargs))

    def resume(self, run: str, return_state: bool = False) -> Any:
        """Run a failed (or crashed, or cancelled) run of this flow again, as a new flow run.

        ``run`` is the old run's id, id prefix or name. The parameters are the old run's; task
        calls that completed in it are not executed again when they are the same task, at
        the same position among that task's calls, with arguments of the same content:
        their stored results are used (a call served from the cache reuses that cache
        entry's value while it is there and unexpired). Everything else runs, as do calls
        whose result was not stored (``persist_result=False``, values that could not be
        pickled or written) and calls whose stored result cannot be read (with a warning).
        """
        import warnings

        from flowbook.states import Completed
        from flowbook.store import StoreError, get_store
        from flowbook.store.queries import load_for_resume, reusable_value
        from flowbook.store.results import ResultError

        store = get_store()
        if store is None:
            raise StoreError("resume needs the run store; it is off (FLOWBOOK_STORE=off)")
        run_id, flow_name, state_type, parameters, done = load_for_resume(store, run)
        if flow_name != self.name:
            raise ValueError(
                f"run {run!r} is a run of flow {flow_name!r}, not of {self.name!r}; call "
                f"resume on the flow {flow_name!r}"
            )
        if state_type == "COMPLETED":
            raise ValueError(
                f"run {run!r} of flow {self.name!r} completed: there is nothing to resume; call "
                "the flow to run it again"
            )
        bound = () if self._bound_to is _UNBOUND else (self._bound_to,)
        engine = FlowRunEngine(self, bound, parameters)
        engine.resumed_from = run_id
        for row in done:
            try:
                found, value = reusable_value(store, row)
            except ResultError as exc:
                warnings.warn(
                    f"the stored result of task run {row.name!r} of flow run {run_id} is "
                    f"unusable ({exc}); that task call runs again",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            if not found:
                continue  # that task call simply runs again
            how = "cached result" if row.state_name == "Cached" else "result"
            engine.reusable[(row.task_key, row.dynamic_key, row.input_hash)] = Completed(
                f"Reused the {how} of flow run {run_id}.", value
            )
        if self.is_async:
            return self._run_async(engine, return_state)
        return engine.outcome(engine.run_sync(), return_state)

    async def _run_async(self, engine: FlowRunEngine, return_state: bool) -> Any:
        try:
            return engine.outcome(await engine.run_async(), return_state)
        except BaseException as exc:
            __tracebackhide__ = True
            without_internal_frames(exc)
            raise exc

    def register(
        self, project_name: str | None = None, labels: Iterable[str] | None = None, **kwargs: Any
    ) -> str:
        """Record this flow in the run store (Prefect 1's ``flow.register``); returns its id."""
        import importlib

        # imported by name: the registry (and SQLAlchemy with it) loads only when used
        registry = importlib.import_module("flowbook.registry")
        flow_id: str = registry.register_flow(
            self, project_name=project_name, labels=labels, **kwargs
        )
        return flow_id

    # -- engine helpers ------------------------------------------------------------------------
    def bind_parameters(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"flow {self.name!r} was called with arguments that do not match its "
                f"parameters {self.signature}: {exc}"
            ) from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def validated_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """``parameters`` checked and coerced against the function's type hints (pydantic);
        ``ParameterTypeError`` names the flow, each bad parameter, its value and type."""
        validator = self._validator
        if validator is _NOT_COMPILED:
            validator = self._validator = compile_validator(self.name, self.fn, self.signature)
        if validator is None:
            return parameters
        validated: dict[str, Any] = validator(parameters)
        return validated

    def call_arguments(self, parameters: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments that pass ``parameters`` to the function."""
        bound = inspect.BoundArguments(self.signature, parameters)
        return bound.args, bound.kwargs

    def run_name(self, run: FlowRun) -> str:
        template = self.flow_run_name
        if template is None:
            from flowbook.names import generate_run_name

            name: str = generate_run_name()
            return name
        return render_run_name("flow", self.name, template, run.parameters)

    def retry_delay_for(self, attempt: int) -> float:
        delays = self.retry_delay_seconds
        if isinstance(delays, list):
            return float(delays[min(attempt, len(delays)) - 1])
        return float(delays)


@overload
def flow(__fn: Callable[P, R], /) -> Flow[P, R]: ...


@overload
def flow(__fn: Callable[P, R], /, **options: Any) -> Flow[P, R]: ...


@overload
def flow(__fn: None = None, /, **options: Any) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(
    __fn: Callable[P, R] | None = None, /, **options: Any
) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
    """Decorate a function as a flow: ``@flow``, ``@flow(name=...)`` or ``flow(fn, ...)``."""
    check_unknown("flow", options)
    if __fn is None:
        validate_options("flow", options)
        return lambda fn: Flow(_function(fn), **options)
    return Flow(_function(__fn), **options)


def _function(fn: Any) -> Any:
    """``fn``, unless it is a name: ``Flow("name")`` is Prefect 1's form, ``@flow`` is not."""
    if isinstance(fn, str):
        raise TypeError(
            f"@flow decorates a function; got {fn!r} of type str (a Prefect 1 flow is written "
            f"'with Flow({fn!r}) as flow:')"
        )
    return fn
