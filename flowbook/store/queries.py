"""Reading and pruning the store: runs, their details, cache entries and cache misses.

Used by ``flowbook.runs``, ``flowbook.cache``, the command line and ``Flow.resume``. Every
function first waits for the writer to commit what this process has queued, so a run that
just finished is listed. Runs are named by id, by a unique id prefix, or by run name (the
newest run of that name).
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    ColumnElement,
    Float,
    String,
    and_,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    tuple_,
    union_all,
)

from flowbook import _run_lines
from flowbook.caching.keys import KeyParts
from flowbook.caching.misses import (
    MissExplanation,
    MissHistory,
    MissRecord,
    StoredEntry,
    explain,
)
from flowbook.store import results
from flowbook.store.database import location
from flowbook.store.schema import (
    cache_entries,
    cache_misses,
    flow_runs,
    flows,
    logs,
    of_flow_run,
    of_flow_runs,
    states,
    task_run_edges,
    task_runs,
)
from flowbook.store.store import Store

__all__ = [
    "MAX_LIMIT",
    "STATE_NAMES",
    "CacheEntryInfo",
    "FlowRunDetail",
    "FlowRunInfo",
    "FlowSummary",
    "RegisteredFlow",
    "cache_entries_info",
    "cache_miss_explanations",
    "check_limit",
    "check_run_ref",
    "check_state",
    "clear_cache",
    "delete_run",
    "find_registered_flow",
    "find_run_id",
    "flow_names",
    "get_run",
    "invalidate_cache",
    "list_flows",
    "list_runs",
    "result_previews",
    "why_missed",
]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).isoformat()


@dataclass
class FlowRunInfo:
    """One flow run as listed by ``flowbook runs``."""

    id: str
    name: str
    flow_name: str
    state: str | None
    state_type: str | None
    message: str | None
    start_time: str | None
    end_time: str | None
    duration_s: float | None
    task_runs: int
    project: str | None
    parent_task_run_id: str | None
    notebook: str | None = None
    """The notebook a top-level run started in a Jupyter kernel came from (its path as the
    kernel was told it, ``JPY_SESSION_NAME``), and the id of the cell that started it (sent by
    JupyterLab and Notebook 7); None elsewhere."""
    cell_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FlowRunDetail(FlowRunInfo):
    """A flow run with its parameters, state history, task runs and logs."""

    parameters: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    version: str | None = None
    resumed_from: str | None = None
    states: list[dict[str, Any]] = field(default_factory=list)
    task_run_list: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CacheEntryInfo:
    """One cache entry as listed by ``flowbook cache ls``."""

    key: str
    task_name: str
    flow_name: str | None
    created: str | None
    expires: str | None
    expired: bool
    size: int
    hits: int
    input_preview: str | None
    task_key: str
    source_hash: str | None = None
    """What the key is made of (keys made by task_input_hash, in stores of schema version 2 or
    later): the hash of the task's source, and one content hash per argument."""
    input_hashes: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _duration(row: Any) -> float | None:
    if row.start_time is None or row.end_time is None:
        return None
    return round(row.end_time - row.start_time, 6)  # type: ignore[no-any-return]


def _flow_row_info(row: Any, count: int) -> FlowRunInfo:
    duration = _duration(row)
    return FlowRunInfo(
        id=row.id,
        name=row.name,
        flow_name=row.flow_name,
        state=row.state_name,
        state_type=row.state_type,
        message=row.state_message,
        start_time=iso(row.start_time),
        end_time=iso(row.end_time),
        duration_s=duration,
        task_runs=count,
        project=row.project,
        parent_task_run_id=row.parent_task_run_id,
        notebook=row.notebook,
        cell_id=row.cell_id,
    )


def list_runs(
    store: Store,
    flow: str | None = None,
    state: str | None = None,
    limit: int | None = 50,
    *,
    top_level: bool = False,
) -> list[FlowRunInfo]:
    """Flow runs, newest first (``top_level``: leave out subflow runs)."""
    if state is not None:
        state = check_state(state)
    if limit is not None:
        limit = check_limit(limit)
    store.flush()
    # each listed run's task runs counted through the index (not every run's, then joined),
    # with those whose key is not filled in (schema: "Finding a flow run's rows")
    key = task_runs.c.flow_run_created_us
    count = (
        select(func.count())
        .where(
            task_runs.c.flow_run_id == flow_runs.c.id,
            or_(key == flow_runs.c.created_us, key.is_(None)),
        )
        .correlate(flow_runs)
        .scalar_subquery()
    )
    query = select(flow_runs, count.label("task_run_count")).order_by(flow_runs.c.created_at.desc())
    if flow is not None:
        query = query.where(flow_runs.c.flow_name == flow)
    if top_level:
        query = query.where(flow_runs.c.parent_task_run_id.is_(None))
    if state is not None:
        query = query.where(
            or_(
                func.lower(flow_runs.c.state_name) == state.lower(),
                func.lower(flow_runs.c.state_type) == state.lower(),
            )
        )
    if limit is not None:
        query = query.limit(limit)
    with store.engine.connect() as conn:
        return [_flow_row_info(row, row.task_run_count) for row in conn.execute(query)]


