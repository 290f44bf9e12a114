"""Utilities built on the core API: named-actor listing, ActorPool, Queue."""
from miniray.api import list_named_actors

__all__ = ["list_named_actors", "ActorPool"]


def __getattr__(name):
    if name == "ActorPool":
        from miniray.util.actor_pool import ActorPool
        return ActorPool
    raise AttributeError(f"module 'miniray.util' has no attribute {name!r}")
