"""Values as bytes and back, and the checksum that proves stored bytes unchanged.

Values are pickled with the standard ``pickle`` when it can (fast, C), else with
``cloudpickle`` (functions and classes defined in a notebook or ``__main__``, lambdas); both
load with ``pickle.loads``. This module needs the standard library only, so the in-memory cache
(``FLOWBOOK_STORE=off``) can copy values through it without importing the run store.

The checksum is the CRC-32 of the pickled bytes, as 8 hex digits. It is kept apart from the
bytes (in the row that indexes them), so a changed byte in a file or a row is found before the
bytes reach ``pickle.loads``, which would otherwise hand out a wrong value or fail somewhere
deep. CRC-32 finds accidental change (a torn or truncated write, a bad sector, another program
writing over a file) at a seventh of sha256's cost, which matters on every task run's result;
it is no defence against deliberate change, and needs none here: whoever can rewrite a value's
file can rewrite its row too.
"""

from __future__ import annotations

import hashlib
import pickle
import zlib
from typing import Any

__all__ = ["ResultError", "checksum", "dumps", "loads", "verify"]


class ResultError(RuntimeError):
    """A result could not be pickled, or a stored one could not be read back."""


def dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass  # fall through to cloudpickle, which pickles what pickle cannot by value
    import cloudpickle  # type: ignore[import-untyped]

    try:
        data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise ResultError(
            f"a value of type {type(value).__name__} cannot be pickled ({exc})"
        ) from None
    return data


def loads(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise ResultError(
            f"a stored result cannot be read back ({type(exc).__name__}: {exc})"
        ) from None


def checksum(data: bytes) -> str:
    """The CRC-32 of ``data`` as 8 hex digits."""
    return f"{_crc32(data):08x}"


_crc32 = zlib.crc32


def verify(data: bytes, expected: str | None, what: str) -> None:
    """``ResultError`` naming ``what`` unless ``data`` has the checksum ``expected``.

    ``expected`` None (a value stored before checksums were kept) passes unchecked; one of 64
    digits is the sha256 that stores written by earlier development builds kept.
    """
    if expected is None:
        return
    actual = hashlib.sha256(data).hexdigest() if len(expected) == 64 else checksum(data)
    if actual != expected:
        raise ResultError(
            f"{what} does not match its checksum: its {len(data)} bytes were changed after "
            "they were written"
        )
