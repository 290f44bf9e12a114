"""Node membership and liveness (no I/O: the servicer and a timer drive it).

Resources move as deltas both ways. A raylet's heartbeat carries only the
amounts that changed and the names that went away since its previous one
(a node with a thousand placement-group bundles holds thousands of names;
one task starting moves one or two of them). The cluster view raylets get
back is a delta too: every change takes the next ``version``; each node
remembers when it last changed and, per resource name, when that name last
changed (most recent last), so the changes since version v are found by
walking back from the newest. An idle cluster costs the GCS nothing per
heartbeat whatever its size, and a busy one costs what actually moved.

A node's per-name history is compacted when names that went away pile up
(bundles are named after their group, so they never come back): a raylet
whose view is older than what was dropped gets that node whole.
"""
from __future__ import annotations

import asyncio
import collections
import time

from miniray.common.ids import NodeID
from miniray.protocol import common_pb2, gcs_pb2

AVAILABLE, TOTAL = 0, 1


class _NodeState:
    """One node's authoritative resource maps (plain dicts: read on every
    placement decision) and the history of their changes."""

    __slots__ = ("info", "maps", "changed", "floor", "whole_since", "estimated")

    def __init__(self, info: common_pb2.NodeInfo, version: int):
        self.info = info
        self.maps = (dict(info.resources_available), dict(info.resources_total))
        # (map, name) -> the version that last changed it, least recent first.
        self.changed: collections.OrderedDict[tuple[int, str], int] = \
            collections.OrderedDict()
        self.floor = version           # changes at or before it may be forgotten
        self.whole_since = version     # joined or died: sent whole to older views
        # Names the GCS took from `available` ahead of the node's own figures
        # (placement of bundles), with the figure the node last reported.
        self.estimated: dict[str, float] = {}


