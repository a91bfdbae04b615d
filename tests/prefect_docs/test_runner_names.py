"""ThreadPoolTaskRunner is the default runner; ConcurrentTaskRunner is the same runner.

Follows docs/v3/concepts/task-runners.mdx, "Available task runners" ("The default task runner
in Prefect is the ThreadPoolTaskRunner"), and Prefect 3's src/prefect/task_runners.py, where
``ConcurrentTaskRunner`` names ``ThreadPoolTaskRunner``. Prefect 2's name keeps working as
the seed examples use it: ``task_runner=ConcurrentTaskRunner()``, class checks, repr, pickling.
"""

from __future__ import annotations

import pickle
import threading

import pytest

from flowbook import flow, task
from flowbook.task_runners import ConcurrentTaskRunner, TaskRunner, ThreadPoolTaskRunner


def test_the_default_runner_is_a_thread_pool_under_both_names() -> None:
    @flow
    def plain() -> None:
        pass

    runner = plain.task_runner
    assert type(runner) is ThreadPoolTaskRunner
    assert isinstance(runner, ConcurrentTaskRunner)
    assert isinstance(plain.with_options(retries=1).task_runner, ThreadPoolTaskRunner)


def test_both_names_are_one_runner_for_class_checks() -> None:
    old = ConcurrentTaskRunner(max_workers=2)
    assert isinstance(old, ThreadPoolTaskRunner)
    assert isinstance(old, TaskRunner)
    assert issubclass(ThreadPoolTaskRunner, ConcurrentTaskRunner)
    assert issubclass(ConcurrentTaskRunner, ThreadPoolTaskRunner)
    assert not isinstance(object(), ConcurrentTaskRunner)
    assert not issubclass(int, ConcurrentTaskRunner)


def test_each_name_keeps_its_repr_and_pickles() -> None:
    old, new = ConcurrentTaskRunner(max_workers=3), ThreadPoolTaskRunner(max_workers=3)
    assert repr(old) == "ConcurrentTaskRunner(max_workers=3)"
    assert repr(new) == "ThreadPoolTaskRunner(max_workers=3)"
    for runner in (old, new):
        copy = pickle.loads(pickle.dumps(runner.duplicate()))
        assert type(copy) is type(runner)
        assert copy.max_workers == 3


def test_a_prefect_2_flow_runs_on_threads() -> None:
    @task
    def where() -> str:
        return threading.current_thread().name

    @flow(task_runner=ConcurrentTaskRunner())
    def main() -> list[str]:
        return [f.result() for f in [where.submit(), where.submit()]]

    names = main()
    assert all(name != threading.current_thread().name for name in names)


# how it fails: a bad max_workers names the class the user wrote
def test_bad_max_workers_names_the_class_used() -> None:
    with pytest.raises(ValueError, match=r"^ConcurrentTaskRunner\(max_workers=0\)"):
        ConcurrentTaskRunner(max_workers=0)
    with pytest.raises(TypeError, match=r"^ThreadPoolTaskRunner\(max_workers='2'\)"):
        ThreadPoolTaskRunner(max_workers="2")  # type: ignore[arg-type]
