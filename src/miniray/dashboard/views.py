"""JSON-ready views of the cluster for the dashboard's ``/api/`` endpoints
(pure: GCS and raylet replies in, dicts out).

Records carry the field names of ``miniray.util.state`` (``ActorState``,
``NodeState``, ``TaskState``, ...), with extra live figures for nodes.
Lists are paged (``limit``/``offset``) and report their ``total``, so the
page never holds more than one page of rows whatever the cluster runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from miniray.gcs.task_events import latest_status, status_time
from miniray.protocol import common_pb2, gcs_pb2

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000

ACTOR_STATES = {common_pb2.PENDING_CREATION: "PENDING_CREATION",
                common_pb2.ALIVE: "ALIVE", common_pb2.RESTARTING: "RESTARTING",
                common_pb2.DEAD: "DEAD"}
PG_STATES = {common_pb2.PG_PENDING: "PENDING", common_pb2.PG_CREATED: "CREATED",
             common_pb2.PG_REMOVED: "REMOVED"}
TASK_TYPES = {common_pb2.NORMAL_TASK: "NORMAL_TASK",
              common_pb2.ACTOR_CREATION_TASK: "ACTOR_CREATION_TASK",
              common_pb2.ACTOR_TASK: "ACTOR_TASK"}


def _hex(value: bytes) -> str | None:
    return value.hex() or None


def _ms(time_ns: int) -> int | None:
    return time_ns // 1_000_000 if time_ns else None


def status_name(status: int) -> str:
    return gcs_pb2.TaskStatus.Name(status) if status else "NIL"


# --- paging --------------------------------------------------------------------------------
def page_args(query: dict) -> tuple[int, int]:
    """``limit`` and ``offset`` from a query (bad values raise ValueError)."""
    limit = int(query.get("limit", DEFAULT_LIMIT))
    offset = int(query.get("offset", 0))
    if not 0 <= limit <= MAX_LIMIT or offset < 0:
        raise ValueError(f"limit must be in 0..{MAX_LIMIT} and offset >= 0")
    return limit, offset


def paged(key: str, records: list, limit: int, offset: int, **extra) -> dict:
    return {key: records[offset:offset + limit], "total": len(records),
            "limit": limit, "offset": offset, **extra}


# --- nodes -------------------------------------------------------------------------------
def node_figures(reports) -> dict[bytes, dict]:
    """{node_id: {metric name: value}} from the raylets' metric reports
    (label-less gauges, and the object store by location)."""
    figures: dict[bytes, dict] = {}
    for report in reports:
        if report.component != "raylet":
            continue
        values = figures.setdefault(report.node_id, {})
        for metric in report.metrics:
            for series in metric.series:
                if not metric.tag_keys:
                    values[metric.name] = series.value
                else:
                    values[f"{metric.name}:{','.join(series.tag_values)}"] = series.value
    return figures


def node_record(node, stats=None, figures: dict | None = None) -> dict:
    """A node (NodeInfo) with its live figures: ``stats`` is its raylet's
    GetNodeStats reply, ``figures`` its latest metric report."""
    figures = figures or {}
    available = dict(stats.resources_available) if stats is not None \
        else dict(node.resources_available)
    total = dict(stats.resources_total) if stats is not None else dict(node.resources_total)
    record = {
        "node_id": node.node_id.hex(), "node_ip": node.ip, "is_head_node": node.is_head,
        "state": "ALIVE" if node.alive else "DEAD", "node_name": node.ip,
        "hostname": node.hostname, "resources_total": total,
        "resources_available": available if node.alive else {},
        "cpu_percent": figures.get("node_cpu_utilization"),
        "cpu_count": figures.get("node_cpu_count"),
        "mem_used": figures.get("node_mem_used"),
        "mem_total": figures.get("node_mem_total"),
        "object_store_used": figures.get("object_store_memory:MMAP_SHM"),
        "object_store_spilled": figures.get("object_store_memory:SPILLED"),
        "object_store_capacity": node.object_store_memory or None,
        "num_objects": None, "num_workers": figures.get("num_workers"),
        "num_leases": None, "num_pending_leases": None,
    }
    if stats is not None:
        record.update(object_store_used=stats.store_used,
                      object_store_capacity=stats.store_capacity,
                      num_objects=stats.store_num_objects, num_workers=stats.num_workers,
                      num_leases=stats.num_leases,
                      num_pending_leases=stats.num_pending_leases)
    return record


def node_records(nodes, stats: dict, reports) -> list[dict]:
    """Live nodes first (the head first), then dead ones."""
    figures = node_figures(reports)
    ordered = sorted(nodes, key=lambda n: (not n.alive, not n.is_head, n.ip))
    return [node_record(n, stats.get(n.node_id) if n.alive else None,
                        figures.get(n.node_id)) for n in ordered]


def cluster_status(reply, stats: dict, num_jobs_running: int | None = None) -> dict:
    """Totals over the live nodes (as ``miniray status``)."""
    total: dict = {}
    available: dict = {}
    alive = [n for n in reply.nodes if n.alive]
    for node in alive:
        node_stats = stats.get(node.node_id)
        for k, v in (node_stats.resources_total if node_stats else node.resources_total
                     ).items():
            total[k] = total.get(k, 0.0) + v
        for k, v in (node_stats.resources_available if node_stats
                     else node.resources_available).items():
            available[k] = available.get(k, 0.0) + v
    return {
        "num_nodes_alive": len(alive), "num_nodes_dead": len(reply.nodes) - len(alive),
        "resources_total": total, "resources_available": available,
        "resources_used": {k: max(0.0, v - available.get(k, 0.0)) for k, v in total.items()},
        "num_jobs_running": num_jobs_running, "version": reply.version,
        "python_version": reply.python_version,
    }


# --- actors, placement groups, jobs --------------------------------------------------------
def actor_record(actor) -> dict:
    return {
        "actor_id": actor.actor_id.hex(), "class_name": actor.class_name,
        "state": ACTOR_STATES.get(actor.state, "UNKNOWN"), "job_id": actor.job_id.hex(),
        "name": actor.name, "namespace": actor.namespace, "pid": actor.pid,
        "node_id": _hex(actor.address.node_id), "num_restarts": actor.num_restarts,
        "is_detached": actor.detached,
    }


def actors_view(actors, query: dict) -> dict:
    """Actors, alive first, filtered by ``state``/``class_name``, paged;
    with counts by state over all of them."""
    limit, offset = page_args(query)
    records = [actor_record(a) for a in actors]
    counts: dict[str, int] = {}
    for record in records:
        counts[record["state"]] = counts.get(record["state"], 0) + 1
    if query.get("state"):
        records = [r for r in records if r["state"] == query["state"]]
    if query.get("class_name"):
        needle = query["class_name"].lower()
        records = [r for r in records if needle in r["class_name"].lower()]
    order = {"ALIVE": 0, "RESTARTING": 1, "PENDING_CREATION": 2, "DEAD": 3}
    records.sort(key=lambda r: order.get(r["state"], 4))
    return paged("actors", records, limit, offset, state_counts=counts)


def placement_group_record(group) -> dict:
    return {
        "placement_group_id": group.placement_group_id.hex(), "name": group.name,
        "state": PG_STATES.get(group.state, "UNKNOWN"), "strategy": group.strategy,
        "bundles": [{"bundle_index": i, "node_id": b.node_id.hex() or None,
                     "unit_resources": dict(b.resources)}
                    for i, b in enumerate(group.bundles)],
        "is_detached": group.detached,
    }


def job_record(job) -> dict:
    return {"job_id": job.job_id.hex(), "status": "STOPPED" if job.is_dead else "RUNNING",
            "namespace": job.namespace, "driver_pid": job.driver_pid}


# --- tasks ---------------------------------------------------------------------------------
def task_record(event, status: int | None = None) -> dict:
    """One task attempt, as ``miniray.util.state.TaskState`` (without its
    ``events`` list)."""
    if status is None:
        status = latest_status(event)
    ended = max(status_time(event, gcs_pb2.FINISHED), status_time(event, gcs_pb2.FAILED))
    return {
        "task_id": event.task_id.hex(), "attempt_number": event.attempt,
        "name": event.name, "state": status_name(status), "job_id": event.job_id.hex(),
        "actor_id": _hex(event.actor_id), "type": TASK_TYPES.get(event.type, "NORMAL_TASK"),
        "func_or_class_name": event.func_or_class_name,
        "parent_task_id": _hex(event.parent_task_id), "node_id": _hex(event.node_id),
        "worker_id": _hex(event.worker_id), "worker_pid": event.worker_pid or None,
        "error_type": event.error_type or None,
        "error_message": event.error_message or None,
        "required_resources": dict(event.required_resources),
        "placement_group_id": _hex(event.placement_group_id), "language": "PYTHON",
        "creation_time_ms": _ms(min((c.time_ns for c in event.changes), default=0)),
        "start_time_ms": _ms(status_time(event, gcs_pb2.RUNNING)),
        "end_time_ms": _ms(ended),
    }


def tasks_view(snapshot, query: dict) -> dict:
    """Task attempts (newest first) filtered by ``state`` (exact), ``name``
    (substring, any case) and ``job_id``, paged. Only the page's rows are
    converted, so a page of 10k-task cluster costs one pass of compares."""
    limit, offset = page_args(query)
    state = query.get("state") or ""
    wanted = gcs_pb2.TaskStatus.Value(state) if state and state != "NIL" and \
        state in gcs_pb2.TaskStatus.keys() else (0 if state == "NIL" else None)
    if state and wanted is None:
        raise ValueError(f"unknown task state {state!r}")
    name = (query.get("name") or "").lower()
    job = bytes.fromhex(query["job_id"]) if query.get("job_id") else b""
    matched = [i for i, (event, status) in enumerate(zip(snapshot.events, snapshot.statuses))
               if (wanted is None or status == wanted)
               and (not name or name in event.name.lower())
               and (not job or event.job_id == job)]
    page = [task_record(snapshot.events[i], snapshot.statuses[i])
            for i in matched[offset:offset + limit]]
    return {"tasks": page, "total": len(matched), "limit": limit, "offset": offset,
            "num_dropped": snapshot.num_dropped}


def _latest_attempts(snapshot) -> dict[bytes, int]:
    """{task_id: index of its latest attempt} over the snapshot."""
    latest: dict[bytes, int] = {}
    events = snapshot.events
    for i, event in enumerate(events):
        known = latest.get(event.task_id)
        if known is None or event.attempt > events[known].attempt:
            latest[event.task_id] = i
    return latest


def task_counts(snapshot) -> dict[tuple[str, str, str], int]:
    """{(state, name, is_retry): tasks} over each task's latest attempt, as
    Ray's ray_tasks (is_retry "1" when that attempt is a retry)."""
    counts: dict[tuple[str, str, str], int] = {}
    for i in _latest_attempts(snapshot).values():
        event = snapshot.events[i]
        key = (status_name(snapshot.statuses[i]), event.name,
               "1" if event.attempt > 0 else "0")
        counts[key] = counts.get(key, 0) + 1
    return counts