def flow_names(store: Store, *, top_level: bool = False) -> list[str]:
    """The distinct names of the flows with runs in the store, sorted (``top_level``: of
    runs that are not subflow runs)."""
    store.flush()
    query = select(flow_runs.c.flow_name).distinct().order_by(flow_runs.c.flow_name)
    if top_level:
        query = query.where(flow_runs.c.parent_task_run_id.is_(None))
    with store.engine.connect() as conn:
        return [str(name) for name in conn.execute(query).scalars()]


# Every state name flowbook gives a run (flowbook.states). A filter matches a run's state name
# or its state type, case-insensitively: "Failed" also lists runs that TimedOut, "Running"
# also those Retrying.
STATE_NAMES = (
    "AwaitingRetry",
    "Cached",
    "Cancelled",
    "Completed",
    "Crashed",
    "Failed",
    "Pending",
    "Retrying",
    "Running",
    "Scheduled",
    "TimedOut",
)
_STATES_BY_LOWER = {name.lower(): name for name in STATE_NAMES}
# the most runs one listing returns (flowbook runs --limit, flowbook.runs.list(limit=))
MAX_LIMIT = 1_000_000
# an id prefix shorter than this is not looked up (one hex digit matches a sixteenth of runs)
MIN_PREFIX = 4


def check_state(state: str) -> str:
    """The state name ``state`` means (any case), or a ValueError listing the names."""
    name = _STATES_BY_LOWER.get(state.strip().lower()) if isinstance(state, str) else None
    if name is None:
        raise ValueError(
            f"state {state!r} is not a state name; use one of {', '.join(STATE_NAMES)}"
        )
    return name


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(
            f"limit={limit!r} is not valid; give a whole number from 1 to {MAX_LIMIT}, or None "
            "for all runs"
        )
    return limit


def check_run_ref(ref: str) -> str:
    """``ref`` if it can name a flow run; a ValueError saying what can."""
    from flowbook.names import name_problem

    problem = name_problem(ref)
    if problem is not None:
        raise ValueError(
            f"the run {ref!r} {problem}; give a flow run's id, the first {MIN_PREFIX} or more "
            "characters of its id, or its name (`flowbook runs` lists them)"
        )
    return ref


def find_run_id(store: Store, ref: str) -> str:
    """The id of the flow run ``ref`` names: its id, a unique id prefix, or its run name
    (the newest run of that name). A name that is also the start of another run's id is
    ambiguous: an error names both runs, and the full id chooses."""
    check_run_ref(ref)
    store.flush()
    columns = (flow_runs.c.id, flow_runs.c.name, flow_runs.c.flow_name, flow_runs.c.created_at)
    with store.engine.connect() as conn:
        exact = conn.execute(select(flow_runs.c.id).where(flow_runs.c.id == ref)).first()
        if exact:
            return str(exact[0])
        by_prefix: Sequence[Any] = ()
        if len(ref) >= MIN_PREFIX:
            by_prefix = conn.execute(
                select(*columns)
                .where(flow_runs.c.id.startswith(ref, autoescape=True))
                .order_by(flow_runs.c.created_at.desc())
                .limit(6)
            ).all()
        by_name = conn.execute(
            select(*columns)
            .where(flow_runs.c.name == ref)
            .order_by(flow_runs.c.created_at.desc())
            .limit(1)
        ).first()
    if by_name is not None and by_prefix and {r.id for r in by_prefix} != {by_name.id}:
        raise LookupError(
            f"run {ref!r} is ambiguous: it is the name of {_describe(by_name)} and the start of "
            f"the id of {_describe_all(r for r in by_prefix if r.id != by_name.id)}; give the "
            "full id of the run you mean"
        )
    if by_name is not None:
        return str(by_name.id)
    if len(by_prefix) == 1:
        return str(by_prefix[0].id)
    if by_prefix:
        raise LookupError(
            f"run {ref!r} is ambiguous: the ids of {_describe_all(by_prefix)} start with it; "
            "give more characters of the id"
        )
    short = f"; an id prefix needs {MIN_PREFIX} or more characters" if len(ref) < MIN_PREFIX else ""
    raise LookupError(
        f"no flow run {ref!r} in the store at {location(store.url)!r}{short}; list runs with "
        "`flowbook runs`"
    )


