"""Cache keys: task identity, and ``task_input_hash``.

``task_input_hash`` keys on the task's identity (see ``identity.py``), the code it runs (see
``dependencies.py``: the task's normalised source, so that editing the body invalidates and
comments and blank lines do not; the values of its closure; the source of the user's
helpers it calls) and the content hash of every argument. A task without closure values or
helpers gets the key it got before helpers were part of it.

It also leaves what the key is made of on the context, as ``KeyParts`` (the hashes of the
source, of each closure value, helper and argument): the hashes it computes for the key
anyway, kept rather than computed again. The engine hands them to the cache when a look-up
misses, so the entry written next records them and a later miss can be explained part by
part ("input 'x' changed", "the source of helper 'normalise' changed").
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from flowbook.caching.dependencies import CodeIdentity, code_identity
from flowbook.caching.hashing import UnhashableInputError, stable_hash

if TYPE_CHECKING:
    from flowbook.engine.runs import FlowRun, TaskRun
    from flowbook.tasks import Task

__all__ = [
    "CacheKeyContext",
    "CacheKeyWarning",
    "KeyParts",
    "checked_code",
    "hashed_inputs",
    "key_digest",
    "task_input_hash",
]


class CacheKeyWarning(UserWarning):
    """A call could not be keyed for the cache and runs uncached."""


_quote = json.encoder.encode_basestring_ascii


_Hashes = tuple[tuple[str, str], ...]
_Made = (
    tuple[str, CodeIdentity, list[tuple[str, str]]]
    | tuple[str, CodeIdentity | None, list[tuple[str, str]], tuple[_Hashes | None, str | None]]
)


class KeyParts(NamedTuple):
    """What a ``task_input_hash`` key is made of, besides the task's identity."""

    key: str
    """The key these parts make (a custom ``cache_key_fn`` may return another one)."""
    source: str
    """Hash of the task's normalised source."""
    inputs: _Hashes
    """``(argument name, content hash)`` pairs, by name."""
    helpers: _Hashes | None = None
    """``(helper name, hash of its source)`` pairs, by name; None when not recorded (entries
    written before helpers were part of keys)."""
    closure: _Hashes | None = None
    """``(closure variable, content hash)`` pairs; None when not recorded."""
    extra: _Hashes | None = None
    """A cache policy's other parts, ``(part, value or hash)`` pairs: ``"run_id"``,
    ``"flow_parameter:<name>"``, ``"cache_key_fn"``, ``"policy:<class name>"``; None for keys
    not made by a cache policy."""
    policy: str | None = None
    """The cache policy that made the key (``"INPUTS + TASK_SOURCE"``); None for keys made
    by ``task_input_hash``."""

    def to_json(self) -> str:
        # built by hand with json's own string encoder: written once per new cache entry
        text = f'{{"source": {_quote(self.source)}, "inputs": {_object(self.inputs)}'
        if self.helpers is not None:
            text += f', "helpers": {_object(self.helpers)}'
        if self.closure is not None:
            text += f', "closure": {_object(self.closure)}'
        if self.extra is not None:
            text += f', "extra": {_object(self.extra)}'
        if self.policy is not None:
            text += f', "policy": {_quote(self.policy)}'
        return text + "}"

    @classmethod
    def from_json(cls, key: str, text: str | None) -> KeyParts | None:
        """The parts stored with an entry or a miss; None when absent or not readable."""
        if not text:
            return None
        try:
            data = json.loads(text)
            source, inputs = data["source"], data["inputs"]
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(source, str) or not isinstance(inputs, dict):
            return None
        policy = data.get("policy")
        return cls(
            key,
            source,
            _pairs(inputs),
            _pairs(data.get("helpers")),
            _pairs(data.get("closure")),
            _pairs(data.get("extra")),
            policy if isinstance(policy, str) else None,
        )


def _object(pairs: _Hashes) -> str:
    inner = ", ".join(f"{_quote(name)}: {_quote(value)}" for name, value in pairs)
    return f"{{{inner}}}"


def _pairs(data: object) -> Any:
    if not isinstance(data, dict):
        return None
    return tuple(sorted((str(k), str(v)) for k, v in data.items()))


