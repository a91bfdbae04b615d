"""Tracebacks that show the user's code, not flowbook's.

A failure inside a task passes through a dozen of flowbook's own frames (``tasks.py``,
``engine/task_engine.py``, ``states.py``, the runner's threads) on its way to the cell. They
say nothing about what went wrong, so every traceback flowbook shows or stores is formatted
here, and the exception a failed flow or task call raises into the caller has them taken out.

Which frames go: every frame of a file in the flowbook package, wherever it is in the chain
(not only the leading ones, so a task called inside a task keeps both user frames), and the
standard library frames flowbook itself calls into (``threading`` waits, ``contextlib``,
``concurrent.futures``) until the user's code is reached again. Each exception of a chain
(``raise ... from``, exception groups) is trimmed the same way; an exception raised by
flowbook itself keeps its message and no frames.

Notebook cells are named as IPython names them, ``Cell In[3], line 12``: the kernel compiles
each cell to a temporary file name and IPython's compiler keeps the map from those names to
execution counts. Outside IPython, file paths stay as they are.

Frames of third-party packages are the user's, even where ``site-packages`` lies inside the
standard library's directory (pyenv, conda and Docker images): the sysconfig ``purelib`` and
``platlib`` directories, ``site.getsitepackages()`` and the user site are never standard
library. A traceback whose innermost frame would be dropped keeps it when it is not
flowbook's (a standard library function called as the task itself, ``task(json.loads)``),
so where the error was raised is always shown. An ``AttributeError``, ``KeyError`` (and the
like, ``_BUG_TYPES``) raised in flowbook's own code is a mistake in flowbook, not an error it
reports: its traceback is shown whole, flowbook's frames included. Frames inside an exception
group's box (``  |   File ...``) are named ``Cell In[N]`` too.

All of this runs on the failure path only: formatting when a traceback is shown or stored
(once per exception and traceback object, cached), trimming when a failed call re-raises.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import traceback
import types

__all__ = ["format_exc_info", "format_user_traceback", "without_internal_frames"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _library_dirs() -> tuple[str, ...]:
    dirs = set()
    for key in ("stdlib", "platstdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.abspath(path) + os.sep)
    return tuple(sorted(dirs))


def _site_dirs() -> tuple[str, ...]:
    """Where third-party packages live: inside the standard library's directory on pyenv,
    conda and Docker images (``lib/python3.X/site-packages``), yet not the standard library."""
    import site

    paths = [sysconfig.get_paths().get(key) for key in ("purelib", "platlib")]
    try:
        paths.extend(site.getsitepackages())
    except AttributeError:  # a virtualenv's old ``site`` module
        pass
    paths.append(getattr(site, "USER_SITE", None))
    return tuple(sorted({os.path.abspath(p) + os.sep for p in paths if p}))


_STDLIB_DIRS = _library_dirs()
_SITE_DIRS = _site_dirs()


def _is_flowbook(filename: str) -> bool:
    return filename.startswith(_PACKAGE_DIR)


def _is_stdlib(filename: str) -> bool:
    return filename.startswith((*_STDLIB_DIRS, "<frozen ")) and not filename.startswith(_SITE_DIRS)


# Errors that, raised by flowbook's own code, mean a mistake in flowbook rather than an error
# it reports on purpose (those carry a message and need no frames): their tracebacks are
# shown whole, flowbook's frames included, so that the mistake can be found and reported.
_BUG_TYPES: tuple[type[BaseException], ...] = (
    AttributeError,
    NameError,
    KeyError,
    IndexError,
    AssertionError,
    ZeroDivisionError,
    RecursionError,
)


def _is_internal_bug(etype: type[BaseException] | None, innermost: str | None) -> bool:
    return (
        innermost is not None
        and _is_flowbook(innermost)
        and etype is not None
        and issubclass(etype, _BUG_TYPES)
    )


def _innermost(tb: types.TracebackType | None) -> str | None:
    name = None
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return name


def _keep(filenames: list[str]) -> list[bool]:
    """Which of a traceback's frames (outermost first) are the user's.

    A flowbook frame never is; a standard library frame entered from a flowbook frame (and
    the library frames it calls in turn) is flowbook's machinery, not the user's call.
    """
    keep: list[bool] = []
    inside = False  # in frames that flowbook called into, before the user's code again
    for name in filenames:
        if _is_flowbook(name):
            inside = True
            keep.append(False)
        elif inside and _is_stdlib(name):
            keep.append(False)
        else:
            inside = False
            keep.append(True)
    return keep


def _shown(filenames: list[str]) -> list[bool]:
    """The frames shown of a traceback: ``_keep``'s, and the innermost one whenever it is not
    flowbook's own (a standard library function called as the task itself, ``task(json.loads)``:
    where it raised, rather than no frame past the call)."""
    keep = _keep(filenames)
    if keep and not keep[-1] and not _is_flowbook(filenames[-1]):
        keep[-1] = True
    return keep


def _trim_tb(tb: types.TracebackType | None) -> types.TracebackType | None:
    entries: list[types.TracebackType] = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    keep = _shown([e.tb_frame.f_code.co_filename for e in entries])
    if all(keep):
        return entries[0] if entries else None
    trimmed: types.TracebackType | None = None
    for entry, kept in zip(reversed(entries), reversed(keep), strict=True):
        if kept:
            trimmed = types.TracebackType(trimmed, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return trimmed


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception linked to it (causes, contexts, group members), once each."""
    seen: set[int] = set()
    todo, out = [exc], []
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        for linked in (e.__cause__, e.__context__):
            if linked is not None:
                todo.append(linked)
        members = getattr(e, "exceptions", None)  # an exception group's (Python 3.11+)
        if isinstance(members, tuple):
            todo.extend(m for m in members if isinstance(m, BaseException))
    return out


