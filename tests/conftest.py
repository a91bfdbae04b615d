"""Shared fixtures: a clean flowbook state per test, and an event recorder."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def _clean_flowbook(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("FLOWBOOK_LOGGING_LEVEL", raising=False)
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
