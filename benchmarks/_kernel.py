"""A real Jupyter kernel of this interpreter for the notebook benchmarks (widget.py, kernel_scale.py).

``kernel(prefix)`` installs a kernelspec of ``sys.executable`` into a temporary prefix, starts
the kernel with a temporary ``FLOWBOOK_HOME`` (never a user's store) and
``FLOWBOOK_LOGGING_LEVEL=WARNING``, and removes both when done; ``home=`` gives the kernel that
``FLOWBOOK_HOME`` instead (a copy of a grown store: it is not removed), and ``level=None`` leaves
the logging level at flowbook's default (INFO). ``execute`` runs a cell and
returns its printed text and every IOPub message received meanwhile (it stops waiting if the
kernel dies); ``widget_model`` and ``widget_messages`` find the run widget a cell displayed and
count its update messages.
"""

import contextlib
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

WIDGET = "application/vnd.jupyter.widget-view+json"


def kernel_env(tmp, home=None, level="WARNING"):
    prefix = os.path.join(tmp, "prefix")
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", prefix, "--name", "python3"],
        check=True,
        capture_output=True,
    )
    env = dict(os.environ)
    env["JUPYTER_PATH"] = os.path.join(prefix, "share", "jupyter")
    env["FLOWBOOK_HOME"] = home if home is not None else os.path.join(tmp, "home")
    env.pop("FLOWBOOK_LOGGING_LEVEL", None)
    if level is not None:
        env["FLOWBOOK_LOGGING_LEVEL"] = level
    return env


@contextlib.contextmanager
def kernel(prefix, home=None, level="WARNING"):
    """Start a kernel; yields (manager, client). The temporary directory goes with the kernel."""
    from jupyter_client.manager import KernelManager

    tmp = tempfile.mkdtemp(prefix=prefix)
    km = kc = None
    old_path = os.environ.get("JUPYTER_PATH")
    try:
        env = kernel_env(tmp, home, level)
        os.environ["JUPYTER_PATH"] = env["JUPYTER_PATH"]  # where the kernelspec is looked up
        km = KernelManager(kernel_name="python3")
        km.start_kernel(env=env)
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        yield km, kc
    finally:
        if kc is not None:
            kc.stop_channels()
        if km is not None and km.has_kernel:
            km.shutdown_kernel(now=True)
        if old_path is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old_path
        shutil.rmtree(tmp, ignore_errors=True)


def execute(km, kc, code, timeout=600, check=None):
    """Run ``code``; returns (its stdout text, IOPub messages received until the cell was idle).

    While waiting, about once a second, it raises if the kernel has died and calls ``check()``
    (if given), which may raise to stop waiting.
    """
    msg_id = kc.execute(textwrap.dedent(code))
    out, msgs = [], []
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    while True:
        now = time.monotonic()
        if now - checked >= 1.0:
            checked = now
            if not km.is_alive():
                raise RuntimeError(f"the kernel died while running {code.strip()[:60]!r}")
            if check is not None:
                check()
        if now >= deadline:
            raise TimeoutError(f"cell did not finish in {timeout} s: {code.strip()[:60]!r}")
        try:
            msg = kc.get_iopub_msg(timeout=max(0.05, min(1.0, deadline - now)))
        except queue.Empty:
            continue
        msgs.append(msg)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream" and msg["content"]["name"] == "stdout":
            # (the console's lines go to stderr, sent by the kernel in its own time: they may
            # come after the cell's last print)
            out.append(msg["content"]["text"])
        elif kind == "error":
            raise RuntimeError(f"{msg['content']['ename']}: {msg['content']['evalue']}")
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out), msgs


def widget_model(msgs):
    """The model id of the run widget displayed by a cell (its IOPub messages)."""
    for m in msgs:
        if m["msg_type"] == "display_data" and WIDGET in m["content"]["data"]:
            return m["content"]["data"][WIDGET]["model_id"]
    raise RuntimeError("the cell displayed no run widget (is the widget on?)")


def widget_messages(msgs, model):
    """How many update messages the widget ``model`` sent among ``msgs``."""
    return sum(
        1 for m in msgs if m["msg_type"] == "comm_msg" and m["content"].get("comm_id") == model
    )
