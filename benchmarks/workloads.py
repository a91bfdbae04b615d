"""Engine-agnostic benchmark workloads.

Each ``wl_<name>(e)`` runs against an engine adapter ``e`` (see adapter_plain.py for
the interface), checks its own results, and returns a dict of extra facts (or None).
Special keys: ``n`` (units of work, run.py derives per-unit ms) and ``wall_s``
(overrides the wall time run.py measured around the call).
A workload with a ``phases`` attribute is run once per phase, each phase in a new
process, all phases sharing one ``BENCH_SALT`` (used for cross-process caching).
"""

import os
import statistics
import subprocess
import sys
import threading
import time


def inc(x):
    return x + 1


def sleep_for(seconds, i):
    time.sleep(seconds)
    return i


def spin(i, seconds=0.05):
    """Busy-wait: holds a core (and the GIL) for `seconds` of wall time."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return i


_executed = []  # one entry per real execution of cached_inc (list.append is thread-safe)


def cached_inc(salt, x):
    _executed.append(x)
    return x + 1


def wl_seq_1000(e):
    t = e.task(inc)

    @e.flow
    def seq_1000():
        return [t(i) for i in range(1000)]

    assert seq_1000() == list(range(1, 1001))
    return {"n": 1000}


def wl_submit_1000(e):
    t = e.task(inc)

    @e.flow
    def submit_1000():
        futures = [t.submit(i) for i in range(1000)]
        return [f.result() for f in futures]

    assert submit_1000() == list(range(1, 1001))
    return {"n": 1000}


def _map(e, n):
    t = e.task(inc)

    @e.flow
    def map_n():
        return t.map(range(n)).result()

    assert map_n() == list(range(1, n + 1))
    return {"n": n}


def wl_map_1000(e):
    return _map(e, 1000)


def wl_map_10000(e):
    return _map(e, 10_000)


def wl_chain_500(e):
    t = e.task(inc)

    @e.flow
    def chain_500():
        f = t.submit(0)
        for _ in range(499):
            f = t.submit(f)
        return f.result()

    assert chain_500() == 500
    return {"n": 500}


def wl_sleep_parallel(e):
    t = e.task(sleep_for)

    @e.flow(task_runner=e.threads(3))
    def sleep_parallel():
        futures = [t.submit(2, i) for i in range(3)]
        return [f.result() for f in futures]

    assert sleep_parallel() == [0, 1, 2]
    return {"ideal_s": 2.0}


def wl_cache_hit_1000(e):
    """Cold in one process, warm (all hits) in a new one: caches must persist."""
    salt = os.environ.get("BENCH_SALT", "0")
    t = e.task(cached_inc, cache_key_fn=e.task_input_hash)

    @e.flow
    def cache_hit_1000():
        return [t(salt, i) for i in range(1000)]

    _executed.clear()
    assert cache_hit_1000() == list(range(1, 1001))
    return {"n": 1000, "executed": len(_executed)}


wl_cache_hit_1000.phases = ("cold", "warm")


def wl_retries(e, flows=20):
    """`flows` flow runs, each with one task that fails twice then succeeds."""
    attempts = {}
    lock = threading.Lock()

    def flaky(x):
        with lock:
            attempts[x] = attempts.get(x, 0) + 1
            if attempts[x] < 3:
                raise ValueError(f"planned failure {attempts[x]}")
        return x

    t = e.task(flaky, retries=2, retry_delay_seconds=0)

    @e.flow
    def retries(x):
        return t(x)

    for i in range(flows):
        assert retries(i) == i
    assert sum(attempts.values()) == 3 * flows
    return {"n": flows}


def wl_dask_100(e):
    """100 x 50 ms CPU spin on a 2-worker x 1-thread LocalCluster (cluster start included)."""
    t_inc, t_spin = e.task(inc), e.task(spin)

    @e.flow(task_runner=e.dask(n_workers=2, threads_per_worker=1))
    def dask_1():
        return t_inc.submit(1).result()

    @e.flow(task_runner=e.dask(n_workers=2, threads_per_worker=1))
    def dask_100():
        return t_spin.map(range(100)).result()

    t0 = time.perf_counter()
    assert dask_1() == 2
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert dask_100() == list(range(100))
    return {
        "wall_s": time.perf_counter() - t0,
        "n": 100,
        "ideal_s": 2.5,
        "dask_1_task_flow_s": round(one, 3),
    }


def spin_where(i, seconds=0.05):
    """spin(), and say where it ran: (i, the Dask scheduler's address, the worker's pid)."""
    spin(i, seconds)
    from distributed import get_worker

    return i, get_worker().scheduler.address, os.getpid()


def wl_dask_100_cold(e):
    """100 x 50 ms CPU spin on a new 2-worker x 1-thread LocalCluster: the process's first
    Dask use, from nothing to results and the cluster closed; then the same flow again.

    wall_s is the first flow call (timed from before the runner is made, so importing Dask
    and starting the cluster count), plus closing that cluster: an engine whose flow runs
    close their cluster (plain, Prefect) closes it inside the call; an engine that keeps it
    for later runs has an adapter hook ``dask_close()``, timed after the second call, whose
    time is added. Both engines thus pay start, 100 tasks, results and close once each.
    to_results_s is the same span up to the moment the flow body holds the 100 results
    (before any close). second_run_s times a second, identical flow call in the same process;
    same_cluster says whether it ran on the first call's scheduler and worker processes.
    """
    t = e.task(spin_where)
    marks = {}
    dask_was_imported = "distributed" in sys.modules

    def finish(flow_call, t0):
        out = flow_call()
        t1 = time.perf_counter()
        assert [r[0] for r in out] == list(range(100))
        return t1 - t0, marks["results"] - t0, {r[1] for r in out}, {r[2] for r in out}

    t0 = time.perf_counter()  # before the runner is made: the first call includes everything

    @e.flow(task_runner=e.dask(n_workers=2, threads_per_worker=1))
    def dask_100_cold():
        out = t.map(range(100)).result()
        marks["results"] = time.perf_counter()
        return out

    first_s, first_results_s, addr1, pids1 = finish(dask_100_cold, t0)
    second_s, second_results_s, addr2, pids2 = finish(dask_100_cold, time.perf_counter())
    close_s = None
    close = getattr(e, "dask_close", None)
    if close is not None:
        t0 = time.perf_counter()
        close()
        close_s = time.perf_counter() - t0
    return {
        "wall_s": first_s + (close_s or 0.0),
        "n": 100,
        "ideal_s": 2.5,
        "to_results_s": round(first_results_s, 4),
        "first_call_s": round(first_s, 4),
        "close_s": None if close_s is None else round(close_s, 4),
        "second_run_s": round(second_s, 4),
        "second_to_results_s": round(second_results_s, 4),
        "same_cluster": len(addr1) == 1 and addr1 == addr2 and pids2 <= pids1,
        "schedulers": sorted(addr1 | addr2),
        "dask_imported_before": dask_was_imported,
    }


def _dask_map(e, n):
    """n ``inc`` tasks mapped on a warm 2-worker x 1-thread LocalCluster (worker processes).

    The cluster is started and warmed by an untimed flow run first; wall_s times a second
    flow run: the map, its n results gathered, the flow's end.
    """
    t = e.task(inc)
    runner = e.dask_warm(n_workers=2, threads_per_worker=1)

    @e.flow(task_runner=runner)
    def dask_map(count):
        return t.map(range(count)).result()

    assert dask_map(20) == list(range(1, 21))  # cluster start, imports, first pickles
    t0 = time.perf_counter()
    out = dask_map(n)
    wall = time.perf_counter() - t0
    assert out == list(range(1, n + 1))
    return {"wall_s": wall, "n": n}


def wl_dask_map_1000(e):
    return _dask_map(e, 1000)


def wl_dask_map_5000(e):
    return _dask_map(e, 5000)


def spin_half_second(i):
    return spin(i, 0.5)


def wl_cpu_process_8(e):
    """8 x 0.5 s CPU spin on 2 worker processes (a warm pool: started by an untimed run)."""
    t_short, t_long = e.task(spin), e.task(spin_half_second)
    runner = e.processes(2)

    @e.flow(task_runner=runner)
    def cpu_process_warm():
        return t_short.map(range(2)).result()

    @e.flow(task_runner=runner)
    def cpu_process():
        return t_long.map(range(8)).result()

    assert cpu_process_warm() == [0, 1]  # pool start (not timed)
    t0 = time.perf_counter()
    out = cpu_process()
    wall = time.perf_counter() - t0
    assert out == list(range(8))
    return {"wall_s": wall, "n": 8, "ideal_s": 2.0}


def wl_flow_call_100(e):
    t = e.task(inc)

    @e.flow
    def one_task(x):
        return t(x)

    for i in range(100):
        assert one_task(i) == i + 1
    return {"n": 100}


def wl_import_time(e, runs=5):
    """Median wall of `python -c "import <engine>"` vs `python -c pass`, fresh processes."""

    def median_wall(code):
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            walls.append(time.perf_counter() - t0)
        return statistics.median(walls)

    imp = median_wall(f"import {e.IMPORT}" if e.IMPORT else "pass")
    return {"wall_s": imp, "python_pass_s": round(median_wall("pass"), 3)}
