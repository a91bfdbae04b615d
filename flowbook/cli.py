"""The ``flowbook`` command: look at runs and the cache, and run registered flows.

    flowbook runs [--flow NAME] [--state STATE] [--limit N] [--json]
    flowbook runs show RUN [--json]
    flowbook runs delete RUN
    flowbook runs diff RUN_A RUN_B [--json]
    flowbook cache ls [--task NAME] [--flow NAME] [--json]
    flowbook cache clear [--task NAME] [--flow NAME] [--expired] [--all]
    flowbook cache why TASK [--json]
    flowbook doctor [--json] [--repair]
    flowbook gc [--older-than DAYS] [--keep-last N] [--expired-cache] [--vacuum] [--dry-run]
                [--json]
    flowbook flows [--project P] [--json]
    flowbook run (--name NAME [--project P] | --id ID) [--param KEY=JSON]... [--env KEY=VALUE]...
                 [--watch]

It reads the store the ``FLOWBOOK_*`` variables point at (``~/.flowbook`` by default).
Exit status: 0 on success, 1 when the store cannot be used or a run is not found, 2 for bad
command-line input, 141 (as for a program stopped by SIGPIPE) when the reader of the output
went away early, as ``head`` does; errors are one line on stderr, never a traceback.
``flowbook run`` exits with 0 when the flow run completed and 1 when it did not (or the flow
could not be found or loaded), 2 for bad input (a parameter or variable it cannot use).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _limit(text: str) -> int:
    from flowbook.store.queries import MAX_LIMIT

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive whole number; give one from 1 to {MAX_LIMIT}"
        )
    if value > MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is more than {MAX_LIMIT}; give a whole number from 1 to {MAX_LIMIT}"
        )
    return value


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e7:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days >= 0 (e.g. 30, 0.5)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of runs >= 0")
    return value


def _state(text: str) -> str:
    from flowbook.store.queries import check_state

    try:
        return check_state(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run_ref(text: str) -> str:
    from flowbook.store.queries import check_run_ref

    try:
        return check_run_ref(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowbook",
        description="Inspect flowbook's run store (past runs, the cache, registered flows) "
        "and run registered flows.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{runs,cache,doctor,gc,flows,run}"
    )

    runs = sub.add_parser("runs", help="list flow runs (newest first), or show/delete one")
    runs.add_argument("--flow", help="only runs of this flow")
    runs.add_argument(
        "--state", type=_state, help="only runs in this state (e.g. Failed, Completed)"
    )
    runs.add_argument("--limit", type=_limit, default=20, help="at most N runs (default 20)")
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs_sub = runs.add_subparsers(dest="action", metavar="{show,delete,diff}")
    show = runs_sub.add_parser("show", help="a run's states, task runs and logs")
    show.add_argument("run", type=_run_ref, help="run id, id prefix or run name")
    show.add_argument("--json", action="store_true", help="print JSON")
    remove = runs_sub.add_parser("delete", help="delete a run and everything recorded for it")
    remove.add_argument("run", type=_run_ref, help="run id, id prefix or run name")
    diff = runs_sub.add_parser(
        "diff",
        help="compare two runs: parameters, state, duration, and the task runs that differ",
    )
    diff.add_argument("run_a", metavar="RUN_A", type=_run_ref, help="run id, id prefix or name")
    diff.add_argument("run_b", metavar="RUN_B", type=_run_ref, help="run id, id prefix or name")
    diff.add_argument("--json", action="store_true", help="print JSON")

    cache = sub.add_parser("cache", help="list or clear cache entries, explain misses")
    cache_sub = cache.add_subparsers(dest="action", required=True, metavar="{ls,clear,why}")
    ls = cache_sub.add_parser("ls", help="list cache entries")
    ls.add_argument("--task", help="only entries of this task")
    ls.add_argument("--flow", help="only entries written in runs of this flow")
    ls.add_argument("--json", action="store_true", help="print JSON")
    clear = cache_sub.add_parser("clear", help="delete cache entries")
    clear.add_argument("--task", help="entries of this task")
    clear.add_argument("--flow", help="entries written in runs of this flow")
    clear.add_argument("--expired", action="store_true", help="expired entries")
    clear.add_argument("--all", action="store_true", help="every entry")
    why = cache_sub.add_parser("why", help="why the latest cached call of a task missed")
    why.add_argument("task", help="the task's name, or its task key (as `cache ls --json` shows)")
    why.add_argument("--json", action="store_true", help="print JSON")

    doctor = sub.add_parser(
        "doctor", help="check the store: contents, integrity, dropped records, result files"
    )
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.add_argument(
        "--repair",
        action="store_true",
        help="copy what can be read of a damaged SQLite store into a fresh one, and remove "
        "result files no row points at",
    )

    gc = sub.add_parser(
        "gc", help="delete old finished runs (and expired cache entries) with their files"
    )
    gc.add_argument(
        "--older-than",
        type=_days,
        metavar="DAYS",
        help="finished top-level runs created more than DAYS ago (default: "
        "FLOWBOOK_RUN_RETENTION_DAYS)",
    )
    gc.add_argument(
        "--keep-last", type=_count, metavar="N", help="keep the newest N top-level runs"
    )
    gc.add_argument(
        "--expired-cache", action="store_true", help="also expired cache entries and their files"
    )
    gc.add_argument(
        "--vacuum",
        action="store_true",
        help="SQLite: rewrite the file to give free pages back (slow; needs free disk)",
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    gc.add_argument("--json", action="store_true", help="print JSON")

    flows = sub.add_parser(
        "flows", help="list registered flows, and the flows with runs that were never registered"
    )
    flows.add_argument("--project", "-p", help="only flows of this project")
    flows.add_argument("--json", action="store_true", help="print JSON")

    run = sub.add_parser(
        "run", help="run a registered flow in this process, from the script it was registered from"
    )
    run.add_argument("--name", "-n", help="the name of the flow")
    run.add_argument(
        "--id", "-i", dest="flow_id", metavar="ID", help="the id of the flow (as register printed)"
    )
    run.add_argument("--project", "-p", help="the project the flow is registered in")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a parameter value, as JSON (strings in quotes: --param 'name=\"Ford\"'); repeat",
    )
    run.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the run (over the flow's run config env); repeat",
    )
    run.add_argument(
        "--watch",
        "-w",
        action="store_true",
        help="follow the run (always so: it runs in this process and prints as it goes)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status = _command(args)
        sys.stdout.flush()  # a reader that closed the pipe early is found here at the latest
    except BrokenPipeError:
        return _reader_went_away()
    return status


def _command(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        return _doctor(args)
    from sqlalchemy.exc import SQLAlchemyError

    from flowbook.store import StoreError, get_store
    from flowbook.store.database import as_store_error

    store = None
    try:
        store = get_store()
        if store is None:
            raise StoreError("FLOWBOOK_STORE=off: there is no run store to read")
        if args.command == "runs":
            return _runs(store, args)
        if args.command == "flows":
            return _flows(store, args)
        if args.command == "run":
            return _run_registered(store, args)
        if args.command == "gc":
            return _gc(store, args)
        return _cache(store, args)
    except (StoreError, LookupError, ValueError) as exc:
        _fail(exc)
        return 1
    except SQLAlchemyError as exc:  # the database failed while being read (locked, gone)
        from flowbook.settings import get_settings

        _fail(as_store_error(exc, store.url if store is not None else get_settings().store_url))
        return 1


def _fail(exc: BaseException) -> None:
    """One line on stderr: the message, with any line breaks of a driver's text joined."""
    print("flowbook: " + " ".join(line.strip() for line in str(exc).splitlines()), file=sys.stderr)


