"""States among a task's arguments are resolved like futures.

Follows docs/v3/concepts/tasks.mdx, "Parameter resolution" ("Prefect traverses their contents
to resolve any PrefectFuture or State objects nested inside"; dataclasses and named tuples
are rebuilt), with Prefect 3's rules for what is not completed (src/prefect/utilities/engine.py,
resolve_to_final_result: an upstream that is not completed stops the task run, except a failed
one inside allow_failure, docs/v3/api-ref/python/prefect-utilities-annotations.mdx).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import pytest

from flowbook import flow, task
from flowbook.exceptions import UpstreamTaskError
from flowbook.states import Cancelled, Completed, Failed, Pending
from flowbook.utilities.annotations import allow_failure, quote


@task
def one() -> int:
    return 1


@task
def boom() -> int:
    raise ValueError("boom")


@task
def echo(value: Any) -> Any:
    return value


@dataclasses.dataclass(frozen=True)
class Pair:
    left: Any
    right: Any


class Point(NamedTuple):
    x: Any
    y: Any


# "Parameter resolution": states nested in containers, dataclasses and named tuples
def test_states_nested_in_containers_are_resolved() -> None:
    @flow
    def main() -> Any:
        state = one(return_state=True)
        return echo(
            {
                "list": [state, Completed(data=2)],
                "pair": Pair(state, "plain"),
                "point": Point(Completed(data=3), state),
                "set": {Completed(data="s")},
            }
        )

    assert main() == {
        "list": [1, 2],
        "pair": Pair(1, "plain"),
        "point": Point(3, 1),
        "set": {"s"},
    }


# a state next to a future: both resolved, the future waited for
def test_states_with_futures() -> None:
    @task
    def first(value: Any, extra: Any) -> Any:
        return value

    @flow
    def main() -> Any:
        return first.submit([one.submit(), one(return_state=True)], extra=None).result()

    assert main() == [1, 1]


# a state passed as a keyword, and through .submit(): the same
def test_a_state_as_keyword_and_through_submit() -> None:
    @flow
    def main() -> tuple[Any, Any]:
        return echo(value=Completed(data="kw")), echo.submit(Completed(data="sub")).result()

    assert main() == ("kw", "sub")


# not completed: the task run does not start, it fails naming the state (as with a failed
# upstream future), and the caller gets UpstreamTaskError with the state's exception behind it
def test_a_failed_state_stops_the_task(events: Any) -> None:
    ran: list[Any] = []

    @task(task_run_name="takes-state")
    def takes(value: Any) -> None:
        ran.append(value)

    seen: list[Any] = []

    @flow
    def main() -> None:
        failed = boom(return_state=True)
        seen.append(takes(failed, return_state=True))  # not returned: it would fail the flow

    main()
    (state,) = seen
    assert ran == []
    assert state.is_failed()
    assert "Failed('Task run encountered an exception ValueError: boom')" in state.message
    assert isinstance(state.data, UpstreamTaskError)
    assert isinstance(state.data.__cause__, ValueError)
    assert "Running" not in events.states("takes-state")


@pytest.mark.parametrize("state", [Pending(), Cancelled(), Failed("by hand")])
def test_a_state_that_is_not_completed_raises_in_the_caller(state: Any) -> None:
    @flow
    def main() -> None:
        echo([state])

    with pytest.raises(UpstreamTaskError, match=rf"the state {state.name}\("):
        main()


# the same with a future to wait for: the run fails at input resolution
def test_a_failed_state_next_to_a_future_stops_the_task() -> None:
    seen: list[Any] = []

    @flow
    def main() -> None:
        seen.append(echo([one.submit(), Failed("no")], return_state=True))

    main()
    (state,) = seen
    assert state.is_failed()
    assert "the state Failed('no')" in state.message


# one message for a state argument that did not complete, with or without a future beside it
@pytest.mark.parametrize("runner", ["direct", "submit"])
def test_a_state_argument_fails_with_one_message_with_or_without_a_future(runner: str) -> None:
    seen: list[Any] = []

    @flow
    def main() -> None:
        for args in ([Pending()], [one.submit(), Pending()]):
            if runner == "direct":
                seen.append(echo(args, return_state=True))
            else:
                future = echo.submit(args)
                future.wait()
                seen.append(future.state)

    main()
    alone, beside_a_future = (s.message for s in seen)
    assert alone == beside_a_future
    assert alone.startswith("Task run not run: an argument is the state Pending(), not a ")


# allow_failure(state): a failed state passes its exception through
def test_allow_failure_passes_a_failed_states_exception() -> None:
    @flow
    def main() -> Any:
        failed = boom(return_state=True)
        return echo(allow_failure(failed)), echo(allow_failure([failed, one(return_state=True)]))

    alone, in_list = main()
    assert isinstance(alone, ValueError)
    assert isinstance(in_list[0], ValueError)
    assert in_list[1] == 1


# allow_failure tolerates failures only: a state that is not final still stops the task
def test_allow_failure_does_not_pass_a_pending_state() -> None:
    @flow
    def main() -> None:
        echo(allow_failure(Pending()))

    with pytest.raises(UpstreamTaskError, match=r"Pending\(\)"):
        main()


# quote(state): passed as it is
def test_quote_keeps_the_state() -> None:
    state = Completed(data=1)

    @task
    def same(value: Any) -> bool:
        return value is state

    @flow
    def main() -> bool:
        return same(quote(state))

    assert main() is True
