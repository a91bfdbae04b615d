"""Seeds 003 and 004 (Prefect 2 notebooks: flows, tasks, task runners), run with flowbook.

The seeds sleep 0.5 s per printed value; these tests sleep 0.02 s, which keeps the ordering
behaviour the seeds show (interleaving under the concurrent runner, none under the
sequential one) while the suite stays fast.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flowbook import flow, task
from flowbook.task_runners import ConcurrentTaskRunner, SequentialTaskRunner

DELAY = 0.02


class _FactHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"fact": "Cats sleep 70% of their lives.", "length": 30}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fact_url() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 standing in for the seed's public cat-fact API."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FactHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fact"
    server.shutdown()
    server.server_close()


def test_api_flow(fact_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    @task
    def call_api(url: str) -> dict[str, object]:
        with urllib.request.urlopen(url) as response:
            print(response.status)
            return json.loads(response.read())  # type: ignore[no-any-return]

    @flow
    def api_flow(url: str) -> dict[str, object]:
        fact_json = call_api(url)
        return fact_json

    print(api_flow(fact_url))
    out = capsys.readouterr().out
    assert out == "200\n{'fact': 'Cats sleep 70% of their lives.', 'length': 30}\n"


def test_task_and_flow_options_example(capsys: pytest.CaptureFixture[str]) -> None:
    @task(
        name="My Example Task",
        description="An example task for a tutorial.",
        retries=5,
        retry_delay_seconds=60,
    )
    def my_task() -> None:
        print("Task1")

    @flow(name="My Example Flow", description="An example flow for a tutorial.")
    def my_flow() -> None:
        my_task()

    my_flow()
    captured = capsys.readouterr()
    assert captured.out == "Task1\n"
    assert "Task run 'My Example Task-0' - Finished in state Completed()" in captured.err


def _print_values_flow(runner: object | None, name: str | None = None):  # type: ignore[no-untyped-def]
    @task
    def print_values(values: list[str]) -> None:
        for value in values:
            time.sleep(DELAY)
            print(value, end="\r")

    options = {} if runner is None else {"task_runner": runner}
    if name:
        options["name"] = name

    @flow(**options)
    def my_flow() -> None:
        print_values.submit(["AAAA"] * 15)
        print_values.submit(["BBBB"] * 10)

    return my_flow


def test_default_runner_is_concurrent_and_interleaves(capsys: pytest.CaptureFixture[str]) -> None:
    my_flow = _print_values_flow(None)
    assert isinstance(my_flow.task_runner, ConcurrentTaskRunner)
    my_flow()
    captured = capsys.readouterr()
    # a value and its end="\r" are two writes, so two threads can write "AAAABBBB\r\r"
    printed = re.findall("AAAA|BBBB", captured.out)
    assert sorted(printed) == ["AAAA"] * 15 + ["BBBB"] * 10
    # both tasks ran at once: B values appear before the last A value
    assert printed.index("BBBB") < len(printed) - 1 - printed[::-1].index("AAAA")
    lines = captured.err.splitlines()
    finished = [ln for ln in lines if "Finished in state" in ln]
    # the shorter task finishes first, as in the seed's log
    assert "Task run 'print_values-1' - Finished in state Completed()" in finished[0]
    assert "Task run 'print_values-0' - Finished in state Completed()" in finished[1]
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} \| INFO    \| Flow run '[a-z]+-[a-z]+' - "
        r"Finished in state Completed\('All states completed.'\)",
        finished[2],
    )
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} \| INFO    \| flowbook.engine - "
        r"Created flow run '[a-z]+-[a-z]+' for flow 'my-flow'",
        lines[0],
    )


def test_sequential_runner_does_not_interleave(capsys: pytest.CaptureFixture[str]) -> None:
    my_flow = _print_values_flow(SequentialTaskRunner(), name="Sequential Flow")
    my_flow()
    captured = capsys.readouterr()
    assert captured.out.split("\r")[:-1] == ["AAAA"] * 15 + ["BBBB"] * 10
    finished = [ln for ln in captured.err.splitlines() if "Finished in state" in ln]
    assert "'print_values-0' - Finished" in finished[0]
    assert "'print_values-1' - Finished" in finished[1]
    assert "for flow 'Sequential Flow'" in captured.err


def test_concurrent_runner_runs_sleeping_tasks_in_parallel() -> None:
    @task
    def sleeper(i: int) -> int:
        time.sleep(1)
        return i

    @flow
    def sleepy() -> list[int]:
        return [f.result() for f in [sleeper.submit(i) for i in range(3)]]

    started = time.monotonic()
    assert sleepy() == [0, 1, 2]
    assert time.monotonic() - started < 1.6
