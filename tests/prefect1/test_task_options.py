"""Prefect 1 ``@task`` options and triggers, in the ``@flow`` style.

Each mapped option is observed doing its job (retries counted, a timeout hit, a cache hit
and miss); options flowbook cannot honour warn, naming themselves; a Prefect 1 option given
with its flowbook twin is an error naming both.
"""

from __future__ import annotations

import re
import time
import warnings
from datetime import timedelta
from typing import Any

import pytest

from flowbook import flow, task, triggers
from flowbook.engine import cache_validators
from flowbook.states import State
from flowbook.triggers import TriggerFailedError

# -- mapped options --------------------------------------------------------------------------


def test_max_retries_and_retry_delay_retry_the_task() -> None:
    calls: list[int] = []

    @task(max_retries=2, retry_delay=timedelta(0))
    def flaky() -> None:
        calls.append(1)
        raise ValueError("boom")

    assert (flaky.retries, flaky.retry_delay_seconds) == (2, 0.0)
    state = flaky(return_state=True)
    assert state.is_failed()
    assert len(calls) == 3  # the first attempt and two retries


def test_retry_delay_is_waited_for() -> None:
    times: list[float] = []

    @task(max_retries=1, retry_delay=timedelta(milliseconds=300))
    def flaky() -> int:
        times.append(time.monotonic())
        if len(times) == 1:
            raise ValueError("once")
        return 7

    assert flaky() == 7
    assert times[1] - times[0] >= 0.3


def test_retry_on_retries_only_the_given_exceptions() -> None:
    calls: list[str] = []

    @task(max_retries=3, retry_delay=timedelta(0), retry_on=ConnectionError)
    def fetch(kind: str) -> None:
        calls.append(kind)
        raise ConnectionError() if kind == "net" else KeyError(kind)

    assert fetch("net", return_state=True).is_failed()
    assert fetch("key", return_state=True).is_failed()
    assert calls == ["net"] * 4 + ["key"]


def test_timeout_times_out() -> None:
    @task(timeout=1)
    def slow() -> None:
        time.sleep(5)

    assert slow.timeout_seconds == 1.0
    started = time.monotonic()
    state = slow(return_state=True)
    assert state.is_failed()
    assert state.name == "TimedOut"
    assert time.monotonic() - started < 3


def test_log_stdout_is_log_prints_and_name_tags_nout_are_kept() -> None:
    @task(log_stdout=True, name="hello", tags=["a"], nout=2)
    def pair() -> tuple[int, int]:
        return 1, 2

    assert (pair.log_prints, pair.name, pair.tags, pair.nout) == (True, "hello", ("a",), 2)
    assert task(lambda: 1).nout is None


def test_prefect1_options_in_with_options_and_in_the_class() -> None:
    from flowbook import Task

    def body() -> int:
        return 1

    direct = Task(body, max_retries=3, timeout=timedelta(seconds=2))
    assert (direct.retries, direct.timeout_seconds) == (3, 2.0)
    copy = direct.with_options(max_retries=1)
    assert (copy.retries, copy.timeout_seconds) == (1, 2.0)


def test_a_prefect1_run_name_function_gets_the_arguments() -> None:
    from flowbook.engine.runs import TaskRun, current_flow_run

    @task(task_run_name=lambda **kwargs: f"square-{kwargs['x']}-of-{kwargs['n']}")
    def square(x: int) -> int:
        return x * x

    runs: list[TaskRun] = []

    @flow
    def f(n: int) -> None:
        square(5)
        run = current_flow_run.get()
        assert run is not None
        runs.extend(run.task_runs)

    f(2)
    assert [r.name for r in runs] == ["square-5-of-2"]  # task arguments and flow parameters


# -- cache_for and cache_validator -----------------------------------------------------------

_counted: list[Any] = []


@task(cache_for=timedelta(milliseconds=400), cache_validator=cache_validators.all_inputs)
def cached_square(x: int) -> int:
    _counted.append(x)
    return x * x


def test_cache_for_with_all_inputs_hits_then_misses() -> None:
    _counted.clear()

    @flow
    def f(x: int) -> int:
        return cached_square(x)

    assert f(3) == 9
    assert f(3) == 9  # a hit
    assert _counted == [3]
    assert f(4) == 16  # other inputs: a miss
    assert _counted == [3, 4]
    time.sleep(0.5)
    assert f(3) == 9  # expired: a miss
    assert _counted == [3, 4, 3]


