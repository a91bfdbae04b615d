"""The run journal: a top-level flow run is on disk before its body starts.

The store writer lets events gather and commits them in batches, so a process killed in the
first moments of a run would leave no row for it, and the run would never be marked
``Crashed``. Committing the run's row before its body starts would cost a database round trip
(and a second commit) per flow call. Instead, when a top-level flow run is created, one line
describing it is appended to this process's journal file, ``<home>/journal/<process id>.jsonl``,
on the creating thread: a single ``write`` to a file opened for appending, a few microseconds.
A killed process's data in the kernel's page cache reaches the file all the same.

With ``FLOWBOOK_STORE_WAIT=off`` a flow call returns before its rows are committed: a second
line, with the run's final state, is appended when the run ends, so a process killed before the
writer's next batch still leaves the run's outcome (the crash check records it with that state
and says that its task runs and logs were not recorded).

When a run's rows are committed (the flow's end waits for that, unless told not to), its
lines are no longer needed; once no journalled run is waiting and the file has grown past
64 KiB, it is emptied (a line whose run is in the database is skipped by the reader). A cleanly
closed store removes its journal. The crash check of a later process
(``database.recover_crashed``) reads the journals of dead processes of this host and records
the runs they hold that the database does not have, as ``Crashed`` (or with their journalled
final state).
"""

from __future__ import annotations

import json
import os
import threading
from json.encoder import encode_basestring_ascii as _quoted
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowbook.engine.runs import FlowRun
    from flowbook.states import State

__all__ = ["RunJournal", "journal_dir", "read_journal"]

_EMPTY_AFTER = 64 * 1024
_MESSAGE_CHARS = 2000  # of a final state's message, in its line


def journal_dir(home: Path) -> Path:
    return home / "journal"


class RunJournal:
    """This process's journal of top-level flow runs whose rows are not committed yet."""

    def __init__(self, directory: Path, process_id: str) -> None:
        self.path = directory / f"{process_id}.jsonl"
        self._fd: int | None = None
        self._waiting: set[str] = set()
        self._lock = threading.Lock()
        self._broken = False
        self._written = 0  # bytes appended since the file was last emptied

    def record(self, run: FlowRun) -> None:
        """Append the run's line (on the thread that creates the run, before its body)."""
        if self._broken:
            return
        flow = run.flow
        fields = {
            "id": run.id,
            "name": run.name,
            "flow_name": flow.name,
            "flow_version": flow.version,
            "project": flow.project,
            "created_at": run.created_s,
            "notebook": run.notebook,
            "cell_id": run.cell_id,
            "tags": list(run.tags),
        }
        line = _line(fields)
        with self._lock:
            if self._append(line):
                self._waiting.add(run.id)

    def ended(self, run: FlowRun, state: State) -> None:
        """Append the run's final state (its caller goes on before its rows are committed)."""
        if self._broken:
            return
        end = {
            "type": state.type._value_,
            "name": state.name,
            "message": (state.message or "")[:_MESSAGE_CHARS] or None,
            "time": run.end_s,
            "run_count": run.run_count,
        }
        line = f'{{"id": {_text(run.id)}, "end": {_line(end).decode()}}}'.encode()
        with self._lock:
            if run.id in self._waiting:  # (a run journalled when it was created)
                self._append(line)

    def _append(self, line: bytes) -> bool:
        try:
            if self._fd is None:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._written += os.write(self._fd, line + b"\n")
        except OSError:
            # a full disk or a read-only home: the store says so when it writes; the run only
            # loses this early trace
            self._broken = True
            return False
        return True

    def committed(self, run_id: str) -> None:
        """The run's rows are in the database: its line is not needed any more."""
        with self._lock:
            self._waiting.discard(run_id)
            # emptied when nothing journalled waits any more and it has grown (a truncation
            # per flow call would cost more than the line)
            if not self._waiting and self._fd is not None and self._written > _EMPTY_AFTER:
                try:
                    os.ftruncate(self._fd, 0)
                    self._written = 0
                except OSError:
                    pass

    def close(self) -> None:
        """A clean end: every run is in the database or was reported as not written."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
            try:
                self.path.unlink()
            except OSError:
                pass


def _line(fields: dict[str, Any]) -> bytes:
    """``fields`` as one JSON object: written out here for the usual values (text, None,
    numbers, lists of text), a few times faster than ``json.dumps`` (two lines per flow call
    with ``FLOWBOOK_STORE_WAIT=off``); anything else goes through ``json.dumps``."""
    try:
        return (
            "{" + ", ".join(f"{_text(k)}: {_value(v)}" for k, v in fields.items()) + "}"
        ).encode()
    except TypeError:
        return json.dumps(fields).encode()


def _value(value: Any) -> str:
    kind = type(value)
    if kind is str or value is None:
        return _text(value)
    if kind is int or (kind is float and value - value == 0):  # (not inf or nan)
        return repr(value)
    if kind is list:
        return "[" + ", ".join(_text(v) for v in value) + "]"
    raise TypeError(kind)


def _text(value: str | None) -> str:
    if value is None:
        return "null"
    if type(value) is not str:
        raise TypeError(type(value))
    return _quoted(value)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The runs a (dead) process's journal holds, each with its final state (``"end"``) when
    one was journalled; lines cut short by a kill are skipped."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    runs: dict[str, dict[str, Any]] = {}
    for raw in data.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        end = entry.get("end")
        if end is None:
            runs[entry["id"]] = entry
        elif isinstance(end, dict) and entry["id"] in runs:
            runs[entry["id"]]["end"] = end
    return list(runs.values())
