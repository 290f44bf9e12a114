"""Utilities built on the core API: named-actor listing, placement groups,
scheduling strategies, ActorPool and Queue (``miniray.util.queue``)."""
from miniray.api import list_named_actors
from miniray.util.actor_pool import ActorPool
from miniray.util.placement_group import (
    PlacementGroup, get_current_placement_group, get_placement_group, placement_group,
    placement_group_table, remove_placement_group)

__all__ = [
    "ActorPool", "PlacementGroup", "get_current_placement_group", "get_placement_group",
    "list_named_actors", "placement_group", "placement_group_table",
    "remove_placement_group",
]