def _describe(row: Any) -> str:
    return f"flow run {row.id} ({row.name!r} of flow {row.flow_name!r})"


def _describe_all(rows: Iterable[Any]) -> str:
    listed = [_describe(r) for r in rows]
    more = ", and more" if len(listed) > 5 else ""
    return ", ".join(listed[:5]) + more


def get_run(store: Store, ref: str) -> FlowRunDetail:
    run_id = find_run_id(store, ref)
    with store.engine.connect() as conn:
        row = conn.execute(select(flow_runs).where(flow_runs.c.id == run_id)).one()
        tasks = conn.execute(
            select(task_runs).where(of_flow_run(task_runs, run_id)).order_by(task_runs.c.created_at)
        ).all()
        task_ids = [t.id for t in tasks]
        history = conn.execute(
            select(states).where(states.c.run_id.in_([run_id, *task_ids])).order_by(states.c.id)
        ).all()
        edges = (
            conn.execute(
                select(task_run_edges).where(task_run_edges.c.downstream_id.in_(task_ids))
            ).all()
            if task_ids
            else []
        )
        lines = conn.execute(
            select(logs).where(of_flow_run(logs, run_id)).order_by(logs.c.timestamp, logs.c.id)
        ).all()
    by_run: dict[str, list[dict[str, Any]]] = {}
    for s in history:
        by_run.setdefault(s.run_id, []).append(
            {"name": s.name, "type": s.type, "message": s.message, "timestamp": iso(s.timestamp)}
        )
    upstream: dict[str, list[str]] = {}
    for e in edges:
        upstream.setdefault(e.downstream_id, []).append(e.upstream_id)
    info = _flow_row_info(row, len(tasks))
    return FlowRunDetail(
        **asdict(info),
        parameters=json.loads(row.parameters_preview or "{}"),
        tags=json.loads(row.tags or "[]"),
        version=row.flow_version,
        resumed_from=row.resumed_from,
        states=by_run.get(run_id) or _implied_history(row),
        task_run_list=[
            {
                "id": t.id,
                "name": t.name,
                "task_name": t.task_name,
                "state": t.state_name,
                "state_type": t.state_type,
                "message": t.state_message,
                "run_count": t.run_count,
                "start_time": iso(t.start_time),
                "end_time": iso(t.end_time),
                "duration_s": _duration(t),
                "cache_key": t.cache_key,
                "subflow_run_id": t.subflow_run_id,
                "upstream": upstream.get(t.id, []),
                "states": by_run.get(t.id) or _implied_history(t),
            }
            for t in tasks
        ],
        logs=[
            {
                "timestamp": iso(ts),
                "level": level,
                "logger": logger,
                "task_run_id": task_run_id,
                "message": message,
            }
            for ts, level, logger, task_run_id, message in _story(row, tasks, history, lines)
        ],
    )


_FINAL_TYPES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


def _story(
    row: Any, tasks: Sequence[Any], history: Sequence[Any], lines: Sequence[Any]
) -> list[tuple[float, int, str, str | None, str]]:
    """The run's log lines as the console and the widget told them, in time order.

    The stored lines, and the lines the store tells from rows instead of storing them (see
    writer.py): the run's creation, each retry's "... Retry 1/2 will start ..." line (the
    AwaitingRetry state's message), and the "Finished in state ..." line of every run that
    ended, told from its final state. Only a failure's traceback line is stored as a line.
    """
    told: list[tuple[float, int, str, str | None, str, int]] = []
    if row.created_at is not None:
        text = _run_lines.created_flow_run_text(row.name, row.flow_name)
        told.append((row.created_at, logging.INFO, "flowbook.engine", None, text, 0))
    by_run: dict[str, list[Any]] = {}
    for s in history:
        by_run.setdefault(s.run_id, []).append(s)

    def tell(run_id: str, task_run_id: str | None, who: str, final: Any) -> None:
        states_of = by_run.get(run_id)
        if not states_of:  # the plain path stores no state rows: the row tells the end
            if final.state_type in _FINAL_TYPES and final.end_time is not None:
                text = _run_lines.finished_text(
                    final.state_name, final.state_type, final.state_message
                )
                level = _run_lines.level_of(final.state_type)
                told.append((final.end_time, level, who, task_run_id, text, 1))
            return
        for s in states_of:
            if s.name == "AwaitingRetry":
                text = s.message or "Awaiting retry"
                told.append((s.timestamp, logging.INFO, who, task_run_id, text, 1))
            elif s.type in _FINAL_TYPES:
                text = _run_lines.finished_text(s.name, s.type, s.message)
                level = _run_lines.level_of(s.type)
                told.append((s.timestamp, level, who, task_run_id, text, 1))

    for t in tasks:
        tell(t.id, t.id, f"Task run {t.name!r}", t)
    tell(row.id, None, f"Flow run {row.name!r}", row)
    told += [
        (line.timestamp, line.level, line.logger, line.task_run_id, line.message, 0)
        for line in lines
    ]
    # stable: stored lines keep their order among equal times, and a told line comes after a
    # stored one of the same time (a failure's traceback line, then its "Finished" line)
    told.sort(key=_at)
    return [t[:5] for t in told]