def _reader_went_away() -> int:
    # Whatever is still buffered for stdout would be flushed at exit into the closed pipe and
    # print "Exception ignored ... BrokenPipeError": point stdout at /dev/null first.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13  # 13 is SIGPIPE: the status `seq 1000000 | head -1` gives `seq`


def _runs(store: Any, args: argparse.Namespace) -> int:
    from flowbook.store import queries

    if args.action == "show":
        detail = queries.get_run(store, args.run)
        if args.json:
            print(json.dumps(detail.as_dict(), indent=2))
        else:
            _print_detail(detail)
        return 0
    if args.action == "diff":
        from flowbook.diff import compare_runs

        compared = compare_runs(store, args.run_a, args.run_b)
        if args.json:
            print(json.dumps(compared.as_dict(), indent=2))
        else:
            from flowbook.diff import render_text

            print(render_text(compared))
        return 0
    if args.action == "delete":
        count = queries.delete_run(store, args.run)
        print(f"deleted {count} flow run(s)")
        return 0
    rows = queries.list_runs(store, flow=args.flow, state=args.state, limit=args.limit)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    table = [
        (
            r.id[:8],
            r.name,
            r.flow_name,
            r.state or "-",
            _when(r.start_time),
            _secs(r.duration_s),
            str(r.task_runs),
        )
        for r in rows
    ]
    _print_table(("ID", "NAME", "FLOW", "STATE", "STARTED", "DURATION", "TASKS"), table)
    return 0


