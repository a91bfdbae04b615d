"""ConcurrentTaskRunner: Prefect 2's name for the thread pool runner (``thread_pool.py``).

Prefect 3 made ``ConcurrentTaskRunner`` an alias of ``ThreadPoolTaskRunner``. Here it is a
subclass, so that code written for Prefect 2 keeps its runner's name in reprs and error
messages, and a class check makes the two names one runner: every ``ThreadPoolTaskRunner``
(the default runner of flows included) is an instance of ``ConcurrentTaskRunner`` too.
"""

from __future__ import annotations

import abc
from typing import Any

from flowbook.task_runners.thread_pool import (
    DEFAULT_MAX_WORKERS,
    ThreadPoolTaskRunner,
    check_max_workers,
)

__all__ = ["DEFAULT_MAX_WORKERS", "ConcurrentTaskRunner", "check_max_workers"]


class _SameRunner(abc.ABCMeta):
    """``isinstance(x, ConcurrentTaskRunner)`` holds for every thread pool runner."""

    # By the class's real bases, not by issubclass(): ABCMeta's checks of the base classes ask
    # their subclasses, this one included, and would come back here without end.
    def __instancecheck__(cls, instance: Any) -> bool:
        return ThreadPoolTaskRunner in type(instance).__mro__

    def __subclasscheck__(cls, subclass: type) -> bool:
        return isinstance(subclass, type) and ThreadPoolTaskRunner in subclass.__mro__


class ConcurrentTaskRunner(ThreadPoolTaskRunner, metaclass=_SameRunner):
    """Runs submitted task runs concurrently on a pool of ``max_workers`` threads (Prefect 2's
    name of ``ThreadPoolTaskRunner``)."""
