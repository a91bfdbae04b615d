"""Bad input gets a clear error that names the value and what to do.

Every public entry point is given a wrong value here; each test asserts the exception class and
the parts of the message that name the value, the option and the fix.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

import flowbook
from flowbook import flow, task, unmapped
from flowbook.caching.keys import CacheKeyWarning
from flowbook.exceptions import MissingContextError, RunNameError
from flowbook.runtime import flow_run, task_run
from flowbook.settings import get_settings, reload_settings
from flowbook.states import Completed, State, StateType
from flowbook.task_runners import ConcurrentTaskRunner
from flowbook.tasks import task_input_hash


def add(a: int, b: int) -> int:
    return a + b


def no_params() -> None:
    pass


# -- @task / @flow options -------------------------------------------------------------------


def test_negative_retries_is_a_value_error_naming_the_value() -> None:
    with pytest.raises(ValueError, match=re.escape("@task(retries=-1): ")) as info:
        task(retries=-1)
    assert str(info.value) == (
        "@task(retries=-1): input should be greater than or equal to 0; retries must be an int >= 0"
    )


def test_negative_retries_in_the_function_form() -> None:
    with pytest.raises(ValueError, match=re.escape("@task(retries=-1)")):
        task(add, retries=-1)
    with pytest.raises(ValueError, match=re.escape("@flow(retries=-1)")):
        flow(add, retries=-1)


def test_negative_retries_on_a_flow_with_options() -> None:
    with pytest.raises(ValueError, match=re.escape("@flow(retries=-1): ")):
        flow(retries=-1)


def test_string_retries_is_a_type_error() -> None:
    with pytest.raises(
        TypeError, match=re.escape("@task(retries='3'): retries must be an int >= 0, not str")
    ):
        task(retries="3")


def test_bool_retries_is_rejected_as_not_an_int() -> None:
    with pytest.raises(
        TypeError, match=re.escape("@task(retries=True): retries must be an int >= 0, not bool")
    ):
        task(retries=True)


def test_float_retries_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=re.escape("@flow(retries=1.5): retries must be an int")):
        flow(retries=1.5)


def test_misspelt_option_suggests_the_right_one() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape("@flow() got an unknown option 'retires'; did you mean 'retries'?"),
    ) as info:
        flow(retires=2)
    assert "(options: description, env, flow_run_name, log_prints, name," in str(info.value)


def test_misspelt_task_option_suggests_the_right_one() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "@task() got an unknown option 'timeout_second'; did you mean 'timeout_seconds'?"
        ),
    ):
        task(timeout_second=3)


def test_misspelt_option_in_the_function_form_of_flow() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape("@flow() got an unknown option 'retires'; did you mean 'retries'?"),
    ):
        flow(add, retires=2)


def test_misspelt_option_in_the_function_form_of_task() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape("@task() got an unknown option 'retires'; did you mean 'retries'?"),
    ):
        task(add, retires=2)


def test_zero_timeout_is_rejected() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "@task(timeout_seconds=0): input should be greater than 0; "
            "timeout_seconds must be a number of seconds > 0"
        ),
    ):
        task(timeout_seconds=0)


def test_nan_timeout_is_rejected() -> None:
    with pytest.raises(ValueError, match=re.escape("@flow(timeout_seconds=nan): ")):
        flow(timeout_seconds=float("nan"))


def test_empty_list_of_retry_delays() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "@task(retry_delay_seconds=[]): give at least one delay, or a single number"
        ),
    ):
        task(retry_delay_seconds=[])


def test_more_than_fifty_retry_delays() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("@task(retry_delay_seconds=<list of 51>): at most 50 delays can be given"),
    ):
        task(retry_delay_seconds=[1] * 51)
    assert task(retry_delay_seconds=[1] * 50)(add).retry_delay_seconds == [1] * 50


def test_negative_retry_delay_inside_a_list() -> None:
    with pytest.raises(ValueError, match=re.escape("@task(retry_delay_seconds=[1, -1]): ")):
        task(retry_delay_seconds=[1, -1])


def test_negative_cache_expiration() -> None:
    expiration = timedelta(seconds=-1)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"@task(cache_expiration={expiration!r}): the expiration must be a positive "
            "duration, e.g. timedelta(minutes=1)"
        ),
    ):
        task(cache_expiration=expiration)


def test_cache_expiration_as_a_number() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "@task(cache_expiration=60): cache_expiration must be a datetime.timedelta, not int"
        ),
    ):
        task(cache_expiration=60)


def test_cache_key_fn_that_is_not_callable() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "@task(cache_key_fn='x'): cache_key_fn must be a function (context, parameters) "
            "-> key, not str"
        ),
    ):
        task(cache_key_fn="x")


def test_task_runner_given_as_a_string() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "@flow(task_runner='threads'): task_runner must be a task runner such as "
            "ConcurrentTaskRunner() or SequentialTaskRunner(), not str"
        ),
    ):
        flow(task_runner="threads")


def test_env_with_a_non_string_value() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "@flow(env={'A': 1}): env['A'] is 1 of type int; env must be a dict of str to str"
        ),
    ) as info:
        flow(env={"A": 1})
    message = str(info.value)
    # the value at fault is the int 1, not the dict: "not dict" would contradict "a dict"
    assert "not dict" not in message
    assert "int" in message


def test_env_given_as_a_list() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape("@flow(env=['A']): env must be a dict of str to str, not list"),
    ):
        flow(env=["A"])


def test_tags_given_as_a_single_string() -> None:
    # a string is iterable, but tags="abc" would become the tags a, b, c: it is refused
    with pytest.raises(
        TypeError, match=re.escape("@task(tags='abc'): tags must be a list of strings, not str")
    ):
        task(tags="abc")


def test_flow_run_name_naming_a_missing_parameter() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "@flow(flow_run_name='{nope}') names {nope}, which is not a parameter of the "
            "function (parameters: a, b)"
        ),
    ):
        flow(flow_run_name="{nope}")(add)


def test_flow_run_name_on_a_function_without_parameters() -> None:
    with pytest.raises(ValueError, match=re.escape("(parameters: none)")):
        flow(no_params, flow_run_name="run-{day}")


def test_task_run_name_with_a_positional_field() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "@task(task_run_name='{0}') uses a positional field {0}; name a parameter instead, "
            "e.g. {a}"
        ),
    ):
        task(task_run_name="{0}")(add)


def test_task_run_name_with_an_empty_field() -> None:
    with pytest.raises(ValueError, match=re.escape("uses a positional field {}")):
        task(add, task_run_name="{}-run")


def test_task_run_name_that_is_not_a_format_string() -> None:
    with pytest.raises(
        ValueError, match=re.escape("@task(task_run_name='{a') is not a valid format string: ")
    ):
        task(add, task_run_name="{a")


def test_decorators_reject_a_non_function() -> None:
    with pytest.raises(TypeError, match=re.escape("@task decorates a function; got 3 of type int")):
        task(3)  # type: ignore[call-overload]
    with pytest.raises(
        TypeError, match=re.escape("@flow decorates a function; got 'x' of type str")
    ):
        flow("x")  # type: ignore[call-overload]


def test_bare_and_configured_decorators_accept_good_options() -> None:
    bare_task = task(add)
    configured = task(retries=2, tags=["a"], timeout_seconds=5)(add)
    bare_flow = flow(add)
    assert (bare_task.retries, configured.retries, configured.tags) == (0, 2, ("a",))
    assert configured.timeout_seconds == 5.0
    assert bare_flow(2, 3) == 5


def test_with_options_validates_the_new_options() -> None:
    base = task(add)
    with pytest.raises(ValueError, match=re.escape("@task(retries=-2): ")):
        base.with_options(retries=-2)


# -- run names -------------------------------------------------------------------------------


def _number_name() -> Any:
    return 42


def test_flow_run_name_function_returning_a_number() -> None:
    ran = []

    @flow(flow_run_name=_number_name)
    def named() -> None:
        ran.append(1)

    with pytest.raises(RunNameError) as info:
        named()
    assert str(info.value) == (
        "flow 'named' could not name its run: the flow_run_name function '_number_name' "
        "returned 42 of type int; it must return a string"
    )
    assert ran == []


def test_task_run_name_function_returning_a_number() -> None:
    @task(task_run_name=_number_name)
    def named() -> int:
        return 1

    @flow
    def outer() -> int:
        return named()

    with pytest.raises(RunNameError) as info:
        outer()
    assert str(info.value) == (
        "task 'named' could not name its run: the task_run_name function '_number_name' "
        "returned 42 of type int; it must return a string"
    )


# -- calling ---------------------------------------------------------------------------------


def test_calling_a_flow_with_a_missing_argument() -> None:
    adder = flow(add)
    with pytest.raises(
        TypeError,
        match=re.escape("flow 'add' was called with arguments that do not match its parameters ("),
    ) as info:
        adder(1)  # type: ignore[call-arg]
    assert str(info.value).endswith(": missing a required argument: 'b'")


def test_calling_a_flow_with_an_unknown_keyword() -> None:
    adder = flow(add, name="adder")
    with pytest.raises(
        TypeError,
        match=re.escape("flow 'adder' was called with arguments that do not match its parameters"),
    ) as info:
        adder(1, 2, c=3)  # type: ignore[call-arg]
    assert str(info.value).endswith(": got an unexpected keyword argument 'c'")


def test_calling_a_task_with_a_missing_argument_names_the_task_and_is_not_retried(
    events: Any,
) -> None:
    @task(retries=2)
    def pair(a: int, b: int) -> int:
        return a + b

    @flow
    def calling() -> int:
        return pair(1)  # type: ignore[call-arg]

    with pytest.raises(TypeError, match=re.escape("task 'pair'")) as info:
        calling()
    assert "'b'" in str(info.value)
    # a call that does not match the signature is not a transient failure
    assert "AwaitingRetry" not in events.states("pair-0")


def test_calling_a_task_with_a_run_name_template_and_a_missing_argument() -> None:
    @task(task_run_name="pair-{a}")
    def pair(a: int, b: int) -> int:
        return a + b

    @flow
    def calling() -> int:
        return pair.submit(1).result()

    with pytest.raises(TypeError, match=re.escape("task 'pair'")) as info:
        calling()
    assert str(info.value).endswith("missing a required argument: 'b'")


# -- task runners ----------------------------------------------------------------------------


def test_concurrent_runner_with_zero_workers() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "ConcurrentTaskRunner(max_workers=0): max_workers must be a positive integer, "
            "or None for the default ("
        ),
    ):
        ConcurrentTaskRunner(max_workers=0)


def test_concurrent_runner_with_a_string_worker_count() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "ConcurrentTaskRunner(max_workers='2'): max_workers must be an int, not str"
        ),
    ):
        ConcurrentTaskRunner(max_workers="2")  # type: ignore[arg-type]


def test_concurrent_runner_with_a_bool_worker_count() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "ConcurrentTaskRunner(max_workers=True): max_workers must be an int, not bool"
        ),
    ):
        ConcurrentTaskRunner(max_workers=True)


# -- map -------------------------------------------------------------------------------------


def test_map_over_iterables_of_different_lengths() -> None:
    ran = []

    @task
    def pair(a: int, b: int) -> int:
        ran.append((a, b))
        return a + b

    @flow
    def mapping() -> list[int]:
        return pair.map([1, 2, 3], b=(10, 20)).result()

    with pytest.raises(
        ValueError,
        match=re.escape(
            "pair.map() got iterables of different lengths (a has 3, b has 2); map over "
            "iterables of one length, or wrap the ones meant whole in unmapped(...)"
        ),
    ):
        mapping()
    assert ran == []


def test_map_without_an_iterable_argument() -> None:
    @task
    def pair(a: int, b: str) -> str:
        return f"{a}{b}"

    @flow
    def mapping() -> list[str]:
        return pair.map(1, "xyz").result()

    with pytest.raises(
        ValueError,
        match=re.escape(
            "pair.map() needs at least one iterable argument to map over; all arguments given "
            "are static (unmapped, strings, mappings or non-iterables)"
        ),
    ):
        mapping()


def test_unmapped_keeps_an_argument_whole() -> None:
    received = []

    @task
    def measure(a: int, b: list[int]) -> tuple[int, int]:
        received.append(b)
        return a, len(b)

    @flow
    def mapping() -> list[tuple[int, int]]:
        return measure.map([1, 2], unmapped([10, 20, 30])).result()

    assert mapping() == [(1, 3), (2, 3)]
    assert received == [[10, 20, 30], [10, 20, 30]]


# -- futures ---------------------------------------------------------------------------------


def test_wait_for_ignores_values_that_are_not_futures() -> None:
    """As in Prefect 3: only the futures in ``wait_for=`` are waited for."""
    ran = []

    @task
    def work() -> int:
        ran.append(1)
        return 1

    @flow
    def waiting() -> int:
        return work.submit(wait_for=[42, "x", None]).result()

    assert waiting() == 1
    assert ran == [1]


def test_wait_with_a_non_future() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "wait() takes futures returned by Task.submit() or Task.map(); got 1 of type int"
        ),
    ):
        flowbook.wait([1])  # type: ignore[list-item]


def test_as_completed_with_a_non_future() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "as_completed() takes futures returned by Task.submit() or Task.map(); "
            "got 'x' of type str"
        ),
    ):
        list(flowbook.as_completed(["x"]))  # type: ignore[list-item]


def test_future_result_timeout_names_the_task_run() -> None:
    release = threading.Event()

    @task
    def sleepy() -> str:
        release.wait(1)
        return "woke"

    @flow
    def waiting() -> tuple[BaseException, str]:
        future = sleepy.submit()
        try:
            future.result(timeout=0.05)
        except TimeoutError as exc:
            caught: BaseException = exc
        release.set()
        return caught, future.result()

    started = time.monotonic()
    caught, value = waiting()
    assert time.monotonic() - started < 0.8
    assert value == "woke"
    assert type(caught) is TimeoutError
    assert str(caught) == "task run 'sleepy-0' did not finish within 0.05 s (state: Running())"


# -- context, settings -----------------------------------------------------------------------


def test_get_run_logger_outside_a_run() -> None:
    with pytest.raises(
        MissingContextError,
        match=re.escape(
            "get_run_logger() was called outside a flow or task run; call it inside a function "
            "decorated with @flow or @task"
        ),
    ):
        flowbook.get_run_logger()


def test_bad_logging_level_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWBOOK_LOGGING_LEVEL", "LOUD")
    try:
        with pytest.raises(
            ValueError,
            match=re.escape(
                "environment variable FLOWBOOK_LOGGING_LEVEL='LOUD' is not valid; use one of "
                "DEBUG, INFO, WARNING, ERROR, CRITICAL"
            ),
        ):
            reload_settings()
    finally:
        monkeypatch.delenv("FLOWBOOK_LOGGING_LEVEL")
        reload_settings()
    assert get_settings().logging_level == "INFO"


def test_bad_console_setting_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "maybe")
    try:
        with pytest.raises(
            ValueError,
            match=re.escape(
                "environment variable FLOWBOOK_CONSOLE='maybe' is not valid; use one of "
                "auto, on, off"
            ),
        ):
            reload_settings()
    finally:
        monkeypatch.setenv("FLOWBOOK_CONSOLE", "on")
        reload_settings()


# -- states ----------------------------------------------------------------------------------


def test_states_are_immutable() -> None:
    state = Completed(data=1)
    with pytest.raises(AttributeError, match=re.escape("State is immutable; cannot set 'data'")):
        state.data = 2  # type: ignore[misc]
    with pytest.raises(
        AttributeError, match=re.escape("State is immutable; cannot delete 'message'")
    ):
        del state.message
    assert state.data == 1


def test_state_with_a_plain_string_type() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "State type must be a StateType, got 'COMPLETED'; use e.g. StateType.COMPLETED"
        ),
    ):
        State("COMPLETED")  # type: ignore[arg-type]
    assert State(StateType.COMPLETED).name == "Completed"


# -- runtime ---------------------------------------------------------------------------------


def test_unknown_flow_run_attribute_lists_the_available_names() -> None:
    with pytest.raises(
        AttributeError,
        match=re.escape(
            "flowbook.runtime.flow_run has no attribute 'nope'; available: api_url, flow_name, "
            "flow_version, id, job_variables, name, parameters, parent_deployment_id, "
            "parent_flow_run_id, project, root_flow_run_id, run_count, scheduled_start_time, "
            "start_time, tags, ui_url, version"
        ),
    ):
        _ = flow_run.nope


def test_unknown_task_run_attribute_lists_the_available_names() -> None:
    with pytest.raises(
        AttributeError,
        match=re.escape(
            "flowbook.runtime.task_run has no attribute 'nope'; available: api_url, id, name, "
            "parameters, run_count, tags, task_name, ui_url"
        ),
    ):
        _ = task_run.nope


# -- caching ---------------------------------------------------------------------------------


def test_unhashable_cache_input_warns_and_runs_uncached() -> None:
    calls = []

    @task(cache_key_fn=task_input_hash)
    def total(values: Any) -> int:
        calls.append(1)
        return sum(values)

    @flow
    def summing() -> int:
        return total(v for v in range(4))

    expected = (
        "task 'total': argument 'values' cannot be hashed by content (cannot hash value of "
        "type 'generator': generators have no stable content; pass a list or tuple of the "
        "values instead); this call runs without the cache"
    )
    with pytest.warns(CacheKeyWarning, match=re.escape(expected)):
        assert summing() == 6
    assert calls == [1]
    with pytest.warns(CacheKeyWarning, match=re.escape("argument 'values'")):
        assert summing() == 6
    assert calls == [1, 1]
