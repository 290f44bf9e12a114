"""The state API: what the cluster is running, read from the GCS.

``list_actors()``, ``list_nodes()``, ``list_placement_groups()`` and
``list_jobs()`` return records with Ray's field names; ``filters`` takes
Ray's ``[(key, "=" | "!=", value), ...]`` form, ``limit`` caps the count.
``get_actor(id)`` / ``get_node(id)`` return one record or None.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from miniray.protocol import common_pb2, gcs_pb2

__all__ = ["ActorState", "NodeState", "PlacementGroupState", "JobState", "TaskState",
           "list_actors", "list_nodes", "list_placement_groups", "list_jobs",
           "list_tasks", "get_actor", "get_node", "get_task", "summarize_tasks",
           "summarize_actors"]

_ACTOR_STATES = {common_pb2.PENDING_CREATION: "PENDING_CREATION",
                 common_pb2.ALIVE: "ALIVE", common_pb2.RESTARTING: "RESTARTING",
                 common_pb2.DEAD: "DEAD"}
_PG_STATES = {common_pb2.PG_PENDING: "PENDING", common_pb2.PG_CREATED: "CREATED",
              common_pb2.PG_REMOVED: "REMOVED"}


class _Record:
    def __getitem__(self, key):          # Ray's records also read like dicts
        return getattr(self, key)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ActorState(_Record):
    actor_id: str
    class_name: str
    state: str
    job_id: str
    name: str
    namespace: str
    pid: int
    node_id: str | None
    num_restarts: int
    is_detached: bool


@dataclass
class NodeState(_Record):
    node_id: str
    node_ip: str
    is_head_node: bool
    state: str
    node_name: str
    resources_total: dict = field(default_factory=dict)


@dataclass
class PlacementGroupState(_Record):
    placement_group_id: str
    name: str
    state: str
    strategy: str
    bundles: list = field(default_factory=list)
    is_detached: bool = False


@dataclass
class JobState(_Record):
    job_id: str
    status: str
    namespace: str
    driver_pid: int


@dataclass
class TaskState(_Record):
    task_id: str
    attempt_number: int
    name: str
    state: str
    job_id: str
    actor_id: str | None
    type: str
    func_or_class_name: str
    parent_task_id: str | None
    node_id: str | None
    worker_id: str | None
    worker_pid: int | None
    error_type: str | None
    error_message: str | None = None
    required_resources: dict = field(default_factory=dict)
    placement_group_id: str | None = None
    language: str = "PYTHON"
    creation_time_ms: int | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None
    events: list = field(default_factory=list)      # [{"state", "created_ms"}]


_TASK_TYPES = {common_pb2.NORMAL_TASK: "NORMAL_TASK",
               common_pb2.ACTOR_CREATION_TASK: "ACTOR_CREATION_TASK",
               common_pb2.ACTOR_TASK: "ACTOR_TASK"}


def _gcs(method: str, request):
    from miniray import api
    return api.ensure_initialized().call("gcs", method, request)


def _select(records: list, filters, limit: int) -> list:
    for key, op, value in filters or []:
        if op not in ("=", "!="):
            raise ValueError(f"unsupported filter operator {op!r}: use '=' or '!='")
        keep = (lambda r, k=key, v=value: str(getattr(r, k)) == str(v)) if op == "=" \
            else (lambda r, k=key, v=value: str(getattr(r, k)) != str(v))
        records = [r for r in records if keep(r)]
    return records[:limit]


def list_actors(filters=None, limit: int = 100, detail: bool = False, **_) -> list:
    reply = _gcs("GetAllActors", gcs_pb2.GetAllActorsRequest())
    return _select([ActorState(
        actor_id=a.actor_id.hex(), class_name=a.class_name,
        state=_ACTOR_STATES.get(a.state, "UNKNOWN"), job_id=a.job_id.hex(),
        name=a.name, namespace=a.namespace, pid=a.pid,
        node_id=a.address.node_id.hex() if a.address.node_id else None,
        num_restarts=a.num_restarts, is_detached=a.detached)
        for a in reply.actors], filters, limit)


def list_nodes(filters=None, limit: int = 100, detail: bool = False, **_) -> list:
    reply = _gcs("GetAllNodes", gcs_pb2.GetAllNodesRequest())
    return _select([NodeState(
        node_id=n.node_id.hex(), node_ip=n.ip, is_head_node=n.is_head,
        state="ALIVE" if n.alive else "DEAD", node_name=n.ip,
        resources_total=dict(n.resources_total))
        for n in reply.nodes], filters, limit)


def list_placement_groups(filters=None, limit: int = 100, detail: bool = False,
                          **_) -> list:
    reply = _gcs("GetAllPlacementGroups", gcs_pb2.GetAllPlacementGroupsRequest())
    return _select([PlacementGroupState(
        placement_group_id=g.placement_group_id.hex(), name=g.name,
        state=_PG_STATES.get(g.state, "UNKNOWN"), strategy=g.strategy,
        bundles=[{"bundle_index": i, "node_id": b.node_id.hex() or None,
                  "unit_resources": dict(b.resources)} for i, b in enumerate(g.bundles)],
        is_detached=g.detached)
        for g in reply.groups], filters, limit)


def list_jobs(filters=None, limit: int = 100, detail: bool = False, **_) -> list:
    reply = _gcs("GetAllJobs", gcs_pb2.GetAllJobsRequest())
    return _select([JobState(job_id=j.job_id.hex(),
                             status="STOPPED" if j.is_dead else "RUNNING",
                             namespace=j.namespace, driver_pid=j.driver_pid)
                    for j in reply.jobs], filters, limit)


def get_actor(id: str):
    found = list_actors(filters=[("actor_id", "=", id)], limit=1)
    return found[0] if found else None


def get_node(id: str):
    found = list_nodes(filters=[("node_id", "=", id)], limit=1)
    return found[0] if found else None


# --- tasks ---------------------------------------------------------------------------
def _ms(time_ns: int) -> int | None:
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
        creation_time_ms=_ms(min((c.time_ns for c in event.changes), default=0)),
        start_time_ms=_ms(status_time(event, gcs_pb2.RUNNING)),
        end_time_ms=_ms(ended),
        events=[{"state": gcs_pb2.TaskStatus.Name(c.status), "created_ms": _ms(c.time_ns)}
                for c in sorted(event.changes, key=lambda c: c.time_ns)])


def _task_events(job_id: str | None = None, task_id: str | None = None, limit: int = 0):
    reply = _gcs("GetTaskEvents", gcs_pb2.GetTaskEventsRequest(
        job_id=bytes.fromhex(job_id) if job_id else b"",
        task_id=bytes.fromhex(task_id) if task_id else b"", limit=limit))
    return reply


def list_tasks(filters=None, limit: int = 100, detail: bool = False, **_) -> list:
    """Task attempts the cluster knows of (newest first), as Ray's
    ``list_tasks``; a ``job_id`` or ``task_id`` "=" filter is applied by the
    GCS, the others here."""
    eq = {k: v for k, op, v in (filters or []) if op == "=" and k in ("job_id", "task_id")}
    reply = _task_events(eq.get("job_id"), eq.get("task_id"))
    records = [_task_state(e) for e in reply.tasks]
    if not detail:
        for record in records:
            record.events = []
    return _select(records, filters, limit)


def get_task(id: str):
    """The task's latest attempt, or None."""
    found = list_tasks(filters=[("task_id", "=", id)], limit=1000, detail=True)
    return max(found, key=lambda t: t.attempt_number) if found else None


