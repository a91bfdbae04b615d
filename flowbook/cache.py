"""The task cache: list, clear and invalidate entries, explain misses, explore in a notebook.

import flowbook.cache
flowbook.cache.entries(task="hello_task")
flowbook.cache.clear(expired=True)
flowbook.cache.why_missed("hello_task").reason   # "input 'name_input' changed (...)"
flowbook.cache.explorer()                        # the widget (needs anywidget)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flowbook.caching.misses import MissExplanation
from flowbook.store.queries import CacheEntryInfo

if TYPE_CHECKING:
    from flowbook.jupyter.widgets.cache_view import CacheExplorer
    from flowbook.store import Store

__all__ = [
    "CacheEntryInfo",
    "MissExplanation",
    "clear",
    "entries",
    "explorer",
    "invalidate",
    "misses",
    "why_missed",
]


def _store() -> Store:
    from flowbook.store import StoreError, get_store

    store = get_store()
    if store is None:
        raise StoreError(
            "the cache is in memory because FLOWBOOK_STORE=off; unset it to keep a run store"
        )
    return store


def entries(task: str | None = None, flow: str | None = None) -> list[CacheEntryInfo]:
    """Cache entries, newest first, optionally of one task or one flow."""
    from flowbook.store.queries import cache_entries_info

    return cache_entries_info(_store(), task=task, flow=flow)


def clear(
    task: str | None = None,
    flow: str | None = None,
    expired: bool = False,
    all: bool = False,
) -> int:
    """Delete cache entries of a task, of a flow, the expired ones, or all; returns the count."""
    from flowbook.store.queries import clear_cache

    return clear_cache(_store(), task=task, flow=flow, expired=expired, all=all)


def invalidate(selected: Iterable[CacheEntryInfo | tuple[str, str]]) -> int:
    """Delete these entries (as ``entries()`` lists them, or ``(task_key, key)`` pairs);
    returns how many were still there."""
    from flowbook.store.queries import invalidate_cache

    pairs: list[tuple[str, str]] = []
    for item in selected:
        if isinstance(item, CacheEntryInfo):
            pairs.append((item.task_key, item.key))
        elif (
            isinstance(item, (tuple, list))
            and len(item) == 2
            and all(isinstance(part, str) for part in item)
        ):
            pairs.append((item[0], item[1]))
        else:
            raise TypeError(
                f"invalidate() takes cache entries (from flowbook.cache.entries()) or "
                f"(task_key, key) pairs of strings; got {item!r}"
            )
    return invalidate_cache(_store(), pairs)


def why_missed(task: Any) -> MissExplanation:
    """Why the latest cached call of ``task`` missed the cache.

    ``task`` is a task (the decorated function), its name, or its task key (``entries()``
    lists both). The explanation's ``reason`` says it in a sentence; its other fields say it
    as data: ``cause``, ``changed_inputs``, ``source_changed``, ``expired_at``, ...
    Raises ``LookupError`` when no miss of that task is recorded.
    """
    from flowbook.store.queries import why_missed as _why_missed

    return _why_missed(_store(), _task_ref(task))


def misses(task: str | None = None, flow: str | None = None) -> list[MissExplanation]:
    """The latest miss of every cached task (or of one task name, or one flow), explained;
    newest first."""
    from flowbook.store.queries import cache_miss_explanations

    return cache_miss_explanations(_store(), task=task, flow=flow)


def explorer() -> CacheExplorer:
    """A notebook widget listing the cache by flow and task, with a filter, invalidation of
    selected entries and why each task's latest call missed. Needs ``anywidget``
    (``pip install flowbook[lab]``)."""
    try:
        from flowbook.jupyter.widgets.cache_view import CacheExplorer
    except ImportError as exc:
        raise ImportError(
            f"the cache explorer is a Jupyter widget and needs anywidget ({exc}); install it "
            "with `pip install flowbook[lab]`, or use flowbook.cache.entries() and "
            "flowbook.cache.why_missed()"
        ) from exc
    return CacheExplorer()


def _task_ref(task: Any) -> str:
    if isinstance(task, str):
        if not task:
            raise ValueError("why_missed() needs a task, a task name or a task key; got ''")
        return task
    task_key = getattr(task, "task_key", None)
    if isinstance(task_key, str):
        return task_key
    raise TypeError(
        f"why_missed() takes a task, a task name or a task key; got {task!r} of type "
        f"{type(task).__name__}"
    )
