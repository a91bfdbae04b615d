"""Cache keys: task identity, and ``task_input_hash``.

``task_input_hash`` keys on the task's identity (see ``identity.py``), the task's normalised
source (editing the body invalidates; comments and blank lines do not) and the content hash
of every argument.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowbook.caching.hashing import UnhashableInputError, stable_hash
from flowbook.caching.source import source_hash

if TYPE_CHECKING:
    from flowbook.engine.runs import FlowRun, TaskRun
    from flowbook.tasks import Task

__all__ = ["CacheKeyContext", "CacheKeyWarning", "task_input_hash"]


class CacheKeyWarning(UserWarning):
    """A call could not be keyed for the cache and runs uncached."""


@dataclass(frozen=True)
class CacheKeyContext:
    """What a ``cache_key_fn(context, parameters)`` receives as ``context``."""

    task: Task[..., Any]
    task_run: TaskRun
    flow_run: FlowRun | None

    @property
    def parameters(self) -> dict[str, Any]:
        return self.task_run.parameters


def task_input_hash(context: CacheKeyContext, arguments: dict[str, Any]) -> str | None:
    """Cache key from the task's identity, its source and the content of its arguments.

    Returns None (the call runs uncached) with a ``CacheKeyWarning`` naming the argument when
    an argument cannot be hashed by content.
    """
    task = context.task
    digest = hashlib.sha256()
    digest.update(task.task_key.encode())
    digest.update(b"\0")
    digest.update(source_hash(task.fn).encode())
    for name in sorted(arguments):
        try:
            value_hash = stable_hash(arguments[name])
        except UnhashableInputError as exc:
            warnings.warn(
                f"task {task.name!r}: argument {name!r} cannot be hashed by content ({exc}); "
                "this call runs without the cache. Pass data that can be compared by value, "
                "or give the task a cache_key_fn that keys on something stable",
                CacheKeyWarning,
                stacklevel=2,
            )
            return None
        digest.update(b"\0" + name.encode() + b"=" + value_hash.encode())
    return digest.hexdigest()