def tasks_summary(snapshot, max_names: int = 200) -> dict:
    """``miniray.util.state.summarize_tasks``'s shape (counts by function
    and state over each task's latest attempt), plus counts by state over
    all tasks; at most ``max_names`` functions, the busiest first."""
    summary: dict[str, dict] = {}
    by_state: dict[str, int] = {}
    totals = {"NORMAL_TASK": 0, "ACTOR_TASK": 0, "ACTOR_CREATION_TASK": 0}
    for i in _latest_attempts(snapshot).values():
        event = snapshot.events[i]
        state = status_name(snapshot.statuses[i])
        kind = TASK_TYPES.get(event.type, "NORMAL_TASK")
        totals[kind] += 1
        by_state[state] = by_state.get(state, 0) + 1
        key = event.func_or_class_name or event.name
        entry = summary.get(key)
        if entry is None:
            entry = summary[key] = {"func_or_class_name": key, "type": kind,
                                    "state_counts": {}}
        entry["state_counts"][state] = entry["state_counts"].get(state, 0) + 1
    busiest = sorted(summary.values(), key=lambda e: -sum(e["state_counts"].values()))
    return {"cluster": {
        "summary": {e["func_or_class_name"]: e for e in busiest[:max_names]},
        "summary_by": "func_name", "num_functions": len(summary),
        "total_tasks": totals["NORMAL_TASK"], "total_actor_tasks": totals["ACTOR_TASK"],
        "total_actor_scheduled": totals["ACTOR_CREATION_TASK"],
        "state_counts": by_state, "num_dropped": snapshot.num_dropped}}


