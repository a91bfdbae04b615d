"""``%load_ext flowbook``: live run widgets in the cells that start runs, and output routing.

The notebook front end is an event subscriber like the console and the store:

- A top-level flow run started on the kernel's main thread (a flow called in a cell, or
  ``run_background``) gets a ``RunView`` widget, created and displayed there, in the cell that
  started it. Its subflows are drawn inside it.
- Engine events only mark what changed (a deque append on the emitting thread). An updater
  thread turns the changes into widget updates at most ten times a second per run, so a
  10,000-task map sends a bounded number of messages. A run's end is flushed at once, on the
  thread that ends it, so the cell's final output is complete when the cell returns.
- Output routing: the kernel's ``sys.stdout``/``sys.stderr`` writes are looked at once; text
  written inside a run that has a widget (on any thread: the run's context travels with its
  task runs) becomes log lines of that widget, never output of whatever cell runs at the
  moment. Runs without a widget print into the cell that started them: their threads carry
  the starting cell's context, which is where ipykernel looks up the parent message.
- With ``FLOWBOOK_CONSOLE=auto`` the console printer leaves out runs that have a widget.
- A closed widget (``widget.close()``, or its model closed by the front end) lets go of its
  run: the front end drops the run's model at once, the updater pushes nothing more to it, and
  a run still going on stays out of the console and the cell (the store keeps it all).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from flowbook import _run_lines, console
from flowbook import logging as fb_logging
from flowbook.engine.events import (
    OTHER_STATES,
    RUNNING_STATES,
    FlowRunCreated,
    FlowRunFinished,
    LogEmitted,
    StateChanged,
    TaskRunCreated,
    bus,
)
from flowbook.engine.runs import FlowRun, TaskRun, current_flow_run, current_task_run
from flowbook.jupyter.model import RunModel
from flowbook.states import StateType

__all__ = ["NotebookFrontend", "active", "load", "unload"]

# at least this long between two updates of a widget: 9 in a second at most, so with the
# run's end (flushed at once) a widget never gets more than 10 in any second
UPDATE_INTERVAL = 0.12
TIMELINE_INTERVAL = 1.0
# Finished runs whose widgets keep their timeline and log lines in the kernel; older widgets
# keep their header and graph only (the store has the rest: ``%flowbook show``, the side panel)
KEEP_DETAILS = 10

_frontend: NotebookFrontend | None = None


def active() -> NotebookFrontend | None:
    """The loaded front end, or None when the extension is not loaded."""
    return _frontend


def load(ip: Any) -> None:
    global _frontend
    if _frontend is not None:
        _frontend.stop()
    from flowbook.jupyter.magics import FlowbookMagics

    _frontend = NotebookFrontend(ip)
    _frontend.start()
    ip.register_magics(FlowbookMagics)


def unload(ip: Any) -> None:
    global _frontend
    if _frontend is not None:
        _frontend.stop()
        _frontend = None


class _Live:
    """A run being shown: its model, its widget and the display to update at its end.

    ``model`` and ``view`` are None once the widget was closed: the run stays listed (it is
    still shown elsewhere for the console and the output routing) but keeps nothing.
    """

    __slots__ = ("display", "last_timeline", "lock", "model", "run_id", "timeline_dirty", "view")

    def __init__(self, run_id: str, model: RunModel, view: Any, display: Any) -> None:
        self.lock = threading.Lock()
        self.run_id = run_id
        self.model: RunModel | None = model
        self.view: Any = view
        self.display = display
        self.last_timeline = 0.0
        self.timeline_dirty = True


_INNER = "_flowbook_inner_write"


class _RoutedWrite:
    """The ``write`` of a routed output stream (see ``NotebookFrontend._patch_streams``)."""

    def __init__(self, base: type, name: str, route: Any) -> None:
        self.base = base
        self.name = name
        self.route = route

    def __get__(self, stream: Any, owner: Any = None) -> Any:
        if stream is None:
            return self
        inner = vars(stream).get(_INNER)
        if inner is None:
            inner = self.base.write.__get__(stream)  # type: ignore[attr-defined]
        route, name = self.route, self.name

        def write(text: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(text, str) and route(name, text):
                return len(text)
            return inner(text, *args, **kwargs)

        write._flowbook_inner = inner  # type: ignore[attr-defined]
        return write

    def __set__(self, stream: Any, value: Any) -> None:
        # a writer we handed out earlier is put back: keep its inner one, not a new layer
        vars(stream)[_INNER] = getattr(value, "_flowbook_inner", value)

    def __delete__(self, stream: Any) -> None:
        vars(stream).pop(_INNER, None)


def _store_writer() -> Any:
    """The run store's writer if a store is open (this never opens one nor imports it)."""
    module = sys.modules.get("flowbook.store")
    store = module.get_store(open_if_needed=False) if module is not None else None
    return store.writer if store is not None else None


