"""Validation of ``@flow``/``@task`` options, with pydantic, at decoration time.

pydantic is imported on first use, not by ``import flowbook``. A bad option becomes a
``TypeError`` (wrong type) or ``ValueError`` (right type, bad value) whose message names the
decorator, the option, the value given and what is accepted; an unknown option gets a
"did you mean" suggestion.
"""

from __future__ import annotations

import datetime
import functools
import string
import warnings
from collections.abc import Callable
from typing import Any

from flowbook.exceptions import RunNameError
from flowbook.names import name_problem

__all__ = ["check_template", "render_run_name", "translate_task_options", "validate_options"]

_TYPE_ERRORS = (
    "_type",
    "is_instance_of",
    "callable_type",
    "is_subclass_of",
    "model_type",
    "dataclass_type",
    "union_tag",
)


@functools.cache
def _models() -> dict[str, Any]:
    from typing import Annotated

    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

    from flowbook.cache_policies import CachePolicy
    from flowbook.task_runners.base import TaskRunner

    NonNegInt = Annotated[int, Field(strict=True, ge=0)]
    PosInt = Annotated[int, Field(strict=True, ge=1)]
    NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
    PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]

    class _Common(BaseModel):
        model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, strict=True)
        name: StrictStr | None = None
        description: StrictStr | None = None
        version: StrictStr | None = None
        tags: list[StrictStr] | None = None
        retries: NonNegInt | None = None
        retry_delay_seconds: NonNegFloat | list[NonNegFloat] | None = None
        timeout_seconds: PosFloat | None = None
        log_prints: StrictBool | None = None
        persist_result: StrictBool | None = None

    class TaskOptions(_Common):
        task_run_name: StrictStr | Callable[..., Any] | None = None
        retry_jitter_factor: NonNegFloat | None = None
        retry_condition_fn: Callable[..., Any] | None = None
        cache_key_fn: Callable[..., Any] | None = None
        cache_policy: CachePolicy | None = None
        cache_expiration: datetime.timedelta | None = None
        refresh_cache: StrictBool | None = None
        trigger: Callable[..., Any] | None = None
        nout: PosInt | None = None
        # state hooks: lists of functions, checked by flowbook.engine.hooks.check_hooks
        on_completion: Any = None
        on_failure: Any = None
        on_running: Any = None

    class FlowOptions(_Common):
        flow_run_name: StrictStr | Callable[..., Any] | None = None
        task_runner: TaskRunner | type[TaskRunner] | None = None
        env: dict[StrictStr, StrictStr] | None = None
        project: StrictStr | None = None
        # state hooks: lists of functions, checked by flowbook.engine.hooks.check_hooks
        on_completion: Any = None
        on_failure: Any = None
        on_cancellation: Any = None
        on_crashed: Any = None
        on_running: Any = None
        validate_parameters: StrictBool | None = None

    return {"task": TaskOptions, "flow": FlowOptions}


def check_unknown(kind: str, options: dict[str, Any]) -> None:
    """TypeError for an option ``@flow``/``@task`` does not have, with a suggestion."""
    fields = _models()[kind].model_fields
    for name in options:
        if name not in fields:
            known = [*fields, *_ACCEPTED_TASK_OPTIONS] if kind == "task" else list(fields)
            import difflib  # a misspelt option only

            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"@{kind}() got an unknown option {name!r}{hint} "
                f"(options: {', '.join(sorted(fields))})"
            )


def validate_options(kind: str, options: dict[str, Any]) -> None:
    """Raise TypeError/ValueError for the first bad option of ``@flow``/``@task``."""
    from pydantic import ValidationError

    check_unknown(kind, options)
    checked = dict(options)
    tags = checked.get("tags")
    if isinstance(tags, (tuple, set, frozenset)):
        checked["tags"] = list(tags)  # any collection of strings will do; one type to check
    try:
        _models()[kind](**checked)
    except ValidationError as exc:
        _raise_for(kind, checked, exc)
    _check_extra_rules(kind, options)