def _at(line: tuple[Any, ...]) -> tuple[float, int]:
    return (float(line[0]), int(line[5]))


def _implied_history(row: Any) -> list[dict[str, Any]]:
    """The history of a task or flow run stored without state rows (the plain path; see
    writer.py): Pending at its creation, Running at its start, its final state at its end."""
    history = [
        {"name": "Pending", "type": "PENDING", "message": None, "timestamp": iso(row.created_at)}
    ]
    if row.state_name in (None, "Pending"):
        return history
    ran = row.state_name != "Cached" and row.start_time is not None
    if ran:
        history.append(
            {
                "name": "Running",
                "type": "RUNNING",
                "message": None,
                "timestamp": iso(row.start_time),
            }
        )
    if row.state_name != "Running":
        history.append(
            {
                "name": row.state_name,
                "type": row.state_type,
                "message": row.state_message,
                "timestamp": iso(row.end_time),
            }
        )
    return history


def delete_run(store: Store, ref: str) -> int:
    """Delete a flow run with its subflow runs, task runs, states, logs and result files."""
    run_id = find_run_id(store, ref)
    doomed_flows = [run_id]
    removed_files: list[str] = []
    with store.engine.begin() as conn:
        frontier = [run_id]
        while frontier:
            children = (
                conn.execute(
                    select(task_runs.c.subflow_run_id).where(
                        of_flow_runs(task_runs, frontier),
                        task_runs.c.subflow_run_id.is_not(None),
                    )
                )
                .scalars()
                .all()
            )
            frontier = [c for c in children if c not in doomed_flows]
            doomed_flows.extend(frontier)
        task_rows = conn.execute(
            select(task_runs.c.id, task_runs.c.result_file).where(
                of_flow_runs(task_runs, doomed_flows)
            )
        ).all()
        task_ids = [t.id for t in task_rows]
        removed_files = [t.result_file for t in task_rows if t.result_file]
        conn.execute(states.delete().where(states.c.run_id.in_([*doomed_flows, *task_ids])))
        conn.execute(logs.delete().where(of_flow_runs(logs, doomed_flows)))
        if task_ids:
            conn.execute(
                task_run_edges.delete().where(
                    or_(
                        task_run_edges.c.downstream_id.in_(task_ids),
                        task_run_edges.c.upstream_id.in_(task_ids),
                    )
                )
            )
        conn.execute(task_runs.delete().where(of_flow_runs(task_runs, doomed_flows)))
        conn.execute(flow_runs.delete().where(flow_runs.c.id.in_(doomed_flows)))
    for name in removed_files:
        _unlink(store.results_dir / name)
    return len(doomed_flows)


def cache_entries_info(
    store: Store, task: str | None = None, flow: str | None = None
) -> list[CacheEntryInfo]:
    store.flush()
    query = select(cache_entries).order_by(cache_entries.c.created.desc())
    if task is not None:
        query = query.where(cache_entries.c.task_name == task)
    if flow is not None:
        query = query.where(cache_entries.c.flow_name == flow)
    now = time.time()
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    out = []
    for r in rows:
        parts = KeyParts.from_json(r.key, r.key_parts)
        out.append(
            CacheEntryInfo(
                key=r.key,
                task_name=r.task_name,
                flow_name=r.flow_name,
                created=iso(r.created),
                expires=iso(r.expires),
                expired=r.expires is not None and r.expires <= now,
                size=r.size,
                hits=r.hits,
                input_preview=r.input_preview,
                task_key=r.task_key,
                source_hash=parts.source if parts is not None else None,
                input_hashes=dict(parts.inputs) if parts is not None else None,
            )
        )
    return out


