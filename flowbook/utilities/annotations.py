"""Argument annotations: ``quote``, ``opaque``, ``allow_failure`` and ``unmapped``.

``quote(x)``: the task receives ``x``, which the engine does not look into for futures.
``opaque(future)``: the task receives the future's result, which the engine does not look
into for more futures. ``allow_failure(x)``: the task runs even if upstream runs of futures
in ``x`` failed, and receives their exceptions in their place. ``unmapped(x)``: ``Task.map``
gives ``x`` whole to every mapped run.
"""

from flowbook._annotations import Annotation as BaseAnnotation
from flowbook._annotations import allow_failure, opaque, quote
from flowbook.tasks import unmapped

__all__ = ["BaseAnnotation", "allow_failure", "opaque", "quote", "unmapped"]
