"""``@flow(env=...)``: environment variables set for a run and restored after it.

The environment is process-wide, so runs that overlap in one process share it. A variable is
set when the first run asking for it starts and restored (to its old value, or removed) when
the last such run ends. Two overlapping runs asking for *different* values of one variable
cannot both be honoured: the second one fails at its start with an error naming the variable,
both values and the run that holds it, and nothing is changed.

``Holdings`` is that bookkeeping for any process-wide setting; the current directory of
``LocalRun(working_dir=...)`` (``flowbook.run_configs``) is held the same way.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from flowbook.exceptions import EnvConflictError

__all__ = ["Holdings", "acquire_env", "env_without_runs", "release_env"]


@dataclass
class _Holding:
    value: str
    original: str | None
    holders: list[str]


class Holdings:
    """Process-wide settings (by key) held by runs, each run by its label.

    ``read(key)`` is the setting's current value (None: unset), ``write(key, value)`` sets it
    (None: unsets it), and ``conflict(run_label, key, value, held_value, holder)`` is the error
    for a run asking for another value than the one held.
    """

    def __init__(
        self,
        read: Callable[[str], str | None],
        write: Callable[[str, str | None], None],
        conflict: Callable[[str, str, str, str, str], Exception],
    ) -> None:
        self._read = read
        self._write = write
        self._conflict = conflict
        self._lock = threading.Lock()
        self._held: dict[str, _Holding] = {}

    def acquire(self, run_label: str, values: dict[str, str]) -> None:
        """Set ``values`` for the run, or raise the conflict error and change nothing."""
        if not values:
            return
        with self._lock:
            for key, value in values.items():
                holding = self._held.get(key)
                if holding is not None and holding.value != value:
                    raise self._conflict(run_label, key, value, holding.value, holding.holders[0])
            done: list[str] = []
            try:
                for key, value in values.items():
                    holding = self._held.get(key)
                    if holding is None:
                        original = self._read(key)
                        self._write(key, value)
                        self._held[key] = _Holding(value, original, [run_label])
                    else:
                        holding.holders.append(run_label)
                    done.append(key)
            except BaseException:
                self._release_locked(run_label, done)
                raise

    def originals(self) -> dict[str, str | None]:
        """The values the held settings had before the runs that hold them (None: unset)."""
        with self._lock:
            return {key: holding.original for key, holding in self._held.items()}

    def release(self, run_label: str, keys: list[str] | dict[str, str]) -> None:
        """Undo ``acquire`` for that run; the last holder of a key restores its old value."""
        if not keys:
            return
        with self._lock:
            self._release_locked(run_label, list(keys))

    def _release_locked(self, run_label: str, keys: list[str]) -> None:
        for key in keys:
            holding = self._held.get(key)
            if holding is None or run_label not in holding.holders:
                continue
            holding.holders.remove(run_label)
            if not holding.holders:
                del self._held[key]
                # an old value that cannot be set again (a directory gone by now) is not
                # the run's failure: the current one stays
                with contextlib.suppress(OSError):
                    self._write(key, holding.original)


def _write_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def _env_conflict(run_label: str, key: str, value: str, held: str, holder: str) -> Exception:
    return EnvConflictError(
        f"{run_label} sets environment variable {key}={value!r}, but {holder} is running in "
        f"this process with {key}={held!r}; the environment is shared by the whole process, so "
        "run these flows one after the other, or pass the value as a parameter"
    )


_env = Holdings(os.environ.get, _write_env, _env_conflict)


def acquire_env(run_label: str, env: dict[str, str]) -> None:
    """Set ``env`` for the run called ``run_label``, or raise ``EnvConflictError``."""
    _env.acquire(run_label, env)


def release_env(run_label: str, env: dict[str, str]) -> None:
    """Undo ``acquire_env`` for that run; the last holder restores the old value."""
    _env.release(run_label, env)


def env_without_runs() -> dict[str, str | None]:
    """The environment variables runs hold now, with the values they had before those runs
    (None: unset). A process started meanwhile (a Dask worker) inherits the runs' values and
    puts these back, so that a run's ``env=`` does not outlive it there."""
    return _env.originals()
