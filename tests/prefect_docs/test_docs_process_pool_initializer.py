"""ProcessPoolTaskRunner(initializer=..., initargs=...): docs/v3/concepts/task-runners.mdx,
"Configure a task runner", and the ProcessPoolTaskRunner docstring of src/prefect/task_runners.py
(PrefectHQ/prefect repository).

"Prefect runs initializer(*initargs) once in each worker subprocess [...] before the worker
executes any tasks". The worker processes are real (a local Dask cluster of two processes).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from flowbook import flow, task

pytest.importorskip("distributed")

from flowbook.task_runners import ProcessPoolTaskRunner
from flowbook.task_runners import dask as fb_dask

PAGE = "docs/v3/concepts/task-runners.mdx"


@pytest.fixture(scope="module", autouse=True)
def _close_cluster() -> Iterator[None]:
    yield
    fb_dask.close_cluster()


def add_to_path(*paths: str) -> None:
    # the docs' example initializer, counting its calls in the process
    sys.path[:0] = paths
    os.environ["FLOWBOOK_TEST_INIT_CALLS"] = str(
        int(os.environ.get("FLOWBOOK_TEST_INIT_CALLS", "0")) + 1
    )


def refuses_to_start(reason: str) -> None:
    raise OSError(f"cannot start: {reason}")


@task
def _seen(x: int) -> tuple[int, bool, str | None, int]:
    return (
        os.getpid(),
        "/opt/my_app/libs" in sys.path,
        os.environ.get("FLOWBOOK_TEST_INIT_CALLS"),
        x,
    )


def test_the_initializer_runs_once_in_each_worker_process_before_tasks() -> None:
    # task-runners.mdx, "Configure a task runner": ProcessPoolTaskRunner(initializer=add_to_path,
    # initargs=("/opt/my_app/libs",)); "runs initializer(*initargs) once in each worker
    # subprocess [...] before the worker executes any tasks"
    runner = ProcessPoolTaskRunner(
        max_workers=2, initializer=add_to_path, initargs=("/opt/my_app/libs",)
    )

    @flow(task_runner=runner)
    def my_flow() -> list[tuple[int, bool, str | None, int]]:
        return _seen.map(range(8)).result()

    first = my_flow()
    second = my_flow()  # a later run on the same worker processes: not run again
    assert [s[3] for s in first] == list(range(8))
    assert {s[0] for s in first + second} <= set(info_pids())
    assert os.getpid() not in {s[0] for s in first}
    assert {(s[1], s[2]) for s in first + second} == {(True, "1")}
    assert "/opt/my_app/libs" not in sys.path  # the kernel's own process is left alone
    assert len(info_pids()) == 2
    assert all(_init_calls(pid) == "1" for pid in info_pids())

    # worker processes started later (here: restarted) run it too, before their tasks
    before = set(info_pids())
    assert fb_dask.restart_cluster()
    third = my_flow()
    assert not {s[0] for s in third} & before
    assert {(s[1], s[2]) for s in third} == {(True, "1")}


def info_pids() -> list[int]:
    info = fb_dask.cluster_info()
    assert info is not None
    return [w["pid"] for w in info["workers"]]


def _init_calls(pid: int) -> str | None:
    conn = fb_dask._local
    assert conn is not None
    calls = conn.client.run(lambda: os.environ.get("FLOWBOOK_TEST_INIT_CALLS"))
    by_pid = conn.client.run(os.getpid)
    return next(calls[a] for a, p in by_pid.items() if p == pid)  # type: ignore[no-any-return]


def test_the_initializer_is_kept_by_duplicate_and_shown() -> None:
    # the runner given to @flow is a template copied for each run (task-runners.mdx)
    runner = ProcessPoolTaskRunner(max_workers=2, initializer=add_to_path, initargs=["/x"])
    copy = runner.duplicate()
    assert (copy.initializer, copy.initargs) == (add_to_path, ("/x",))
    assert repr(copy) == (
        "ProcessPoolTaskRunner(max_workers=2, initializer=add_to_path, initargs=('/x',))"
    )


class _Setting:
    """An initializer argument whose repr does not show its value."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<setting>"


