"""The code a task runs is part of its cache key: its closure values, and the source of the
user's helpers it calls, transitively (notebook cells, scripts, the user's own modules).

Bodies count their real executions in global lists (global data is not part of a key), so
every "hit" below is a call that did not run, and every "miss" one that did.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import json
import linecache
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowbook.cache
from flowbook import flow, task
from flowbook.caching.dependencies import code_identity
from flowbook.caching.keys import CacheKeyWarning, KeyParts
from flowbook.caching.misses import MissHistory, MissRecord, StoredEntry, explain
from flowbook.settings import reload_settings
from flowbook.store import close_store, get_store
from flowbook.tasks import task_input_hash

REPO_ROOT = Path(flowbook.cache.__file__).resolve().parent.parent

RUNS: list[Any] = []  # what the bodies of this module's tasks ran with


@pytest.fixture(autouse=True)
def _no_runs() -> Iterator[None]:
    RUNS.clear()
    yield
    RUNS.clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    """A fresh store (SQLite, or a database of the test session's PostgreSQL server)."""
    monkeypatch.setenv("FLOWBOOK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    if request.param == "postgresql":
        monkeypatch.setenv("FLOWBOOK_DATABASE_URL", request.getfixturevalue("postgres_url"))
    reload_settings()
    opened = get_store()
    assert opened is not None
    yield request.param
    close_store()


class Notebook:
    """Cells run as a notebook runs them: one ``__main__`` namespace, source in linecache."""

    _numbers = itertools.count(1)

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__main__"}

    def run(self, source: str) -> None:
        source = textwrap.dedent(source)
        filename = f"<notebook-cell-{next(self._numbers)}>"
        lines = source.splitlines(keepends=True)
        linecache.cache[filename] = (len(source), None, lines, filename)
        exec(compile(source, filename, "exec"), self.namespace)

    def __getitem__(self, name: str) -> Any:
        return self.namespace[name]


# -- closure values ----------------------------------------------------------------------------


def make_multiplier(k: int) -> Any:
    @task(cache_key_fn=task_input_hash)
    def mul(x: int) -> int:
        RUNS.append((k, x))
        return x * k

    return mul


def test_tasks_made_by_one_factory_with_other_values_do_not_share_entries(store: str) -> None:
    @flow
    def products() -> tuple[int, int, int]:
        return make_multiplier(2)(10), make_multiplier(3)(10), make_multiplier(2)(10)

    assert products() == (20, 30, 20)
    assert RUNS == [(2, 10), (3, 10)]  # the third call: a hit of the first's entry
    assert make_multiplier(3)(10) == 30
    assert RUNS == [(2, 10), (3, 10)]
    assert make_multiplier(4)(10) == 40
    assert RUNS[-1] == (4, 10)
    why = flowbook.cache.why_missed(make_multiplier(4))
    assert why.cause == "changed"
    assert why.changed_closure == ["k"]
    assert why.reason.startswith("the closure value 'k' of the task changed (compared with")


def test_a_closure_value_without_stable_content_runs_uncached_with_a_warning() -> None:
    lock = threading.Lock()

    @task(cache_key_fn=task_input_hash)
    def guarded(x: int) -> int:
        with lock:
            RUNS.append(x)
        return x

    with pytest.warns(CacheKeyWarning) as first:
        assert guarded(1) == 1
    with pytest.warns(CacheKeyWarning):
        assert guarded(1) == 1
    assert RUNS == [1, 1]
    assert str(first[0].message) == (
        "task 'guarded': closure variable 'lock' of the task holds a value that cannot be "
        "hashed by content (cannot hash value of type '_thread.lock': locks have no stable "
        "content); its calls run without the cache. Give the task a cache_key_fn that keys "
        "on something stable, or make the value plain data"
    )


# -- helpers across notebook cells ---------------------------------------------------------------

SETUP = """
from flowbook import flow, task
from flowbook.tasks import task_input_hash
RUNS = []
"""

HELPERS = """
def normalise(text):
    return text.strip().lower()

def shout(text):
    return text.upper()

def exclaim(text):
    return normalise(text) + "!"
"""

TASKS = """
@task(cache_key_fn=task_input_hash)
def clean(text):
    RUNS.append("clean")
    return normalise(text)

@task(cache_key_fn=task_input_hash)
def loud(text):
    RUNS.append("loud")
    return shout(text)

@task(cache_key_fn=task_input_hash)
def excited(text):
    RUNS.append("excited")
    return exclaim(text)

@flow
def words(text):
    return clean(text), loud(text), excited(text)
"""


def test_editing_a_helper_in_another_cell_invalidates_exactly_its_callers(store: str) -> None:
    nb = Notebook()
    nb.run(SETUP)
    nb.run(HELPERS)
    nb.run(TASKS)
    assert nb["words"](" Hi ") == ("hi", " HI ", "hi!")
    assert nb["words"](" Hi ") == ("hi", " HI ", "hi!")
    assert nb["RUNS"] == ["clean", "loud", "excited"]

    # Only the helpers' cell is run again, with normalise edited: the tasks' cell is not.
    nb["RUNS"].clear()
    edited = HELPERS.replace("text.strip().lower()", "text.strip().lower().replace('i', 'y')")
    nb.run(edited)
    assert nb["words"](" Hi ") == ("hy", " HI ", "hy!")
    assert nb["RUNS"] == ["clean", "excited"]  # loud calls shout only: a hit
    why = flowbook.cache.why_missed(nb["clean"])
    assert why.changed_helpers == ["normalise"]
    assert why.reason.startswith("the source of helper 'normalise' changed (compared with")
    assert not why.source_changed
    # excited reaches normalise through exclaim
    assert flowbook.cache.why_missed(nb["excited"]).changed_helpers == ["normalise"]

    # Comments, blank lines and moving the cell around change nothing.
    nb["RUNS"].clear()
    nb.run(
        "\n\n# helpers, reworded\n"
        + edited.replace("return text.upper()", "return text.upper()  # !")
    )
    assert nb["words"](" Hi ") == ("hy", " HI ", "hy!")
    assert nb["RUNS"] == []


def test_the_task_now_calls_another_helper(store: str) -> None:
    nb = Notebook()
    nb.run(SETUP)
    nb.run(HELPERS)
    nb.run(TASKS)
    nb["words"]("a")
    nb.run(TASKS.replace("return normalise(text)", "return shout(normalise(text))"))
    assert nb["words"]("a") == ("A", "A", "a!")
    why = flowbook.cache.why_missed(nb["clean"])
    assert why.source_changed
    assert why.added_helpers == ["shout"]
    assert why.reason.startswith("the task's source changed; the task now calls helper 'shout'")


def test_helpers_are_found_transitively_and_mutual_recursion_ends() -> None:
    nb = Notebook()
    nb.run(
        """
        def is_even(n):
            return True if n == 0 else is_odd(n - 1)

        def is_odd(n):
            return False if n == 0 else is_even(n - 1)

        def parity(n):
            return "even" if is_even(n) else "odd"

        def unused(n):
            return n

        def task_body(n):
            return parity(n)
        """
    )
    identity = code_identity(nb["task_body"])
    assert [name for name, _ in identity.helpers] == ["is_even", "is_odd", "parity"]
    before = dict(identity.helpers)
    nb.run("def is_odd(n):\n    return not is_even(n)\n")
    after = dict(code_identity(nb["task_body"]).helpers)
    assert after["is_odd"] != before["is_odd"]
    assert after["is_even"] == before["is_even"]
    assert after["parity"] == before["parity"]


def test_methods_of_the_users_classes_and_other_callables_are_helpers() -> None:
    nb = Notebook()
    nb.run(
        """
        import functools, json
        from flowbook import task

        class Base:
            def run(self, x):
                return x + 1

        class Scaler(Base):
            factor = 2

            def run(self, x):
                return super().run(x) * self.factor

            @staticmethod
            def tidy(x):
                return round(x, 2)

        @functools.lru_cache
        def memoised(x):
            return x * 10

        def announce(fn):
            @functools.wraps(fn)
            def wrapper(*args):
                return fn(*args)
            return wrapper

        @announce
        def decorated(x):
            return x - 1

        @task
        def inner(x):
            return x

        def body(x):
            s = Scaler()
            return s.tidy(s.run(x)) + memoised(x) + decorated(x) + inner(x) + len(json.dumps(x))
        """
    )
    names = [name for name, _ in code_identity(nb["body"]).helpers]
    assert names == [
        "Base.run",
        "Scaler.run",
        "Scaler.tidy",
        "announce.<locals>.wrapper",
        "decorated",
        "inner",
        "memoised",
    ]
    before = dict(code_identity(nb["body"]).helpers)
    nb.run(
        """
        def announce(fn):
            @functools.wraps(fn)
            def wrapper(*args):
                print("calling")
                return fn(*args)
            return wrapper

        @announce
        def decorated(x):
            return x - 1
        """
    )
    after = dict(code_identity(nb["body"]).helpers)
    assert after["announce.<locals>.wrapper"] != before["announce.<locals>.wrapper"]
    assert after["decorated"] == before["decorated"]


def test_library_code_and_global_data_are_not_part_of_the_key() -> None:
    nb = Notebook()
    nb.run(
        """
        import json, os.path
        import pytest
        LIMIT = {"n": 3}

        def body(x):
            return json.dumps(x)[: LIMIT["n"]] + os.path.join("a", "b") + str(pytest.approx(1))
        """
    )
    identity = code_identity(nb["body"])
    assert identity.helpers == ()
    assert identity.digest is None  # the key is the one flowbook made before helpers counted
    nb.run('LIMIT = {"n": 4}')
    assert code_identity(nb["body"]).digest is None


def test_the_identity_is_found_once_and_checked_by_identity_after() -> None:
    nb = Notebook()
    nb.run(
        """
        def helper(x):
            return x + 1

        def other(x):
            return x + 2

        def body(x):
            return helper(x) * len([x])
        """
    )
    body = nb["body"]
    first = code_identity(body)
    assert code_identity(body) is first  # memoised: nothing found again
    # %autoreload replaces __code__ in place, keeping the function object
    nb["helper"].__code__ = nb["other"].__code__
    replaced = code_identity(body)
    assert replaced is not first
    assert dict(replaced.helpers)["helper"] != dict(first.helpers)["helper"]
    # a global that now shadows a builtin the body used
    nb.run("def len(x):\n    return 0\n")
    shadowed = code_identity(body)
    assert [name for name, _ in shadowed.helpers] == ["helper", "len"]
    assert code_identity(body) is shadowed


# -- the user's modules ------------------------------------------------------------------------


@pytest.fixture
def user_package(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "src"
    package = root / "fb_userpkg_codeid"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "ops.py").write_text("def scale(x):\n    return x * 2\n")
    (package / "late.py").write_text("def triple(x):\n    return x * 3\n")
    sys.path.insert(0, str(root))
    yield package
    sys.path.remove(str(root))
    for name in [n for n in sys.modules if n.startswith("fb_userpkg_codeid")]:
        del sys.modules[name]


def test_a_helper_in_the_users_module_is_followed_through_a_reload(
    store: str, user_package: Path
) -> None:
    ops = importlib.import_module("fb_userpkg_codeid.ops")

    @task(cache_key_fn=task_input_hash)
    def scaled(x: int) -> int:
        RUNS.append(x)
        return ops.scale(x)

    assert scaled(5) == 10
    assert scaled(5) == 10
    assert RUNS == [5]
    assert [name for name, _ in code_identity(scaled.fn).helpers] == ["fb_userpkg_codeid.ops.scale"]
    (user_package / "ops.py").write_text("def scale(x):\n    return x * 20\n")
    importlib.reload(ops)
    assert scaled(5) == 100
    assert RUNS == [5, 5]
    why = flowbook.cache.why_missed(scaled)
    assert why.changed_helpers == ["fb_userpkg_codeid.ops.scale"]


def test_a_module_the_body_imports_is_keyed_before_and_after_its_import(
    user_package: Path,
) -> None:
    def tripled(x: int) -> int:
        from fb_userpkg_codeid import late

        return late.triple(x)

    assert "fb_userpkg_codeid.late" not in sys.modules
    before = code_identity(tripled)
    assert [name for name, _ in before.helpers] == [
        "module fb_userpkg_codeid",
        "module fb_userpkg_codeid.late",
    ]
    assert tripled(2) == 6  # imports it
    after = code_identity(tripled)
    assert after is not before
    assert [name for name, _ in after.helpers] == ["fb_userpkg_codeid.late.triple"]


# -- a real kernel, and a kernel restart ------------------------------------------------------

KERNEL_SETUP = """
from flowbook import flow, task
from flowbook.tasks import task_input_hash
RUNS = []
"""
KERNEL_HELPER = "def normalise(text):\n    return text.strip().{how}()\n"
KERNEL_TASK = """
@task(cache_key_fn=task_input_hash)
def clean(text):
    RUNS.append(text)
    return normalise(text)

@flow
def tidy(text):
    return clean(text)
"""


class Kernel:
    """A Jupyter kernel of this virtual environment, one cell at a time."""

    def __init__(self, env: dict[str, str]) -> None:
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str) -> str:
        """Run a cell; its stdout. Fails the test with the cell's error, if any."""
        out: list[str] = []
        errors: list[str] = []

        def hook(message: dict[str, Any]) -> None:
            content = message["content"]
            if message["msg_type"] == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif message["msg_type"] == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")

        self.client.execute_interactive(code, output_hook=hook, timeout=60)
        assert not errors, errors
        return "".join(out)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.mark.slow
def test_helpers_edited_in_a_kernel_across_cells_and_a_restart(
    venv_kernel_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **venv_kernel_env,
        "FLOWBOOK_HOME": str(tmp_path / "home"),
        "FLOWBOOK_CONSOLE": "off",
        "JPY_SESSION_NAME": str(tmp_path / "analysis.ipynb"),
    }
    env.pop("FLOWBOOK_DATABASE_URL", None)
    report = "print(tidy(' Hi '), RUNS)"
    first = Kernel(env)
    try:
        first.run(KERNEL_SETUP)
        first.run(KERNEL_HELPER.format(how="lower"))
        first.run(KERNEL_TASK)
        assert first.run(report) == "hi [' Hi ']\n"
        assert first.run(report) == "hi [' Hi ']\n"  # a hit
        first.run(KERNEL_HELPER.format(how="upper"))  # the helper's cell only
        assert first.run(report) == "HI [' Hi ', ' Hi ']\n"
    finally:
        first.close()

    second = Kernel(env)  # a restart: a new process, the same store
    try:
        second.run(KERNEL_SETUP)
        second.run(KERNEL_TASK)
        second.run(KERNEL_HELPER.format(how="lower"))  # cells run in another order
        assert second.run(report) == "hi []\n"  # the entry the first kernel stored
        second.run(KERNEL_HELPER.format(how="title"))
        assert second.run(report) == "Hi [' Hi ']\n"
        why = second.run("import flowbook.cache\nprint(flowbook.cache.why_missed(clean).reason)")
        assert why.startswith("the source of helper 'normalise' changed")
    finally:
        second.close()


# -- what keys are made of, as stored ---------------------------------------------------------


def test_key_parts_keep_helpers_and_closure_in_json() -> None:
    parts = KeyParts("k", "s", (("x", "1"),), (("normalise", "h1"),), (("k", "c1"),))
    assert KeyParts.from_json("k", parts.to_json()) == parts
    assert json.loads(parts.to_json()) == {
        "source": "s",
        "inputs": {"x": "1"},
        "helpers": {"normalise": "h1"},
        "closure": {"k": "c1"},
    }
    older = KeyParts.from_json("k", '{"source": "s", "inputs": {"x": "1"}}')
    assert older == KeyParts("k", "s", (("x", "1"),), None, None)


def _miss(parts: KeyParts) -> MissRecord:
    return MissRecord("t", parts.key, "t", None, 100.0, None, None, parts)


def test_the_explanation_names_helpers_and_closure_values() -> None:
    old = KeyParts("old", "s", (("x", "1"),), (("a", "1"), ("b", "1"), ("c", "1")), (("k", "1"),))
    new = KeyParts("new", "s", (("x", "1"),), (("a", "2"), ("b", "1"), ("d", "1")), (("k", "2"),))
    why = explain(_miss(new), [StoredEntry("old", 50.0, old)], MissHistory(stored_before=1))
    assert why.cause == "changed"
    assert (why.changed_helpers, why.added_helpers, why.removed_helpers) == (["a"], ["d"], ["c"])
    assert why.changed_closure == ["k"]
    assert why.reason == (
        "the source of helper 'a' changed; the task now calls helper 'd'; the task no longer "
        "calls helper 'c'; the closure value 'k' of the task changed (compared with the entry "
        "stored at 1970-01-01 00:00:50 UTC)"
    )
    # An entry stored before helpers were recorded: only the key is known to differ.
    older = KeyParts("older", "s", (("x", "1"),))
    why = explain(_miss(new), [StoredEntry("older", 50.0, older)], MissHistory(stored_before=1))
    assert why.cause == "unknown"
    assert "its key was made differently (by another version of flowbook)" in why.reason


# -- cost -------------------------------------------------------------------------------------


def test_a_chain_of_helpers_is_found_once_not_per_call() -> None:
    nb = Notebook()
    chain = "def h0(x):\n    return x + 1\n" + "".join(
        f"def h{i}(x):\n    return h{i - 1}(x) * 2\n" for i in range(1, 10)
    )
    nb.run(chain + "def body(x):\n    return h9(x)\n")
    started = time.perf_counter()
    identity = code_identity(nb["body"])
    found_in = time.perf_counter() - started
    assert len(identity.helpers) == 10
    started = time.perf_counter()
    for _ in range(1000):
        assert code_identity(nb["body"]) is identity
    per_call = (time.perf_counter() - started) / 1000
    assert per_call < found_in / 10  # checking is far cheaper than finding


def test_hashes_are_the_same_in_another_process(tmp_path: Path) -> None:
    script = tmp_path / "helpers.py"
    script.write_text(
        "def normalise(t):\n    return t.lower()\n\n"
        "def make(k):\n    def body(t):\n        return normalise(t) * k\n    return body\n\n"
        "from flowbook.caching.dependencies import code_identity\n"
        "i = code_identity(make(3))\n"
        "print(i.source, i.digest, i.helpers, i.closure)\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert "normalise" in outputs.pop()


def test_no_warning_for_a_plain_task() -> None:
    @task(cache_key_fn=task_input_hash)
    def plain(x: int) -> int:
        RUNS.append(x)
        return x

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plain(1) == 1
        assert plain(1) == 1
    assert RUNS == [1]


def test_the_memo_does_not_keep_a_task_function_alive() -> None:
    def make(k: int) -> Any:
        @task(cache_key_fn=task_input_hash)
        def countdown(x: int) -> int:
            return countdown(x - 1) if x else k  # the task refers to itself

        return countdown

    made = make(1)
    identity = code_identity(made.fn)
    assert code_identity(made.fn) is identity
    gone = weakref.ref(made.fn)
    del made
    gc.collect()
    assert gone() is None
