"""Cache policies: recipes for a task's cache key, composed with ``+`` and ``-``.

from flowbook.cache_policies import INPUTS, TASK_SOURCE

@task(cache_policy=INPUTS + TASK_SOURCE)
def add(x: int, debug: bool = False) -> int: ...

@task(cache_policy=INPUTS - "debug")      # debug=True or False: the same entry

Design: a policy is immutable data. A task's calls are keyed by its *effective* policy, worked
out once when the task is decorated (``_for_task``): ``cache_key_fn`` wins over
``cache_policy`` (with a warning when both are given), ``persist_result=True`` alone means
``DEFAULT``, ``persist_result=False`` means no cache, and a task with none of these options is
not cached at all: the engine sees ``task.cache_key_fn`` None and pays nothing. A policy
other than a bare key function reaches the engine as a key function (``_PolicyKeyFn``), so
there is one caching path: the same look-up, store, expiration, ``refresh_cache`` and
explanation of misses. While computing a key, a policy keeps what the key is made of (the
hashes of the source, of each input, the run id, each flow parameter) on the key context, as
``task_input_hash`` does, so that ``flowbook.cache.why_missed`` names the part that changed.

Keys are namespaced by the task's identity, as every flowbook cache key is: two tasks never
share an entry, whatever their policies.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowbook.caching.keys import checked_code, hashed_inputs, key_digest
from flowbook.registry import caller_stacklevel

if TYPE_CHECKING:
    from flowbook.caching.dependencies import CodeIdentity

__all__ = [
    "DEFAULT",
    "FLOW_PARAMETERS",
    "INPUTS",
    "NONE",
    "NO_CACHE",
    "RUN_ID",
    "TASK_SOURCE",
    "CacheKeyFnPolicy",
    "CachePolicy",
    "CachePolicyWarning",
    "CompoundCachePolicy",
    "FlowParameters",
    "Inputs",
    "RunId",
    "TaskSource",
]

_ISOLATION_LEVELS = ("READ_COMMITTED", "SERIALIZABLE")


class CachePolicyWarning(UserWarning):
    """A cache policy setting that flowbook accepts and does not honour."""


class _Uncached(Exception):
    """A part of the key cannot be made (warned already): the call runs without the cache."""


class _Parts:
    """What a key is made of, gathered while the policies of a key run."""

    __slots__ = ("code", "extra", "inputs")

    def __init__(self) -> None:
        self.code: CodeIdentity | None = None
        self.inputs: list[tuple[str, str]] | None = None
        self.extra: list[tuple[str, str]] = []

    def key(self, task_key: str) -> str | None:
        """The key of these parts (``task_input_hash``'s digest: ``INPUTS + TASK_SOURCE``
        makes the key it makes); None when there is nothing to key on."""
        code, inputs, extra = self.code, self.inputs, self.extra
        if code is None and not inputs and not extra:
            return None  # nothing to key on: the call is not cached
        return key_digest(task_key, code, inputs or [], extra)


@dataclasses.dataclass(frozen=True, repr=False)
class CachePolicy:
    """A recipe for a task's cache key. Subclass it and override ``compute_key`` for a
    recipe of your own; combine policies with ``+``; leave an input out with ``-``."""

    key_storage: Any = None
    isolation_level: Any = None
    lock_manager: Any = None

    @classmethod
    def from_cache_key_fn(cls, cache_key_fn: Callable[..., Any]) -> CacheKeyFnPolicy:
        """The policy of a ``cache_key_fn(context, parameters)``."""
        return CacheKeyFnPolicy(cache_key_fn=cache_key_fn)

    def configure(
        self, key_storage: Any = None, lock_manager: Any = None, isolation_level: Any = None
    ) -> CachePolicy:
        """A copy with these settings. flowbook keeps cache records in its run store and
        lets concurrent calls with one key both run (``READ_COMMITTED``): ``key_storage``,
        ``lock_manager`` and ``isolation_level="SERIALIZABLE"`` are accepted with a
        ``CachePolicyWarning`` saying so."""
        changes: dict[str, Any] = {}
        if key_storage is not None:
            warnings.warn(
                f"{self!r}.configure(key_storage={key_storage!r}): flowbook keeps cache "
                "records in its run store (FLOWBOOK_HOME), with the results; key_storage is "
                "not used",
                CachePolicyWarning,
                stacklevel=2,
            )
            changes["key_storage"] = key_storage
        if lock_manager is not None:
            warnings.warn(
                f"{self!r}.configure(lock_manager={lock_manager!r}): flowbook takes no cache "
                "locks; concurrent calls with the same key may both run, and the last one's "
                "value is kept",
                CachePolicyWarning,
                stacklevel=2,
            )
            changes["lock_manager"] = lock_manager
        if isolation_level is not None:
            level = _isolation_level(isolation_level)
            if level == "SERIALIZABLE":
                warnings.warn(
                    f"{self!r}.configure(isolation_level='SERIALIZABLE'): flowbook's cache "
                    "is READ_COMMITTED only; concurrent calls with the same key may both run",
                    CachePolicyWarning,
                    stacklevel=2,
                )
            changes["isolation_level"] = level
        return dataclasses.replace(self, **changes)

    def compute_key(
        self,
        task_ctx: Any,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """The cache key of a call (None: not cached). ``task_ctx`` is the key context
        (``task``, ``task_run``, ``flow_run``, ``task_run_id``, ``flow_run_id``)."""
        parts = _Parts()
        try:
            self._collect(task_ctx, inputs or {}, flow_parameters or {}, parts)
        except _Uncached:
            return None
        return parts.key(_task_key(task_ctx))

    def _collect(
        self, ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], parts: _Parts
    ) -> None:
        """Add this policy's part of the key to ``parts``. A subclass that overrides only
        ``compute_key`` contributes its key as one part, named by its class."""
        if type(self).compute_key is CachePolicy.compute_key:
            raise NotImplementedError(
                f"{type(self).__name__} is a CachePolicy without a compute_key method; "
                "define compute_key(task_ctx, inputs, flow_parameters, **kwargs) -> str | None"
            )
        key = self.compute_key(ctx, inputs, flow_parameters)
        if key is not None:
            parts.extra.append((f"policy:{type(self).__name__}", str(key)))

    def __add__(self, other: object) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            raise TypeError(
                f"{self!r} + {other!r}: only cache policies can be added to a cache policy, "
                f"not {type(other).__name__}"
            )
        if isinstance(other, _None):
            return self
        if isinstance(self, _None):
            return other
        settings = _joined_settings(self, other)
        return CompoundCachePolicy(policies=(self, other), **settings)

    def __sub__(self, other: object) -> CachePolicy:
        """Leave input ``other`` out of the key; policies without inputs are unchanged."""
        _check_input_name(self, other)
        return self

    def __repr__(self) -> str:
        return type(self).__name__ + "()"


def _isolation_level(value: Any) -> str:
    level = getattr(value, "value", value)  # an enum of the two levels will do
    if isinstance(level, str) and level.upper() in _ISOLATION_LEVELS:
        return level.upper()
    raise ValueError(
        f"configure(isolation_level={value!r}): the isolation level must be "
        "'READ_COMMITTED' or 'SERIALIZABLE'"
    )


def _joined_settings(a: CachePolicy, b: CachePolicy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, what in (
        ("key_storage", "storage locations"),
        ("isolation_level", "isolation levels"),
        ("lock_manager", "lock managers"),
    ):
        mine, theirs = getattr(a, name), getattr(b, name)
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(
                f"{a!r} + {b!r}: cannot add cache policies with different {what} "
                f"({name}={mine!r} and {theirs!r})"
            )
        out[name] = mine if mine is not None else theirs
    return out


def _check_input_name(policy: CachePolicy, other: object) -> None:
    if not isinstance(other, str):
        raise TypeError(
            f"{policy!r} - {other!r}: only an input's name (a string) can be subtracted from a "
            f"cache policy, not {type(other).__name__}"
        )


@dataclasses.dataclass(frozen=True, repr=False)
class Inputs(CachePolicy):
    """Keys on the content of the task's inputs, but those named in ``exclude``."""

    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        exclude: Any = self.exclude  # whatever the caller gave
        if isinstance(exclude, str) or not all(isinstance(n, str) for n in exclude):
            raise TypeError(f"Inputs(exclude={exclude!r}): exclude is a list of input names")
        object.__setattr__(self, "exclude", tuple(exclude))  # a list will do

    def _collect(
        self, ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], parts: _Parts
    ) -> None:
        hashed = hashed_inputs(
            inputs,
            _task_name(ctx),
            "input",
            lambda name: (
                f"Leave it out of the key (cache_policy={self!r} - {name!r}), pass "
                "data that can be compared by value, or use cache_policy=NO_CACHE"
            ),
            4,
            self.exclude,
        )
        if hashed is None:
            raise _Uncached
        parts.inputs = hashed

    def __sub__(self, other: object) -> CachePolicy:
        _check_input_name(self, other)
        assert isinstance(other, str)
        if other in self.exclude:
            return self
        return dataclasses.replace(self, exclude=(*self.exclude, other))

    def __repr__(self) -> str:
        return " - ".join(["INPUTS", *(repr(name) for name in self.exclude)])


