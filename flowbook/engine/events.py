"""Events and the event bus: how the engine tells the rest of flowbook what happened.

The engine is the only code that changes run state. Every change is announced as an event
on the process-wide ``bus``; the console printer, the store and the notebook widget are
subscribers. They react to events and never drive a run, so the engine runs the same with
no subscriber at all (which is also its fastest path).

Subscribers are called synchronously on the thread that emitted the event, so they must be
quick: a subscriber that does real work (SQL, rendering) puts the event on its own queue and
does the work on its own thread. A subscriber that raises is reported once as a warning and
then skipped for that event; it never fails a run.

Subscription is per event class, so emitting an event nobody listens to costs one dict
look-up, and the engine can ask ``bus.wants(EventClass)`` before building an event at all.
A ``StateChanged`` subscriber also says which states it is told (``states=``): a task run's
first state (``FIRST_STATES``: the Pending it is created in, which ``TaskRunCreated`` tells
already; a subflow call's record gets its first state as an ordinary change), states of type
RUNNING (``RUNNING_STATES``) and every other state (``OTHER_STATES``: final ones, Scheduled,
Paused, a flow run's Pending). ``bus.wants(StateChanged)`` answers for the other states. A
task run goes through all three kinds, so a subscriber that ignores some of them (the console
at INFO prints final states only) is not called for them at all.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

    from flowbook.engine.runs import FlowRun, TaskRun
    from flowbook.states import State

__all__ = [
    "ALL_STATES",
    "FIRST_STATES",
    "OTHER_STATES",
    "RUNNING_STATES",
    "Event",
    "EventBus",
    "FlowRunCreated",
    "FlowRunFinished",
    "LogEmitted",
    "StateChanged",
    "TaskRunCreated",
    "bus",
]


class Event:
    """Base class of all events."""

    __slots__ = ()


# Events are built on the hot path (four per task run), so they are plain slotted classes with
# a bare __init__: a frozen dataclass costs several times more to create. Treat them as
# read-only.


class FlowRunCreated(Event):
    """A flow run was created (before it starts running)."""

    __slots__ = ("flow_run",)

    def __init__(self, flow_run: FlowRun) -> None:
        self.flow_run = flow_run


class TaskRunCreated(Event):
    """A task run was created inside a flow run (or alone, for a task called outside flows).

    ``upstream`` holds the ids of the task runs it depends on: data dependencies (futures
    passed as arguments) and ``wait_for``; ``upstream_runs`` those runs (the event does not
    keep them past its delivery: a subscriber that needs more than their ids takes it then).
    """

    __slots__ = ("task_run", "upstream", "upstream_runs")

    def __init__(
        self,
        task_run: TaskRun,
        upstream: tuple[str, ...] = (),
        upstream_runs: tuple[TaskRun, ...] = (),
    ) -> None:
        self.task_run = task_run
        self.upstream = upstream
        self.upstream_runs = upstream_runs


class StateChanged(Event):
    """A run entered a new state. ``run`` is a FlowRun or a TaskRun."""

    __slots__ = ("previous", "run", "state")

    def __init__(self, run: FlowRun | TaskRun, state: State, previous: State | None) -> None:
        self.run = run
        self.state = state
        self.previous = previous


class FlowRunFinished(Event):
    """A flow run reached its final state and its task runner has shut down."""

    __slots__ = ("flow_run", "state")

    def __init__(self, flow_run: FlowRun, state: State) -> None:
        self.flow_run = flow_run
        self.state = state


class LogEmitted(Event):
    """A log line (from a run logger, a captured print, or the engine)."""

    __slots__ = ("flow_run_id", "record", "task_run_id")

    def __init__(
        self, record: logging.LogRecord, flow_run_id: str | None, task_run_id: str | None
    ) -> None:
        self.record = record
        self.flow_run_id = flow_run_id
        self.task_run_id = task_run_id


Subscriber = Callable[[Any], None]

# Which StateChanged events a subscriber is told (``EventBus.subscribe(..., states=...)``).
FIRST_STATES = 1  # a task run's first state (Pending, as it is created)
RUNNING_STATES = 2  # states of type RUNNING (Running, Retrying), of task and flow runs
OTHER_STATES = 4  # every other state
ALL_STATES = FIRST_STATES | RUNNING_STATES | OTHER_STATES


class _StateKey:
    """A key of ``EventBus._subscribers`` for the subscribers of one kind of state."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<StateChanged subscribers: {self.name}>"