def _raise_for(kind: str, options: dict[str, Any], exc: Any) -> None:
    errors = exc.errors()
    field = str(errors[0]["loc"][0])
    value = options.get(field)
    field_errors = [e for e in errors if e["loc"] and e["loc"][0] == field]
    # An error inside a container (env={"A": 1}, tags=["a", 2]) names the entry at fault.
    for error in field_errors:
        path, element = _locate(value, error["loc"][1:])
        if path and any(t in error["type"] for t in _TYPE_ERRORS):
            raise TypeError(
                f"@{kind}({field}={value!r}): {field}{path} is {element!r} of type "
                f"{type(element).__name__}; {field} must be {_EXPECTED[field]}"
            ) from None
        if path:
            reason = error["msg"]
            raise ValueError(
                f"@{kind}({field}={value!r}): {field}{path} is {element!r}: "
                f"{reason[0].lower() + reason[1:]}; {field} must be {_EXPECTED[field]}"
            ) from None
    is_type = all(any(t in e["type"] for t in _TYPE_ERRORS) for e in field_errors)
    value_msgs = [e["msg"] for e in field_errors if not any(t in e["type"] for t in _TYPE_ERRORS)]
    expected = _EXPECTED.get(field, "see the documentation of @" + kind)
    if is_type:
        raise TypeError(
            f"@{kind}({field}={value!r}): {field} must be {expected}, not {type(value).__name__}"
        ) from None
    reason = value_msgs[0] if value_msgs else field_errors[0]["msg"]
    raise ValueError(
        f"@{kind}({field}={value!r}): {reason[0].lower() + reason[1:]}; {field} must be {expected}"
    ) from None


def _locate(value: Any, loc: tuple[Any, ...]) -> tuple[str, Any]:
    """Follow a pydantic error location into ``value``; skips the names of union members."""
    path, current = "", value
    for part in loc:
        if isinstance(current, dict) and part in current:
            path, current = f"{path}[{part!r}]", current[part]
        elif isinstance(part, int) and isinstance(current, (list, tuple)) and part < len(current):
            path, current = f"{path}[{part}]", current[part]
    return path, current


def _check_extra_rules(kind: str, options: dict[str, Any]) -> None:
    _check_names(kind, options)
    from flowbook.engine.hooks import check_hooks

    for option in ("on_completion", "on_failure", "on_cancellation", "on_crashed", "on_running"):
        if options.get(option) is not None:
            check_hooks(kind, option, options[option])
    delays = options.get("retry_delay_seconds")
    if isinstance(delays, list):
        if not delays:
            raise ValueError(
                f"@{kind}(retry_delay_seconds=[]): give at least one delay, or a single number"
            )
        if len(delays) > 50:
            raise ValueError(
                f"@{kind}(retry_delay_seconds=<list of {len(delays)}>): at most 50 delays "
                "can be given"
            )
    if kind == "task" and options.get("trigger") is not None:
        _check_trigger(options["trigger"])
    expiration = options.get("cache_expiration")
    if isinstance(expiration, datetime.timedelta) and expiration.total_seconds() <= 0:
        raise ValueError(
            f"@{kind}(cache_expiration={expiration!r}): the expiration must be a positive "
            "duration, e.g. timedelta(minutes=1)"
        )


def _check_names(kind: str, options: dict[str, Any]) -> None:
    """Empty names and names with control characters, which no log line or table can show."""
    for option in ("name", f"{kind}_run_name"):
        value = options.get(option)
        if not isinstance(value, str):
            continue
        problem = name_problem(value)
        if problem is None:
            continue
        if option == "name":
            what, fix = "name", "leave name out to use the function's name"
        else:
            what, fix = "run name template", f"leave {option} out for generated run names"
        raise ValueError(
            f"@{kind}({option}={value!r}): the {what} {problem}; give non-empty text on one "
            f"line (no control characters), or {fix}"
        )


_EXPECTED = {
    "name": "a string",
    "description": "a string",
    "version": "a string",
    "tags": "a list of strings",
    "retries": "an int >= 0",
    "retry_delay_seconds": "a number of seconds >= 0, or a list of them (one per retry)",
    "timeout_seconds": "a number of seconds > 0",
    "log_prints": "True or False",
    "persist_result": "True or False",
    "task_run_name": "a format string over the task's parameters, or a function returning one",
    "flow_run_name": "a format string over the flow's parameters, or a function returning one",
    "retry_jitter_factor": "a number >= 0",
    "retry_condition_fn": "a function (task, task_run, state) -> bool",
    "cache_key_fn": "a function (context, parameters) -> key",
    "cache_policy": "a cache policy (flowbook.cache_policies: INPUTS, TASK_SOURCE, ...)",
    "cache_expiration": "a datetime.timedelta",
    "refresh_cache": "True or False",
    "trigger": "a trigger from flowbook.triggers, such as all_successful or any_failed",
    "nout": "an int >= 1 (the number of values the task returns as a tuple)",
    "task_runner": "a task runner such as ConcurrentTaskRunner() or SequentialTaskRunner()",
    "env": "a dict of str to str",
    "project": "a string",
    "validate_parameters": "True or False",
}


