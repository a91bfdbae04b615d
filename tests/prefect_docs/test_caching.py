"""Prefect 3's caching, behaviour by behaviour, as its docs describe it.

Pages followed (Prefect repository paths):
- docs/v3/concepts/caching.mdx                          ("concepts")
- docs/v3/how-to-guides/workflows/cache-workflow-steps.mdx ("how-to")
- src/prefect/cache_policies.py for API shapes (configure, from_cache_key_fn, + and -)

Bodies count their real executions: a "hit" below is a call whose body did not run.
"""

from __future__ import annotations

import time
import warnings
from datetime import timedelta
from typing import Any

import pytest

import flowbook.cache
from flowbook import flow, task
from flowbook.cache_policies import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    NO_CACHE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyFnPolicy,
    CachePolicy,
    CachePolicyWarning,
    CompoundCachePolicy,
    Inputs,
)
from flowbook.caching.keys import CacheKeyWarning


# concepts, "Cache policies" / how-to "Cache based on inputs": INPUTS keys on inputs only
def test_inputs_policy_reuses_the_result_of_equal_inputs() -> None:
    ran: list[int] = []

    @task(cache_policy=INPUTS)
    def add_one(x: int) -> int:
        ran.append(x)
        return x + 1

    assert [add_one(1), add_one(1), add_one(2)] == [2, 2, 3]
    assert ran == [1, 2]


# INPUTS: across flow runs too (no run id in the key)
def test_inputs_policy_hits_across_flow_runs() -> None:
    ran: list[int] = []

    @task(cache_policy=INPUTS)
    def double(x: int) -> int:
        ran.append(x)
        return 2 * x

    @flow
    def twice(x: int) -> int:
        return double(x)

    assert twice(3) == twice(3) == 6
    assert ran == [3]


# how-to "Cache based on a subset of inputs": INPUTS - 'debug'
def test_subtracted_input_is_left_out_of_the_key() -> None:
    ran: list[tuple[int, bool]] = []

    @task(cache_policy=INPUTS - "debug")
    def stateful(x: int, debug: bool = False) -> int:
        ran.append((x, debug))
        return x + 1

    assert stateful(x=1) == stateful(x=1, debug=True) == stateful(x=1, debug=False) == 2
    assert ran == [(1, False)]
    stateful(x=2, debug=True)
    assert ran == [(1, False), (2, True)]


# how-to, the opening example: persist_result=True alone caches with DEFAULT
def test_persist_result_alone_caches_with_default_within_one_flow_run() -> None:
    ran: list[int] = []

    @task(persist_result=True)
    def add_one(x: int) -> int:
        ran.append(x)
        return x + 1

    @flow
    def my_flow() -> list[Any]:
        return [add_one(1, return_state=True), add_one(1, return_state=True), add_one(2)]

    first, second, third = my_flow()
    assert (first.name, second.name, third) == ("Completed", "Cached", 3)
    assert ran == [1, 2]
    assert add_one.cache_policy == DEFAULT
    # DEFAULT = INPUTS + TASK_SOURCE + RUN_ID: another flow run computes again
    my_flow()
    assert ran == [1, 2, 1, 2]


# how-to: "DEFAULT = INPUTS + TASK_SOURCE + RUN_ID"
def test_default_is_inputs_task_source_and_run_id() -> None:
    assert DEFAULT == INPUTS + TASK_SOURCE + RUN_ID
    assert repr(DEFAULT) == "INPUTS + TASK_SOURCE + RUN_ID"


# concepts: RUN_ID is "the prevailing flow run ID, or if executed autonomously, the prevailing
# task run ID": outside a flow, each call is its own run and never hits, so flowbook keeps
# neither an entry nor a miss for it (one that no call could ever use)
def test_run_id_outside_a_flow_is_the_task_runs_own() -> None:
    ran: list[int] = []

    @task(cache_policy=DEFAULT)
    def one(x: int) -> int:
        ran.append(x)
        return x

    one(1)
    one(1)
    assert ran == [1, 1]
    assert flowbook.cache.entries(task="one") == []
    with pytest.raises(LookupError):
        flowbook.cache.why_missed(one)
    assert DEFAULT.compute_key(None, {"x": 1}, {}) is None


def test_run_id_inside_a_flow_keeps_one_entry_per_call() -> None:
    @task(cache_policy=RUN_ID)
    def one() -> int:
        return 1

    @flow
    def f() -> list[Any]:
        return [one(return_state=True), one(return_state=True)]

    assert [s.name for s in f()] == ["Completed", "Cached"]
    assert len(flowbook.cache.entries(task="one")) == 1


