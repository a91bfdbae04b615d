"""The ``%%flow`` cell magic and the ``%flowbook`` line magic.

``%%flow [NAME] [options]`` runs the cell's body as a flow. The body runs in the notebook's
namespace, so the variables it assigns stay there, and the value of its last line (if it is an
expression) is the flow's result and the cell's output. ``--param k=v`` values are parsed as
Python literals (else kept as strings); each becomes a variable of the cell and a parameter of
the run.

``%flowbook runs | show RUN | rerun RUN | diff RUN_A RUN_B | cache [clear ...] |
dask [close|restart] | widgets on|off``: see ``usage``.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import shlex
import sys
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

__all__ = ["FlowbookMagics"]

FLOW_USAGE = """\
%%flow [NAME] [--retries N] [--retry-delay S] [--task-runner sequential|concurrent|dask]
       [--param k=v]... [--env K=V]... [--project P] [--background] [--no-widget]

Runs the cell's body as a flow named NAME (default: "notebook-cell").
  --retries N            run the body again up to N times if it fails (default 0)
  --retry-delay S        seconds to wait between those attempts (default 0)
  --task-runner R        where submitted tasks run: sequential, concurrent (default) or dask
  --param k=v            a run parameter; also a variable of the cell (value: a Python
                         literal, else a string); repeat for more
  --env K=V              an environment variable for the run; repeat for more
  --project P            the project the run is filed under in the store
  --background           start the run and return a handle at once (handle.result(),
                         handle.cancel(), handle.state)
  --no-widget            print the run's lines instead of showing the run widget"""

FLOWBOOK_USAGE = """\
%flowbook runs [--flow NAME] [--state STATE] [--limit N]   past runs, newest first
%flowbook show RUN          the widget of a past run (id, id prefix or name), from the store
%flowbook rerun RUN         run that run's flow again with the same parameters
%flowbook diff RUN_A RUN_B  compare two runs: parameters, state, duration, differing task runs
%flowbook cache             the cache explorer
%flowbook cache clear [--task T] [--flow F] [--expired] [--all]
%flowbook dask              the kernel's Dask cluster: scheduler, dashboard link, workers
%flowbook dask close        close the local Dask cluster
%flowbook dask restart      restart its worker processes (clears their memory)
%flowbook widgets on|off    show (default) or stop showing run widgets"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as IPython usage errors (a message, no traceback)."""

    def __init__(self, usage: str, **kwargs: Any) -> None:
        super().__init__(add_help=False, usage=usage, **kwargs)
        self._usage_text = usage

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n\nUsage:\n{self._usage_text}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(f"{message or ''}\n\nUsage:\n{self._usage_text}")


