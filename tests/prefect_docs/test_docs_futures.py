"""docs/v3/api-ref/python/prefect-futures.mdx (the futures API reference), entry by entry.

Each test names the entry of that page (PrefectHQ/prefect repository) whose documented
behaviour it checks. PrefectFuture / PrefectFutureList being flowbook's TaskRunFuture /
FutureList is checked in test_api_small.py.
"""

from __future__ import annotations

import threading
import time
from collections import namedtuple
from typing import Any

import pytest

from flowbook import flow, runtime, task
from flowbook.futures import (
    PrefectFuture,
    as_completed,
    resolve_futures_to_results,
    resolve_futures_to_states,
    wait,
)
from flowbook.states import State

PAGE = "docs/v3/api-ref/python/prefect-futures.mdx"


@task
def _sleep_task(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
def _fails_after(seconds: float) -> None:
    time.sleep(seconds)
    raise RuntimeError(f"failed after {seconds}")


def test_wait_with_a_timeout_splits_done_and_not_done() -> None:
    # wait: "A named 2-tuple of sets. The first set, named 'done', contains the futures that
    # completed ... before the wait completed. The second set, named 'not_done', contains
    # uncompleted futures"
    @flow
    def my_flow() -> tuple[int, int, bool]:
        futures = _sleep_task.map([0.0, 0.0, 0.4])
        result = wait(futures, timeout=0.15)
        done, not_done = result
        assert result.done is done
        assert result.not_done is not_done
        return len(done), len(not_done), futures[2] in not_done

    assert my_flow() == (2, 1, True)


def test_wait_without_a_timeout_waits_for_all() -> None:
    # wait: "timeout: ... If None, then there is no limit on the wait time"
    @flow
    def my_flow() -> tuple[int, int]:
        done, not_done = wait(_sleep_task.map([0.05, 0.1]))
        return len(done), len(not_done)

    assert my_flow() == (2, 0)


def test_wait_removes_duplicate_futures() -> None:
    # wait: "Duplicate futures given to *futures* are removed and will be returned only once"
    @flow
    def my_flow() -> int:
        f = _sleep_task.submit(0.0)
        done, _ = wait([f, f, f])
        return len(done)

    assert my_flow() == 1


def test_as_completed_yields_futures_in_the_order_they_finish() -> None:
    # as_completed(futures, timeout): a generator of the futures as they complete
    @flow
    def my_flow() -> list[float]:
        futures = _sleep_task.map([0.3, 0.0, 0.15])
        return [f.result() for f in as_completed(futures)]

    assert my_flow() == [0.0, 0.15, 0.3]


def test_as_completed_with_a_timeout_raises_timeout_error() -> None:
    # as_completed(futures, timeout: float | None = None)
    @flow
    def my_flow() -> list[float]:
        seen: list[float] = []
        futures = _sleep_task.map([0.0, 0.4])
        completed = as_completed(futures, timeout=0.15)
        seen.append(next(completed).result())
        with pytest.raises(TimeoutError, match=r"1 of 2 futures unfinished after 0.15 s"):
            next(completed)
        return seen

    assert my_flow() == [0.0]


def test_future_state_is_the_current_state_of_the_run() -> None:
    # PrefectFuture.state: "The current state of the task run associated with this future"
    started = threading.Event()
    release = threading.Event()

    @task
    def held() -> int:
        started.set()
        release.wait(5)
        return 1

    @flow
    def my_flow() -> tuple[str, str]:
        future = held.submit()
        started.wait(5)
        while_running = future.state.type.value
        release.set()
        future.wait()
        return while_running, future.state.type.value

    assert my_flow() == ("RUNNING", "COMPLETED")


def test_future_task_run_id_is_the_runs_id() -> None:
    # PrefectFuture.task_run_id: "The ID of the task run associated with this future"
    @task
    def own_id() -> str:
        return str(runtime.task_run.id)

    @flow
    def my_flow() -> tuple[str, str]:
        future = own_id.submit()
        return str(future.task_run_id), future.result()

    future_id, run_id = my_flow()
    assert future_id == run_id


def test_future_result_with_a_timeout_raises_timeout_error() -> None:
    # PrefectFuture.result(timeout: float | None = None, raise_on_failure: bool = True)
    @flow
    def my_flow() -> float:
        future = _sleep_task.submit(0.3)
        with pytest.raises(TimeoutError, match=r"did not finish within 0.05 s"):
            future.result(timeout=0.05)
        return future.result()

    assert my_flow() == 0.3


def test_future_wait_with_a_timeout_returns_without_raising() -> None:
    # PrefectFuture.wait(timeout: float | None = None) -> None: waiting gives up quietly
    @flow
    def my_flow() -> tuple[bool, bool]:
        future = _sleep_task.submit(0.3)
        future.wait(timeout=0.01)
        early = future.state.is_final()
        future.wait()
        return early, future.state.is_final()

    assert my_flow() == (False, True)


def test_add_done_callback_is_called_with_the_future() -> None:
    # PrefectFuture.add_done_callback: "fn: A callable that will be called with this future as
    # its only argument when the future completes"
    called: list[tuple[Any, str]] = []

    futures: list[PrefectFuture[float]] = []

    @flow
    def my_flow() -> None:
        future = _sleep_task.submit(0.05)
        futures.append(future)
        future.add_done_callback(lambda f: called.append((f, f.state.type.value)))
        future.wait()
        # once done, a new callback is called at once
        future.add_done_callback(lambda f: called.append((f, "late")))

    my_flow()
    assert [c[1] for c in called] == ["COMPLETED", "late"]
    assert all(c[0] is futures[0] for c in called)


def test_future_list_result_keeps_the_lists_order() -> None:
    # PrefectFutureList.result: "A list of results of the task runs, in the same order as the
    # futures in the list"
    @flow
    def my_flow() -> list[float]:
        return _sleep_task.map([0.2, 0.0, 0.1]).result()

    assert my_flow() == [0.2, 0.0, 0.1]


def test_future_list_result_raises_a_failure_as_soon_as_it_happens() -> None:
    # PrefectFutureList.result: "Uses as_completed internally so that failures are raised as
    # soon as they occur rather than waiting for earlier, still-running futures to finish"
    @flow
    def my_flow() -> float:
        slow = _sleep_task.submit(0.5)
        quick_failure = _fails_after.submit(0.0)
        futures = type(_sleep_task.map([]))([slow, quick_failure])
        start = time.perf_counter()
        with pytest.raises(RuntimeError, match=r"failed after 0\.0"):
            futures.result()
        return time.perf_counter() - start

    state = my_flow(return_state=True)
    assert state.result(raise_on_failure=False) < 0.3


def test_a_later_failure_is_raised_while_an_earlier_run_goes_on_with_a_timeout() -> None:
    # the same with a timeout: the failure comes first, not the TimeoutError, and a list whose
    # runs all complete gives every result in order
    @flow
    def my_flow() -> tuple[float, list[float]]:
        futures = _sleep_task.map([0.4, 0.0])
        failing = type(futures)([_sleep_task.submit(0.6), _fails_after.submit(0.05)])
        start = time.perf_counter()
        with pytest.raises(RuntimeError, match=r"failed after 0\.05"):
            failing.result(timeout=5)
        return time.perf_counter() - start, futures.result(timeout=5)

    took, results = my_flow()
    assert took < 0.45
    assert results == [0.4, 0.0]


def test_future_list_result_with_a_timeout_raises_timeout_error() -> None:
    # PrefectFutureList.result: "TimeoutError: If the timeout is reached before all futures
    # complete"
    @flow
    def my_flow() -> None:
        futures = _sleep_task.map([0.0, 0.4])
        with pytest.raises(TimeoutError):
            futures.result(timeout=0.1)

    my_flow()


def test_future_list_result_without_raising_gives_exceptions_in_place() -> None:
    # PrefectFutureList.result: "raise_on_failure: If True, an exception will be raised if any
    # task run fails"; with False the failed run's exception takes its place
    @task
    def maybe(x: int) -> int:
        if x == 1:
            raise ValueError(f"bad {x}")
        return x

    @flow
    def my_flow() -> list[Any]:
        return maybe.map([0, 1, 2]).result(raise_on_failure=False)

    values = my_flow(return_state=True).result(raise_on_failure=False)
    assert values[0] == 0
    assert values[2] == 2
    assert isinstance(values[1], ValueError)
    assert str(values[1]) == "bad 1"


def test_future_list_wait_with_a_timeout_does_not_raise() -> None:
    # PrefectFutureList.wait: "This method will not raise if the timeout is reached"
    @flow
    def my_flow() -> list[bool]:
        futures = _sleep_task.map([0.0, 0.3])
        futures.wait(timeout=0.1)
        return [f.done() for f in futures]

    assert my_flow() == [True, False]


Pair = namedtuple("Pair", "left right")


def test_resolve_futures_to_results_keeps_the_structure() -> None:
    # resolve_futures_to_results: "recursively find PrefectFutures and build a new collection
    # with the same structure with futures resolved to their final results"; "Unsupported
    # object types will be returned without modification"
    marker = object()

    @flow
    def my_flow() -> Any:
        a, b = _sleep_task.submit(0.0), _sleep_task.submit(0.05)
        return resolve_futures_to_results(
            {"list": [a, (b, 3)], "pair": Pair(a, "x"), "other": marker}
        )

    assert my_flow() == {"list": [0.0, (0.05, 3)], "pair": Pair(0.0, "x"), "other": marker}


def test_resolve_futures_to_states_keeps_the_structure() -> None:
    # resolve_futures_to_states: "build a new collection with the same structure with futures
    # resolved to their final states. Resolving futures to their final states may wait for
    # execution to complete"
    @flow
    def my_flow() -> Any:
        ok, bad = _sleep_task.submit(0.05), _fails_after.submit(0.0)
        return resolve_futures_to_states({"runs": [ok, (bad,)], "n": 1, "s": {2}})

    resolved = my_flow(return_state=True).result(raise_on_failure=False)
    ok_state, (bad_state,) = resolved["runs"]
    assert isinstance(ok_state, State)
    assert ok_state.is_completed()
    assert isinstance(bad_state, State)
    assert bad_state.is_failed()
    assert resolved["n"] == 1
    assert resolved["s"] == {2}


# -- how it fails ---------------------------------------------------------------------------


def test_as_completed_refuses_something_that_is_not_a_future() -> None:
    # as_completed(futures: list[PrefectFuture[R]]): futures only
    with pytest.raises(TypeError, match=r"as_completed\(\) takes futures .* got 42 of type int"):
        list(as_completed([42]))  # type: ignore[arg-type]


def test_a_failed_task_run_reraises_its_exception_from_result() -> None:
    # PrefectFuture.result(raise_on_failure=True): the task run's exception is raised
    @flow
    def my_flow() -> None:
        _fails_after.submit(0.0).result()

    with pytest.raises(RuntimeError, match=r"failed after 0\.0"):
        my_flow()


def test_a_failure_that_happened_before_result_was_called_is_raised_at_once() -> None:
    # the failing run ends before .result() is called: it is raised without waiting for the
    # slow run before it in the list
    @flow
    def my_flow() -> float:
        futures = type(_sleep_task.map([]))([_sleep_task.submit(1.5), _fails_after.submit(0.0)])
        futures[1].wait()
        time.sleep(0.1)
        start = time.perf_counter()
        with pytest.raises(RuntimeError, match=r"failed after 0\.0"):
            futures.result()
        return time.perf_counter() - start

    assert my_flow() < 0.5


def test_a_failure_while_result_waits_is_raised_before_the_runs_ahead_of_it_end() -> None:
    # PrefectFutureList.result "uses as_completed internally so that failures are raised as
    # soon as they occur rather than waiting for earlier, still-running futures"
    from flowbook import futures as futures_module

    @flow
    def my_flow() -> tuple[float, bool]:
        futures = type(_sleep_task.map([]))(
            [_sleep_task.submit(0.0), _sleep_task.submit(2.0), _fails_after.submit(0.2)]
        )
        start = time.perf_counter()
        with pytest.raises(RuntimeError, match=r"failed after 0\.2"):
            futures.result()
        took = time.perf_counter() - start
        return took, futures[2].task_run.observed

    took, observed = my_flow()  # (the failure was seen: the flow itself completes)
    assert 0.15 < took < 1.5
    assert observed
    assert futures_module._failure_waiters == {}


def test_the_first_failed_run_in_the_list_is_raised_and_completed_lists_are_in_order() -> None:
    @flow
    def my_flow() -> list[float]:
        both = _fails_after.map([0.0, 0.05])
        both.wait()
        with pytest.raises(RuntimeError, match=r"failed after 0\.0$"):
            both.result()
        fine = _sleep_task.map([0.2, 0.0, 0.1, 0.0])
        return fine.result()

    assert my_flow() == [0.2, 0.0, 0.1, 0.0]


def test_result_with_a_timeout_names_the_run_it_waited_for_and_leaves_nothing_behind() -> None:
    from flowbook import futures as futures_module

    @flow
    def my_flow() -> str:
        futures = _sleep_task.map([0.0, 1.0])
        with pytest.raises(TimeoutError) as raised:
            futures.result(timeout=0.2)
        assert futures_module._failure_waiters == {}
        futures.wait()
        return str(raised.value)

    message = my_flow()
    assert "did not finish within 0.2 s" in message
    assert "_sleep_task-" in message


def test_without_raise_on_failure_every_run_is_waited_for_and_given_in_order() -> None:
    @flow
    def my_flow() -> list[object]:
        futures = type(_sleep_task.map([]))([_sleep_task.submit(0.3), _fails_after.submit(0.0)])
        return futures.result(raise_on_failure=False)

    first, second = my_flow()
    assert first == 0.3
    assert isinstance(second, RuntimeError)
    assert "failed after 0.0" in str(second)


def test_failures_of_other_runs_do_not_disturb_a_waiting_result() -> None:
    # runs failing elsewhere (another flow, on another thread) wake the waiting call, which
    # finds no failure among its own runs and goes on waiting for them
    import threading

    stop = threading.Event()

    def failing_elsewhere() -> None:
        @flow
        def other() -> None:
            for _ in range(40):
                if stop.is_set():
                    return
                _fails_after.submit(0.0).wait()

        other()

    @flow
    def my_flow() -> list[float]:
        return _sleep_task.map([0.3, 0.1, 0.2]).result()

    thread = threading.Thread(target=failing_elsewhere)
    thread.start()
    try:
        assert my_flow() == [0.3, 0.1, 0.2]
    finally:
        stop.set()
        thread.join(30)


def test_a_list_of_runs_of_two_flow_runs_raises_a_failure_of_either_at_once() -> None:
    # a run submitted outside any flow (the background runner) ahead of a flow's failing run
    slow_outside = _sleep_task.submit(2.0)

    @flow
    def my_flow() -> float:
        futures = type(_sleep_task.map([]))([slow_outside, _fails_after.submit(0.2)])
        start = time.perf_counter()
        with pytest.raises(RuntimeError, match=r"failed after 0\.2"):
            futures.result()
        return time.perf_counter() - start

    try:
        assert my_flow() < 1.5
    finally:
        slow_outside.wait()


def test_failures_of_the_same_flow_run_outside_the_list_leave_the_wait_going() -> None:
    # runs of the waiting flow run that fail while it waits, none of them in the list: each is
    # handed to the waiting call, which goes on waiting for its own runs (and returns as soon
    # as they end, not at a later failure)
    from flowbook import futures as futures_module

    @flow
    def my_flow() -> tuple[list[float], float]:
        side = [_fails_after.submit(0.02 * k) for k in range(1, 8)]
        start = time.perf_counter()
        results = _sleep_task.map([0.05, 0.15, 0.1]).result(timeout=10)
        took = time.perf_counter() - start
        for future in side:
            future.wait()
        assert futures_module._failure_waiters == {}
        return results, took

    results, took = my_flow(return_state=True).result(raise_on_failure=False)
    assert results == [0.05, 0.15, 0.1]
    assert took < 5


@pytest.mark.parametrize("timeout", [-1, -0.5])
def test_a_negative_timeout_is_refused_with_its_value(timeout: float) -> None:
    @flow
    def my_flow() -> None:
        futures = _sleep_task.map([0.0])
        with pytest.raises(ValueError, match=rf"timeout={timeout!r}: give the seconds"):
            futures.result(timeout=timeout)
        futures.wait()

    my_flow()