def timeline(snapshot, job_id: str | None = None, limit: int = 0) -> list[dict]:
    """Chrome trace events (Perfetto, chrome://tracing), as
    ``miniray.timeline()``: a row per worker (pid: the node, tid: the
    worker), a slice per finished or failed task run; the newest ``limit``
    (0: all), in time order."""
    job = bytes.fromhex(job_id) if job_id else b""
    events = []
    for e in snapshot.events:
        if job and e.job_id != job:
            continue
        start = status_time(e, gcs_pb2.RUNNING)
        failed = status_time(e, gcs_pb2.FAILED)
        end = max(status_time(e, gcs_pb2.FINISHED), failed)
        if not start or not end or end < start:
            continue
        node = e.node_id.hex()[:8] or "unknown"
        events.append({
            "cat": "task", "name": e.name, "ph": "X",
            "pid": f"Node {node}", "tid": f"Worker {e.worker_pid or e.worker_id.hex()[:8]}",
            "ts": start / 1000, "dur": (end - start) / 1000,
            "cname": "rail_response" if failed else "generic_work",
            "args": {"task_id": e.task_id.hex(), "attempt": e.attempt,
                     "job_id": e.job_id.hex(), "func_or_class_name": e.func_or_class_name,
                     "state": "FAILED" if failed else "FINISHED"}})
    events.sort(key=lambda ev: ev["ts"])
    return events[-limit:] if limit > 0 else events


