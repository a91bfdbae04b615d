"""The run widget's cost in a real kernel (SPEC F45; issue: widget on <= 1.2x widget off).

    python widget.py [--tasks 10000] [--repeat 11] [--home DIR] [--out out/widget.json]

Starts a Jupyter kernel of this interpreter with ``%load_ext flowbook``, then alternates one
flow that maps a no-op task over ``--tasks`` inputs with the run widget on and with it off
(``%flowbook widgets off``), ``--repeat`` times each, timing the call inside the kernel. It also
counts the widget's update messages on IOPub for each run with the widget: they must stay
bounded by time (about ten a second), not by the number of tasks. Prints and writes one JSON
object with the medians and the ratio.
"""

import argparse
import datetime
import json
import os
import statistics

from _kernel import execute, kernel, widget_messages, widget_model

HERE = os.path.dirname(os.path.abspath(__file__))

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


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=11)
    p.add_argument("--out", default=os.path.join(HERE, "out", "widget.json"))
    p.add_argument(
        "--home", help="the kernel's FLOWBOOK_HOME, a copy of a grown store (default: temporary)"
    )
    a = p.parse_args()
    if a.home is not None and os.path.realpath(a.home) == os.path.join(HERE, "grown-store"):
        p.error("--home must be a copy of benchmarks/grown-store, not the original")
    if a.tasks < 1 or a.repeat < 1:
        p.error(f"--tasks and --repeat must be at least 1; got {a.tasks} and {a.repeat}")
    started = now()
    timed = "t0 = time.perf_counter(); mapped({n}); print(time.perf_counter() - t0)"
    on, off, messages, rates = [], [], [], []
    # on a grown store (benchmarks/run at the defaults) the kernel runs at flowbook's own
    # logging level (INFO), as a user's; a temporary home keeps the former footing (WARNING)
    level = None if a.home is not None else "WARNING"
    with kernel("bench-flowbook-widget-", home=a.home, level=level) as (km, kc):
        execute(km, kc, SETUP)
        for _ in range(a.repeat):
            execute(km, kc, "%flowbook widgets off")
            text, _msgs = execute(km, kc, timed.format(n=a.tasks))
            off.append(float(text.split()[-1]))
            execute(km, kc, "%flowbook widgets on")
            text, msgs = execute(km, kc, timed.format(n=a.tasks))
            seconds = float(text.split()[-1])
            on.append(seconds)
            # the widget's updates published while the cell ran (the reader saw them all)
            n = widget_messages(msgs, widget_model(msgs))
            messages.append(n)
            rates.append(n / seconds)
    result = {
        "started": started,
        "finished": now(),
        "tasks": a.tasks,
        "repeat": a.repeat,
        "home": a.home or "temporary",
        "logging_level": "INFO (flowbook's default)" if level is None else level,
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
