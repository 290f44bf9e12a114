"""Placement groups in the GCS: choosing nodes for bundles and reserving them.

``place_bundles`` is the pure decision (which node gets each bundle, given
each node's available resources); the manager reserves the bundles on those
raylets (ReserveBundle), rolls back and retries later when any of them
fails, and returns them (ReturnBundles) when the group is removed or its
job ends. Groups that can't be placed yet stay pending and are retried.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

from miniray.common import config
from miniray.common.resources import add, fits, subtract
from miniray.gcs.waiters import Waiters
from miniray.protocol import common_pb2, raylet_pb2, raylet_pb2_grpc

log = logging.getLogger("miniray.gcs")
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def place_bundles(bundles: list[dict], strategy: str,
                  nodes: dict[bytes, dict]) -> list[bytes] | None:
    """A node per bundle, or None if the strategy can't be met right now.

    ``nodes`` maps node id -> available resources (not modified). Larger
    bundles are placed first, and a small bounded search backtracks when a
    greedy choice blocks a later bundle.
    """
    available = {n: dict(r) for n, r in nodes.items()}
    order = sorted(available)
    if strategy in ("PACK", "STRICT_PACK"):
        total: dict = {}
        for bundle in bundles:
            for k, v in bundle.items():
                total[k] = total.get(k, 0.0) + v
        for node in order:
            if fits(total, available[node]):
                return [node] * len(bundles)
        if strategy == "STRICT_PACK":
            return None
    sequence = sorted(range(len(bundles)), key=lambda i: -sum(bundles[i].values()))
    placement: list = [None] * len(bundles)
    used: dict[bytes, int] = {}
    budget = [10_000]

    def candidates(bundle: dict) -> list[bytes]:
        nodes_fit = [n for n in order if fits(bundle, available[n])]
        if strategy == "STRICT_SPREAD":
            return [n for n in nodes_fit if n not in used]
        if strategy == "SPREAD":          # unused nodes first
            return sorted(nodes_fit, key=lambda n: n in used)
        return sorted(nodes_fit, key=lambda n: n not in used)    # PACK: reuse first

    def search(k: int) -> bool:
        if k == len(sequence):
            return True
        budget[0] -= 1
        if budget[0] < 0:
            return False
        index = sequence[k]
        bundle = bundles[index]
        for node in candidates(bundle):
            subtract(available[node], bundle)
            used[node] = used.get(node, 0) + 1
            placement[index] = node
            if search(k + 1):
                return True
            add(available[node], bundle)
            used[node] -= 1
            if not used[node]:
                del used[node]
        return False

    return placement if search(0) else None


Stats = common_pb2.PlacementGroupStats


def _only(resources, names: set) -> dict:
    """The amounts of ``names`` in a node's resource map."""
    return {name: resources[name] for name in names if name in resources}


def _attempt_started(stats) -> None:
    """A scheduling attempt begins (Ray's PlacementGroupStats)."""
    now = time.time_ns()
    if stats.scheduling_attempt:
        waited_ms = (now - stats.scheduling_started_time_ns) / 1e6
        stats.highest_retry_delay_ms = max(stats.highest_retry_delay_ms, waited_ms)
    stats.scheduling_attempt += 1
    stats.scheduling_started_time_ns = now
    stats.scheduling_state = Stats.SCHEDULING_STARTED


def _placed(stats) -> None:
    now = time.time_ns()
    stats.scheduling_state = Stats.FINISHED
    stats.scheduling_latency_us = (now - stats.scheduling_started_time_ns) // 1000
    stats.end_to_end_creation_latency_us = \
        (now - stats.creation_request_received_ns) // 1000


