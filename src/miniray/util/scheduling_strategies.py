"""Scheduling strategies for tasks and actors, with Ray's names.

Pass one as ``scheduling_strategy=`` in ``@remote``/``.options()``; the
strings "DEFAULT" and "SPREAD" are accepted too.
"""
from __future__ import annotations

from miniray.protocol import common_pb2

__all__ = ["DEFAULT_SCHEDULING_STRATEGY", "SPREAD_SCHEDULING_STRATEGY",
           "NodeAffinitySchedulingStrategy", "to_proto"]

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
            bytes.fromhex(node_id)
        except ValueError:
            raise ValueError(f"node_id must be a hex string, got {node_id!r}") from None
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self):
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id}, soft={self.soft})"


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
    raise ValueError(
        f"Invalid scheduling_strategy {strategy!r}: use 'DEFAULT', 'SPREAD' or a "
        "NodeAffinitySchedulingStrategy")