def clear_cache(
    store: Store,
    *,
    task: str | None = None,
    flow: str | None = None,
    task_key: str | None = None,
    expired: bool = False,
    all: bool = False,
) -> int:
    """Delete cache entries (rows and files); returns how many."""
    if not (all or expired or task or flow or task_key):
        raise ValueError(
            "say which cache entries to clear: task=..., flow=..., expired=True, or all=True"
        )
    store.flush()
    conditions = []
    if task is not None:
        conditions.append(cache_entries.c.task_name == task)
    if flow is not None:
        conditions.append(cache_entries.c.flow_name == flow)
    if task_key is not None:
        conditions.append(cache_entries.c.task_key == task_key)
    if expired:
        conditions.append(
            and_(cache_entries.c.expires.is_not(None), cache_entries.c.expires <= time.time())
        )
    return _delete_entries(store, [and_(*conditions) if conditions else None])


def invalidate_cache(store: Store, entries: Iterable[tuple[str, str]]) -> int:
    """Delete the entries named by ``(task_key, key)`` pairs; returns how many existed."""
    pairs = list(dict.fromkeys((str(t), str(k)) for t, k in entries))
    if not pairs:
        return 0
    store.flush()
    c = cache_entries.c
    return _delete_entries(
        store,
        [tuple_(c.task_key, c.key).in_(pairs[i : i + 200]) for i in range(0, len(pairs), 200)],
    )


def _delete_entries(store: Store, wheres: list[ColumnElement[bool] | None]) -> int:
    """Delete the rows matching each condition (None: all rows), then their value files."""
    files: list[str] = []
    count = 0
    c = cache_entries.c
    with store.engine.begin() as conn:
        for where in wheres:
            query = select(c.task_key, c.key, c.result_file)
            rows = conn.execute(query if where is None else query.where(where)).all()
            stmt = delete(cache_entries)
            conn.execute(stmt if where is None else stmt.where(where))
            count += len(rows)
            files.extend(row.result_file for row in rows if row.result_file)
    for name in files:
        _unlink(store.results_dir / name)
    store.cache.forget_all()
    return count


# -- cache misses ----------------------------------------------------------------------------------


def why_missed(store: Store, ref: str) -> MissExplanation:
    """Why the latest cached call of the task ``ref`` (task key, or task name) missed."""
    store.flush()
    m = cache_misses.c
    with store.engine.connect() as conn:
        task_key = conn.execute(select(m.task_key).where(m.task_key == ref)).scalar()
        if task_key is None:
            task_key = conn.execute(
                select(m.task_key).where(m.task_name == ref).order_by(m.missed_at.desc()).limit(1)
            ).scalar()
    if task_key is None:
        raise LookupError(
            f"no cache miss of task {ref!r} is recorded in the store at {store.url!r}; give a "
            "task's name or its task key as flowbook.cache.entries() lists them (misses are "
            "recorded for tasks with a cache_key_fn)"
        )
    (explanation,) = _explanations(store, m.task_key == task_key)
    return explanation


def cache_miss_explanations(
    store: Store, task: str | None = None, flow: str | None = None
) -> list[MissExplanation]:
    """The latest miss of every task (optionally of one task name, or one flow), explained;
    newest first."""
    store.flush()
    m = cache_misses.c
    conditions = []
    if task is not None:
        conditions.append(m.task_name == task)
    if flow is not None:
        conditions.append(m.flow_name == flow)
    return _explanations(store, and_(*conditions) if conditions else None)


def _explanations(store: Store, where: ColumnElement[bool] | None) -> list[MissExplanation]:
    m, tr, c = cache_misses.c, task_runs.c, cache_entries.c
    query = (
        select(cache_misses, tr.name.label("run_name"), tr.parameters_preview)
        .outerjoin(task_runs, tr.id == m.task_run_id)
        .order_by(m.missed_at.desc())
    )
    with store.engine.connect() as conn:
        rows = list(conn.execute(query if where is None else query.where(where)))
        if not rows:
            return []
        task_keys = [r.task_key for r in rows]
        entry_rows: list[Any] = []
        for i in range(0, len(task_keys), 200):
            entry_rows.extend(
                conn.execute(
                    select(c.task_key, c.key, c.created, c.key_parts, c.input_preview).where(
                        c.task_key.in_(task_keys[i : i + 200])
                    )
                ).all()
            )
        histories: dict[str, MissHistory] = {}
        for i in range(0, len(rows), 200):
            histories.update(_histories(conn, rows[i : i + 200]))
    entries: dict[str, list[StoredEntry]] = {}
    for e in entry_rows:
        entries.setdefault(e.task_key, []).append(
            StoredEntry(e.key, e.created, KeyParts.from_json(e.key, e.key_parts), e.input_preview)
        )
    out = []
    for r in rows:
        record = MissRecord(
            task_key=r.task_key,
            key=r.key,
            task_name=r.task_name,
            flow_name=r.flow_name,
            missed_at=r.missed_at,
            cause=r.cause,
            expired_at=r.expired_at,
            key_parts=KeyParts.from_json(r.key, r.key_parts),
            task_run_id=r.task_run_id,
            task_run_name=r.run_name,
            input_preview=r.parameters_preview,
        )
        history = histories.get(r.task_key, MissHistory())
        out.append(explain(record, entries.get(r.task_key, []), history))
    return out


