"""A real ``jupyter server`` of this venv in a subprocess, and plain HTTP calls to it.

The server runs on a free port of 127.0.0.1 with a token, fresh Jupyter config, data and
runtime dirs, and the ``FLOWBOOK_*`` environment it is given; it is stopped (with its process
group) by ``stop()``.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ENABLE_BY_FLAG", "Response", "ServerProcess", "start_server"]

START_TIMEOUT_S = 60.0
ENABLE_BY_FLAG = "--ServerApp.jpserver_extensions={'flowbook.jupyter.server': True}"


@dataclass
class Response:
    status: int
    body: Any  # the parsed JSON body (None when empty)
    headers: dict[str, str]


@dataclass
class ServerProcess:
    base_url: str  # http://127.0.0.1:<port>/
    token: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes]

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """``method path`` (relative to the base URL); ``token=""`` sends the server's token,
        ``None`` none, anything else that token. ``body`` is sent as JSON, ``raw`` as is."""
        sent = dict(headers or {})
        if token == "":
            token = self.token
        if token is not None:
            sent["Authorization"] = f"token {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=sent
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                status, payload, got = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            status, payload, got = exc.code, exc.read(), dict(exc.headers)
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode(errors="replace")
        return Response(status, parsed, got)

    def get(self, path: str, **kw: Any) -> Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.call("POST", path, body, **kw)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # anything left of its process group
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    workdir: Path, root: Path, flowbook_env: dict[str, str], *args: str, extra_env: Any = None
) -> ServerProcess:
    """Start ``jupyter server`` with ``args`` (e.g. ``ENABLE_BY_FLAG``) and wait until it
    answers ``/api/status``."""
    for d in ("config", "data", "runtime"):
        (workdir / d).mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWBOOK_", "JUPYTER"))}
    env.update(
        {
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
            "JUPYTER_CONFIG_DIR": str(workdir / "config"),
            "JUPYTER_DATA_DIR": str(workdir / "data"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
            "PYTHONUNBUFFERED": "1",
            **flowbook_env,
            **(extra_env or {}),
        }
    )
    port = _free_port()
    token = secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--allow-root",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        # a server whose test session died stops by itself
        "--ServerApp.shutdown_no_activity_timeout=600",
        *args,
    ]
    log = workdir / f"server-{port}.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}/", token, root, log, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"jupyter server exited with {process.returncode}:\n{server.log_text()[-3000:]}"
            )
        try:
            if server.get("api/status").status == 200:
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"jupyter server did not answer within {START_TIMEOUT_S} s:\n"
                + server.log_text()[-3000:]
            )
        time.sleep(0.1)
