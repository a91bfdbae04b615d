"""Keep the cyclic garbage collector off the heap that was there before a flow run started.

A flow run allocates many small objects (task runs, states, futures, events) that live until
it ends. Those allocations trigger CPython's full (generation 2) collections, and each of them
walks every container object in the process: in a notebook, that includes everything the
user's earlier cells built. With ``FLOWBOOK_GC_FREEZE=on`` (the default), the first top-level
flow run to start calls ``gc.freeze()``, which moves the objects that exist at that moment to
the collector's permanent generation, and the last one to end calls ``gc.unfreeze()``, which
puts them back. Meanwhile collections walk only the objects made during the runs.

Nothing changes for memory that is freed by reference counting (nearly all of it). Cyclic
garbage made of objects that existed before the run is collected after the run instead of
during it. If something else in the process froze objects already (``gc.get_freeze_count()``
is not 0), flowbook leaves the collector alone, so as not to undo that freeze.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["hold", "release"]

_lock = threading.Lock()
_holders = 0
_frozen = False  # whether the current freeze is flowbook's


def hold() -> bool:
    """Called as a top-level flow run starts; True if ``release()`` must be called at its end."""
    global _holders, _frozen
    from flowbook.settings import get_settings

    if get_settings().gc_freeze != "on":
        return False
    with _lock:
        if _holders == 0:
            _frozen = gc.get_freeze_count() == 0
            if _frozen:
                gc.freeze()
        _holders += 1
    return True


def release() -> None:
    """Called as a top-level flow run that ``hold()`` returned True for ends."""
    global _holders, _frozen
    with _lock:
        _holders -= 1
        if _holders == 0 and _frozen:
            _frozen = False
            gc.unfreeze()
