"""The run widget's cost in a real kernel (SPEC F45; issue: widget on <= 1.2x widget off).

    python widget.py [--tasks 10000] [--repeat 5] [--out out/widget.json]

Starts a Jupyter kernel of this interpreter with ``%load_ext flowbook``, then alternates one
flow that maps a no-op task over ``--tasks`` inputs with the run widget on and with it off
(``%flowbook widgets off``), ``--repeat`` times each, timing the call inside the kernel. It also
counts the widget's update messages on IOPub for each run with the widget: they must stay
bounded by time (about ten a second), not by the number of tasks. Prints and writes one JSON
object with the medians and the ratio.
"""

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WIDGET = "application/vnd.jupyter.widget-view+json"

SETUP = """
%load_ext flowbook
import time
from flowbook import flow, task

@task
def noop(x):
    return x

@flow
def mapped(n):
    return len(noop.map(range(n)).result())

mapped(100)  # warm up: imports, the store, the widget module
"""


def kernel_env(tmp):
    prefix = os.path.join(tmp, "prefix")
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", prefix, "--name", "python3"],
        check=True,
        capture_output=True,
    )
    env = dict(os.environ)
    env["JUPYTER_PATH"] = os.path.join(prefix, "share", "jupyter")
    env["FLOWBOOK_HOME"] = os.path.join(tmp, "home")
    env["FLOWBOOK_LOGGING_LEVEL"] = "WARNING"
    return env


def execute(kc, code, timeout=600):
    """Run ``code``; returns (stdout text, IOPub messages of the cell)."""
    msg_id = kc.execute(textwrap.dedent(code))
    out, msgs = [], []
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"cell did not finish in {timeout} s: {code[:60]!r}") from None
        msgs.append(msg)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            raise RuntimeError(f"{msg['content']['ename']}: {msg['content']['evalue']}")
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out), msgs


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", default=os.path.join(HERE, "out", "widget.json"))
    a = p.parse_args()
    from jupyter_client.manager import KernelManager

    tmp = tempfile.mkdtemp(prefix="bench-flowbook-widget-")
    env = kernel_env(tmp)
    os.environ["JUPYTER_PATH"] = env["JUPYTER_PATH"]
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    timed = "t0 = time.perf_counter(); mapped({n}); print(time.perf_counter() - t0)"
    on, off, messages, rates = [], [], [], []
    try:
        execute(kc, SETUP)
        for _ in range(a.repeat):
            execute(kc, "%flowbook widgets off")
            text, _msgs = execute(kc, timed.format(n=a.tasks))
            off.append(float(text.split()[-1]))
            execute(kc, "%flowbook widgets on")
            text, msgs = execute(kc, timed.format(n=a.tasks))
            seconds = float(text.split()[-1])
            on.append(seconds)
            model = next(
                m["content"]["data"][WIDGET]["model_id"]
                for m in msgs
                if m["msg_type"] == "display_data" and WIDGET in m["content"]["data"]
            )
            # the widget's updates published while the cell ran (the reader saw them all)
            n = sum(
                1
                for m in msgs
                if m["msg_type"] == "comm_msg" and m["content"].get("comm_id") == model
            )
            messages.append(n)
            rates.append(n / seconds)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    result = {
        "tasks": a.tasks,
        "repeat": a.repeat,
        "widget_off_s": off,
        "widget_on_s": on,
        "median_off_s": statistics.median(off),
        "median_on_s": statistics.median(on),
        "ratio_on_off": statistics.median(on) / statistics.median(off),
        "widget_messages": messages,
        "widget_messages_per_s": rates,
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
