"""Result values as bytes and files, and the results directory that holds the files.

Pickling and checksums are in ``flowbook._pickling`` (re-exported here). Files are written
under a temporary name in the same directory and renamed into place, so a reader sees a whole
file or none, even if the writer is killed; a write that fails (a full disk, a read-only
directory) removes its temporary file before the error goes on, so it leaves nothing behind.

Result files are loaded with ``pickle``, which runs whatever code the bytes say. So the store
reads only files it wrote itself, in a directory nobody else can write to: files are created
0600 and directories 0700, and a results directory that group or others can write to is
refused when the store opens (``prepare_dir``). Every file read is checked against the
checksum its index row keeps.
"""

from __future__ import annotations

import errno
import os
import pickle
import secrets
import shlex
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flowbook._pickling import ResultError, checksum, dumps, loads, verify

__all__ = [
    "ResultError",
    "checksum",
    "dumps",
    "files",
    "loads",
    "prepare_dir",
    "read_file",
    "remove_file",
    "verify",
    "write_file",
]

# the subdirectories the store writes: task results, and cache values
_SUBDIRS = ("runs", "cache")


def files(results_dir: Path) -> Iterator[tuple[str, os.stat_result]]:
    """The files in the store's subdirectories of ``results_dir``, as (``"runs/<name>"``, their
    stat), the way rows name them; an unreadable directory or a file gone meanwhile is skipped."""
    for sub in _SUBDIRS:
        try:
            entries = list(os.scandir(results_dir / sub))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    yield f"{sub}/{entry.name}", entry.stat(follow_symlinks=False)
            except OSError:
                continue


def prepare_dir(results_dir: Path) -> None:
    """Create the results directory (0700) if it is missing; refuse one others can write to.

    Only the directory itself is made here, in a parent that exists: a missing home is made
    by the database's opening, and a directory that cannot be created is reported there, with
    the setting that names it.
    """
    if not results_dir.is_dir() and results_dir.parent.is_dir():
        try:
            results_dir.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError:
            return
    for path in (results_dir, *(results_dir / name for name in _SUBDIRS)):
        _refuse_if_shared(path)


def _refuse_if_shared(path: Path) -> None:
    from flowbook.store.database import StoreError

    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreachable: opening the database reports what is wrong
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StoreError(
            f"the results directory {path} is writable by other users; flowbook loads results "
            "from it with pickle, which runs the code a file holds, so only you may write "
            f"there: run chmod 700 {shlex.quote(str(path))} (or set FLOWBOOK_RESULTS_DIR to a "
            "directory of your own)"
        )


def _make_dirs(path: Path) -> None:
    """``path`` and its missing parents, each created 0700."""
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            if not directory.is_dir():
                raise


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, then rename), as a 0600 file.

    ``OSError`` (with the path that failed) if it cannot; no temporary file is left then.
    """
    directory = path.parent
    tmp = directory / f".tmp-{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        _make_dirs(directory)
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                if written <= 0:  # a file system that accepts nothing: say so, do not spin
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
                view = view[written:]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            # the path the caller asked for, not the temporary name nobody knows
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def remove_file(path: Path) -> None:
    """Delete ``path`` if it exists."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def read_file(path: Path, expected: str | None = None) -> Any:
    """The value stored in ``path``; ``ResultError`` naming the file if it is missing,
    truncated, corrupt, or does not match the checksum ``expected`` (None: not checked)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultError(f"result file {str(path)!r} cannot be read ({exc.strerror})") from None
    if not data:
        raise ResultError(f"result file {str(path)!r} is empty")
    verify(data, expected, f"result file {str(path)!r}")
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise ResultError(
            f"result file {str(path)!r} is corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from None