def without_internal_frames(exc: BaseException) -> BaseException:
    """``exc`` (the same object) with flowbook's frames taken out of its traceback and of
    those of its causes and contexts; raise it again so the caller sees the user's frames.

    A context raised and caught inside flowbook alone (none of its frames the user's: the
    engine handling something of its own while the user's code ran) is dropped, so no
    "During handling of the above exception" about flowbook's internals is shown. The frames
    kept are the real ones, so ``%debug`` and ``pdb.post_mortem`` still walk them and show
    their variables.
    """
    chain = _chain(exc)
    internal = {id(e) for e in chain if _all_internal(e.__traceback__)}
    for e in chain:
        context = e.__context__
        if context is not None and context is not e.__cause__ and id(context) in internal:
            e.__context__ = None
    # (a dropped context keeps its frames: Python may attach it again, as when the user's
    # code ran inside one of flowbook's ``except`` blocks, and it must still look internal)
    for e in _chain(exc):
        tb = e.__traceback__
        if tb is not None and not _is_internal_bug(type(e), _innermost(tb)):
            e.__traceback__ = _trim_tb(tb)
    return exc


def _all_internal(tb: types.TracebackType | None) -> bool:
    names = []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return bool(names) and not any(_keep(names))


def _cell_label(filename: str) -> str | None:
    """``Cell In[3]`` for the temporary file a kernel compiled cell 3 to, else None."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    shell = get_ipython()
    compiler = getattr(shell, "compile", None)
    fmt = getattr(compiler, "format_code_name", None)
    if fmt is None:
        return None
    try:
        named = fmt(filename)
    except Exception:  # an IPython of another shape: keep the file path
        return None
    if not named:
        return None
    label, name = named
    return f"{label} {name}"


_FRAME_LINE = re.compile(
    r'^(?P<lead>(?: *\| *)*)  File "(?P<file>[^"\n]+)", line (?P<line>\d+)(?P<rest>.*)$', re.M
)
"""A frame's line; inside an exception group's box it is led by ``  | ``."""


def _name_cells(text: str) -> str:
    """``File "/tmp/ipykernel_1/123.py", line 4`` becomes ``Cell In[3], line 4``."""
    if "IPython" not in sys.modules:
        return text

    def sub(match: re.Match[str]) -> str:
        label = _cell_label(match["file"])
        if label is None:
            return match[0]
        return f"{match['lead']}  {label}, line {match['line']}{match['rest']}"

    return _FRAME_LINE.sub(sub, text)


def _trim_summary(te: traceback.TracebackException) -> None:
    """``without_internal_frames`` for an exception already summarised for formatting."""
    nodes: list[traceback.TracebackException] = []
    seen: set[int] = set()
    todo = [te]
    while todo:
        t = todo.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        nodes.append(t)
        for linked in (t.__cause__, t.__context__):
            if linked is not None:
                todo.append(linked)
        todo.extend(getattr(t, "exceptions", None) or ())
    internal = set()
    for t in nodes:
        frames = list(t.stack)
        names = [f.filename for f in frames]
        if names and _is_internal_bug(t.exc_type, names[-1]):
            continue  # flowbook's own mistake: every frame is shown
        if frames and not any(_keep(names)):
            internal.add(id(t))
        keep = _shown(names)
        t.stack = traceback.StackSummary.from_list(
            [f for f, kept in zip(frames, keep, strict=True) if kept]
        )
    for t in nodes:
        context = t.__context__
        if context is not None and context is not t.__cause__ and id(context) in internal:
            t.__context__ = None


def format_exc_info(
    etype: type[BaseException] | None, value: BaseException | None, tb: types.TracebackType | None
) -> str:
    """The text of a traceback (a log record's ``exc_info``), the user's frames only."""
    if value is None:
        return "".join(traceback.format_exception_only(etype, value)).rstrip()
    cacheable = tb is not None and tb is value.__traceback__
    if cacheable:
        key = _tb_key(tb)
        cached = getattr(value, _CACHE_ATTR, None)
        if type(cached) is tuple and len(cached) == 2 and cached[0] == key:
            return str(cached[1])
    te = traceback.TracebackException(type(value), value, tb, compact=True)
    _trim_summary(te)
    text = _name_cells("".join(te.format()).rstrip())
    if cacheable:
        try:
            setattr(value, _CACHE_ATTR, (key, text))
        except Exception:  # an exception class that refuses attributes: format each time
            pass
    return text


def _tb_key(tb: types.TracebackType | None) -> tuple[tuple[int, int, int], ...]:
    """What identifies a traceback while it is alive: its entries' objects, frames and
    instructions (ids, not the objects: a pickled exception must not carry them)."""
    key = []
    while tb is not None:
        key.append((id(tb), id(tb.tb_frame), tb.tb_lasti))
        tb = tb.tb_next
    return tuple(key)


_CACHE_ATTR = "__flowbook_tb__"
"""The attribute an exception keeps its formatted traceback in, with the ``_tb_key`` of the
traceback it was formatted from. A
failure is shown on the console, in the widget and in the store, and a map node's snapshot
shows its failed runs at every update: formatted once, until the exception's traceback changes
(raised again, trimmed by ``without_internal_frames``). Built-in exceptions cannot be weakly
referenced, hence an attribute rather than a ``WeakKeyDictionary``."""


def format_user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` as flowbook shows and stores it: the user's frames only,
    notebook cells named ``Cell In[N]``, causes and contexts included."""
    return format_exc_info(type(exc), exc, exc.__traceback__)
