"""Two flow runs compared: what changed between them, as plain data.

``flowbook runs diff A B``, ``%flowbook diff A B`` and the server's ``diff`` endpoint all show
``compare_runs``' answer. It is meant to answer "why is this run slower, or different, than
that one": the two runs' headers (state, duration and their ratio), their parameters side by
side, and the task runs that differ.

How task runs are matched. A task run of run A and one of run B are the same call when they
have the same task name and the same call index: the n-th call of a task in a flow run (its
``dynamic_key``: ``square-0``, ``square-1``, ... for ``square.map(...)``, whatever name a
``task_run_name`` template gives). Only the flow run's own task runs are compared (a subflow
call is one task run of its parent, compared by its state and duration). A call found in one
run only is listed as only in A or only in B.

When a matched pair differs. In state (name), in cache use (``hit``: served from the cache,
state Cached; ``miss``: computed with a cache key; none: no cache key), in inputs (their
stored previews), in result (the stored pickles' checksums, then, when the checksums differ,
the values unpickled and compared with ``==``: equal values can pickle to different bytes; an
``==`` that raises or does not answer a truth value means different, arrays and frames are
compared whole), or in duration: both
durations known and apart by at least ``MIN_CHANGE_S`` seconds *and* by a factor of at least
``MIN_RATIO`` either way, so that the jitter of short tasks is not reported. Pairs that differ
in none of these are counted as identical.

Runs of different flows can be compared (a renamed flow, a rewritten one): the comparison says
so (``same_flow`` false) and matches their task runs by the same rule. A run compared with
itself is an error, as are unknown and ambiguous references (``find_run_id``'s messages, with
the argument named).

Comparing values needs the stored values unpickled, which may import the modules of their
types: ``read_results=False`` (the Jupyter server, which never unpickles) compares results by
checksum only and previews them by reading their pickles without loading them
(``flowbook._pickle_preview``: plain data as the live preview shows it, objects by their
class). A value that cannot be read here (its module is not importable in this process, its
file is gone) is shown as such; a result file larger than ``MAX_RESULT_BYTES`` is not loaded
and gets the same safe preview. Such a pair is compared by checksum, as the server does, so
differing checksums count as a difference. Previews are only shown, never compared.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowbook.store import Store

__all__ = [
    "MAX_RESULT_BYTES",
    "MIN_CHANGE_S",
    "MIN_RATIO",
    "ParameterChange",
    "RunDiff",
    "RunSide",
    "TaskRunDiff",
    "TaskRunSide",
    "compare_runs",
    "failure_messages",
    "format_duration",
    "format_ratio",
    "render_text",
    "task_run_name",
]

MIN_CHANGE_S = 0.05
"""Durations closer than this (in seconds) are the same duration."""
MIN_RATIO = 1.2
"""Durations whose ratio (the longer over the shorter) is below this are the same duration."""
MAX_RESULT_BYTES = 1024 * 1024
"""A result file larger than this is not loaded for its preview."""


@dataclass
class RunSide:
    """One of the two flow runs: what its header shows."""

    id: str
    name: str
    flow_name: str
    state: str | None
    state_type: str | None
    message: str | None
    start_time: str | None
    duration_s: float | None
    task_runs: int


@dataclass
class ParameterChange:
    """One parameter in both runs (``None``: not a parameter of that run)."""

    name: str
    a: str | None
    b: str | None
    changed: bool


@dataclass
class TaskRunSide:
    """One task run of a matched pair (or of an unmatched one)."""

    id: str
    name: str
    state: str | None
    state_type: str | None
    message: str | None
    duration_s: float | None
    cache: str | None
    """``"hit"`` (served from the cache), ``"miss"`` (computed, with a cache key), or None."""
    inputs: str | None
    result: str | None
    """The result's preview; None when there is none (not completed, not stored, not read)."""


@dataclass
class TaskRunDiff:
    """A call that differs between the runs: its two task runs and what differs."""

    task_name: str
    index: int
    a: TaskRunSide | None
    b: TaskRunSide | None
    changes: list[str]
    """Of ``state``, ``duration``, ``cache``, ``inputs``, ``result``; or ``only in A`` /
    ``only in B``."""
    duration_ratio: float | None
    """B's duration over A's, when both are known and A's is not 0."""


