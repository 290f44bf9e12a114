"""Placement groups: reserve bundles of resources across nodes, then
schedule tasks and actors into them (PlacementGroupSchedulingStrategy).

The GCS places the bundles (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD) and
reserves them on raylets; each reserved bundle shows up on its node as
resources named like Ray's (``CPU_group_<index>_<pg id>``), which is what
tasks scheduled into the group ask for.
"""
from __future__ import annotations

import math
import warnings

from miniray.common.ids import PlacementGroupID
from miniray.common.resources import RESERVED_NAMES
from miniray.common.validation import MAX_BUNDLES, MAX_RESOURCE_AMOUNT, MAX_TIMEOUT_S
from miniray.protocol import common_pb2, gcs_pb2

__all__ = ["PlacementGroup", "placement_group", "remove_placement_group",
           "get_placement_group", "placement_group_table",
           "get_current_placement_group"]

VALID_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
_STATES = {common_pb2.PG_PENDING: "PENDING", common_pb2.PG_CREATED: "CREATED",
           common_pb2.PG_REMOVED: "REMOVED"}


def _worker():
    from miniray import api
    return api.ensure_initialized()


class PlacementGroup:
    """A handle to a placement group (picklable; pass it to tasks)."""

    def __init__(self, id: PlacementGroupID, bundle_cache: list | None = None):
        self.id = id
        self._bundles = bundle_cache
        # Placed when created (the GCS said so) and not removed through this
        # handle since: ready() and wait() need not ask the GCS.
        self._placed = False

    @property
    def bundle_specs(self) -> list[dict]:
        if self._bundles is None:
            info = _get_info(placement_group_id=self.id)
            self._bundles = [dict(b.resources) for b in info.bundles] if info else []
        return self._bundles

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    @property
    def is_empty(self) -> bool:
        return self.id.is_nil()

    def ready(self):
        """An ObjectRef that resolves (to this group) once it is placed."""
        if self._placed:
            from miniray import api
            return api.put(self)
        return _worker().placement_group_ready(self)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """Wait until the group is placed; False on timeout. A removed group
        (before or after it was placed) raises ValueError, as in Ray."""
        worker = _worker()
        if math.isnan(timeout_seconds):
            raise ValueError("timeout_seconds must be a number, got nan")
        if self._placed:
            return True
        if timeout_seconds > MAX_TIMEOUT_S:
            timeout_seconds = -1                      # forever
        reply = worker.call("gcs", "WaitPlacementGroupReady",
                            gcs_pb2.WaitPlacementGroupReadyRequest(
                                placement_group_id=self.id, timeout=timeout_seconds))
        if reply.found and reply.info.state == common_pb2.PG_REMOVED:
            raise ValueError(f"Placement group {self.id.hex()} is removed: it will "
                             f"never be ready.")
        return reply.found and reply.info.state == common_pb2.PG_CREATED

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"PlacementGroup({self.id.hex()})"

    def __reduce__(self):
        return PlacementGroup, (self.id, self._bundles)


def _validate_bundles(bundles) -> None:
    if not isinstance(bundles, list):
        raise ValueError("The placement group `bundles` argument must be a list of "
                         f"resource dictionaries, got {type(bundles).__name__}")
    if not bundles:
        raise ValueError("The placement group `bundles` argument must be a non-empty "
                         "list of resource dictionaries, got []")
    if len(bundles) > MAX_BUNDLES:
        raise ValueError(f"A placement group has at most {MAX_BUNDLES} bundles, "
                         f"got {len(bundles)}")
    for bundle in bundles:
        if not isinstance(bundle, dict) or not bundle:
            raise ValueError("Bundles must be non-empty resource dictionaries, got "
                             f"{bundle!r}")
        for name, amount in bundle.items():
            if name in RESERVED_NAMES:
                raise ValueError(f"Invalid bundle {bundle!r}: {name!r} is a reserved "
                                 f"resource name")
            if not isinstance(name, str) or isinstance(amount, bool) or \
                    not isinstance(amount, (int, float)) or amount < 0 \
                    or not math.isfinite(amount) or amount > MAX_RESOURCE_AMOUNT:
                raise ValueError(f"Invalid bundle {bundle!r}: bundles must be resource "
                                 "dictionaries (a name -> a finite, non-negative number)")
        if all(v == 0 for v in bundle.values()):
            raise ValueError("Bundles cannot be an empty dictionary or resources with "
                             f"only 0 values. Bundles: {bundles}")
    if any("object_store_memory" in bundle for bundle in bundles):
        warnings.warn("Setting 'object_store_memory' for bundles is deprecated since it "
                      "doesn't actually reserve the required object store memory; "
                      "objects that do not fit are spilled to disk instead.",
                      DeprecationWarning, stacklevel=3)