# --- objects -------------------------------------------------------------------------------
OBJECTS_NOTE = "Objects cannot be listed one by one here ({why}): each node's store totals."


def objects_view(nodes: list[dict], objects: list[dict] | None, why: str,
                 query: dict) -> dict:
    """Object references largest first (``miniray.util.state.list_objects``
    records: one per process and object, size -1 when that process does
    not know it), paged; and each live node's object store totals. When
    the cluster cannot list objects, ``objects`` is empty and ``note`` says
    why."""
    limit, offset = page_args(query)
    stores = [{"node_id": n["node_id"], "node_ip": n["node_ip"],
               "used": n["object_store_used"], "capacity": n["object_store_capacity"],
               "spilled": n["object_store_spilled"], "num_objects": n["num_objects"]}
              for n in nodes if n["state"] == "ALIVE"]
    stores.sort(key=lambda s: -(s["used"] or 0))
    records = sorted(objects or [], key=lambda o: -(o.get("object_size") or 0))
    return {"objects": records[offset:offset + limit], "total": len(records),
            "total_size": sum(max(o.get("object_size") or 0, 0) for o in records),
            "limit": limit, "offset": offset, "stores": stores,
            "note": OBJECTS_NOTE.format(why=why) if objects is None else ""}


# --- logs ----------------------------------------------------------------------------------
MAX_LOG_READ = 256 * 1024       # bytes one /api/logs/read answer carries at most
MAX_TAIL_LINES = 10_000
MAX_LOG_NAME = 255
_MAX_OFFSET = 2 ** 63 - 1
_NODE_ID = re.compile(r"[0-9a-f]{1,64}")
_INT = re.compile(r"[0-9]{1,19}")
_WORKER_LOG = re.compile(r"^worker-[0-9a-f]+-\d+\.(out|err)$")


def log_category(filename: str) -> str:
    """Ray's group of a log file (as ``miniray.util.state.list_logs``):
    worker_out, worker_err, raylet, gcs_server or misc."""
    match = _WORKER_LOG.match(filename)
    if match:
        return f"worker_{match.group(1)}"
    if filename.startswith("raylet"):
        return "raylet"
    if filename.startswith("gcs"):
        return "gcs_server"
    return "misc"


def check_log_filename(filename) -> str:
    """A log file's name as ListLogs gives it: never a path (the raylet
    checks again, and opens it only inside its logs directory)."""
    if not isinstance(filename, str) or not filename:
        raise ValueError("filename is required (a name from /api/logs)")
    if len(filename) > MAX_LOG_NAME or "/" in filename or "\x00" in filename \
            or filename in (".", ".."):
        shown = repr(filename if len(filename) <= 60 else filename[:60] + "...")
        raise ValueError(f"not a log file name: {shown} (a name from /api/logs, "
                         f"never a path)")
    return filename


def check_node_id(node_id) -> str:
    """A node id, or a prefix of one, in hex (lower case)."""
    node_id = (node_id or "").strip().lower()
    if not _NODE_ID.fullmatch(node_id):
        shown = repr(node_id if len(node_id) <= 60 else node_id[:60] + "...")
        raise ValueError(f"not a node id: {shown} (a node's id in hex, from /api/logs)")
    return node_id