def set_setting(setting: _Setting) -> None:
    os.environ["FLOWBOOK_TEST_SETTING"] = setting.value


@task
def _setting() -> str | None:
    return os.environ.get("FLOWBOOK_TEST_SETTING")


def test_runners_whose_initargs_share_a_repr_get_their_own_arguments() -> None:
    # task-runners.mdx, "Configure a task runner": "runs initializer(*initargs) once in each
    # worker subprocess": each runner's own initargs, even where two values print alike
    fb_dask.close_cluster()
    first, second = _Setting("one"), _Setting("two")
    assert repr(first) == repr(second)

    @flow(task_runner=ProcessPoolTaskRunner(1, initializer=set_setting, initargs=(first,)))
    def with_first() -> str | None:
        return _setting.submit().result()

    @flow(task_runner=ProcessPoolTaskRunner(1, initializer=set_setting, initargs=(second,)))
    def with_second() -> str | None:
        return _setting.submit().result()

    assert with_first() == "one"
    assert with_second() == "two"
    # an equal value (another object pickling alike) keeps the running worker processes
    pids = info_pids()

    @flow(
        task_runner=ProcessPoolTaskRunner(1, initializer=set_setting, initargs=(_Setting("two"),))
    )
    def with_equal() -> str | None:
        return _setting.submit().result()

    assert with_equal() == "two"
    assert info_pids() == pids


# -- how it fails ---------------------------------------------------------------------------


def test_a_conflicting_runner_during_a_run_names_the_differing_part() -> None:
    # one local cluster serves a process: a runner asking for other initargs while a run uses
    # it is refused, naming what differs
    fb_dask.close_cluster()

    @flow(task_runner=ProcessPoolTaskRunner(1, initializer=set_setting, initargs=(_Setting("b"),)))
    def inner() -> str | None:
        return _setting.submit().result()

    @flow(task_runner=ProcessPoolTaskRunner(1, initializer=set_setting, initargs=(_Setting("a"),)))
    def outer() -> str | None:
        _setting.submit().wait()
        return inner()

    with pytest.raises(RuntimeError, match=r"another initargs\); one local cluster serves"):
        outer()

    @flow(task_runner=ProcessPoolTaskRunner(1, initializer=add_to_path, initargs=("/x",)))
    def other_initializer() -> str | None:
        return _setting.submit().result()

    @flow(task_runner=ProcessPoolTaskRunner(1, initializer=set_setting, initargs=(_Setting("a"),)))
    def outer_again() -> str | None:
        _setting.submit().wait()
        return other_initializer()

    with pytest.raises(RuntimeError, match=r"another initializer\); one local cluster serves"):
        outer_again()


def test_an_initializer_that_raises_fails_the_run_naming_it() -> None:
    @flow(
        task_runner=ProcessPoolTaskRunner(
            max_workers=1, initializer=refuses_to_start, initargs=("no licence",)
        )
    )
    def my_flow() -> int:
        return _seen.submit(1).result()[3]

    with pytest.raises(
        RuntimeError,
        match=r"initializer refuses_to_start\(\*\('no licence',\)\) failed in a worker "
        r"process \(OSError: cannot start: no licence\)",
    ):
        my_flow()
    assert fb_dask.cluster_info() is None  # the cluster it started is closed again


def test_bad_initializer_arguments_are_named() -> None:
    with pytest.raises(TypeError, match=r"ProcessPoolTaskRunner\(initializer='add_to_path'\)"):
        ProcessPoolTaskRunner(initializer="add_to_path")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ProcessPoolTaskRunner\(initargs='/opt/libs'\)"):
        ProcessPoolTaskRunner(initializer=add_to_path, initargs="/opt/libs")
    with pytest.raises(ValueError, match=r"initargs=\('/opt/libs',\)\) was given without"):
        ProcessPoolTaskRunner(initargs=("/opt/libs",))
