"""flowbook engine adapter (interface: see adapter_plain.py).

flowbook runs in-process: no API server, no subprocess. What it runs with is chosen by
BENCH_SETTINGS (benchmarks/run sets it):

- ``defaults``: flowbook's own defaults, as a user's script gets them: nothing is set here
  (logging level INFO, console ``auto``, which in a script prints every run line to stderr).
  When BENCH_CONSOLE_LOG names a file, this process's stderr (file descriptor 2) is appended
  to it before flowbook is imported: the console's lines are formatted, written and flushed
  to a file, as with ``python script.py 2>>run.log``. benchmarks/run also sets FLOWBOOK_HOME
  to a fresh copy of the grown store (grow_store.py) for each process.
- ``nowait`` (``benchmarks/run --nowait``): the defaults as above, plus
  ``FLOWBOOK_STORE_WAIT=off`` (a top-level flow call returns without waiting for its rows to
  be committed; the store's writer thread commits them within about half a second). Set here
  before flowbook is imported; another value already set is refused.
- ``fresh`` (the default here; ``benchmarks/run --fresh-home`` and ``--quick``): before
  flowbook is imported, FLOWBOOK_LOGGING_LEVEL defaults to WARNING (Prefect is measured with
  PREFECT_LOGGING_LEVEL=WARNING: same footing).

``SETTINGS_ENV`` holds the ``FLOWBOOK_*`` variables the process runs with, but
``FLOWBOOK_HOME`` (run.py records them with each figure, as ``"settings_env"``).

In every setting, FLOWBOOK_HOME (flowbook's state directory, e.g. persisted results) defaults
to a fresh temporary directory per process, as every Prefect process starts from a fresh copy
of its template home. The one exception: the two phases of cache_hit_1000 (cold, then warm in a new
process) must share the persisted cache, so when run.py sets BENCH_SALT (shared by the phases
of one repeat, new for each repeat) the directory is derived from it. Set FLOWBOOK_HOME
yourself to override both.
"""

import atexit
import os
import shutil
import tempfile


def _home():
    salt = os.environ.get("BENCH_SALT")
    if salt:
        path = os.path.join(tempfile.gettempdir(), f"bench-flowbook-home-{salt}")
        os.makedirs(path, exist_ok=True)
        return path
    path = tempfile.mkdtemp(prefix="bench-flowbook-home-")
    atexit.register(shutil.rmtree, path, True)
    return path


SETTINGS = os.environ.get("BENCH_SETTINGS", "fresh")
if SETTINGS not in ("defaults", "fresh", "nowait"):
    raise SystemExit(f"BENCH_SETTINGS={SETTINGS!r}: use 'defaults', 'fresh' or 'nowait'")
if SETTINGS == "nowait" and os.environ.setdefault("FLOWBOOK_STORE_WAIT", "off") != "off":
    raise SystemExit(
        f"BENCH_SETTINGS=nowait measures FLOWBOOK_STORE_WAIT=off, not "
        f"FLOWBOOK_STORE_WAIT={os.environ['FLOWBOOK_STORE_WAIT']!r}"
    )
if "FLOWBOOK_HOME" not in os.environ:
    os.environ["FLOWBOOK_HOME"] = _home()
if SETTINGS == "fresh":
    os.environ.setdefault("FLOWBOOK_LOGGING_LEVEL", "WARNING")
elif os.environ.get("BENCH_CONSOLE_LOG"):
    _fd = os.open(os.environ["BENCH_CONSOLE_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(_fd, 2)
    os.close(_fd)
SETTINGS_ENV = {
    k: v
    for k, v in sorted(os.environ.items())
    if k.startswith("FLOWBOOK_") and k != "FLOWBOOK_HOME"
}

# flowbook reads these settings when first used, so they are set before the import.
import flowbook  # noqa: E402
from flowbook import flow, task  # noqa: E402
from flowbook.task_runners import ConcurrentTaskRunner, SequentialTaskRunner  # noqa: E402
from flowbook.tasks import task_input_hash  # noqa: E402

IMPORT = "flowbook"
VERSION = "flowbook " + flowbook.__version__

__all__ = [
    "SETTINGS_ENV",
    "flow",
    "task",
    "task_input_hash",
    "sequential",
    "threads",
    "dask",
    "dask_close",
    "dask_warm",
    "processes",
    "warmup",
]


def sequential():
    return SequentialTaskRunner()


def threads(n=None):
    # n=None: flowbook's default worker count.
    return ConcurrentTaskRunner(max_workers=n)


def dask(n_workers=2, threads_per_worker=1):
    # Dask itself is imported when a run first submits a task: that run starts the process's
    # local cluster, later runs reuse it, and it is closed at exit (or by dask_close()).
    from flowbook.task_runners import DaskTaskRunner

    return DaskTaskRunner(
        cluster_kwargs={"n_workers": n_workers, "threads_per_worker": threads_per_worker}
    )


def dask_warm(n_workers=2, threads_per_worker=1):
    # the same runner: flowbook keeps its local cluster for the process's later runs
    return dask(n_workers, threads_per_worker)


def processes(n):
    from flowbook.task_runners import ProcessPoolTaskRunner

    return ProcessPoolTaskRunner(max_workers=n)


def dask_close():
    """Close the local Dask cluster flowbook keeps between flow runs; False if there is none.

    An optional adapter hook (see workloads.wl_dask_100_cold): an engine whose flow runs leave
    their Dask cluster running defines it, so that closing that cluster can be timed too.
    """
    from flowbook.task_runners.dask import close_cluster

    return close_cluster()


def warmup():
    """One trivial flow run (as adapter_prefect.warmup), so that timings exclude first-call set-up."""

    @flow
    def warmup_flow():
        return 1

    warmup_flow()
