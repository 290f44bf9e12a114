"""Utilities built on the core API (ActorPool, queue, placement groups...)."""