def check_template(kind: str, option: str, template: str, params: list[str], varkw: bool) -> None:
    """Check that a run-name template only names parameters of the function."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(
            f"@{kind}({option}={template!r}) is not a valid format string: {exc}"
        ) from None
    for field in fields:
        root = field.split(".", 1)[0].split("[", 1)[0]
        if root == "" or root.isdigit():
            raise ValueError(
                f"@{kind}({option}={template!r}) uses a positional field {{{field}}}; "
                f"name a parameter instead, e.g. {{{params[0] if params else 'name'}}}"
            )
        if root not in params and not varkw:
            raise ValueError(
                f"@{kind}({option}={template!r}) names {{{root}}}, which is not a parameter of "
                f"the function (parameters: {', '.join(params) or 'none'})"
            )


def render_run_name(
    kind: str,
    owner: str,
    template: str | Callable[[], Any],
    parameters: dict[str, Any],
) -> str:
    """The run name ``template`` gives for a call of flow or task ``owner``.

    Whatever goes wrong (the template or function raises, returns something that is not a
    string, or a name that is empty or has control characters) is a ``RunNameError`` naming
    the flow or task, the template or function and the original error. Called for every run
    of a flow or task with a run name option: the messages are built only when needed.
    """
    try:
        value: Any = template.format(**parameters) if isinstance(template, str) else template()
    except Exception as exc:
        if isinstance(template, str):
            arguments = _fields_preview(template, parameters)
            raise RunNameError(
                f"{kind} {owner!r} could not name its run: {_source(kind, template)} raised "
                f"{type(exc).__name__}: {exc} (formatted with {arguments}); change the "
                "template, or pass arguments it can format"
            ) from exc
        raise RunNameError(
            f"{kind} {owner!r} could not name its run: {_source(kind, template)} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(value, str):
        raise RunNameError(
            f"{kind} {owner!r} could not name its run: {_source(kind, template)} returned "
            f"{value!r} of type {type(value).__name__}; it must return a string"
        )
    problem = name_problem(value)
    if problem is not None:
        raise RunNameError(
            f"{kind} {owner!r} could not name its run: {_source(kind, template)} gave the run "
            f"name {value!r}, which {problem}; a run name must be non-empty text on one line"
        )
    return value


def _source(kind: str, template: str | Callable[[], Any]) -> str:
    """How a message names a run name option: ``task_run_name='{x}'`` or its function."""
    if isinstance(template, str):
        return f"{kind}_run_name={template!r}"
    return f"the {kind}_run_name function {getattr(template, '__name__', template)!r}"


def _fields_preview(template: str, parameters: dict[str, Any]) -> str:
    """``x=1, day='mon'``: the arguments the template's fields name, as short previews."""
    from flowbook._preview import preview

    roots: dict[str, None] = {}
    try:
        for _, field, _, _ in string.Formatter().parse(template):
            if field:
                roots[field.split(".", 1)[0].split("[", 1)[0]] = None
    except ValueError:  # checked at decoration; a subclass of str may still misbehave
        pass
    shown = [f"{name}={preview(parameters[name])}" for name in roots if name in parameters]
    return ", ".join(shown) or "no arguments"


# -- Prefect 1 task options -------------------------------------------------------------------

