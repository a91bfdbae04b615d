"""Keeping a large ``.map()``'s submission near its runs.

A map creates its runs faster than a pool of threads ends them (about 70,000 runs a second
against 30,000 for a no-op task on this machine kind, the GIL shared). Each run waiting for a
worker holds its engine, a copy of the caller's context and its Pending state, about 260
bytes: a 1,000,000-run map kept about 650,000 of them at once, 200 MB of a 950 MB peak. So
when the flow's own thread maps more than ``AHEAD`` inputs on a runner that queues its calls
(the thread pool), it looks at the queue every ``CHECK_EVERY`` runs and, while more than
``AHEAD`` wait there, waits for the workers to take them down to ``AHEAD // 2``.

Waiting is bounded, so that ``.map()`` returns at most a few times later than it would have,
and never hangs:

- the waits of one map add up to at most ``BUDGET`` times the time it spent submitting (a
  wait that would pass that ends; the map waits again once it has earned more);
- when the workers take no queued call for ``STALL_S`` seconds (every worker busy with a slow
  run, or with runs that cannot go on until the flow goes past the map, such as a task
  waiting for an event the flow sets after ``.map()`` returns), the map stops waiting and
  submits the rest at once;
- a cancelled flow run ends the wait at once;
- a kernel interrupt, or a timeout or cancel sent to the flow's body, stops the map at once
  (while it waits, and at each look at the queue) when the map was called from a sync body's
  own code: the map loop between two submitted runs is as safe a place to stop as a wait for
  a run's result (``flowbook.engine.interrupts``), and a large map would otherwise hold the
  interrupt back until it had submitted every run. While the map waits, its thread is
  marked as waiting for runs, so a kernel interrupt that reaches the thread is raised there
  at once. (SIGINT reaches only the main thread: a flow with a timeout, or an async subflow
  called from a kernel cell, runs its body on a thread of its own, and the interrupt reaches
  the map once the flow run is cancelled: the map stops waiting and submits the rest, which
  the cancelled runner ends at once. A timeout or cancel of an async body reaches it through
  its event loop once the map returns.)

A map called inside a task (on a worker thread) is not paced: its own worker would be one of
those it waits for. Nor is a map on a runner that keeps no queue of its own (Dask, which has
its own scheduler; the sequential runner).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from flowbook.engine.interrupts import Body, current_body

if TYPE_CHECKING:
    from flowbook.engine.runs import FlowRun
    from flowbook.task_runners.base import TaskRunner

__all__ = ["AHEAD", "BUDGET", "CHECK_EVERY", "STALL_S", "MapPacer"]

AHEAD = 10_000  # runs a map may keep queued ahead of the workers
CHECK_EVERY = 512  # runs submitted between two looks at the queue
BUDGET = 10.0  # a map waits at most this many times as long as it has spent submitting
STALL_S = 1.0  # no queued call taken for this long: the map stops waiting
_STEP_S = 0.005  # the longest single sleep of a wait (an end of the wait is seen this soon)


class MapPacer:
    """Paces one ``.map()`` call: ``pace()`` every ``CHECK_EVERY`` submitted runs."""

    __slots__ = (
        "_body",
        "_cancel",
        "_runner",
        "_started",
        "_thread_body",
        "_waited",
        "stopped",
        "waits",
    )

    def __init__(self, runner: TaskRunner, cancel: threading.Event) -> None:
        self._runner = runner
        self._cancel = cancel
        # the body the map was called from directly: not that of a sync run around an async
        # flow called in its thread (whose timeout or cancel is not this map's to raise)
        body = current_body()
        self._body = body if body is not None and body.depth == 1 else None
        # either way, a kernel interrupt may stop the thread while it waits
        self._thread_body = body
        self._started = time.monotonic()
        self._waited = 0.0
        self.waits = 0  # how many times the map waited
        self.stopped = False  # the map waits no more (stalled or cancelled)

    @classmethod
    def for_map(cls, size: int, flow_run: FlowRun | None, in_task: bool) -> MapPacer | None:
        """A pacer for a map of ``size`` runs in ``flow_run``, or None when it needs none:
        a small map, a map outside a flow or inside a task, a runner that queues nothing."""
        if size <= AHEAD or flow_run is None or in_task:
            return None
        runner = flow_run.task_runner
        if runner is None or not runner.queues_calls:
            return None
        return cls(runner, flow_run.cancel_event)

    def pace(self) -> None:
        """Wait while more than ``AHEAD`` calls are queued, until they are ``AHEAD // 2``;
        raise an interrupt sent to the caller's body meanwhile."""
        body = self._body
        if body is not None and body.pending is not None:
            _raise_pending(body)
        if self.stopped:
            return
        queued = self._runner.queued_calls
        size = queued()
        if size <= AHEAD:
            return
        now = time.monotonic()
        waited = self._waited
        deadline = now + BUDGET * (now - self._started - waited) - waited
        if deadline <= now:
            return  # no budget left for now (it grows as the map goes on submitting)
        low = AHEAD // 2
        cancel = self._cancel
        last_size, last_taken = size, now
        self.waits += 1
        thread_body = self._thread_body
        if thread_body is not None:
            # a kernel interrupt is raised here at once, as in a wait for a run
            thread_body.waiting += 1
        try:
            while size > low:
                t = time.monotonic()
                if size < last_size:
                    last_size, last_taken = size, t
                if t >= deadline:
                    break
                if t - last_taken >= STALL_S:
                    self.stopped = True
                    break
                if cancel.wait(min(deadline - t, _STEP_S)):
                    self.stopped = True
                    break
                if body is not None and body.pending is not None:
                    _raise_pending(body)
                size = queued()
        finally:
            if thread_body is not None:
                thread_body.waiting -= 1
            self._waited = waited + (time.monotonic() - now)


def _raise_pending(body: Body) -> None:
    exc_type, body.pending = body.pending, None
    assert exc_type is not None
    raise exc_type
