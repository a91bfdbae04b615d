"""Wrappers that change how the engine treats a task argument: ``quote``, ``opaque``,
``allow_failure``.

Standard library only: ``flowbook.engine.values`` recognises them by their base class while it
looks for futures, and that walk is the only place they cost anything. Arguments without
them are never checked for them.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

__all__ = ["Annotation", "allow_failure", "opaque", "quote"]

T = TypeVar("T")


class Annotation(Generic[T]):
    """A value wrapped for the engine; the task receives the value itself."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def unwrap(self) -> T:
        return self.value

    def rewrap(self, value: T) -> Annotation[T]:
        return type(self)(value)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Annotation)
            and type(self) is type(other)
            and self.value == other.value
        )

    def __hash__(self) -> int:
        return hash((type(self), self.value))  # unhashable when the value is (as a tuple)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.value,))


class quote(Annotation[T]):
    """Pass the value as it is: the engine does not look inside it for futures (a large
    collection is not walked), and futures inside it are neither waited for nor resolved."""

    __slots__ = ()

    def unquote(self) -> T:
        return self.value


class allow_failure(Annotation[T]):
    """Let the task run although the upstream runs of the futures inside the value failed;
    a failed upstream run's future is replaced by its exception."""

    __slots__ = ()


class opaque(Annotation[T]):
    """Wait for a future given here and pass its result, without looking inside the result
    (or inside any other value given here) for more futures."""

    __slots__ = ()
