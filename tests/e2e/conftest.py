"""Browser end-to-end fixtures: a real JupyterLab 4 and a real Notebook 7 server of this venv,
and Debian's Chromium driven by Playwright (sync API, own fixtures: no pytest-playwright).

- ``jupyter_server`` (session, parametrized ``lab`` / ``notebook``): one server per app for the
  whole session, on a free port of 127.0.0.1 with a token, fresh settings, workspaces, config
  and runtime dirs, no news or update checks, notebook windowing off, kernels of this venv
  (a ``python3`` kernelspec first on ``JUPYTER_PATH``), ``FLOWBOOK_HOME`` in a temporary dir.
  Tests write their notebooks into ``jupyter_server.root``.
- ``browser`` (session) and ``page`` (per test, 1280x1400, console errors collected in
  ``console_errors``); a failed test leaves a viewport screenshot.
- Before and after each test every kernel session is deleted over REST: a re-opened notebook
  would otherwise re-attach to the old kernel and its old widgets.
- Screenshots go to ``tests/e2e/artifacts/`` (or ``$FLOWBOOK_E2E_ARTIFACTS``).

Without /usr/bin/chromium (``scripts/install-test-services`` installs it) the tests fail under
``CI=true`` and are skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
APPS = ("lab", "notebook")
INSTALL_HINT = "run scripts/install-test-services (as root) to install Debian's chromium"
SERVER_START_TIMEOUT_S = 90.0
VIEWPORT = {"width": 1280, "height": 1400}

# Jupyter settings written into each server's fresh settings dir.
SETTINGS = {
    # no "fetch news?" toast and no update check that could cover the notebook
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # every cell stays in the DOM (the default only renders cells near the viewport)
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

# Errors the app itself raises on a plain page load, with no extension of ours involved: left
# out of ``console_errors`` (and reported in the test's output), per app.
KNOWN_APP_ERRORS = {
    # Notebook 7.6.5: the settings registry drops "@jupyterlab/docmanager-extension:plugin"
    # on a forced reload and then announces the change; the shortcuts plugin's handler reads
    # that plugin's schema and throws. Seen on every notebook page load, also with a bare
    # `jupyter notebook` and no third-party labextension enabled.
    "notebook": ("pageerror: Cannot read properties of undefined (reading 'schema')",),
}

TIMINGS: list[tuple[str, float]] = []
_REPORT_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(message: str) -> None:
    """End the test: a failure under CI, a skip elsewhere."""
    if running_in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def artifacts_dir() -> Path:
    configured = os.environ.get("FLOWBOOK_E2E_ARTIFACTS")
    return Path(configured) if configured else Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"Chromium not found at {CHROMIUM}: {INSTALL_HINT}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        _unavailable(f"the playwright package is missing ({exc}): pip install -e '.[dev]'")
    return CHROMIUM


# --- the Jupyter servers ---------------------------------------------------------------------


@dataclass
class JupyterServer:
    app: str  # "lab" or "notebook"
    base_url: str
    token: str
    root: Path  # the server's root dir: tests write their notebooks here
    log: Path
    process: subprocess.Popen[bytes]

    def request(self, method: str, path: str) -> Any:
        req = urllib.request.Request(
            f"{self.base_url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def delete_sessions(self) -> None:
        for session in self.request("GET", "/api/sessions"):
            self.request("DELETE", f"/api/sessions/{session['id']}")

    def write_notebook(self, name: str, nb: Any) -> str:
        """Write ``nb`` (an nbformat notebook) into the server root; return its path there."""
        import nbformat

        nbformat.write(nb, self.root / name)
        return name

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_env(home: Path, kernel_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWBOOK_", "JUPYTER"))}
    env.update(kernel_env)
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        {
            # jupyter shells out to its subcommands by name
            "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
            "FLOWBOOK_HOME": str(home / "flowbook-home"),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _start_server(app: str, home: Path, kernel_env: dict[str, str]) -> JupyterServer:
    root = home / "notebooks"
    settings = home / "settings"
    workspaces = home / "workspaces"
    for d in (root, workspaces, home / "config", home / "data", home / "runtime"):
        d.mkdir(parents=True)
    for plugin, values in SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))

    port = _free_port()
    token = secrets.token_hex(16)
    module = {"lab": "jupyterlab", "notebook": "notebook"}[app]
    cmd = [
        sys.executable,
        "-m",
        module,
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--allow-root",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        # a server whose test session died stops by itself after 10 idle minutes
        "--ServerApp.shutdown_no_activity_timeout=600",
        "--expose-app-in-browser",
        f"--LabServerApp.user_settings_dir={settings}",
        f"--LabServerApp.workspaces_dir={workspaces}",
        # only the kernelspec of JUPYTER_PATH (this venv's python), whatever else is installed
        "--KernelSpecManager.ensure_native_kernel=False",
    ]
    if app == "lab":
        cmd += [
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
    log = home / "server.log"
    t0 = time.monotonic()
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_server_env(home, kernel_env),
            cwd=root,
            start_new_session=True,  # its kernels share its process group: killed together
        )
    server = JupyterServer(app, f"http://127.0.0.1:{port}", token, root, log, process)
    deadline = t0 + SERVER_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"jupyter {app} exited with {process.returncode} before answering:\n"
                + server.log_tail()
            )
        try:
            server.request("GET", "/api/status")
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            _stop_server(server)
            raise RuntimeError(
                f"jupyter {app} did not answer /api/status within {SERVER_START_TIMEOUT_S} s:\n"
                + server.log_tail()
            )
        time.sleep(0.1)
    TIMINGS.append((f"{app} server ready (/api/status)", time.monotonic() - t0))
    return server


def _stop_server(server: JupyterServer) -> None:
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # anything left of its process group
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture(scope="session", params=APPS)
def jupyter_server(
    request: pytest.FixtureRequest,
    chromium_executable: Path,
    venv_kernel_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[JupyterServer]:
    app: str = request.param
    server = _start_server(app, tmp_path_factory.mktemp(f"jupyter-{app}"), venv_kernel_env)
    try:
        yield server
    finally:
        _stop_server(server)


@pytest.fixture(autouse=True)
def _fresh_sessions(jupyter_server: JupyterServer) -> Iterator[None]:
    jupyter_server.delete_sessions()
    yield
    jupyter_server.delete_sessions()  # also stops background runs still going in the kernel


# --- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser(chromium_executable: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    playwright = sync_playwright().start()
    try:
        # Playwright adds --headless and a fresh temporary --user-data-dir itself.
        browser = playwright.chromium.launch(
            executable_path=str(chromium_executable), headless=True, args=CHROMIUM_FLAGS
        )
        TIMINGS.append(("Chromium launched", time.monotonic() - t0))
        yield browser
        browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def console_errors() -> list[str]:
    """The page's console errors and uncaught exceptions during the test."""
    return []


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Any:
    from jupyter_ui import Artifacts

    return Artifacts(artifacts_dir(), request.node.name)


@pytest.fixture
def page(
    browser: Any,
    jupyter_server: JupyterServer,
    console_errors: list[str],
    artifacts: Any,
    request: pytest.FixtureRequest,
) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    known = KNOWN_APP_ERRORS.get(jupyter_server.app, ())

    def record(error: str) -> None:
        if error in known:
            print(f"known {jupyter_server.app} error, not counted: {error}")
        else:
            console_errors.append(error)

    def on_console(message: Any) -> None:
        if message.type == "error":
            where = message.location or {}
            record(f"console.error: {message.text} ({where.get('url')}:{where.get('lineNumber')})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: record(f"pageerror: {exc}"))
    try:
        yield page
    finally:
        reports = request.node.stash.get(_REPORT_KEY, {})
        if "call" in reports and reports["call"].failed:
            try:
                artifacts.viewport(page, "FAILED")
            except Exception as exc:  # the page may be gone; the test's own error matters
                print(f"no failure screenshot: {exc}")
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(_REPORT_KEY, {})[report.when] = report
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("e2e timings")
        for label, seconds in TIMINGS:
            terminalreporter.write_line(f"{seconds:7.1f} s  {label}")
        terminalreporter.write_line(f"screenshots: {artifacts_dir()}")
