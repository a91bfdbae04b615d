"""Run the Python examples of Prefect 3's documentation with the imports renamed.

    python scripts/prefect_doc_examples.py --prefect-repo PATH [--engine flowbook|prefect]
        [--python PYTHON] [--jobs N] [--timeout S] [--json OUT]

PATH is a clone of github.com/PrefectHQ/prefect (a work tree, or a bare git directory: the
pages are read with ``git show HEAD:<page>``). The pages are those of the features flowbook
takes from Prefect 3: flows, tasks, states, caching, hooks, task runners, futures, logging,
runtime information, inputs, retries, testing, and the Dask integration.

Every ``python`` code block that uses Prefect is written to a file of its own and run as a
script in a fresh process, with its own FLOWBOOK_HOME and PREFECT_HOME (a copy of
$PREFECT_HOME when that is set), in a temporary directory. With ``--engine flowbook`` (the
default) ``prefect`` and ``prefect_dask`` are replaced by ``flowbook`` and ``flowbook_dask``
and nothing else is changed. Blocks that use
what needs a Prefect server (deployments, work pools, blocks, artifacts, automations,
variables, the client, concurrency limits, ...) are counted as out of scope and not run: see
docs/prefect3-out-of-scope.md. An example "runs" when its process exits with status 0.

Some examples fail under Prefect too, by design or here: fragments that use names defined in
another block, examples that show a validation error, examples that download from the
internet or need packages flowbook does not install. Run with ``--engine prefect`` and a
Python that has Prefect 3 (benchmarks/install-prefect makes one) to see which.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

PAGES = (
    "docs/v3/concepts/caching.mdx",
    "docs/v3/concepts/flows.mdx",
    "docs/v3/concepts/runtime-context.mdx",
    "docs/v3/concepts/states.mdx",
    "docs/v3/concepts/task-runners.mdx",
    "docs/v3/concepts/tasks.mdx",
    "docs/v3/get-started/index.mdx",
    "docs/v3/get-started/quickstart.mdx",
    "docs/v3/how-to-guides/workflows/access-runtime-info.mdx",
    "docs/v3/how-to-guides/workflows/add-logging.mdx",
    "docs/v3/how-to-guides/workflows/cache-workflow-steps.mdx",
    "docs/v3/how-to-guides/workflows/pass-inputs.mdx",
    "docs/v3/how-to-guides/workflows/retries.mdx",
    "docs/v3/how-to-guides/workflows/run-work-concurrently.mdx",
    "docs/v3/how-to-guides/workflows/state-change-hooks.mdx",
    "docs/v3/how-to-guides/workflows/test-workflows.mdx",
    "docs/v3/how-to-guides/workflows/write-and-run.mdx",
    "docs/integrations/prefect-dask/index.mdx",
)

# What needs a Prefect server or a product flowbook is not (docs/prefect3-out-of-scope.md).
OUT_OF_SCOPE = (
    r"\.serve\(",
    r"\.deploy\(",
    r"from_source",
    r"run_deployment",
    r"prefect\.deployments",
    r"work_pool",
    r"prefect\.blocks",
    r"prefect\.filesystems",
    r"LocalFileSystem",
    r"S3Bucket",
    r"Secret",
    r"prefect\.artifacts",
    r"create_\w+_artifact",
    r"prefect\.assets",
    r"prefect\.client",
    r"get_client",
    r"PREFECT_API",
    r"prefect\.variables",
    r"Variable\.",
    r"prefect\.automations",
    r"prefect\.events",
    r"emit_event",
    r"prefect\.concurrency",
    r"prefect\.transactions",
    r"transaction\(",
    r"ResultStore",
    r"result_storage=",
    r"pause_flow_run",
    r"suspend_flow_run",
    r"prefect\.input",
    r"RunInput",
    r"prefect_test_harness",
    r"prefect\.testing",
    r"\.delay\(",
    r"prefect\.cli",
    r"prefect_aws",
    r"prefect_gcp",
    r"prefect_docker",
    r"prefect_ray",
    r"RayTaskRunner",
    r"coiled",
)


@dataclass
class Example:
    page: str
    index: int
    code: str
    out_of_scope: str | None


def _dedent(code: str) -> str:
    lines = code.splitlines()
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[indent:] for line in lines) + "\n"


def read_examples(repo: str) -> list[Example]:
    examples = []
    for page in PAGES:
        shown = subprocess.run(
            ["git", "-C", repo, "show", f"HEAD:{page}"], capture_output=True, text=True
        )
        if shown.returncode:
            sys.exit(f"prefect_doc_examples: {page} is not in {repo}: {shown.stderr.strip()}")
        blocks = re.finditer(r"```python[^\n]*\n(.*?)```", shown.stdout, re.S)
        for index, match in enumerate(blocks):
            code = _dedent(match.group(1))
            if "prefect" not in code:
                continue
            out = next((p for p in OUT_OF_SCOPE if re.search(p, code)), None)
            examples.append(Example(page, index, code, out))
    return examples


def renamed(code: str) -> str:
    return re.sub(r"\bprefect(_dask)?\b", lambda m: "flowbook" + (m.group(1) or ""), code)


def run_example(example: Example, engine: str, python: str, timeout: float) -> tuple[str, str]:
    workdir = tempfile.mkdtemp(prefix="prefect-doc-example-")
    try:
        path = os.path.join(workdir, "example.py")
        with open(path, "w") as f:
            f.write(renamed(example.code) if engine == "flowbook" else example.code)
        prefect_home = os.path.join(workdir, "prefect-home")
        if os.environ.get("PREFECT_HOME"):  # a migrated template saves each run the migration
            shutil.copytree(os.environ["PREFECT_HOME"], prefect_home)
        env = {
            **os.environ,
            "FLOWBOOK_HOME": os.path.join(workdir, "flowbook-home"),
            "PREFECT_HOME": prefect_home,
        }
        # a session of its own, so that the processes an example starts (Dask workers, pools)
        # go with it when it is stopped
        proc = subprocess.Popen(
            [python, path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return "timeout", f"still running after {timeout:g} s"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode == 0:
            return "ran", ""
        last = (stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return "failed", last
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefect-repo", required=True)
    parser.add_argument("--engine", choices=("flowbook", "prefect"), default="flowbook")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", help="write every example's outcome to this file")
    args = parser.parse_args()
    if os.sep in args.python:
        args.python = os.path.abspath(args.python)

    examples = read_examples(args.prefect_repo)
    in_scope = [e for e in examples if e.out_of_scope is None]
    outcomes: dict[int, tuple[str, str]] = {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(run_example, e, args.engine, args.python, args.timeout): i
            for i, e in enumerate(in_scope)
        }
        for future in concurrent.futures.as_completed(futures):
            outcomes[futures[future]] = future.result()
    for i, example in enumerate(in_scope):
        outcome, why = outcomes[i]
        name = f"{example.page.rsplit('/', 1)[-1]}#{example.index}"
        print(f"{outcome:8s} {name:40s} {why[:160]}")
    ran = sum(1 for outcome, _ in outcomes.values() if outcome == "ran")
    print(
        f"{args.engine}: {ran}/{len(in_scope)} examples ran "
        f"({len(examples) - len(in_scope)} more are out of scope and were not run)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                [
                    {
                        "page": e.page,
                        "block": e.index,
                        "outcome": outcomes[i][0],
                        "why": outcomes[i][1],
                    }
                    for i, e in enumerate(in_scope)
                ],
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
