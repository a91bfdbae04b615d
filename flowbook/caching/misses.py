"""Why a cached task's call missed: its latest miss compared with what the cache holds.

Design: plain data in, plain data out. The store gathers, per task, the latest miss (the key
it looked up, what that key was made of, and what the process saw: ``refresh_cache``, or an
entry under that key that had expired), the task's entries with their key parts, and a short
history from the task runs (was an entry under the missed key stored by an earlier call; did
the task store anything before; how many calls hit since). ``explain`` turns that into a
``MissExplanation``. Its first matching rule decides:

1. ``refresh_cache=True``: the call never looked.
2. The entry under the key had expired.
3. An earlier call stored an entry under the very same key, and it is gone: cleared,
   invalidated, or removed as unreadable.
4. Compared with the closest entry stored before the miss (the one whose parts differ least;
   the newest among equals): the task's source changed, the source of named helpers (the
   user's functions the task calls) changed, named closure values changed, and/or the named
   inputs changed.
5. Nothing to compare with: no entry was ever stored for the task, or they were all removed.

Keys made by ``task_input_hash`` and by cache policies (``flowbook.cache_policies``) have
parts; a policy's key also records the run id (``RUN_ID``), each flow parameter
(``FLOW_PARAMETERS``), the key of a ``cache_key_fn`` inside a compound policy, and the policy
itself, so rule 4 can say "another flow run" or "the task's cache policy changed". For other
keys (a bare ``cache_key_fn``) and for entries written before flowbook recorded parts, rule 4
says that the key changed but not which part.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from flowbook.caching.keys import KeyParts

__all__ = ["MissCause", "MissExplanation", "MissHistory", "MissRecord", "StoredEntry", "explain"]

MissCause = Literal[
    "refresh_cache", "expired", "removed", "changed", "first_call", "no_entries", "unknown"
]


@dataclass(frozen=True)
class MissRecord:
    """The latest miss of one task, as recorded when it happened."""

    task_key: str
    key: str
    task_name: str
    flow_name: str | None
    missed_at: float
    cause: str | None  # "refresh", "expired" or None (no entry under the key)
    expired_at: float | None
    key_parts: KeyParts | None
    task_run_id: str | None = None
    task_run_name: str | None = None
    input_preview: str | None = None


@dataclass(frozen=True)
class StoredEntry:
    """One cache entry of the task, as far as comparing keys goes."""

    key: str
    created: float
    key_parts: KeyParts | None
    input_preview: str | None = None


@dataclass(frozen=True)
class MissHistory:
    """What the task's earlier and later calls tell about the miss."""

    same_key_stored_at: float | None = None
    """When an earlier call last stored (or was served) an entry under the missed key."""
    stored_before: int = 0
    """Earlier calls that stored or were served any entry of this task."""
    hits_since: int = 0
    """Later calls of the task served from the cache."""


@dataclass
class MissExplanation:
    """Why the latest cached call of a task missed. ``reason`` says it in a sentence."""

    task_name: str
    task_key: str
    flow_name: str | None
    key: str
    missed_at: str
    cause: MissCause
    reason: str
    source_changed: bool = False
    changed_inputs: list[str] = field(default_factory=list)
    added_inputs: list[str] = field(default_factory=list)
    removed_inputs: list[str] = field(default_factory=list)
    changed_helpers: list[str] = field(default_factory=list)
    """Helpers (the user's functions the task calls) whose source changed."""
    added_helpers: list[str] = field(default_factory=list)
    """Helpers the task calls now and did not call then."""
    removed_helpers: list[str] = field(default_factory=list)
    changed_closure: list[str] = field(default_factory=list)
    """Closure variables of the task whose value changed."""
    changed_parts: list[str] = field(default_factory=list)
    """A cache policy's other parts that changed: ``"run_id"``, ``"flow_parameter:<name>"``,
    ``"cache_key_fn"``, ``"policy"`` (the policy itself)."""
    expired_at: str | None = None
    compared_key: str | None = None
    compared_created: str | None = None
    task_run: str | None = None
    input_preview: str | None = None
    hits_since: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.task_name}: {self.reason}"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).isoformat()