def _cache(store: Any, args: argparse.Namespace) -> int:
    from flowbook.store import queries

    if args.action == "why":
        explanation = queries.why_missed(store, args.task)
        if args.json:
            print(json.dumps(explanation.as_dict(), indent=2))
        else:
            _print_miss(explanation)
        return 0
    if args.action == "clear":
        if not (args.task or args.flow or args.expired or args.all):
            print(
                "flowbook cache clear: say which entries: --task NAME, --flow NAME, --expired "
                "or --all",
                file=sys.stderr,
            )
            return 2
        count = queries.clear_cache(
            store, task=args.task, flow=args.flow, expired=args.expired, all=args.all
        )
        print(f"cleared {count} cache entr{'y' if count == 1 else 'ies'}")
        return 0
    rows = queries.cache_entries_info(store, task=args.task, flow=args.flow)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    table = [
        (
            r.key[:16],
            r.task_name,
            r.flow_name or "-",
            _when(r.created),
            "expired" if r.expired else _when(r.expires) or "never",
            _size(r.size),
            str(r.hits),
        )
        for r in rows
    ]
    _print_table(("KEY", "TASK", "FLOW", "CREATED", "EXPIRES", "SIZE", "HITS"), table)
    return 0


def _flows(store: Any, args: argparse.Namespace) -> int:
    from flowbook.store import queries

    rows = queries.list_flows(store, project=args.project)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    table = [
        (
            "registered" if r.registered else "runs only",
            r.name,
            r.project or "-",
            str(r.version) if r.version is not None else "-",
            _when(r.registered_at) or "-",
            str(r.runs),
            _when(r.last_run) or "-",
            _parameters(r.parameters),
            r.where or "-",
        )
        for r in rows
    ]
    _print_table(
        (
            "KIND",
            "FLOW",
            "PROJECT",
            "VERSION",
            "REGISTERED",
            "RUNS",
            "LAST RUN",
            "PARAMETERS",
            "WHERE",
        ),
        table,
    )
    return 0


def _parameters(parameters: list[dict[str, Any]] | None) -> str:
    if parameters is None:
        return "-"
    shown = []
    for p in parameters:
        if p["required"]:
            shown.append(f"{p['name']} (required)")
        elif p["jsonable"]:
            shown.append(f"{p['name']}={json.dumps(p['default'])}")
        else:
            shown.append(f"{p['name']}={p['repr']} (not JSON)")
    return ", ".join(shown) or "-"


class _BadInput(ValueError):
    """Command-line input ``flowbook run`` cannot use (exit status 2)."""


def _run_registered(store: Any, args: argparse.Namespace) -> int:
    """``flowbook run``: load the registered flow from its script and run it here."""
    from flowbook.engine.env import acquire_env, release_env
    from flowbook.registry import LoadError, load_registered_flow
    from flowbook.store import queries

    try:
        if (args.name is None) == (args.flow_id is None):
            raise _BadInput("say which flow: --name NAME [--project P], or --id ID")
        try:
            registered = queries.find_registered_flow(
                store, name=args.name, project=args.project, flow_id=args.flow_id
            )
        except ValueError as exc:  # a name registered in several projects
            raise _BadInput(str(exc)) from None
        given = _given_parameters(args.param)
        env = _run_env(args.env)
    except _BadInput as exc:
        _fail(exc)
        return 2
    # for the script's import too, as an agent's --env was
    label = f"flowbook run of flow {registered.name!r}"
    acquire_env(label, env)
    try:
        try:
            flow = load_registered_flow(registered)
        except LoadError as exc:
            _fail(exc)
            return 1
        try:
            # checked against the flow the script defines now, which is the one that runs
            parameters = _run_parameters(flow, given)
        except _BadInput as exc:
            _fail(exc)
            return 2
        flow.project = registered.project
        _env_over_the_flows(flow, env)
        return _run_loaded(flow, parameters)
    finally:
        release_env(label, env)


