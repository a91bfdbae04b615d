"""Final states, as Prefect 3's docs describe them: what a flow returns or raises decides its
final state; a task that returns a Failed state fails; ``wait_for=`` takes any values; a
returned generator is consumed; a generator flow yields as the caller iterates."""

from __future__ import annotations

import time
from typing import Any

import pytest

import flowbook.runs
from flowbook import flow, task
from flowbook.exceptions import RunFailedError
from flowbook.states import Cancelled, Completed, Failed, Running, State, StateType


@task
def fails() -> None:
    raise ValueError("task failed")


@task
def succeeds() -> str:
    return "success"


# docs/v3/how-to-guides/migrate/upgrade-to-prefect-3.mdx "Flow final states": task failures
# "do not automatically cause the flow run to fail unless they affect the flow's return value
# or raise an uncaught exception"
def test_a_submitted_task_that_failed_unresolved_does_not_fail_the_flow() -> None:
    @flow
    def careless() -> str:
        fails.submit()
        return "done"

    state = careless(return_state=True)
    assert state.is_completed()
    assert state.result() == "done"
    assert "1/1 task runs failed without the flow looking at them" in (state.message or "")
    assert careless() == "done"


# the same page: "Allow Unhandled Exceptions": an exception that propagates fails the flow
def test_a_task_exception_that_propagates_fails_the_flow() -> None:
    @flow
    def strict() -> None:
        fails()

    with pytest.raises(ValueError, match="task failed"):
        strict()
    state = strict(return_state=True)
    assert state.is_failed()
    # seed 002 (Prefect 2's docs) shows this message for a task's exception; it stays
    assert state.message == "1/1 states failed."


# the same page: "Use return_state": the flow inspects the state and raises
def test_return_state_lets_the_flow_decide() -> None:
    @flow
    def inspects() -> str:
        state = fails(return_state=True)
        if state.is_failed():
            raise ValueError(f"saw: {state.result(raise_on_failure=False)}")
        return "never"

    with pytest.raises(ValueError, match="saw: task failed"):
        inspects()


# the same page: "Use try/except": the flow returns a manual Failed state
def test_a_returned_manual_failed_state_is_the_final_state() -> None:
    @flow
    def handles() -> Any:
        try:
            fails()
        except ValueError:
            return Failed(message="Flow failed due to task failure")
        return "never"

    state = handles(return_state=True)
    assert state.is_failed()
    assert state.message == "Flow failed due to task failure"
    assert state.run_id is not None
    with pytest.raises(RunFailedError, match="Flow failed due to task failure"):
        handles()


# docs/snippets/final-flow-state.mdx: "If a flow returns a manually created state, it is used
# as the state of the final flow run." (docs/v3/concepts/flows.mdx "Return a manual state")
def test_a_returned_manual_completed_state_is_the_final_state() -> None:
    @flow
    def happy() -> Any:
        fails.submit()
        if succeeds.submit().result() == "success":
            return Completed(message="I am happy with this result", data=42)
        return Failed(message="How did this happen!?")

    state = happy(return_state=True)
    assert state.is_completed()
    assert state.message == "I am happy with this result"
    assert state.result() == 42
    assert happy() == 42
    stored = flowbook.runs.get(state.run_id)
    assert stored.message == "I am happy with this result"


# a custom name on a returned state is kept (Prefect: State(type=..., name=...))
def test_a_returned_state_keeps_its_name() -> None:
    @flow
    def skipped() -> State:
        return Completed(message="nothing to do", name="Skipped")

    state = skipped(return_state=True)
    assert (state.type, state.name) == (StateType.COMPLETED, "Skipped")


# docs/snippets/final-flow-state.mdx: "If a flow returns an iterable of states, the presence
# of any FAILED state will cause the run to be marked as FAILED."
# (docs/v3/concepts/states.mdx "Task return values" example)
def test_returned_states_with_one_failed_fail_the_flow() -> None:
    @task
    def toggle(fail: bool) -> State:
        if fail:
            return Failed(message="I was instructed to fail.")
        return Completed(message="I was instructed to succeed.")

    @flow
    def example() -> tuple[State, State]:
        one = toggle(True, return_state=True)
        two = toggle(False, return_state=True)
        return one, two

    state = example(return_state=True)
    assert state.is_failed()
    assert state.message == "1/2 states failed."
    with pytest.raises(RunFailedError, match="I was instructed to fail"):
        example()


