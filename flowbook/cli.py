"""The ``flowbook`` command: look at runs and the cache from a terminal.

    flowbook runs [--flow NAME] [--state STATE] [--limit N] [--json]
    flowbook runs show RUN [--json]
    flowbook runs delete RUN
    flowbook cache ls [--task NAME] [--flow NAME] [--json]
    flowbook cache clear [--task NAME] [--flow NAME] [--expired] [--all]
    flowbook cache why TASK [--json]

It reads the store the ``FLOWBOOK_*`` variables point at (``~/.flowbook`` by default).
Exit status: 0 on success, 1 when the store cannot be used or a run is not found, 2 for bad
command-line input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowbook", description="Inspect flowbook's run store: past runs and the cache."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{runs,cache}")

    runs = sub.add_parser("runs", help="list flow runs (newest first), or show/delete one")
    runs.add_argument("--flow", help="only runs of this flow")
    runs.add_argument("--state", help="only runs in this state (e.g. Failed, Completed)")
    runs.add_argument("--limit", type=_positive, default=20, help="at most N runs (default 20)")
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs_sub = runs.add_subparsers(dest="action", metavar="{show,delete}")
    show = runs_sub.add_parser("show", help="a run's states, task runs and logs")
    show.add_argument("run", help="run id, id prefix or run name")
    show.add_argument("--json", action="store_true", help="print JSON")
    remove = runs_sub.add_parser("delete", help="delete a run and everything recorded for it")
    remove.add_argument("run", help="run id, id prefix or run name")

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from flowbook.store import StoreError, get_store

    try:
        store = get_store()
        if store is None:
            raise StoreError("FLOWBOOK_STORE=off: there is no run store to read")
        if args.command == "runs":
            return _runs(store, args)
        return _cache(store, args)
    except (StoreError, LookupError, ValueError) as exc:
        print(f"flowbook: {exc}", file=sys.stderr)
        return 1


def _runs(store: Any, args: argparse.Namespace) -> int:
    from flowbook.store import queries

    if args.action == "show":
        detail = queries.get_run(store, args.run)
        if args.json:
            print(json.dumps(detail.as_dict(), indent=2))
        else:
            _print_detail(detail)
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
        for line in detail.logs:
            print(f"    {_when(line['timestamp'])} | {line['logger']} - {line['message']}")


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    if not rows:
        print("(none)")
        return
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _when(iso: str | None) -> str:
    return "" if not iso else iso.replace("T", " ")[:19]


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