# the subscribers of OTHER_STATES are those of StateChanged itself; the engine emits the two
# other kinds to these keys (EventBus.emit_to)
FIRST_STATE_KEY = _StateKey("first states")
RUNNING_STATE_KEY = _StateKey("running states")


class EventBus:
    """Delivers events to the subscribers of their class."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Copy-on-write tuples: emit() reads without a lock.
        self._subscribers: dict[type[Event] | _StateKey, tuple[Subscriber, ...]] = {}
        self._barriers: tuple[Callable[[Any], None], ...] = ()
        self._warned: set[int] = set()

    def subscribe(
        self,
        kinds: tuple[type[Event], ...],
        fn: Callable[[Any], None],
        *,
        states: int = ALL_STATES,
    ) -> None:
        """Call ``fn(event)`` for every emitted event whose class is one of ``kinds``; of the
        ``StateChanged`` events, those of the kinds of state in ``states`` (``FIRST_STATES``,
        ``RUNNING_STATES``, ``OTHER_STATES``, or'ed together)."""
        if states & ~ALL_STATES or not states & ALL_STATES:
            raise ValueError(
                f"states={states!r}: use FIRST_STATES, RUNNING_STATES, OTHER_STATES or an "
                "or of them (ALL_STATES for every state)"
            )
        keys: list[type[Event] | _StateKey] = []
        for kind in kinds:
            if kind is not StateChanged:
                keys.append(kind)
                continue
            if states & OTHER_STATES:
                keys.append(StateChanged)
            if states & FIRST_STATES:
                keys.append(FIRST_STATE_KEY)
            if states & RUNNING_STATES:
                keys.append(RUNNING_STATE_KEY)
        with self._lock:
            for key in keys:
                current = self._subscribers.get(key, ())
                if fn not in current:
                    self._subscribers[key] = (*current, fn)

    def unsubscribe(self, fn: Callable[[Any], None]) -> None:
        with self._lock:
            for kind, subs in list(self._subscribers.items()):
                kept = tuple(s for s in subs if s != fn)
                if kept:
                    self._subscribers[kind] = kept
                else:
                    del self._subscribers[kind]

    def add_barrier(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(flow_run)`` when a flow run ends, before its caller gets the result.

        For subscribers that must finish something for the run first (the store commits the
        run's rows). ``fn`` should return promptly once its work for that run is done.
        """
        with self._lock:
            if fn not in self._barriers:
                self._barriers = (*self._barriers, fn)

    def remove_barrier(self, fn: Callable[[Any], None]) -> None:
        with self._lock:
            self._barriers = tuple(b for b in self._barriers if b != fn)

    def barrier(self, flow_run: Any) -> None:
        """Wait for every barrier subscriber to be done with ``flow_run``."""
        for fn in self._barriers:
            try:
                fn(flow_run)
            except Exception as exc:  # a subscriber must never fail a run
                warnings.warn(
                    f"flowbook barrier {fn!r} raised {exc!r}; the run's result is unaffected",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def wants(self, kind: type[Event]) -> bool:
        """True when at least one subscriber listens to ``kind``."""
        return kind in self._subscribers

    def emit(self, event: Event) -> None:
        self.emit_to(type(event), event)

    def emit_to(self, key: type[Event] | _StateKey, event: Event) -> None:
        """Call the subscribers of ``key`` (an event class, or one of the keys of a kind of
        state: ``FIRST_STATE_KEY``, ``RUNNING_STATE_KEY``) with ``event``."""
        held = None
        for fn in self._subscribers.get(key, ()):
            try:
                fn(event)
            except Exception as exc:  # a subscriber must never fail a run
                once = id(fn)
                if once not in self._warned:
                    self._warned.add(once)
                    warnings.warn(
                        f"flowbook event subscriber {fn!r} raised {exc!r}; "
                        "the run goes on (this warning is shown once per subscriber)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            except BaseException as exc:  # an interrupt: the others are told first
                held = held or exc
        if held is not None:
            raise held


bus = EventBus()