# Prefect 1 ``@task`` options that flowbook honours: each becomes the flowbook option named.
_PREFECT1_TWINS = {
    "max_retries": "retries",
    "retry_delay": "retry_delay_seconds",
    "retry_on": "retry_condition_fn",
    "timeout": "timeout_seconds",
    "log_stdout": "log_prints",
    "cache_for": "cache_expiration",
    "cache_validator": "cache_key_fn",
}
# Prefect 1 ``@task`` options with no meaning here, and why: accepted with a warning, so that
# Prefect 1 code runs as written and nobody believes they take effect.
_PREFECT1_NO_OPS = {
    "slug": "flowbook identifies a task by its module and qualified name",
    "checkpoint": "flowbook keeps every task result in its run store; persist_result=False "
    "turns that off",
    "result": "flowbook keeps results in its run store and has no Result classes",
    "target": "flowbook has no result targets; to reuse a result, use cache_key_fn and "
    "cache_expiration",
    "state_handlers": "flowbook calls no state handlers; read the run's final state "
    "(return_state=True) or flowbook.runs instead",
    "on_failure": "Prefect 1's on_failure is a function (task, state); flowbook's "
    "on_failure is a list of hooks (task, task_run, state)",
    "skip_on_upstream_skip": "flowbook task runs are never skipped",
    "cache_key": "a flowbook cache entry belongs to one task; tasks do not share entries",
}
# Prefect 3 ``@task`` options flowbook accepts and does not honour, and why: accepted with a
# warning naming them, so that Prefect 3 code runs as written.
_PREFECT3_NO_OPS = {
    "result_storage_key": "flowbook keeps each task run's result in its run store under the "
    "run's id, not under a key of yours; to reuse a result, give cache_policy= or "
    "cache_key_fn=",
}
_PREFECT1_TASK_OPTIONS = frozenset(_PREFECT1_TWINS) | frozenset(_PREFECT1_NO_OPS)
_ACCEPTED_TASK_OPTIONS = _PREFECT1_TASK_OPTIONS | frozenset(_PREFECT3_NO_OPS)


def replaced_by(changes: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (already translated) without the flowbook options that Prefect 1 options in
    ``changes`` replace: ``with_options(cache_for=...)`` sets a new ``cache_expiration`` and
    keeps the task's ``cache_key_fn``, so the two are translated together."""
    replaced = {_PREFECT1_TWINS[name] for name in changes if name in _PREFECT1_TWINS}
    return {k: v for k, v in options.items() if k not in replaced}


def translate_task_options(options: dict[str, Any], stacklevel: int = 3) -> dict[str, Any]:
    """``options`` with Prefect 1 ``@task`` options replaced by flowbook's.

    Options flowbook cannot honour (Prefect 1's and Prefect 3's) are dropped with one
    ``UserWarning`` each (``stacklevel``: where the user's call is, counted from this
    function's caller); a Prefect 1 option given with its flowbook twin is a ``TypeError``
    naming both. Without such options, ``options`` itself is returned.
    """
    if _ACCEPTED_TASK_OPTIONS.isdisjoint(options):
        return options
    out = dict(options)
    for name, why in _PREFECT3_NO_OPS.items():
        if name in out and out.pop(name) is not None:
            warnings.warn(
                f"@task({name}=...): the option {name!r} does nothing in flowbook ({why}); "
                "remove it to silence this warning",
                UserWarning,
                stacklevel=stacklevel,
            )
    for old, new in _PREFECT1_TWINS.items():
        if out.get(old) is not None and out.get(new) is not None:
            raise TypeError(
                f"@task() got both {old}={out[old]!r} (Prefect 1) and {new}={out[new]!r}; "
                f"{old} is Prefect 1's name for {new}: give only one of them"
            )
    hooks = out.get("on_failure")
    if callable(hooks):  # Prefect 1's one function (task, state): a hook calling it
        out["on_failure"] = [_Prefect1OnFailure(hooks)]
    for name, why in _PREFECT1_NO_OPS.items():
        if name == "on_failure" and isinstance(out.get(name), (list, tuple)):
            continue  # flowbook's (Prefect 3's) on_failure hooks
        if name in out and out.pop(name) is not None:
            warnings.warn(
                f"@task({name}=...): the Prefect 1 option {name!r} does nothing in flowbook "
                f"({why}); remove it to silence this warning",
                UserWarning,
                stacklevel=stacklevel,
            )
    given = {name: out.pop(name) for name in _PREFECT1_TWINS if name in out}
    given = {name: value for name, value in given.items() if value is not None}
    if "max_retries" in given:
        out["retries"] = _max_retries(given["max_retries"])
    if "retry_delay" in given:
        out["retry_delay_seconds"] = _seconds_of("retry_delay", given["retry_delay"], zero=True)
    if "retry_on" in given:
        out["retry_condition_fn"] = _RetryOn(given["retry_on"])
    if "timeout" in given:
        out["timeout_seconds"] = _timeout(given["timeout"])
    if "log_stdout" in given:
        value = given["log_stdout"]
        if not isinstance(value, bool):
            raise TypeError(f"@task(log_stdout={value!r}): log_stdout must be True or False")
        out["log_prints"] = value
    _translate_cache(given, out, stacklevel + 1)
    return out


def _translate_cache(given: dict[str, Any], out: dict[str, Any], stacklevel: int) -> None:
    """``cache_for`` and ``cache_validator``: an expiration and a key function."""
    from flowbook.engine import cache_validators

    cache_for = given.get("cache_for")
    if cache_for is not None:
        _seconds_of("cache_for", cache_for, zero=False)
        out["cache_expiration"] = cache_for
    if "cache_validator" not in given:
        if cache_for is not None and out.get("cache_key_fn") is None:
            out["cache_key_fn"] = cache_validators.duration_only  # Prefect 1's default
        return
    validator = given["cache_validator"]
    if not cache_validators.is_validator(validator):
        raise TypeError(
            f"@task(cache_validator={validator!r}): flowbook takes the validators of "
            "flowbook.engine.cache_validators (never_use, duration_only, all_inputs, "
            "all_parameters, partial_inputs_only(...), partial_parameters_only(...)); for a "
            "rule of your own, give cache_key_fn=<function (context, parameters) -> key> "
            "instead"
        )
    if validator is cache_validators.never_use:
        out.pop("cache_expiration", None)
        return
    if out.get("cache_expiration") is None:
        warnings.warn(
            f"@task(cache_validator={_name_of(validator)}): cache_validator provided without "
            "specifying cache expiration (cache_for); this task will not be cached. Give "
            "cache_for=timedelta(...) as well",
            UserWarning,
            stacklevel=stacklevel,
        )
        return
    out["cache_key_fn"] = validator


def _max_retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"@task(max_retries={value!r}): max_retries must be an int >= 0, not "
            f"{type(value).__name__}"
        )
    if value < 0:
        raise ValueError(f"@task(max_retries={value!r}): max_retries must be an int >= 0")
    return value


