"""Tracebacks of failures inside library code: a standard library function used as the task
itself, a third-party package installed inside the standard library's directory (pyenv,
conda and Docker images keep ``site-packages`` there), and notebook cells inside exception
groups."""

from __future__ import annotations

import builtins
import json
import sys
import sysconfig
import textwrap
import traceback
from pathlib import Path

import pytest

from flowbook import _tracebacks, flow, task
from flowbook._tracebacks import format_user_traceback


def test_a_standard_library_function_as_the_task_keeps_where_it_raised() -> None:
    loads = task(json.loads)
    with pytest.raises(json.JSONDecodeError) as info:
        loads("{")
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames, "no frame left"
    assert frames[-1].filename.endswith(("json/decoder.py", "json\\decoder.py"))
    text = format_user_traceback(info.value)
    assert "decoder.py" in text
    assert "JSONDecodeError: Expecting property name" in text


def _fake_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """A ``lib/python3.X`` with ``site-packages`` inside it, holding a package ``y2lib``."""
    stdlib = tmp_path / "lib" / "python3"
    site = stdlib / "site-packages"
    site.mkdir(parents=True)
    (site / "y2lib.py").write_text(
        textwrap.dedent(
            """
            def validate(value):
                return _check(value)

            def _check(value):
                raise ValueError(f"invalid value {value!r}")
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop("y2lib", None)
    monkeypatch.setattr(_tracebacks, "_STDLIB_DIRS", (str(stdlib) + "/",))
    monkeypatch.setattr(_tracebacks, "_SITE_DIRS", (str(site) + "/",), raising=False)
    import y2lib  # type: ignore[import-not-found]

    return y2lib


def test_third_party_frames_inside_the_standard_library_dir_are_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    y2lib = _fake_layout(tmp_path, monkeypatch)
    validate = task(y2lib.validate)  # type: ignore[attr-defined]

    @flow
    def checks() -> object:
        return validate(3)

    with pytest.raises(ValueError, match="invalid value 3") as info:
        checks()
    names = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert names[-3:] == ["checks", "validate", "_check"]
    text = format_user_traceback(info.value)
    assert 'y2lib.py", line 3, in validate' in text
    assert "in _check" in text


def test_site_packages_are_not_standard_library() -> None:
    purelib = sysconfig.get_paths()["purelib"]
    assert not _tracebacks._is_stdlib(str(Path(purelib) / "somepkg" / "mod.py"))
    stdlib = sysconfig.get_paths()["stdlib"]
    assert _tracebacks._is_stdlib(str(Path(stdlib) / "json" / "decoder.py"))


def test_cells_inside_an_exception_group_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("IPython")
    group_type = getattr(builtins, "ExceptionGroup", None)
    if group_type is None:
        pytest.skip("exception groups are Python 3.11+")
    cell = "/tmp/ipykernel_7/1234.py"
    code = compile("def fail(i):\n    raise ValueError(i)\n", cell, "exec")
    space: dict[str, object] = {}
    exec(code, space)
    monkeypatch.setattr(
        _tracebacks, "_cell_label", lambda name: "Cell In[5]" if name == cell else None
    )
    errors = []
    for i in range(2):
        try:
            space["fail"](i)  # type: ignore[operator]
        except ValueError as e:
            errors.append(e)
    try:
        raise group_type("two failed", errors)
    except group_type as group:
        text = format_user_traceback(group)
    assert cell not in text
    lines = [line for line in text.splitlines() if "Cell In[5], line 2, in fail" in line]
    assert len(lines) == 2
    assert all(line.lstrip().startswith("| ") for line in lines), lines


def test_a_traceback_is_formatted_once_per_exception_until_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = []
    real = traceback.TracebackException

    def counting(*args: object, **kwargs: object) -> traceback.TracebackException:
        made.append(args[1])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_tracebacks.traceback, "TracebackException", counting)

    def fail() -> None:
        raise KeyError("first")

    try:
        fail()
    except KeyError as e:
        exc = e
    first = format_user_traceback(exc)
    assert format_user_traceback(exc) == first  # console, widget, store: one formatting
    assert len(made) == 1
    try:
        raise exc  # raised again: a longer traceback
    except KeyError:
        pass
    second = format_user_traceback(exc)
    assert len(made) == 2
    assert second != first
    assert second.count("raise exc") == 1
