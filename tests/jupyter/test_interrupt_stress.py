"""Kernel interrupts at random moments of a flow that keeps starting task runs on the main
thread (``.map()`` starting pool threads, ``.submit()``, waiting for results): every cell ends
with ``KeyboardInterrupt`` promptly, every run ends, and the kernel stays usable."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_session import KernelSession

pytestmark = pytest.mark.slow

DEFS = """
import faulthandler, signal, time
# a stuck cell's threads, on demand (the test sends SIGUSR1 before it gives up on a cell)
faulthandler.register(signal.SIGUSR1, all_threads=True)
from flowbook import flow, task
from flowbook.task_runners import ConcurrentTaskRunner

@task
def tick(i):
    return i

@flow(task_runner=ConcurrentTaskRunner(max_workers=16))
def churn():
    total = 0
    for _ in range(100_000):
        total += sum(tick.map(range(40)).result())
        total += tick.submit(1).result()
    return total

def open_runs():
    from flowbook.engine import flow_engine
    return len(flow_engine._active)
"""


@pytest.fixture(scope="module")
def kernel(
    venv_kernel_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KernelSession]:
    home = tmp_path_factory.mktemp("interrupt-home")
    env = {
        **os.environ,
        **venv_kernel_env,
        "FLOWBOOK_HOME": str(home),
        "FLOWBOOK_CONSOLE": "off",
    }
    k = KernelSession(env)
    assert k.error(k.run("%load_ext flowbook\n%flowbook widgets off")) is None
    assert k.error(k.run(textwrap.dedent(DEFS))) is None
    yield k
    k.close()


def _store_holders(kernel_pid: int) -> str:
    """The processes that have a file of the kernel's FLOWBOOK_HOME open, and the file locks
    on those files (``/proc/locks``): what a cell waiting for the store waits for."""
    try:
        raw = Path(f"/proc/{kernel_pid}/environ").read_bytes().decode(errors="replace")
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        home = env.get("FLOWBOOK_HOME", "")
        lines = [f"the kernel's FLOWBOOK_HOME: {home!r}"]
        inodes: set[int] = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fds = list((proc / "fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if home and target.startswith(home):
                    lines.append(f"pid {proc.name} fd {fd.name} -> {target}")
                    with contextlib.suppress(OSError):
                        inodes.add(os.stat(target).st_ino)
        for line in Path("/proc/locks").read_text().splitlines():
            # "1: POSIX  ADVISORY  WRITE 1234 00:2e:5678 0 EOF" (or "1: -> POSIX ..." waiting)
            for token in line.split():
                if token.count(":") == 2 and token.rsplit(":", 1)[1].isdigit():
                    if int(token.rsplit(":", 1)[1]) in inodes:
                        lines.append(f"lock: {line}")
                    break
        return "\n".join(lines)
    except Exception as exc:  # a diagnosis of a failure must not hide it
        return f"(the store's holders could not be listed: {exc!r})"


def _wait_until_running(kernel: KernelSession, cell: str) -> None:
    """Wait for the kernel to start the cell: an interrupt that comes while the request still
    waits in the kernel's queue aborts it unrun (a reply without an error), on a busy machine."""
    deadline = time.monotonic() + 30
    while not any(m["msg_type"] == "execute_input" for m in kernel.messages(cell)):
        assert time.monotonic() < deadline, "the kernel did not start the cell in 30 s"
        time.sleep(0.005)


def test_interrupts_at_random_moments_always_end_the_cell_and_the_run(
    kernel: KernelSession,
) -> None:
    rng = random.Random(3)
    trials = 25
    slowest = 0.0
    for trial in range(trials):
        cell = kernel.start("churn()")
        _wait_until_running(kernel, cell)
        time.sleep(rng.uniform(0.05, 0.4))
        kernel.interrupt()
        t0 = time.monotonic()
        try:
            msgs = kernel.wait(cell, timeout=15)
        except TimeoutError:
            # every thread's stack goes to the kernel's stderr (the test's captured output),
            # and who has the store's files open, with their locks, to this test's stderr
            pid = kernel.km.provisioner.process.pid
            os.kill(pid, signal.SIGUSR1)
            print(_store_holders(pid), file=sys.stderr)
            time.sleep(2)
            raise
        slowest = max(slowest, time.monotonic() - t0)
        err = kernel.error(msgs)
        assert err is not None, f"trial {trial}: the cell ended without an error"
        assert err["ename"] == "KeyboardInterrupt", f"trial {trial}: {err['ename']}"
        assert kernel.value("open_runs()") == 0, f"trial {trial}"
    assert slowest < 5, slowest
    assert kernel.value("tick(41)") == 41  # the kernel still runs flows and tasks