# docs/v3/concepts/states.mdx "Task return values": "if a task explicitly returns a Prefect
# Failed state, the task will be marked Failed"; any other return value completes it
def test_a_task_returning_failed_fails_its_run(events: Any) -> None:
    @task
    def toggle(fail: bool) -> State:
        return Failed(message="told to fail") if fail else Completed(message="told to succeed")

    @flow
    def both() -> tuple[State, State]:
        return toggle(True, return_state=True), toggle(False, return_state=True)

    assert both(return_state=True).is_failed()
    assert events.states("toggle-0")[-1] == "Failed"
    assert events.states("toggle-1")[-1] == "Completed"

    @flow
    def direct() -> None:
        toggle(True)

    with pytest.raises(RunFailedError, match="told to fail"):
        direct()


def test_a_task_returning_a_completed_state_uses_it() -> None:
    @task
    def custom() -> State:
        return Completed(message="custom", data=5)

    state = custom(return_state=True)
    assert (state.message, state.result()) == ("custom", 5)
    assert custom() == 5


# Prefect retries a task that returns a Failed state, as one that raised
def test_a_task_returning_failed_is_retried() -> None:
    calls: list[int] = []

    @task(retries=2)
    def flaky() -> Any:
        calls.append(1)
        return Failed(message="not yet") if len(calls) < 3 else "ok"

    assert flaky() == "ok"
    assert len(calls) == 3


def test_a_task_returning_a_state_that_is_not_final_fails() -> None:
    @task
    def odd() -> State:
        return Running()

    with pytest.raises(ValueError, match=r"task 'odd' returned the state Running\(\)"):
        odd()


# docs/v3/concepts/states.mdx: `return_state=True` gives the state; returned from a flow, the
# flow call gives that state back (it is the flow's value), and the flow's state follows it
def test_a_flow_returning_a_task_state_returns_that_state() -> None:
    @flow
    def gives() -> State:
        return succeeds(return_state=True)

    value = gives()
    assert isinstance(value, State)
    assert value.is_completed()
    assert value.result() == "success"
    state = gives(return_state=True)
    assert state.is_completed()
    assert state.message == "All states completed."

    @flow
    def gives_failed() -> State:
        return fails(return_state=True)

    failed = gives_failed(return_state=True)
    assert failed.is_failed()
    assert failed.message == "1/1 states failed."
    with pytest.raises(ValueError, match="task failed"):
        gives_failed()


# docs/snippets/final-flow-state.mdx (Warning): a failed state not returned does not fail the
# flow; "If state were returned from the flow function, the run would be marked as FAILED."
def test_a_failed_state_held_but_not_returned_does_not_fail_the_flow() -> None:
    @task
    def add_one(x: Any) -> Any:
        return x + 1

    @flow
    def holds() -> None:
        state = add_one("1", return_state=True)
        assert state.is_failed()

    assert holds(return_state=True).is_completed()


# docs/v3/concepts/flows.mdx "Return a future": the final state follows the returned future;
# the failed task's exception, passed to wait_for=, is not a future and is ignored
def test_a_returned_future_decides_and_wait_for_takes_non_futures() -> None:
    @flow
    def always_succeeds() -> Any:
        x = fails.submit().result(raise_on_failure=False)
        return succeeds.submit(wait_for=[x])

    state = always_succeeds(return_state=True)
    assert state.is_completed()
    assert always_succeeds() == "success"


# docs/v3/concepts/flows.mdx "Return multiple states or futures": futures and states mixed
def test_returned_futures_and_states_mixed() -> None:
    @flow
    def inner() -> str:
        return "bar"

    @flow
    def mixed() -> Any:
        return fails.submit(), succeeds(return_state=True), inner(return_state=True)

    state = mixed(return_state=True)
    assert state.is_failed()
    assert state.message == "1/3 states failed."

    @flow
    def all_good() -> Any:
        return [succeeds.submit(), succeeds(return_state=True)]

    value = all_good()
    assert [s.result() for s in value] == ["success", "success"]


