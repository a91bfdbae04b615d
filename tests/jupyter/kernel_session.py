"""A real Jupyter kernel driven from a test, recording everything it publishes.

``KernelSession`` starts a kernel of this virtual environment with jupyter_client and reads
its IOPub channel on a thread, so a test can start a cell, run another one meanwhile,
interrupt the kernel, and then look at exactly which message came with which cell (the
``parent_header``), including widget (comm) messages.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import defaultdict
from typing import Any

from jupyter_client.manager import KernelManager

__all__ = ["WIDGET", "KernelSession", "widget_ids", "widget_state"]

WIDGET = "application/vnd.jupyter.widget-view+json"


class KernelSession:
    def __init__(self, env: dict[str, str]) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.by_parent: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.all: list[dict[str, Any]] = []
        self._idle: dict[str, threading.Event] = defaultdict(threading.Event)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                continue
            parent = msg.get("parent_header", {}).get("msg_id", "")
            with self._lock:
                self.by_parent[parent].append(msg)
                self.all.append(msg)
                event = self._idle[parent]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                event.set()

    def start(self, code: str) -> str:
        """Send ``code`` for execution; returns its msg_id at once."""
        msg_id: str = self.kc.execute(code)
        return msg_id

    def wait(self, msg_id: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until the cell ``msg_id`` is done; its IOPub messages."""
        with self._lock:
            event = self._idle[msg_id]
        if not event.wait(timeout):
            raise TimeoutError(f"cell {msg_id} did not finish in {timeout} s")
        return self.messages(msg_id)

    def run(self, code: str, timeout: float = 60) -> list[dict[str, Any]]:
        return self.wait(self.start(code), timeout)

    def messages(self, msg_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.by_parent[msg_id])

    @staticmethod
    def stdout(messages: list[dict[str, Any]], name: str = "stdout") -> str:
        return "".join(
            m["content"]["text"]
            for m in messages
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )

    @staticmethod
    def error(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
        for m in messages:
            if m["msg_type"] == "error":
                return dict(m["content"])
        return None

    def value(self, code: str, timeout: float = 60) -> Any:
        """Evaluate an expression in the kernel; its ``repr`` parsed back with ``eval``."""
        msgs = self.run(f"print(repr({code}))", timeout)
        err = self.error(msgs)
        if err is not None:
            raise AssertionError(f"{code!r} raised in the kernel: {err['ename']}: {err['evalue']}")
        return eval(self.stdout(msgs))  # the kernel is this test's own venv

    def comm_messages(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.all[since:] if m["msg_type"].startswith("comm_")]

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def close(self) -> None:
        self._stop.set()
        self._reader.join(2)
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def widget_ids(messages: list[dict[str, Any]]) -> list[str]:
    """The model ids of the widgets a cell displayed."""
    return [
        m["content"]["data"][WIDGET]["model_id"]
        for m in messages
        if m["msg_type"] == "display_data" and WIDGET in m["content"]["data"]
    ]


def widget_state(kernel: KernelSession, model_id: str) -> dict[str, Any]:
    """The widget's state as the front end has it: the opening state plus every update."""
    state: dict[str, Any] = {}
    for m in kernel.comm_messages():
        content = m["content"]
        if content.get("comm_id") != model_id:
            continue
        data = content.get("data", {})
        if m["msg_type"] == "comm_open" or data.get("method") == "update":
            state.update(data.get("state", {}))
    return state


def widget_timeline(state: dict[str, Any]) -> dict[str, Any]:
    """The timeline in a run widget's state (sent as JSON text)."""
    timeline: dict[str, Any] = json.loads(state["timeline_json"])
    return timeline
