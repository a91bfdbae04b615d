"""The DaskTaskRunner options around a connection: a running ``cluster`` object, the
performance report of a run (``performance_report_path``), ``dask.annotate(...)`` carried from
the submitting thread to the dispatcher thread, and the worker initializer of
``ProcessPoolTaskRunner``. Checks of these options name the bad value.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowbook.task_runners.dask import DaskTaskRunner, _Connection

__all__ = [
    "InitializerKey",
    "callable_name",
    "check_cluster",
    "check_report_path",
    "check_report_path_type",
    "cluster_address",
    "config_difference",
    "finish_report",
    "get_annotations",
    "register_initializer",
    "start_report",
    "usable_annotations",
]

_log = logging.getLogger("flowbook.dask")


def check_cluster(
    cluster: Any, address: str | None, cluster_class: Any, cluster_kwargs: Any
) -> None:
    if address is not None:
        raise ValueError(
            f"DaskTaskRunner(cluster={cluster!r}, address={address!r}): give a running "
            "cluster object or a scheduler address, not both"
        )
    if cluster_class is not None or cluster_kwargs:
        raise ValueError(
            f"DaskTaskRunner(cluster={cluster!r}) uses that running cluster; cluster_class "
            "and cluster_kwargs make a new cluster and cannot be given with it"
        )
    # a cluster object exists only if distributed was imported: no import needed to check
    deploy = sys.modules.get("distributed.deploy")
    if deploy is None or not isinstance(cluster, deploy.Cluster):
        raise TypeError(
            f"DaskTaskRunner(cluster={cluster!r}): cluster must be a running Dask cluster "
            f"object (such as distributed.LocalCluster(...)), not {type(cluster).__name__}; "
            "to connect to a scheduler by its address, give address='tcp://host:8786'"
        )


def cluster_address(cluster: Any) -> str:
    status = getattr(cluster, "status", None)
    state = str(getattr(status, "name", status))
    if state in ("closing", "closed", "failed"):
        raise RuntimeError(
            f"DaskTaskRunner(cluster={cluster!r}): the cluster is {state}; give a running "
            "cluster (flowbook never closes a cluster it was given)"
        )
    return str(cluster.scheduler_address)


def check_report_path_type(path: Any) -> str:
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text.strip():
        raise TypeError(
            f"DaskTaskRunner(performance_report_path={path!r}): give the path of the HTML "
            "file to write the Dask performance report to, such as 'dask-report.html'"
        )
    return text


def check_report_path(path: str) -> None:
    """Fail before the run's first task if the report could not be written at its end."""
    if "://" in path:  # a URL: written through fsspec, as Dask does; not checked here
        return
    target = Path(path).expanduser()  # '~' is the user's home, as fsspec reads it when writing
    problem = None
    if target.is_dir():
        problem = "it is a directory"
    elif not target.parent.is_dir():
        problem = f"its directory {str(target.parent)!r} does not exist"
    elif not os.access(target.parent, os.W_OK | os.X_OK) or (
        target.exists() and not os.access(target, os.W_OK)
    ):
        problem = "it is not writable"
    if problem is not None:
        raise ValueError(
            f"DaskTaskRunner(performance_report_path={path!r}): cannot write the Dask "
            f"performance report there ({problem}); give a file path in a writable directory"
        )


def start_report(conn: _Connection, path: str) -> Any:
    from flowbook.task_runners.dask import _import_distributed

    distributed = _import_distributed()

    report = distributed.performance_report(filename=path)
    # the report finds its client through distributed.get_client(): this connection's
    with distributed.Client.as_current(conn.client):
        report.__enter__()
    return report


def finish_report(conn: _Connection, report: Any, path: str | None) -> None:
    from flowbook.task_runners.dask import _import_distributed

    distributed = _import_distributed()

    try:
        with distributed.Client.as_current(conn.client):
            report.__exit__(None, None, None)
    except Exception as exc:  # the run has ended: report it, do not change its state
        _log.error(
            "flowbook: the Dask performance report could not be written to %r (%s: %s)",
            path,
            type(exc).__name__,
            exc,
        )


