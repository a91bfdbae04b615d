"""docs/v3/how-to-guides/workflows/retries.mdx ("How to automatically rerun your workflow when
it fails"), section by section.

exponential_backoff is in test_api_small.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from flowbook import flow, task
from flowbook.states import State


# retries.mdx "Set the number of retries": @flow(retries=3) reruns a flow that raises; with
# every attempt failing it runs 1 + 3 times and then fails
def test_flow_retries_run_the_flow_again_then_fail() -> None:
    attempts: list[int] = []

    @flow(retries=3)
    def troublesome_workflow() -> None:
        attempts.append(1)
        raise Exception("oopsie daisy")

    with pytest.raises(Exception, match="oopsie daisy"):
        troublesome_workflow()
    assert len(attempts) == 4


# retries.mdx "Wait between retries": retry_delay_seconds waits between the flow's attempts
def test_flow_retry_delay_seconds_waits() -> None:
    starts: list[float] = []

    @flow(retries=1, retry_delay_seconds=0.15)
    def troublesome_workflow() -> None:
        starts.append(time.perf_counter())
        raise Exception("oopsie daisy")

    troublesome_workflow(return_state=True)  # type: ignore[call-arg]
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 0.14


# retries.mdx "Retry parts of a workflow": a task's retries rerun only that task; the task
# before it runs once
def test_task_retries_rerun_only_that_task() -> None:
    calls = {"consistent": 0, "mercurial": 0}

    @task
    def consistent_task() -> None:
        calls["consistent"] += 1

    @task(retries=4, retry_delay_seconds=0)
    def mercurial_task() -> str:
        calls["mercurial"] += 1
        if calls["mercurial"] < 3:
            raise RuntimeError("500")
        return "200"

    @flow
    def my_workflow() -> str:
        consistent_task()
        return mercurial_task()

    assert my_workflow() == "200"
    assert calls == {"consistent": 1, "mercurial": 3}


# retries.mdx "Retry with configurable delay": retry_delay_seconds as a list, one delay per
# retry
def test_a_list_of_delays_gives_one_delay_per_retry() -> None:
    starts: list[float] = []

    @task(retries=2, retry_delay_seconds=[0.05, 0.25])
    def melancholic_task() -> None:
        starts.append(time.perf_counter())
        raise Exception("We used to see each other so much more often")

    @flow
    def main() -> None:
        melancholic_task(return_state=True)  # type: ignore[call-arg]

    main()
    assert len(starts) == 3
    first, second = starts[1] - starts[0], starts[2] - starts[1]
    assert 0.04 <= first < 0.2
    assert second >= 0.24


# retries.mdx "Retry with configurable delay": the list as written on the page
def test_the_pages_list_of_delays_is_used_in_order() -> None:
    @task(retries=4, retry_delay_seconds=[1, 2, 4, 8])
    def melancholic_task() -> None:
        raise Exception("We used to see each other so much more often")

    assert [melancholic_task.retry_delay_for(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]


# retries.mdx "Retry with a custom condition": retry_condition_fn(task, task_run, state);
# state.result() raises the exception; True retries, otherwise the task "will exit with an
# exception"
def test_retry_condition_fn_decides_from_the_exception() -> None:
    class HTTPStatusError(Exception):
        def __init__(self, status_code: int) -> None:
            super().__init__(f"status {status_code}")
            self.status_code = status_code

    codes = iter([500, 404, 200])
    calls: list[int] = []
    seen: list[tuple[Any, Any, Any]] = []

    def retry_handler(task_: Any, task_run: Any, state: State) -> bool:
        seen.append((task_, task_run, state))
        try:
            state.result()
        except HTTPStatusError as exc:
            return exc.status_code not in [401, 404]
        except Exception:
            return True
        return True

    @task(retries=3, retry_condition_fn=retry_handler)
    def api_call_task() -> int:
        code = next(codes)
        calls.append(code)
        if code >= 400:
            raise HTTPStatusError(code)
        return code

    @flow
    def my_workflow() -> None:
        api_call_task()

    with pytest.raises(HTTPStatusError, match="status 404"):
        my_workflow()
    assert calls == [500, 404]
    assert seen[0][0] is api_call_task
    assert seen[0][1].task_name == "api_call_task"
    assert seen[0][2].is_failed()


# retries.mdx "Retry with a custom condition": a condition returning True retries
def test_retry_condition_fn_true_retries() -> None:
    calls: list[int] = []

    @task(retries=2, retry_condition_fn=lambda *_: True)
    def eventually() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("again")
        return len(calls)

    @flow
    def main() -> int:
        return eventually()

    assert main() == 3


# how it fails: a condition that raises stops the retries; the task's own exception is raised
def test_a_retry_condition_that_raises_does_not_retry() -> None:
    calls: list[int] = []

    def broken(*_: Any) -> bool:
        raise KeyError("condition broke")

    @task(retries=2, retry_condition_fn=broken)
    def failing() -> None:
        calls.append(1)
        raise ValueError("task failed")

    @flow
    def main() -> None:
        failing()

    with pytest.raises(ValueError, match="task failed"):
        main()
    assert calls == [1]


# retries.mdx "Add jitter to retry delays": retry_jitter_factor adds a random amount of time to
# each delay (never less than the delay, at most factor times it more)
def test_retry_jitter_factor_spreads_delays() -> None:
    @task(retries=3, retry_delay_seconds=[1.0, 2.0, 4.0], retry_jitter_factor=3)
    def some_task() -> None:
        pass

    samples = [some_task.retry_delay_for(2) for _ in range(200)]
    assert all(2.0 <= s <= 2.0 * (1 + 3) for s in samples)
    assert len(set(samples)) > 100

    @task(retries=1, retry_delay_seconds=2.0)
    def no_jitter() -> None:
        pass

    assert {no_jitter.retry_delay_for(1) for _ in range(10)} == {2.0}


# retries.mdx "Add jitter to retry delays": the jittered delay is really waited
def test_jittered_delay_is_waited() -> None:
    starts: list[float] = []

    @task(retries=1, retry_delay_seconds=0.05, retry_jitter_factor=1)
    def flaky() -> None:
        starts.append(time.perf_counter())
        if len(starts) == 1:
            raise ValueError("once")

    @flow
    def main() -> None:
        flaky()

    main()
    assert 0.045 <= starts[1] - starts[0] < 0.5


# how it fails: a negative jitter factor is refused, naming the value
def test_a_negative_jitter_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="retry_jitter_factor"):

        @task(retries=1, retry_jitter_factor=-1)
        def bad() -> None:
            pass


# retries.mdx "Configure task retry behavior globally": PREFECT_TASKS_DEFAULT_RETRIES and
# PREFECT_TASKS_DEFAULT_RETRY_DELAY_SECONDS set the retries of every task without its own
def test_default_task_retries_from_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowbook.settings import reload_settings

    monkeypatch.setenv("FLOWBOOK_TASKS_DEFAULT_RETRIES", "2")
    monkeypatch.setenv("PREFECT_TASKS_DEFAULT_RETRIES", "2")
    reload_settings()
    calls: list[int] = []

    @task
    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("again")
        return len(calls)

    @flow
    def main() -> int:
        return flaky()

    assert main() == 3
