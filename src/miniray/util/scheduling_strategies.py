"""Scheduling strategies for tasks and actors, with Ray's names.

Pass one as ``scheduling_strategy=`` in ``@remote``/``.options()``; the
strings "DEFAULT" and "SPREAD" are accepted too.
"""
from __future__ import annotations

from miniray.common.ids import NodeID
from miniray.protocol import common_pb2

__all__ = ["DEFAULT_SCHEDULING_STRATEGY", "SPREAD_SCHEDULING_STRATEGY",
           "NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy",
           "to_proto", "bundle_request"]

DEFAULT_SCHEDULING_STRATEGY = "DEFAULT"
SPREAD_SCHEDULING_STRATEGY = "SPREAD"


class NodeAffinitySchedulingStrategy:
    """Run on the node with id ``node_id`` (hex); if ``soft``, run elsewhere
    when that node is dead or can't fit the request, else fail."""

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False):
        if not isinstance(node_id, str):
            raise ValueError(f"node_id must be a hex string, got {node_id!r}")
        try:
            size = len(bytes.fromhex(node_id))
        except ValueError:
            raise ValueError(f"node_id must be a hex string, got {node_id!r}") from None
        if size != NodeID.SIZE:
            raise ValueError(f"node_id must be the hex of a {NodeID.SIZE}-byte node id, "
                             f"got {node_id!r}")
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self):
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id}, soft={self.soft})"


class PlacementGroupSchedulingStrategy:
    """Run in a bundle of ``placement_group`` (any bundle when the index is -1);
    with ``placement_group_capture_child_tasks``, tasks it starts do too."""

    def __init__(self, placement_group, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: bool | None = None):
        from miniray.util.placement_group import PlacementGroup
        if not isinstance(placement_group, PlacementGroup):
            raise ValueError(f"placement_group must be a PlacementGroup, "
                             f"got {placement_group!r}")
        if not isinstance(placement_group_bundle_index, int) or \
                placement_group_bundle_index < -1:
            raise ValueError(f"placement group bundle index "
                             f"{placement_group_bundle_index!r} is invalid: it must be "
                             f"-1 (any bundle) or a bundle's index (an int >= 0)")
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks


def check_fits_bundles(resources: dict, strategy, name: str) -> None:
    """As Ray checks at submission: a task or actor placed in a placement
    group must fit one of its bundles (the one it names, if it names one),
    else it could never run: ValueError."""
    if not isinstance(strategy, PlacementGroupSchedulingStrategy):
        return
    bundles = strategy.placement_group.bundle_specs
    if not bundles:
        return                  # not known here (removed): the GCS decides
    index = strategy.placement_group_bundle_index
    candidates = bundles if index < 0 else bundles[index:index + 1]
    needed = {k: v for k, v in resources.items() if v}
    if not any(all(bundle.get(k, 0) >= v for k, v in needed.items())
               for bundle in candidates):
        where = "any bundle" if index < 0 else f"bundle {index}"
        raise ValueError(
            f"Cannot schedule {name} with the placement group because the "
            f"resource request {needed} cannot fit into {where} of the "
            f"placement group, {bundles}.")


def bundle_request(resources: dict, strategy: common_pb2.SchedulingStrategy) -> dict:
    """Rename a task's resources to those of its placement group bundle."""
    if strategy.kind != strategy.PLACEMENT_GROUP:
        return resources
    suffix = strategy.placement_group_id.hex()
    index = strategy.bundle_index
    tag = f"_group_{index}_{suffix}" if index >= 0 else f"_group_{suffix}"
    renamed = {name + tag: amount for name, amount in resources.items() if amount}
    if not renamed:        # a zero-resource task still needs to land in the group
        renamed["bundle" + tag] = 0.001
    return renamed


def to_proto(strategy) -> common_pb2.SchedulingStrategy:
    """Validate a user's scheduling_strategy option and encode it."""
    kinds = common_pb2.SchedulingStrategy
    if strategy is None or strategy == DEFAULT_SCHEDULING_STRATEGY:
        return kinds(kind=kinds.DEFAULT)
    if strategy == SPREAD_SCHEDULING_STRATEGY:
        return kinds(kind=kinds.SPREAD)
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return kinds(kind=kinds.NODE_AFFINITY, node_id=bytes.fromhex(strategy.node_id),
                     soft=strategy.soft)
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        pg = strategy.placement_group
        if strategy.placement_group_bundle_index >= pg.bundle_count > 0:
            raise ValueError(
                f"placement group bundle index {strategy.placement_group_bundle_index} "
                f"is invalid: the placement group has {pg.bundle_count} bundles "
                f"(valid indexes: 0-{pg.bundle_count - 1}, or -1 for any)")
        return kinds(kind=kinds.PLACEMENT_GROUP, placement_group_id=pg.id,
                     bundle_index=strategy.placement_group_bundle_index,
                     capture_child_tasks=bool(
                         strategy.placement_group_capture_child_tasks))
    raise ValueError(
        f"Invalid scheduling_strategy {strategy!r}: use 'DEFAULT', 'SPREAD', a "
        "NodeAffinitySchedulingStrategy or a PlacementGroupSchedulingStrategy")
