"""A real ``dask scheduler`` and ``dask worker`` pair on 127.0.0.1, started by the tests.

The processes run from the project's venv (so workers can import flowbook), with the
scheduler on a free port written to a scheduler file. ``stop()`` ends them and their
children.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def bump(path: Path) -> int:
    """Count calls across processes with a file: append one byte, return the count."""
    with open(path, "ab") as f:
        f.write(b".")
    return path.stat().st_size


class DaskProcesses:
    def __init__(self, workdir: Path, workers: int = 1, nthreads: int = 2, port: int = 0) -> None:
        self.port = port
        self.workdir = workdir
        self.scheduler_file = workdir / "scheduler.json"
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.n_workers = workers
        self.nthreads = nthreads
        self.address = ""

    def _spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        out = open(self.workdir / log, "wb")  # noqa: SIM115 - kept open for the process
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        return subprocess.Popen(
            [str(BIN / "dask"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            start_new_session=True,  # a process group of its own, stopped as a whole
        )

    def start(self, timeout: float = 60) -> str:
        self.scheduler_file.unlink(missing_ok=True)
        self.workers = []
        self.scheduler = self._spawn(
            "scheduler",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--dashboard-address", "127.0.0.1:0",
            "--scheduler-file", str(self.scheduler_file),
            "--no-show",
            log="scheduler.log",
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.scheduler_file.exists() or not self.scheduler_file.read_text().strip():
            self._check_alive(self.scheduler, "scheduler.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start:\n{self.log('scheduler.log')}")
            time.sleep(0.1)
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        for i in range(self.n_workers):
            args = [
                "worker", self.address,
                "--nthreads", str(self.nthreads),
                "--name", f"test-worker-{i}",
                "--host", "127.0.0.1",
                "--dashboard-address", "127.0.0.1:0",
            ]  # fmt: skip
            self.workers.append(self._spawn(*args, log=f"worker-{i}.log"))
        from distributed import Client

        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(self.n_workers, timeout=timeout)
        return self.address

    def scheduler_alive(self) -> bool:
        return self.scheduler is not None and self.scheduler.poll() is None

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / name).read_text(errors="replace")[-4000:]
        return ""

    def _check_alive(self, proc: subprocess.Popen[bytes], log: str) -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"dask process exited with {proc.returncode}:\n{self.log(log)}")

    def stop(self) -> None:
        for proc in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
