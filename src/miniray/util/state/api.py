"""list_* / get_* / summarize_* and the timeline, with Ray's names and arguments.

Actors, nodes, jobs, placement groups and tasks come from the GCS's
tables; workers from each live node's raylet (ListWorkers), objects from
every live process (GetObjectReferences). Every function takes Ray's ``address`` (default: the cluster
this process is connected to, see client.py), ``timeout`` (seconds per
request) and, for lists, ``filters``, ``limit`` and ``detail``.

Objects: every live driver and worker lists the objects it references
(objects.py), so small values living only in their owner's memory are
listed too, with Ray's reference types.
"""
from __future__ import annotations

import json
import logging

from miniray.protocol import common_pb2, gcs_pb2, raylet_pb2
from miniray.util.state import objects
from miniray.util.state.client import StateClient
from miniray.util.state.common import (
    DEFAULT_LIMIT, ActorState, JobState, NodeState, ObjectState, PlacementGroupState,
    RayStateApiException, TaskState, WorkerState, check_filters, select)

__all__ = ["list_actors", "list_nodes", "list_placement_groups", "list_jobs",
           "list_tasks", "list_workers", "list_objects", "get_actor", "get_node",
           "get_job", "get_placement_group", "get_task", "get_worker", "get_objects",
           "summarize_tasks", "summarize_actors", "summarize_objects",
           "timeline_events", "timeline"]

log = logging.getLogger("miniray.state")

_ACTOR_STATES = {common_pb2.PENDING_CREATION: "PENDING_CREATION",
                 common_pb2.ALIVE: "ALIVE", common_pb2.RESTARTING: "RESTARTING",
                 common_pb2.DEAD: "DEAD"}
_PG_STATES = {common_pb2.PG_PENDING: "PENDING", common_pb2.PG_CREATED: "CREATED",
              common_pb2.PG_REMOVED: "REMOVED"}
_TASK_TYPES = {common_pb2.NORMAL_TASK: "NORMAL_TASK",
               common_pb2.ACTOR_CREATION_TASK: "ACTOR_CREATION_TASK",
               common_pb2.ACTOR_TASK: "ACTOR_TASK"}


def _hex(value: bytes) -> str | None:
    return value.hex() if value else None


# --- GCS tables ------------------------------------------------------------------------
def list_actors(address: str | None = None, filters=None, limit: int = DEFAULT_LIMIT,
                timeout: int | None = None, detail: bool = False, **_) -> list:
    checked = check_filters(filters, ActorState)
    with StateClient(address, timeout) as client:
        reply = client.gcs("GetAllActors", gcs_pb2.GetAllActorsRequest())
        records = [ActorState(
            actor_id=a.actor_id.hex(), class_name=a.class_name,
            state=_ACTOR_STATES.get(a.state, "UNKNOWN"), job_id=a.job_id.hex(),
            name=a.name, namespace=a.namespace, ray_namespace=a.namespace, pid=a.pid,
            node_id=a.address.node_id.hex() if a.address.node_id else None,
            num_restarts=a.num_restarts, is_detached=a.detached)
            for a in reply.actors]
        if any(r.state == "ALIVE" and not r.pid for r in records):
            _fill_actor_pids(client, records)
    return select(ActorState, records, checked, limit)


def _fill_actor_pids(client: StateClient, records: list) -> None:
    """The pids of live actors the GCS does not know, from the raylets'
    worker tables (best effort: a node that does not answer is skipped)."""
    pids = {}
    for node in client.alive_nodes():
        try:
            reply = client.raylet(node, "ListWorkers", raylet_pb2.ListWorkersRequest())
        except (ConnectionError, RayStateApiException):
            continue
        pids.update({w.actor_id.hex(): w.pid for w in reply.workers
                     if w.actor_id and w.is_alive})
    for record in records:
        if record.state == "ALIVE" and not record.pid:
            record.pid = pids.get(record.actor_id, 0)


def _ms(seconds: float) -> int | None:
    return int(seconds * 1000) if seconds else None


def list_nodes(address: str | None = None, filters=None, limit: int = DEFAULT_LIMIT,
               timeout: int | None = None, detail: bool = False, **_) -> list:
    with StateClient(address, timeout) as client:
        nodes = client.nodes()
    return select(NodeState, [NodeState(
        node_id=n.node_id.hex(), node_ip=n.ip, is_head_node=n.is_head,
        state="ALIVE" if n.alive else "DEAD", node_name=n.hostname or n.ip,
        resources_total=dict(n.resources_total), labels=dict(n.labels),
        start_time_ms=_ms(n.start_time), end_time_ms=_ms(n.end_time))
        for n in nodes], filters, limit)


