"""The state API: what the cluster is running, read from the GCS.

``list_actors()``, ``list_nodes()``, ``list_placement_groups()`` and
``list_jobs()`` return records with Ray's field names; ``filters`` takes
Ray's ``[(key, "=" | "!=", value), ...]`` form, ``limit`` caps the count.
``get_actor(id)`` / ``get_node(id)`` return one record or None.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from miniray.protocol import common_pb2, gcs_pb2

__all__ = ["ActorState", "NodeState", "PlacementGroupState", "JobState",
           "list_actors", "list_nodes", "list_placement_groups", "list_jobs",
           "get_actor", "get_node"]

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
