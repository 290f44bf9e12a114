"""Which node should serve a lease request: pure policy over a cluster view.

The raylet that receives a request keeps it if this says "local", and
otherwise tells the owner to ask the chosen node instead (spillback).
Strategies follow Ray's: DEFAULT prefers the local node while it has room
and otherwise the least loaded node that fits; SPREAD rotates over the
nodes that fit; NODE_AFFINITY pins a node (or falls back to DEFAULT when
``soft`` and the node can't take it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from miniray.common.resources import fits

DEFAULT, SPREAD, NODE_AFFINITY = 0, 1, 2


@dataclass(frozen=True)
class NodeView:
    node_id: bytes
    address: str                       # the node's raylet, host:port
    total: dict
    available: dict


@dataclass(frozen=True)
class Decision:
    node_id: bytes | None              # None: no node can ever run it
    reason: str = ""
    unschedulable: bool = False        # hard affinity to a node that can't


def load(node: NodeView, needed: dict) -> float:
    """Fraction in use of the most used resource the request needs."""
    keys = [k for k in needed if node.total.get(k)] or ["CPU"]
    used = [1 - node.available.get(k, 0.0) / node.total[k]
            for k in keys if node.total.get(k)]
    return max(used, default=0.0)


@dataclass
class ClusterPolicy:
    local_node_id: bytes
    _spread_next: int = field(default=0)

    def pick(self, needed: dict, kind: int, nodes: dict[bytes, NodeView],
             target: bytes = b"", soft: bool = False) -> Decision:
        feasible = [n for n in nodes.values() if fits(needed, n.total)]
        if kind == NODE_AFFINITY:
            node = nodes.get(target)
            if node is not None and fits(needed, node.total):
                return Decision(node.node_id)
            if not soft:
                why = "is not alive" if node is None else "cannot fit the request"
                return Decision(None, f"node {target.hex()} {why}", unschedulable=True)
        if not feasible:
            return Decision(None, f"no node has {needed}")
        free = [n for n in feasible if fits(needed, n.available)]
        if kind == SPREAD:
            pool = sorted(free or feasible, key=lambda n: n.node_id)
            choice = pool[self._spread_next % len(pool)]
            self._spread_next += 1
            return Decision(choice.node_id)
        local = nodes.get(self.local_node_id)
        if local is not None and local in free and load(local, needed) < 0.5:
            return Decision(local.node_id)
        if free:
            best = min(free, key=lambda n: (load(n, needed),
                                            n.node_id != self.local_node_id))
            return Decision(best.node_id)
        if local is not None and local in feasible:
            return Decision(local.node_id)         # queue here until room frees up
        return Decision(min(feasible, key=lambda n: load(n, needed)).node_id)
