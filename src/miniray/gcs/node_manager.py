"""Node membership and liveness (no I/O: the servicer and a timer drive it).

The cluster view raylets get with each heartbeat is a delta: every change
to a node (joined, resources changed, died) takes the next ``version``, and
a raylet that has version v gets the nodes changed since, found from the
most recently changed backwards, so an idle cluster costs the GCS nothing
per heartbeat whatever its size.
"""
from __future__ import annotations

import asyncio
import collections
import time

from miniray.common.ids import NodeID
from miniray.protocol import common_pb2


class NodeManager:
    def __init__(self, death_timeout_s: float, storage=None):
        self.death_timeout_s = death_timeout_s
        self._nodes: dict[NodeID, common_pb2.NodeInfo] = {}
        self._last_seen: dict[NodeID, float] = {}
        self._storage = storage           # gcs/storage.py: membership survives a restart
        self.version = 0                  # of the cluster view
        # Each node's last change, least recent first.
        self._changed: collections.OrderedDict[NodeID, int] = collections.OrderedDict()
        # Who waits for the view to change (work that fits no node yet).
        self._waiters: list[asyncio.Future] = []

    def _touch(self, node_id: NodeID) -> None:
        self.version += 1
        self._changed[node_id] = self.version
        self._changed.move_to_end(node_id)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_changed(self, version: int, timeout: float,
                           waiter: asyncio.Future | None = None) -> None:
        """Return once the view is newer than ``version`` (a node joined,
        died, or its resources changed), or after ``timeout`` seconds; or
        once the caller resolves its own ``waiter`` (a wake-up of its own)."""
        if self.version != version:
            return
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            pass

    def changes_since(self, version: int) -> list[common_pb2.NodeInfo]:
        """The nodes changed after ``version`` (dead ones included)."""
        out = []
        for node_id in reversed(self._changed):
            if self._changed[node_id] <= version:
                break
            out.append(self._nodes[node_id])
        return out

    def _save(self, node: common_pb2.NodeInfo) -> None:
        if self._storage is not None:
            self._storage.put("nodes", node.node_id, node.SerializeToString())

    def load(self, now: float | None = None) -> None:
        """The stored nodes, after a GCS restart. Those alive then get a
        full death timeout from now to be heard from again."""
        now = time.monotonic() if now is None else now
        for value in self._storage.load("nodes").values():
            node = common_pb2.NodeInfo.FromString(value)
            node_id = NodeID(node.node_id)
            self._nodes[node_id] = node
            self._touch(node_id)
            if node.alive:
                self._last_seen[node_id] = now

    def register(self, info: common_pb2.NodeInfo, now: float | None = None) -> None:
        node = common_pb2.NodeInfo()
        node.CopyFrom(info)
        node.alive = True
        node.start_time = time.time()
        node_id = NodeID(node.node_id)
        self._nodes[node_id] = node
        self._last_seen[node_id] = time.monotonic() if now is None else now
        self._touch(node_id)
        self._save(node)

    def heartbeat(self, node_id: NodeID, available, now: float | None = None,
                  total=None) -> bool:
        """Record a heartbeat; False if the node is unknown or already dead."""
        node = self._nodes.get(node_id)
        if node is None or not node.alive:
            return False
        self._last_seen[node_id] = time.monotonic() if now is None else now
        changed = dict(node.resources_available) != dict(available)
        if changed:
            node.resources_available.clear()
            node.resources_available.update(available)
        if total and dict(node.resources_total) != dict(total):
            node.resources_total.clear()
            node.resources_total.update(total)
            changed = True
        if changed:
            self._touch(node_id)
        return True

    def mark_dead(self, node_id: NodeID) -> bool:
        node = self._nodes.get(node_id)
        if node is None or not node.alive:
            return False
        node.alive = False
        node.end_time = time.time()
        node.resources_available.clear()
        self._last_seen.pop(node_id, None)
        self._touch(node_id)
        self._save(node)
        return True

    def heard_since(self, node_id: NodeID, cutoff: float) -> bool:
        """Whether a heartbeat of the node arrived after ``cutoff`` (monotonic)."""
        seen = self._last_seen.get(node_id)
        return seen is not None and seen >= cutoff

    def silent_since(self, cutoff: float) -> list[NodeID]:
        """Alive nodes last heard from before ``cutoff`` (monotonic)."""
        return [n for n, seen in self._last_seen.items() if seen < cutoff]

    def check_timeouts(self, now: float | None = None) -> list[NodeID]:
        """Mark nodes silent for longer than the timeout dead; return them."""
        now = time.monotonic() if now is None else now
        dead = self.silent_since(now - self.death_timeout_s)
        for node_id in dead:
            self.mark_dead(node_id)
        return dead

    def get(self, node_id: NodeID) -> common_pb2.NodeInfo | None:
        return self._nodes.get(node_id)

    def all_nodes(self) -> list[common_pb2.NodeInfo]:
        return list(self._nodes.values())

    def alive_nodes(self) -> list[common_pb2.NodeInfo]:
        return [n for n in self._nodes.values() if n.alive]


class HealthChecks:
    """Consecutive failed probes per node (the GCS probes every raylet, as
    Ray's GCS health checks do); a node reaching ``threshold`` is dead."""

    def __init__(self, threshold: int):
        self.threshold = max(1, threshold)
        self._failures: dict[bytes, int] = {}

    def record(self, node_id: bytes, ok: bool) -> bool:
        """Record a probe's outcome; True when the node must be declared dead."""
        if ok:
            self._failures.pop(node_id, None)
            return False
        count = self._failures[node_id] = self._failures.get(node_id, 0) + 1
        if count >= self.threshold:
            del self._failures[node_id]
            return True
        return False

    def forget(self, node_id: bytes) -> None:
        self._failures.pop(node_id, None)