def when(ts: float) -> str:
    """A time for a sentence: UTC, to the second."""
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def explain(miss: MissRecord, entries: list[StoredEntry], history: MissHistory) -> MissExplanation:
    """Why ``miss`` missed, given the task's ``entries`` now and its ``history``."""
    out = MissExplanation(
        task_name=miss.task_name,
        task_key=miss.task_key,
        flow_name=miss.flow_name,
        key=miss.key,
        missed_at=iso(miss.missed_at) or "",
        cause="unknown",
        reason="",
        task_run=miss.task_run_name,
        input_preview=miss.input_preview,
        hits_since=history.hits_since,
    )
    if miss.cause == "refresh":
        out.cause = "refresh_cache"
        out.reason = (
            "refresh_cache=True: the call ran without looking up its entry, and replaced it"
        )
        return out
    if miss.cause == "expired" and miss.expired_at is not None:
        out.cause = "expired"
        out.expired_at = iso(miss.expired_at)
        out.reason = f"the entry for these inputs expired at {when(miss.expired_at)}"
        return out
    if history.same_key_stored_at is not None:
        out.cause = "removed"
        out.reason = (
            f"an entry for these inputs was stored at {when(history.same_key_stored_at)} and is "
            "gone: it was cleared, invalidated, or removed as unreadable"
        )
        return out
    earlier = [e for e in entries if e.key != miss.key and e.created < miss.missed_at]
    if not earlier:
        if history.stored_before:
            out.cause = "no_entries"
            out.reason = (
                "no entry of this task was left to compare with: the earlier ones were "
                "cleared or invalidated"
            )
        else:
            out.cause = "first_call"
            out.reason = "no entry was ever stored for this task before this call"
        return out
    if miss.key_parts is None:
        out.reason = (
            f"the cache_key_fn returned the key {miss.key[:16]!r}, which has no entry; the part "
            "of a key that changed is known only for keys made by task_input_hash"
        )
        return out
    closest = _closest(miss.key_parts, earlier)
    if closest is None:
        out.reason = (
            "no entry exists under this key; the task's other entries were stored before "
            "flowbook recorded what keys are made of, so the part that changed is not known"
        )
        return out
    entry, diff = closest
    out.compared_key = entry.key
    out.compared_created = iso(entry.created)
    if not diff.any():
        out.reason = (
            "no entry exists under this key, but the entry stored at "
            f"{when(entry.created)} has the same source and inputs: its key was made "
            "differently (by another version of flowbook)"
        )
        return out
    out.cause = "changed"
    out.source_changed = diff.source
    out.changed_inputs, out.added_inputs, out.removed_inputs = diff.inputs
    out.changed_helpers, out.added_helpers, out.removed_helpers = diff.helpers
    out.changed_closure = diff.closure[0] + diff.closure[1] + diff.closure[2]
    out.changed_parts = diff.extra[0] + diff.extra[1] + diff.extra[2]
    if diff.policy:
        out.changed_parts.append("policy")
    out.reason = _changed_reason(miss, entry, diff)
    return out


_Changes = tuple[list[str], list[str], list[str]]  # changed, added, removed
_Hashes = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Diff:
    source: bool
    inputs: _Changes
    helpers: _Changes
    closure: _Changes
    extra: _Changes = ([], [], [])
    policy: bool = False

    def any(self) -> bool:
        parts = (self.inputs, self.helpers, self.closure, self.extra)
        return self.source or self.policy or any(any(part) for part in parts)

    def size(self) -> int:
        parts = (*self.inputs, *self.helpers, *self.closure, *self.extra)
        return int(self.source) + int(self.policy) + sum(len(names) for names in parts)


def _compare(new: _Hashes | None, old: _Hashes | None) -> _Changes:
    if new is None or old is None:
        return [], [], []  # not recorded on one side (an entry older than this record)
    now, before = dict(new), dict(old)
    changed = [name for name in now if name in before and now[name] != before[name]]
    added = [name for name in now if name not in before]
    removed = [name for name in before if name not in now]
    return changed, added, removed


