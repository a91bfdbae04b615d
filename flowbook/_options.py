"""Validation of ``@flow``/``@task`` options, with pydantic, at decoration time.

pydantic is imported on first use, not by ``import flowbook``. A bad option becomes a
``TypeError`` (wrong type) or ``ValueError`` (right type, bad value) whose message names the
decorator, the option, the value given and what is accepted; an unknown option gets a
"did you mean" suggestion.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import string
from collections.abc import Callable
from typing import Any

from flowbook.exceptions import RunNameError
from flowbook.names import name_problem

__all__ = ["check_template", "render_run_name", "validate_options"]

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

    from flowbook.task_runners.base import TaskRunner

    NonNegInt = Annotated[int, Field(strict=True, ge=0)]
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
        cache_expiration: datetime.timedelta | None = None
        refresh_cache: StrictBool | None = None

    class FlowOptions(_Common):
        flow_run_name: StrictStr | Callable[..., Any] | None = None
        task_runner: TaskRunner | type[TaskRunner] | None = None
        env: dict[StrictStr, StrictStr] | None = None
        project: StrictStr | None = None

    return {"task": TaskOptions, "flow": FlowOptions}


def check_unknown(kind: str, options: dict[str, Any]) -> None:
    """TypeError for an option ``@flow``/``@task`` does not have, with a suggestion."""
    fields = _models()[kind].model_fields
    for name in options:
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
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
    "cache_expiration": "a datetime.timedelta",
    "refresh_cache": "True or False",
    "task_runner": "a task runner such as ConcurrentTaskRunner() or SequentialTaskRunner()",
    "env": "a dict of str to str",
    "project": "a string",
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
