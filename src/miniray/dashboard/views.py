"""JSON-ready views of the cluster for the dashboard's ``/api/`` endpoints
(pure: GCS and raylet replies in, dicts out).

Records carry the field names of ``miniray.util.state`` (``ActorState``,
``NodeState``, ``TaskState``, ...), with extra live figures for nodes.
Lists are paged (``limit``/``offset``) and report their ``total``, so the
page never holds more than one page of rows whatever the cluster runs.
"""
from __future__ import annotations

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
    """Objects largest first (``miniray.util.state.list_objects`` records),
    paged; and each live node's object store totals. When the cluster
    cannot list objects, ``objects`` is empty and ``note`` says why."""
    limit, offset = page_args(query)
    stores = [{"node_id": n["node_id"], "node_ip": n["node_ip"],
               "used": n["object_store_used"], "capacity": n["object_store_capacity"],
               "spilled": n["object_store_spilled"], "num_objects": n["num_objects"]}
              for n in nodes if n["state"] == "ALIVE"]
    stores.sort(key=lambda s: -(s["used"] or 0))
    records = sorted(objects or [], key=lambda o: -(o.get("object_size") or 0))
    return {"objects": records[offset:offset + limit], "total": len(records),
            "total_size": sum(o.get("object_size") or 0 for o in records),
            "limit": limit, "offset": offset, "stores": stores,
            "note": OBJECTS_NOTE.format(why=why) if objects is None else ""}