def list_placement_groups(address: str | None = None, filters=None,
                          limit: int = DEFAULT_LIMIT, timeout: int | None = None,
                          detail: bool = False, **_) -> list:
    with StateClient(address, timeout) as client:
        reply = client.gcs("GetAllPlacementGroups", gcs_pb2.GetAllPlacementGroupsRequest())
    return select(PlacementGroupState, [PlacementGroupState(
        placement_group_id=g.placement_group_id.hex(), name=g.name,
        state=_PG_STATES.get(g.state, "UNKNOWN"), strategy=g.strategy,
        bundles=[{"bundle_index": i, "node_id": b.node_id.hex() or None,
                  "unit_resources": dict(b.resources)} for i, b in enumerate(g.bundles)],
        is_detached=g.detached, creator_job_id=_hex(g.creator_job_id))
        for g in reply.groups], filters, limit)


def list_jobs(address: str | None = None, filters=None, limit: int = DEFAULT_LIMIT,
              timeout: int | None = None, detail: bool = False, **_) -> list:
    with StateClient(address, timeout) as client:
        reply = client.gcs("GetAllJobs", gcs_pb2.GetAllJobsRequest())
    return select(JobState, [JobState(job_id=j.job_id.hex(),
                                      status="STOPPED" if j.is_dead else "RUNNING",
                                      namespace=j.namespace, driver_pid=j.driver_pid,
                                      working_dir=j.working_dir)
                             for j in reply.jobs], filters, limit)


def _one(found: list):
    return found[0] if found else None


def get_actor(id: str, address: str | None = None, timeout: int | None = None, **_):
    return _one(list_actors(address, [("actor_id", "=", id)], 1, timeout, detail=True))


def get_node(id: str, address: str | None = None, timeout: int | None = None, **_):
    return _one(list_nodes(address, [("node_id", "=", id)], 1, timeout, detail=True))


def get_job(id: str, address: str | None = None, timeout: int | None = None, **_):
    return _one(list_jobs(address, [("job_id", "=", id)], 1, timeout, detail=True))


def get_placement_group(id: str, address: str | None = None,
                        timeout: int | None = None, **_):
    return _one(list_placement_groups(address, [("placement_group_id", "=", id)], 1,
                                      timeout, detail=True))


# --- tasks -----------------------------------------------------------------------------
def _ns_to_ms(time_ns: int) -> int | None:
    return time_ns // 1_000_000 if time_ns else None


def _task_state(event) -> TaskState:
    from miniray.gcs.task_events import latest_status, status_time
    status = latest_status(event)
    ended = max(status_time(event, gcs_pb2.FINISHED), status_time(event, gcs_pb2.FAILED))
    return TaskState(
        task_id=event.task_id.hex(), attempt_number=event.attempt, name=event.name,
        state=gcs_pb2.TaskStatus.Name(status) if status else "NIL",
        job_id=event.job_id.hex(), actor_id=event.actor_id.hex() or None,
        type=_TASK_TYPES.get(event.type, "NORMAL_TASK"),
        func_or_class_name=event.func_or_class_name,
        parent_task_id=event.parent_task_id.hex() or None,
        node_id=event.node_id.hex() or None, worker_id=event.worker_id.hex() or None,
        worker_pid=event.worker_pid or None, error_type=event.error_type or None,
        error_message=event.error_message or None,
        required_resources=dict(event.required_resources),
        placement_group_id=event.placement_group_id.hex() or None,
        creation_time_ms=_ns_to_ms(min((c.time_ns for c in event.changes), default=0)),
        start_time_ms=_ns_to_ms(status_time(event, gcs_pb2.RUNNING)),
        end_time_ms=_ns_to_ms(ended),
        events=[{"state": gcs_pb2.TaskStatus.Name(c.status),
                 "created_ms": _ns_to_ms(c.time_ns)}
                for c in sorted(event.changes, key=lambda c: c.time_ns)])


def _task_events(client: StateClient, job_id: str | None = None,
                 task_id: str | None = None, limit: int = 0) -> list:
    try:
        request = gcs_pb2.GetTaskEventsRequest(
            job_id=bytes.fromhex(job_id) if job_id else b"",
            task_id=bytes.fromhex(task_id) if task_id else b"", limit=limit)
    except ValueError:                    # not hex: no task has that id
        return []
    return list(client.gcs("GetTaskEvents", request).tasks)