def _seconds_of(option: str, value: Any, *, zero: bool) -> float:
    """The seconds of a Prefect 1 ``timedelta`` option, checked."""
    if not isinstance(value, datetime.timedelta):
        raise TypeError(
            f"@task({option}={value!r}): {option} must be a datetime.timedelta, e.g. "
            f"{option}=timedelta(seconds=10), not {type(value).__name__}"
        )
    seconds = value.total_seconds()
    if seconds < 0 or (seconds == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"@task({option}={value!r}): {option} must be a duration {bound}")
    return seconds


def _timeout(value: Any) -> float:
    """Prefect 1's ``timeout``: whole seconds (an int) or a ``timedelta``."""
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"@task(timeout={value!r}): timeout must be a number of seconds or a "
            f"datetime.timedelta, not {type(value).__name__}"
        )
    if not seconds > 0:
        raise ValueError(f"@task(timeout={value!r}): timeout must be more than 0 seconds")
    return seconds


class _Prefect1OnFailure:
    """Prefect 1's ``on_failure`` function ``(task, state)`` as a state hook."""

    __slots__ = ("__name__", "fn")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = _name_of(fn)

    def __call__(self, task: Any, task_run: Any, state: Any) -> Any:
        return self.fn(task, state)


class _RetryOn:
    """Prefect 1's ``retry_on``: retry only after exceptions of these types."""

    __slots__ = ("types",)

    def __init__(self, retry_on: Any) -> None:
        types = (
            tuple(retry_on) if isinstance(retry_on, (list, tuple, set, frozenset)) else (retry_on,)
        )
        for kind in types:
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                raise TypeError(
                    f"@task(retry_on={retry_on!r}): {kind!r} is not an exception class; "
                    "retry_on takes an exception class or a list of them, e.g. "
                    "retry_on=[ConnectionError, TimeoutError]"
                )
        self.types = types

    def __call__(self, task: Any, task_run: Any, state: Any) -> bool:
        return isinstance(state.data, self.types)

    def __repr__(self) -> str:
        return f"retry_on({', '.join(t.__name__ for t in self.types)})"


def _name_of(fn: Any) -> str:
    return str(getattr(fn, "__name__", fn))


def _check_trigger(trigger: Any) -> None:
    from flowbook import triggers

    if trigger is triggers.manual_only:
        raise ValueError(f"@task(trigger=manual_only): {triggers.MANUAL_ONLY_REFUSED}")
    if trigger is triggers.some_failed or trigger is triggers.some_successful:
        name = trigger.__name__
        raise TypeError(
            f"@task(trigger={name}): {name} makes a trigger from its bounds; call it, e.g. "
            f"trigger={name}(at_least=1)"
        )
