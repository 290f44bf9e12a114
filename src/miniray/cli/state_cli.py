"""``miniray list | get | summary | memory | logs | timeline``: Ray's state CLI.

    miniray list tasks [--filter "state=FAILED" ...] [--detail] [--format table|json|yaml]
                       [--limit N]
    miniray get actors <id>               (an id, or the start of one)
    miniray summary tasks|actors|objects
    miniray memory [--group-by NODE_ADDRESS|STACK_TRACE] [--sort-by PID|OBJECT_SIZE|
                   REFERENCE_TYPE] [--units B|KB|MB|GB] [--no-format] [--stats-only]
    miniray logs [FILENAME | --actor-id ID | --task-id ID | --pid PID] [--node-id ID]
                 [--follow] [--tail N]
    miniray timeline [--output FILE]

Every command finds the cluster as ``miniray status`` does (--address,
else $MINIRAY_ADDRESS, else the cluster ``miniray start`` recorded) and
reads it through ``miniray.util.state``; none joins it as a driver.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import os
import shutil
import sys
import tempfile
import textwrap
from dataclasses import dataclass, fields

from miniray.cli.format import (
    human_bytes, id_matches, render_table, short_id, shorten_ids, to_json, to_yaml)

__all__ = ["add_commands"]

_RULE = "-" * 30


@dataclass(frozen=True)
class Column:
    field: str
    header: str
    kind: str = "text"         # id, bytes, text


@dataclass(frozen=True)
class Resource:
    name: str                  # as the CLI spells it: "placement-groups"
    lister: str                # function of miniray.util.state
    record: str                # its record class
    id_field: str
    columns: tuple             # the table's columns without --detail


def _c(field, header=None, kind="text"):
    return Column(field, header or field.upper(), kind)


RESOURCES = {r.name: r for r in (
    Resource("actors", "list_actors", "ActorState", "actor_id", (
        _c("actor_id", kind="id"), _c("class_name"), _c("state"), _c("name"),
        _c("pid"), _c("node_id", kind="id"), _c("num_restarts", "RESTARTS"))),
    Resource("tasks", "list_tasks", "TaskState", "task_id", (
        _c("task_id", kind="id"), _c("attempt_number", "ATTEMPT"), _c("name"),
        _c("state"), _c("type"), _c("worker_pid", "PID"), _c("error_type"))),
    Resource("objects", "list_objects", "ObjectState", "object_id", (
        _c("object_id", kind="id"), _c("object_size", "SIZE", "bytes"),
        _c("reference_type", "REF_TYPE"), _c("task_status"), _c("type"),
        _c("pid"), _c("ip"))),
    Resource("nodes", "list_nodes", "NodeState", "node_id", (
        _c("node_id", kind="id"), _c("node_ip"), _c("is_head_node", "HEAD"),
        _c("state"), _c("node_name"), _c("resources_total", "RESOURCES"))),
    Resource("workers", "list_workers", "WorkerState", "worker_id", (
        _c("worker_id", kind="id"), _c("worker_type", "TYPE"), _c("is_alive", "ALIVE"),
        _c("pid"), _c("job_id"), _c("node_id", kind="id"), _c("exit_type"))),
    Resource("jobs", "list_jobs", "JobState", "job_id", (
        _c("job_id"), _c("status"), _c("type"), _c("namespace"), _c("driver_pid"))),
    Resource("placement-groups", "list_placement_groups", "PlacementGroupState",
             "placement_group_id", (
                 _c("placement_group_id", "ID", "id"), _c("name"), _c("state"),
                 _c("strategy"), _c("bundles"), _c("creator_job_id", "JOB_ID"))),
)}
_ALIASES = {"placement_groups": "placement-groups", "pgs": "placement-groups"}


def _resource(text: str) -> Resource:
    name = _ALIASES.get(text.lower(), text.lower())
    if name not in RESOURCES:
        raise argparse.ArgumentTypeError(
            f"unknown resource {text!r}: choose from {', '.join(RESOURCES)}")
    return RESOURCES[name]


def _state():
    from miniray.util import state
    return state


# --- cells ----------------------------------------------------------------------------
def _resources_cell(resources: dict) -> str:
    parts = []
    for name in sorted(resources, key=lambda n: (n not in ("CPU", "GPU"), n)):
        if name.startswith("node:"):
            continue
        amount = resources[name]
        if name in ("memory", "object_store_memory"):
            parts.append(f"{human_bytes(amount).replace(' ', '')} {name}")
        else:
            parts.append(f"{amount:g} {name}")
    return ", ".join(parts)


def _cell(value, kind: str = "text", detail: bool = False) -> str:
    if value is None:
        return ""
    if kind == "id" and not detail:
        return short_id(value)
    if kind == "bytes":
        return "?" if value < 0 else human_bytes(value)
    if isinstance(value, dict):
        return _resources_cell(value) if value and all(
            isinstance(v, (int, float)) for v in value.values()) else to_json_compact(value)
    if isinstance(value, list):
        return str(len(value)) if not detail else to_json_compact(value)
    return str(value)


def to_json_compact(value) -> str:
    import json
    return json.dumps(value, separators=(",", ":"), default=str)


def _width() -> int:
    return shutil.get_terminal_size((80, 24)).columns


def _records_table(resource: Resource, records: list, detail: bool) -> str:
    if detail:
        names = [f.name for f in fields(type(records[0]))] if records else \
            [c.field for c in resource.columns]
        kinds = {c.field: c.kind for c in resource.columns}
        headers = [n.upper() for n in names]
        rows = [[_cell(getattr(r, n), kinds.get(n, "text"), detail=True) for n in names]
                for r in records]
        return render_table(headers, rows)
    headers = [c.header for c in resource.columns]
    shown = {c.field: shorten_ids(getattr(r, c.field) for r in records)
             for c in resource.columns if c.kind == "id"}
    rows = [[shown[c.field].get(str(getattr(r, c.field)), "") if c.field in shown
             else _cell(getattr(r, c.field), c.kind) for c in resource.columns]
            for r in records]
    return render_table(headers, rows, max_width=_width())


def _banner(title: str) -> str:
    return f"======== {title}: {datetime.datetime.now():%Y-%m-%d %H:%M:%S} ========"


def _output(data, fmt: str) -> str:
    return to_json(data) if fmt == "json" else to_yaml(data)


# --- commands --------------------------------------------------------------------------
def _reports_errors(command):
    """Errors the user can act on end the command with a message, exit code 1."""
    @functools.wraps(command)
    def run(args) -> int:
        from miniray.util.state import RayStateApiException
        try:
            return command(args)
        except BrokenPipeError:         # e.g. `miniray logs ... | head`
            sys.stderr.close()
            return 0
        except (ConnectionError, RayStateApiException, ValueError, OSError) as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
    return run


@_reports_errors
def cmd_list(args) -> int:
    from miniray.util.state.common import parse_filter
    resource = args.resource
    filters = [parse_filter(f) for f in args.filter or []]
    lister = getattr(_state(), resource.lister)
    # One more than asked: to say whether there are more.
    records = lister(address=args.address, filters=filters, limit=args.limit + 1,
                     timeout=args.timeout, detail=args.detail)
    more = len(records) > args.limit
    records = records[:args.limit]
    fmt = args.format
    if fmt == "default":
        fmt = "yaml" if args.detail else "table"
    if fmt != "table":
        print(_output([r.to_dict() for r in records], fmt))
        return 0
    out = [_banner("List"), "Stats:", _RULE,
           f"Total: {len(records)}{'+' if more else ''}", "", "Table:", _RULE,
           _records_table(resource, records, args.detail)]
    if not records:
        out.append(f"(no {resource.name} match)" if filters else f"(no {resource.name})")
    if more:
        out += ["", f"Showing the first {args.limit}: there are more (use --limit to see "
                    f"more, --filter to narrow them down)."]
    print("\n".join(out))
    return 0


@_reports_errors
def cmd_get(args) -> int:
    resource = args.resource
    lister = getattr(_state(), resource.lister)
    wanted = args.id.strip()
    records = lister(address=args.address, filters=[(resource.id_field, "=", wanted)],
                     limit=-1, timeout=args.timeout, detail=True)
    if not records:                        # part of an id, as tables show it
        everything = lister(address=args.address, limit=-1, timeout=args.timeout,
                            detail=True)
        for aligned in (True, False):
            records = [r for r in everything if id_matches(
                str(getattr(r, resource.id_field) or ""), wanted, aligned)]
            if records:
                break
        ids = {getattr(r, resource.id_field) for r in records}
        if len(ids) > 1:
            raise ValueError(f"{args.id} is the start of {len(ids)} {resource.name} ids: "
                             f"{', '.join(sorted(ids)[:5])}{', ...' if len(ids) > 5 else ''}")
    if not records:
        raise ValueError(f"no {resource.name[:-1].replace('-', ' ')} with id {args.id}")
    data = [r.to_dict() for r in records]
    print(_output(data if len(data) > 1 else data[0], args.format))
    return 0


def _counts(counts: dict) -> str:
    return ", ".join(f"{state}: {n}" for state, n in
                     sorted(counts.items(), key=lambda item: -item[1]))


@_reports_errors
def cmd_summary(args) -> int:
    state = _state()
    kind = args.kind
    summarize = {"tasks": state.summarize_tasks, "actors": state.summarize_actors,
                 "objects": state.summarize_objects}[kind]
    summary = summarize(address=args.address, timeout=args.timeout)["cluster"]
    if args.format != "table":
        print(_output(summary, args.format))
        return 0
    groups = summary["summary"]
    if kind == "tasks":
        stats = ["total_actor_scheduled", "total_actor_tasks", "total_tasks"]
        title = "Table (group by func_name):"
        headers = ["FUNC_OR_CLASS_NAME", "STATE_COUNTS", "TYPE"]
        rows = [[g["func_or_class_name"], _counts(g["state_counts"]), g["type"]]
                for g in groups.values()]
    elif kind == "actors":
        stats = ["total_actors"]
        title = "Table (group by class):"
        headers = ["CLASS_NAME", "STATE_COUNTS"]
        rows = [[g["class_name"], _counts(g["state_counts"])] for g in groups.values()]
    else:
        stats = ["total_objects", "total_size_mb", "callsite_enabled"]
        title = "Table (group by callsite):"
        headers = ["CALLSITE", "OBJECTS", "SIZE", "WORKERS", "NODES", "TASK_STATES",
                   "REF_TYPES"]
        rows = [[key, str(g["total_objects"]), human_bytes(g["total_size_mb"] * 1024 ** 2),
                 str(g["total_num_workers"]), str(g["total_num_nodes"]),
                 _counts(g["task_state_counts"]), _counts(g["ref_type_counts"])]
                for key, g in groups.items()]
    out = [_banner(f"{kind.capitalize()} Summary"), "Stats:", _RULE]
    for name in stats:
        value = summary[name]
        out.append(f"{name}: {value:.3f}" if isinstance(value, float) else
                   f"{name}: {value}")
    out += ["", title, _RULE, render_table(headers, rows, max_width=_width())]
    if not rows:
        out.append(f"(no {kind})")
    print("\n".join(out))
    return 0


@_reports_errors
def cmd_memory(args) -> int:
    from miniray.cli.memory import render_memory
    from miniray.protocol import raylet_pb2
    from miniray.util.state.client import StateClient
    from miniray.util.state.objects import collect
    with StateClient(args.address, args.timeout) as client:
        listing = collect(client, raise_on_missing_output=False)
        stats = []
        for node in client.alive_nodes():
            try:
                stats.append(client.raylet(node, "GetNodeStats",
                                           raylet_pb2.GetNodeStatsRequest()))
            except Exception:         # noqa: BLE001 - reported as missing
                stats.append(None)
    print(render_memory(
        listing, group_by=args.group_by, sort_by=args.sort_by, units=args.units,
        num_entries=args.num_entries, stats_only=args.stats_only,
        no_format=args.no_format, width=_width(), store_stats=stats,
        banner=_banner("Object references status")))
    return 0


@_reports_errors
def cmd_logs(args) -> int:
    state = _state()
    target = dict(actor_id=args.actor_id, task_id=args.task_id, pid=args.pid)
    if sum(1 for v in target.values() if v) + bool(args.filename) > 1:
        raise ValueError("give one of FILENAME, --actor-id, --task-id or --pid")
    common = dict(address=args.address, timeout=args.timeout)
    if not args.filename and not any(target.values()):
        return _list_logs(args, common, glob_filter=None)
    if args.filename and any(ch in args.filename for ch in "*?["):
        return _list_or_print(args, common)
    lines = state.get_log(node_id=args.node_id, node_ip=args.node_ip,
                          filename=args.filename, follow=args.follow, tail=args.tail,
                          suffix="err" if args.err else "out", **target, **common)
    for line in lines:
        print(line, flush=args.follow)
    return 0


def _list_or_print(args, common) -> int:
    """A glob: print the file if exactly one matches, else list the matches
    (as `ray logs` does)."""
    from miniray.util.state.client import StateClient
    from miniray.util.state.logs import _list_files
    with StateClient(args.address, args.timeout) as client:
        nodes = [client.find_node(args.node_id, args.node_ip)] \
            if args.node_id or args.node_ip else client.alive_nodes()
        matches = [(node, f.filename) for node in nodes
                   for f in _list_files(client, node, args.filename)]
    if len(matches) != 1:
        if not matches:
            raise ValueError(f"no log file matches {args.filename!r}")
        return _list_logs(args, common, glob_filter=args.filename)
    node, name = matches[0]
    for line in _state().get_log(node_id=node.node_id.hex(), filename=name,
                                 follow=args.follow, tail=args.tail, **common):
        print(line, flush=args.follow)
    return 0


def _list_logs(args, common, glob_filter) -> int:
    from miniray.util.state.client import StateClient
    from miniray.util.state.logs import _list_files, categorize
    with StateClient(args.address, args.timeout) as client:
        nodes = [client.find_node(args.node_id, args.node_ip)] \
            if args.node_id or args.node_ip else client.alive_nodes()
        listing = [(node, _list_files(client, node, glob_filter or "")) for node in nodes]
    out = []
    for node, files in listing:
        sizes = {f.filename: f.size for f in files}
        out.append(f"Node {node.node_id.hex()} ({node.ip}"
                   f"{', head' if node.is_head else ''})")
        width = _width()
        for group, names in categorize(sizes).items():
            out.append(f" {group}:")
            pad = max(len(name) for name in names)
            for name in names:
                # A worker's file name takes 73 columns: its size goes after
                # it, aligned when the terminal is wide enough, else left out.
                size = human_bytes(sizes[name])
                if 2 + pad + 2 + 9 <= width:
                    out.append(f"  {name:<{pad}}  {size:>9}")
                elif 2 + len(name) + 2 + len(size) <= width:
                    out.append(f"  {name}  {size}")
                else:
                    out.append(f"  {name}")
        if not files:
            out.append(" (no log files)")
        out.append("")
    out += textwrap.wrap("Print one with `miniray logs FILENAME` (--tail N, --follow), "
                         "or a worker's with --actor-id, --task-id or --pid.",
                         width=min(_width(), 80))
    print("\n".join(out))
    return 0


@_reports_errors
def cmd_timeline(args) -> int:
    import json
    events = _state().timeline_events(address=args.address, timeout=args.timeout)
    path = args.output
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        path = os.path.join(tempfile.gettempdir(), f"miniray-timeline-{stamp}.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(events, f)
    slices = sum(1 for e in events if e.get("ph") == "X")
    print(f"Trace file written to {path} ({slices} task runs).\n"
          f"Open it in https://ui.perfetto.dev or chrome://tracing.")
    return 0


# --- parser ------------------------------------------------------------------------------
def _positive_or_all(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < -1:
        raise argparse.ArgumentTypeError(f"must be -1 (all) or more, got {value}")
    return value


def _limit(text: str) -> int:
    value = _positive_or_all(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be in (0, 3600] seconds, got {value:g}")
    return value


def _connection_options(parser) -> None:
    parser.add_argument("--address", metavar="HOST:PORT",
                        help="GCS address (default: $MINIRAY_ADDRESS, else the cluster "
                             "started with `miniray start --head`)")
    parser.add_argument("--timeout", type=_timeout, default=30.0, metavar="S",
                        help="seconds to wait for each request (default 30)")


def add_commands(commands) -> None:
    """Add the state commands to the ``miniray`` parser's subcommands."""
    names = ", ".join(RESOURCES)

    lst = commands.add_parser(
        "list", help="list the cluster's tasks, actors, objects, nodes, ...",
        description=f"List a kind of resource of the cluster ({names}), as "
                    f"`ray list` does.")
    lst.add_argument("resource", type=_resource, metavar="RESOURCE", help=names)
    lst.add_argument("--filter", action="append", metavar="KEY=VALUE",
                     help="keep only records where KEY=VALUE (or KEY!=VALUE); repeat "
                          "for several (all must hold); string values match "
                          "case-insensitively, e.g. --filter state=FAILED")
    lst.add_argument("--detail", action="store_true",
                     help="every field, ids in full (default format: yaml)")
    lst.add_argument("--format", choices=("default", "table", "json", "yaml"),
                     default="default", help="output format (default: table, or yaml "
                                             "with --detail)")
    lst.add_argument("--limit", type=_limit, default=100, metavar="N",
                     help="at most N records (default 100)")
    _connection_options(lst)
    lst.set_defaults(func=cmd_list, parser=lst)

    get = commands.add_parser(
        "get", help="show one actor, task, node, ... in full",
        description=f"Show one resource ({names}) with every field, by its id or the "
                    f"start of it (as `miniray list` shows ids).")
    get.add_argument("resource", type=_resource, metavar="RESOURCE", help=names)
    get.add_argument("id", metavar="ID")
    get.add_argument("--format", choices=("yaml", "json"), default="yaml")
    _connection_options(get)
    get.set_defaults(func=cmd_get, parser=get)

    summary = commands.add_parser(
        "summary", help="counts of tasks, actors or objects by state",
        description="Summarize tasks (by function), actors (by class) or objects "
                    "(by call site), as `ray summary` does.")
    summary.add_argument("kind", choices=("tasks", "actors", "objects"))
    summary.add_argument("--format", choices=("table", "json", "yaml"), default="table")
    _connection_options(summary)
    summary.set_defaults(func=cmd_summary, parser=summary)

    memory = commands.add_parser(
        "memory", help="every object reference in the cluster: size, type, where",
        description="Every ObjectRef held by the cluster's drivers and workers, as "
                    "`ray memory` shows them: grouped by node address (or call "
                    "site), each with its process, size, reference type, the status "
                    "of the task that creates it and its call site (recorded with "
                    "MINIRAY_RECORD_REF_CREATION_SITES=1), plus store totals.")
    memory.add_argument("--group-by", choices=("NODE_ADDRESS", "STACK_TRACE"),
                        default="NODE_ADDRESS", type=str.upper,
                        help="group by the node of the process holding the reference, "
                             "or by call site (default NODE_ADDRESS)")
    memory.add_argument("--sort-by", choices=("PID", "OBJECT_SIZE", "REFERENCE_TYPE"),
                        default="OBJECT_SIZE", type=str.upper,
                        help="order within a group (default OBJECT_SIZE, smallest first)")
    memory.add_argument("--units", choices=("B", "KB", "MB", "GB"), type=str.upper,
                        help="show sizes in this unit (KB = 1000 B, as in Ray; default: "
                             "the most readable)")
    memory.add_argument("--no-format", action="store_true",
                        help="one line per reference, nothing cut (for wide terminals "
                             "and scripts)")
    memory.add_argument("--stats-only", action="store_true",
                        help="only the summaries and the store totals")
    memory.add_argument("--num-entries", type=_limit, metavar="N",
                        help="at most N references per group")
    _connection_options(memory)
    memory.set_defaults(func=cmd_memory, parser=memory)

    logs = commands.add_parser(
        "logs", help="list or print the log files of the cluster's nodes",
        description="Without arguments: the log files of every node. With a file "
                    "name (or a glob matching one file): print it. With --actor-id, "
                    "--task-id or --pid: print that worker's stdout (--err: stderr).")
    logs.add_argument("filename", nargs="?", metavar="FILENAME",
                      help="a log file name as listed, or a glob (e.g. 'raylet*')")
    logs.add_argument("--node-id", metavar="ID", help="the node (an id or its start)")
    logs.add_argument("--node-ip", metavar="IP", help="the node, by address")
    logs.add_argument("--actor-id", metavar="ID", help="the log of this actor's worker")
    logs.add_argument("--task-id", metavar="ID",
                      help="the log of the worker that ran this task")
    logs.add_argument("--pid", type=int, metavar="PID", help="the log of this worker")
    logs.add_argument("--err", action="store_true",
                      help="the worker's stderr (.err) instead of its stdout (.out)")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new lines until interrupted (Ctrl-C)")
    logs.add_argument("--tail", type=_positive_or_all, default=1000, metavar="N",
                      help="the last N lines (default 1000; -1: all)")
    _connection_options(logs)
    logs.set_defaults(func=cmd_logs, parser=logs)

    timeline = commands.add_parser(
        "timeline", help="write the tasks' timeline as a Chrome trace",
        description="Write every task run as Chrome trace JSON (a row per worker, a "
                    "slice per run), to open in https://ui.perfetto.dev or "
                    "chrome://tracing.")
    timeline.add_argument("--output", metavar="FILE",
                          help="where to write it (default: a new file in the temp "
                               "directory)")
    _connection_options(timeline)
    timeline.set_defaults(func=cmd_timeline, parser=timeline)