@dataclass
class RunDiff:
    """``compare_runs``' answer."""

    a: RunSide
    b: RunSide
    same_flow: bool
    duration_ratio: float | None
    """B's duration over A's, when both are known and A's is not 0."""
    parameters: list[ParameterChange]
    task_runs: list[TaskRunDiff]
    """The calls that differ, in run A's order, then those only in run B, in B's order."""
    identical: int
    """How many matched calls differ in nothing compared."""
    only_in_a: int
    only_in_b: int
    read_results: bool
    min_change_s: float = MIN_CHANGE_S
    min_ratio: float = MIN_RATIO
    matched_by: str = "task name and call index"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_runs(
    store: Store,
    a: str,
    b: str,
    *,
    read_results: bool = True,
    min_change_s: float = MIN_CHANGE_S,
    min_ratio: float = MIN_RATIO,
) -> RunDiff:
    """Compare flow run ``a`` with flow run ``b`` (ids, id prefixes or run names).

    ``LookupError`` for a reference that names no run or several, ``ValueError`` for one that
    cannot name a run or when both name the same run; the messages name the argument.
    """
    from flowbook.store.queries import check_run_ref, find_run_id

    ids = []
    for label, ref in (("A", a), ("B", b)):
        try:
            ids.append(find_run_id(store, check_run_ref(ref)))
        except LookupError as exc:
            raise LookupError(f"run {label}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"run {label}: {exc}") from None
    if ids[0] == ids[1]:
        same = "" if a == b else f" ({a!r} and {b!r} name the same run)"
        raise ValueError(
            f"runs A and B are both flow run {ids[0]}{same}; give two different runs to compare"
        )
    run_a, tasks_a = _read(store, ids[0], read_results)
    run_b, tasks_b = _read(store, ids[1], read_results)
    side_a, side_b = _run_side(run_a, len(tasks_a)), _run_side(run_b, len(tasks_b))
    diff = RunDiff(
        a=side_a,
        b=side_b,
        same_flow=side_a.flow_name == side_b.flow_name,
        duration_ratio=_ratio(side_a.duration_s, side_b.duration_s),
        parameters=_parameters(run_a, run_b),
        task_runs=[],
        identical=0,
        only_in_a=0,
        only_in_b=0,
        read_results=read_results,
        min_change_s=min_change_s,
        min_ratio=min_ratio,
    )
    if not diff.same_flow:
        diff.notes.append(
            f"the runs are of different flows ({side_a.flow_name!r} and {side_b.flow_name!r}); "
            "their task runs are matched by task name and call index all the same"
        )
    reader = _Results(store, read_results)
    reader.fetch_entries([*tasks_a, *tasks_b])
    matched_b = _by_call(tasks_b)
    seen: set[tuple[str, int, int]] = set()
    for key, row_a in _by_call(tasks_a).items():
        row_b = matched_b.get(key)
        if row_b is None:
            diff.only_in_a += 1
            diff.task_runs.append(
                TaskRunDiff(key[0], key[1], reader.side(row_a), None, ["only in A"], None)
            )
            continue
        seen.add(key)
        changes = _changes(row_a, row_b, reader, min_change_s, min_ratio)
        if not changes:
            diff.identical += 1
            continue
        diff.task_runs.append(
            TaskRunDiff(
                key[0],
                key[1],
                reader.side(row_a),
                reader.side(row_b),
                changes,
                _ratio(_duration(row_a), _duration(row_b)),
            )
        )
    for key, row_b in matched_b.items():
        if key not in seen:
            diff.only_in_b += 1
            diff.task_runs.append(
                TaskRunDiff(key[0], key[1], None, reader.side(row_b), ["only in B"], None)
            )
    if not read_results:
        _safe_previews(store, diff.task_runs)
    if reader.unreadable:
        diff.notes.append(
            f"{reader.unreadable} result(s) could not be read here and were compared by "
            "checksum only"
        )
    return diff


# -- reading -----------------------------------------------------------------------------------


def _read(store: Store, run_id: str, with_values: bool) -> tuple[Any, list[Any]]:
    """The flow run's row and its task runs' (with their inline results if ``with_values``)."""
    from sqlalchemy import literal, select

    from flowbook.store.schema import flow_runs, of_flow_run, task_runs

    t = task_runs.c
    with store.engine.connect() as conn:
        run = conn.execute(select(flow_runs).where(flow_runs.c.id == run_id)).one()
        tasks = conn.execute(
            select(
                t.id,
                t.name,
                t.task_name,
                t.task_key,
                t.dynamic_key,
                t.state_name,
                t.state_type,
                t.state_message,
                t.parameters_preview,
                t.cache_key,
                t.result_file,
                t.result_checksum,
                t.start_time,
                t.end_time,
                t.result.is_not(None).label("has_result"),
                (t.result if with_values else literal(None)).label("result"),
            )
            .where(of_flow_run(task_runs, run_id))
            .order_by(t.created_at, t.dynamic_key)
        ).all()
    return run, list(tasks)


def _by_call(rows: list[Any]) -> dict[tuple[str, int, int], Any]:
    """Task runs by (task name, call index, n): n tells apart the calls of two tasks that
    share a name (in the order they were created)."""
    out: dict[tuple[str, int, int], Any] = {}
    for row in rows:
        n = 0
        while (row.task_name, row.dynamic_key, n) in out:
            n += 1
        out[(row.task_name, row.dynamic_key, n)] = row
    return out


def _duration(row: Any) -> float | None:
    if row.start_time is None or row.end_time is None:
        return None
    return round(float(row.end_time - row.start_time), 6)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a <= 0:
        return None
    return round(b / a, 3)


def _run_side(row: Any, count: int) -> RunSide:
    from flowbook.store.queries import iso

    return RunSide(
        id=row.id,
        name=row.name,
        flow_name=row.flow_name,
        state=row.state_name,
        state_type=row.state_type,
        message=row.state_message,
        start_time=iso(row.start_time),
        duration_s=_duration(row),
        task_runs=count,
    )


def _parameters(run_a: Any, run_b: Any) -> list[ParameterChange]:
    a: dict[str, Any] = json.loads(run_a.parameters_preview or "{}")
    b: dict[str, Any] = json.loads(run_b.parameters_preview or "{}")
    names = list(a) + [name for name in b if name not in a]
    return [
        ParameterChange(
            name,
            None if name not in a else str(a[name]),
            None if name not in b else str(b[name]),
            name not in a or name not in b or a[name] != b[name],
        )
        for name in names
    ]


def _cache(row: Any) -> str | None:
    if row.state_name == "Cached":
        return "hit"
    return "miss" if row.cache_key is not None else None


def _durations_differ(a: float | None, b: float | None, min_change_s: float, ratio: float) -> bool:
    if a is None or b is None or abs(b - a) < min_change_s:
        return False
    low, high = sorted((a, b))
    return low <= 0 or high / low >= ratio


def _changes(a: Any, b: Any, reader: _Results, min_change_s: float, ratio: float) -> list[str]:
    changes = []
    if a.state_name != b.state_name:
        changes.append("state")
    if _durations_differ(_duration(a), _duration(b), min_change_s, ratio):
        changes.append("duration")
    if _cache(a) != _cache(b):
        changes.append("cache")
    if a.parameters_preview != b.parameters_preview:
        changes.append("inputs")
    if reader.differ(a, b):
        changes.append("result")
    return changes


class _Results:
    """Result checksums and previews of task runs, each read once."""

    def __init__(self, store: Store, read: bool) -> None:
        self.store = store
        self.read = read
        self.unreadable = 0
        self._previews: dict[str, str | None] = {}
        self._entries: dict[tuple[str, str], Any] = {}

    def side(self, row: Any) -> TaskRunSide:
        return TaskRunSide(
            id=row.id,
            name=row.name,
            state=row.state_name,
            state_type=row.state_type,
            message=row.state_message,
            duration_s=_duration(row),
            cache=_cache(row),
            inputs=row.parameters_preview,
            result=self.preview(row),
        )

    def _source(self, row: Any) -> tuple[str | None, str | None] | None:
        """``(file, checksum)`` of where the run's value is kept (a Cached run's value is
        its cache entry's), or None when it is not kept."""
        if row.state_name == "Cached":
            entry = self._entry(row)
            return None if entry is None else (entry.result_file, entry.checksum)
        if row.state_type != "COMPLETED" or (not row.has_result and row.result_file is None):
            return None
        return row.result_file, row.result_checksum

    def differ(self, a: Any, b: Any) -> bool:
        source_a, source_b = self._source(a), self._source(b)
        if source_a is None or source_b is None:
            return False  # no value on one side: the state or cache column tells why
        if source_a[1] is not None and source_a[1] == source_b[1]:
            return False
        by_checksum = source_a[1] is not None and source_b[1] is not None
        if not self.read:
            return by_checksum
        value_a, value_b = self._value(a), self._value(b)
        if value_a is _NOT_READ or value_b is _NOT_READ:
            return by_checksum  # the checksums differ: so may the values
        return not _equal(value_a, value_b)

    def preview(self, row: Any) -> str | None:
        if not self.read:
            return None
        if row.id not in self._previews:
            self._value(row)
        return self._previews.get(row.id)

    def _value(self, row: Any) -> Any:
        """The run's stored value (its preview kept), or ``_NOT_READ``."""
        from flowbook._pickle_preview import stored_preview
        from flowbook._preview import preview
        from flowbook.store import results

        source = self._source(row)
        if source is None:
            self._previews.setdefault(row.id, None)
            return _NOT_READ
        file, checksum = source
        try:
            if file is not None:
                path = self.store.results_dir / file
                size = path.stat().st_size
                if size > MAX_RESULT_BYTES:
                    self._previews[row.id] = stored_preview(
                        None, path, checksum, root=self.store.results_dir
                    )
                    return _NOT_READ
                value = results.read_file(path, checksum)
            else:
                data = self._inline(row)
                if data is None:
                    self._previews.setdefault(row.id, None)
                    return _NOT_READ
                results.verify(data, checksum, f"the result of task run {row.name!r}")
                value = results.loads(data)
        except Exception as exc:  # a module this process cannot import, a file gone, ...
            if row.id not in self._previews:
                self.unreadable += 1
            self._previews[row.id] = f"{_UNREAD}{type(exc).__name__}: {_first_line(exc)})"
            return _NOT_READ
        if row.id not in self._previews:
            self._previews[row.id] = preview(value)
        return value

    def _inline(self, row: Any) -> bytes | None:
        if row.state_name == "Cached":
            entry = self._entry(row)
            return None if entry is None or entry.value is None else bytes(entry.value)
        return None if row.result is None else bytes(row.result)

    def _entry(self, row: Any) -> Any:
        """The cache entry a Cached run was served from, or None when it was cleared since."""
        if row.task_key is None or row.cache_key is None:
            return None
        return self._entries.get((row.task_key, row.cache_key))

    def fetch_entries(self, rows: list[Any]) -> None:
        """Read the cache entries the Cached runs among ``rows`` were served from, a few
        hundred a query. Read as stored: reading them is not a cache hit."""
        from sqlalchemy import select, tuple_

        from flowbook.store.schema import cache_entries

        wanted = sorted(
            {
                (row.task_key, row.cache_key)
                for row in rows
                if row.state_name == "Cached" and row.task_key is not None and row.cache_key
            }
        )
        c = cache_entries.c
        columns = [c.task_key, c.key, c.result_file, c.checksum]
        if self.read:
            columns.append(c.value)
        with self.store.engine.connect() as conn:
            for start in range(0, len(wanted), 400):
                chunk = wanted[start : start + 400]
                found = conn.execute(select(*columns).where(tuple_(c.task_key, c.key).in_(chunk)))
                for entry in found:
                    self._entries[(entry.task_key, entry.key)] = entry


def _safe_previews(store: Store, listed: list[TaskRunDiff]) -> None:
    """Give the listed task runs the previews of their results read without unpickling."""
    from flowbook.store.queries import result_previews

    sides = [side for t in listed for side in (t.a, t.b) if side is not None]
    previews = result_previews(store, [side.id for side in sides])
    for side in sides:
        side.result = previews.get(side.id)


_UNREAD = "(cannot be read here: "
_NOT_READ = object()
"""A value not read: not kept, not loadable in this process, or too large."""


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` for two unpickled results, never raising: an answer that is not a truth
    value (an array's elementwise answer, an ambiguous truth value) counts as different,
    except for arrays and frames, compared whole (``numpy.array_equal``, ``.equals``)."""
    try:
        if type(a) is type(b):
            numpy = sys.modules.get("numpy")
            if numpy is not None and isinstance(a, numpy.ndarray):
                return bool(a.shape == b.shape and numpy.array_equal(a, b))
            equals = getattr(a, "equals", None)  # pandas Series / DataFrame / Index
            if callable(equals) and type(a).__module__.startswith("pandas"):
                return equals(b) is True
        answer = a == b
        if isinstance(answer, bool):
            return answer
        if getattr(answer, "shape", None) == () and type(answer).__module__ == "numpy":
            return bool(answer)  # a numpy scalar's ``numpy.bool_``
        return False
    except Exception:  # an ``__eq__`` that raises, an ambiguous truth value
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else ""


def format_duration(seconds: float | None) -> str:
    """``320 ms``, ``1.25 s``, ``2 min 05 s``; ``-`` for no value."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = int(seconds)
    return f"{whole // 60} min {whole % 60:02d} s"


def format_ratio(ratio: float | None) -> str:
    """``2.50x``; ``-`` for no ratio."""
    return "-" if ratio is None else f"{ratio:.2f}x"


# -- text ----------------------------------------------------------------------------------------


def render_text(diff: RunDiff) -> str:
    """The comparison as aligned text (``flowbook runs diff``, the magic's plain text)."""
    a, b = diff.a, diff.b
    flow = repr(a.flow_name) if diff.same_flow else f"{a.flow_name!r} / {b.flow_name!r}"
    out = [f"Flow runs of {flow}: A = {a.name!r} ({a.id[:8]}), B = {b.name!r} ({b.id[:8]})"]
    out += [f"note: {note}" for note in diff.notes]
    out += _table(
        ("RUN", "A", "B", "B/A"),
        [
            ("state", a.state or "-", b.state or "-", ""),
            ("started", _when(a.start_time), _when(b.start_time), ""),
            (
                "duration",
                format_duration(a.duration_s),
                format_duration(b.duration_s),
                format_ratio(diff.duration_ratio),
            ),
            ("task runs", str(a.task_runs), str(b.task_runs), ""),
        ],
    )
    out += ["", "parameters (* changed):"]
    out += _table(
        ("", "NAME", "A", "B"),
        [("*" if p.changed else "", p.name, _absent(p.a), _absent(p.b)) for p in diff.parameters],
    )
    differ = len(diff.task_runs) - diff.only_in_a - diff.only_in_b
    out += [
        "",
        f"task runs, matched by {diff.matched_by}: {differ} differ, {diff.identical} "
        f"identical, {diff.only_in_a} only in A, {diff.only_in_b} only in B",
    ]
    if diff.task_runs:
        out += _table(
            (
                "TASK RUN",
                "DIFFERS IN",
                "STATE A",
                "STATE B",
                "TIME A",
                "TIME B",
                "B/A",
                "CACHE A",
                "CACHE B",
                "RESULT A",
                "RESULT B",
            ),
            [
                (
                    task_run_name(t),
                    ", ".join(t.changes),
                    _cell(t.a, "state"),
                    _cell(t.b, "state"),
                    format_duration(t.a.duration_s) if t.a else "",
                    format_duration(t.b.duration_s) if t.b else "",
                    format_ratio(t.duration_ratio) if "duration" in t.changes else "",
                    _cell(t.a, "cache"),
                    _cell(t.b, "cache"),
                    _cell(t.a, "result"),
                    _cell(t.b, "result"),
                )
                for t in diff.task_runs
            ],
        )
        for t, label, message in failure_messages(diff):
            out.append(f"  {task_run_name(t)} in {label}: {message}")
    out.append(
        f"(durations differ when apart by {format_duration(diff.min_change_s)} or more and "
        f"by {diff.min_ratio:g}x or more)"
    )
    return "\n".join(out)


def task_run_name(t: TaskRunDiff) -> str:
    side = t.a if t.a is not None else t.b
    return side.name if side is not None else f"{t.task_name}-{t.index}"


def failure_messages(diff: RunDiff) -> list[tuple[TaskRunDiff, str, str]]:
    """``(task run, "A" or "B", first line of its message)`` of the listed task runs that
    did not complete."""
    return [
        (t, label, side.message.strip().splitlines()[0][:200])
        for t in diff.task_runs
        for label, side in (("A", t.a), ("B", t.b))
        if side is not None and side.message and side.message.strip()
        if side.state_type != "COMPLETED"
    ]


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return ["(none)"]
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def _when(iso: str | None) -> str:
    return "" if not iso else iso.replace("T", " ")[:19]


def _absent(value: str | None) -> str:
    return "(not a parameter)" if value is None else value


def _cell(side: TaskRunSide | None, attr: str) -> str:
    if side is None:
        return ""
    value = getattr(side, attr)
    text = "-" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:39] + "…"