def _int_arg(query: dict, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not _INT.fullmatch(raw.strip()):
        raise ValueError(f"{name} must be a whole number, got {raw[:30]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return value


@dataclass(frozen=True)
class LogRead:
    """One /api/logs/read request: from ``offset``, or the last ``tail``
    lines; at most ``size`` bytes."""
    node_id: str
    filename: str
    offset: int = 0
    tail: int = 0               # 0: read from offset
    size: int = MAX_LOG_READ


def log_read_args(query: dict) -> LogRead:
    """The arguments of /api/logs/read (ValueError, a 400, when malformed):
    ``node_id`` and ``filename`` required; ``offset`` (default 0) or
    ``tail`` (lines, 1..MAX_TAIL_LINES), not both; ``size`` at most
    MAX_LOG_READ bytes (larger asks are cut to it)."""
    if not query.get("node_id"):
        raise ValueError("node_id is required (a node's id, from /api/logs)")
    node_id = check_node_id(query["node_id"])
    filename = check_log_filename(query.get("filename"))
    if query.get("offset") not in (None, "") and query.get("tail") not in (None, ""):
        raise ValueError("give offset or tail, not both")
    offset = _int_arg(query, "offset", 0, 0, _MAX_OFFSET)
    tail = _int_arg(query, "tail", 0, 1, MAX_TAIL_LINES)
    size = min(_int_arg(query, "size", MAX_LOG_READ, 1, _MAX_OFFSET), MAX_LOG_READ)
    return LogRead(node_id, filename, offset, tail, size)


def find_log_node(nodes, node_id: str):
    """The live node (a NodeInfo) whose id is ``node_id`` or starts with it
    (ValueError when none or several are)."""
    exact = [n for n in nodes if n.node_id.hex() == node_id]
    found = exact or [n for n in nodes if n.node_id.hex().startswith(node_id)]
    if not found:
        raise ValueError(f"no node with id {node_id}")
    if len(found) > 1:
        raise ValueError(f"node id prefix {node_id} is ambiguous")
    if not found[0].alive:
        raise ValueError(f"node {found[0].node_id.hex()} is dead: its logs cannot be read")
    return found[0]


def complete_utf8(data: bytes) -> int:
    """How much of ``data`` to decode now: all of it, less a UTF-8
    character cut short at its end (read once the rest is there)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)                 # ASCII: nothing cut
        if byte >= 0xC0:                     # the lead byte of the last character
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if back < needed else len(data)
    return len(data)                         # continuation bytes only: not ours to fix


def drop_partial_first_line(data: bytes) -> tuple[bytes, int]:
    """``data`` from its first whole line: (the rest, bytes dropped). A
    read that starts in the middle of a line (a tail longer than one read)
    shows whole lines only; without a newline, nothing is dropped."""
    index = data.find(b"\n")
    if index < 0 or index == len(data) - 1:
        return data, 0
    return data[index + 1:], index + 1


def log_chunk(node_id: str, filename: str, data: bytes, start: int, file_size: int,
              reset: bool = False, skipped: int = 0) -> dict:
    """The answer of /api/logs/read: ``text`` (UTF-8, bad bytes replaced)
    that starts at byte ``offset`` of the file, and ``next_offset``, where
    to read on to follow it; ``eof`` when that is the file's end (for now);
    ``reset`` when the file was shorter than the offset asked (truncated:
    read from its start); ``skipped``: bytes of a cut first line left out."""
    keep = complete_utf8(data)
    if keep == 0 and start + len(data) < file_size:
        keep = len(data)                    # a read too small for one character
    next_offset = start + keep
    return {"node_id": node_id, "filename": filename, "offset": start,
            "next_offset": next_offset, "file_size": file_size,
            "eof": next_offset >= file_size, "reset": reset, "skipped": skipped,
            "text": data[:keep].decode("utf-8", "replace")}


def log_files_view(listings, query: dict) -> dict:
    """The log files of the live nodes (``listings``: (NodeInfo, [(name,
    size, mtime_ms)], error or None) per node), head node first, each
    node's by name; filtered by ``node_id`` (or a prefix) and ``name``
    (substring), paged. ``nodes``: each node's file count and total size,
    and why its files could not be listed."""
    limit, offset = page_args(query)
    wanted = check_node_id(query["node_id"]) if query.get("node_id") else ""
    name = (query.get("name") or "").lower()
    ordered = sorted(listings, key=lambda item: (not item[0].is_head, item[0].ip,
                                                 item[0].node_id))
    nodes, files = [], []
    for node, entries, error in ordered:
        node_hex = node.node_id.hex()
        nodes.append({"node_id": node_hex, "node_ip": node.ip, "is_head_node": node.is_head,
                      "num_files": len(entries), "total_size": sum(e[1] for e in entries),
                      "error": error})
        if wanted and not node_hex.startswith(wanted):
            continue
        for filename, size, mtime_ms in sorted(entries):
            if name and name not in filename.lower():
                continue
            files.append({"node_id": node_hex, "node_ip": node.ip, "filename": filename,
                          "size": size, "mtime_ms": mtime_ms or None,
                          "category": log_category(filename)})
    return paged("files", files, limit, offset, nodes=nodes)