def test_returned_cancelled_state_cancels_the_flow() -> None:
    @flow
    def stops() -> State:
        return Cancelled(message="not today")

    state = stops(return_state=True)
    assert state.is_cancelled()
    assert state.message == "not today"


def test_returning_a_state_that_is_not_final_fails_the_flow() -> None:
    @flow
    def odd() -> State:
        return Running()

    state = odd(return_state=True)
    assert state.is_failed()
    assert "returned the state Running(), which is not final" in (state.message or "")


# wait_for= (Prefect: "OneOrManyFutureOrResult"): one future, many, or values
def test_wait_for_takes_one_future_many_or_plain_values() -> None:
    order: list[str] = []

    @task
    def slow() -> None:
        time.sleep(0.05)
        order.append("slow")

    @task
    def after(tag: str) -> str:
        order.append(tag)
        return tag

    @flow
    def waits() -> list[str]:
        first = slow.submit()
        a = after.submit("one", wait_for=first)
        b = after.submit("many", wait_for=[first, 3, "text", None])
        c = after.map(["m1", "m2"], wait_for=first)
        return [a.result(), b.result(), *c.result()]

    assert waits() == ["one", "many", "m1", "m2"]
    assert order[0] == "slow"


def test_wait_for_with_a_failed_future_still_skips_the_task() -> None:
    seen: dict[str, State] = {}

    @flow
    def chain() -> None:
        broken = fails.submit()
        skipped = succeeds.submit(wait_for=broken)
        skipped.wait()
        seen["state"] = skipped.state

    assert chain(return_state=True).is_completed()  # neither failure was looked at
    state = seen["state"]
    assert state.is_failed()
    assert "Upstream task run 'fails-0' did not complete" in (state.message or "")


# docs/v3/concepts/flows.mdx "Generator functions are consumed when returned from flows"
def test_a_returned_generator_is_consumed_into_a_list() -> None:
    consumed: list[str] = []

    def gen() -> Any:
        yield from [1, 2, 3]
        consumed.append("yes")

    @flow
    def returns_gen() -> Any:
        return gen()

    assert returns_gen() == [1, 2, 3]
    assert consumed == ["yes"]


def test_a_returned_generator_that_raises_fails_the_flow() -> None:
    def gen() -> Any:
        yield 1
        raise KeyError("in generator")

    @flow
    def returns_gen() -> Any:
        return gen()

    with pytest.raises(KeyError, match="in generator"):
        returns_gen()


# docs/v3/how-to-guides/workflows/write-and-run.mdx "or from a generator function", and
# docs/v3/concepts/flows.mdx: "you can yield it instead of using return"
def test_a_generator_flow_yields_as_the_caller_iterates() -> None:
    seen: list[str] = []

    @flow
    def generator(n: int) -> Any:
        for i in range(n):
            seen.append(f"made {i}")
            yield succeeds() + str(i)

    values = generator("3")  # type: ignore[arg-type]
    assert seen == []  # nothing runs before the first value is asked for
    assert next(values) == "success0"
    assert seen == ["made 0"]
    assert list(values) == ["success1", "success2"]


def test_a_yielded_generator_is_not_consumed() -> None:
    consumed: list[str] = []

    def gen() -> Any:
        yield from [1, 2]
        consumed.append("yes")

    @flow
    def f() -> Any:
        yield gen()

    inner = next(f())
    assert consumed == []
    assert list(inner) == [1, 2]
    assert consumed == ["yes"]


def test_a_generator_flow_that_raises_raises_in_the_caller() -> None:
    @flow
    def bad() -> Any:
        yield 1
        raise ValueError("mid-way")

    values = bad()
    assert next(values) == 1
    with pytest.raises(ValueError, match="mid-way"):
        next(values)


def test_a_generator_flow_stopped_early_completes(events: Any) -> None:
    @flow(flow_run_name="stopped-early")
    def endless() -> Any:
        i = 0
        while True:
            yield i
            i += 1

    values = endless()
    assert [next(values), next(values)] == [0, 1]
    values.close()
    assert events.states("stopped-early")[-1] == "Completed"


