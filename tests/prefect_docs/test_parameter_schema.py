"""Flow.parameters: the parameter schema built from a flow function's signature.

Follows docs/v3/concepts/flows.mdx, "View the parameter schema for a flow" ("retrieve the
actual schema inferred from the flow function's type signature as a BaseModel instance"), and
docs/v3/advanced/form-building.mdx (docstring ``Args:`` descriptions, ``Literal`` and ``Enum``
choices, pydantic models with constraints, ``Field(description=...)``); the object's shape is
Prefect's ``ParameterSchema`` (src/prefect/utilities/callables/__init__.py).
"""

from __future__ import annotations

import enum
import threading
from typing import Any, Literal

import pydantic
import pytest

from flowbook import flow

MailingList = Literal["newsletter", "customers", "beta-testers"]


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class EmailContent(pydantic.BaseModel):
    """The content of the email."""

    subject: str = pydantic.Field(max_length=30)
    attachments: list[str] = pydantic.Field(default_factory=list, max_length=5)


# flows.mdx: the schema is a BaseModel instance; model_json_schema() describes its shape
def test_the_schema_object_has_prefects_shape() -> None:
    @flow
    def schleeb(x: int, y: str, z: bool | None = None) -> None:
        pass

    schema = schleeb.parameters
    assert isinstance(schema, pydantic.BaseModel)
    shape = schema.model_json_schema()
    assert shape["title"] == "ParameterSchema"
    assert set(shape["properties"]) == {"title", "type", "properties", "required", "definitions"}
    assert (schema.title, schema.type) == ("Parameters", "object")
    assert list(schema.properties) == ["x", "y", "z"]
    assert schema.properties["x"] == {"position": 0, "title": "x", "type": "integer"}
    assert schema.properties["y"]["type"] == "string"
    assert schema.properties["z"]["default"] is None
    assert schema.required == ["x", "y"]


# form-building.mdx "Motivation": the docstring's Args: section describes each parameter;
# defaults and optional lists are in the schema
def test_docstring_descriptions_and_defaults() -> None:
    @flow
    def send_marketing_email(
        mailing_lists: list[str],
        subject: str,
        test_mode: bool = False,
        attachments: list[str] | None = None,
    ) -> None:
        """Send a marketing email blast to the given lists.

        Args:
            mailing_lists: A list of lists
                to email.
            subject (str): The subject of the email.
            test_mode: Whether to send a test email.

        Returns:
            Nothing.
        """

    props = send_marketing_email.parameters.properties
    assert props["mailing_lists"]["description"] == "A list of lists to email."
    assert props["mailing_lists"]["items"] == {"type": "string"}
    assert props["subject"]["description"] == "The subject of the email."
    assert props["test_mode"] == {
        "default": False,
        "description": "Whether to send a test email.",
        "position": 2,
        "title": "test_mode",
        "type": "boolean",
    }
    assert "description" not in props["attachments"]
    assert send_marketing_email.parameters.required == ["mailing_lists", "subject"]


# form-building.mdx "Using Literal to restrict valid values" (and the Enum tip), "Using a
# BaseModel subclass to group and constrain parameters": models go to definitions
def test_choices_and_models_with_constraints() -> None:
    @flow
    def send(
        mailing_lists: list[MailingList],
        content: EmailContent,
        colour: Colour = Colour.RED,
        note: str = pydantic.Field("", description="A note for the log"),
    ) -> None:
        pass

    schema = send.parameters
    assert schema.properties["mailing_lists"]["items"]["enum"] == [
        "newsletter",
        "customers",
        "beta-testers",
    ]
    assert schema.properties["content"]["$ref"] == "#/definitions/EmailContent"
    email = schema.definitions["EmailContent"]
    assert email["description"] == "The content of the email."
    assert email["properties"]["subject"]["maxLength"] == 30
    assert email["properties"]["attachments"]["maxItems"] == 5
    assert schema.properties["colour"]["$ref"] == "#/definitions/Colour"
    assert schema.definitions["Colour"]["enum"] == ["red", "blue"]
    assert schema.properties["note"]["description"] == "A note for the log"
    assert schema.properties["note"]["default"] == ""


# how it copes: a hint pydantic cannot describe, a name pydantic models use themselves,
# *args/**kwargs, a default JSON cannot hold, and a method's self
def test_hints_without_a_json_form_accept_any_value() -> None:
    class Opaque:
        pass

    @flow
    def odd(
        thing: Opaque,
        schema: int = 1,
        lock: Any = threading.Lock(),  # noqa: B008 - a default JSON cannot hold, on purpose
        *rest: int,
        **more: str,
    ) -> None:
        pass

    props = odd.parameters.properties
    assert props["thing"] == {"position": 0, "title": "thing"}
    assert props["schema"]["type"] == "integer"  # the parameter's own name, not a field's
    assert "default" not in props["lock"]
    assert props["rest"]["items"] == {"type": "integer"}
    assert props["more"]["additionalProperties"] == {"type": "string"}
    assert odd.parameters.required == ["thing"]
    dumped = odd.parameters.model_dump_for_openapi()
    assert dumped["required"] == ["thing"]


def test_a_method_flow_leaves_out_self() -> None:
    class Pipeline:
        @flow
        def run(self, n: int) -> int:
            return n

    assert list(Pipeline.run.parameters.properties) == ["n"]
    assert list(Pipeline().run.parameters.properties) == ["n"]


def test_no_parameters_no_required_in_the_openapi_form() -> None:
    @flow
    def bare() -> None:
        pass

    assert bare.parameters.properties == {}
    assert "required" not in bare.parameters.model_dump_for_openapi()


# built lazily: decorating and calling a flow never build it; the first read builds it once
def test_built_at_the_first_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowbook import _parameter_schema

    built: list[str] = []
    real = _parameter_schema.parameter_schema

    def counting(fn: Any, signature: Any) -> Any:
        built.append(fn.__name__)
        return real(fn, signature)

    monkeypatch.setattr(_parameter_schema, "parameter_schema", counting)

    @flow
    def lazy(x: int) -> int:
        return x

    assert lazy(1) == 1
    assert lazy.with_options(name="other")(2) == 2
    assert built == []
    first = lazy.parameters
    assert lazy.parameters is first
    assert built == ["lazy"]