def _histories(conn: Any, rows: list[Any]) -> dict[str, MissHistory]:
    """What the task runs say about each miss, in one query: the task runs of each missed task
    that stored or were served a cache entry, before and after its miss."""
    # the misses as a table to join (a UNION ALL of literal rows: SQLite has no column names
    # for a VALUES list)
    selects = [
        select(
            literal(r.task_key, String).label("tk"),
            literal(r.key, String).label("k"),
            literal(r.missed_at, Float).label("t"),
            literal(r.task_run_id or "", String).label("rid"),
        )
        for r in rows
    ]
    m = (union_all(*selects) if len(selects) > 1 else selects[0]).subquery("m")
    tr = task_runs.c
    before = and_(tr.end_time < m.c.t, tr.id != m.c.rid)
    query = (
        select(
            m.c.tk,
            func.max(case((and_(before, tr.cache_key == m.c.k), tr.end_time))),
            func.sum(case((before, 1), else_=0)),
            func.sum(case((and_(tr.state_name == "Cached", tr.created_at > m.c.t), 1), else_=0)),
        )
        .select_from(
            m.join(
                task_runs,
                and_(
                    tr.task_key == m.c.tk,
                    tr.state_type == "COMPLETED",
                    tr.cache_key.is_not(None),
                ),
            )
        )
        .group_by(m.c.tk)
    )
    return {
        tk: MissHistory(same_key_at, int(stored or 0), int(hits or 0))
        for tk, same_key_at, stored, hits in conn.execute(query)
    }


def load_for_resume(store: Store, ref: str) -> tuple[str, str, str, dict[str, Any], list[Any]]:
    """(run id, flow name, state type, parameters, completed task rows) of a past run.

    The rows are those of completed task calls whose arguments could be hashed: with
    ``name``, ``task_key``, ``dynamic_key``, ``input_hash``, ``state_name``, ``cache_key``,
    ``result``, ``result_file`` and ``result_checksum``. Which of them can be reused is for
    ``reusable_value`` to say.
    """
    run_id = find_run_id(store, ref)
    t = task_runs.c
    with store.engine.connect() as conn:
        row = conn.execute(select(flow_runs).where(flow_runs.c.id == run_id)).one()
        done = conn.execute(
            select(
                t.name,
                t.task_key,
                t.dynamic_key,
                t.input_hash,
                t.state_name,
                t.cache_key,
                t.result,
                t.result_file,
                t.result_checksum,
            ).where(
                of_flow_run(task_runs, run_id),
                t.state_type == "COMPLETED",
                t.input_hash.is_not(None),
            )
        ).all()
    if row.parameters is None:
        raise ValueError(
            f"flow run {row.name!r} cannot be resumed: its parameters could not be stored "
            "(they were not picklable)"
        )
    parameters = results.loads(row.parameters)
    return run_id, row.flow_name, row.state_type or "", parameters, list(done)


def reusable_value(store: Store, row: Any) -> tuple[bool, Any]:
    """``(True, value)`` for a completed task run (a row of ``load_for_resume``) whose value
    can be used again, else ``(False, None)``.

    A Cached run's value is its cache entry's, read through the store's cache (checked, and
    counted as a hit): an entry that was cleared, expired or cannot be read means the call
    runs again. A run whose result was not stored (``persist_result=False``, a value that
    could not be pickled or written) runs again. A stored result that cannot be read raises
    ``ResultError`` naming the file or the run, for the caller to report.
    """
    if row.state_name == "Cached":
        if row.task_key is None or row.cache_key is None:
            return False, None
        entry = store.cache.get(row.task_key, row.cache_key)
        return (True, entry.value) if entry is not None else (False, None)
    if row.result is None and row.result_file is None:
        return False, None
    return True, load_result(store, row)


def load_result(store: Store, row: Any) -> Any:
    """The stored result of a task-run row (``result``, ``result_file``, ``result_checksum``
    and ``name``); ``ResultError`` if it is missing, corrupt or does not match its checksum."""
    if row.result is not None:
        data = bytes(row.result)
        results.verify(data, row.result_checksum, f"the result of task run {row.name!r}")
        return results.loads(data)
    if row.result_file is None:
        raise results.ResultError(f"the result of task run {row.name!r} was not stored")
    return results.read_file(store.results_dir / row.result_file, row.result_checksum)