def _given_parameters(given: list[str]) -> dict[str, Any]:
    """The values of ``--param KEY=JSON``, by name."""
    values: dict[str, Any] = {}
    for item in given:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise _BadInput(
                f"--param {item!r} is not KEY=JSON; give e.g. --param 'people=[\"Ford\"]'"
            )
        try:
            values[key] = json.loads(text)
        except ValueError:
            raise _BadInput(
                f"the value of parameter {key!r}, {text!r}, is not JSON; give "
                f"a JSON value (a string in double quotes: --param '{key}=\"{text}\"')"
            ) from None
    return values


def _run_parameters(flow: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked against the loaded flow's parameters; the others keep its defaults."""
    if callable(getattr(flow, "parameters", None)):  # a functional flow
        required = {p.name: bool(p.required) for p in flow.parameters()}
        open_ended = False
    else:
        kinds = flow.signature.parameters.values()
        required = {
            p.name: p.default is p.empty
            for p in kinds
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        open_ended = any(p.kind is p.VAR_KEYWORD for p in kinds)
    names = ", ".join(sorted(required)) or "none"
    for key in values:
        if key not in required and not open_ended:
            raise _BadInput(
                f"{key!r} is not a parameter of flow {flow.name!r}; its parameters are: {names}"
            )
    for name in sorted(required):
        if required[name] and name not in values:
            raise _BadInput(
                f"flow {flow.name!r} needs parameter {name!r}; give it with --param '{name}=JSON'"
            )
    return values


def _run_env(given: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key or "\0" in item:
            raise _BadInput(f"--env {item!r} is not KEY=VALUE; give e.g. --env GREETING=Hello")
        env[key] = value
    return env


def _env_over_the_flows(flow: Any, env: dict[str, str]) -> None:
    """Make --env win over the env the flow sets for its runs (run config, @flow(env=))."""
    if not env:
        return
    import copy

    run_config = getattr(flow, "run_config", None)
    if run_config is not None and isinstance(getattr(run_config, "env", None), dict):
        run_config = copy.copy(run_config)
        run_config.env = {**run_config.env, **env}
        flow.run_config = run_config
    if isinstance(getattr(flow, "env", None), dict) and flow.env:
        flow.env = {**flow.env, **{k: v for k, v in env.items() if k in flow.env}}


def _run_loaded(flow: Any, parameters: dict[str, Any]) -> int:
    """Run the flow; 0 when the run completed, else 1."""
    # a functional flow's module is imported whenever one exists
    functional_class = getattr(sys.modules.get("flowbook.functional"), "FunctionalFlow", None)
    try:
        if functional_class is not None and isinstance(flow, functional_class):
            state = flow.run(parameters=parameters)
            ok = bool(state.is_successful())
        else:
            state = flow(**parameters, return_state=True)
            ok = bool(state.is_completed())
    except Exception as exc:  # the run could not start (a parameter the flow refused, ...)
        _fail(RuntimeError(f"flow {flow.name!r} could not run: {type(exc).__name__}: {exc}"))
        return 1
    name = getattr(state, "name", None) or type(state).__name__
    message = getattr(state, "message", None)
    print(f"flow {flow.name!r}: {name}{f' ({message})' if message else ''}")
    return 0 if ok else 1


def _gc(store: Any, args: argparse.Namespace) -> int:
    """Delete old finished runs (and expired cache entries) in small transactions."""
    from flowbook.settings import get_settings
    from flowbook.store.gc import collect

    older = args.older_than
    if older is None and args.keep_last is None:
        older = get_settings().run_retention_days
    if older is None and args.keep_last is None and not args.expired_cache:
        raise ValueError(
            "say what to delete: --older-than DAYS, --keep-last N, --expired-cache, or set "
            "FLOWBOOK_RUN_RETENTION_DAYS"
        )
    store.flush()
    report = collect(
        store.engine,
        store.results_dir,
        older_than_days=older,
        keep_last=args.keep_last,
        expired_cache=args.expired_cache,
        dry_run=args.dry_run,
        vacuum=args.vacuum,
    )
    if args.expired_cache and not args.dry_run:
        store.cache.forget_all()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    verb = "would delete" if report.dry_run else "deleted"
    print(
        f"gc: {verb} {report.flow_runs} flow run(s), {report.task_runs} task run(s), "
        f"{report.log_lines} log line(s), {report.states} state(s), "
        f"{report.cache_entries} cache entr(ies), {report.files} file(s) "
        f"({_size(report.file_bytes)})"
    )
    if report.unfinished_kept:
        print(f"gc: kept {report.unfinished_kept} unfinished run(s)")
    if report.orphan_files:
        print(f"gc: removed {report.orphan_files} file(s) no row pointed at")
    if report.keys_filled:
        print(
            f"gc: filled in the flow-run keys of {report.keys_filled} row(s) written by an "
            "older flowbook"
        )
    if report.vacuum:
        print(f"gc: space: {report.vacuum}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    """Check the store without opening it as a run would; exit 1 when a problem is found."""
    import sqlite3

    from flowbook.settings import get_settings
    from flowbook.store.doctor import DoctorError, diagnose, repair

    try:
        settings = get_settings()
        fixed = repair(settings.store_url, settings.results_dir) if args.repair else None
        report = diagnose(settings.store_url, settings.results_dir)
    except (DoctorError, ValueError, OSError, sqlite3.Error) as exc:
        _fail(exc)
        return 1
    if args.json:
        data = report.as_dict()
        if fixed is not None:
            data["repair"] = fixed.as_dict()
        print(json.dumps(data, indent=2))
    else:
        if fixed is not None:
            _print_repair(fixed)
        _print_report(report)
    return 1 if report.problems else 0


def _print_repair(fixed: Any) -> None:
    if fixed.copied:
        print(f"repair:     copied the readable rows into a fresh {fixed.store}")
        print(f"            the damaged file is kept as {fixed.kept_as}")
        for line in fixed.not_copied:
            print(f"            not copied: {line}")
    for note in fixed.notes:
        print(f"repair:     {note}")
    if fixed.orphans_removed:
        print(f"repair:     removed {len(fixed.orphans_removed)} file(s) no row pointed at")


def _print_report(report: Any) -> None:
    size = f", {_size(report.size_bytes)}" if report.size_bytes is not None else ""
    if report.wal_bytes:
        size += f" with its WAL {_size(report.wal_bytes)}"
    if report.results_files:
        size += f"; results: {report.results_files} file(s), {_size(report.results_bytes)}"
    version = f", schema version {report.schema_version}" if report.schema_version else ""
    print(f"store:      {report.store} ({report.backend}{size}{version})")
    print(f"results:    {report.results_dir}")
    if report.counts:
        counted = ", ".join(
            f"{table.replace('_', ' ').replace('logs', 'log lines')}: {'?' if n is None else n}"
            for table, n in report.counts.items()
        )
        print(f"records:    {counted}")
    print(f"integrity:  {'ok' if not report.integrity else f'{len(report.integrity)} problem(s)'}")
    for line in report.integrity:
        print(f"  {line}")
    if not report.drops_total:
        print("dropped:    none")
    else:
        from flowbook.store.drops import NAMES

        kinds = ", ".join(f"{NAMES.get(w, w)}s: {n}" for w, n in report.drops_by_kind.items())
        print(f"dropped:    {report.drops_total} record(s) could not be written ({kinds});")
        print("            the most recent:")
        for drop in report.recent_drops:
            run = f" of run {drop['run_id']}" if drop["run_id"] else ""
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(drop["at"]))
            print(f"  {when}  {NAMES.get(drop['what'], drop['what'])}{run}: {drop['reason']}")
    if not report.orphans and not report.missing:
        print("files:      ok")
    if report.orphans:
        print(
            f"files:      {len(report.orphans)} file(s) no row points at "
            "(`flowbook doctor --repair` removes them):"
        )
        for name in report.orphans[:20]:
            print(f"  {name}")
        if len(report.orphans) > 20:
            print(f"  ... and {len(report.orphans) - 20} more")
    if report.missing:
        print(f"files:      {len(report.missing)} row(s) whose result file is missing:")
        for row in report.missing[:20]:
            print(f"  {row['kind']} {row['row']}: {row['file']}")
        if len(report.missing) > 20:
            print(f"  ... and {len(report.missing) - 20} more")
    _print_reclaimable(report.reclaimable)
    for note in report.notes:
        print(f"note:       {note}")
    problems = report.problems
    if problems:
        print(f"flowbook doctor: {len(problems)} problem(s) found")
    else:
        print("flowbook doctor: no problem found")


def _print_reclaimable(free: dict[str, Any]) -> None:
    """What `flowbook gc` would free, when there is something (table sizes: `--json`)."""
    parts = []
    if free.get("runs_older_than_retention"):
        parts.append(
            f"{free['runs_older_than_retention']} finished run(s) older than "
            f"FLOWBOOK_RUN_RETENTION_DAYS={free['retention_days']:g}"
        )
    if free.get("expired_cache_entries"):
        parts.append(f"{free['expired_cache_entries']} expired cache entr(ies)")
    if free.get("free_page_bytes"):
        parts.append(f"{_size(free['free_page_bytes'])} of free pages (`gc --vacuum`)")
    if parts:
        print(f"gc:         would free {'; '.join(parts)}")


def _print_miss(miss: Any) -> None:
    print(f"{miss.task_name}: {miss.reason}")
    run = f" (task run {miss.task_run!r})" if miss.task_run else ""
    flow = f" in flow {miss.flow_name!r}" if miss.flow_name else ""
    print(f"  missed at:  {_when(miss.missed_at)}{run}{flow}")
    print(f"  key:        {miss.key[:16]}")
    if miss.input_preview:
        print(f"  inputs:     {miss.input_preview}")
    if miss.compared_key:
        print(f"  compared:   {miss.compared_key[:16]} (stored {_when(miss.compared_created)})")
    if miss.hits_since:
        print(f"  since then: {miss.hits_since} call(s) served from the cache")
    print(f"  task key:   {miss.task_key}")


def _print_detail(detail: Any) -> None:
    print(f"Flow run {detail.name!r} of flow {detail.flow_name!r} ({detail.id})")
    print(f"  state:      {detail.state} {detail.message or ''}".rstrip())
    print(f"  started:    {_when(detail.start_time)}   duration: {_secs(detail.duration_s)}")
    if detail.parameters:
        print(f"  parameters: {', '.join(f'{k}={v}' for k, v in detail.parameters.items())}")
    print("  states:")
    for s in detail.states:
        print(f"    {_when(s['timestamp'])}  {s['name']}  {s['message'] or ''}".rstrip())
    print(f"  task runs ({len(detail.task_run_list)}):")
    for t in detail.task_run_list:
        print(f"    {t['name']:<30} {t['state'] or '-':<12} {t['message'] or ''}".rstrip())
    if detail.logs:
        print("  logs:")
        names = {t["id"]: f"Task run {t['name']!r}" for t in detail.task_run_list}
        for line in detail.logs:
            print("    " + _log_line(line, names, f"Flow run {detail.name!r}"))


def _log_line(line: dict[str, Any], names: dict[str, str], flow_run: str) -> str:
    """A stored log line as the console wrote it; printed text is marked with its stream."""
    import logging

    who = line["logger"]
    if who in ("stdout", "stderr"):  # printed text (see docs: the store keeps prints)
        who = f"{names.get(line['task_run_id'] or '', flow_run)} [{who}]"
    level = logging.getLevelName(line["level"])
    message = str(line["message"]).replace("\n", "\n      ")
    return f"{_when(line['timestamp'], ms=True)} | {level:<7} | {who} - {message}"


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    if not rows:
        print("(none)")
        return
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _when(iso: str | None, *, ms: bool = False) -> str:
    if not iso:
        return ""
    when = iso.replace("T", " ")[:19]
    if ms:
        when += iso[19:23] if iso[19:20] == "." else ".000"
    return when


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f}{unit}"
        n //= 1024
    return f"{n}TB"


if __name__ == "__main__":  # pragma: no cover - `python -m flowbook.cli`
    raise SystemExit(main())