@dataclass(frozen=True)
class CacheKeyContext:
    """What a ``cache_key_fn(context, parameters)`` receives as ``context``."""

    task: Task[..., Any]
    task_run: TaskRun
    flow_run: FlowRun | None
    # Left on the instance by task_input_hash: (key, code, [(name, hash), ...]), and by a
    # cache policy: (key, code or None, inputs, (extra parts, policy)). Not a field: it is
    # set after creation, on every cached call, so it stays as cheap as a plain tuple;
    # KeyParts is built from it only when a look-up misses.
    _made: ClassVar[_Made | None] = None

    @property
    def parameters(self) -> dict[str, Any]:
        return self.task_run.parameters

    @property
    def task_run_id(self) -> str:
        return self.task_run.id

    @property
    def flow_run_id(self) -> str | None:
        flow_run = self.flow_run
        return None if flow_run is None else flow_run.id

    @property
    def key_parts(self) -> KeyParts | None:
        """What the key ``task_input_hash`` (or a cache policy) made with this context is
        made of, if it did."""
        made = self._made
        if made is None:
            return None
        key, code, inputs = made[0], made[1], made[2]
        extra, policy = made[3] if len(made) > 3 else (None, None)
        if code is None:
            return KeyParts(key, "", tuple(inputs), None, None, extra, policy)
        return KeyParts(key, code.source, tuple(inputs), code.helpers, code.closure, extra, policy)

    def parts_for(self, key: str) -> KeyParts | None:
        """The parts of ``key`` if ``task_input_hash`` made it (also inside a custom key
        function that returns its key unchanged); None for any other key."""
        made = self._made
        return None if made is None or made[0] != key else self.key_parts


def task_input_hash(context: CacheKeyContext, arguments: dict[str, Any]) -> str | None:
    """Cache key from the task's identity, the code it runs and the content of its arguments.

    Returns None (the call runs uncached) with a ``CacheKeyWarning`` naming the argument (or
    the closure variable) when it cannot be hashed by content. The cache policy
    ``INPUTS + TASK_SOURCE`` makes the same key from the same helpers.
    """
    task = context.task
    code = checked_code(
        task.fn,
        task.name,
        "Give the task a cache_key_fn that keys on something stable, or make the value plain data",
        2,
    )
    if code is None:
        return None
    inputs = hashed_inputs(
        arguments,
        task.name,
        "argument",
        "Pass data that can be compared by value, or give the task a cache_key_fn that keys on "
        "something stable",
        2,
    )
    if inputs is None:
        return None
    key = key_digest(task.task_key, code, inputs)
    if isinstance(context, CacheKeyContext):
        object.__setattr__(context, "_made", (key, code, inputs))  # frozen for key functions
    return key


# -- the parts of a key, shared by task_input_hash and the cache policies ----------------------


def checked_code(fn: Any, task_name: str, advice: str, stacklevel: int) -> CodeIdentity | None:
    """The code ``fn`` runs, or None with a ``CacheKeyWarning`` (``advice`` says what to do)
    when part of it cannot be hashed. ``stacklevel`` counts from the caller of this."""
    code = code_identity(fn)
    if code.problem is not None:
        warnings.warn(
            f"task {task_name!r}: {code.problem}; its calls run without the cache. {advice}",
            CacheKeyWarning,
            stacklevel=stacklevel + 1,
        )
        return None
    return code


def hashed_inputs(
    values: dict[str, Any],
    task_name: str,
    what: str,
    advice: str | Callable[[str], str],
    stacklevel: int,
    exclude: tuple[str, ...] = (),
) -> list[tuple[str, str]] | None:
    """``(name, content hash)`` of each value but those in ``exclude``, sorted by name; None
    with a ``CacheKeyWarning`` naming the ``what`` (argument, input, flow parameter) that
    cannot be hashed by content; ``advice`` says what to do (given the name, if a function).
    ``stacklevel`` counts from the caller of this."""
    hashed: list[tuple[str, str]] = []
    for name in sorted(values):
        if name in exclude:
            continue
        try:
            hashed.append((name, stable_hash(values[name])))
        except UnhashableInputError as exc:
            if callable(advice):
                advice = advice(name)
            warnings.warn(
                f"task {task_name!r}: {what} {name!r} cannot be hashed by content ({exc}); "
                "this call runs without the cache" + (f". {advice}" if advice else ""),
                CacheKeyWarning,
                stacklevel=stacklevel + 1,
            )
            return None
    return hashed


def key_digest(
    task_key: str,
    code: CodeIdentity | None,
    inputs: list[tuple[str, str]],
    extra: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
) -> str:
    """The cache key of these parts: the task's identity, its code (None: not part of the
    key), the input hashes in order and other parts (a cache policy's run id, flow parameters,
    key function), sorted. Other parts are marked with ``+``, which no input name holds."""
    digest = hashlib.sha256()
    digest.update(task_key.encode())
    digest.update(b"\0")
    if code is not None:
        digest.update(code.source.encode())
        if code.digest is not None:
            digest.update(b"\0code=" + code.digest.encode())
    for name, value_hash in inputs:
        digest.update(b"\0" + name.encode() + b"=" + value_hash.encode())
    for name, value in sorted(extra):
        digest.update(b"\0+" + name.encode() + b"=" + value.encode())
    return digest.hexdigest()
