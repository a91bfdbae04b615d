"""Run records: what one flow run or task run is, while it runs.

These are plain objects with slots. Only the engine writes to them; subscribers and user code
read them (``flowbook.runtime`` reads the current ones from two context variables). A run's
``state`` always holds its latest state; its history is the sequence of ``StateChanged``
events, which the store keeps.
"""

from __future__ import annotations

import random
import threading
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from flowbook import _run_defaults
from flowbook.states import State

if TYPE_CHECKING:
    from flowbook.engine.interrupts import AsyncBody, Body
    from flowbook.flows import Flow
    from flowbook.futures import TaskRunFuture
    from flowbook.task_runners.base import TaskRunner
    from flowbook.tasks import Task

__all__ = [
    "FlowRun",
    "TaskRun",
    "current_attempt",
    "current_flow_run",
    "current_task_run",
    "ended_attempt",
    "is_async_run",
]


def new_id() -> str:
    """A random version-4 UUID string (flow runs, processes: ids people shorten to 8 digits).

    ``uuid.uuid4()`` reads ``os.urandom`` on every call, a system call that costs more than a
    whole task run's bookkeeping; ``random`` is seeded from it at start and reseeded in forked
    children, which is enough for identifiers (they are not secrets).
    """
    n = (_getrandbits(128) & _V4_MASK) | _V4_BITS
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_ordered_id() -> str:
    """A time-ordered UUID string (version 7: milliseconds since the epoch, then random bits),
    for task runs.

    Ids made one after another sort near each other, so the store's primary-key index of task
    runs grows at its end instead of at random places: inserting the rows of a large map stays
    as fast at the millionth run as at the first. (Their first digits are the time, so they
    are not for shortening; flow runs keep random ids.)
    """
    global _ms_prefix
    ms = _time_ns() // 1_000_000
    cached = _ms_prefix
    if cached[0] != ms:  # the first id of this millisecond: its time digits, formatted once
        h = f"{ms:012x}"
        cached = (ms, f"{h[:8]}-{h[8:]}-7")
        _ms_prefix = cached
    # 76 random bits: 12 after the version digit, 14 after the variant bits (0b10), then 48
    r = _getrandbits(76)
    return f"{cached[1]}{r >> 64:03x}-{0x8000 | (r >> 48) & 0x3FFF:04x}-{r & _LOW_48:012x}"


_getrandbits = random.getrandbits
_V4_MASK = ~((0xF000 << 64) | (0xC000 << 48))
_V4_BITS = (0x4000 << 64) | (0x8000 << 48)
_time_ns = time.time_ns
_LOW_48 = (1 << 48) - 1
# (millisecond, "tttttttt-tttt-7") of the last id made: one tuple, swapped whole between threads
_ms_prefix: tuple[int, str] = (-1, "")