class NodeManager:
    def __init__(self, death_timeout_s: float, storage=None):
        self.death_timeout_s = death_timeout_s
        self._nodes: dict[NodeID, _NodeState] = {}
        self._last_seen: dict[NodeID, float] = {}
        self._storage = storage           # gcs/storage.py: membership survives a restart
        self.version = 0                  # of the cluster view
        # Each node's last change, least recent first.
        self._changed: collections.OrderedDict[NodeID, int] = collections.OrderedDict()
        # Who waits for the view to change (work that fits no node yet).
        self._waiters: list[asyncio.Future] = []

    def _touch(self, node_id: NodeID, whole: bool = False) -> None:
        self.version += 1
        self._changed[node_id] = self.version
        self._changed.move_to_end(node_id)
        if whole:
            self._nodes[node_id].whole_since = self.version
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

    # --- the view raylets get ----------------------------------------------------------
    def changes_since(self, version: int) -> list[gcs_pb2.NodeChange]:
        """What changed in the view after ``version``: nodes that joined or
        died whole (dead ones with alive=false), the others as deltas."""
        out = []
        for node_id in reversed(self._changed):
            if self._changed[node_id] <= version:
                break
            state = self._nodes[node_id]
            if state.whole_since > version or state.floor > version:
                out.append(gcs_pb2.NodeChange(node=state.info, full=True))
                continue
            info = state.info
            change = gcs_pb2.NodeChange(node=common_pb2.NodeInfo(
                node_id=info.node_id, ip=info.ip, raylet_port=info.raylet_port,
                alive=info.alive))
            deltas = (change.available, change.total)
            for key in reversed(state.changed):
                if state.changed[key] <= version:
                    break
                which, name = key
                amount = state.maps[which].get(name)
                if amount is None:
                    deltas[which].removed.append(name)
                else:
                    deltas[which].set[name] = amount
            out.append(change)
        return out

    # --- applying what nodes report ----------------------------------------------------
    def _set(self, state: _NodeState, which: int, name: str, amount: float | None) -> bool:
        """Set (None: remove) one name in one of the node's maps; True if it
        changed. The history records it at the version about to be taken."""
        current = state.maps[which].get(name)
        if current == amount:
            return False
        proto = state.info.resources_available if which == AVAILABLE \
            else state.info.resources_total
        if amount is None:
            del state.maps[which][name]
            del proto[name]
        else:
            state.maps[which][name] = amount
            proto[name] = amount
        key = (which, name)
        state.changed[key] = self.version + 1
        state.changed.move_to_end(key)
        return True

    def _apply(self, state: _NodeState, which: int, delta, whole: bool) -> bool:
        changed = False
        if whole:
            for name in [n for n in state.maps[which] if n not in delta.set]:
                changed |= self._set(state, which, name, None)
        else:
            for name in delta.removed:
                changed |= self._set(state, which, name, None)
        for name, amount in delta.set.items():
            changed |= self._set(state, which, name, amount)
        return changed

    @staticmethod
    def _compact(state: _NodeState) -> None:
        """Forget the oldest history once it is mostly names that went away."""
        live = len(state.maps[AVAILABLE]) + len(state.maps[TOTAL])
        if len(state.changed) <= 2 * live + 1024:
            return
        while len(state.changed) > live + 512:
            _, version = state.changed.popitem(last=False)
            state.floor = max(state.floor, version)

    def heartbeat(self, node_id: NodeID, available=None, total=None, *,
                  whole: bool = False, now: float | None = None) -> bool:
        """Record a heartbeat and the resource changes it carries
        (ResourceDelta messages; ``whole``: they hold the entire maps).
        False if the node is unknown or already dead."""
        state = self._nodes.get(node_id)
        if state is None or not state.info.alive:
            return False
        self._last_seen[node_id] = time.monotonic() if now is None else now
        changed = False
        # The node's own figures replace what the GCS estimated meanwhile.
        estimated, state.estimated = state.estimated, {}
        if whole:
            changed |= self._apply(state, AVAILABLE, available, True)
        else:
            for name, reported in estimated.items():
                if available is None or name not in available.set:
                    if name in state.maps[AVAILABLE]:
                        changed |= self._set(state, AVAILABLE, name, reported)
            if available is not None:
                changed |= self._apply(state, AVAILABLE, available, False)
        if total is not None and (whole or total.set or total.removed):
            changed |= self._apply(state, TOTAL, total, whole)
        if changed:
            self._touch(node_id)
            self._compact(state)
        return True

    def take(self, node_id: bytes, resources) -> None:
        """Count ``resources`` taken on the node now (bundles placed there),
        ahead of the node's own figures at its next heartbeat; the next
        group placed meanwhile is not sent where they went."""
        state = self._nodes.get(NodeID(node_id))
        if state is None:
            return
        # Not a change of the view raylets get (they do not place bundles):
        # the node's heartbeat brings its own figures soon.
        available = state.maps[AVAILABLE]
        for name, amount in resources.items():
            if name in available:
                state.estimated.setdefault(name, available[name])
                self._set(state, AVAILABLE, name, max(0.0, available[name] - amount))

    # --- membership --------------------------------------------------------------------
    def _save(self, node: common_pb2.NodeInfo) -> None:
        if self._storage is not None:
            self._storage.put("nodes", node.node_id, node.SerializeToString())

    def _add(self, node_id: NodeID, node: common_pb2.NodeInfo) -> None:
        self._nodes[node_id] = _NodeState(node, self.version + 1)
        self._touch(node_id, whole=True)

    def load(self, now: float | None = None) -> None:
        """The stored nodes, after a GCS restart. Those alive then get a
        full death timeout from now to be heard from again."""
        now = time.monotonic() if now is None else now
        for value in self._storage.load("nodes").values():
            node = common_pb2.NodeInfo.FromString(value)
            node_id = NodeID(node.node_id)
            self._add(node_id, node)
            if node.alive:
                self._last_seen[node_id] = now

    def register(self, info: common_pb2.NodeInfo, now: float | None = None) -> None:
        node = common_pb2.NodeInfo()
        node.CopyFrom(info)
        node.alive = True
        node.start_time = time.time()
        node_id = NodeID(node.node_id)
        self._add(node_id, node)
        self._last_seen[node_id] = time.monotonic() if now is None else now
        self._save(node)

    def mark_dead(self, node_id: NodeID) -> bool:
        state = self._nodes.get(node_id)
        if state is None or not state.info.alive:
            return False
        node = state.info
        node.alive = False
        node.end_time = time.time()
        node.resources_available.clear()
        state.maps[AVAILABLE].clear()
        state.estimated.clear()
        self._last_seen.pop(node_id, None)
        self._touch(node_id, whole=True)
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
        state = self._nodes.get(node_id)
        return None if state is None else state.info

    def available(self, node_id) -> dict:
        """The node's available resources (the GCS's own dict: read, never
        modify)."""
        return self._nodes[NodeID(node_id)].maps[AVAILABLE]

    def total(self, node_id) -> dict:
        """The node's resource totals (read, never modify)."""
        return self._nodes[NodeID(node_id)].maps[TOTAL]

    def all_nodes(self) -> list[common_pb2.NodeInfo]:
        return [s.info for s in self._nodes.values()]

    def alive_nodes(self) -> list[common_pb2.NodeInfo]:
        return [s.info for s in self._nodes.values() if s.info.alive]


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
