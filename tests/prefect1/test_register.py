"""Registering a flow (Prefect 1's ``flow.register``): the ``flows`` table, its id and
version, what it records and prints, its errors, and the migration of a version-4 store.

Runs on SQLite and on the real PostgreSQL server (the ``store`` fixture of tests/store).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parents[1] / "store"))
from store_under_test import StoreUnderTest, back_to_version_5, child_env, store

import flowbook.runs
from flowbook import flow, task
from flowbook.registry import flow_id, register_flow
from flowbook.store import close_store, get_store, schema

__all__ = ["store"]

FLOW_MODULE = """\
from flowbook import flow, task


@task
def shout(word):
    return word.upper(){suffix}


@flow(name="shouting")
def shouting(word="hi"):
    return shout(word)
"""


def load_module(tmp_path: Path, name: str, suffix: str = "") -> ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(FLOW_MODULE.format(suffix=suffix))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def flow_rows(store: StoreUnderTest) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM flows ORDER BY project, name")).mappings()
        return [dict(row) for row in rows]


def test_registering_unchanged_code_keeps_the_id_and_version(
    store: StoreUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = load_module(tmp_path, "shouting_v1")
    fid = register_flow(first.shouting, project_name="tutorial", labels=["dev"])
    assert fid == flow_id("shouting", "tutorial")
    assert first.shouting.project == "tutorial"
    printed = capsys.readouterr().out.splitlines()
    where = store.home / "flowbook.db" if store.backend == "sqlite" else None
    assert printed[0].startswith("Flow URL: none (no server); registered in the run store ")
    if where is not None:
        assert printed[0].endswith(str(where))
    assert printed[1:] == [
        f" └── ID: {fid}",
        " └── Project: tutorial",
        " └── Labels: ['dev']",
        " └── Version: 1",
    ]

    # the same code again (also through another module object): same id, same version
    assert register_flow(first.shouting, project_name="tutorial", labels=["dev"]) == fid
    again = load_module(tmp_path, "shouting_v1_again")
    assert register_flow(again.shouting, project_name="tutorial", no_url=True) == fid
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == " └── Version: 1 (unchanged)"
    assert not any(line.startswith("Flow URL") for line in printed[5:])  # no_url=True
    (row,) = flow_rows(store)
    assert (row["id"], row["name"], row["project"], row["version"]) == (
        fid,
        "shouting",
        "tutorial",
        1,
    )

    # the task's code changes: version 2, same id; registering that again keeps 2
    changed = load_module(tmp_path, "shouting_v2", suffix=' + "!"')
    assert register_flow(changed.shouting, project_name="tutorial") == fid
    assert capsys.readouterr().out.splitlines()[-1] == " └── Version: 2"
    register_flow(changed.shouting, project_name="tutorial")
    assert capsys.readouterr().out.splitlines()[-1] == " └── Version: 2 (unchanged)"
    (row,) = flow_rows(store)
    assert row["version"] == 2

    # another project is another flow
    other = register_flow(changed.shouting, project_name="other")
    assert other != fid
    assert [(r["project"], r["version"]) for r in flow_rows(store)] == [
        ("other", 1),
        ("tutorial", 2),
    ]


def test_what_a_registration_records(store: StoreUnderTest) -> None:
    from flowbook.executors import LocalDaskExecutor
    from flowbook.run_configs import LocalRun

    @task
    def add(x: int, y: int) -> int:
        return x + y

    @flow(name="adding")
    def adding(x: int, y: int = 2, when: datetime.date = datetime.date(2020, 1, 2)) -> int:
        return add(x, y)

    adding.run_config = LocalRun(env={"GREETING": "Hello"}, labels=["gpu"])
    adding.executor = LocalDaskExecutor()
    register_flow(adding, project_name="maths", labels=["dev"])

    (row,) = flow_rows(store)
    assert row["script"] == __file__
    assert row["code"] == Path(__file__).read_text()
    assert (row["notebook"], row["cell_id"]) == (None, None)
    assert json.loads(row["parameters"]) == [
        {"name": "when", "required": False, "default": None, "jsonable": False,
         "repr": "datetime.date(2020, 1, 2)"},
        {"name": "x", "required": True},
        {"name": "y", "required": False, "default": 2, "jsonable": True, "repr": "2"},
    ]  # fmt: skip
    assert json.loads(row["labels"]) == ["dev", "gpu"]
    assert json.loads(row["run_config"]) == adding.run_config.describe()
    assert json.loads(row["run_config"])["type"] == "LocalRun"
    assert json.loads(row["executor"])["type"] == "LocalDaskExecutor"
    assert len(row["fingerprint"]) == 64
    assert row["registered_at"] > 0


def test_a_flow_registered_in_a_notebook_records_the_notebook_and_cell(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flowbook._origin.run_origin", lambda: ("/nb/tutorial.ipynb", "cell-7"))

    @flow(name="from-a-notebook")
    def from_a_notebook() -> int:
        return 1

    register_flow(from_a_notebook)
    (row,) = flow_rows(store)
    assert (row["script"], row["notebook"], row["cell_id"]) == (
        None,
        "/nb/tutorial.ipynb",
        "cell-7",
    )
    assert row["project"] is None


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"project_name": ""}, ValueError, "project_name='' is not a project name"),
        ({"project_name": "  "}, ValueError, "project_name='  ' is not a project name"),
        ({"project_name": 5}, ValueError, "project_name=5 is not a project name"),
        (
            {"labels": "dev"},
            TypeError,
            "register(labels='dev'): labels must be a list of strings; a single label is "
            "written labels=['dev']",
        ),
        (
            {"labels": ["dev", 3]},
            TypeError,
            "register(labels=...): label 3 is not a string (int); labels are strings such as 'dev'",
        ),
    ],
)
def test_bad_arguments_are_errors_naming_them(
    store: StoreUnderTest, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    @flow
    def plain() -> None:
        pass

    with pytest.raises(error) as raised:
        register_flow(plain, **kwargs)
    assert message in str(raised.value)
    assert flow_rows(store) == []


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_prefect_1_options_without_meaning_warn_naming_them(store: StoreUnderTest) -> None:
    @flow
    def plain() -> None:
        pass

    with pytest.warns(UserWarning, match="has no effect in flowbook") as caught:
        register_flow(
            plain,
            project_name="p",
            idempotency_key="abc",
            set_schedule_active=False,
            version_group_id="g",
            build=False,
        )
    messages = [str(w.message) for w in caught]
    assert messages == [
        "register(idempotency_key='abc') has no effect in flowbook (registering unchanged "
        "code already keeps the version); it is ignored",
        "register(set_schedule_active=False) has no effect in flowbook (flowbook has no "
        "scheduler); it is ignored",
        "register(version_group_id='g') has no effect in flowbook (a flow's versions are "
        "grouped by its name and project); it is ignored",
        "register(build=False) has no effect in flowbook (the flow is loaded from its script; "
        "there is no storage to build); it is ignored",
    ]
    assert all(w.filename == __file__ for w in caught)
    assert len(flow_rows(store)) == 1


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_register_without_a_project_keeps_the_flows_own(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    @flow(name="owned", project="x")
    def owned() -> None:
        pass

    assert register_flow(owned) == flow_id("owned", "x")
    assert owned.project == "x"
    assert [(r["name"], r["project"]) for r in flow_rows(store)] == [("owned", "x")]
    assert " └── Project: x" in capsys.readouterr().out
    register_flow(owned, project_name="y")
    assert owned.project == "y"


def test_a_flow_that_cannot_be_registered_is_left_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flowbook.store import StoreError

    monkeypatch.setattr("flowbook.store.get_store", lambda: None)  # FLOWBOOK_STORE=off

    @flow(name="kept", project="x")
    def kept() -> None:
        pass

    with pytest.raises(StoreError, match="FLOWBOOK_STORE=off"):
        register_flow(kept, project_name="y")
    assert kept.project == "x"


def test_a_version_4_store_gains_the_flows_table_and_keeps_its_rows(
    store: StoreUnderTest,
) -> None:
    @flow(flow_run_name="v4-run")
    def v4_flow() -> int:
        return 4

    assert v4_flow() == 4
    close_store()
    # back to version 4: without the table version 5 added (and what 6 added)
    back_to_version_5(store.engine)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE flows"))
        conn.execute(sa.text("UPDATE flowbook_meta SET value = '4'"))
    before = {t: store.count(t) for t in ("flow_runs", "task_runs", "states", "logs")}

    assert get_store() is not None
    assert store.rows("SELECT value FROM flowbook_meta") == [(str(schema.SCHEMA_VERSION),)]
    assert "flows" in sa.inspect(store.engine).get_table_names()
    assert {t: store.count(t) for t in before} == before
    assert [r.name for r in flowbook.runs.list()] == ["v4-run"]

    # the migrated store records registrations
    register_flow(v4_flow, project_name="after")
    assert [(r["name"], r["project"], r["version"]) for r in flow_rows(store)] == [
        ("v4-flow", "after", 1)
    ]


FUNCTIONAL_MODULE = """\
from flowbook import Flow, Parameter, task