def result_previews(store: Store, task_run_ids: Iterable[str]) -> dict[str, str]:
    """Previews of the stored results of these task runs, by id, read without unpickling
    (``flowbook._pickle_preview``: safe where loading is not, as in the Jupyter server).

    Only completed runs with a stored value have one; a Cached run's value is its cache
    entry's (none if the entry was cleared since). A few hundred runs a query.
    """
    from flowbook._pickle_preview import stored_preview

    ids = list(dict.fromkeys(task_run_ids))
    t, c = task_runs.c, cache_entries.c
    rows: list[Any] = []
    entries: dict[tuple[str, str], Any] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            rows += conn.execute(
                select(
                    t.id,
                    t.state_name,
                    t.task_key,
                    t.cache_key,
                    t.result,
                    t.result_file,
                    t.result_checksum,
                ).where(t.id.in_(ids[start : start + 500]), t.state_type == "COMPLETED")
            ).all()
        wanted = sorted(
            {
                (r.task_key, r.cache_key)
                for r in rows
                if r.result is None and r.result_file is None and r.task_key and r.cache_key
            }
        )
        for start in range(0, len(wanted), 400):
            found = conn.execute(
                select(c.task_key, c.key, c.value, c.result_file, c.checksum).where(
                    tuple_(c.task_key, c.key).in_(wanted[start : start + 400])
                )
            )
            entries.update({(e.task_key, e.key): e for e in found})
    out: dict[str, str] = {}
    for r in rows:
        data, file, checksum = r.result, r.result_file, r.result_checksum
        if data is None and file is None:
            entry = entries.get((r.task_key, r.cache_key))
            if entry is None:
                continue
            data, file, checksum = entry.value, entry.result_file, entry.checksum
        shown = stored_preview(
            None if data is None else bytes(data),
            None if file is None else store.results_dir / file,
            checksum,
            root=store.results_dir,
        )
        if shown is not None:
            out[r.id] = shown
    return out


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# -- registered flows (flowbook.registry) ---------------------------------------------------------


@dataclass
class RegisteredFlow:
    """A flow as ``register`` recorded it (the ``flows`` table)."""

    id: str
    name: str
    project: str | None
    version: int
    fingerprint: str
    script: str | None
    notebook: str | None
    cell_id: str | None
    code: str | None
    parameters: list[dict[str, Any]]
    """``{"name", "required", "default", "jsonable", "repr"}`` per parameter; ``default`` is
    None where ``jsonable`` is false (the default could not be written as JSON)."""
    run_config: dict[str, Any] | None
    executor: dict[str, Any] | None
    labels: list[str]
    registered_at: float

    @property
    def where(self) -> str:
        """The script, or the notebook and cell, the flow was registered from."""
        if self.notebook is not None:
            cell = f" (cell {self.cell_id})" if self.cell_id else ""
            return f"{self.notebook}{cell}"
        return self.script or "an IPython session (no file)"


def _registered(row: Any) -> RegisteredFlow:
    return RegisteredFlow(
        id=row.id,
        name=row.name,
        project=row.project,
        version=int(row.version),
        fingerprint=row.fingerprint,
        script=row.script,
        notebook=row.notebook,
        cell_id=row.cell_id,
        code=row.code,
        parameters=json.loads(row.parameters),
        run_config=json.loads(row.run_config) if row.run_config else None,
        executor=json.loads(row.executor) if row.executor else None,
        labels=json.loads(row.labels),
        registered_at=float(row.registered_at),
    )


@dataclass
class FlowSummary:
    """One line of ``flowbook flows``: a registered flow, or a flow that only has runs.

    It also carries what the panel's Flows view shows and ``flowbook flows --json`` does not:
    where the flow was registered from (``script``, or ``notebook`` and ``cell_id``) and the
    id and state of its newest top-level run (None without runs)."""

    registered: bool
    name: str
    project: str | None
    runs: int
    last_run: str | None
    id: str | None = None
    version: int | None = None
    where: str | None = None
    registered_at: str | None = None
    parameters: list[dict[str, Any]] | None = None
    labels: list[str] | None = None
    run_config: dict[str, Any] | None = None
    executor: dict[str, Any] | None = None
    script: str | None = None
    notebook: str | None = None
    cell_id: str | None = None
    last_run_id: str | None = None
    last_state: str | None = None
    last_state_type: str | None = None

    _VIEW_ONLY: ClassVar[tuple[str, ...]] = (
        "script",
        "notebook",
        "cell_id",
        "last_run_id",
        "last_state",
        "last_state_type",
    )

    def as_dict(self) -> dict[str, Any]:
        """The fields of ``flowbook flows --json``."""
        out = asdict(self)
        for name in self._VIEW_ONLY:
            del out[name]
        return out