def test_a_generator_flow_refuses_return_state() -> None:
    @flow
    def gen() -> Any:
        yield 1

    with pytest.raises(ValueError, match="flow 'gen' is a generator flow"):
        gen(return_state=True)


# a returned list of plain values is not scanned end to end for states: the check stops at
# the first plain value (``isinstance`` reads ``__class__`` of an object it does not know)
def test_a_returned_list_of_plain_values_is_not_scanned_for_states() -> None:
    touched: list[str] = []

    class Probe:
        @property  # type: ignore[misc]
        def __class__(self) -> type:
            touched.append("yes")
            return Probe

    probe = Probe()

    @flow
    def plain() -> list[Any]:
        return [1, probe]

    state = plain(return_state=True)
    assert state.is_completed()
    assert touched == []


# docs/behaviour.md "A timeout counts as a failure for retries" (Prefect 3 retries it)
def test_a_timed_out_flow_is_retried() -> None:
    attempts: list[int] = []

    @flow(retries=1, timeout_seconds=0.3)
    def slow_once() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            for _ in range(200):
                time.sleep(0.01)
        return succeeds()

    state = slow_once(return_state=True)
    assert len(attempts) == 2
    assert state.is_completed()
    assert state.result() == "success"


def test_a_timed_out_flow_without_retries_left_ends_timed_out() -> None:
    attempts: list[int] = []

    @flow(retries=1, timeout_seconds=0.2)
    def always_slow() -> None:
        attempts.append(1)
        for _ in range(100):
            time.sleep(0.01)

    state = always_slow(return_state=True)
    assert len(attempts) == 2
    assert state.name == "TimedOut"


def test_an_async_generator_flow_is_refused_at_decoration() -> None:
    async def agen() -> Any:
        yield 1

    with pytest.raises(
        TypeError, match=r"@flow cannot decorate the async generator function '.*agen'"
    ):
        flow(agen)


# a generator flow's run is the current run only while its body runs: the caller's code
# between values is outside it, and closing the generator elsewhere still ends the run
def test_a_generator_flow_is_current_only_while_its_body_runs() -> None:
    from flowbook.engine.runs import current_flow_run

    inside: list[Any] = []

    @flow
    def gen() -> Any:
        inside.append(current_flow_run.get())
        yield 1
        inside.append(current_flow_run.get())
        yield 2

    values = gen()
    assert next(values) == 1
    assert current_flow_run.get() is None
    assert next(values) == 2
    assert current_flow_run.get() is None
    assert inside[0] is not None
    assert inside[0] is inside[1]


def test_a_generator_flow_closed_in_another_context_releases_the_gc_freeze(
    events: Any,
) -> None:
    import contextvars

    from flowbook.engine import heap, interrupts

    @flow(flow_run_name="closed-elsewhere")
    def gen() -> Any:
        yield 1
        yield 2

    holders = heap._holders
    values = gen()
    assert next(values) == 1
    contextvars.copy_context().run(values.close)
    assert heap._holders == holders
    assert interrupts._signal.getsignal(interrupts._SIGINT) is not interrupts._on_sigint
    assert events.states("closed-elsewhere")[-1] == "Completed"


def test_a_generator_flow_honours_its_timeout() -> None:
    @flow(timeout_seconds=0.3)
    def slow() -> Any:
        yield 1
        for _ in range(200):
            time.sleep(0.01)
        yield 2

    values = slow()
    assert next(values) == 1
    time.sleep(0.4)  # the caller's time between values does not count
    with pytest.raises(Exception, match=r"exceeded its timeout of 0\.3 second"):
        next(values)


def test_a_timed_out_async_flow_is_retried() -> None:
    import asyncio

    attempts: list[int] = []

    @flow(retries=1, timeout_seconds=0.3)
    async def slow_once() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(2)
        return succeeds()

    state = asyncio.run(slow_once(return_state=True))  # type: ignore[arg-type]
    assert len(attempts) == 2
    assert state.result() == "success"