def _flow_parser() -> _Parser:
    p = _Parser(FLOW_USAGE, prog="%%flow")
    p.add_argument("name", nargs="?", default="notebook-cell")
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("--retry-delay", type=float, default=0.0)
    p.add_argument(
        "--task-runner", choices=("sequential", "concurrent", "dask"), default="concurrent"
    )
    p.add_argument("--param", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--project", default=None)
    p.add_argument("--background", action="store_true")
    p.add_argument("--no-widget", action="store_true")
    return p


def _split(text: str, usage: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot read the options {text!r}: {exc}\n\nUsage:\n{usage}") from None


def _pairs(items: list[str], option: str, literal: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"{option} {item!r}: write it as {option} NAME=VALUE\n\nUsage:\n{FLOW_USAGE}"
            )
        if literal and not key.isidentifier():
            raise UsageError(
                f"{option} {item!r}: {key!r} is not a valid Python name, so it cannot become a "
                f"variable of the cell\n\nUsage:\n{FLOW_USAGE}"
            )
        if literal:
            try:
                out[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                out[key] = value
        else:
            out[key] = value
    return out


def _task_runner(name: str) -> Any:
    if name == "sequential":
        from flowbook.task_runners import SequentialTaskRunner

        return SequentialTaskRunner()
    if name == "dask":
        try:
            from flowbook.task_runners.dask import DaskTaskRunner
        except ImportError as exc:
            raise UsageError(f"--task-runner dask: {exc}") from None
        return DaskTaskRunner()
    from flowbook.task_runners import ConcurrentTaskRunner

    return ConcurrentTaskRunner()


@magics_class
class FlowbookMagics(Magics):
    """``%%flow`` and ``%flowbook``."""

    # -- %%flow ---------------------------------------------------------------------------------
    @cell_magic
    def flow(self, line: str, cell: str) -> Any:
        """Run the cell's body as a flow. ``%%flow --help`` shows the options."""
        if line.strip() in ("--help", "-h"):
            print(FLOW_USAGE)
            return None
        args = _flow_parser().parse_args(_split(line, FLOW_USAGE))
        if args.retries < 0:
            raise UsageError(
                f"--retries {args.retries}: give 0 or a positive whole number\n\nUsage:\n"
                f"{FLOW_USAGE}"
            )
        if args.retry_delay < 0:
            raise UsageError(
                f"--retry-delay {args.retry_delay:g}: give 0 or a positive number of seconds"
                f"\n\nUsage:\n{FLOW_USAGE}"
            )
        params = _pairs(args.param, "--param", literal=True)
        env = _pairs(args.env, "--env", literal=False)
        from flowbook.flows import Flow

        body = self._cell_function(cell, params)
        flow_obj = Flow(
            body,
            name=args.name,
            retries=args.retries,
            retry_delay_seconds=args.retry_delay,
            task_runner=_task_runner(args.task_runner),
            env=env or None,
            project=args.project,
        )
        from flowbook.jupyter import extension

        frontend = extension.active()
        if args.no_widget and frontend is not None:
            with frontend.no_widget():
                return self._start(flow_obj, params, args.background)
        return self._start(flow_obj, params, args.background)

    @staticmethod
    def _start(flow_obj: Any, params: dict[str, Any], background: bool) -> Any:
        if background:
            return flow_obj.run_background(**params)
        return flow_obj(**params)

    def _cell_function(self, cell: str, params: dict[str, Any]) -> Any:
        """A function that runs ``cell`` in the user namespace and returns its last value."""
        shell = self.shell
        assert shell is not None
        source = shell.transform_cell(cell)  # type: ignore[no-untyped-call]
        tree = ast.parse(source, filename="<%%flow cell>")
        last: ast.Expression | None = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        filename = shell.compile.cache(cell, shell.execution_count)
        body_code = compile(tree, filename, "exec")
        last_code = compile(last, filename, "eval") if last is not None else None
        namespace = shell.user_ns

        def notebook_cell(**values: Any) -> Any:
            namespace.update(values)
            exec(body_code, namespace)
            if last_code is not None:
                return eval(last_code, namespace)
            return None

        # the parameters the run records: the --param names
        notebook_cell.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value)
                for name, value in params.items()
            ]
        )
        notebook_cell.__doc__ = cell
        return notebook_cell

    # -- %flowbook -------------------------------------------------------------------------------
    @line_magic
    def flowbook(self, line: str) -> Any:
        """Runs, cache, Dask and widgets: ``%flowbook`` alone shows the subcommands."""
        words = _split(line, FLOWBOOK_USAGE)
        if not words or words[0] in ("help", "--help", "-h"):
            print(FLOWBOOK_USAGE)
            return None
        command, rest = words[0], words[1:]
        handler = {
            "runs": self._runs,
            "show": self._show,
            "rerun": self._rerun,
            "diff": self._diff,
            "cache": self._cache,
            "dask": self._dask,
            "widgets": self._widgets,
        }.get(command)
        if handler is None:
            raise UsageError(
                f"%flowbook {command!r} is not a subcommand\n\nUsage:\n{FLOWBOOK_USAGE}"
            )
        return handler(rest)

    def _runs(self, rest: list[str]) -> Any:
        p = _Parser(FLOWBOOK_USAGE, prog="%flowbook runs")
        p.add_argument("--flow", default=None)
        p.add_argument("--state", default=None)
        p.add_argument("--limit", type=int, default=20)
        args = p.parse_args(rest)
        import flowbook.runs
        from flowbook.jupyter.tables import RunTable

        return RunTable(flowbook.runs.list(flow=args.flow, state=args.state, limit=args.limit))

    @staticmethod
    def _one_run(rest: list[str], command: str) -> str:
        if len(rest) != 1:
            raise UsageError(
                f"%flowbook {command} takes one run (its id, id prefix or name); got "
                f"{' '.join(rest) or 'none'}\n\nUsage:\n{FLOWBOOK_USAGE}"
            )
        return rest[0]

    def _show(self, rest: list[str]) -> Any:
        ref = self._one_run(rest, "show")
        from IPython.display import display

        from flowbook.jupyter.widgets.run_view import RunView

        display(RunView(stored_snapshot(ref)))  # type: ignore[no-untyped-call]
        return None

    def _rerun(self, rest: list[str]) -> Any:
        ref = self._one_run(rest, "rerun")
        from flowbook.store import get_store
        from flowbook.store.queries import load_for_resume

        store = get_store()
        if store is None:
            raise UsageError("%flowbook rerun needs the run store; it is off (FLOWBOOK_STORE=off)")
        _, flow_name, _, parameters, _ = load_for_resume(store, ref)
        flow_obj = self._find_flow(flow_name)
        return flow_obj(**parameters)

    def _diff(self, rest: list[str]) -> Any:
        if len(rest) != 2:
            raise UsageError(
                "%flowbook diff takes two runs (ids, id prefixes or names); got "
                f"{' '.join(rest) or 'none'}\n\nUsage:\n{FLOWBOOK_USAGE}"
            )
        from flowbook.diff import compare_runs
        from flowbook.jupyter.tables import RunDiffTable
        from flowbook.store import get_store

        store = get_store()
        if store is None:
            raise UsageError("%flowbook diff needs the run store; it is off (FLOWBOOK_STORE=off)")
        try:
            return RunDiffTable(compare_runs(store, rest[0], rest[1]))
        except (LookupError, ValueError) as exc:
            raise UsageError(f"%flowbook diff: {exc}") from None

    def _find_flow(self, name: str) -> Any:
        from flowbook.flows import Flow

        assert self.shell is not None
        found = [v for v in self.shell.user_ns.values() if isinstance(v, Flow) and v.name == name]
        if not found:
            raise UsageError(
                f"no flow named {name!r} is defined in this notebook; run the cell that defines "
                "it first, then %flowbook rerun again"
            )
        return found[-1]

    def _cache(self, rest: list[str]) -> Any:
        import flowbook.cache

        if not rest:
            return flowbook.cache.explorer()
        if rest[0] != "clear":
            raise UsageError(
                f"%flowbook cache {rest[0]!r}: the cache subcommand is 'clear'\n\nUsage:\n"
                f"{FLOWBOOK_USAGE}"
            )
        p = _Parser(FLOWBOOK_USAGE, prog="%flowbook cache clear")
        p.add_argument("--task", default=None)
        p.add_argument("--flow", default=None)
        p.add_argument("--expired", action="store_true")
        p.add_argument("--all", action="store_true")
        args = p.parse_args(rest[1:])
        if not (args.task or args.flow or args.expired or args.all):
            raise UsageError(
                "%flowbook cache clear needs --task T, --flow F, --expired or --all (to clear "
                f"everything)\n\nUsage:\n{FLOWBOOK_USAGE}"
            )
        n = flowbook.cache.clear(task=args.task, flow=args.flow, expired=args.expired, all=args.all)
        print(f"Cleared {n} cache entr{'y' if n == 1 else 'ies'}.")
        return None

    def _dask(self, rest: list[str]) -> Any:
        # A Dask cluster exists only if the Dask task runner's module was loaded; until then
        # this answers without importing it (or Dask).
        module = sys.modules.get("flowbook.task_runners.dask")
        if not rest:
            clusters = module.connections() if module is not None else []
            if not clusters:
                print(
                    "No Dask cluster is running in this kernel; the first flow run with "
                    "DaskTaskRunner() (or %%flow --task-runner dask) starts one."
                )
                return None
            from flowbook.jupyter.tables import DaskClusters

            return DaskClusters(clusters)
        command = rest[0]
        if command not in ("close", "restart"):
            raise UsageError(
                f"%flowbook dask {command!r}: the dask subcommands are 'close' and 'restart'"
                f"\n\nUsage:\n{FLOWBOOK_USAGE}"
            )
        if len(rest) > 1:
            raise UsageError(
                f"%flowbook dask {command} takes nothing after it; got {' '.join(rest[1:])!r}"
                f"\n\nUsage:\n{FLOWBOOK_USAGE}"
            )
        if command == "close":
            if module is not None and module.close_cluster():
                print("Closed the local Dask cluster.")
            else:
                print("No local Dask cluster is running in this kernel; nothing to close.")
            return None
        try:
            restarted = module is not None and module.restart_cluster()
        except RuntimeError as exc:  # workers that cannot be restarted: say why, no traceback
            raise UsageError(f"%flowbook dask restart: {exc}") from None
        if restarted:
            print("Restarted the workers of the local Dask cluster.")
        else:
            print("No local Dask cluster is running in this kernel; nothing to restart.")
        return None

    def _widgets(self, rest: list[str]) -> Any:
        from flowbook.jupyter import extension

        if rest not in (["on"], ["off"]):
            raise UsageError(f"%flowbook widgets takes on or off\n\nUsage:\n{FLOWBOOK_USAGE}")
        frontend = extension.active()
        if frontend is not None:
            frontend.widgets = rest == ["on"] and frontend.kernel is not None
        return None


def stored_snapshot(ref: str) -> dict[str, Any]:
    """The widget snapshot of a past run (and its subflows) from the store."""
    import flowbook.runs
    from flowbook.jupyter.model import StoredRun

    detail = flowbook.runs.get(ref)
    subflows: dict[str, Any] = {}
    pending = [t["subflow_run_id"] for t in detail.task_run_list if t.get("subflow_run_id")]
    while pending:
        sub_id = pending.pop()
        sub = flowbook.runs.get(sub_id)
        subflows[sub_id] = sub
        pending += [t["subflow_run_id"] for t in sub.task_run_list if t.get("subflow_run_id")]
    return StoredRun(detail, subflows).snapshot()
