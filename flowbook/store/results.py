"""Result values as bytes and files.

Values are pickled with the standard ``pickle`` when it can (fast, C), else with
``cloudpickle`` (functions and classes defined in a notebook or ``__main__``, lambdas); both
load with ``pickle.loads``. Files are written under a temporary name in the same directory
and renamed into place, so a reader sees a whole file or none, even if the writer is killed.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["ResultError", "dumps", "loads", "read_file", "write_file"]


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


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove_file(path: Path) -> None:
    """Delete ``path`` if it exists."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def read_file(path: Path) -> Any:
    """The value stored in ``path``; ``ResultError`` if it is missing, truncated or corrupt."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultError(f"result file {str(path)!r} cannot be read ({exc.strerror})") from None
    if not data:
        raise ResultError(f"result file {str(path)!r} is empty")
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise ResultError(
            f"result file {str(path)!r} is corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from None