class FlowRun:
    """One run of a flow. ``run_count`` counts attempts (1 on the first, 2 on the first retry)."""

    __slots__ = (
        "_counters",
        "_lock",
        "background",
        "cancel_event",
        "cell_id",
        "created_s",
        "end_s",
        "flow",
        "id",
        "log_prints",
        "memo",
        "name",
        "notebook",
        "parameters",
        "parent_task_run",
        "resumed_from",
        "run_count",
        "start_s",
        "state",
        "tags",
        "task_runner",
        "task_runs",
    )

    def __init__(
        self,
        flow: Flow[..., Any],
        parameters: dict[str, Any],
        parent_task_run: TaskRun | None,
        tags: tuple[str, ...],
    ) -> None:
        self.id = new_id()
        self.created_s = time.time()
        self.flow = flow
        self.name = ""
        self.parameters = parameters
        self.parent_task_run = parent_task_run
        self.tags = tags
        self.run_count = 0
        self.state: State | None = None
        self.task_runner: TaskRunner | None = None
        # Every task run of this flow run, subflow records included, in creation order.
        self.task_runs: list[TaskRun] = []
        log_prints: bool | None = flow.log_prints
        if log_prints is None and parent_task_run is not None:
            # a nested flow without its own log_prints inherits its parent's (as tasks do);
            # the ignore: mypy has not yet seen FlowRun.log_prints, assigned just below
            parent = parent_task_run.flow_run
            log_prints = parent.log_prints if parent is not None else None  # type: ignore[has-type]
        self.log_prints = _run_defaults.log_prints if log_prints is None else bool(log_prints)
        self.cancel_event = threading.Event()
        # the BackgroundRun handle of a run started with Flow.run_background
        self.background: Any = None
        self.memo: dict[tuple[str, int, str], State] = {}
        self.resumed_from: str | None = None
        # where a top-level run started in a Jupyter kernel came from (see flowbook._origin)
        self.notebook: str | None = None
        self.cell_id: str | None = None
        self.start_s: float | None = None
        self.end_s: float | None = None
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def flow_name(self) -> str:
        return self.flow.name

    @property
    def project(self) -> str | None:
        return self.flow.project

    @property
    def version(self) -> str | None:
        return self.flow.version

    @property
    def parent_flow_run_id(self) -> str | None:
        parent = self.parent_task_run
        return parent.flow_run.id if parent is not None and parent.flow_run is not None else None

    def next_dynamic_key(self, task_key: str) -> int:
        """The index of the next call of one task inside this flow run (0, 1, 2, ...)."""
        with self._lock:
            n = self._counters.get(task_key, 0)
            self._counters[task_key] = n + 1
        return n

    def __repr__(self) -> str:
        state = self.state.short() if self.state else "new"
        return f"<FlowRun {self.name!r} of flow {self.flow.name!r}: {state}>"


