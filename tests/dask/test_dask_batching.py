"""What the batched paths between the kernel and a local Dask cluster still carry.

A map's attempts reach Dask in a few ``client.map`` calls, the workers' events come back in
batches, and small values travel with an attempt's end: states keep their order, retries,
failures with their tracebacks, logs in the store and a worker dying mid-batch all end as
they do one task at a time.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import cloudpickle
import dask_batching_helpers
import pytest
from dask_batching_helpers import Holder, Level, Shout
from dask_processes import bump

from flowbook import flow, get_run_logger, task
from flowbook.engine.events import LogEmitted, StateChanged
from flowbook.store import get_store
from flowbook.store.queries import get_run
from flowbook.task_runners import DaskTaskRunner, _dask_worker
from flowbook.task_runners import dask as fb_dask

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


class CountGraphs:
    """A scheduler plugin counting the graphs (``client.submit``/``client.map`` calls) and
    the tasks a client sends."""

    name = "flowbook-test-count-graphs"

    def __init__(self) -> None:
        self.graphs = 0
        self.keys = 0

    def update_graph(self, scheduler: Any, *, keys: Any = (), **kwargs: Any) -> None:
        self.graphs += 1
        self.keys += len(keys)


def _counts(runner: DaskTaskRunner) -> tuple[int, int]:
    def read(dask_scheduler: Any) -> tuple[int, int]:
        plugin = dask_scheduler.plugins[CountGraphs.name]
        return plugin.graphs, plugin.keys

    graphs, keys = runner.client.run_on_scheduler(read)
    return int(graphs), int(keys)


@task
def inc(x: int) -> int:
    return x + 1


def test_a_map_goes_to_dask_in_a_few_graphs_and_every_run_keeps_its_state_order(
    local_runner: DaskTaskRunner, events: Any
) -> None:
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Counting(CountGraphs, SchedulerPlugin):
        pass

    n = 2 * fb_dask.SUBMIT_BATCH + 10

    @flow(task_runner=local_runner)
    def mapped(count: int) -> list[int]:
        return inc.map(range(count)).result()

    assert mapped(2) == [1, 2]  # the cluster is up
    local_runner.client.register_plugin(Counting(), name=CountGraphs.name)
    graphs0, keys0 = _counts(local_runner)
    assert mapped(n) == list(range(1, n + 1))
    graphs, keys = _counts(local_runner)
    assert keys - keys0 == n  # one Dask task per task run, none resubmitted
    # at most SUBMIT_BATCH attempts per graph: 3 graphs at the fewest, far from one per task
    assert 3 <= graphs - graphs0 <= n // 20
    changes = [e for e in events.of(StateChanged) if e.run.name.startswith("inc-")]
    by_run: dict[str, list[str]] = {}
    for e in changes:
        by_run.setdefault(e.run.id, []).append(e.state.name)
    assert len(by_run) == n + 2
    for names in by_run.values():
        assert names == ["Pending", "Running", "Completed"]


@task(persist_result=False)  # the store does not read the values: get() below is the first
def sized(n: int) -> bytes:
    return b"x" * n


@task(persist_result=False)
def make_adder(k: int) -> Any:
    return lambda x: x + k  # not picklable with pickle: fetched through Dask


def test_small_values_come_with_the_end_and_others_are_fetched(
    local_runner: DaskTaskRunner,
) -> None:
    from distributed import CancelledError

    big = _dask_worker.INLINE_VALUE_BYTES + 1

    @flow(task_runner=local_runner)
    def values() -> tuple[Any, Any, Any, Any]:
        small, gone, large, adder = (
            sized.submit(10),
            sized.submit(20),
            sized.submit(big),
            make_adder.submit(5),
        )
        for f in (small, gone, large, adder):
            f.wait(60)
        return small.state.data, gone.state.data, large.state.data, adder.state.data

    small, gone, large, adder = values()
    for data in (small, gone, large, adder):
        assert isinstance(data, fb_dask.DaskResult)
    assert large.get() == b"x" * big
    assert adder.get()(1) == 6
    assert small.get() == b"x" * 10
    # a small value is read without the cluster: even once Dask has dropped its task
    local_runner.client.cancel([gone.future, large.future], force=True)
    assert gone.get() == b"x" * 20
    fresh = fb_dask.DaskResult(large.future, "")  # nothing came with it: Dask is asked
    with pytest.raises(CancelledError):
        fresh.get()


@task(retries=1, retry_delay_seconds=0)
def fails_first(path: Path, i: int) -> int:
    if bump(path / f"n{i}") == 1:
        raise ValueError(f"first attempt of {i}")
    return i


def test_retries_on_workers_inside_a_map(local_runner: DaskTaskRunner, tmp_path: Path) -> None:
    @flow(task_runner=local_runner)
    def retried() -> list[Any]:
        futures = fails_first.map(tmp_path, range(20))
        values = futures.result()
        return [values, [f.task_run.run_count for f in futures]]

    values, counts = retried()
    assert values == list(range(20))
    assert counts == [2] * 20
    for i in range(20):
        assert (tmp_path / f"n{i}").stat().st_size == 2


@task
def chatty_or_failing(i: int) -> int:
    get_run_logger().warning("before the end of %s", i)
    if i == 7:
        raise ZeroDivisionError(f"item {i} divides by zero")
    return i


def test_a_failure_in_a_batch_keeps_its_traceback_and_logs_reach_the_store(
    local_runner: DaskTaskRunner, events: Any
) -> None:
    name = f"batched-{uuid.uuid4().hex[:8]}"

    states: list[Any] = []

    @flow(task_runner=local_runner, flow_run_name=name)
    def batched() -> None:
        futures = chatty_or_failing.map(range(15))
        futures.wait(60)
        states.extend(f.state for f in futures)  # returned, they would fail the flow run

    batched()
    assert [s.name for s in states] == ["Completed"] * 7 + ["Failed"] + ["Completed"] * 7
    failed = states[7]
    with pytest.raises(ZeroDivisionError, match="item 7 divides by zero"):
        failed.result()
    tb = failed.data.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "chatty_or_failing" in frames
    # every run's log line came before its final state, as on threads
    order = [
        (type(e).__name__, e.task_run_id if isinstance(e, LogEmitted) else e.run.id)
        for e in events.events
        if (isinstance(e, LogEmitted) and "before the end" in e.record.getMessage())
        or (isinstance(e, StateChanged) and e.state.is_final() and e.run.name != name)
    ]
    for run_id in {r for _, r in order}:
        mine = [kind for kind, r in order if r == run_id]
        assert mine == ["LogEmitted", "StateChanged"]

    store = get_store()
    assert store is not None
    assert store.writer.flush()
    detail = get_run(store, name)
    runs = {t["id"]: t for t in detail.task_run_list}
    assert len(runs) == 15
    lines = [line for line in detail.logs if "before the end of" in line["message"]]
    assert len(lines) == 15
    for line in lines:
        i = int(line["message"].rsplit(" ", 1)[1])
        assert runs[line["task_run_id"]]["name"] == f"chatty_or_failing-{i}"
    assert runs[states[7].run_id]["state_type"] == "FAILED"


@task
def long_body(seconds: float) -> float:
    time.sleep(seconds)
    return float(time.time())


def test_a_lone_task_run_is_running_in_the_kernel_long_before_it_ends(
    local_runner: DaskTaskRunner, events: Any
) -> None:
    @flow(task_runner=local_runner)
    def lone() -> float:
        long_body.submit(0.01).result()  # the previous batch interval is long over
        time.sleep(2 * _dask_worker.BATCH_INTERVAL_S)
        return long_body.submit(1.5).result()

    ended = lone()
    running = [
        e.state.timestamp_s
        for e in events.of(StateChanged)
        if e.run.name == "long_body-1" and e.state.name == "Running"
    ]
    assert len(running) == 1
    # the start was not held back for a batch: Running well before the body's end
    assert ended - running[0] > 1.0


@task
def die_or_spin(i: int) -> int:
    get_run_logger().info("spinning %s", i)
    if i == 5:
        os._exit(3)
    time.sleep(0.05)
    return i


def test_a_worker_killed_mid_batch_leaves_no_run_running(local_runner: DaskTaskRunner) -> None:
    name = f"deadly-{uuid.uuid4().hex[:8]}"
    states: list[Any] = []

    @flow(task_runner=local_runner, flow_run_name=name)
    def deadly() -> None:
        futures = die_or_spin.map(range(40))
        futures.wait(120)
        states.extend(f.state for f in futures)

    t0 = time.monotonic()
    deadly()
    assert time.monotonic() - t0 < 100
    names = [s.name for s in states]
    assert all(s.is_final() for s in states), names
    assert names[5] == "Crashed"
    assert "died" in (states[5].message or "")
    # runs on the other worker, and after the restart, complete; those that were on the
    # dying worker end Crashed, or Completed when they had finished there (then their end
    # may have died with the worker): none is left Running or Pending
    assert set(names) <= {"Completed", "Crashed"}
    assert names.count("Completed") >= 20
    # a Completed run whose end reached the kernel (it carries the preview) has its log line
    # in the store: the worker sent it before the end
    store = get_store()
    assert store is not None
    assert store.writer.flush()
    logged = {
        line["task_run_id"]
        for line in get_run(store, name).logs
        if line["message"].startswith("spinning ")
    }
    with_end = [s for s in states if s.name == "Completed" and s.data.preview]
    assert len(with_end) >= 20
    for s in with_end:
        assert s.run_id in logged
    for i, s in enumerate(states):
        if s.name == "Completed":
            assert s.result() == i


@task(log_prints=True)
def odd_output(i: int) -> int:
    logger = get_run_logger()
    logger.info("plain line %s", i)
    if i == 3:
        logger.log(Level.NOTE, "a line at an IntEnum level")
    if i == 4:
        sys.stdout.write(Shout("shouted by 4\n"))
    return i


def test_events_dask_would_refuse_are_made_plain_and_lose_no_other_event(
    local_runner: DaskTaskRunner,
) -> None:
    # an IntEnum level and a str subclass are not msgpack-able for Worker.log_event: once,
    # the whole batch they were in (other runs' logs and ends) was dropped with them
    name = f"odd-{uuid.uuid4().hex[:8]}"
    states: list[Any] = []

    @flow(task_runner=local_runner, flow_run_name=name)
    def odd() -> None:
        futures = odd_output.map(range(20))
        futures.wait(60)
        states.extend(f.state for f in futures)

    odd()
    assert [s.name for s in states] == ["Completed"] * 20
    for i, s in enumerate(states):
        assert s.data.preview == str(i)  # its end arrived
        assert s.result() == i
    store = get_store()
    assert store is not None
    assert store.writer.flush()
    logs = get_run(store, name).logs
    plain = sorted(
        int(x["message"].rsplit(" ", 1)[1]) for x in logs if "plain line" in x["message"]
    )
    assert plain == list(range(20))
    note = [x for x in logs if x["message"] == "a line at an IntEnum level"]
    assert len(note) == 1
    assert note[0]["task_run_id"] == states[3].run_id
    assert _dask_worker._batcher.dropped == 0  # in this process: no event was refused here


def test_plain_keeps_values_and_drops_subclasses() -> None:
    assert _dask_worker._plain(Level.NOTE) == 25
    assert type(_dask_worker._plain(Level.NOTE)) is int
    assert type(_dask_worker._plain(Shout("x"))) is str
    assert _dask_worker._plain(Shout("x")) == "x"
    assert type(_dask_worker._plain(True)) is bool
    assert _dask_worker._plain(None) is None
    assert _dask_worker._plain(b"ab") == b"ab"


def test_a_value_that_pickles_large_is_not_pickled_whole() -> None:
    import tracemalloc

    from dask.sizeof import sizeof

    big = Holder(5 * 1024 * 1024)
    assert sizeof(big) < _dask_worker.INLINE_VALUE_BYTES  # Dask cannot tell
    tracemalloc.start()
    try:
        assert _dask_worker._inline(big) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # no 5 MB copy was made to be dropped
    small = _dask_worker._inline(Holder(100))
    assert small is not None
    assert pickle.loads(small).data == b"x" * 100


@task(persist_result=False)
def holder(n: int) -> Holder:
    return Holder(n)


def test_a_large_value_dask_thinks_small_is_fetched(local_runner: DaskTaskRunner) -> None:
    got: list[Any] = []

    @flow(task_runner=local_runner)
    def held() -> None:
        future = holder.submit(5 * 1024 * 1024)
        future.wait(60)
        got.append(future.state.data)

    held()
    (data,) = got
    assert isinstance(data, fb_dask.DaskResult)
    assert data.preview  # its end arrived, without the value
    assert data._inline is None
    assert data.get().data == b"x" * (5 * 1024 * 1024)


def test_the_worker_keeps_only_small_tasks_and_few_bytes_of_them() -> None:
    def closing_over(blob: bytes) -> Any:
        @task
        def uses(i: int) -> int:
            return len(blob) + i

        return uses

    large = cloudpickle.dumps(closing_over(b"x" * (2 * 1024 * 1024)))
    assert _dask_worker._load_task(large).fn(1) == 2 * 1024 * 1024 + 1
    assert large not in _dask_worker._tasks  # not pinned in the worker's memory
    for n in range(8):
        data = cloudpickle.dumps(closing_over(bytes([n]) * (900 * 1024)))
        assert _dask_worker._load_task(data).fn(0) == 900 * 1024
        assert data in _dask_worker._tasks
        assert _dask_worker._tasks_bytes <= _dask_worker._TASKS_KEPT_BYTES
    assert sum(map(len, _dask_worker._tasks)) == _dask_worker._tasks_bytes
    assert len(_dask_worker._tasks) <= 4


@task
def last_words() -> int:
    time.sleep(0.3)
    get_run_logger().info("last words")
    return 42


def test_a_run_behind_a_busy_kernel_thread_still_ends_with_its_end_event(
    local_runner: DaskTaskRunner, events: Any
) -> None:
    # The worker sends the log line at once and the end within the batch interval, after
    # Dask learns the value is ready: the kernel's Dask thread handles the future's done
    # first and waits for the end. Here that thread is then busy for longer than the grace
    # while the end arrives: the end must still be applied before the grace completes the run.
    @flow(task_runner=local_runner)
    def busy() -> Any:
        future = last_words.submit()
        conn = fb_dask._local
        assert conn is not None
        call = conn.calls[future.task_run.id]
        deadline = time.monotonic() + 30
        while call.future is None and time.monotonic() < deadline:
            time.sleep(0.005)
        call.future.add_done_callback(
            lambda _: conn.dispatcher.post(time.sleep, fb_dask.END_GRACE_S + 0.5)
        )
        future.wait(60)
        return future.state

    state = busy()
    assert state.name == "Completed"
    assert state.data.preview == "42"  # the end was applied, not overrun by the grace
    assert state.result() == 42
    order = [
        type(e).__name__
        for e in events.events
        if (isinstance(e, LogEmitted) and e.record.getMessage() == "last words")
        or (
            isinstance(e, StateChanged)
            and e.run.name.startswith("last_words")
            and e.state.is_final()
        )
    ]
    assert order == ["LogEmitted", "StateChanged"]


@task(persist_result=False)
def returns_a_list(name: str) -> list[int]:
    value = [1, 2, 3]
    # through the module: this test module's globals travel by value
    dask_batching_helpers.RETURNED[name] = value
    return value


def test_an_in_process_worker_hands_over_the_value_itself() -> None:
    import distributed

    with distributed.LocalCluster(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0"
    ) as cluster:
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        try:
            got: list[Any] = []

            @flow(task_runner=runner)
            def here() -> None:
                future = returns_a_list.submit("here")
                future.wait(60)
                got.append(future.state.data)

            here()
            (data,) = got
            assert isinstance(data, fb_dask.DaskResult)
            assert data._inline is None  # nothing was pickled for the kernel
            assert data.get() is dask_batching_helpers.RETURNED["here"]
        finally:
            conn = fb_dask._remote.pop(runner._config_key(), None)
            if conn is not None:
                conn.close()


def _send_mixed(topic: str, dask_worker: Any = None) -> int:
    # on a worker: a batch holding an event Dask refuses between two it accepts
    batcher = _dask_worker._batcher
    before = batcher.dropped
    batcher.send(topic, {"op": "log", "id": "a", "msg": "one"}, dask_worker)
    batcher.send(topic, {"op": "log", "id": "b", "level": object()}, dask_worker)
    batcher.send(topic, {"op": "log", "id": "c", "msg": "three"}, dask_worker)
    batcher.flush()
    return batcher.dropped - before


def test_an_event_dask_refuses_is_dropped_alone_and_counted(
    local_runner: DaskTaskRunner,
) -> None:
    client = local_runner.client
    worker = next(iter(client.scheduler_info()["workers"]))
    topic = f"flowbook-test-{uuid.uuid4().hex[:8]}"
    dropped = client.run(_send_mixed, topic, workers=[worker])
    assert dropped == {worker: 1}
    deadline = time.monotonic() + 30
    ids: list[str] = []
    while time.monotonic() < deadline:
        ids = [e["id"] for _, batch in client.get_events(topic) for e in batch["events"]]
        if len(ids) >= 2:
            break
        time.sleep(0.05)
    assert ids == ["a", "c"]
