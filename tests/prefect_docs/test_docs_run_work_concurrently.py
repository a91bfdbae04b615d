"""docs/v3/how-to-guides/workflows/run-work-concurrently.mdx, section by section.

Each test names the section of that page (PrefectHQ/prefect repository) whose documented
behaviour it checks. The page's "Using a different task runner" (DaskTaskRunner) is in
test_docs_dask.py.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from flowbook import flow, task, unmapped
from flowbook.futures import PrefectFuture, PrefectFutureList, wait
from flowbook.states import State
from flowbook.task_runners import SequentialTaskRunner

PAGE = "docs/v3/how-to-guides/workflows/run-work-concurrently.mdx"


@task
def _stop_at_floor(floor: float) -> float:
    time.sleep(floor)
    return floor


@task
def _cool_task() -> str:
    return "sup"


def test_calling_tasks_directly_does_not_run_them_concurrently() -> None:
    # "Calling tasks directly": "they will not run concurrently"; "it will block the main
    # thread until the task completes" (here outside any flow, as on the page)
    start = time.perf_counter()
    assert _stop_at_floor(0.05) == 0.05
    assert _stop_at_floor(0.1) == 0.1
    assert time.perf_counter() - start >= 0.15


def test_submit_runs_tasks_concurrently() -> None:
    # "Using .submit": "Tasks in your workflows can be run concurrently using the .submit()
    # method"; "By default, tasks are submitted via the ThreadPoolTaskRunner"
    @flow
    def elevator() -> float:
        start = time.perf_counter()
        floors = [_stop_at_floor.submit(floor) for floor in (0.3, 0.2, 0.1)]
        wait(floors)
        return time.perf_counter() - start

    assert elevator() < 0.5  # 0.3 s at most at once, not 0.6 s one after the other


def test_a_different_task_runner_is_passed_to_the_flow() -> None:
    # "Using a different task runner": "pass a task_runner argument to the @flow decorator"
    threads: list[str] = []

    @task
    def record() -> None:
        threads.append(threading.current_thread().name)

    @flow(task_runner=SequentialTaskRunner())
    def elevator() -> str:
        wait([record.submit() for _ in range(3)])
        return threading.current_thread().name

    flow_thread = elevator()
    assert threads == [flow_thread] * 3


def test_future_result_and_wait() -> None:
    # "Handling futures": ".result() method to get the result"; ".wait() method to wait for
    # execution to complete"
    @flow
    def my_workflow() -> tuple[str, bool]:
        future = _cool_task.submit()
        other = _cool_task.submit()
        other.wait()
        return future.result(), other.state.is_completed()

    assert my_workflow() == ("sup", True)


def test_wait_utility_waits_for_every_future() -> None:
    # "Handling futures": "To wait for multiple futures to complete, use the wait() utility"
    @flow
    def my_workflow() -> list[bool]:
        futures = [_cool_task.submit() for _ in range(10)]
        wait(futures)
        return [f.state.is_completed() for f in futures]

    assert my_workflow() == [True] * 10


def test_a_future_given_to_a_direct_call_is_waited_for() -> None:
    # "Handling futures", tip "Passing futures between tasks": "the task or flow receiving the
    # future will wait for the future to complete before starting execution"
    @task
    def slow_cool_task() -> str:
        time.sleep(0.1)
        return "sup"

    @task
    def what_did_cool_task_say(what_it_said: str) -> str:
        return f"cool task said {what_it_said}"

    @flow
    def my_workflow() -> str:
        return what_did_cool_task_say(slow_cool_task.submit())

    assert my_workflow() == "cool task said sup"


def test_map_submits_one_run_per_item_on_the_flows_runner() -> None:
    # "Using .map": "iteratively submit tasks"; "Like .submit, .map uses the task runner
    # configured on the parent flow"
    threads: list[str] = []

    @task
    def floor_thread(floor: int) -> int:
        threads.append(threading.current_thread().name)
        return floor

    @flow(task_runner=SequentialTaskRunner())
    def elevator() -> tuple[list[int], str, bool]:
        floors = floor_thread.map(list(range(5, 0, -1)))
        wait(floors)
        return (
            floors.result(),
            threading.current_thread().name,
            isinstance(floors[0], PrefectFuture),
        )

    values, flow_thread, are_futures = elevator()
    assert values == [5, 4, 3, 2, 1]
    assert are_futures
    assert threads == [flow_thread] * 5


def test_non_iterable_values_are_not_mapped_over() -> None:
    # "Using the unmapped annotation": "By default, non-iterable values will not be mapped
    # over (so unmapped is not required)"
    @task
    def add_together(x: int, y: int) -> int:
        return x + y

    @flow
    def sum_it(numbers: list[int], static_value: int) -> list[int]:
        futures = add_together.map(numbers, static_value)
        return futures.result()

    assert sum_it([1, 2, 3], 5) == [6, 7, 8]


def test_unmapped_passes_an_iterable_to_every_run() -> None:
    # "Using the unmapped annotation": "wrap it with unmapped to tell .map to treat it as
    # static"
    @task
    def sum_plus(x: int, static_iterable: list[int]) -> int:
        return x + sum(static_iterable)

    @flow
    def sum_it(numbers: list[int], static_iterable: list[int]) -> list[int]:
        futures = sum_plus.map(numbers, unmapped(static_iterable))
        return futures.result()

    assert sum_it([4, 5, 6], [1, 2, 3]) == [10, 11, 12]


def test_bulk_result_is_the_list_comprehension_of_results() -> None:
    # "Bulk PrefectFuture operations": "futures.result()" is "syntactic sugar for" "[future.
    # result() for future in futures]"
    @task
    def square(x: int) -> int:
        return x * x

    @flow
    def both() -> tuple[list[int], list[int], bool]:
        futures = square.map(range(6))
        return (
            futures.result(),
            [f.result() for f in futures],
            isinstance(futures, PrefectFutureList),
        )

    bulk, one_by_one, is_list = both()
    assert bulk == one_by_one == [0, 1, 4, 9, 16, 25]
    assert is_list


def _count_words(text: str) -> int:
    return len(text.split())


def _extract_emails(text: str) -> list[str]:
    return re.findall(r"[\w.+-]+@[\w-]+\.[\w.-]+", text)


def test_tasks_mapped_within_a_task() -> None:
    # "Nested mapped tasks": "you can map tasks within other tasks", with task(op).map made
    # inside the task
    @task
    def analyze_texts(texts: list[str]) -> dict[str, list[Any]]:
        futures = {op.__name__: task(op).map(texts) for op in [_count_words, _extract_emails]}
        wait([f for futs in futures.values() for f in futs])
        return {name: [f.result() for f in futs] for name, futs in futures.items()}

    @flow
    def run_text_analysis() -> dict[str, list[Any]]:
        return analyze_texts(
            texts=[
                "Just visited #Paris! Contact me at visitor@example.com #travel",
                "Working on my new #project. Reach out at developer@example.com",
            ]
        )

    results = run_text_analysis()
    assert results["_count_words"] == [8, 9]
    assert results["_extract_emails"] == [["visitor@example.com"], ["developer@example.com"]]


def test_wait_for_orders_tasks_without_data_dependencies() -> None:
    # "Creating state dependencies": wait_for=[a, b] on .submit, and on a direct call
    # ("If waiting for one task it must still be in a list")
    order: list[str] = []

    def make(name: str, delay: float) -> Any:
        @task(name=name)
        def step() -> None:
            time.sleep(delay)
            order.append(name)

        return step

    task_a, task_b, task_c, task_d = (
        make("a", 0.1),
        make("b", 0.05),
        make("c", 0.0),
        make("d", 0.0),
    )

    @flow
    def my_flow() -> None:
        a = task_a.submit()
        b = task_b.submit()
        c = task_c.submit(wait_for=[a, b])
        task_d(wait_for=[c])

    my_flow()
    assert order[2:] == ["c", "d"]
    assert set(order[:2]) == {"a", "b"}


def test_wait_returns_done_and_not_done_for_handling_failures() -> None:
    # "Handling failures in concurrent work": run concurrent work to completion "even if some
    # tasks fail", then inspect each future's .state; "wait() returns two sets of futures:
    # done and not_done"
    @task
    def process_data(item: int) -> str:
        if item < 0:
            raise ValueError(f"Cannot process negative value: {item}")
        return f"Processed {item}"

    @flow
    def batch_processing() -> tuple[list[str], list[State], int]:
        futures = process_data.map([1, -2, 3, -4, 5])
        done, not_done = wait(futures)
        successful: list[str] = []
        failed: list[State] = []
        for future in done:
            if future.state.is_completed():
                successful.append(future.result())
            else:
                failed.append(future.state)
        return sorted(successful), failed, len(not_done)

    state = batch_processing(return_state=True)
    successful, failed, not_done = state.result(raise_on_failure=False)
    assert successful == ["Processed 1", "Processed 3", "Processed 5"]
    assert len(failed) == 2
    assert all(s.is_failed() for s in failed)
    assert not_done == 0


def test_asyncio_gather_runs_async_tasks_concurrently() -> None:
    # "Using asyncio": async tasks called in an async flow run concurrently with
    # asyncio.gather
    @task
    async def stop_at_floor(floor: float) -> float:
        await asyncio.sleep(floor)
        return floor

    @flow
    async def elevator() -> tuple[list[float], float]:
        start = time.perf_counter()
        floors = await asyncio.gather(*[stop_at_floor(f) for f in (0.2, 0.2, 0.2, 0.1)])
        return list(floors), time.perf_counter() - start

    floors, elapsed = asyncio.run(elevator())
    assert floors == [0.2, 0.2, 0.2, 0.1]
    assert elapsed < 0.5


@dataclass
class Dataset:
    name: str


@dataclass
class ModelConfig:
    name: str


def test_map_with_keywords_a_static_object_and_a_run_name_template() -> None:
    # "Real-world applications": train_model.map(dataset=dataset, model_config=model_configs)
    # maps the list, passes the dataclass to every run, and names runs with
    # task_run_name="train on {dataset.name} with {model_config.name}"; wait(...).done
    from flowbook import runtime

    @task(task_run_name="train on {dataset.name} with {model_config.name}")
    def train_model(dataset: Dataset, model_config: ModelConfig) -> dict[str, str]:
        return {"dataset": dataset.name, "model": model_config.name, "run": runtime.task_run.name}

    @flow
    def evaluate_models(datasets: list[Dataset], model_configs: list[ModelConfig]) -> Any:
        all_futures: list[PrefectFuture[dict[str, str]]] = []
        for dataset in datasets:
            all_futures.extend(train_model.map(dataset=dataset, model_config=model_configs))
        return [future.result() for future in wait(all_futures).done]

    results = evaluate_models(
        datasets=[Dataset("customers"), Dataset("orders")],
        model_configs=[ModelConfig("random_forest"), ModelConfig("gradient_boosting")],
    )
    assert sorted(r["run"] for r in results) == [
        "train on customers with gradient_boosting",
        "train on customers with random_forest",
        "train on orders with gradient_boosting",
        "train on orders with random_forest",
    ]
    assert all(r["run"] == f"train on {r['dataset']} with {r['model']}" for r in results)


# -- how it fails ---------------------------------------------------------------------------


def test_map_over_iterables_of_different_lengths_names_them() -> None:
    # "Using .map": each run takes one item of each mapped iterable; lengths must agree
    @task
    def add(x: int, y: int) -> int:
        return x + y

    @flow
    def mismatched() -> Any:
        return add.map([1, 2, 3], [1, 2]).result()

    with pytest.raises(ValueError, match=r"length") as info:
        mismatched()
    assert "3" in str(info.value)
    assert "2" in str(info.value)


def test_wait_refuses_something_that_is_not_a_future() -> None:
    # "Handling futures": wait() takes the futures of .submit()/.map()
    with pytest.raises(TypeError, match=r"got 'sup' of type str"):
        wait(["sup"])  # type: ignore[list-item]


def test_wait_for_a_dict_waits_for_the_futures_among_its_values() -> None:
    # wait_for takes any collection of futures; a dict's futures are its values, not its keys
    order: list[str] = []

    @task
    def slow() -> None:
        time.sleep(0.2)
        order.append("slow")

    @task
    def after(label: str) -> None:
        order.append(label)

    @flow
    def my_flow() -> None:
        after.submit("submit", wait_for={"x": slow.submit()}).wait()
        after.map(["map"], wait_for={"x": slow.submit()}).wait()

    my_flow()
    assert order == ["slow", "submit", "slow", "map"]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "max_workers must be a positive integer, or None for "),
        ("2", TypeError, "max_workers must be an int, not str"),
        (True, TypeError, "max_workers must be an int, not bool"),
    ],
)
def test_thread_and_process_pools_refuse_the_same_max_workers(
    value: Any, error: type[Exception], message: str
) -> None:
    from flowbook.task_runners import ThreadPoolTaskRunner
    from flowbook.task_runners.process_pool import ProcessPoolTaskRunner

    for runner, default in (
        (ThreadPoolTaskRunner, "the default ("),
        (ProcessPoolTaskRunner, "one process per CPU"),
    ):
        with pytest.raises(error) as raised:
            runner(max_workers=value)
        assert str(raised.value).startswith(f"{runner.__name__}(max_workers={value!r}): {message}")
        if error is ValueError:
            assert default in str(raised.value)