def summarize_tasks(**_) -> dict:
    """Task counts by function and state, in Ray's summary shape."""
    summary: dict = {}
    records = [_task_state(e) for e in _task_events().tasks]
    latest: dict = {}
    for record in records:                      # the latest attempt of each task
        known = latest.get(record.task_id)
        if known is None or record.attempt_number > known.attempt_number:
            latest[record.task_id] = record
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


def summarize_actors(**_) -> dict:
    """Actor counts by class and state, in Ray's summary shape."""
    summary: dict = {}
    actors = list_actors(limit=10**9)
    for actor in actors:
        entry = summary.setdefault(actor.class_name, {"class_name": actor.class_name,
                                                      "state_counts": {}})
        entry["state_counts"][actor.state] = entry["state_counts"].get(actor.state, 0) + 1
    return {"cluster": {"summary": summary, "summary_by": "class",
                        "total_actors": len(actors)}}


def timeline_events(job_id: str | None = None) -> list[dict]:
    """Chrome trace events (Perfetto / chrome://tracing): a row per worker
    (pid: the node, tid: the worker), a slice per task run."""
    events = []
    for e in _task_events(job_id).tasks:
        from miniray.gcs.task_events import status_time
        start = status_time(e, gcs_pb2.RUNNING)
        end = max(status_time(e, gcs_pb2.FINISHED), status_time(e, gcs_pb2.FAILED))
        if not start or not end or end < start:
            continue
        node = e.node_id.hex()[:8] or "unknown"
        events.append({
            "cat": "task", "name": e.name, "ph": "X",
            "pid": f"Node {node}", "tid": f"Worker {e.worker_pid or e.worker_id.hex()[:8]}",
            "ts": start / 1000, "dur": (end - start) / 1000,
            "cname": "rail_response" if status_time(e, gcs_pb2.FAILED) else "generic_work",
            "args": {"task_id": e.task_id.hex(), "attempt": e.attempt,
                     "job_id": e.job_id.hex(), "func_or_class_name": e.func_or_class_name,
                     "state": gcs_pb2.TaskStatus.Name(
                         gcs_pb2.FAILED if status_time(e, gcs_pb2.FAILED)
                         else gcs_pb2.FINISHED)}})
    events.sort(key=lambda ev: ev["ts"])
    return events