def test_cache_for_alone_is_duration_only() -> None:
    calls: list[int] = []

    @task(cache_for=timedelta(minutes=1))
    def load(x: int) -> int:
        calls.append(x)
        return x

    assert load.cache_key_fn is cache_validators.duration_only
    assert load.cache_expiration == timedelta(minutes=1)
    assert load(1) == 1
    assert load(2) == 1  # inputs do not matter: the first result, until it expires
    assert calls == [1]


def test_with_options_cache_for_keeps_the_validator() -> None:
    calls: list[int] = []

    @task(cache_for=timedelta(hours=1), cache_validator=cache_validators.all_inputs)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    longer = square.with_options(cache_for=timedelta(hours=2))
    assert longer.cache_key_fn is cache_validators.all_inputs
    assert longer.cache_expiration == timedelta(hours=2)
    assert (longer(3), longer(4), longer(3)) == (9, 16, 9)  # other inputs: their own entry
    assert calls == [3, 4]


def test_with_options_cache_validator_keeps_cache_for() -> None:
    calls: list[int] = []

    @task(cache_for=timedelta(hours=1))
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "will not be cached" warning
        per_input = square.with_options(cache_validator=cache_validators.all_inputs)
    assert per_input.cache_key_fn is cache_validators.all_inputs
    assert per_input.cache_expiration == timedelta(hours=1)
    assert (per_input(3), per_input(4), per_input(3)) == (9, 16, 9)
    assert calls == [3, 4]
    never = square.with_options(cache_validator=cache_validators.never_use)
    assert never.cache_expiration is None


def test_partial_inputs_only_keys_on_the_named_inputs() -> None:
    calls: list[tuple[int, str]] = []

    @task(
        cache_for=timedelta(minutes=1),
        cache_validator=cache_validators.partial_inputs_only(validate_on=["n"]),
    )
    def refresh(n: int, when: str) -> int:
        calls.append((n, when))
        return n

    refresh(1, "mon")
    refresh(1, "tue")  # 'when' is not validated on: a hit
    refresh(2, "tue")
    assert calls == [(1, "mon"), (2, "tue")]


def test_all_and_partial_parameters_key_on_the_flow_parameters() -> None:
    calls: list[str] = []

    @task(cache_for=timedelta(minutes=1), cache_validator=cache_validators.all_parameters)
    def every(tag: str) -> None:
        calls.append(f"all-{tag}")

    @task(
        cache_for=timedelta(minutes=1),
        cache_validator=cache_validators.partial_parameters_only(validate_on=["nrows"]),
    )
    def some(tag: str) -> None:
        calls.append(f"partial-{tag}")

    @flow
    def f(nrows: int, runtime: str) -> None:
        every(runtime)
        some(runtime)

    f(500, "a")
    f(500, "b")  # runtime changed: all_parameters misses, partial_parameters_only hits
    f(600, "c")  # nrows changed: both miss
    assert calls == ["all-a", "partial-a", "all-b", "all-c", "partial-c"]


def test_never_use_never_caches() -> None:
    calls: list[int] = []

    @task(cache_for=timedelta(minutes=1), cache_validator=cache_validators.never_use)
    def fresh() -> None:
        calls.append(1)

    fresh()
    fresh()
    assert calls == [1, 1]
    assert fresh.cache_key_fn is None


def test_a_validator_without_cache_for_warns_and_does_not_cache() -> None:
    with pytest.warns(
        UserWarning,
        match=re.escape(
            "@task(cache_validator=all_inputs): cache_validator provided without specifying "
            "cache expiration (cache_for); this task will not be cached. Give "
            "cache_for=timedelta(...) as well"
        ),
    ):

        @task(cache_validator=cache_validators.all_inputs)
        def t() -> None: ...

    assert t.cache_key_fn is None


def test_a_handwritten_prefect1_validator_is_refused() -> None:
    def mine(state: Any, inputs: Any, parameters: Any) -> bool:
        return True

    with pytest.raises(TypeError, match=r"@task\(cache_validator=<function .*mine.*>\): flowbook"):
        task(cache_for=timedelta(minutes=1), cache_validator=mine)
    with pytest.raises(TypeError, match="give cache_key_fn=<function"):
        task(cache_for=timedelta(minutes=1), cache_validator=mine)


