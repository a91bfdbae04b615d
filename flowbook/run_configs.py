"""Prefect 1 run configurations: where and with what environment a flow run happens.

Prefect 1 handed a flow's ``run_config`` to an agent, which started the run on a platform
(a local process, a Docker container, a Kubernetes job, ...). flowbook runs flows in the
process that asks for them, so a run config keeps only what applies to such a run:

- ``env``: environment variables set for the run and restored after it, with the same
  bookkeeping as ``@flow(env=...)`` (``flowbook.engine.env``): a functional flow copies its
  run config's ``env`` into its ``env``;
- ``working_dir`` (``LocalRun`` only): the current directory while the run goes, restored
  after it (see ``RunConfig.working_directory``);
- ``labels``: kept and recorded, as a description of where a flow may run. Nothing routes runs
  on them here: there are no agents to choose between.

Every other option (an image, a job template, CPU and memory requests, ...) describes a
platform flowbook does not start. Such a class is accepted, so that Prefect 1 code runs as
written, with one ``RunConfigWarning`` per class and process naming the options that do nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from flowbook.engine.env import Holdings
from flowbook.exceptions import FlowbookError

__all__ = [
    "DockerRun",
    "ECSRun",
    "KubernetesRun",
    "LocalRun",
    "RunConfig",
    "RunConfigWarning",
    "UniversalRun",
    "VertexRun",
    "WorkingDirConflictError",
]


class RunConfigWarning(UserWarning):
    """A Prefect 1 run config option that has no effect in flowbook."""


class WorkingDirConflictError(FlowbookError, ValueError):
    """Two runs in one process asked for different working directories at the same time."""


# -- validation ---------------------------------------------------------------------------------
def _check_env(owner: str, env: Any) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise TypeError(
            f"{owner}(env={env!r}): env must be a dict of environment variable names to "
            f"string values, such as env={{'GREETING': 'Hello'}}, not {type(env).__name__}"
        )
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise TypeError(
                f"{owner}(env=...): {key!r} is not a usable environment variable name; use a "
                "non-empty string without '=' such as 'GREETING'"
            )
        if not isinstance(value, str):
            raise TypeError(
                f"{owner}(env=...): the value of {key} is {value!r} ({type(value).__name__}); "
                f"environment variables hold strings: write {key!r}: {str(value)!r}"
            )
    return dict(env)


def _check_labels(owner: str, labels: Any) -> list[str]:
    if labels is None:
        return []
    if isinstance(labels, str):
        raise TypeError(
            f"{owner}(labels={labels!r}): labels must be a list of strings; a single label is "
            f"written labels=[{labels!r}]"
        )
    if not isinstance(labels, Iterable):
        raise TypeError(
            f"{owner}(labels={labels!r}): labels must be a list of strings, such as "
            f"labels=['dev'], not {type(labels).__name__}"
        )
    out: list[str] = []
    for label in labels:
        if not isinstance(label, str):
            raise TypeError(
                f"{owner}(labels=...): label {label!r} is not a string "
                f"({type(label).__name__}); labels are strings such as 'dev'"
            )
        if label not in out:  # Prefect 1 kept them as a set
            out.append(label)
    return out


def _check_working_dir(owner: str, working_dir: Any) -> str | None:
    if working_dir is None:
        return None
    if not isinstance(working_dir, str | os.PathLike):
        raise TypeError(
            f"{owner}(working_dir={working_dir!r}): working_dir must be a path (a str or "
            f"pathlib.Path), not {type(working_dir).__name__}"
        )
    # relative to where the run config was made, as Prefect 1 did
    return os.path.abspath(os.fspath(working_dir))


# -- the working directory of runs ----------------------------------------------------------------
_CWD = "cwd"  # the one key of the holdings below


def _read_cwd(key: str) -> str | None:
    return os.getcwd()


def _write_cwd(key: str, path: str | None) -> None:
    if path is not None:
        os.chdir(path)


def _cwd_conflict(run_label: str, key: str, path: str, held: str, holder: str) -> Exception:
    return WorkingDirConflictError(
        f"{run_label} runs in working_dir={path!r}, but {holder} is running in this process "
        f"in {held!r}; the current directory is shared by the whole process, so run these "
        "flows one after the other, or use absolute paths instead of working_dir"
    )


_cwd = Holdings(_read_cwd, _write_cwd, _cwd_conflict)


# -- run configs --------------------------------------------------------------------------------
class RunConfig:
    """The part of a Prefect 1 run config that flowbook honours: ``env``, ``working_dir``
    and ``labels``; ``describe()`` is what the registry records."""

    # options a subclass accepts that describe a platform flowbook does not start
    _inert: ClassVar[tuple[str, ...]] = ()
    _warned: ClassVar[set[str]] = set()
    _warned_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, env: dict[str, str] | None = None, labels: Iterable[str] | None = None):
        name = type(self).__name__
        self.env: dict[str, str] = _check_env(name, env)
        self.labels: list[str] = _check_labels(name, labels)
        self.working_dir: str | None = None
        self.options: dict[str, Any] = {}

    def _keep_inert(self, options: dict[str, Any]) -> None:
        """Keep the options that do nothing here (for ``describe()``), and warn once per class
        and process about the class: its runs happen in this process, not on its platform."""
        self.options = {k: v for k, v in options.items() if v is not None}
        cls = type(self).__name__
        with RunConfig._warned_lock:
            if cls in RunConfig._warned:
                return
            RunConfig._warned.add(cls)
        warnings.warn(
            f"{cls} is accepted, but flowbook runs flows in this process: its env and labels "
            f"apply, while {', '.join(self._inert)} do nothing here",
            RunConfigWarning,
            stacklevel=3,
        )

    @contextlib.contextmanager
    def working_directory(self, run_label: str) -> Iterator[None]:
        """Hold the run's ``working_dir`` as the current directory while the block runs.

        The current directory belongs to the whole process, not to a thread: the run's task
        runs on threads see it (as they must), and so would unrelated threads of the process.
        So, as for ``env``, the first run asking for a directory changes to it, later runs
        asking for the same one share it, the last one restores the old directory, and a run
        asking for a *different* one while another holds it fails at its start with
        ``WorkingDirConflictError`` and nothing changes. Dask worker processes keep their
        own current directory. Without ``working_dir`` nothing happens.
        """
        path = self.working_dir
        if path is None:
            yield
            return
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"{run_label} runs in working_dir={path!r}, which is not an existing "
                "directory; create it, or give LocalRun(working_dir=...) a directory that exists"
            )
        _cwd.acquire(run_label, {_CWD: path})
        try:
            yield
        finally:
            _cwd.release(run_label, [_CWD])

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: ``type``, ``env``, ``labels``, ``working_dir``, and the options
        that do nothing here (by their repr when they are not JSON values)."""
        return {
            "type": type(self).__name__,
            "env": dict(self.env),
            "labels": list(self.labels),
            "working_dir": self.working_dir,
            **({"options": {k: _jsonable(v) for k, v in self.options.items()}}
               if self.options else {}),
        }  # fmt: skip

    def __repr__(self) -> str:
        parts = [f"env={self.env!r}"] if self.env else []
        if self.working_dir is not None:
            parts.append(f"working_dir={self.working_dir!r}")
        if self.labels:
            parts.append(f"labels={self.labels!r}")
        parts += [f"{k}={v!r}" for k, v in self.options.items()]
        return f"{type(self).__name__}({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunConfig):
            return NotImplemented
        return self.describe() == other.describe()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