def list_tasks(address: str | None = None, filters=None, limit: int = DEFAULT_LIMIT,
               timeout: int | None = None, detail: bool = False, **_) -> list:
    """Task attempts the cluster knows of (newest first), as Ray's
    ``list_tasks``; "=" filters on ``job_id`` and ``task_id`` are applied
    by the GCS, the others here."""
    checked = check_filters(filters, TaskState)
    at_gcs = {k: v for k, op, v in checked if op == "=" and k in ("job_id", "task_id")}
    only_gcs = len(at_gcs) == len(checked)
    with StateClient(address, timeout) as client:
        events = _task_events(client, at_gcs.get("job_id"), at_gcs.get("task_id"),
                              limit if only_gcs and limit and limit > 0 else 0)
    records = [_task_state(e) for e in events]
    if not detail:
        for record in records:
            record.events = []
    return select(TaskState, records, checked, limit)


def get_task(id: str, address: str | None = None, timeout: int | None = None, **_):
    """The task's latest attempt, or None."""
    found = list_tasks(address, [("task_id", "=", id)], 1000, timeout, detail=True)
    return max(found, key=lambda t: t.attempt_number) if found else None


def _latest_attempts(records: list) -> dict:
    latest: dict = {}
    for record in records:
        known = latest.get(record.task_id)
        if known is None or record.attempt_number > known.attempt_number:
            latest[record.task_id] = record
    return latest


def summarize_tasks(address: str | None = None, timeout: int | None = None, **_) -> dict:
    """Task counts by function and state, in Ray's summary shape."""
    with StateClient(address, timeout) as client:
        latest = _latest_attempts([_task_state(e) for e in _task_events(client)])
    summary: dict = {}
    for record in latest.values():
        entry = summary.setdefault(record.func_or_class_name, {
            "func_or_class_name": record.func_or_class_name, "type": record.type,
            "state_counts": {}})
        entry["state_counts"][record.state] = entry["state_counts"].get(record.state, 0) + 1
    return {"cluster": {
        "summary": summary, "summary_by": "func_name",
        "total_tasks": sum(1 for r in latest.values() if r.type == "NORMAL_TASK"),
        "total_actor_tasks": sum(1 for r in latest.values() if r.type == "ACTOR_TASK"),
        "total_actor_scheduled": sum(1 for r in latest.values()
                                     if r.type == "ACTOR_CREATION_TASK")}}


def summarize_actors(address: str | None = None, timeout: int | None = None, **_) -> dict:
    """Actor counts by class and state, in Ray's summary shape."""
    summary: dict = {}
    actors = list_actors(address, limit=-1, timeout=timeout)
    for actor in actors:
        entry = summary.setdefault(actor.class_name, {"class_name": actor.class_name,
                                                      "state_counts": {}})
        entry["state_counts"][actor.state] = entry["state_counts"].get(actor.state, 0) + 1
    return {"cluster": {"summary": summary, "summary_by": "class",
                        "total_actors": len(actors)}}


# --- raylets: workers and objects ------------------------------------------------------
def _each_node(client: StateClient, method: str, request,
               raise_on_missing_output: bool) -> list[tuple]:
    """(node, reply) of every live node's raylet. One that does not answer
    fails the query (``raise_on_missing_output``) or is left out."""
    replies = []
    for node in client.alive_nodes():
        try:
            replies.append((node, client.raylet(node, method, request)))
        except (ConnectionError, RayStateApiException) as exc:
            if raise_on_missing_output:
                raise RayStateApiException(
                    f"node {node.node_id.hex()} did not answer {method}: {exc} (pass "
                    f"raise_on_missing_output=False to list the others)") from None
            log.warning("leaving out node %s: %s", node.node_id.hex(), exc)
    return replies


def _worker_states(client: StateClient, raise_on_missing_output: bool) -> list:
    records = []
    for node, reply in _each_node(client, "ListWorkers", raylet_pb2.ListWorkersRequest(),
                                  raise_on_missing_output):
        for w in reply.workers:
            records.append(WorkerState(
                worker_id=w.worker_id.hex(), is_alive=w.is_alive,
                worker_type="DRIVER" if w.is_driver else "WORKER",
                exit_type=w.exit_type or None, node_id=node.node_id.hex(), ip=node.ip,
                pid=w.pid, job_id=_hex(w.job_id), actor_id=_hex(w.actor_id),
                exit_detail=w.exit_detail or None,
                start_time_ms=w.start_time_ms or None, end_time_ms=w.end_time_ms or None))
    return records


def list_workers(address: str | None = None, filters=None, limit: int = DEFAULT_LIMIT,
                 timeout: int | None = None, detail: bool = False,
                 raise_on_missing_output: bool = True, **_) -> list:
    """Workers and drivers of every live node (the last exited ones too,
    ``is_alive=False``), from each node's raylet."""
    checked = check_filters(filters, WorkerState)
    with StateClient(address, timeout) as client:
        records = _worker_states(client, raise_on_missing_output)
    return select(WorkerState, records, checked, limit)