def list_flows(store: Store, project: str | None = None) -> list[FlowSummary]:
    """Registered flows, then flows with top-level runs that were never registered (under
    that name and project), each sorted by project and name; ``project`` keeps one project.

    Two queries, whatever the number of flows (the Flows view asks every few seconds): the
    registered rows, and per flow name and project the count of top-level runs and the time
    of the newest, joined to that run's row for its id and state."""
    store.flush()
    registered_query = select(flows).order_by(flows.c.project, flows.c.name)
    top_level = flow_runs.c.parent_task_run_id.is_(None)
    per_flow = select(
        flow_runs.c.flow_name,
        flow_runs.c.project,
        func.count().label("n"),
        func.max(flow_runs.c.created_at).label("last"),
    ).where(top_level)
    if project is not None:
        registered_query = registered_query.where(flows.c.project == project)
        per_flow = per_flow.where(flow_runs.c.project == project)
    counts = per_flow.group_by(flow_runs.c.flow_name, flow_runs.c.project).subquery()
    # the max() above is a plain aggregate (any SQL database); joining back on it finds the
    # newest run through the created_at index, several rows when runs share that time
    runs_query = select(
        counts,
        flow_runs.c.id,
        flow_runs.c.state_name,
        flow_runs.c.state_type,
    ).join(
        flow_runs,
        and_(
            flow_runs.c.flow_name == counts.c.flow_name,
            flow_runs.c.project.is_not_distinct_from(counts.c.project),
            flow_runs.c.created_at == counts.c.last,
            top_level,
        ),
    )
    with store.engine.connect() as conn:
        registered = [_registered(row) for row in conn.execute(registered_query)]
        runs: dict[tuple[str, str | None], Any] = {}
        for row in conn.execute(runs_query):
            key = (row.flow_name, row.project)
            if key not in runs or row.id > runs[key].id:  # a tie: the same run every time
                runs[key] = row
    summaries = []
    for flow in registered:
        newest = runs.pop((flow.name, flow.project), None)
        summaries.append(
            FlowSummary(
                registered=True,
                name=flow.name,
                project=flow.project,
                id=flow.id,
                version=flow.version,
                where=flow.where,
                registered_at=iso(flow.registered_at),
                parameters=flow.parameters,
                labels=flow.labels,
                run_config=flow.run_config,
                executor=flow.executor,
                script=flow.script,
                notebook=flow.notebook,
                cell_id=flow.cell_id,
                **_newest_run(newest),
            )
        )
    for (name, flow_project), newest in sorted(
        runs.items(), key=lambda item: (item[0][1] or "", item[0][0])
    ):
        summaries.append(
            FlowSummary(registered=False, name=name, project=flow_project, **_newest_run(newest))
        )
    return summaries


def _newest_run(row: Any) -> dict[str, Any]:
    """A flow's runs as FlowSummary fields, from its newest top-level run's row (None: none)."""
    if row is None:
        return {"runs": 0, "last_run": None}
    return {
        "runs": int(row.n),
        "last_run": iso(row.last),
        "last_run_id": row.id,
        "last_state": row.state_name,
        "last_state_type": row.state_type,
    }


def get_registered_flow(store: Store, flow_id: str) -> RegisteredFlow | None:
    """The registered flow with this id, or None."""
    with store.engine.connect() as conn:
        row = conn.execute(select(flows).where(flows.c.id == flow_id)).first()
    return None if row is None else _registered(row)


def find_registered_flow(
    store: Store, name: str | None = None, project: str | None = None, flow_id: str | None = None
) -> RegisteredFlow:
    """The registered flow of this id, or of this name (and project); a LookupError when none
    is, a ValueError naming the projects when a name alone names several."""
    if flow_id is not None:
        found = get_registered_flow(store, flow_id)
        if found is None:
            raise LookupError(
                f"no flow with id {flow_id!r} is registered; `flowbook flows` lists the "
                "registered flows and their ids"
            )
        return found
    query = select(flows).where(flows.c.name == name).order_by(flows.c.project)
    if project is not None:
        query = query.where(flows.c.project == project)
    with store.engine.connect() as conn:
        rows = [_registered(row) for row in conn.execute(query)]
    if not rows:
        in_project = f" in project {project!r}" if project is not None else ""
        raise LookupError(
            f"no flow named {name!r} is registered{in_project}; `flowbook flows` lists the "
            "registered flows (register one with flow.register(project_name=...))"
        )
    if len(rows) > 1:
        projects = ", ".join(repr(r.project) for r in rows)
        raise ValueError(
            f"flow name {name!r} is registered in several projects ({projects}); say which "
            "with --project"
        )
    return rows[0]