def _diff(new: KeyParts, old: KeyParts) -> _Diff:
    return _Diff(
        new.source != old.source,
        _compare(new.inputs, old.inputs),
        _compare(new.helpers, old.helpers),
        _compare(new.closure, old.closure),
        _compare(new.extra, old.extra),
        new.policy != old.policy,
    )


def _closest(parts: KeyParts, entries: list[StoredEntry]) -> tuple[StoredEntry, _Diff] | None:
    best: tuple[int, float, StoredEntry, _Diff] | None = None
    for entry in entries:
        if entry.key_parts is None:
            continue
        diff = _diff(parts, entry.key_parts)
        distance = diff.size()
        if best is None or (distance, -entry.created) < (best[0], -best[1]):
            best = (distance, entry.created, entry, diff)
    return None if best is None else (best[2], best[3])


def _names(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _changed_reason(miss: MissRecord, entry: StoredEntry, diff: _Diff) -> str:
    changed, added, removed = diff.inputs
    what: list[str] = []
    if diff.policy:
        what.append(
            f"the task's cache policy changed (from {entry.key_parts.policy or 'a key function'}"
            f" to {miss.key_parts.policy or 'a key function'})"
            if entry.key_parts is not None and miss.key_parts is not None
            else "the task's cache policy changed"
        )
    if diff.source and changed:
        noun = "input" if len(changed) == 1 else "inputs"
        what.append(f"the task's source and {noun} {_names(changed)} changed")
    elif diff.source:
        what.append("the task's source changed")
    elif changed:
        noun = "input" if len(changed) == 1 else "inputs"
        what.append(f"{noun} {_names(changed)} changed")
    if added:
        are = "input {} is" if len(added) == 1 else "inputs {} are"
        what.append(f"{are.format(_names(added))} new")
    if removed:
        are = "input {} is" if len(removed) == 1 else "inputs {} are"
        what.append(f"{are.format(_names(removed))} gone")
    what.extend(_code_changes(diff))
    now, before = _previews(miss.input_preview), _previews(entry.input_preview)
    values = [
        f"{name} was {before[name]}, now {now[name]}"
        for name in changed
        if name in now and name in before
    ]
    context = "; ".join([*values, f"compared with the entry stored at {when(entry.created)}"])
    return f"{'; '.join(what)} ({context})"


def _code_changes(diff: _Diff) -> list[str]:
    """The sentences for the helpers and closure values that changed."""
    changed, added, removed = diff.helpers
    what: list[str] = []
    if changed:
        noun = "helper" if len(changed) == 1 else "helpers"
        what.append(f"the source of {noun} {_names(changed)} changed")
    if added:
        noun = "helper" if len(added) == 1 else "helpers"
        what.append(f"the task now calls {noun} {_names(added)}")
    if removed:
        noun = "helper" if len(removed) == 1 else "helpers"
        what.append(f"the task no longer calls {noun} {_names(removed)}")
    closure = diff.closure[0] + diff.closure[1] + diff.closure[2]
    if closure:
        noun = "value" if len(closure) == 1 else "values"
        what.append(f"the closure {noun} {_names(closure)} of the task changed")
    what.extend(_policy_changes(diff))
    return what


def _policy_changes(diff: _Diff) -> list[str]:
    """The sentences for a cache policy's other parts: run id, flow parameters, key function."""
    parts = diff.extra[0] + diff.extra[1] + diff.extra[2]
    what: list[str] = []
    if "run_id" in parts:
        what.append("the call ran in another flow run (the policy keys on RUN_ID)")
    params = [p.split(":", 1)[1] for p in parts if p.startswith("flow_parameter:")]
    if params:
        noun = "parameter" if len(params) == 1 else "parameters"
        what.append(f"flow {noun} {_names(params)} changed")
    if "cache_key_fn" in parts:
        what.append("the key of its cache_key_fn changed")
    custom = [p.split(":", 1)[1] for p in parts if p.startswith("policy:")]
    if custom:
        noun = "policy" if len(custom) == 1 else "policies"
        what.append(f"the key of cache {noun} {_names(custom)} changed")
    return what


def _previews(text: str | None) -> dict[str, str]:
    """The per-argument previews of a stored ``parameters_preview`` (a JSON object)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}