def test_validate_on_must_be_a_list_of_names() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "partial_inputs_only(validate_on='n'): validate_on must be a list of names, "
            "e.g. partial_inputs_only(validate_on=['n'])"
        ),
    ):
        cache_validators.partial_inputs_only(validate_on="n")


# -- warnings and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        "checkpoint",
        "result",
        "target",
        "slug",
        "state_handlers",
        "on_failure",
        "skip_on_upstream_skip",
        "cache_key",
    ],
)
def test_options_without_meaning_warn_once_naming_themselves(option: str) -> None:
    with pytest.warns(UserWarning, match=f"the Prefect 1 option '{option}'") as record:

        @task(**{option: "x"})
        def t() -> int:
            return 1

    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith(
        f"@task({option}=...): the Prefect 1 option {option!r} does nothing in flowbook ("
    )
    assert message.endswith("); remove it to silence this warning")
    assert record[0].filename == __file__  # the user's line, not flowbook's
    assert t() == 1


def test_several_options_without_meaning_warn_once_each() -> None:
    with pytest.warns(UserWarning, match="does nothing in flowbook") as record:
        task(lambda: 1, checkpoint=False, slug="s", max_retries=1)
    assert sorted(str(w.message).split("=")[0] for w in record) == [
        "@task(checkpoint",
        "@task(slug",
    ]


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [
        ("max_retries", "retries", 1),
        ("retry_delay", "retry_delay_seconds", timedelta(0)),
        ("timeout", "timeout_seconds", 1),
        ("log_stdout", "log_prints", True),
        ("cache_for", "cache_expiration", timedelta(minutes=1)),
    ],
)
def test_a_prefect1_option_with_its_twin_is_an_error(old: str, new: str, value: Any) -> None:
    twin_value: Any = value.total_seconds() if old == "retry_delay" else value
    if old == "cache_for":
        twin_value = value
    with pytest.raises(TypeError, match=re.escape(f"@task() got both {old}=")) as info:
        task(**{old: value, new: twin_value})
    assert f"{old} is Prefect 1's name for {new}: give only one of them" in str(info.value)


def test_bad_prefect1_values_name_the_option() -> None:
    with pytest.raises(TypeError, match=re.escape("@task(retry_delay=10): retry_delay must")):
        task(max_retries=1, retry_delay=10)
    with pytest.raises(ValueError, match=re.escape("@task(max_retries=-1): max_retries must")):
        task(max_retries=-1)
    with pytest.raises(ValueError, match=re.escape("@task(timeout=0): timeout must be more")):
        task(timeout=0)
    with pytest.raises(TypeError, match=re.escape("@task(retry_on=3): 3 is not an exception")):
        task(max_retries=1, retry_on=3)
    with pytest.raises(ValueError, match=re.escape("@task(nout=0): input should be greater")):
        task(nout=0)


def test_a_misspelt_prefect1_option_suggests_it() -> None:
    with pytest.raises(
        TypeError, match=re.escape("@task() got an unknown option 'max_retry'; did you mean")
    ) as info:
        task(max_retry=2)
    assert "'max_retries'?" in str(info.value)


# -- triggers --------------------------------------------------------------------------------


@task
def good() -> int:
    return 1


@task
def broken() -> int:
    raise RuntimeError("upstream broke")


def _flow_state(trigger: Any) -> State:
    """The downstream run's state, read from inside the flow (the flow itself fails)."""
    seen: list[State] = []
    received: list[Any] = []

    @task(trigger=trigger)
    def downstream(a: Any, b: Any) -> str:
        received.extend([a, b])
        return "ran"

    @flow
    def f() -> None:
        seen.append(downstream(good.submit(), broken.submit(), return_state=True))

    f(return_state=True)
    _received[:] = received
    return seen[0]


_received: list[Any] = []


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        (triggers.all_successful, "some of the upstream tasks failed."),
        (triggers.all_failed, "some of the upstream tasks succeeded."),
        (triggers.not_all_skipped, "some of the upstream tasks failed."),
    ],
)
def test_triggers_that_refuse_one_failure_and_one_success(trigger: Any, message: str) -> None:
    state = _flow_state(trigger)
    assert state.is_failed()
    assert state.name == "TriggerFailed"
    assert state.message == f'Trigger was "{trigger.__name__}" but {message}'
    assert isinstance(state.data, TriggerFailedError)
    assert _received == []  # the body never ran


