"""Utilities built on the core API: named-actor listing, placement groups,
scheduling strategies, ActorPool and Queue (``miniray.util.queue``),
``as_completed``/``map_unordered``, ``inspect_serializability``, and
``multiprocessing.Pool`` (``miniray.util.multiprocessing``, imported on its
own)."""
from miniray.api import list_named_actors
from miniray.common.serialization import deregister_serializer, register_serializer
from miniray.util.actor_pool import ActorPool
from miniray.util.check_serialize import inspect_serializability
from miniray.util.helpers import as_completed, map_unordered
from miniray.util.placement_group import (
    PlacementGroup, get_current_placement_group, get_placement_group, placement_group,
    placement_group_table, remove_placement_group)



def get_node_ip_address() -> str:
    """The IP address of the node this process runs on (Ray's
    ``ray.util.get_node_ip_address``)."""
    from miniray.common import config
    return config.NODE_IP


__all__ = [
    "ActorPool", "PlacementGroup", "as_completed", "deregister_serializer",
    "get_current_placement_group", "get_node_ip_address", "get_placement_group",
    "inspect_serializability", "list_named_actors", "map_unordered", "placement_group",
    "placement_group_table", "register_serializer", "remove_placement_group",
]
