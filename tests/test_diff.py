"""Two runs compared (``flowbook.diff``): the data, ``flowbook runs diff`` (a subprocess),
``%flowbook diff`` in a real IPython shell and the server API's ``run_diff``, on a real store.

Run A and run B are two runs of one flow with changed parameters: in B a task sleeps longer,
another is served from the cache, another fails, and a map has one more item.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowbook import flow, task
from flowbook.diff import compare_runs
from flowbook.settings import reload_settings
from flowbook.store import close_store, get_store
from flowbook.store.queries import list_runs
from flowbook.tasks import task_input_hash


@task(cache_key_fn=task_input_hash)
def load(n: int) -> list[int]:
    return list(range(n))


@task
def slow(x: int, delay: float) -> int:
    time.sleep(delay)
    return x * 10


@task
def explode(fail: bool) -> str:
    if fail:
        raise ValueError("boom: the input was bad")
    return "ok"


@task
def square(x: int) -> int:
    return x * x


@flow(name="diff-flow")
def pipeline(n: int, delay: float, fail: bool) -> int:
    load(3)
    explode.submit(fail).wait()
    square.map(range(n)).wait()
    return slow(n, delay)


@flow(name="other-flow")
def other() -> int:
    return square(2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("diff-home")
    saved = {k: os.environ.get(k) for k in ("FLOWBOOK_HOME", "FLOWBOOK_CONSOLE")}
    os.environ.update(FLOWBOOK_HOME=str(home), FLOWBOOK_CONSOLE="off")
    reload_settings()
    close_store()
    try:
        store = get_store()
        assert store is not None
        pipeline(2, 0.0, False, return_state=True)
        pipeline(3, 0.4, True, return_state=True)
        other(return_state=True)
        listed = list_runs(store, limit=3)
        assert [r.flow_name for r in listed] == ["other-flow", "diff-flow", "diff-flow"], listed
        yield {"home": home, "store": store, "ids": [r.id for r in reversed(listed)]}
    finally:
        close_store()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reload_settings()


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.update(FLOWBOOK_HOME=str(home), FLOWBOOK_CONSOLE="off")
    return env


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowbook.cli", "runs", "diff", *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_comparison_shows_what_changed(runs: dict[str, Any]) -> None:
    a, b, _ = runs["ids"]
    diff = compare_runs(runs["store"], a[:8], b)
    assert diff.same_flow
    assert diff.a.id == a
    assert diff.b.id == b
    assert diff.duration_ratio is not None
    assert diff.duration_ratio > 5
    params = {p.name: (p.a, p.b, p.changed) for p in diff.parameters}
    assert params == {
        "n": ("2", "3", True),
        "delay": ("0.0", "0.4", True),
        "fail": ("False", "True", True),
    }
    by_name = {(t.a or t.b).name: t for t in diff.task_runs}  # type: ignore[union-attr]
    assert set(by_name) == {"load-0", "slow-0", "explode-0", "square-2"}
    cached = by_name["load-0"]
    assert cached.changes == ["state", "cache"]
    assert (cached.a.cache, cached.b.cache) == ("miss", "hit")  # type: ignore[union-attr]
    assert cached.a.result == cached.b.result == "[0, 1, 2]"  # type: ignore[union-attr]
    slower = by_name["slow-0"]
    assert slower.changes == ["duration", "inputs", "result"]
    assert slower.duration_ratio is not None
    assert slower.duration_ratio > 10
    assert (slower.a.result, slower.b.result) == ("20", "30")  # type: ignore[union-attr]
    failed = by_name["explode-0"]
    assert "state" in failed.changes
    assert failed.b.state == "Failed"
    assert "boom" in (failed.b.message or "")
    assert by_name["square-2"].changes == ["only in B"]
    assert by_name["square-2"].a is None
    # square-0 and square-1 ran alike (sub-millisecond differences are not differences)
    assert diff.identical == 2
    assert diff.only_in_a == 0
    assert diff.only_in_b == 1


def test_runs_of_different_flows_are_compared_with_a_note(runs: dict[str, Any]) -> None:
    a, _, o = runs["ids"]
    diff = compare_runs(runs["store"], a, o)
    assert not diff.same_flow
    assert "different flows ('diff-flow' and 'other-flow')" in diff.notes[0]
    assert diff.parameters[0].b is None
    assert diff.parameters[0].changed
    names = {(t.a or t.b).name: t.changes for t in diff.task_runs}  # type: ignore[union-attr]
    assert names["load-0"] == ["only in A"]


def test_cli_prints_an_aligned_table_and_json(runs: dict[str, Any]) -> None:
    a, b, _ = runs["ids"]
    done = cli(runs["home"], a[:8], b[:8])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Flow runs of 'diff-flow'" in out
    assert "*  n      2      3" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:1].strip()}
    assert "only in B" in lines["square-2"]
    assert "miss" in lines["load-0"]
    assert "hit" in lines["load-0"]
    assert "Failed" in lines["explode-0"]
    assert "explode-0 in B: " in out
    assert "boom: the input was bad" in out
    assert "2 identical" in out
    header = out.splitlines()[
        [line.startswith("TASK RUN") for line in out.splitlines()].index(True)
    ]
    assert header.index("STATE B") == lines["explode-0"].index("Failed")  # aligned
    data = json.loads(cli(runs["home"], a, b, "--json").stdout)
    assert data["identical"] == 2
    assert data["matched_by"] == "task name and call index"
    assert {t["a"]["name"] if t["a"] else t["b"]["name"] for t in data["task_runs"]} == {
        "load-0",
        "slow-0",
        "explode-0",
        "square-2",
    }


def test_cli_errors_name_the_value(runs: dict[str, Any]) -> None:
    a, b, _ = runs["ids"]
    home = runs["home"]
    unknown = cli(home, a, "nosuchrun")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("flowbook: run B: no flow run 'nosuchrun' in the store")
    same = cli(home, a[:8], a)
    assert same.returncode == 1
    assert f"runs A and B are both flow run {a} ('{a[:8]}' and '{a}' name the same run)" in (
        same.stderr
    )
    # two runs whose ids start alike
    engine = sa.create_engine(runs["store"].url)
    with engine.begin() as conn:
        for run_id, new in ((a, "fbfb0001"), (b, "fbfb0002")):
            conn.execute(
                sa.text("UPDATE flow_runs SET id = :new || substr(id, 9) WHERE id = :id"),
                {"new": new, "id": run_id},
            )
    try:
        ambiguous = cli(home, "fbfb", b)
        assert ambiguous.returncode == 1
        assert "run A: run 'fbfb' is ambiguous" in ambiguous.stderr
    finally:
        with engine.begin() as conn:
            for run_id, new in ((a, "fbfb0001"), (b, "fbfb0002")):
                conn.execute(
                    sa.text("UPDATE flow_runs SET id = :id WHERE id = :new || substr(:id, 9)"),
                    {"new": new, "id": run_id},
                )
        engine.dispose()


def test_magic_renders_html_with_state_colours(
    runs: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    a, b, _ = runs["ids"]
    monkeypatch.setenv("FLOWBOOK_HOME", str(runs["home"]))
    reload_settings()
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext flowbook")
    try:
        table = shell.run_cell(f"%flowbook diff {a[:8]} {b[:8]}").result
        page = table._repr_html_()
        assert "background:#e03131" in page  # the Failed badge, in the widget's colour
        assert "background:#0c8599" in page  # Cached
        assert "boom: the input was bad" in page
        assert "<code>30</code>" in page
        assert "Flow runs of 'diff-flow'" in repr(table)
        for line, named in [
            (f"%flowbook diff {a}", "takes two runs"),
            (f"%flowbook diff {a} {a}", "give two different runs"),
            (f"%flowbook diff {a} nosuchrun", "no flow run 'nosuchrun'"),
        ]:
            result = shell.run_cell(line)
            err = capsys.readouterr().err
            assert result.success is False, line
            assert "UsageError" in err, line
            assert named in err, line
            assert "Traceback" not in err
    finally:
        shell.run_cell("%unload_ext flowbook")
        InteractiveShell.clear_instance()


def test_server_api_compares_without_unpickling(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbook.jupyter.server import api

    a, b, _ = runs["ids"]
    monkeypatch.setenv("FLOWBOOK_HOME", str(runs["home"]))
    reload_settings()
    body = api.run_diff(*api.parse_diff(a, b))
    assert body["read_results"] is False
    by_name = {(t["a"] or t["b"])["name"]: t for t in body["task_runs"]}
    assert "result" in by_name["slow-0"]["changes"]  # by checksum
    assert by_name["slow-0"]["b"]["result"] == "30"  # previewed without unpickling
    for args, status, text in [
        ((a, None), 400, "b is missing"),
        ((a, "abc"), 400, "run id 'abc' is not valid"),
        ((a, a), 400, "the same run"),
    ]:
        with pytest.raises(api.ApiError) as info:
            api.parse_diff(*args)
        assert info.value.status == status
        assert text in info.value.message
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(api.ApiError) as info:
        api.run_diff(a, missing)
    assert info.value.status == 404
    assert missing in info.value.message