class PlacementGroupManager:
    def __init__(self, server):
        self.server = server
        self.groups: dict[bytes, common_pb2.PlacementGroupInfo] = {}
        # Removed groups, oldest removal first (after a restart too: the
        # storage loads rows in the order they were last written): kept for
        # the state API up to a bound, so a program that makes and removes
        # groups all day leaves the tables (and every scan of them) no bigger.
        self._removed: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._waiters = Waiters()
        self._retry_task: asyncio.Task | None = None
        # Pending groups are tried again when the cluster view changes, or at
        # once when the GCS itself frees room (bundles returned) or the view
        # proved stale (a raylet refused a bundle the view said fitted).
        self._retry_soon = False
        self._wakeup: asyncio.Future | None = None
        self._storage = server.storage

    def _save(self, group: common_pb2.PlacementGroupInfo) -> None:
        if self._storage is not None:
            self._storage.put("placement_groups", group.placement_group_id,
                              group.SerializeToString())

    def recover(self) -> None:
        """After a GCS restart: the stored groups. A group still being
        placed may have reserved some bundles before the GCS died: those
        are returned, then it is placed again."""
        for value in self._storage.load("placement_groups").values():
            group = common_pb2.PlacementGroupInfo.FromString(value)
            self.groups[group.placement_group_id] = group
            if group.state == common_pb2.PG_REMOVED:
                self._removed[group.placement_group_id] = None
            if group.state == common_pb2.PG_PENDING:
                asyncio.get_running_loop().create_task(self._replace(group))
        self._forget_removed()

    def _forget_removed(self) -> None:
        """Forget the longest-removed groups past the bound."""
        while len(self._removed) > config.MAXIMUM_GCS_REMOVED_PLACEMENT_GROUP_COUNT:
            group_id, _ = self._removed.popitem(last=False)
            self.groups.pop(group_id, None)
            if self._storage is not None:
                self._storage.delete("placement_groups", group_id)

    async def _replace(self, group) -> None:
        await self._return(group, {n.node_id for n in self.server.nodes.alive_nodes()})
        for bundle in group.bundles:
            bundle.node_id = b""
        await self._try_place(group)

    def held_elsewhere(self, node_id: bytes, held: list[tuple[bytes, int]]) -> set[bytes]:
        """Of the bundles a node reports holding, the groups it should not
        hold them for (removed, or placed elsewhere while it was unheard)."""
        stray = set()
        for pg_id, index in held:
            group = self.groups.get(pg_id)
            if group is None or group.state == common_pb2.PG_REMOVED or (
                    group.state == common_pb2.PG_CREATED
                    and (index >= len(group.bundles)
                         or group.bundles[index].node_id != node_id)):
                stray.add(pg_id)
        return stray

    async def create(self, info: common_pb2.PlacementGroupInfo) -> str:
        """Record the group, then make its first placement attempt (its
        bundle reservations) before returning, so the caller learns at once
        if it is placed (the common case) without a second round trip.
        Returns an error message, or "" on success."""
        if info.name and any(g.name == info.name and g.namespace == info.namespace
                             and g.state != common_pb2.PG_REMOVED
                             for g in self.groups.values()):
            return (f"Failed to create placement group '{info.name}' because a "
                    f"placement group with the same name already exists in "
                    f"namespace '{info.namespace}'.")
        stored = common_pb2.PlacementGroupInfo()
        stored.CopyFrom(info)
        stored.state = common_pb2.PG_PENDING
        stored.stats.creation_request_received_ns = time.time_ns()
        stored.stats.scheduling_state = Stats.QUEUED
        self.groups[stored.placement_group_id] = stored
        self._save(stored)
        await self._try_place(stored)
        return ""

    def by_name(self, name: str, namespace: str):
        for group in self.groups.values():
            if group.name == name and group.namespace == namespace \
                    and group.state != common_pb2.PG_REMOVED:
                return group
        return None

    async def _try_place(self, group: common_pb2.PlacementGroupInfo) -> bool:
        """Place the group's unplaced bundles (all of them, or those lost
        with a node) and reserve them; False if it must wait."""
        if group.state != common_pb2.PG_PENDING:
            return True
        _attempt_started(group.stats)
        nodes = {n.node_id: n for n in self.server.nodes.alive_nodes()}
        todo = [i for i, b in enumerate(group.bundles) if not b.node_id]
        kept = {b.node_id for b in group.bundles if b.node_id}
        # Only the resources the bundles ask for: a node's map also holds
        # every placed group's bundle resources (thousands, with many groups).
        needed = {name for i in todo for name in group.bundles[i].resources}
        candidates = {k: _only(self.server.nodes.available(k), needed) for k in nodes}
        strategy = group.strategy
        if kept and strategy == "STRICT_PACK":       # stay with the others
            candidates = {k: v for k, v in candidates.items() if k in kept}
            strategy = "PACK"
        elif kept and strategy == "STRICT_SPREAD":   # avoid the others' nodes
            candidates = {k: v for k, v in candidates.items() if k not in kept}
        bundles = [dict(group.bundles[i].resources) for i in todo]
        placement = place_bundles(bundles, strategy, candidates)
        if placement is None:
            # Would it fit the nodes' totals (free later), or never as they are?
            totals = {k: _only(self.server.nodes.total(k), needed) for k in candidates}
            group.stats.scheduling_state = (
                Stats.NO_RESOURCES if place_bundles(bundles, strategy, totals) is not None
                else Stats.INFEASIBLE)
            self._schedule_retry()
            return False
        # All bundles at once (one round trip for the group, not one per
        # bundle); if any reservation fails, those that held are returned.
        async def reserve(index: int, node_id: bytes) -> bool:
            try:
                reply = await self._raylet(nodes[node_id]).ReserveBundle(
                    raylet_pb2.ReserveBundleRequest(
                        placement_group_id=group.placement_group_id, bundle_index=index,
                        resources=group.bundles[index].resources))
                return reply.reserved
            except Exception:
                return False

        held = await asyncio.gather(*(reserve(i, n) for i, n in zip(todo, placement)))
        # Rolled back: only the bundles this attempt reserved (bundles kept
        # from before, on a node this attempt also used, stay).
        reserved: dict[bytes, list[int]] = {}
        for index, node_id, ok in zip(todo, placement, held):
            if ok:
                reserved.setdefault(node_id, []).append(index)
        if not all(held):
            group.stats.scheduling_state = Stats.FAILED_TO_COMMIT_RESOURCES
            await self._return(group, reserved)
            self._kick()              # the view was stale: try again soon
            self._schedule_retry()
            return False
        if group.state != common_pb2.PG_PENDING:      # removed meanwhile
            await self._return(group, reserved)
            return True
        for index, node_id in zip(todo, placement):
            group.bundles[index].node_id = node_id
            self.server.nodes.take(node_id, group.bundles[index].resources)
        group.state = common_pb2.PG_CREATED
        _placed(group.stats)
        self._save(group)
        await self._notify()
        return True

    async def on_node_failure(self, node_id: bytes) -> None:
        """Bundles reserved on a dead node are placed again elsewhere."""
        for group in self.groups.values():
            lost = [b for b in group.bundles if b.node_id == node_id]
            if group.state == common_pb2.PG_CREATED and lost:
                for bundle in lost:
                    bundle.node_id = b""
                group.state = common_pb2.PG_PENDING
                self._save(group)
                asyncio.get_running_loop().create_task(self._try_place(group))

    def _schedule_retry(self) -> None:
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(self._retry_pending())

    async def _retry_pending(self) -> None:
        """Pending groups wait for room (resources freed, nodes joining)."""
        nodes = self.server.nodes
        while any(g.state == common_pb2.PG_PENDING for g in self.groups.values()):
            version = nodes.version
            await asyncio.sleep(0.2)
            # Then only when there may be room: the view changed (resources
            # freed, nodes joining), or a kick.
            await self._wait_for_room(version)
            for group in list(self.groups.values()):
                if group.state == common_pb2.PG_PENDING:
                    await self._try_place(group)

    async def _wait_for_room(self, version: int) -> None:
        if self._retry_soon:
            self._retry_soon = False
            return
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            await self.server.nodes.wait_changed(version, 5.0, waiter=self._wakeup)
        finally:
            self._wakeup = None
            self._retry_soon = False

    def _kick(self) -> None:
        """Have pending groups tried again without waiting for the view."""
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        else:
            self._retry_soon = True

    def _raylet(self, node):
        return self.server.channels.stub(f"{node.ip}:{node.raylet_port}",
                                         raylet_pb2_grpc.RayletServiceStub)

    async def _return_later(self, group, node_ids: set) -> None:
        """_return, once the removal's reply is on its way: the raylets' RPCs
        need not delay the caller (two loop turns: the storage flush, then
        the handler's reply)."""
        for _ in range(2):
            await asyncio.sleep(0)
        await self._return(group, node_ids)

    async def _return(self, group, node_ids) -> None:
        """Return the group's bundles on ``node_ids`` (a set: all of them
        there; a dict node -> bundle indexes: only those)."""
        for node in self.server.nodes.alive_nodes():
            if node.node_id in node_ids:
                indexes = node_ids[node.node_id] if isinstance(node_ids, dict) else ()
                try:
                    await self._raylet(node).ReturnBundles(raylet_pb2.ReturnBundlesRequest(
                        placement_group_id=group.placement_group_id,
                        bundle_indexes=indexes))
                except Exception:
                    pass
        self._kick()                  # room for the groups still pending

    async def remove(self, placement_group_id: bytes) -> bool:
        group = self.groups.get(placement_group_id)
        if group is None or group.state == common_pb2.PG_REMOVED:
            return False
        # The nodes holding its bundles: all of them once created; those
        # kept from before while it is placed again after a node died (an
        # attempt in flight returns its own when it sees the removal).
        holders = {b.node_id for b in group.bundles if b.node_id}
        group.state = common_pb2.PG_REMOVED
        group.stats.scheduling_state = Stats.REMOVED
        self._save(group)
        self._removed[placement_group_id] = None
        self._forget_removed()
        if holders:
            # As in Ray, the bundles go back in the background; a GCS that
            # dies meanwhile has the raylets return them at resync
            # (held_elsewhere: bundles of a removed group).
            asyncio.get_running_loop().create_task(self._return_later(group, holders))
        await self._notify()
        return True

    async def on_job_finished(self, job_id: bytes) -> None:
        for group in list(self.groups.values()):
            if group.creator_job_id == job_id and not group.detached:
                await self.remove(group.placement_group_id)

    async def _notify(self) -> None:
        """Wake the callers waiting on groups that are no longer pending."""
        for group_id in self._waiters.keys():
            group = self.groups.get(group_id)
            if group is None or group.state != common_pb2.PG_PENDING:
                self._waiters.wake(group_id)

    async def wait_ready(self, placement_group_id: bytes, timeout: float):
        def settled():
            group = self.groups.get(placement_group_id)
            return group is None or group.state != common_pb2.PG_PENDING

        await self._waiters.wait(placement_group_id, settled,
                                 None if timeout < 0 else timeout)
        return self.groups.get(placement_group_id)
