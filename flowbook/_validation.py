"""Flow parameters checked against the flow function's type hints, with pydantic.

A flow call's bound arguments are validated (and coerced: an ISO string becomes a
``datetime``, a dict becomes a pydantic model) before the run starts. The validator is
compiled once per ``Flow`` object, at its first call: one ``TypeAdapter`` per annotated
parameter. A flow with no annotated parameter, or decorated with
``validate_parameters=False``, never builds one and pays nothing per call.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from flowbook.exceptions import ParameterTypeError

__all__ = ["ParameterTypeError", "compile_validator", "has_annotations"]


# What a compiled validator is: bound parameters in, validated parameters out.
Validator = Callable[[dict[str, Any]], dict[str, Any]]

_SKIPPED = (inspect.Parameter.empty, typing.Any, object, "Any", "typing.Any", "object")


def has_annotations(signature: inspect.Signature) -> bool:
    """Whether any parameter carries a type hint worth checking."""
    return any(p.annotation not in _SKIPPED for p in signature.parameters.values())


def _resolve(hint: str, fn: Callable[..., Any]) -> Any:
    """A string hint evaluated as ``typing.get_type_hints`` would; the string if it fails."""
    try:
        # the user's own hint, evaluated where the function was defined (as typing does)
        return eval(hint, getattr(fn, "__globals__", {}))
    except Exception:
        return hint


def _hints(fn: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    """Each parameter's resolved type hint. Hints that cannot be resolved (a forward
    reference to a name that does not exist) are left out: those parameters go unchecked."""
    try:
        resolved = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        resolved = {}
    hints: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        hint = resolved.get(name, param.annotation)
        if isinstance(hint, str) and hint not in _SKIPPED:
            hint = _resolve(hint, fn)  # get_type_hints failed on another parameter
        if isinstance(hint, str) or hint in _SKIPPED:
            continue
        if param.kind is param.VAR_POSITIONAL:
            hint = tuple[hint, ...]  # type: ignore[valid-type]
        elif param.kind is param.VAR_KEYWORD:
            hint = dict[str, hint]  # type: ignore[valid-type]
        hints[name] = hint
    return hints


def compile_validator(
    flow_name: str, fn: Callable[..., Any], signature: inspect.Signature
) -> Validator | None:
    """A function validating a call's bound parameters, or None when nothing is checked."""
    from pydantic import ConfigDict, PydanticUserError, TypeAdapter

    config = ConfigDict(arbitrary_types_allowed=True)
    checks: list[tuple[str, Any, str]] = []
    for name, hint in _hints(fn, signature).items():
        try:
            try:
                adapter = TypeAdapter(hint, config=config)
            except PydanticUserError:  # models and dataclasses carry their own config
                adapter = TypeAdapter(hint)
        except Exception:
            continue  # a hint pydantic cannot check goes unchecked, as an unannotated one
        checks.append((name, adapter, _type_text(hint)))
    if not checks:
        return None
    items = tuple(checks)

    def validate(parameters: dict[str, Any]) -> dict[str, Any]:
        from pydantic import ValidationError

        validated = dict(parameters)
        problems: list[str] = []
        for name, adapter, expected in items:
            if name not in parameters:
                continue
            value = parameters[name]
            try:
                validated[name] = adapter.validate_python(value)
            except ValidationError as exc:
                problems.append(_describe(name, value, expected, exc))
        if problems:
            raise ParameterTypeError(
                f"flow {flow_name!r} was called with parameters that do not match its type "
                f"hints: {'; '.join(problems)} (pass values of those types, or decorate the "
                "flow with validate_parameters=False to skip this check)"
            )
        return validated

    return validate


def _type_text(hint: Any) -> str:
    """The expected type, as the user wrote it (``datetime``, ``list[int]``)."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__qualname__
    return str(hint).replace("typing.", "")


def _describe(name: str, value: Any, expected: str, exc: Any) -> str:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    reasons = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        reasons.append(f"{where}: {error['msg']}" if where else error["msg"])
    return (
        f"parameter {name!r} = {shown} (type {type(value).__name__}) is not a valid "
        f"{expected}: {', '.join(reasons)}"
    )