def get_worker(id: str, address: str | None = None, timeout: int | None = None, **_):
    return _one(list_workers(address, [("worker_id", "=", id)], 1, timeout, detail=True))


def list_objects(address: str | None = None, filters=None, limit: int = DEFAULT_LIMIT,
                 timeout: int | None = None, detail: bool = False,
                 raise_on_missing_output: bool = True, **_) -> list:
    """Every object reference held in the cluster, one record per process
    and object (as Ray's), largest first: the object's size, the status of
    the task that creates it, Ray's ``reference_type`` and the call site
    (recorded with MINIRAY_RECORD_REF_CREATION_SITES=1), and the process
    holding the reference (``type``, ``pid``, ``ip``, ``worker_id``, and
    whether it ``owned`` the object). See objects.py for how they are
    gathered; a process that truncated its list or did not answer is
    logged as a warning."""
    checked = check_filters(filters, ObjectState)
    with StateClient(address, timeout) as client:
        listing = objects.collect(client, raise_on_missing_output)
    objects.warn_incomplete(listing)
    return select(ObjectState, listing.records, checked, limit)


def get_objects(id: str, address: str | None = None, timeout: int | None = None,
                **_) -> list:
    return list_objects(address, [("object_id", "=", id)], -1, timeout, detail=True)


def summarize_objects(address: str | None = None, timeout: int | None = None,
                      raise_on_missing_output: bool = True, **_) -> dict:
    """Reference counts and sizes by call site, in Ray's summary shape
    (one "disabled" group unless call sites are recorded)."""
    with StateClient(address, timeout) as client:
        listing = objects.collect(client, raise_on_missing_output)
    objects.warn_incomplete(listing)
    return objects.summarize(listing.records, listing.call_sites_recorded)


# --- timeline --------------------------------------------------------------------------
def timeline_events(job_id: str | None = None, address: str | None = None,
                    timeout: int | None = None) -> list[dict]:
    """Chrome trace events (Perfetto, chrome://tracing): a process per node
    and a thread per worker (named by "M" metadata events; ids are small
    integers, as Perfetto wants), a complete ("X") slice per task run."""
    from miniray.gcs.task_events import status_time
    with StateClient(address, timeout) as client:
        events = _task_events(client, job_id)
        nodes = {n.node_id: n for n in client.nodes()}
    slices, node_pids, worker_tids = [], {}, {}
    for e in events:
        start = status_time(e, gcs_pb2.RUNNING)
        failed = status_time(e, gcs_pb2.FAILED)
        end = max(status_time(e, gcs_pb2.FINISHED), failed)
        if not start or not end or end < start:
            continue
        pid = node_pids.setdefault(e.node_id, len(node_pids) + 1)
        worker = (e.node_id, e.worker_id)
        tid = worker_tids.get(worker)
        if tid is None:
            tid = worker_tids[worker] = e.worker_pid or 1_000_000 + len(worker_tids)
        slices.append({
            "cat": "task", "name": e.name, "ph": "X", "pid": pid, "tid": tid,
            "ts": start / 1000, "dur": (end - start) / 1000,
            "cname": "rail_response" if failed else "generic_work",
            "args": {"task_id": e.task_id.hex(), "attempt": e.attempt,
                     "job_id": e.job_id.hex(), "func_or_class_name": e.func_or_class_name,
                     "node_id": e.node_id.hex(), "worker_id": e.worker_id.hex(),
                     "worker_pid": e.worker_pid,
                     "state": "FAILED" if failed else "FINISHED"}})
    slices.sort(key=lambda ev: ev["ts"])
    metadata = []
    for node_id, pid in node_pids.items():
        node = nodes.get(node_id)
        label = f"Node {node.ip} {node_id.hex()[:8]}" if node is not None \
            else f"Node {node_id.hex()[:8] or 'unknown'}"
        metadata.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                         "args": {"name": label}})
    for (node_id, worker_id), tid in worker_tids.items():
        label = f"Worker pid={tid}" if tid < 1_000_000 \
            else f"Worker {worker_id.hex()[:8] or 'unknown'}"
        metadata.append({"name": "thread_name", "ph": "M", "pid": node_pids[node_id],
                         "tid": tid, "args": {"name": label}})
    return metadata + slices


def timeline(filename: str | None = None, address: str | None = None):
    """Ray's ``ray.timeline``: the cluster's task runs as Chrome trace
    events (open them in https://ui.perfetto.dev or chrome://tracing). With
    ``filename``, writes them there as JSON and returns None."""
    events = timeline_events(address=address)
    if filename is None:
        return events
    with open(filename, "w") as f:
        json.dump(events, f)
    return None