@task
def shout(word):
    return word.upper(){suffix}


with Flow("functional-shouting") as flow:
    word = Parameter("word", default="hi")
    times = Parameter("times", required=True)
    shout(word)
"""


def test_a_functional_flow_registers_with_its_parameters_and_fingerprint(
    store: StoreUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def load(suffix: str = "") -> Any:
        # one module name, as `python script.py` runs a script as __main__ each time
        name = "functional_shouting"
        path = tmp_path / f"{name}.py"
        path.write_text(FUNCTIONAL_MODULE.format(suffix=suffix))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.flow

    first = load()
    fid = first.register(project_name="tutorial")
    assert fid == flow_id("functional-shouting", "tutorial")
    assert first.project == "tutorial"
    assert load().register(project_name="tutorial") == fid
    assert capsys.readouterr().out.splitlines()[-1] == " └── Version: 1 (unchanged)"
    (row,) = flow_rows(store)
    assert json.loads(row["parameters"]) == [
        {"name": "times", "required": True},
        {"name": "word", "required": False, "default": "hi", "jsonable": True, "repr": "'hi'"},
    ]
    assert row["fingerprint"] == first.fingerprint()

    changed = load(suffix=' + "!"')
    assert changed.register(project_name="tutorial") == fid
    assert capsys.readouterr().out.splitlines()[-1] == " └── Version: 2"
    assert [r["version"] for r in flow_rows(store)] == [2]


REGISTER_INLINE = (
    "from flowbook import flow\nfrom flowbook.registry import register_flow\n"
    "@flow(name='inline')\ndef inline():\n    return 1\nregister_flow(inline, project_name='p')\n"
)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("extra_env", "message"),
    [
        (
            {},
            "ValueError: flow 'inline' is registered from 'code without a file', which "
            "`flowbook run` could not load again; register it from a Python script "
            "(python my_flow.py) or from a notebook",
        ),
        (
            {"FLOWBOOK_STORE": "off"},
            "flowbook.store.database.StoreError: flow 'inline' cannot be registered: the run "
            "store is off (FLOWBOOK_STORE=off); registering records the flow in the store",
        ),
    ],
)
def test_registrations_that_cannot_be_run_again_are_refused(
    store: StoreUnderTest, extra_env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", REGISTER_INLINE],
        env=child_env({**store.env, **extra_env}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == message
    assert flow_rows(store) == []