@dataclasses.dataclass(frozen=True, repr=False)
class TaskSource(CachePolicy):
    """Keys on the code the task runs: its normalised source (comments and blank lines do
    not count), its closure values and the source of the user's helpers it calls."""

    def _collect(
        self, ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], parts: _Parts
    ) -> None:
        task = getattr(ctx, "task", None)
        fn = getattr(task, "fn", None)
        if fn is None:
            return
        code = checked_code(
            fn,
            _task_name(ctx),
            "Leave TASK_SOURCE out of its cache policy, or make the value plain data",
            4,
        )
        if code is None:
            raise _Uncached
        parts.code = code

    def __repr__(self) -> str:
        return "TASK_SOURCE"


@dataclasses.dataclass(frozen=True, repr=False)
class FlowParameters(CachePolicy):
    """Keys on the parameters of the flow run the task runs in (nothing outside a flow)."""

    def _collect(
        self, ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], parts: _Parts
    ) -> None:
        hashed = hashed_inputs(flow_parameters, _task_name(ctx), "flow parameter", "", 4)
        if hashed is None:
            raise _Uncached
        parts.extra.extend((f"flow_parameter:{name}", value_hash) for name, value_hash in hashed)

    def __repr__(self) -> str:
        return "FLOW_PARAMETERS"


