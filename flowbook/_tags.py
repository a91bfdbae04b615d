"""``flowbook.tags(...)``: tags for the flow and task runs created inside a ``with`` block.

The tags of the open blocks are held in a context variable, so they travel with submitted
task runs to their threads as the current run does, and nested blocks add to the outer
ones. A run's tags are its flow's or task's own tags plus those of the blocks open where it
is created; they are recorded with the run like any other tag.

The engine asks ``open_blocks`` (one module attribute) before reading the context variable,
so runs created while no block is open anywhere in the process pay nothing more.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_tags", "open_blocks", "tags", "with_context_tags"]

_current: ContextVar[frozenset[str]] = ContextVar("flowbook_tags", default=frozenset())
# How many ``with tags(...)`` blocks are open in the process, on any thread.
open_blocks = 0
_count_lock = threading.Lock()


def current_tags() -> frozenset[str]:
    """The tags of the blocks open in the current context."""
    return _current.get()


@contextmanager
def tags(*new_tags: str) -> Iterator[set[str]]:
    """Add ``new_tags`` to every flow run and task run created inside the block.

    Tags combine with those of enclosing blocks and with the flow's or task's own ``tags=``.
    The block yields the set of tags now in force.
    """
    for tag in new_tags:
        if not isinstance(tag, str):
            raise TypeError(
                f"flowbook.tags({', '.join(map(repr, new_tags))}): each tag must be a string; "
                f"got {tag!r} of type {type(tag).__name__}"
            )
    global open_blocks
    combined = _current.get() | frozenset(new_tags)
    token = _current.set(combined)
    with _count_lock:
        open_blocks += 1
    try:
        yield set(combined)
    finally:
        with _count_lock:
            open_blocks -= 1
        _current.reset(token)


def with_context_tags(own: tuple[str, ...]) -> tuple[str, ...]:
    """``own`` tags plus those of the open blocks, sorted (as ``tags=`` options are)."""
    extra = _current.get()
    if not extra:
        return own
    return tuple(sorted(extra.union(own)))
