"""Shared fixtures: a clean flowbook state per test, and an event recorder."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowbook.caching.backend import get_cache_backend
from flowbook.engine.events import (
    FlowRunCreated,
    FlowRunFinished,
    LogEmitted,
    StateChanged,
    TaskRunCreated,
    bus,
)
from flowbook.settings import reload_settings

ALL_EVENTS = (FlowRunCreated, FlowRunFinished, LogEmitted, StateChanged, TaskRunCreated)


@pytest.fixture(scope="session")
def flowbook_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store of the test session (tests that need their own set FLOWBOOK_HOME)."""
    return tmp_path_factory.mktemp("flowbook-home")


@pytest.fixture(autouse=True)
def _clean_flowbook(monkeypatch: pytest.MonkeyPatch, flowbook_home: Path) -> Iterator[None]:
    for name in (
        "FLOWBOOK_LOGGING_LEVEL",
        "FLOWBOOK_DATABASE_URL",
        "FLOWBOOK_RESULTS_DIR",
        "FLOWBOOK_STORE",
        "FLOWBOOK_STORE_WAIT",
        "FLOWBOOK_LOG_RETENTION_DAYS",
        "FLOWBOOK_LOGGING_LOG_PRINTS",
        "FLOWBOOK_LOGGING_EXTRA_LOGGERS",
        "FLOWBOOK_TASKS_DEFAULT_RETRIES",
        "FLOWBOOK_TASKS_DEFAULT_RETRY_DELAY_SECONDS",
        "FLOWBOOK_TASKS_REFRESH_CACHE",
        "FLOWBOOK_GC_FREEZE",
        "FLOWBOOK_RUN_RETENTION_DAYS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOWBOOK_HOME", str(flowbook_home))
    monkeypatch.setenv("FLOWBOOK_CONSOLE", "on")
    reload_settings()
    get_cache_backend().clear()
    yield
    get_cache_backend().clear()


class Recorder:
    """Every event emitted while the fixture is active, in order."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.events.append(event)

    def states(self, run_name: str) -> list[str]:
        """The names of the states one run (task or flow) went through, in order."""
        return [
            e.state.name
            for e in self.events
            if isinstance(e, StateChanged) and e.run.name == run_name
        ]

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def events() -> Iterator[Recorder]:
    recorder = Recorder()
    bus.subscribe(ALL_EVENTS, recorder)
    yield recorder
    bus.unsubscribe(recorder)


@pytest.fixture(scope="session")
def venv_kernel_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment variables under which Jupyter finds a kernel of *this* interpreter.

    A kernelspec named ``python3`` is installed into a temporary prefix and put first on
    ``JUPYTER_PATH``, so notebooks run by nbclient use this virtual environment, whatever
    kernels the machine has installed elsewhere.
    """
    home = tmp_path_factory.mktemp("jupyter")
    prefix = home / "prefix"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ipykernel",
            "install",
            "--prefix",
            str(prefix),
            "--name",
            "python3",
            "--display-name",
            "flowbook test venv",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    jupyter_path = prefix / "share" / "jupyter"
    spec = (jupyter_path / "kernels" / "python3" / "kernel.json").read_text()
    assert sys.executable in spec
    return {"JUPYTER_PATH": str(jupyter_path), "IPYTHONDIR": str(home / "ipython")}


# --- PostgreSQL: one throwaway cluster per session, one fresh database per test ---------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A running ``postgres_server.PostgresServer``, stopped at the end of the session.

    Without PostgreSQL installed this fails under CI and skips elsewhere; see
    scripts/install-test-services.
    """
    from postgres_server import PostgresServer, require_bin_dir

    server = PostgresServer(require_bin_dir())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg://``) of a new empty database, dropped afterwards."""
    import re
    import uuid

    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t_{stem}_{uuid.uuid4().hex[:8]}"
    url: str = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the browser tests last.

    Playwright's sync API keeps an event loop running on the main thread while its browser
    is open (one per session), and tests that call ``asyncio.run`` must not see it.
    """
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
