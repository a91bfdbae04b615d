"""The store writer: an event subscriber that writes runs to the database on its own thread.

The engine's threads only put events on a queue (a few hundred nanoseconds); this thread
takes them off in batches and writes each batch in one transaction, with ``executemany``
statements. Task runs are not queued event by event: a task run created or changed is marked
(one dictionary entry for the run, whatever its number of changes), and its row is built from
the run as it is when the batch is written; a run created and finished between two batches
is inserted once with its final state. Only the states of a task run whose history is not the
plain one (Pending, Running, Completed) are queued, in order, for its state rows. A writer
behind a large map holds one entry per run it has not written, not the events and the states
they hold, and writes those runs in transactions of at most ``_BATCH_MAX`` rows.

A flow run's end waits for its own rows: ``barrier(flow_run)`` blocks until the batch holding
its ``FlowRunFinished`` event is committed (unless ``FLOWBOOK_STORE_WAIT=off``: then the run's
end is journalled and written with the next batch). Work that is not needed for the run's
progress is done here, not on the engine's threads: previews of parameters, pickling results,
hashing inputs for ``resume``.

Nothing the database can take is lost, and runs never stop because the store cannot keep
up: a batch whose transaction fails is retried while the failure is transient, written again
in smaller groups when some rows are refused, and written without its stored values when the
disk is full (``batches.py``). What still cannot be written is counted, reported (rate-limited)
and recorded in ``write_drops`` (``drops.py``); the result files of rows that were not written
are removed.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select

from flowbook import _run_lines
from flowbook._preview import pairs_preview, parameters_preview
from flowbook.engine.events import (
    FlowRunCreated,
    FlowRunFinished,
    LogEmitted,
    StateChanged,
    TaskRunCreated,
)
from flowbook.engine.lifecycle import announced_state
from flowbook.engine.runs import FlowRun, TaskRun
from flowbook.store import results
from flowbook.store.batches import (
    BatchWriter,
    Part,
    count_hits,
    delete_rows,
    insert,
    insert_rows,
    update_rows,
    upsert_rows,
)
from flowbook.store.cache import INLINE_RESULT_BYTES
from flowbook.store.checkpoints import Checkpointer
from flowbook.store.database import FORK_GUARD, HEARTBEAT_EVERY_S
from flowbook.store.drops import STORE_WIDE, Drops, classify, reason
from flowbook.store.journal import RunJournal
from flowbook.store.printed import PrintedLines
from flowbook.store.schema import (
    NO_FLOW_RUN,
    cache_entries,
    cache_misses,
    created_us,
    flow_runs,
    logs,
    states,
    task_run_edges,
    task_runs,
    write_drops,
)

if TYPE_CHECKING:
    from flowbook.states import State

__all__ = ["StoreWriter"]

_BATCH_MAX = 20_000
# How long the writer lets events gather before writing them, unless somebody waits for the
# store (a flow run ending, a flush). Writing while a busy flow runs makes both compete for
# the GIL; a run shorter than this is written once, when it ends. Longer runs are written
# every _GATHER_S seconds.
_GATHER_S = 0.5
_STOP = object()
# queued when the set of changed task runs stops being empty: it wakes the writer
_CHANGED = object()


def _urgent(item: Any) -> bool:
    """Somebody waits for this item: write it without gathering more first (the end of a
    top-level flow run: its caller waits for its rows; a subflow's end is an ordinary item)."""
    return (
        item is _STOP
        or isinstance(item, threading.Event)
        or (type(item) is FlowRunFinished and item.flow_run.parent_task_run is None)
    )


class _Unwaited(FlowRunFinished):
    """The end of a top-level flow run whose caller does not wait for its rows
    (``FLOWBOOK_STORE_WAIT=off``): written with the next batch, not urgent."""

    __slots__ = ()


class StoreWriter:
    """Writes events to the database from a thread of its own."""

    def __init__(
        self,
        engine: Engine,
        process_id: str,
        results_dir: Path,
        journal: RunJournal | None = None,
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self.engine = engine
        self.process_id = process_id
        self.results_dir = results_dir
        # top-level flow runs are journalled when created, before their rows are committed
        self.journal = journal
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._finished: dict[str, threading.Event] = {}
        # FLOWBOOK_STORE_WAIT: a top-level flow call returns once its rows are committed (True)
        # or at once, its rows following within _GATHER_S (False)
        self.wait = True
        # Task runs are not queued event by event: a run created since the last batch is
        # noted in _new (its upstream edges in _edges), one that changed since in _changed,
        # and its row is built from the run as it is when the batch is written. A large map
        # then keeps no events (with the states they hold) waiting for the writer, and a run
        # that starts and ends between two batches is one row. Only the states of a run whose
        # history is not the plain one (Pending, Running, Completed) are queued, in order,
        # for its state rows.
        self._new: dict[str, TaskRun] = {}
        self._edges: list[tuple[str, str]] = []
        self._changed: dict[str, TaskRun] = {}
        self._changed_lock = threading.Lock()
        # task runs whose history left the plain one: their states are queued (engine threads
        # add, the writer removes a run once it has its final state)
        self._traced: set[str] = set()
        # the states of those runs not final yet, by run id (kept here across batches)
        # (None stands for the Pending state a run is created in)
        self.histories: dict[str, list[State | None]] = {}
        # state rows of flow runs not final yet, held back while their history is the plain
        # one (Pending, Running, Completed: told by the row's times, like a task run's); None
        # once the run has outlived a batch: its rows are written as they come
        self.flow_histories: dict[str, list[tuple[Any, ...]] | None] = {}
        # the key of each flow run's log lines (``schema.created_us``), by id: the last
        # _KEPT_KEYS flow runs created, subflow runs included (a line of an older run has its
        # key read from the store as it is written: ``_insert_logs``); None, a line without a
        # flow run, has NO_FLOW_RUN (first in the dict, never dropped)
        self.flow_keys: dict[str | None, int] = {None: NO_FLOW_RUN}
        self._warned: set[str] = set()
        # what could not be written: counted, reported, and recorded in write_drops
        self.drops = Drops(process_id, _where(engine), results_dir)
        self._batches = BatchWriter(engine, self.drops, results_dir, checkpointer)
        # printed text of runs shown in a notebook: lines cut and counted on this thread
        self.printed = PrintedLines()
        self._last_beat = time.monotonic()
        self._hurry = threading.Event()
        self._waiting = 0  # urgent items queued and not yet written
        self._waiting_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="flowbook-store", daemon=True)
        self._thread.start()

    # -- called on engine threads ---------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        kind = type(event)
        if kind is StateChanged:
            run = event.run
            if type(run) is TaskRun:
                previous = event.previous
                if previous is None:
                    return  # a task run's first state, Pending, is told by its creation
                self._mark(run)
                state = event.state
                if run.id in self._traced or not _plain_step(state, previous):
                    self._traced.add(run.id)
                    self._queue.put(event)
                    if state.type._value_ in _TRACED:
                        item = _engine_lines(run, state)
                        if item is not None:
                            self._queue.put(item)
                return
            if event.state.type._value_ in _TOLD:
                self._queue.put(event)
                if event.state.type._value_ in _TRACED:
                    item = _engine_lines(event.run, event.state)
                    if item is not None:
                        self._queue.put(item)
                return
        if kind is FlowRunFinished and event.flow_run.parent_task_run is None:
            if self.wait:
                self._finished[event.flow_run.id] = threading.Event()  # (the barrier pops it)
                self._call_for(event)
                return
            # FLOWBOOK_STORE_WAIT=off: the caller goes on at once; the run's end is journalled
            # (a few microseconds) and its rows go with the next batch, within _GATHER_S
            journal = self.journal
            if journal is not None:
                journal.ended(event.flow_run, event.state)
            self._queue.put(_Unwaited(event.flow_run, event.state))
            return
        if kind is TaskRunCreated:
            self._mark_new(event.task_run, event.upstream)
            return
        if kind is FlowRunCreated and event.flow_run.parent_task_run is None:
            journal = self.journal
            if journal is not None:
                journal.record(event.flow_run)
        self._queue.put(event)

    def _mark_new(self, run: TaskRun, upstream: tuple[str, ...]) -> None:
        """Note that task run ``run`` was created, after the runs of ``upstream``."""
        run_id = run.id
        with self._changed_lock:
            if not self._new and not self._changed:
                self._queue.put(_CHANGED)
            self._new[run_id] = run
            if upstream:
                self._edges.extend((upstream_id, run_id) for upstream_id in upstream)

    def _mark(self, run: TaskRun) -> None:
        """Note that task run ``run`` changed (its row is built as it is when written)."""
        run_id = run.id
        with self._changed_lock:
            changed = self._changed
            if run_id in changed or run_id in self._new:
                return
            if not changed and not self._new:
                self._queue.put(_CHANGED)
            changed[run_id] = run

    def _written_final(self, run_ids: list[str]) -> None:
        """Runs whose rows this batch writes with their final state: a mark of theirs made
        since the runs were taken (their final state's, announced before the writer read it)
        asks for nothing more."""
        with self._changed_lock:
            changed = self._changed
            for run_id in run_ids:
                changed.pop(run_id, None)

    def _take_changed(
        self,
    ) -> tuple[dict[str, TaskRun], list[tuple[str, str]], dict[str, TaskRun]]:
        """The task runs created and changed since the last call, and the new runs' edges."""
        with self._changed_lock:
            taken = (self._new, self._edges, self._changed)
            self._new, self._edges, self._changed = {}, [], {}
        return taken

    def _call_for(self, item: Any) -> None:
        """Queue an item somebody will wait for, and make the writer stop gathering."""
        with self._waiting_lock:
            self._waiting += 1
            # set before the item is queued: the writer clears it (under this lock) only once
            # it has written the item, so it cannot be left set with nobody waiting
            self._hurry.set()
        self._queue.put(item)

    def put(self, item: tuple[Any, ...]) -> None:
        """Queue one of the store's own writes: ``("cache_put", row)``, ``("cache_hit", ...)``,
        ``("cache_miss", row)``, ``("output", flow_run_id, task_run_id, stream, text, ts)``."""
        self._queue.put(item)

    def barrier(self, flow_run: FlowRun, timeout: float = 60.0) -> None:
        """Block until the flow run's final rows are written or given up (or ``timeout``
        seconds): a run that returned is in the store, unless the store said it could not be."""
        done = self._finished.get(flow_run.id)
        if done is None:
            return
        if not done.wait(timeout):
            self._warn(
                "barrier",
                f"the run store did not confirm flow run {flow_run.name!r} within {timeout:g} s; "
                "its last rows may be written later",
            )
        self._finished.pop(flow_run.id, None)

    def flush(self, timeout: float = 60.0) -> bool:
        """Block until everything queued so far is written (or given up)."""
        if not self._thread.is_alive():
            return True  # stopped: everything it was given is written
        marker = threading.Event()
        self._call_for(marker)
        return marker.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self._call_for(_STOP)
        self._thread.join(timeout)

    def stopped(self) -> bool:
        """The writer thread has ended (everything it was given is written or given up)."""
        return not self._thread.is_alive()

    # -- the writer thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        self._last_beat = time.monotonic()
        busy = False  # the last batch had items: more are likely to come soon
        while True:
            first: Any = None
            if busy:
                # let the next events gather without the first of them waking this thread: a
                # wake-up takes the GIL from the thread that queued it, once per flow call
                if not self._waiting:
                    self._hurry.wait(_GATHER_S)
                try:
                    first = self._queue.get_nowait()
                except queue.Empty:
                    busy = False
                    continue
            else:
                try:
                    first = self._queue.get(timeout=HEARTBEAT_EVERY_S)
                except queue.Empty:
                    first = None
                if first is not None and not self._waiting:
                    self._hurry.wait(_GATHER_S)
            batch: list[Any] = [] if first is None else [first]
            while len(batch) < _BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            if batch:
                try:
                    self._write_batch([i for i in batch if i is not _STOP])
                except Exception as exc:  # a bug here must not stop the writer (nor the runs)
                    self.drops.add("batch", None, f"the writer failed: {reason(exc)}")
                    self._release(batch)
            urgent = sum(1 for item in batch if _urgent(item))
            busy = bool(batch) and not stop
            # drop the references now: the batch holds whole runs (and their results) that
            # would otherwise stay alive until the next event arrives
            first = None
            batch = []
            if urgent:
                with self._waiting_lock:
                    self._waiting -= urgent
                    if not self._waiting:
                        self._hurry.clear()
            self._beat_if_due()
            self.drops.summary(force=stop)
            if stop:
                with FORK_GUARD:
                    self._batches.close()
                return

    def _write_batch(self, batch: list[Any]) -> None:
        markers: list[threading.Event] = []
        finished: list[str] = []
        hits: dict[tuple[str, str], int] = {}
        try:
            # taken after the batch's items were: a run changed before an item was queued
            # (the task runs of a flow run that ended) is written with that item
            new, edges, changed = self._take_changed()
            # a writer behind a large map: its runs in transactions of at most _BATCH_MAX
            # rows each (the rows built for one stay few), the last with the batch's items
            while len(new) + len(changed) > _BATCH_MAX:
                chunk = _Rows(self)
                chunk.task_runs(*_split(new, changed, _BATCH_MAX))
                self._write_rows(chunk)
                self._beat_if_due()  # (a backlog can take minutes: the process stays alive)
            rows = _Rows(self)
            rows.task_runs(new, changed, edges)
            for item in batch:
                kind = type(item)
                if item is _CHANGED:
                    continue
                if kind is threading.Event:
                    markers.append(item)
                elif kind is FlowRunFinished or kind is _Unwaited:
                    finished.append(item.flow_run.id)
                    rows.flow_run_ended(item.flow_run)
                else:
                    try:
                        rows.add(item)
                    except Exception as exc:  # this record only: the others are written
                        self.drops.add(
                            _what(item), _run_of(item), f"it cannot be stored: {reason(exc)}"
                        )
            # Hit counters are statistics of the cache, not part of any run: a flow run that
            # ends waits for its rows only; the counters follow in their own transaction.
            hits, rows.cache_hits = rows.cache_hits, {}
            self._write_rows(rows)
        finally:
            journal = self.journal
            for run_id in finished:
                # written (or given up and counted): its journal line is not needed any more,
                # whether or not its caller still waits (a barrier that timed out does not)
                if journal is not None:
                    journal.committed(run_id)
                event = self._finished.get(run_id)
                if event is not None:
                    event.set()
        try:
            if hits:
                # in key order, as every process: concurrent updates never wait on each other
                # in a cycle
                counted = [(hits[key], *key) for key in sorted(hits)]
                with FORK_GUARD:
                    self._batches.write([Part("cache_hit", counted, count_hits)])
        finally:
            for marker in markers:
                marker.set()

    def _write_rows(self, rows: _Rows) -> None:
        """Write one batch's rows in one transaction (``BatchWriter`` narrows it on failure)."""
        parts, cache_part, drop_rows = rows.plan()
        if rows.final:
            self._written_final(rows.final)
        with FORK_GUARD:  # (only around SQL: building the rows needs no guard)
            written = self._batches.write(parts)
        if drop_rows is not None and (
            parts.index(drop_rows) in written.complete or written.wide is None
        ):
            self.drops.written(list(drop_rows.rows))  # refused ones are not kept either
        if cache_part is None or parts.index(cache_part) in written.complete:
            for done in rows.committed:
                done()

    def _release(self, batch: list[Any]) -> None:
        """Wake whoever waits for items of a batch that could not be handled."""
        for item in batch:
            if isinstance(item, threading.Event):
                item.set()
            elif type(item) is FlowRunFinished:
                event = self._finished.get(item.flow_run.id)
                if event is not None:
                    event.set()

    def _beat_if_due(self) -> None:
        if time.monotonic() - self._last_beat >= HEARTBEAT_EVERY_S:
            self._last_beat = time.monotonic()
            with FORK_GUARD:
                self._heartbeat()

    def _heartbeat(self) -> None:
        try:
            self._batches.heartbeat(self.process_id)
        except Exception as exc:  # a missed heartbeat only delays crash detection elsewhere
            kind = classify(exc)
            if kind in STORE_WIDE:
                self.drops.store_wide(kind, reason(exc), Counter())
            elif self.drops.outage is None:
                self._warn("heartbeat", f"the run store's heartbeat failed: {reason(exc)}")

    def _warn(self, key: str, message: str) -> None:
        """Warn once per ``key``."""
        if key not in self._warned:
            self._warned.add(key)
            self.drops.tell(message)


class _Rows:
    """One batch of events turned into rows, ready for ``executemany``."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self.flow_inserts: dict[str, dict[str, Any]] = {}
        # task runs created since the last batch: their rows are built once, at write time,
        # with the state each has then (``task_runs``)
        self.task_new: dict[str, TaskRun] = {}
        self.task_extra: dict[str, dict[str, Any]] = {}  # more columns for rows of task_new
        # task runs an earlier batch inserted that changed since: updated from their state
        self.task_changed: dict[str, TaskRun] = {}
        # the task runs whose rows are built with their final state
        self.final: list[str] = []
        self.flow_updates: dict[str, dict[str, Any]] = {}
        self.task_updates: dict[str, dict[str, Any]] = {}
        self.edges: list[tuple[str, str]] = []
        self.states: list[tuple[Any, ...]] = []
        self.logs: list[tuple[Any, ...]] = []
        self.cache_puts: dict[tuple[str, str], dict[str, Any]] = {}
        # called once the batch is committed
        self.committed: list[Callable[[], None]] = []
        self.cache_hits: dict[tuple[str, str], int] = {}
        self.cache_deletes: list[tuple[str, str]] = []
        self.cache_misses: dict[str, dict[str, Any]] = {}  # the latest miss of each task
        self.latest_flow: dict[str, tuple[FlowRun, State]] = {}

    def task_runs(
        self,
        new: dict[str, TaskRun],
        changed: dict[str, TaskRun],
        edges: list[tuple[str, str]] | None = None,
    ) -> None:
        """The task runs created and changed since the last batch (``StoreWriter._mark``)."""
        self.task_new = new
        self.task_changed = changed
        if edges:
            self.edges.extend(edges)

    def add(self, item: Any) -> None:
        kind = type(item)
        if kind is StateChanged:
            run = item.run
            if type(run) is TaskRun:
                self._task_state(run, item.state, item.previous)
            else:
                self._flow_state(run, item.state)
        elif kind is FlowRunCreated:
            self._flow_created(item.flow_run)
        elif kind is LogEmitted:
            self._log(item)
        elif kind is tuple:
            self._store_item(item)

    # -- events ---------------------------------------------------------------------------------
    def _flow_created(self, run: FlowRun) -> None:
        flow = run.flow
        try:
            params: bytes | None = results.dumps(run.parameters)
        except results.ResultError:
            params = None
        parent = run.parent_task_run
        keys = self.writer.flow_keys
        key = keys[run.id] = created_us(run.created_s)
        if len(keys) > _KEPT_KEYS:  # the oldest after None (the dict keeps insertion order)
            del keys[next(k for k in keys if k is not None)]
        self.flow_inserts[run.id] = {
            "id": run.id,
            "name": run.name,
            "flow_name": flow.name,
            "flow_version": flow.version,
            "project": flow.project,
            "process_id": self.writer.process_id,
            "parent_task_run_id": parent.id if parent is not None else None,
            "resumed_from": run.resumed_from,
            "notebook": run.notebook,
            "cell_id": run.cell_id,
            "tags": json.dumps(list(run.tags)),
            "parameters": params,
            "parameters_preview": parameters_preview(run.parameters),
            "created_at": run.created_s,
            "created_us": key,
            **_state_columns(run, None),
        }

    def _task_state(self, run: TaskRun, state: State, previous: State | None) -> None:
        """A state of a task run whose history is not the plain one (queued in order): kept
        until the run is final, then written as the run's state rows."""
        run_id = run.id
        histories = self.writer.histories
        history = histories.get(run_id)
        if history is None:
            # the run's first state off the plain history: what came before it was plain
            # (Pending, which None stands for, and maybe Running), as the previous state says
            history = histories[run_id] = [None]
            if previous is not None and _plain_running(previous):
                history.append(previous)
        history.append(state)
        if state.type._value_ in _FINAL:
            del histories[run_id]
            self.writer._traced.discard(run_id)
            if not _implied(history):
                self.states.extend(_history_rows(run, history))

    def flow_run_ended(self, run: FlowRun) -> None:
        """End the flow run's printed lines (partial ones, drops counted)."""
        top = run.parent_task_run is None
        self.writer.printed.end(self.logs, run.id, run.end_s or time.time(), top=top)

    def _flow_state(self, run: FlowRun, state: State) -> None:
        type_value = state.type._value_
        run_id = run.id
        self.latest_flow[run_id] = (run, state)
        row = (run_id, "flow", type_value, state.name, state.message, state.timestamp_s)
        held = self.writer.flow_histories
        rows = held.get(run_id, _NOT_HELD)
        if rows is None:  # the run's earlier rows are written: so is this one
            self.states.append(row)
        elif rows is _NOT_HELD:
            held[run_id] = [row]
        else:
            rows.append(row)
        if type_value in _FINAL:
            rows = held.pop(run_id, None)
            if rows is not None and not _implied_flow(rows):
                self.states.extend(rows)
            if type_value != "COMPLETED":
                self._hash_inputs(run)

    def _write_held_states(self) -> None:
        """Write the held state rows of the flow runs that go on after this batch: a run that
        outlives a batch has its history in the store as it goes (a crash keeps it)."""
        held = self.writer.flow_histories
        for run_id, (_, state) in self.latest_flow.items():
            if state.type._value_ not in _FINAL:
                rows = held.get(run_id)
                if rows:
                    self.states.extend(rows)
                held[run_id] = None

    def _hash_inputs(self, flow_run: FlowRun) -> None:
        """Key the completed task calls of a run that did not complete, for ``resume``."""
        for task_run in list(flow_run.task_runs):
            state = task_run.state
            if task_run.task is None or state is None or not state.is_completed():
                continue
            digest = _input_hash(task_run)
            if digest is None:
                continue
            self._set_task_columns(task_run.id, {"input_hash": digest})

    def _set_task_columns(self, run_id: str, columns: dict[str, Any]) -> None:
        if run_id in self.task_new:
            self.task_extra.setdefault(run_id, {}).update(columns)
        else:
            self.task_updates.setdefault(run_id, {"_id": run_id}).update(columns)

    def _task_rows(self) -> list[tuple[Any, ...]]:
        """The rows of the task runs created since the last batch, each with its state now.

        One pass, with the row built as a tuple in ``_TASK_COLUMNS`` order: a large map puts
        thousands of runs in each batch. The run's state is read once; what the engine sets
        before a state (the start time, the attempt's number) goes with it, and a final
        state's time is the run's end time.
        """
        rows: list[tuple[Any, ...]] = []
        append = rows.append
        extra = self.task_extra
        dumps_tags = json.dumps
        final = self.final
        key_of: object = object()  # the flow run whose key ``key`` is (none yet)
        key = NO_FLOW_RUN
        for run_id, run in self.task_new.items():
            try:
                state = announced_state(run)
                task = run.task
                flow_run = run.flow_run
                if flow_run is not key_of:
                    key_of = flow_run
                    key = created_us(flow_run.created_s) if flow_run is not None else NO_FLOW_RUN
                subflow = run.subflow_run
                tags = run.tags
                start = end = result = result_file = input_hash = cache_key = message = None
                checksum = None
                if state is None:
                    type_value, name = "PENDING", "Pending"
                else:
                    type_value, name, message = state.type._value_, state.name, state.message
                    start = run.start_s
                    if type_value in _FINAL:
                        final.append(run_id)
                        end = state.timestamp_s
                        cache_key = run.cache_key
                        if type_value == "COMPLETED":
                            result, result_file, checksum, input_hash = self._task_result(
                                run, state
                            )
                row: tuple[Any, ...] = (
                    run_id,
                    flow_run.id if flow_run is not None else None,
                    run.name,
                    task.name if task is not None else (subflow.flow.name if subflow else ""),
                    task.task_key if task is not None else None,
                    run.dynamic_key,
                    subflow.id if subflow is not None else None,
                    dumps_tags(list(tags)) if tags else "[]",
                    _safe_preview(run),
                    input_hash,
                    cache_key,
                    type_value,
                    name,
                    message,
                    run.run_count,
                    result,
                    result_file,
                    checksum,
                    run.created_s,
                    start,
                    end,
                    key,
                )
                more = extra.get(run_id)
                if more is not None:
                    changed = list(row)
                    for column, value in more.items():
                        changed[_TASK_INDEX[column]] = value
                    row = tuple(changed)
                append(row)
            except Exception as exc:  # this run's row only: the others are written
                self.writer.drops.add("task_run", run_id, f"its row cannot be built: {reason(exc)}")
        return rows

    def _apply_latest_states(self) -> None:
        """Updates for runs whose rows an earlier batch inserted."""
        for run_id, task_run in self.task_changed.items():
            try:
                state = announced_state(task_run)
                if state is None:
                    continue
                columns = _state_columns(task_run, state)
                if state.type._value_ in _FINAL:
                    self.final.append(run_id)
                    # (the run's end time is its final state's, read with it)
                    columns["end_time"] = state.timestamp_s
                    columns["cache_key"] = task_run.cache_key
                    if state.type._value_ == "COMPLETED":
                        result, result_file, checksum, input_hash = self._task_result(
                            task_run, state
                        )
                        if result is not None:
                            columns["result"] = result
                        if result_file is not None:
                            columns["result_file"] = result_file
                        if checksum is not None:
                            columns["result_checksum"] = checksum
                        if input_hash is not None:
                            columns["input_hash"] = input_hash
                self._set_task_columns(run_id, columns)
            except Exception as exc:  # this run's update only: the others are written
                self.writer.drops.add("task_run", run_id, f"its row cannot be built: {reason(exc)}")
        for run_id, (flow_run, state) in self.latest_flow.items():
            target = self.flow_inserts.get(run_id)
            if target is None:
                target = self.flow_updates.setdefault(run_id, {"_id": run_id})
            target.update(_state_columns(flow_run, state))

    def _task_result(
        self, run: TaskRun, state: State
    ) -> tuple[bytes | bytearray | None, str | None, str | None, str | None]:
        """``(result, result_file, result_checksum, input_hash)`` for a Completed task run.

        A result that cannot be pickled, or whose file cannot be written (a full disk, a
        read-only results directory), is not kept: the run is unaffected, and a later
        ``resume`` runs that call again.
        """
        if run.task is None or state.name == "Cached" or not _persists(run):
            return None, None, None, None
        try:
            data = results.dumps(state.data)
        except results.ResultError as exc:
            # not kept (the run is unaffected; a resume runs that call again), and counted;
            # warned about only where persist_result=True asked for it (by default many a
            # result, a client or a generator, is simply not picklable)
            self.writer.drops.add(
                "result", run.id, f"task run {run.name!r}: {exc}", told=not _asked_to_persist(run)
            )
            return None, None, None, None
        input_hash = _input_hash(run) if run.flow_run is None else None
        checksum = results.checksum(data)
        if len(data) <= INLINE_RESULT_BYTES:
            # a bytearray: the sqlite3 module binds it as it is, and ``bytes`` only after its
            # adapter look-up (about a microsecond a row); both are stored as the same blob
            return bytearray(data), None, checksum, input_hash
        name = f"runs/{run.id}.pkl"
        try:
            results.write_file(self.writer.results_dir / name, data)
        except OSError as exc:
            self.writer._warn(
                f"result file {exc.errno}",
                f"the result of task run {run.name!r} is not kept: its file "
                f"{exc.filename or name} cannot be written ({exc.strerror or exc}); the run "
                "is recorded without it. Later results that fail the same way are not kept "
                "either, without another warning",
            )
            why = f"task run {run.name!r}: {exc.filename or name}: {exc.strerror or exc}"
            self.writer.drops.add("result", run.id, why, told=True)
            return None, None, None, input_hash
        return None, name, checksum, input_hash

    def _log(self, event: LogEmitted) -> None:
        record = event.record
        message = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            from flowbook._tracebacks import format_exc_info

            message += "\n" + format_exc_info(*record.exc_info)
        self.logs.append(
            (
                event.flow_run_id,
                event.task_run_id,
                record.levelno,
                getattr(record, "flowbook_run", None) or record.name,
                message,
                record.created,
            )
        )

    def _store_item(self, item: tuple[Any, ...]) -> None:
        what = item[0]
        if what == "cache_put":
            row = item[1]
            row["key_parts"] = _parts_json(row.get("key_parts"))
            entry = row.pop("_entry", None)
            if entry is not None:
                self.committed.append(entry.mark_written)
            self.cache_puts[(row["task_key"], row["key"])] = row
        elif what == "cache_hit":
            key = (item[1], item[2])
            self.cache_hits[key] = self.cache_hits.get(key, 0) + 1
        elif what == "cache_delete":
            self.cache_deletes.append((item[1], item[2]))
        elif what == "lines":
            self.logs.extend(item[1])
        elif what == "line_error":
            self.writer.drops.add("log", item[1], f"its line cannot be made: {item[2]}")
        elif what == "output":
            _, flow_run_id, task_run_id, stream, text, ts, *top = item  # (top-level run id)
            self.writer.printed.add(
                self.logs, flow_run_id, task_run_id, stream, text, ts, top[0] if top else None
            )
        elif what == "cache_miss":
            row = item[1]
            kept = self.cache_misses.get(row["task_key"])
            if kept is None or row["missed_at"] >= kept["missed_at"]:
                self.cache_misses[row["task_key"]] = row

    # -- SQL ------------------------------------------------------------------------------------
    def plan(self) -> tuple[list[Part], Part | None, Part | None]:
        """The batch's statements with their rows; also the part of cache puts and the part of
        ``write_drops`` rows, if any (their outcome matters to the writer)."""
        task_rows = self._task_rows() if self.task_new else []
        if self.latest_flow:
            self._write_held_states()
        if self.task_changed or self.latest_flow:
            self._apply_latest_states()
            self.task_changed.clear()
            self.latest_flow.clear()
        parts: list[Part] = []
        if self.flow_inserts:
            rows = _tuples(self.flow_inserts, _FLOW_COLUMNS)
            parts.append(Part("flow_run", rows, _INSERT_FLOWS, _first))
        if task_rows:
            parts.append(
                Part(
                    "task_run",
                    task_rows,
                    _INSERT_TASKS,
                    _first,
                    file_of=_task_row_file,
                    strip=_strip_task_rows,
                )
            )
        if self.edges:
            parts.append(Part("edge", self.edges, _INSERT_EDGES, _second))
        for group in _by_keys(self.flow_updates.values()).values():
            parts.append(Part("flow_run", group, _UPDATE_FLOWS, _update_id))
        for keys, group in _by_keys(self.task_updates.values()).items():
            has_values = "result" in keys or "result_file" in keys
            parts.append(
                Part(
                    "task_run",
                    group,
                    _UPDATE_TASKS,
                    _update_id,
                    file_of=_update_file if has_values else None,
                    strip=_strip_task_updates if has_values else None,
                )
            )
        if self.states:
            parts.append(Part("state", self.states, _INSERT_STATES, _first))
        if self.logs:
            key_of = self.writer.flow_keys.get
            log_rows = [(*row, key_of(row[0])) for row in self.logs]
            parts.append(Part("log", log_rows, _INSERT_LOGS, _log_run))
        # one order for every process's statements on the same keys: no deadlocks between them
        deletes = sorted(set(self.cache_deletes) - self.cache_puts.keys())
        if deletes:
            parts.append(Part("cache_entry", deletes, _DELETE_CACHE))
        cache_part = None
        if self.cache_puts:
            puts = _tuples(self.cache_puts, _CACHE_COLUMNS)
            puts.sort(key=_cache_key)
            cache_part = Part(
                "cache_entry",
                puts,
                _UPSERT_CACHE,
                file_of=_cache_file,
                shared=True,  # the file's name is the key's: another process may point at it
                strip=_strip_all,
            )
            parts.append(cache_part)
        if self.cache_misses:
            misses = [
                tuple(_parts_json(row[c]) if c == "key_parts" else row[c] for c in _MISS_COLUMNS)
                for row in self.cache_misses.values()
            ]
            misses.sort(key=_first)
            parts.append(Part("cache_miss", misses, _UPSERT_MISSES))
        drop_part = None
        drop_rows = self.writer.drops.rows()
        if drop_rows:
            drop_part = Part("write_drop", list(drop_rows), _INSERT_DROPS, _drop_run)
            parts.append(drop_part)
        return parts, cache_part, drop_part


_FLOW_COLUMNS = tuple(c.name for c in flow_runs.columns)
_TASK_COLUMNS = tuple(c.name for c in task_runs.columns)


_STATE_COLUMNS = ("run_id", "run_kind", "type", "name", "message", "timestamp")
_FINAL = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
# Enum ``.value`` is a Python-level property and enum hashing a Python-level method: the
# writer reads ``state.type._value_`` and compares strings instead (it runs per state).


# States whose rows the store writes at once: failures, crashes, cancels, and retries
# (AwaitingRetry is SCHEDULED). Of their engine lines (``_run_lines``) only a failure's
# exception line is stored (``_TRACED``): the retry lines and every "Finished in state ..."
# line are told from the state rows when the run is read back (``queries._story``).
_TOLD = frozenset({"FAILED", "CRASHED", "CANCELLED", "SCHEDULED"})
# The states whose failure line (the exception and its traceback) is stored as a log line:
# the only engine line that the rows cannot tell when read back (queries._story tells the
# retry lines and the "Finished in state ..." lines from the state rows).
_TRACED = frozenset({"FAILED", "CRASHED"})


def _engine_lines(run: FlowRun | TaskRun, state: State) -> tuple[Any, ...] | None:
    """A failure's line (the exception and its traceback), as log rows to queue (``("lines",
    rows)``); None when there is none (an upstream failure, a flow failed by its task's).

    Made on the thread that changes the state, as the console and the widget make them: a
    traceback formatted later would also show the frames the exception went through since.
    The state's "Finished in state ..." line is not stored: it is told from the state row.
    """
    try:
        lines = _run_lines.state_lines(run, state)[:-1]
    except Exception as exc:  # (an exception whose repr fails): the run's rows still go
        return ("line_error", run.id, reason(exc))
    if not lines:
        return None
    ids: tuple[str | None, str | None]
    if type(run) is TaskRun:
        flow_run = run.flow_run
        ids = (flow_run.id if flow_run is not None else None, run.id)
    else:
        ids = (run.id, None)
    who = _run_lines.who(run)
    ts = state.timestamp_s
    return ("lines", [(*ids, level, who, text, ts) for level, text in lines])


def _implied(history: list[Any]) -> bool:
    """True when a task run's history is the plain one, told by its row's times alone:
    Pending (``None``), Running, Completed; or Pending, then Cached or Completed."""
    n = len(history)
    if n == 3:
        pending, running, final = history
        return (
            pending is None
            and running.name == "Running"
            and running.message is None
            and final.name == "Completed"
        )
    if n == 2:
        return history[0] is None and history[1].name in ("Cached", "Completed")
    return False


_NOT_HELD: Any = object()
_PLAIN_FLOW = (("PENDING", "Pending"), ("RUNNING", "Running"), ("COMPLETED", "Completed"))


def _implied_flow(rows: list[tuple[Any, ...]]) -> bool:
    """True when a flow run's state rows are the plain history (Pending, Running, Completed,
    the first two without a message), told by the run's row alone (``queries._implied_history``:
    created, started and ended at the row's times)."""
    return (
        len(rows) == 3
        and all(row[2:4] == plain for row, plain in zip(rows, _PLAIN_FLOW, strict=True))
        and rows[0][4] is None
        and rows[1][4] is None
    )


def _split(
    new: dict[str, TaskRun], changed: dict[str, TaskRun], size: int
) -> tuple[dict[str, TaskRun], dict[str, TaskRun]]:
    """Take ``size`` runs out of ``new`` and ``changed`` (the new ones first)."""
    part_new: dict[str, TaskRun] = {}
    while new and len(part_new) < size:
        run_id, run = new.popitem()
        part_new[run_id] = run
    part_changed: dict[str, TaskRun] = {}
    while changed and len(part_new) + len(part_changed) < size:
        run_id, run = changed.popitem()
        part_changed[run_id] = run
    return part_new, part_changed


def _plain_running(state: State) -> bool:
    return state.name == "Running" and state.message is None and state.type._value_ == "RUNNING"


def _plain_step(state: State, previous: State) -> bool:
    """Whether a task run whose states so far were the plain ones (``_implied``) stays plain
    with ``state``, after ``previous``: Running (no message) after its first state, then
    Completed; or Completed or Cached straight after its first state."""
    name = state.name
    if name == "Running":
        return _plain_running(state) and not _plain_running(previous)
    if name == "Completed":
        return state.type._value_ == "COMPLETED"
    if name == "Cached":
        return state.type._value_ == "COMPLETED" and not _plain_running(previous)
    return False


def _history_rows(run: TaskRun, history: list[Any]) -> list[tuple[Any, ...]]:
    """State rows of a task run whose history the row's times do not tell."""
    return [
        (run.id, "task", "PENDING", "Pending", None, run.created_s)
        if state is None
        else (run.id, "task", state.type._value_, state.name, state.message, state.timestamp_s)
        for state in history
    ]


_LOG_COLUMNS = (
    "flow_run_id",
    "task_run_id",
    "level",
    "logger",
    "message",
    "timestamp",
    "flow_run_created_us",
)
# how many of the flow runs created last keep their key in StoreWriter.flow_keys
_KEPT_KEYS = 4096
_CACHE_COLUMNS = tuple(c.name for c in cache_entries.columns)
_MISS_COLUMNS = tuple(c.name for c in cache_misses.columns)
_DROP_COLUMNS = ("at", "process_id", "run_id", "what", "reason")


def _unicode_safe(execute: Any) -> Any:
    """``execute``, cleaning the text of its rows when the driver cannot encode it.

    Text with lone surrogates (a file name ``os.listdir`` decoded with ``surrogateescape``, an
    exception message built from one) cannot be encoded as UTF-8, and a database refuses the
    row. Normal text costs nothing more: the rows are written as they are, and only when the
    driver fails to encode one are their texts cleaned (each lone surrogate as ``\\udcff``),
    in place, before the error goes on. The transaction is rolled back, and the batch writer
    writes its parts again on their own (``BatchWriter._narrow``), the cleaned rows with them.
    """

    def run(conn: Any, rows: Any) -> None:
        try:
            execute(conn, rows)
        except Exception as exc:
            if isinstance(getattr(exc, "orig", None) or exc, UnicodeEncodeError) and isinstance(
                rows, list
            ):
                rows[:] = [_clean_row(row) for row in rows]
            raise

    return run


def _clean_text(value: Any) -> Any:
    if type(value) is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _clean_row(row: Any) -> Any:
    if isinstance(row, dict):
        return {key: _clean_text(value) for key, value in row.items()}
    return tuple(_clean_text(value) for value in row)


_INSERT_FLOWS = _unicode_safe(insert_rows(flow_runs, _FLOW_COLUMNS, without_nulls=True))
_INSERT_TASKS = _unicode_safe(insert_rows(task_runs, _TASK_COLUMNS, without_nulls=True))
_INSERT_EDGES = insert_rows(task_run_edges, ("upstream_id", "downstream_id"))
_INSERT_STATES = _unicode_safe(insert_rows(states, _STATE_COLUMNS))


def _insert_logs(conn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert log rows, each with its flow run's key; a key the writer no longer had (a line of
    a flow run that ended long before, printed by a thread it left running) is read from the
    flow run's row, in the same transaction."""
    missing = {row[0] for row in rows if row[-1] is None and row[0] is not None}
    if missing:
        found: dict[str, int] = {}
        ids = list(missing)
        for i in range(0, len(ids), 500):
            part = select(flow_runs.c.id, flow_runs.c.created_us).where(
                flow_runs.c.id.in_(ids[i : i + 500])
            )
            found.update((run_id, key) for run_id, key in conn.execute(part))
        rows = [
            (*row[:-1], found.get(row[0])) if row[-1] is None and row[0] is not None else row
            for row in rows
        ]
    insert(conn, logs, _LOG_COLUMNS, rows)


_INSERT_LOGS = _unicode_safe(_insert_logs)
_INSERT_DROPS = _unicode_safe(insert_rows(write_drops, _DROP_COLUMNS))
_UPDATE_FLOWS = _unicode_safe(update_rows(flow_runs))
_UPDATE_TASKS = _unicode_safe(update_rows(task_runs))
_DELETE_CACHE = delete_rows(cache_entries, ("task_key", "key"))
_UPSERT_CACHE = upsert_rows(cache_entries, _CACHE_COLUMNS, ("task_key", "key"))
# each task's latest miss: an older miss arriving late does not replace a newer one
_UPSERT_MISSES = upsert_rows(cache_misses, _MISS_COLUMNS, ("task_key",), newer="missed_at")


_TASK_INDEX = {name: i for i, name in enumerate(_TASK_COLUMNS)}
# _Rows._task_rows builds task-run rows as tuples in this order
assert _TASK_COLUMNS == (
    "id",
    "flow_run_id",
    "name",
    "task_name",
    "task_key",
    "dynamic_key",
    "subflow_run_id",
    "tags",
    "parameters_preview",
    "input_hash",
    "cache_key",
    "state_type",
    "state_name",
    "state_message",
    "run_count",
    "result",
    "result_file",
    "result_checksum",
    "created_at",
    "start_time",
    "end_time",
    "flow_run_created_us",
), _TASK_COLUMNS


def _tuples(rows: Any, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """Rows as tuples with every column (``executemany`` needs one shape for all rows)."""
    return [tuple(map(row.get, columns)) for row in rows.values()]


def _parts_json(parts: Any) -> str | None:
    """A ``KeyParts`` (or None) as stored: JSON text."""
    if parts is None or isinstance(parts, str):
        return parts
    return str(parts.to_json())


def _by_keys(rows: Any) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return groups


def _state_columns(run: FlowRun | TaskRun, state: State | None) -> dict[str, Any]:
    state = state or run.state
    return {
        "state_type": state.type._value_ if state else None,
        "state_name": state.name if state else None,
        "state_message": state.message if state else None,
        "run_count": run.run_count,
        "start_time": run.start_s,
        "end_time": run.end_s if state is not None and state.type._value_ in _FINAL else None,
    }


def _asked_to_persist(run: TaskRun) -> bool:
    task = run.task
    if task is not None and task.persist_result is not None:
        return bool(task.persist_result)
    flow_run = run.flow_run
    return flow_run is not None and bool(flow_run.flow.persist_result)


def _persists(run: TaskRun) -> bool:
    task = run.task
    if task is not None and task.persist_result is not None:
        return bool(task.persist_result)
    flow_run = run.flow_run
    if flow_run is not None and flow_run.flow.persist_result is not None:
        return bool(flow_run.flow.persist_result)
    return True


def _safe_preview(run: TaskRun) -> str | None:
    task = run.task
    args = run.args
    try:
        if task is not None and not run.kwargs and len(args) == task._plain_arity:
            return pairs_preview(zip(task._param_names, args, strict=True))  # bound, no dict
        return parameters_preview(run.parameters)
    except Exception:  # arguments that do not bind are reported by the engine, not here
        return None


def _input_hash(run: TaskRun) -> str | None:
    from flowbook.caching.hashing import UnhashableInputError, stable_hash

    try:
        return stable_hash(run.parameters)
    except (UnhashableInputError, Exception):
        return None


# -- rows and what they belong to (for the records of drops) ---------------------------------
_RESULT = _TASK_INDEX["result"]
_RESULT_FILE = _TASK_INDEX["result_file"]
_RESULT_CHECKSUM = _TASK_INDEX["result_checksum"]
_CACHE_FILE = _CACHE_COLUMNS.index("result_file")
_VALUE_COLUMNS = frozenset({"result", "result_file", "result_checksum"})


def _first(row: Sequence[Any]) -> Any:
    return row[0]


def _second(row: Sequence[Any]) -> Any:
    return row[1]


def _update_id(row: dict[str, Any]) -> Any:
    return row["_id"]


def _log_run(row: Sequence[Any]) -> Any:
    return row[1] or row[0]  # the task run, else the flow run


def _drop_run(row: Sequence[Any]) -> Any:
    return row[2]


def _cache_key(row: Sequence[Any]) -> tuple[Any, Any]:
    return row[0], row[1]


def _task_row_file(row: Sequence[Any]) -> Any:
    return row[_RESULT_FILE]


def _update_file(row: dict[str, Any]) -> Any:
    return row.get("result_file")


def _cache_file(row: Sequence[Any]) -> Any:
    return row[_CACHE_FILE]


def _strip_task_rows(rows: Sequence[Any]) -> tuple[list[Any], list[str | None]]:
    """Task-run rows without their results (for a full disk), and the runs that had one."""
    kept: list[Any] = []
    lost: list[str | None] = []
    for row in rows:
        if row[_RESULT] is None and row[_RESULT_FILE] is None:
            kept.append(row)
            continue
        changed = list(row)
        changed[_RESULT] = changed[_RESULT_FILE] = changed[_RESULT_CHECKSUM] = None
        kept.append(tuple(changed))
        lost.append(row[0])
    return kept, lost


def _strip_task_updates(rows: Sequence[Any]) -> tuple[list[Any], list[str | None]]:
    """Task-run updates without their results; every row of a group has the same keys."""
    kept = [{k: v for k, v in row.items() if k not in _VALUE_COLUMNS} for row in rows]
    lost: list[str | None] = [row["_id"] for row in rows]
    if kept and len(kept[0]) == 1:  # only "_id" is left: nothing to update
        kept = []
    return kept, lost


def _strip_all(rows: Sequence[Any]) -> tuple[list[Any], list[str | None]]:
    """Cache entries are their values: without them, nothing is left to write."""
    return [], [None] * len(rows)


def _what(item: Any) -> str:
    """The kind of record an event or a store item becomes (as ``write_drops.what``)."""
    kind = type(item)
    if kind is FlowRunCreated:
        return "flow_run"
    if kind is StateChanged:
        return "state"
    if kind is LogEmitted:
        return "log"
    if kind is tuple and item:
        what = str(item[0])
        if what in ("output", "lines", "line_error"):
            return "log"
        return "cache_entry" if what in ("cache_put", "cache_delete") else what
    return kind.__name__


def _run_of(item: Any) -> str | None:
    kind = type(item)
    if kind is FlowRunCreated:
        return str(item.flow_run.id)
    if kind is StateChanged:
        return str(item.run.id)
    if kind is LogEmitted:
        return item.task_run_id or item.flow_run_id  # type: ignore[no-any-return]
    if kind is tuple and item and item[0] == "output":
        return str(item[2] or item[1])
    if kind is tuple and item and item[0] == "line_error":
        return str(item[1])
    return None


def _where(engine: Engine) -> str:
    """The store as messages name it: the SQLite file's path, or the URL without password."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return str(url.database)
    return str(url.render_as_string(hide_password=True))
