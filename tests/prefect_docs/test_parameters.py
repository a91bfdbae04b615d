"""Flow parameters, as Prefect 3's docs describe them: type hints validate and coerce the
values a flow is called with (pydantic), ``validate_parameters=False`` turns that off, and
flows on instance methods, classmethods and staticmethods bind like methods."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pydantic
import pytest

import flowbook
import flowbook.runs
from flowbook import flow
from flowbook._validation import ParameterTypeError


class Point(pydantic.BaseModel):
    x: int
    y: int = 0


# docs/v3/concepts/flows.mdx "Specify flow parameters": "Prefect automatically performs type
# conversion of inputs using any provided type hints."
def test_an_iso_string_becomes_a_datetime() -> None:
    @flow
    def when(at: datetime.datetime) -> datetime.datetime:
        return at

    value = when("2024-03-05T06:07:08")
    assert value == datetime.datetime(2024, 3, 5, 6, 7, 8)


# docs/v3/concepts/flows.mdx: type conversion of inputs (a numeric string for an int)
def test_a_numeric_string_becomes_an_int() -> None:
    @flow
    def double(n: int) -> int:
        return n * 2

    assert double("21") == 42


# docs/v3/concepts/flows.mdx: "Prefect supports any Pydantic model as a type hint for a flow
# parameter." A dict becomes the model.
def test_a_dict_becomes_a_pydantic_model() -> None:
    @flow
    def norm(p: Point) -> Point:
        return p

    value = norm({"x": "3"})
    assert isinstance(value, Point)
    assert (value.x, value.y) == (3, 0)


# docs/v3/concepts/flows.mdx: the coerced values are the flow run's parameters
def test_the_run_records_the_coerced_parameters() -> None:
    from flowbook.runtime import flow_run

    seen: dict[str, Any] = {}

    @flow
    def recorded(n: int) -> None:
        seen.update(flow_run.parameters)

    recorded("7")
    assert seen == {"n": 7}


# docs/v3/concepts/flows.mdx: type hints "enforce typing on your flow parameters"
def test_a_value_that_does_not_fit_is_an_error_naming_flow_parameter_value_and_type() -> None:
    ran: list[str] = []

    @flow
    def greet(name: str) -> str:
        ran.append(name)
        return name

    with pytest.raises(ParameterTypeError) as info:
        greet(1)  # type: ignore[arg-type]
    message = str(info.value)
    assert "flow 'greet'" in message
    assert "parameter 'name' = 1 (type int) is not a valid str" in message
    assert "validate_parameters=False" in message
    assert isinstance(info.value, TypeError)
    assert ran == []  # the body never ran


# the failed validation is a flow run that failed before its body (as in Prefect)
def test_a_failed_validation_is_a_failed_run() -> None:
    @flow
    def typed(n: int) -> int:
        return n

    state = typed("many", return_state=True)  # type: ignore[arg-type]
    assert state.is_failed()
    assert state.message.startswith("Validation of flow parameters failed with error: ")
    assert "parameter 'n' = 'many' (type str) is not a valid int" in state.message
    stored = flowbook.runs.get(state.run_id)
    assert (stored.state, stored.parameters) == ("Failed", {"n": "'many'"})


# every parameter at fault is named, with where in a model it went wrong
def test_every_bad_parameter_is_named() -> None:
    @flow
    def two(p: Point, when: datetime.datetime) -> None:
        pass

    with pytest.raises(ParameterTypeError) as info:
        two({"x": "no"}, "not a date")  # type: ignore[arg-type]
    message = str(info.value)
    assert "parameter 'p' = {'x': 'no'} (type dict) is not a valid Point: x:" in message
    assert "parameter 'when' = 'not a date' (type str) is not a valid datetime" in message


# docs/v3/how-to-guides/workflows/write-and-run.mdx (flow settings table): validate_parameters,
# "whether parameters passed to flows are validated by Pydantic. Default is True."
def test_validate_parameters_false_passes_values_as_given() -> None:
    @flow(validate_parameters=False)
    def loose(n: int) -> Any:
        return n

    assert loose("not an int") == "not an int"  # type: ignore[arg-type]
    assert loose.with_options(validate_parameters=True)("5") == 5  # type: ignore[arg-type]


def test_validate_parameters_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="validate_parameters"):

        @flow(validate_parameters="yes")  # type: ignore[call-overload]
        def f() -> None:
            pass


# flows without hints, and hints of Any, are left alone (and cost nothing)
def test_unannotated_parameters_are_not_validated() -> None:
    @flow
    def anything(a, b: Any = None):  # type: ignore[no-untyped-def]
        return a, b

    marker = object()
    assert anything(marker, "x") == (marker, "x")
    assert anything._validator is None  # nothing to check: no validator, ever


# compiled once per flow definition, not per call
def test_the_validator_is_compiled_once() -> None:
    @flow
    def typed(n: int) -> int:
        return n

    typed(1)
    compiled = typed._validator
    assert callable(compiled)
    typed(2)
    assert typed._validator is compiled


# a hint pydantic cannot check (a forward reference to nothing) leaves that parameter unchecked
def test_an_unresolvable_hint_is_not_checked() -> None:
    @flow
    def forward(x: NoSuchType, n: int) -> Any:  # type: ignore[name-defined]  # noqa: F821
        return x, n

    assert forward("anything", "3") == ("anything", 3)


# validation happens before the run: the run name is formatted with the coerced values
def test_run_names_use_the_coerced_values() -> None:
    @flow(flow_run_name="double-{n}")
    def named(n: int) -> str:
        from flowbook.runtime import flow_run

        return str(flow_run.name)

    assert named("04") == "double-4"


# docs/v3/how-to-guides/workflows/write-and-run.mdx: "You can create a workflow from a method
# on a class": instance methods, classmethods and staticmethods
class Greeter:
    greeting = "hello"

    def __init__(self, name: str) -> None:
        self.name = name

    @flow
    def instance_flow(self, times: int) -> str:
        return " ".join([f"{self.greeting} {self.name}"] * times)

    @flow
    @classmethod
    def class_flow(cls, who: str) -> str:
        return f"{cls.greeting} {who} from {cls.__name__}"

    @flow
    @staticmethod
    def static_flow(who: str) -> str:
        return f"static {who}"


def test_a_flow_on_an_instance_method_binds_self() -> None:
    assert Greeter("ada").instance_flow(2) == "hello ada hello ada"
    # the parameters are validated past ``self``
    assert Greeter("bob").instance_flow("1") == "hello bob"  # type: ignore[arg-type]


def test_a_flow_on_a_classmethod_binds_the_class() -> None:
    class Loud(Greeter):
        greeting = "HEY"

    assert Greeter.class_flow("x") == "hello x from Greeter"
    assert Loud.class_flow("y") == "HEY y from Loud"
    assert Greeter("z").class_flow("w") == "hello w from Greeter"


def test_a_flow_on_a_staticmethod_takes_no_self() -> None:
    assert Greeter.static_flow("a") == "static a"
    assert Greeter("n").static_flow("b") == "static b"


def test_a_method_flow_is_a_flow_run_named_after_the_function() -> None:
    state = Greeter("c").instance_flow(1, return_state=True)
    assert state.is_completed()
    assert flowbook.runs.get(state.run_id).flow_name == "instance-flow"


def test_the_flow_on_the_class_is_the_flow_itself() -> None:
    assert isinstance(Greeter.__dict__["instance_flow"], flowbook.Flow)
    assert Greeter.instance_flow is Greeter.__dict__["instance_flow"]


# a wrong call of a method flow names the flow, as for any flow
def test_a_method_flow_called_with_too_many_arguments() -> None:
    with pytest.raises(TypeError, match="flow 'instance-flow' was called with arguments"):
        Greeter("d").instance_flow(1, 2)  # type: ignore[call-arg]


# the validation of a flow with hints costs microseconds a call
def test_validation_is_cheap() -> None:
    @flow
    def typed(n: int, s: str, when: datetime.datetime) -> None:
        pass

    when = datetime.datetime(2024, 1, 1)
    typed(1, "a", when)
    validate = typed.validated_parameters
    started = time.perf_counter()
    for _ in range(1000):
        validate({"n": 1, "s": "a", "when": when})
    assert time.perf_counter() - started < 0.1


# Prefect leaves the bound object out of a method flow's parameters: it is passed to the
# body, not recorded (nor pickled, previewed or hashed)
def test_a_method_flow_does_not_record_the_bound_object() -> None:
    from flowbook.runtime import flow_run

    seen: dict[str, Any] = {}

    class Counter:
        @flow
        def count(self, n: int) -> int:
            seen.update(flow_run.parameters)
            return n

        @flow
        @classmethod
        def count_cls(cls, n: int) -> int:
            seen.update(flow_run.parameters)
            return n

    state = Counter().count("3", return_state=True)  # type: ignore[arg-type]
    assert state.result() == 3
    assert seen == {"n": 3}
    assert set(flowbook.runs.get(state.run_id).parameters) == {"n"}
    seen.clear()
    assert Counter.count_cls(4) == 4
    assert seen == {"n": 4}


def test_a_hook_added_to_a_bound_method_flow_stays_on_it() -> None:
    class Owner:
        @flow
        def work(self) -> None:
            pass

    bound = Owner().work
    bound.on_completion(lambda f, r, s: None)
    bound.with_options(name="other")
    assert Owner.__dict__["work"].on_completion_hooks == []
    assert "on_completion" not in Owner.__dict__["work"]._options
