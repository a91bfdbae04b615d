"""``Flow.parameters``: the flow function's parameters as a JSON schema object.

The schema has Prefect's shape (``ParameterSchema``: ``title``, ``type``, ``properties``,
``required``, ``definitions``): one property per parameter, with its title, its type from the
hint, its default, its description from a Google-style ``Args:`` section of the docstring and
its position; pydantic models and other named types go to ``definitions``. It is built with
pydantic when ``Flow.parameters`` is first read, never when a flow is decorated or called, and
building it never fails: a hint pydantic cannot describe gives that parameter an open schema
(any value), as an unannotated one has.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any, Literal

import pydantic
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from flowbook._validation import _hints

__all__ = ["ParameterSchema", "parameter_schema"]


class ParameterSchema(pydantic.BaseModel):
    """A flow's parameters as an OpenAPI-style object schema."""

    title: Literal["Parameters"] = "Parameters"
    type: Literal["object"] = "object"
    properties: dict[str, Any] = pydantic.Field(default_factory=dict)
    required: list[str] = pydantic.Field(default_factory=list)
    definitions: dict[str, Any] = pydantic.Field(default_factory=dict)

    def model_dump_for_openapi(self) -> dict[str, Any]:
        """The schema as a plain dict, without an empty ``required``."""
        dumped = self.model_dump(mode="python", exclude_none=True)
        if not dumped["required"]:
            del dumped["required"]
        return dumped


class _OpenForUnknownTypes(GenerateJsonSchema):
    """A class pydantic checks only with ``isinstance`` (an arbitrary type) has no JSON form:
    its parameter accepts any value in the schema."""

    def is_instance_schema(self, schema: core_schema.IsInstanceSchema) -> JsonSchemaValue:
        return {}


_CONFIG = pydantic.ConfigDict(arbitrary_types_allowed=True)
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params):\s*$")
_ENTRY = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


def _docstring_descriptions(doc: str | None) -> dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section."""
    if not doc:
        return {}
    found: dict[str, str] = {}
    lines = inspect.cleandoc(doc).splitlines()
    inside, indent, current = False, 0, ""
    for line in lines:
        if not inside:
            inside = bool(_SECTION.match(line.strip()))
            indent = 0
            continue
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:  # the next section (Returns:, Raises:) or the end of Args:
            inside = False
            continue
        indent = indent or depth
        entry = _ENTRY.match(line.strip())
        if depth == indent and entry:
            current = entry.group(1).lstrip("*")
            found[current] = entry.group(3).strip()
        elif current:
            found[current] = f"{found[current]} {line.strip()}".strip()
    return found


def _schema(fields: dict[str, Any]) -> dict[str, Any]:
    model = pydantic.create_model("Parameters", __config__=_CONFIG, **fields)
    with warnings.catch_warnings():
        # a default JSON cannot hold is left out of the schema, as pydantic warns
        warnings.simplefilter("ignore")
        schema: dict[str, Any] = model.model_json_schema(
            by_alias=True,
            ref_template="#/definitions/{model}",
            schema_generator=_OpenForUnknownTypes,
        )
    return schema


def parameter_schema(fn: Callable[..., Any], signature: inspect.Signature) -> ParameterSchema:
    """The parameter schema of ``fn`` (``self`` and ``cls`` left out: the bound object fills
    them)."""
    hints = _hints(fn, signature)
    descriptions = _docstring_descriptions(inspect.getdoc(fn))
    fields: dict[str, Any] = {}
    for position, param in enumerate(signature.parameters.values()):
        if param.name in ("self", "cls"):
            continue
        # a name pydantic models use themselves (``schema``, ``copy``) gets a field name of
        # its own; the schema shows the parameter's name
        name = param.name + "__" if hasattr(pydantic.BaseModel, param.name) else param.name
        hint = hints.get(param.name, Any)
        default = param.default
        if param.kind is param.VAR_POSITIONAL:
            default = ()  # *args and **kwargs may be left out
        elif param.kind is param.VAR_KEYWORD:
            default = {}
        description = descriptions.get(param.name)
        extra: dict[str, Any] = {}
        if isinstance(default, FieldInfo):  # ``x: int = Field(description=...)``
            given = default
            default = param.empty if given.is_required() else given.default
            description = given.description or description
            if isinstance(given.json_schema_extra, dict):
                extra.update(given.json_schema_extra)
        extra.setdefault("position", position)
        field = pydantic.Field(
            default=... if default is param.empty else default,
            title=param.name,
            description=description,
            alias=param.name if name != param.name else None,
            json_schema_extra=extra,
        )
        try:
            _schema({name: (hint, field)})
        except Exception:  # pydantic cannot describe this hint: any value
            hint = Any
        fields[name] = (hint, field)
    try:
        schema = _schema(fields)
    except Exception:  # the parameters together fail (rare): open schemas for all of them
        schema = _schema({name: (Any, field) for name, (_, field) in fields.items()})
    return ParameterSchema(
        properties=schema.get("properties", {}),
        required=schema.get("required", []),
        definitions=schema.get("$defs", {}),
    )