class NotebookFrontend:
    """Shows runs as widgets in the cells that start them (see the module docstring)."""

    def __init__(self, ip: Any) -> None:
        self.ip = ip
        self.kernel = getattr(ip, "kernel", None)
        self.widgets = self.kernel is not None
        # flow run id (top-level runs and their subflows) -> the live view showing it
        self.views: dict[str, _Live] = {}
        self._suppressed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._patched: list[tuple[Any, Any]] = []
        # views of finished runs that still keep their timeline and logs, oldest first
        self._kept: collections.deque[Any] = collections.deque()

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        bus.subscribe((FlowRunCreated,), self._on_flow_run_created)
        bus.subscribe((TaskRunCreated,), self._on_task_run_created)
        # (a task run's creation marks it Pending: its first state is not needed)
        bus.subscribe((StateChanged,), self._on_state_changed, states=RUNNING_STATES | OTHER_STATES)
        bus.subscribe((LogEmitted,), self._on_log)
        bus.subscribe((FlowRunFinished,), self._on_flow_run_finished)
        console.set_shown_elsewhere(self._shown_here)
        self._patch_streams()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._update_loop, name="flowbook-widget-updater", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        for fn in (
            self._on_flow_run_created,
            self._on_task_run_created,
            self._on_state_changed,
            self._on_log,
        ):
            bus.unsubscribe(fn)
        bus.unsubscribe(self._on_flow_run_finished)
        console.set_shown_elsewhere(None)
        self._unpatch_streams()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        with self._lock:
            self.views.clear()

    @contextlib.contextmanager
    def no_widget(self) -> Iterator[None]:
        """Runs started inside this block show no widget (``%%flow --no-widget``)."""
        self._suppressed += 1
        try:
            yield
        finally:
            self._suppressed -= 1

    # -- which runs get a widget ---------------------------------------------------------------
    def _wants_view(self, run: FlowRun) -> bool:
        return (
            self.widgets
            and not self._suppressed
            and run.parent_task_run is None
            and threading.current_thread() is threading.main_thread()
        )

    def _shown_here(self, event: Any) -> bool:
        """For the console: is this event's run shown by a widget?"""
        kind = type(event)
        views = self.views
        if kind is StateChanged:
            run = event.run
            if type(run) is TaskRun:
                flow_run = run.flow_run
                return flow_run is not None and flow_run.id in views
            return bool(run.id in views)
        if kind is LogEmitted:
            return event.flow_run_id in views
        if kind is FlowRunCreated:
            run = event.flow_run
            if run.id in views:
                return True
            parent = run.parent_task_run
            if parent is not None:
                return parent.flow_run is not None and parent.flow_run.id in views
            return self._wants_view(run)
        return False

    # -- events (on the threads that emit them: quick) -----------------------------------------
    def _on_flow_run_created(self, event: FlowRunCreated) -> None:
        run = event.flow_run
        parent = run.parent_task_run
        if parent is not None:
            live = self.views.get(parent.flow_run.id) if parent.flow_run is not None else None
            if live is not None:
                self.views[run.id] = live
            return
        if not self._wants_view(run):
            return
        from IPython.display import display

        from flowbook.jupyter.widgets.run_view import RunView

        model = RunModel(run)

        def cancel() -> None:
            handle = run.background
            if handle is not None:
                model.cancel_requested = True
                model.flow_run_changed()
                handle.cancel("Cancelled from the run widget.")

        view = RunView(model.snapshot(timeline=True), on_cancel=cancel, on_close=self._closed)
        handle = display(view, display_id=True)  # type: ignore[no-untyped-call]
        with self._lock:
            self.views[run.id] = _Live(run.id, model, view, handle)

    def _closed(self, view: Any) -> None:
        """A run's widget was closed: keep nothing of it (see ``_Live``)."""
        with self._lock:
            if view in self._kept:
                self._kept.remove(view)
            for live in {id(v): v for v in self.views.values()}.values():
                if live.view is view:
                    with live.lock:
                        live.model = live.view = None

    def _on_task_run_created(self, event: TaskRunCreated) -> None:
        run = event.task_run
        flow_run = run.flow_run
        live = self.views.get(flow_run.id) if flow_run is not None else None
        if live is not None:
            model = live.model
            if model is not None:
                if event.upstream_runs:
                    model.upstream_created(event.upstream_runs)
                model.task_run_changed(run)
                live.timeline_dirty = True

    def _on_state_changed(self, event: StateChanged) -> None:
        run, state = event.run, event.state
        if type(run) is TaskRun:
            flow_run = run.flow_run
            live = self.views.get(flow_run.id) if flow_run is not None else None
            if live is None:
                return
            model = live.model
            name = state.name
            if name == "Pending" or model is None:
                return  # the run's creation marked it already, or its widget is closed
            model.task_run_changed(run)
            if name == "Running" or name == "Completed":
                return  # the common path: its times are on the run
            model.state_entered(run, state)
            if state.type is not StateType.COMPLETED and (
                state.is_final() or name == "AwaitingRetry"
            ):
                self._state_line(model, run, state)
            return
        live = self.views.get(run.id)
        model = live.model if live is not None else None
        if model is not None:
            model.flow_run_changed()
            if run is model.flow_run and state.is_final():
                self._state_line(model, run, state)

    @staticmethod
    def _state_line(model: RunModel, run: FlowRun | TaskRun, state: Any) -> None:
        """The engine's log lines for a failure, a retry or a run's end (``_run_lines``)."""
        task = run.task_name if isinstance(run, TaskRun) else ""
        for level, text in _run_lines.state_lines(run, state):
            model.add_log(state.timestamp_s, logging.getLevelName(level), run.name, text, task)

    def _on_log(self, event: LogEmitted) -> None:
        flow_run_id = event.flow_run_id
        live = self.views.get(flow_run_id) if flow_run_id is not None else None
        model = live.model if live is not None else None
        if model is None:
            return
        record = event.record
        task_run = current_task_run.get()
        if task_run is not None and task_run.id == event.task_run_id:
            who, task = task_run.name, task_run.task_name
        else:
            flow_run = current_flow_run.get()
            who, task = (flow_run.name if flow_run is not None else record.name), ""
        message = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            from flowbook._tracebacks import format_exc_info

            message += "\n" + format_exc_info(*record.exc_info)
        model.add_log(record.created, logging.getLevelName(record.levelno), who, message, task)

    def _on_flow_run_finished(self, event: FlowRunFinished) -> None:
        run = event.flow_run
        live = self.views.get(run.id)
        if live is None or live.run_id != run.id:
            return
        with self._lock:
            for key in [k for k, v in self.views.items() if v is live]:
                del self.views[key]
        model = live.model
        if model is None:  # its widget was closed while it ran
            return
        model.flush_output()
        self._push(live, timeline=True)
        # the display's HTML and text summary now show the final state
        view = live.view
        with contextlib.suppress(Exception):
            live.display.update(view)
        # The widget stays in the notebook for good; it must not keep the run's records (and
        # through them every task's result, in the kernel or on a Dask cluster) alive.
        view._on_cancel = None
        # Nor may the widgets of many runs fill the kernel: past the KEEP_DETAILS most recent
        # finished runs, a widget gives up its timeline and log lines (header and graph stay).
        live.model = None  # nor may a widget keep its run's model after the run's end
        with self._lock:
            self._kept.append(view)
            retired = [self._kept.popleft() for _ in range(len(self._kept) - KEEP_DETAILS)]
        for view in retired:
            with contextlib.suppress(Exception):
                view.retire(KEEP_DETAILS)

    # -- output routing --------------------------------------------------------------------------
    def _patch_streams(self) -> None:
        """Give the kernel's output streams a ``write`` that knows about runs.

        The stream objects stay the same (ipykernel and IPython keep references to them): each
        gets a subclass of its own class with a ``write`` that diverts text written inside a
        shown run. IPython assigns its own ``write`` to the stream during every cell (to keep
        output history) and puts the previous one back afterwards; the subclass's ``write`` is
        a data descriptor, so such an assignment becomes the next writer in line instead of
        replacing the routing.
        """
        if self.kernel is None:
            return
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is None:
                continue
            base = type(stream)
            try:
                stream.__class__ = type(
                    base.__name__,
                    (base,),
                    {"write": _RoutedWrite(base, name, self._route), "__module__": base.__module__},
                )
            except TypeError:  # a stream type that cannot be subclassed: leave it alone
                continue
            inner = vars(stream).pop("write", None)
            if inner is not None:
                vars(stream)[_INNER] = inner
            self._patched.append((stream, base))

    def _unpatch_streams(self) -> None:
        for stream, base in self._patched:
            inner = vars(stream).pop(_INNER, None)
            with contextlib.suppress(TypeError):
                stream.__class__ = base
            if inner is not None and getattr(inner, "__func__", None) is not base.write:
                vars(stream)["write"] = inner
        self._patched.clear()

    def _route(self, name: str, text: str) -> bool:
        """Put ``text`` into the widget of the run writing it; False if it has none."""
        run: FlowRun | TaskRun | None = current_task_run.get()
        if run is not None:
            flow_run = run.flow_run  # type: ignore[union-attr]
        else:
            run = flow_run = current_flow_run.get()
        if flow_run is None:
            return False
        live = self.views.get(flow_run.id)
        if live is None:
            return False
        if console.writing() or fb_logging.handling_run_record.depth:
            # a console line, or a logging handler of the user's writing a run's record
            # (flowbook.logging marks the thread meanwhile, however deep the write): the
            # widget and the store have that line already; it goes to the cell's output only
            return False
        assert run is not None
        task = run.task_name if isinstance(run, TaskRun) else ""
        model = live.model
        if model is not None:  # else its widget was closed: the store keeps the text
            model.add_output(name, text, run.name, task, run.id)
        writer = _store_writer()
        if writer is not None:  # the store keeps what the widget shows (store/printed.py)
            task_run_id = run.id if isinstance(run, TaskRun) else None
            top = flow_run  # printed lines are bounded per top-level run
            while top.parent_task_run is not None and top.parent_task_run.flow_run is not None:
                top = top.parent_task_run.flow_run
            writer.put(("output", flow_run.id, task_run_id, name, text, time.time(), top.id))
        return True

    # -- updates ---------------------------------------------------------------------------------
    def _update_loop(self) -> None:
        interval = UPDATE_INTERVAL
        while not self._stop.wait(interval):
            now = time.monotonic()
            self._update_pass(now)
            # the updates never take more than about a tenth of the time (the GIL is shared
            # with the runs they show)
            interval = max(UPDATE_INTERVAL, 10 * (time.monotonic() - now))

    def _update_pass(self, now: float) -> None:
        """Push the views' pending changes (a method of its own: while the loop waits, no
        local variable keeps a finished run alive)."""
        with self._lock:
            lives = list({id(v): v for v in self.views.values()}.values())
        for live in lives:
            model = live.model
            if model is None:
                continue
            timeline = live.timeline_dirty and now - live.last_timeline >= TIMELINE_INTERVAL
            if model.pending() or timeline:
                with contextlib.suppress(Exception):  # never let one view stop the others
                    self._push(live, timeline=timeline)

    def _push(self, live: _Live, *, timeline: bool) -> None:
        with live.lock:
            model, view = live.model, live.view
            if model is None:  # its widget was closed
                return
            if timeline:
                live.last_timeline = time.monotonic()
                live.timeline_dirty = False
            # A snapshot allocates one small record per new task run; with a big run's
            # objects alive, the cyclic collector would scan the whole heap several times
            # during it (most of its cost). It allocates no cycles, so the collector waits.
            collect = gc.isenabled()
            if collect:
                gc.disable()
            try:
                snapshot = model.snapshot(timeline=timeline)
            finally:
                if collect:
                    gc.enable()
            if snapshot:
                view.apply(snapshot)