def _jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it (for ``describe()``, here and in ``flowbook.executors``):
    dictionary keys as strings, as JSON writes them; other values by their repr."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


class UniversalRun(RunConfig):
    """Prefect 1's default run config: ``env`` and ``labels`` only."""


class LocalRun(RunConfig):
    """A run in a local process: ``env``, ``working_dir`` and ``labels`` all apply here."""

    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        working_dir: str | os.PathLike[str] | None = None,
        labels: Iterable[str] | None = None,
    ) -> None:
        super().__init__(env=env, labels=labels)
        self.working_dir = _check_working_dir("LocalRun", working_dir)


class DockerRun(RunConfig):
    """A run in a Docker container in Prefect 1; here a run in this process."""

    _inert = ("image", "ports", "host_config")

    def __init__(
        self,
        *,
        image: str | None = None,
        env: dict[str, str] | None = None,
        labels: Iterable[str] | None = None,
        ports: Iterable[int] | None = None,
        host_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(env=env, labels=labels)
        self._keep_inert(
            {"image": image, "ports": list(ports) if ports else None, "host_config": host_config}
        )


class KubernetesRun(RunConfig):
    """A Kubernetes job in Prefect 1; here a run in this process."""

    _inert = (
        "job_template_path",
        "job_template",
        "image",
        "cpu_limit",
        "cpu_request",
        "memory_limit",
        "memory_request",
        "service_account_name",
        "image_pull_secrets",
        "image_pull_policy",
    )

    def __init__(
        self,
        *,
        job_template_path: str | None = None,
        job_template: str | dict[str, Any] | None = None,
        image: str | None = None,
        env: dict[str, str] | None = None,
        cpu_limit: float | str | None = None,
        cpu_request: float | str | None = None,
        memory_limit: str | None = None,
        memory_request: str | None = None,
        service_account_name: str | None = None,
        image_pull_secrets: Iterable[str] | None = None,
        labels: Iterable[str] | None = None,
        image_pull_policy: str | None = None,
    ) -> None:
        super().__init__(env=env, labels=labels)
        self._keep_inert(
            {
                "job_template_path": job_template_path,
                "job_template": job_template,
                "image": image,
                "cpu_limit": cpu_limit,
                "cpu_request": cpu_request,
                "memory_limit": memory_limit,
                "memory_request": memory_request,
                "service_account_name": service_account_name,
                "image_pull_secrets": list(image_pull_secrets) if image_pull_secrets else None,
                "image_pull_policy": image_pull_policy,
            }
        )


class ECSRun(RunConfig):
    """An AWS ECS task in Prefect 1; here a run in this process."""

    _inert = (
        "task_definition",
        "task_definition_path",
        "task_definition_arn",
        "image",
        "cpu",
        "memory",
        "task_role_arn",
        "execution_role_arn",
        "run_task_kwargs",
    )

    def __init__(
        self,
        *,
        task_definition: dict[str, Any] | None = None,
        task_definition_path: str | None = None,
        task_definition_arn: str | None = None,
        image: str | None = None,
        env: dict[str, str] | None = None,
        cpu: int | str | None = None,
        memory: int | str | None = None,
        task_role_arn: str | None = None,
        execution_role_arn: str | None = None,
        run_task_kwargs: dict[str, Any] | None = None,
        labels: Iterable[str] | None = None,
    ) -> None:
        super().__init__(env=env, labels=labels)
        self._keep_inert(
            {
                "task_definition": task_definition,
                "task_definition_path": task_definition_path,
                "task_definition_arn": task_definition_arn,
                "image": image,
                "cpu": cpu,
                "memory": memory,
                "task_role_arn": task_role_arn,
                "execution_role_arn": execution_role_arn,
                "run_task_kwargs": run_task_kwargs,
            }
        )


class VertexRun(RunConfig):
    """A Google Vertex AI custom job in Prefect 1; here a run in this process."""

    _inert = (
        "image",
        "machine_type",
        "scheduling",
        "service_account",
        "network",
        "worker_pool_specs",
    )

    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        labels: Iterable[str] | None = None,
        image: str | None = None,
        machine_type: str = "e2-standard-4",
        scheduling: dict[str, Any] | None = None,
        service_account: str | None = None,
        network: str | None = None,
        worker_pool_specs: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(env=env, labels=labels)
        self._keep_inert(
            {
                "image": image,
                "machine_type": machine_type,
                "scheduling": scheduling,
                "service_account": service_account,
                "network": network,
                "worker_pool_specs": worker_pool_specs,
            }
        )