@pytest.mark.parametrize(
    "trigger",
    [
        triggers.any_successful,
        triggers.any_failed,
        triggers.all_finished,
        triggers.always_run,
        triggers.some_failed(at_least=1),
        triggers.some_successful(at_most=0.5),
    ],
)
def test_triggers_that_start_get_the_failed_runs_exception(trigger: Any) -> None:
    state = _flow_state(trigger)
    assert state.is_completed()
    assert state.result() == "ran"
    a, b = _received
    assert a == 1
    assert isinstance(b, RuntimeError)
    assert str(b) == "upstream broke"


def test_counting_triggers_refuse_outside_their_bounds() -> None:
    state = _flow_state(triggers.some_failed(at_least=2))
    assert state.name == "TriggerFailed"
    assert state.message == 'Trigger was "some_failed" but thresholds were not met.'


def test_any_failed_refuses_when_all_succeed() -> None:
    seen: list[State] = []

    @task(trigger=triggers.any_failed)
    def alert(a: int, b: int) -> None: ...

    @flow
    def f() -> None:
        seen.append(alert(good.submit(), good.submit(), return_state=True))

    f()
    assert seen[0].name == "TriggerFailed"
    assert seen[0].message == 'Trigger was "any_failed" but none of the upstream tasks failed.'


def test_wait_for_counts_as_upstream() -> None:
    seen: list[State] = []

    @task(trigger=triggers.all_failed)
    def on_failure() -> str:
        return "cleaned up"

    @flow
    def f() -> None:
        seen.append(on_failure(wait_for=[broken.submit()], return_state=True))

    f(return_state=True)
    assert seen[0].is_completed()
    assert seen[0].result() == "cleaned up"


def test_a_custom_trigger_that_returns_false_or_raises() -> None:
    def never(upstream_states: Any) -> bool:
        return False

    def oops(upstream_states: Any) -> bool:
        raise KeyError("x")

    state = _flow_state(never)
    assert state.name == "TriggerFailed"
    assert state.message == 'Trigger was "never" and it returned False.'
    state = _flow_state(oops)
    assert state.name == "Failed"
    assert state.message == "Task run's trigger 'oops' raised KeyError: 'x'"


def test_a_task_without_upstream_runs_always_starts() -> None:
    @task(trigger=triggers.all_failed)
    def lonely() -> int:
        return 3

    assert lonely() == 3


def test_manual_only_is_refused_with_what_to_do() -> None:
    with pytest.raises(
        ValueError, match=re.escape("@task(trigger=manual_only): Prefect 1's manual_only")
    ) as info:
        task(trigger=triggers.manual_only)
    assert "flowbook has no approval step" in str(info.value)
    assert "Put the tasks that need approval in a flow of their own" in str(info.value)


def test_an_uncalled_trigger_factory_is_refused() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "@task(trigger=some_failed): some_failed makes a trigger from its bounds; call it, "
            "e.g. trigger=some_failed(at_least=1)"
        ),
    ):
        task(trigger=triggers.some_failed)


def test_a_trigger_must_be_callable() -> None:
    with pytest.raises(TypeError, match=re.escape("@task(trigger='all_failed'): trigger must be")):
        task(trigger="all_failed")


def test_triggers_on_dask_wait_for_every_upstream_run() -> None:
    from flowbook.task_runners import DaskTaskRunner
    from flowbook.task_runners import dask as fb_dask

    seen: list[State] = []

    @task(trigger=triggers.any_failed)
    def alert(a: int, b: Any) -> str:
        return f"{a} {b!r}"

    @task(trigger=triggers.all_successful)
    def strict(a: int, b: Any) -> None: ...

    in_process = {"processes": False, "n_workers": 1, "dashboard_address": "127.0.0.1:0"}

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=in_process))
    def f() -> None:
        a, b = good.submit(), broken.submit()
        c, d = alert.submit(a, b), strict.submit(a, b)
        seen.extend([c.wait() and c.state, d.wait() and d.state])

    try:
        f(return_state=True)
    finally:
        fb_dask.close_cluster()
    assert seen[0].is_completed()
    assert seen[0].result() == "1 RuntimeError('upstream broke')"
    assert seen[1].name == "TriggerFailed"