@dataclasses.dataclass(frozen=True, repr=False)
class RunId(CachePolicy):
    """Keys on the id of the flow run the task runs in. Outside a flow the run is the task
    run itself (Prefect's "prevailing task run id"): no later call can have that key, so the
    call runs uncached rather than store an entry and a miss that nothing can ever use."""

    def _collect(
        self, ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], parts: _Parts
    ) -> None:
        flow_run = getattr(ctx, "flow_run", None)
        if flow_run is None:
            raise _Uncached
        parts.extra.append(("run_id", str(flow_run.id)))

    def __repr__(self) -> str:
        return "RUN_ID"


@dataclasses.dataclass(frozen=True, repr=False)
class CacheKeyFnPolicy(CachePolicy):
    """Keys with a function ``cache_key_fn(context, parameters) -> key | None``."""

    cache_key_fn: Callable[..., Any] | None = None

    def _collect(
        self, ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], parts: _Parts
    ) -> None:
        fn = self.cache_key_fn
        if fn is None:
            return
        key = fn(ctx, inputs)
        if key is not None:
            parts.extra.append(("cache_key_fn", key if isinstance(key, str) else str(key)))

    def __repr__(self) -> str:
        fn = self.cache_key_fn
        return f"CacheKeyFnPolicy({getattr(fn, '__name__', fn)})"


@dataclasses.dataclass(frozen=True, repr=False)
class CompoundCachePolicy(CachePolicy):
    """Several policies in one key. Nested compounds are flattened, and the ``Inputs``
    policies merged into one that leaves out every input any of them leaves out."""

    policies: tuple[CachePolicy, ...] = ()

    def __post_init__(self) -> None:
        flat: list[CachePolicy] = []
        for policy in self.policies:
            members = policy.policies if isinstance(policy, CompoundCachePolicy) else (policy,)
            flat.extend(m for m in members if m not in flat and not isinstance(m, _None))
        inputs = [p for p in flat if isinstance(p, Inputs)]
        if len(inputs) > 1:
            exclude = tuple(dict.fromkeys(name for p in inputs for name in p.exclude))
            at = flat.index(inputs[0])
            flat = [p for p in flat if not isinstance(p, Inputs)]
            flat.insert(at, Inputs(exclude=exclude))
        object.__setattr__(self, "policies", tuple(flat))

    def _collect(
        self, ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], parts: _Parts
    ) -> None:
        for policy in self.policies:
            policy._collect(ctx, inputs, flow_parameters, parts)

    def __sub__(self, other: object) -> CachePolicy:
        _check_input_name(self, other)
        if not any(isinstance(p, Inputs) for p in self.policies):
            return self  # no inputs in the key: nothing to leave out
        members = tuple(p - other if isinstance(p, Inputs) else p for p in self.policies)
        return dataclasses.replace(self, policies=members)

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.policies)


