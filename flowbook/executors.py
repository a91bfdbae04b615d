"""Prefect 1 executors, as flowbook task runners.

A Prefect 1 executor said where a flow run's tasks execute. Each one here makes the flowbook
task runner that does the same, a new one per flow run (``task_runner()``):

- ``LocalExecutor()``: ``SequentialTaskRunner``, one task run after another;
- ``LocalDaskExecutor(scheduler="threads")``: ``ConcurrentTaskRunner``, a pool of threads;
- ``LocalDaskExecutor(scheduler="processes")``: ``DaskTaskRunner`` on a local cluster of
  ``num_workers`` single-threaded worker processes (by default one per CPU). Like every local
  Dask cluster of flowbook it is started by the first run that needs it, kept for later runs
  and closed when the process exits, and its workers start without re-importing the main
  module, so a script or notebook needs no ``if __name__ == "__main__"`` guard;
- ``LocalDaskExecutor(scheduler="synchronous")``: ``SequentialTaskRunner``;
- ``DaskExecutor(...)``: ``DaskTaskRunner`` with the same cluster arguments.

Prefect 1 options with no flowbook counterpart are accepted with one ``ExecutorWarning``
naming them.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Literal

from flowbook.run_configs import _jsonable
from flowbook.task_runners.base import TaskRunner
from flowbook.task_runners.concurrent import ConcurrentTaskRunner
from flowbook.task_runners.sequential import SequentialTaskRunner

__all__ = ["DaskExecutor", "Executor", "ExecutorWarning", "LocalDaskExecutor", "LocalExecutor"]


class ExecutorWarning(UserWarning):
    """A Prefect 1 executor option that has no effect in flowbook."""


def _warn_inert(owner: str, names: list[str], why: str) -> None:
    if names:
        warnings.warn(
            f"{owner}: {', '.join(names)} {'does' if len(names) == 1 else 'do'} nothing in "
            f"flowbook ({why})",
            ExecutorWarning,
            stacklevel=3,
        )


class Executor:
    """What a flow's ``executor`` is: a maker of task runners, one per flow run."""

    def task_runner(self) -> TaskRunner:
        """A new task runner for one flow run."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary, with the class name under ``type``."""
        return {"type": type(self).__name__}

    def __repr__(self) -> str:
        args = {k: v for k, v in self.describe().items() if k != "type"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Executor):
            return NotImplemented
        return self.describe() == other.describe()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


class LocalExecutor(Executor):
    """Task runs one after another, on the flow's own thread (``SequentialTaskRunner``)."""

    def task_runner(self) -> TaskRunner:
        return SequentialTaskRunner()


_SCHEDULERS: dict[str, Literal["threads", "processes", "synchronous"]] = {
    "threads": "threads",
    "threading": "threads",
    "processes": "processes",
    "multiprocessing": "processes",
    "synchronous": "synchronous",
    "sync": "synchronous",
    "single-threaded": "synchronous",
}


class LocalDaskExecutor(Executor):
    """Task runs in parallel on this machine: on threads (the default), on worker processes
    (``scheduler="processes"``), or one after another (``scheduler="synchronous"``).

    ``num_workers`` is the number of threads or processes (by default, the thread pool's
    usual size, or one process per CPU). Prefect 1 passed other keyword arguments to Dask's
    configuration; they are accepted with a warning naming them.
    """

    def __init__(
        self, scheduler: str = "threads", num_workers: int | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(scheduler, str) or scheduler.lower() not in _SCHEDULERS:
            raise ValueError(
                f"LocalDaskExecutor(scheduler={scheduler!r}): the scheduler is one of "
                "'threads' (the default), 'processes' or 'synchronous'"
            )
        if num_workers is not None and (
            not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1
        ):
            raise ValueError(
                f"LocalDaskExecutor(num_workers={num_workers!r}): num_workers must be a "
                "positive integer, or None for the default"
            )
        self.scheduler = _SCHEDULERS[scheduler.lower()]
        self.num_workers = num_workers
        self.dask_config = dict(kwargs)
        _warn_inert(
            "LocalDaskExecutor",
            sorted(kwargs),
            "Prefect 1 passed them to Dask's configuration; flowbook's runners take none",
        )
        if self.scheduler == "synchronous" and num_workers is not None:
            _warn_inert(
                "LocalDaskExecutor(scheduler='synchronous')",
                ["num_workers"],
                "a synchronous run has one worker",
            )

    def task_runner(self) -> TaskRunner:
        if self.scheduler == "threads":
            return ConcurrentTaskRunner(max_workers=self.num_workers)
        if self.scheduler == "synchronous":
            return SequentialTaskRunner()
        from flowbook.task_runners.dask import DaskTaskRunner

        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": self.num_workers or os.cpu_count() or 1,
                "threads_per_worker": 1,
                "processes": True,
            }
        )

    def describe(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "scheduler": self.scheduler,
            "num_workers": self.num_workers,
        }