# INPUTS + TASK_SOURCE keys the content task_input_hash keys, and makes the same key
def test_inputs_and_task_source_make_task_input_hashs_key() -> None:
    from flowbook.caching.keys import task_input_hash

    keys: dict[str, str | None] = {}

    def spy(context: Any, parameters: dict[str, Any]) -> str | None:
        keys["hash"] = task_input_hash(context, parameters)
        keys["policy"] = (INPUTS + TASK_SOURCE).compute_key(context, parameters, {})
        keys["inputs"] = INPUTS.compute_key(context, parameters, {})
        return keys["hash"]

    @task(cache_key_fn=spy)
    def add(x: int, y: int = 2) -> int:
        return x + y

    add(1)
    assert keys["hash"] is not None
    assert keys["policy"] == keys["hash"]
    assert keys["inputs"] not in (None, keys["hash"])


# concepts, "Cache policies": TASK_SOURCE keys on the task's code; editing it misses
def test_task_source_policy_misses_when_the_code_changes() -> None:
    import linecache

    ran: list[str] = []
    template = "@task(cache_policy=TASK_SOURCE)\ndef step():\n    ran.append({tag!r})\n"
    for n, tag in enumerate(("a", "a", "b")):
        source = template.format(tag=tag) + "    return 1\n"
        filename = f"<notebook-cell-s2-{n}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace = {"task": task, "TASK_SOURCE": TASK_SOURCE, "ran": ran, "__name__": "__main__"}
        exec(compile(source, filename, "exec"), namespace)
        namespace["step"]()
    assert ran == ["a", "b"]  # the same code again was a hit; the edited one ran


def test_task_source_alone_ignores_inputs() -> None:
    ran: list[int] = []

    @task(cache_policy=TASK_SOURCE)
    def constant(x: int) -> int:
        ran.append(x)
        return 7

    assert constant(1) == constant(2) == 7
    assert ran == [1]


# concepts: FLOW_PARAMETERS uses only the parent flow run's parameters
def test_flow_parameters_policy_keys_on_the_flow_runs_parameters() -> None:
    ran: list[int] = []

    @task(cache_policy=FLOW_PARAMETERS)
    def report(x: int) -> int:
        ran.append(x)
        return x

    @flow
    def pipeline(day: str, x: int) -> int:
        return report(x)

    assert pipeline("mon", 1) == 1
    assert pipeline("mon", 1) == 1  # same flow parameters: a hit
    assert pipeline("tue", 1) == 1  # another day: runs
    assert ran == [1, 1]


# concepts: NO_CACHE "always returns None and therefore avoids caching"
def test_no_cache_never_caches() -> None:
    ran: list[int] = []

    @task(cache_policy=NO_CACHE)
    def fresh(x: int) -> int:
        ran.append(x)
        return x

    fresh(1)
    fresh(1)
    assert ran == [1, 1]
    assert fresh.cache_key_fn is None


# concepts: "all task policies except for NO_CACHE can be added together"; adding NO_CACHE
# changes nothing (Prefect's _None.__add__)
def test_adding_no_cache_is_a_no_op_and_compounds_flatten() -> None:
    assert INPUTS + NO_CACHE == INPUTS
    assert NO_CACHE + TASK_SOURCE == TASK_SOURCE
    combined = (INPUTS + TASK_SOURCE) + (RUN_ID + FLOW_PARAMETERS)
    assert isinstance(combined, CompoundCachePolicy)
    assert repr(combined) == "INPUTS + TASK_SOURCE + RUN_ID + FLOW_PARAMETERS"
    assert repr(DEFAULT - "debug") == "INPUTS - 'debug' + TASK_SOURCE + RUN_ID"
    assert TASK_SOURCE - "debug" == TASK_SOURCE  # nothing to leave out


# how-to "Cache on multiple criteria": INPUTS + TASK_SOURCE reruns on new inputs
def test_inputs_plus_task_source() -> None:
    ran: list[int] = []

    @task(cache_policy=INPUTS + TASK_SOURCE)
    def my_task(x: int) -> int:
        ran.append(x)
        return x + 1

    assert [my_task(1), my_task(1), my_task(2)] == [2, 2, 3]
    assert ran == [1, 2]


# how-to "Cache with an expiration": the entry is used until it expires
def test_cache_expiration_with_a_policy() -> None:
    ran: list[int] = []

    @task(cache_policy=INPUTS, cache_expiration=timedelta(seconds=0.3))
    def stateful(x: int) -> int:
        ran.append(x)
        return x + 1

    stateful(1)
    stateful(1)
    assert ran == [1]
    time.sleep(0.35)
    stateful(1)
    assert ran == [1, 1]