@dataclasses.dataclass(frozen=True, repr=False)
class _None(CachePolicy):
    """No key: the task's calls are not cached. Adding it to a policy changes nothing."""

    def _collect(
        self, ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], parts: _Parts
    ) -> None:
        raise _Uncached

    def __repr__(self) -> str:
        return "NO_CACHE"


INPUTS = Inputs()
TASK_SOURCE = TaskSource()
FLOW_PARAMETERS = FlowParameters()
RUN_ID = RunId()
NO_CACHE = _None()
NONE = NO_CACHE
DEFAULT = INPUTS + TASK_SOURCE + RUN_ID


def _task_name(ctx: Any) -> str:
    task = getattr(ctx, "task", None)
    return str(getattr(task, "name", task))


def _task_key(ctx: Any) -> str:
    return str(getattr(getattr(ctx, "task", None), "task_key", ""))


class _PolicyKeyFn:
    """A policy as the engine's key function: ``(context, parameters) -> key | None``.

    Leaves what the key is made of on the context (``_made``), so a miss can be explained.
    """

    __slots__ = ("__name__", "described", "policy")

    def __init__(self, policy: CachePolicy) -> None:
        self.policy = policy
        self.described = repr(policy)
        self.__name__ = f"cache_policy={self.described}"

    def __call__(self, context: Any, parameters: dict[str, Any]) -> str | None:
        flow_run = getattr(context, "flow_run", None)
        flow_parameters = flow_run.parameters if flow_run is not None else {}
        parts = _Parts()
        try:
            self.policy._collect(context, parameters, flow_parameters, parts)
        except _Uncached:
            return None
        key = parts.key(_task_key(context))
        if key is not None:
            from flowbook.caching.keys import CacheKeyContext

            if isinstance(context, CacheKeyContext):
                extra = tuple(sorted(parts.extra))
                made = (key, parts.code, parts.inputs or [], (extra, self.described))
                object.__setattr__(context, "_made", made)  # frozen for key functions
        return key

    def __repr__(self) -> str:
        return self.__name__


def _for_task(
    name: str, fn: Callable[..., Any], options: dict[str, Any]
) -> tuple[CachePolicy, Callable[..., Any] | None]:
    """A task's effective cache policy, and the key function the engine calls (None: the
    task's calls are not cached). Worked out once, when the task is decorated."""
    policy: CachePolicy | None = options.get("cache_policy")
    key_fn: Callable[..., Any] | None = options.get("cache_key_fn")
    persist = options.get("persist_result")
    if policy is not None and key_fn is not None:
        warnings.warn(
            f"task {name!r}: both cache_policy={policy!r} and cache_key_fn="
            f"{getattr(key_fn, '__name__', key_fn)} are given; cache_key_fn is used",
            CachePolicyWarning,
            stacklevel=caller_stacklevel(),
        )
    if key_fn is not None:
        effective: CachePolicy = CacheKeyFnPolicy(cache_key_fn=key_fn)
    elif policy is not None:
        effective = policy
    elif persist is True:
        effective = DEFAULT  # a task asked to keep its results caches them, by DEFAULT
    else:
        return NO_CACHE, None
    if persist is False and not isinstance(effective, _None):
        what = "cache_key_fn" if key_fn is not None else f"cache_policy={policy!r}"
        warnings.warn(
            f"task {name!r}: persist_result=False, so its calls are not cached; {what} is "
            "ignored. Remove persist_result=False to cache them",
            CachePolicyWarning,
            stacklevel=caller_stacklevel(),
        )
        return NO_CACHE, None
    if isinstance(effective, _None):
        return effective, None
    _check_excluded(name, fn, effective)
    if isinstance(effective, CacheKeyFnPolicy):
        return effective, effective.cache_key_fn  # called as it is: keys as before policies
    return effective, _PolicyKeyFn(effective)


def _check_excluded(name: str, fn: Callable[..., Any], policy: CachePolicy) -> None:
    """Warn about ``INPUTS - 'x'`` on a task without a parameter ``x`` (a typo, most likely)."""
    members = policy.policies if isinstance(policy, CompoundCachePolicy) else (policy,)
    excluded = [n for p in members if isinstance(p, Inputs) for n in p.exclude]
    if not excluded:
        return
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for missing in (n for n in excluded if n not in params):
        warnings.warn(
            f"task {name!r}: cache_policy={policy!r} leaves out input {missing!r}, which is "
            f"not a parameter of the task (parameters: {', '.join(params) or 'none'})",
            CachePolicyWarning,
            stacklevel=caller_stacklevel(),
        )
