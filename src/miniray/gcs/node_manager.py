"""Node membership and liveness (no I/O: the servicer and a timer drive it)."""
from __future__ import annotations

import time

from miniray.common.ids import NodeID
from miniray.protocol import common_pb2


class NodeManager:
    def __init__(self, death_timeout_s: float):
        self.death_timeout_s = death_timeout_s
        self._nodes: dict[NodeID, common_pb2.NodeInfo] = {}
        self._last_seen: dict[NodeID, float] = {}

    def register(self, info: common_pb2.NodeInfo, now: float | None = None) -> None:
        node = common_pb2.NodeInfo()
        node.CopyFrom(info)
        node.alive = True
        node.start_time = time.time()
        node_id = NodeID(node.node_id)
        self._nodes[node_id] = node
        self._last_seen[node_id] = time.monotonic() if now is None else now

    def heartbeat(self, node_id: NodeID, available, now: float | None = None,
                  total=None) -> bool:
        """Record a heartbeat; False if the node is unknown or already dead."""
        node = self._nodes.get(node_id)
        if node is None or not node.alive:
            return False
        self._last_seen[node_id] = time.monotonic() if now is None else now
        node.resources_available.clear()
        node.resources_available.update(available)
        if total:
            node.resources_total.clear()
            node.resources_total.update(total)
        return True

    def mark_dead(self, node_id: NodeID) -> bool:
        node = self._nodes.get(node_id)
        if node is None or not node.alive:
            return False
        node.alive = False
        node.end_time = time.time()
        node.resources_available.clear()
        self._last_seen.pop(node_id, None)
        return True

    def check_timeouts(self, now: float | None = None) -> list[NodeID]:
        """Mark nodes silent for longer than the timeout dead; return them."""
        now = time.monotonic() if now is None else now
        dead = [n for n, seen in self._last_seen.items()
                if now - seen > self.death_timeout_s]
        for node_id in dead:
            self.mark_dead(node_id)
        return dead

    def get(self, node_id: NodeID) -> common_pb2.NodeInfo | None:
        return self._nodes.get(node_id)

    def all_nodes(self) -> list[common_pb2.NodeInfo]:
        return list(self._nodes.values())

    def alive_nodes(self) -> list[common_pb2.NodeInfo]:
        return [n for n in self._nodes.values() if n.alive]