# how-to "Ignore the cache": refresh_cache=True always runs (and replaces the entry)
def test_refresh_cache_runs_every_time() -> None:
    ran: list[int] = []

    @task(cache_policy=TASK_SOURCE, refresh_cache=True)
    def never_caching() -> int:
        ran.append(1)
        return len(ran)

    assert never_caching() == 1
    assert never_caching() == 2

    @task(cache_policy=TASK_SOURCE)
    def caching() -> int:
        ran.append(1)
        return len(ran)

    assert caching() == caching() == 3


# concepts, "Cache key functions": a function (context, parameters) -> key
def test_cache_key_fn_receives_context_and_parameters() -> None:
    seen: list[Any] = []

    def static_key(context: Any, parameters: dict[str, Any]) -> str:
        seen.append((context.task.name, context.task_run_id, dict(parameters)))
        return "static cache key"

    ran: list[int] = []

    @task(cache_key_fn=static_key)
    def cached(x: int) -> int:
        ran.append(x)
        return x + 1

    assert cached(1) == cached(5) == 2  # a constant key: the first result is served
    assert ran == [1]
    assert [s[2] for s in seen] == [{"x": 1}, {"x": 5}]
    assert seen[0][0] == "cached"
    assert isinstance(seen[0][1], str)
    assert cached.cache_policy == CacheKeyFnPolicy(cache_key_fn=static_key)
    assert CachePolicy.from_cache_key_fn(static_key) == cached.cache_policy


# the Task constructor (src/prefect/tasks.py): both given, cache_key_fn is used, with a warning
def test_cache_key_fn_wins_over_cache_policy_with_a_warning() -> None:
    with pytest.warns(CachePolicyWarning, match="cache_key_fn is used"):

        @task(cache_policy=INPUTS, cache_key_fn=lambda c, p: "k")
        def both(x: int) -> int:
            return x

    assert both(1) == both(2) == 1


# concepts, "Relationship with result persistence": persist_result=False never caches
def test_persist_result_false_ignores_the_policy_with_a_warning() -> None:
    ran: list[int] = []
    with pytest.warns(CachePolicyWarning, match=r"persist_result=False.*cache_policy=INPUTS"):

        @task(cache_policy=INPUTS, persist_result=False)
        def unkept(x: int) -> int:
            ran.append(x)
            return x

    unkept(1)
    unkept(1)
    assert ran == [1, 1]
    assert unkept.cache_policy == NO_CACHE


# a task without any caching option is not cached (results persist in flowbook's store by
# default, but Prefect 3 caches only tasks asked to persist; see docs/behaviour.md)
def test_plain_tasks_are_not_cached() -> None:
    ran: list[int] = []

    @task
    def plain(x: int) -> int:
        ran.append(x)
        return x

    @flow
    def f() -> None:
        plain(1)
        plain(1)

    f()
    assert ran == [1, 1]
    assert plain.cache_key_fn is None


# concepts, "Cache storage" / "Cache isolation": configure(key_storage, isolation_level,
# lock_manager) returns a new policy
def test_configure_accepts_read_committed_and_warns_about_the_rest() -> None:
    configured = INPUTS.configure(isolation_level="READ_COMMITTED")
    assert configured.isolation_level == "READ_COMMITTED"
    assert INPUTS.isolation_level is None  # a copy
    with pytest.warns(
        CachePolicyWarning, match=r"key_storage='/tmp/keys'\): flowbook keeps cache records"
    ):
        INPUTS.configure(key_storage="/tmp/keys")
    with pytest.warns(CachePolicyWarning, match="READ_COMMITTED only"):
        serial = INPUTS.configure(isolation_level="SERIALIZABLE")
    with pytest.warns(CachePolicyWarning, match="lock_manager=.*takes no cache locks"):
        INPUTS.configure(lock_manager=object())
    with pytest.raises(ValueError, match="cannot add cache policies with different isolation"):
        _ = serial + TASK_SOURCE.configure(isolation_level="READ_COMMITTED")
    ran: list[int] = []

    @task(cache_policy=configured)
    def t(x: int) -> int:
        ran.append(x)
        return x

    t(1)
    t(1)
    assert ran == [1]


# -- how it fails ---------------------------------------------------------------------------


def test_bad_isolation_level_names_the_value() -> None:
    with pytest.raises(ValueError, match=r"isolation_level='EVENTUAL'.*'READ_COMMITTED' or"):
        INPUTS.configure(isolation_level="EVENTUAL")


