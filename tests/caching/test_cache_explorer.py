"""The cache explorer: the widget's model against a real store, its front-end files, its
display fallbacks, and ``flowbook cache why`` on the command line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import flowbook.cache
from flowbook import flow, task
from flowbook.settings import reload_settings
from flowbook.store import close_store
from flowbook.tasks import task_input_hash

pytest.importorskip("anywidget")

from flowbook.jupyter.widgets.cache_view import CacheExplorer

STATIC = Path(flowbook.cache.__file__).parent / "jupyter" / "widgets" / "static"


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    monkeypatch.setenv("FLOWBOOK_HOME", str(home))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "off")
    reload_settings()
    yield home
    close_store()


def entry_keys(home: Path) -> set[tuple[str, str]]:
    engine = sa.create_engine(f"sqlite:///{home / 'flowbook.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT task_key, key FROM cache_entries")).all()
    finally:
        engine.dispose()
    return {(r[0], r[1]) for r in rows}


@task(cache_key_fn=task_input_hash)
def label(text: str, n: int = 1) -> str:
    return text * n


@task(cache_key_fn=task_input_hash)
def measure(values: list[int]) -> int:
    return len(values)


@flow
def report(text: str, n: int = 1) -> int:
    return len(label(text, n)) + measure([1, 2, 3])


def test_the_widget_lists_entries_and_misses(home: Path) -> None:
    report("a")
    report("b")
    explorer = flowbook.cache.explorer()
    assert isinstance(explorer, CacheExplorer)

    assert [(e["task_name"], e["flow_name"], e["input_preview"]) for e in explorer.entries] == [
        ("label", "report", '{"text": "\'b\'", "n": "1"}'),
        ("measure", "report", '{"values": "[1, 2, 3]"}'),
        ("label", "report", '{"text": "\'a\'", "n": "1"}'),
    ]
    first = explorer.entries[0]
    assert set(first) == {
        "key",
        "task_name",
        "flow_name",
        "created",
        "expires",
        "expired",
        "size",
        "hits",
        "input_preview",
        "task_key",
        "source_hash",
    }
    assert first["task_key"] == label.task_key
    assert first["size"] > 0
    assert [e["hits"] for e in explorer.entries] == [0, 1, 0]
    json.dumps(explorer.entries)  # what is synced must be JSON

    by_task = {m["task_name"]: m for m in explorer.misses}
    assert by_task["label"]["cause"] == "changed"
    assert by_task["label"]["changed_inputs"] == ["text"]
    assert by_task["label"]["reason"].startswith("input 'text' changed (text was 'a', now 'b';")
    assert by_task["measure"]["cause"] == "first_call"
    assert by_task["measure"]["hits_since"] == 1
    assert explorer.status == "3 entries of 2 tasks; 2 misses explained."
    assert explorer.filter == ""
    assert CacheExplorer(filter="label").filter == "label"


def test_invalidate_and_refresh_messages_from_the_front_end(home: Path) -> None:
    report("a")
    report("b")
    explorer = CacheExplorer()
    doomed = [[e["task_key"], e["key"]] for e in explorer.entries if e["task_name"] == "label"]
    assert len(doomed) == 2

    explorer._handle_custom_msg({"type": "invalidate", "keys": doomed}, [])
    assert entry_keys(home) == {(measure.task_key, explorer.entries[0]["key"])}
    assert [e["task_name"] for e in explorer.entries] == ["measure"]
    assert explorer.status == "Invalidated 2 entries. 1 entry of 1 task; 2 misses explained."

    # the next call of an invalidated entry misses, and says why
    report("a")
    explorer._handle_custom_msg({"type": "refresh"}, [])
    assert [e["task_name"] for e in explorer.entries] == ["label", "measure"]
    (miss,) = [m for m in explorer.misses if m["task_name"] == "label"]
    assert miss["cause"] == "removed"

    # nonsense from the front end changes nothing and says so
    before = entry_keys(home)
    explorer._handle_custom_msg({"type": "invalidate", "keys": [["only-one"]]}, [])
    assert explorer.status.startswith(
        "Cannot invalidate: the front end sent keys that are not [task_key, key] pairs: "
    )
    explorer._handle_custom_msg({"type": "invalidate", "keys": "all"}, [])
    explorer._handle_custom_msg("invalidate", [])
    explorer._handle_custom_msg({"type": "unknown"}, [])
    assert entry_keys(home) == before


def test_display_fallbacks_are_stable_and_escaped(home: Path) -> None:
    report("<script>alert(1)</script>")
    explorer = CacheExplorer()
    data, _metadata = explorer._repr_mimebundle_()
    assert data["text/plain"] == "CacheExplorer(entries=2)"
    assert repr(explorer) == "CacheExplorer(entries=2)"
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.model_id
    page = data["text/html"]
    assert page.startswith('<div class="fb-cache">')
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<th>Hits</th>" in page
    assert "2 entries of 2 tasks; 2 misses explained." in page
    assert "no entry was ever stored for this task before this call" in page


def test_without_a_store_the_widget_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWBOOK_STORE", "off")
    reload_settings()
    explorer = CacheExplorer()
    assert (explorer.entries, explorer.misses) == ([], [])
    assert "FLOWBOOK_STORE=off" in explorer.status
    assert "No cache entries." in explorer._repr_mimebundle_()[0]["text/html"]


def test_import_flowbook_loads_no_widget_library() -> None:
    code = (
        "import sys, flowbook, flowbook.cache\n"
        "print(sorted(m for m in ('anywidget', 'ipywidgets', 'traitlets') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "[]\n"


def test_front_end_files() -> None:
    script = STATIC / "cache_view.js"
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    # anywidget loads the file as an ES module: check it as one
    module = Path(os.environ.get("TMPDIR", "/tmp")) / f"cache_view_{os.getpid()}.mjs"
    module.write_text(script.read_text())
    try:
        done = subprocess.run([node, "--check", str(module)], capture_output=True, text=True)
    finally:
        module.unlink()
    assert done.returncode == 0, done.stderr
    source = script.read_text()
    assert "export default { render }" in source
    assert not re.search(r"^\s*import\s", source, re.MULTILINE)  # no npm imports
    for name in ("fb-cache", "fb-cache-filter", "fb-cache-row", "fb-cache-select"):
        assert f'"{name}"' in source
    for name in ("fb-cache-invalidate", "fb-cache-miss"):
        assert f'"{name}"' in source

    # every CSS rule is scoped under .fb-cache, and theme variables have fallbacks
    css = re.sub(r"/\*.*?\*/", "", (STATIC / "cache_view.css").read_text(), flags=re.DOTALL)
    for selectors in re.findall(r"([^{}]+)\{", css):
        for selector in selectors.split(","):
            assert selector.strip().startswith(".fb-cache"), selector
    assert re.findall(r"var\(--jp-[a-z0-9-]+\)", css) == []


def test_command_line_why(home: Path, tmp_path: Path) -> None:
    report("a")
    report("b")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOOK_")}
    env.update({"FLOWBOOK_HOME": str(home), "FLOWBOOK_CONSOLE": "off"})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowbook.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = cli("cache", "why", "label")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("label: input 'text' changed (text was 'a', now 'b';")
    assert lines[1].startswith("  missed at:  ")
    assert lines[1].endswith("(task run 'label-0') in flow 'report'")
    assert f"  task key:   {label.task_key}" in lines

    done = cli("cache", "why", measure.task_key, "--json")
    assert done.returncode == 0, done.stderr
    why = json.loads(done.stdout)
    assert (why["task_name"], why["cause"], why["hits_since"]) == ("measure", "first_call", 1)

    done = cli("cache", "why", "nope")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("flowbook: no cache miss of task 'nope' is recorded")


# -- the front end in a real browser, with a stand-in for the widget model -------------------------

FAKE_MODEL = """
class FakeModel {
  constructor(state) { this.state = state; this.handlers = {}; this.sent = []; }
  get(name) { return this.state[name]; }
  set(name, value) {
    this.state[name] = value;
    for (const f of this.handlers["change:" + name] || []) f();
  }
  save_changes() {}
  on(event, f) { (this.handlers[event] ||= []).push(f); }
  off(event, f) { this.handlers[event] = (this.handlers[event] || []).filter((g) => g !== f); }
  send(message) { this.sent.push(message); }
}
"""


@pytest.mark.slow
def test_front_end_draws_filters_and_sends_invalidations(home: Path) -> None:
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("no /usr/bin/chromium (scripts/install-test-services installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")

    report("a")
    report("b")
    explorer = CacheExplorer()
    state = {name: getattr(explorer, name) for name in ("entries", "misses", "status", "filter")}
    page_html = f"""<!DOCTYPE html><html><head><style>{(STATIC / "cache_view.css").read_text()}
    </style></head><body><div id="out"></div><script type="module">
    const source = {json.dumps((STATIC / "cache_view.js").read_text())};
    const url = URL.createObjectURL(new Blob([source], {{type: "text/javascript"}}));
    const widget = (await import(url)).default;
    {FAKE_MODEL}
    window.model = new FakeModel({json.dumps(state)});
    widget.render({{ model: window.model, el: document.getElementById("out") }});
    window.ready = true;
    </script></body></html>"""

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.set_content(page_html)
            page.wait_for_function("window.ready === true")

            root = page.locator("div.fb-cache")
            rows = root.locator("tr.fb-cache-row")
            assert rows.count() == 3
            assert root.locator("tbody.fb-cache-flow").count() == 1
            assert root.locator("tbody.fb-cache-flow").get_attribute("data-flow") == "report"
            label_rows = root.locator('tr.fb-cache-row[data-task="label"]')
            assert label_rows.count() == 2
            first = explorer.entries[0]
            assert label_rows.first.get_attribute("data-key") == first["key"]
            assert label_rows.first.get_attribute("data-task-key") == label.task_key
            assert '{"text": "\'b\'", "n": "1"}' in label_rows.first.inner_text()
            assert root.locator(".fb-cache-status").inner_text() == explorer.status

            invalidate = root.locator("button.fb-cache-invalidate")
            assert invalidate.is_disabled()
            label_rows.first.locator("input.fb-cache-select").check()
            assert invalidate.inner_text() == "Invalidate selected (1)"
            invalidate.click()
            assert page.evaluate("window.model.sent") == [
                {"type": "invalidate", "keys": [[label.task_key, first["key"]]]}
            ]

            root.locator("input.fb-cache-filter").fill("measure")
            assert rows.count() == 1
            assert rows.first.get_attribute("data-task") == "measure"
            assert page.evaluate("window.model.state.filter") == "measure"
            assert root.locator(".fb-cache-miss").count() == 1
            assert root.locator(".fb-cache-miss").get_attribute("data-cause") == "first_call"
            root.locator("input.fb-cache-filter").fill("")

            miss = root.locator('.fb-cache-miss[data-task="label"]')
            assert miss.get_attribute("data-cause") == "changed"
            assert (
                miss.locator(".fb-cache-reason")
                .inner_text()
                .startswith("input 'text' changed (text was 'a', now 'b';")
            )

            # what the kernel sends after invalidating: the entry is gone, and so is its mark
            page.evaluate("window.model.set('entries', window.model.state.entries.slice(1))")
            assert rows.count() == 2
            assert invalidate.is_disabled()
            root.locator("button.fb-cache-refresh").click()
            assert page.evaluate("window.model.sent[1]") == {"type": "refresh"}
            assert errors == []
        finally:
            browser.close()