class DaskExecutor(Executor):
    """Task runs on a Dask cluster: a local one made from ``cluster_class``/``cluster_kwargs``
    (``distributed.LocalCluster`` by default, kept for later runs of the process and closed at
    its exit), or the existing scheduler at ``address``. ``adapt_kwargs`` make the local
    cluster adaptive; ``client_kwargs`` go to ``distributed.Client``.

    ``debug=True`` lets a local ``LocalCluster`` show Dask's warnings (flowbook silences all
    but errors by default), as Prefect 1 raised Dask's log level with it; with ``address`` it
    does nothing, since that cluster's logs are its own. Prefect 1's
    ``performance_report_path``, ``disable_cancellation_event`` and ``watch_worker_status``
    are accepted with a warning naming them.
    """

    def __init__(
        self,
        address: str | None = None,
        cluster_class: str | type | None = None,
        cluster_kwargs: dict[str, Any] | None = None,
        adapt_kwargs: dict[str, Any] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        debug: bool | None = None,
        performance_report_path: str | None = None,
        disable_cancellation_event: bool = False,
        watch_worker_status: bool | None = None,
    ) -> None:
        from flowbook.task_runners.dask import DaskTaskRunner

        if debug is not None and not isinstance(debug, bool):
            raise TypeError(f"DaskExecutor(debug={debug!r}): debug must be True or False")
        # checked with DaskTaskRunner's messages before anything is copied
        DaskTaskRunner(
            address=address,
            cluster_class=cluster_class,
            cluster_kwargs=cluster_kwargs,
            adapt_kwargs=adapt_kwargs,
            client_kwargs=client_kwargs,
        )
        self.address = address
        self.cluster_class = cluster_class
        self.cluster_kwargs = dict(cluster_kwargs) if cluster_kwargs is not None else None
        self.adapt_kwargs = dict(adapt_kwargs) if adapt_kwargs is not None else None
        self.client_kwargs = dict(client_kwargs) if client_kwargs is not None else None
        self.debug = bool(debug)
        self._runner = DaskTaskRunner(**self._runner_kwargs())
        inert = [
            name
            for name, value, default in (
                ("performance_report_path", performance_report_path, None),
                ("disable_cancellation_event", disable_cancellation_event, False),
                ("watch_worker_status", watch_worker_status, None),
            )
            if value != default
        ]
        _warn_inert(
            "DaskExecutor",
            inert,
            "flowbook reports task runs and workers itself, on the runs and in %flowbook dask",
        )

    def _runner_kwargs(self) -> dict[str, Any]:
        cluster_kwargs = self.cluster_kwargs
        if (
            self.debug
            and self.address is None
            and self.cluster_class
            in (
                None,
                "distributed.LocalCluster",
                "distributed.deploy.local.LocalCluster",
            )
        ):
            cluster_kwargs = {"silence_logs": logging.WARNING, **(cluster_kwargs or {})}
        return {
            "address": self.address,
            "cluster_class": self.cluster_class,
            "cluster_kwargs": cluster_kwargs,
            "adapt_kwargs": self.adapt_kwargs,
            "client_kwargs": self.client_kwargs,
        }

    def task_runner(self) -> TaskRunner:
        return self._runner.duplicate()

    def describe(self) -> dict[str, Any]:
        cls = self.cluster_class
        if cls is not None and not isinstance(cls, str):
            cls = f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"
        return {
            "type": type(self).__name__,
            "address": self.address,
            "cluster_class": cls,
            "cluster_kwargs": _jsonable(self.cluster_kwargs),
            "adapt_kwargs": _jsonable(self.adapt_kwargs),
            "client_kwargs": _jsonable(self.client_kwargs),
            "debug": self.debug,
        }