def test_bad_operands_name_the_value() -> None:
    with pytest.raises(TypeError, match=r"INPUTS - 3: only an input's name"):
        _ = INPUTS - 3
    with pytest.raises(TypeError, match=r"INPUTS \+ 'x': only cache policies"):
        _ = INPUTS + "x"  # type: ignore[operator]
    with pytest.raises(TypeError, match="exclude is a list of input names"):
        Inputs(exclude="debug")  # type: ignore[arg-type]


def test_cache_policy_of_the_wrong_type_names_it() -> None:
    with pytest.raises(TypeError, match=r"@task\(cache_policy='INPUTS'\): cache_policy must be"):
        task(cache_policy="INPUTS")


def test_excluding_an_unknown_input_warns_naming_it() -> None:
    with pytest.warns(CachePolicyWarning, match=r"leaves out input 'debgu'.*parameters: x, debug"):

        @task(cache_policy=INPUTS - "debgu")
        def t(x: int, debug: bool = False) -> int:
            return x


def test_a_policy_warning_at_decoration_points_at_the_decorated_function() -> None:
    with pytest.warns(CachePolicyWarning, match="leaves out input 'nope'") as record:

        @task(cache_policy=INPUTS - "nope")
        def t(x: int) -> int:
            return x

    assert record[0].filename == __file__
    assert record[0].lineno == t.fn.__code__.co_firstlineno


def test_an_unhashable_input_runs_uncached_naming_it() -> None:
    import threading

    ran: list[int] = []

    @task(cache_policy=INPUTS)
    def uses(lock: Any, x: int) -> int:
        ran.append(x)
        return x

    lock = threading.Lock()
    with pytest.warns(CacheKeyWarning, match=r"input 'lock' cannot be hashed.*INPUTS - 'lock'"):
        uses(lock, 1)
    assert ran == [1]

    @task(cache_policy=INPUTS - "lock")
    def skips(lock: Any, x: int) -> int:
        ran.append(x)
        return x

    skips(lock, 2)
    skips(threading.Lock(), 2)
    assert ran == [1, 2]


def test_a_custom_policy_that_raises_fails_the_run() -> None:
    class Broken(CachePolicy):
        def compute_key(self, task_ctx: Any, inputs: Any, flow_parameters: Any, **kw: Any) -> Any:
            raise RuntimeError("no key today")

    @task(cache_policy=Broken() + INPUTS)
    def t(x: int) -> int:
        return x

    state = t(1, return_state=True)
    assert state.is_failed()
    assert "no key today" in str(state.message)


def test_a_custom_policy_keys_the_cache() -> None:
    class Parity(CachePolicy):
        def compute_key(self, task_ctx: Any, inputs: Any, flow_parameters: Any, **kw: Any) -> Any:
            return str(inputs["x"] % 2)

    ran: list[int] = []

    @task(cache_policy=Parity())
    def t(x: int) -> int:
        ran.append(x)
        return x

    assert t(1) == t(3) == 1
    assert t(2) == 2
    assert ran == [1, 2]


# -- why a policy key missed ----------------------------------------------------------------


def test_why_missed_names_the_changed_input_of_a_policy_key() -> None:
    @task(cache_policy=INPUTS - "debug" + TASK_SOURCE)
    def area(width: int, height: int, debug: bool = False) -> int:
        return width * height

    area(2, 3)
    area(2, 4, debug=True)
    why = flowbook.cache.why_missed(area)
    assert why.cause == "changed"
    assert why.changed_inputs == ["height"]
    assert why.source_changed is False


def test_why_missed_says_another_flow_run_for_run_id() -> None:
    @task(persist_result=True)
    def step(x: int) -> int:
        return x

    @flow
    def f() -> int:
        return step(1)

    f()
    f()
    why = flowbook.cache.why_missed(step)
    assert why.cause == "changed"
    assert why.changed_parts == ["run_id"]
    assert "another flow run" in why.reason


def test_why_missed_names_a_changed_flow_parameter() -> None:
    @task(cache_policy=FLOW_PARAMETERS)
    def report() -> str:
        return "r"

    @flow
    def daily(day: str, region: str = "eu") -> str:
        return report()

    daily("mon")
    daily("tue")
    why = flowbook.cache.why_missed(report)
    assert why.changed_parts == ["flow_parameter:day"]
    assert "flow parameter 'day' changed" in why.reason


def test_with_options_changes_the_policy() -> None:
    ran: list[int] = []

    @task(cache_policy=NO_CACHE)
    def t(x: int) -> int:
        ran.append(x)
        return x

    cached = t.with_options(cache_policy=INPUTS)
    cached(1)
    cached(1)
    assert ran == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert t.with_options(cache_policy=INPUTS).cache_policy == INPUTS