class TaskRun:
    """One run of a task (or, with ``subflow_run`` set, the parent's record of a subflow call).

    ``args``/``kwargs`` are the call's arguments; once upstream futures are resolved they hold
    the resolved values. ``parameters`` binds them to the function's signature on first use
    (defaults included), because many runs never need it and binding is not free.
    """

    __slots__ = (
        "_map",
        "_name",
        "_parameters",
        "args",
        "body",
        "cache_key",
        "created_s",
        "dynamic_key",
        "end_s",
        "flow_run",
        "future",
        "id",
        "kwargs",
        "log_prints",
        "observed",
        "run_count",
        "start_s",
        "state",
        "subflow_run",
        "tags",
        "task",
        "upstream_ids",
    )

    def __init__(
        self,
        task: Task[..., Any] | None,
        flow_run: FlowRun | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        dynamic_key: int,
    ) -> None:
        self.id = new_ordered_id()
        self.created_s = time.time()
        self.task = task
        self.flow_run = flow_run
        self.args = args
        self.kwargs = kwargs
        self.dynamic_key = dynamic_key
        # None: the default name, made when read (see ``name``)
        self._name: str | None = None
        self.tags: tuple[str, ...] = ()
        self.run_count = 0
        self.state: State | None = None
        self.cache_key: str | None = None
        self.upstream_ids: tuple[str, ...] = ()
        self.future: TaskRunFuture[Any] | None = None
        self.subflow_run: FlowRun | None = None
        self.log_prints = False
        # for mapped runs (see ``map_group``): (id of the .map() call, number of runs it made),
        # one tuple shared by the map's runs, when the run's index is its dynamic key; else
        # (id, number, index)
        self._map: tuple[str, int] | tuple[str, int, int] | None = None
        # the body while it runs (flowbook.engine.interrupts): what a cancel interrupts
        self.body: Body | AsyncBody | None = None
        # True once the run's failure was raised into user code (so the flow need not re-raise)
        self.observed = False
        self.start_s: float | None = None
        self.end_s: float | None = None
        self._parameters: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The run's name: the one its task's ``task_run_name`` gave, or ``{task}-{index}``.

        The default is made when read, not kept: a map over a million inputs keeps no million
        name strings (names are read a few times per run: its console line, its store row)."""
        name = self._name
        if name is not None:
            return name
        task = self.task
        return f"{task.name}-{self.dynamic_key}" if task is not None else ""

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    @property
    def map_group(self) -> tuple[str, int, int] | None:
        """(id of the ``.map()`` call, number of runs it made, this run's index) for a mapped
        run, else None."""
        group = self._map
        if group is None or len(group) == 3:
            return group
        return (group[0], group[1], self.dynamic_key)

    @map_group.setter
    def map_group(self, group: tuple[str, int, int] | None) -> None:
        global _last_map_base
        if group is None or group[2] != self.dynamic_key:
            self._map = group
            return
        map_id, size, _ = group
        base = _last_map_base  # the runs of one map share the tuple of its id and size
        if base is None or base[0] != map_id or base[1] != size:
            base = _last_map_base = (map_id, size)
        self._map = base

    @property
    def map_id(self) -> str | None:
        """The id of the ``.map()`` call that made this run, else None."""
        group = self._map
        return None if group is None else group[0]

    @property
    def task_name(self) -> str:
        if self.task is not None:
            return self.task.name
        return self.subflow_run.flow.name if self.subflow_run else ""

    @property
    def flow_run_id(self) -> str | None:
        """The id of the flow run this task run belongs to (None outside a flow), as Prefect's
        ``TaskRun.flow_run_id``."""
        return self.flow_run.id if self.flow_run is not None else None

    @property
    def parameters(self) -> dict[str, Any]:
        params = self._parameters
        if params is None:
            task = self.task
            if task is None:
                params = {}
            elif not self.kwargs and len(self.args) == task._plain_arity:
                params = dict(zip(task._param_names, self.args, strict=True))
            else:
                bound = task.signature.bind(*self.args, **self.kwargs)
                bound.apply_defaults()
                params = dict(bound.arguments)
            self._parameters = params
        return params

    def set_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args, self.kwargs, self._parameters = args, kwargs, None

    def set_parameters(self, parameters: dict[str, Any]) -> None:
        """Parameters already bound by the caller (saves binding them again)."""
        self._parameters = parameters

    def __repr__(self) -> str:
        state = self.state.short() if self.state else "new"
        return f"<TaskRun {self.name!r} of task {self.task_name!r}: {state}>"


# the (map id, size) tuple of the last mapped run (TaskRun.map_group): swapped whole between
# threads
_last_map_base: tuple[str, int] | None = None

# The innermost runs of the current thread or coroutine. A task run's context also carries
# its flow run; a flow body runs with ``current_task_run`` reset to None.
current_flow_run: ContextVar[FlowRun | None] = ContextVar("flowbook_flow_run", default=None)
current_task_run: ContextVar[TaskRun | None] = ContextVar("flowbook_task_run", default=None)
# The attempt (``FlowRun.run_count``) of the flow body the current code runs in (0: none). A
# body whose attempt timed out may go on (a sync body stops only in its own code, and may
# catch the timeout) while its flow run's next attempt runs.
current_attempt: ContextVar[int] = ContextVar("flowbook_flow_attempt", default=0)


def ended_attempt(flow_run: FlowRun) -> str | None:
    """Why a run called now in ``flow_run`` is not part of it: the call comes from the body
    of an attempt that has ended; None for a call of the current attempt (the usual case,
    decided without reading the context variable while the run is on its first attempt)."""
    attempt = flow_run.run_count
    if attempt > 1:
        mine = current_attempt.get()
        if mine and mine != attempt:
            return (
                f"Called by attempt {mine} of flow run {flow_run.name!r}, which had ended "
                f"(attempt {attempt} runs now)."
            )
    return None


def is_async_run(run: FlowRun | TaskRun) -> bool:
    """Whether the run's body is ``async def`` (calls inside it must return awaitables)."""
    if isinstance(run, TaskRun):
        return run.task.is_async if run.task is not None else False
    return run.flow.is_async
