"""The run store of this process: database engine, writer thread, persistent cache."""

from __future__ import annotations

import atexit
from typing import Any

from flowbook.engine.events import (
    ALL_STATES,
    FIRST_STATES,
    FlowRunCreated,
    FlowRunFinished,
    LogEmitted,
    StateChanged,
    TaskRunCreated,
    bus,
)
from flowbook.engine.runs import FlowRun, new_id
from flowbook.settings import Settings
from flowbook.store import results
from flowbook.store.checkpoints import Checkpointer
from flowbook.store.database import (
    connect,
    prune_logs,
    recover_crashed,
    register_process,
    sqlite_file,
    unregister_process,
)
from flowbook.store.journal import RunJournal, journal_dir
from flowbook.store.writer import StoreWriter

__all__ = ["Store"]

_EVENTS = (FlowRunCreated, TaskRunCreated, StateChanged, LogEmitted, FlowRunFinished)


class Store:
    """One process's connection to a run store (SQLite file or database server)."""

    def __init__(self, settings: Settings) -> None:
        from flowbook.store.cache import StoreCache

        self.url = settings.store_url
        self.results_dir = settings.results_dir
        self.engine = connect(self.url, settings.home, settings.results_dir)
        # results are loaded with pickle: refuse a results directory others can write to
        try:
            results.prepare_dir(settings.results_dir)
        except BaseException:
            self.engine.dispose()
            raise
        self.process_id = new_id()
        self.journal_dir = journal_dir(settings.home)
        register_process(self.engine, self.process_id)
        self.crashed_on_open = recover_crashed(self.engine, self.process_id, self.journal_dir)
        prune_logs(self.engine, settings.log_retention_days)
        self.journal = RunJournal(self.journal_dir, self.process_id)
        # a SQLite file's WAL is checkpointed on a thread of its own, off the runs' path
        database = sqlite_file(self.url)
        self.checkpointer = Checkpointer(self.engine, database) if database is not None else None
        self.writer = StoreWriter(
            self.engine, self.process_id, self.results_dir, self.journal, self.checkpointer
        )
        self.writer.wait = settings.store_wait == "on"
        self.cache = StoreCache(self)
        self._closed = False
        atexit.register(self._close_at_exit)

    def attach(self) -> None:
        """Start receiving events: every run from now on is recorded."""
        # (a task run's first state is told by its creation: the writer is not called for it)
        bus.subscribe(_EVENTS, self.writer.on_event, states=ALL_STATES & ~FIRST_STATES)
        bus.add_barrier(self._barrier)

    def _barrier(self, flow_run: FlowRun) -> None:
        self.writer.barrier(flow_run)

    def flush(self) -> None:
        """Block until every event so far is in the database."""
        self.writer.flush()

    @property
    def dropped(self) -> dict[str, int]:
        """How many records this process could not write to the store, by kind ("task_run",
        "log", "result", ...); each is also recorded in ``write_drops`` once the store can be
        written (``flowbook doctor`` lists them)."""
        return dict(self.writer.drops.counts)

    def _close_at_exit(self) -> None:
        # runs still going end first (Cancelled, "the process exited"), while the store still
        # records them (exit handlers run newest first, and the engine's may come later)
        from flowbook.engine.flow_engine import end_active_runs

        end_active_runs()
        self.close()

    def close(self) -> None:
        """Write what is queued, detach, and mark this process as cleanly gone."""
        if self._closed:
            return
        self._closed = True
        bus.unsubscribe(self.writer.on_event)
        bus.remove_barrier(self._barrier)
        self.writer.stop()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self.writer.stopped():
            self.journal.close()
            try:
                unregister_process(self.engine, self.process_id)
            except Exception:  # closing at interpreter exit: the database may be gone already
                pass
        # else: the writer did not finish in time; the process record and the journal stay,
        # so that the next open treats what was not written as a crashed process's runs
        self.engine.dispose()
        atexit.unregister(self._close_at_exit)

    def leave_to_parent(self) -> None:
        """In a process forked from the one that opened this store: let it be.

        The writer and checkpoint threads, the database connections, the journal and the
        process record are the parent's; the child detaches from the event bus, forgets the
        connections without closing them (``dispose(close=False)``) and runs no exit handler
        for them. The child's next run opens a store of its own.
        """
        self._closed = True
        bus.unsubscribe(self.writer.on_event)
        bus.remove_barrier(self._barrier)
        atexit.unregister(self._close_at_exit)
        self.engine.dispose(close=False)

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