def get_annotations() -> dict[str, Any]:
    """The ``dask.annotate(...)`` annotations in force in this thread (read per submission)."""
    global _dask_annotations
    if _dask_annotations is None:
        from dask.base import get_annotations as read  # imported already: runner connected

        _dask_annotations = read
    return _dask_annotations()


_dask_annotations: Callable[[], dict[str, Any]] | None = None


def usable_annotations(annotations: dict[str, Any]) -> dict[str, Any] | None:
    # retries are the task's own (@task(retries=...)), counted and delayed in the kernel: a
    # Dask-level retry would run an attempt again behind the run's back
    usable = {k: v for k, v in annotations.items() if k != "retries"}
    return usable or None


def register_initializer(client: Any, runner: DaskTaskRunner) -> None:
    """Run the runner's ``initializer(*initargs)`` in every worker, now and in workers started
    later; an initializer that raises (or cannot be pickled) fails the start, naming it."""
    from flowbook.task_runners._dask_plugins import RunInitializer

    assert runner._initializer is not None
    initializer, initargs = runner._initializer
    try:
        client.register_plugin(RunInitializer(initializer, initargs), name=RunInitializer.name)
    except Exception as exc:
        raise RuntimeError(
            f"{runner!r}: initializer {callable_name(initializer)}(*{initargs!r}) failed in "
            f"a worker process ({type(exc).__name__}: {exc}); no task run was started"
        ) from exc


def callable_name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


class InitializerKey:
    """The ``(initializer, initargs)`` part of a local cluster's configuration key.

    Two keys are the same configuration when they hold the same objects, or objects that pickle
    to the same bytes (what the worker processes receive); never by ``repr``, which two
    different argument values can share (a large numpy array, a custom ``__repr__``)."""

    __slots__ = ("_digest", "initargs", "initializer")

    def __init__(self, initializer: Callable[..., Any], initargs: tuple[Any, ...]) -> None:
        self.initializer = initializer
        self.initargs = initargs
        self._digest: bytes | None = None

    def digest(self) -> bytes | None:
        """The hash of the pickled pair (computed once; None when it cannot be pickled)."""
        if self._digest is None:
            import hashlib

            import cloudpickle  # type: ignore[import-untyped]

            try:
                data = cloudpickle.dumps((self.initializer, self.initargs))
            except Exception:
                return None
            self._digest = hashlib.sha256(data).digest()
        return self._digest

    def _same(self, other: InitializerKey) -> bool:
        return (
            self.initializer is other.initializer
            and len(self.initargs) == len(other.initargs)
            and all(a is b for a, b in zip(self.initargs, other.initargs, strict=True))
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InitializerKey):
            return NotImplemented
        if self._same(other):
            return True
        mine = self.digest()
        return mine is not None and mine == other.digest()

    def __hash__(self) -> int:  # equal keys may hold different objects: a coarse hash
        return hash(callable_name(self.initializer))

    def difference(self, other: InitializerKey) -> str:
        """Which of the two differs from ``other``'s, for a message."""
        if self.initializer is not other.initializer and (
            InitializerKey(self.initializer, ()) != InitializerKey(other.initializer, ())
        ):
            return "initializer"
        return "initargs"

    def __repr__(self) -> str:
        return f"{callable_name(self.initializer)}(*{self.initargs!r})"


# the parts of a local cluster's configuration key (DaskTaskRunner._config_key), in order
_LOCAL_KEY_PARTS = ("cluster_class", "cluster_kwargs", "adapt_kwargs", "client_kwargs")


def config_difference(running: tuple[Any, ...], wanted: tuple[Any, ...]) -> str:
    """The options in which a local cluster configuration ``wanted`` differs from the
    ``running`` one, such as ``'initargs'`` or ``'cluster_kwargs and initializer'``."""
    parts: list[str] = []
    for name, old, new in zip(_LOCAL_KEY_PARTS, running[1:5], wanted[1:5], strict=True):
        if old != new:
            parts.append(name)
    old_init, new_init = running[-1], wanted[-1]
    if old_init != new_init:
        if old_init is None or new_init is None:
            parts.append("initializer")
        else:
            parts.append(new_init.difference(old_init))
    return " and ".join(parts) or "configuration"