def placement_group(bundles: list[dict], strategy: str = "PACK", name: str = "",
                    lifetime: str | None = None, _soft_target_node_id=None,
                    bundle_label_selector=None) -> PlacementGroup:
    """Reserve ``bundles`` asynchronously; see ``PlacementGroup.ready()``."""
    if strategy not in VALID_STRATEGIES:
        raise ValueError(f"Invalid placement group strategy {strategy}. "
                         f"Supported strategies are: {list(VALID_STRATEGIES)}.")
    _validate_bundles(bundles)
    if lifetime not in (None, "detached"):
        raise ValueError("Placement group `lifetime` argument must be either `None` "
                         f"or 'detached'. Got {lifetime}.")
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name)}")
    worker = _worker()
    pg_id = PlacementGroupID.from_random()
    info = common_pb2.PlacementGroupInfo(
        placement_group_id=pg_id, name=name, namespace=worker.namespace,
        strategy=strategy, detached=lifetime == "detached",
        creator_job_id=worker.current_job_id())
    for bundle in bundles:
        info.bundles.add(resources={k: float(v) for k, v in bundle.items()})
    reply = worker.call("gcs", "CreatePlacementGroup",
                        gcs_pb2.CreatePlacementGroupRequest(info=info))
    if reply.error:
        raise ValueError(reply.error)
    group = PlacementGroup(pg_id, [dict(b) for b in bundles])
    group._placed = reply.created
    return group


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Release the group's bundles; tasks and actors using them are killed."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"expected a PlacementGroup, got {type(placement_group)}")
    placement_group._placed = False
    _worker().call("gcs", "RemovePlacementGroup", gcs_pb2.RemovePlacementGroupRequest(
        placement_group_id=placement_group.id))


def _get_info(**query):
    reply = _worker().call("gcs", "GetPlacementGroup",
                           gcs_pb2.GetPlacementGroupRequest(**query))
    return reply.info if reply.found else None


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live placement group called ``placement_group_name`` (this namespace)."""
    worker = _worker()
    info = _get_info(name=placement_group_name, namespace=worker.namespace)
    if info is None:
        raise ValueError("Failed to look up placement group with name: "
                         f"{placement_group_name}")
    return PlacementGroup(PlacementGroupID(info.placement_group_id),
                          [dict(b.resources) for b in info.bundles])


def _table_entry(info) -> dict:
    return {
        "placement_group_id": info.placement_group_id.hex(),
        "name": info.name,
        "bundles": {i: dict(b.resources) for i, b in enumerate(info.bundles)},
        # As in Ray: every bundle, "" while it is not placed.
        "bundles_to_node_id": {i: b.node_id.hex() for i, b in enumerate(info.bundles)},
        "strategy": info.strategy,
        "state": _STATES.get(info.state, "UNKNOWN"),
        "is_detached": info.detached,
        "stats": _stats_entry(info.stats),
    }


def _stats_entry(stats) -> dict:
    """Ray's "stats" of a placement_group_table entry."""
    return {
        "end_to_end_creation_latency_ms": stats.end_to_end_creation_latency_us / 1000.0,
        "scheduling_latency_ms": stats.scheduling_latency_us / 1000.0,
        "scheduling_attempt": stats.scheduling_attempt,
        "highest_retry_delay_ms": stats.highest_retry_delay_ms,
        "scheduling_state": common_pb2.PlacementGroupStats.SchedulingState.Name(
            stats.scheduling_state),
    }


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict:
    """The state of one placement group, or of all of them by id."""
    if placement_group is not None:
        info = _get_info(placement_group_id=placement_group.id)
        return _table_entry(info) if info is not None else {}
    reply = _worker().call("gcs", "GetAllPlacementGroups",
                           gcs_pb2.GetAllPlacementGroupsRequest())
    return {g.placement_group_id.hex(): _table_entry(g) for g in reply.groups}


def get_current_placement_group() -> PlacementGroup | None:
    """The group the current task or actor runs in (None in the driver and
    outside placement groups)."""
    from miniray.core_worker.object_ref import core_worker
    worker = core_worker()
    strategy = worker.task_context.placement_group if worker else None
    if strategy is None:
        return None
    return PlacementGroup(PlacementGroupID(strategy.placement_group_id))
