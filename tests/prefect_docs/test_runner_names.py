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
from flowbook.engine.runs import current_flow_run
from flowbook.task_runners import ConcurrentTaskRunner, TaskRunner, ThreadPoolTaskRunner
from flowbook.task_runners.base import SubmittedCall


class _Noop(SubmittedCall):
    upstream = ()

    def run(self) -> None:
        pass

    def cancel(self, reason: str) -> None:
        pass


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

        @flow(task_runner=runner)
        def main() -> tuple[bytes, bool]:
            _name.submit().wait()  # the run's own runner has started its pool
            started = current_flow_run.get().task_runner
            return pickle.dumps(started), started._pool is not None

        data, pool_was_started = main()
        assert pool_was_started
        for copy in (pickle.loads(data), pickle.loads(pickle.dumps(main.task_runner))):
            assert type(copy) is type(runner)
            assert (copy.max_workers, copy._pool) == (3, None)  # a fresh, unstarted runner

            @flow(task_runner=copy)
            def again() -> str:
                return _name.submit().result()

            assert again().startswith("flowbook-task")


@task
def _name() -> str:
    return threading.current_thread().name


class _LabelledRunner(ThreadPoolTaskRunner):
    """A subclass whose __init__ takes other arguments than max_workers."""

    def __init__(self, label: str, *, max_workers: int | None = None) -> None:
        super().__init__(max_workers=max_workers)
        self.label = label

    def duplicate(self) -> _LabelledRunner:
        return type(self)(self.label, max_workers=self._explicit_max_workers)


def test_a_subclass_with_its_own_arguments_pickles() -> None:
    runner = _LabelledRunner("fast", max_workers=2)
    with runner:
        runner._execute(_Noop())  # starts the pool
        assert runner._pool is not None
        copy = pickle.loads(pickle.dumps(runner))
    assert type(copy) is _LabelledRunner
    assert (copy.label, copy.max_workers, copy._pool) == ("fast", 2, None)

    @flow(task_runner=copy)
    def main() -> str:
        return _name.submit().result()

    assert main().startswith("flowbook-task")


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
