"""``@flow(env=...)``: environment variables set for a run and restored after it.

The environment is process-wide, so runs that overlap in one process share it. A variable is
set when the first run asking for it starts and restored (to its old value, or removed) when
the last such run ends. Two overlapping runs asking for *different* values of one variable
cannot both be honoured: the second one fails at its start with an error naming the variable,
both values and the run that holds it, and nothing is changed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from flowbook.exceptions import EnvConflictError

__all__ = ["acquire_env", "release_env"]


@dataclass
class _Holding:
    value: str
    original: str | None
    holders: list[str]


_lock = threading.Lock()
_held: dict[str, _Holding] = {}


def acquire_env(run_label: str, env: dict[str, str]) -> None:
    """Set ``env`` for the run called ``run_label``, or raise ``EnvConflictError``."""
    if not env:
        return
    with _lock:
        for key, value in env.items():
            holding = _held.get(key)
            if holding is not None and holding.value != value:
                raise EnvConflictError(
                    f"{run_label} sets environment variable {key}={value!r}, but "
                    f"{holding.holders[0]} is running in this process with {key}="
                    f"{holding.value!r}; the environment is shared by the whole process, so "
                    "run these flows one after the other, or pass the value as a parameter"
                )
        for key, value in env.items():
            holding = _held.get(key)
            if holding is None:
                _held[key] = _Holding(value, os.environ.get(key), [run_label])
                os.environ[key] = value
            else:
                holding.holders.append(run_label)


def release_env(run_label: str, env: dict[str, str]) -> None:
    """Undo ``acquire_env`` for that run; the last holder restores the old value."""
    if not env:
        return
    with _lock:
        for key in env:
            holding = _held.get(key)
            if holding is None or run_label not in holding.holders:
                continue
            holding.holders.remove(run_label)
            if not holding.holders:
                del _held[key]
                if holding.original is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = holding.original
