"""Creating, restarting and killing actors: the RPCs behind the actor table.

Creation: pick a node that can hold the actor, lease a dedicated worker
from its raylet (the lease lasts as long as the actor), and push the
creation task to that worker. The worker's reply says whether the
constructor succeeded. When a worker hosting an actor dies the table
decides between a restart (run creation again) and death.
"""
from __future__ import annotations

import asyncio
import logging

from miniray import exceptions
from miniray.common import config
from miniray.common.ids import ActorID, NodeID, WorkerID
from miniray.common.serialization import serialize
from miniray.gcs.waiters import Waiters
from miniray.gcs.actor_table import (
    ALIVE, DEAD, PENDING, RESTARTING, ActorEntry, ActorTable)
from miniray.protocol import (
    common_pb2, core_worker_pb2 as cw_pb2, core_worker_pb2_grpc as cw_grpc,
    raylet_pb2, raylet_pb2_grpc)

log = logging.getLogger("miniray.gcs")

# Raylets an actor's lease request may be sent on to before the GCS picks
# a node again (their views of each other lag too).
MAX_SPILLBACKS = 8


def death_cause(message: str) -> bytes:
    """A serialized ActorDiedError, as callers will raise it."""
    return serialize(exceptions.ActorDiedError(message), is_error=True).to_bytes()


class ActorManager:
    def __init__(self, server):
        self.server = server          # GcsServer: nodes, channels
        self.table = ActorTable(server.storage,
                                config.MAXIMUM_GCS_DESTROYED_ACTOR_CACHED_COUNT)
        from miniray.raylet.cluster_policy import ClusterPolicy
        self._policy = ClusterPolicy(local_node_id=b"")   # the GCS has no local node
        # WaitActorChange callers, per actor: only that actor's changes wake them.
        self._waiters = Waiters()
        self._tasks: set[asyncio.Task] = set()
        # After a restart: workers of alive actors that their node has not
        # yet confirmed alive (ResyncNode), worker id -> node id.
        self._unconfirmed: dict[WorkerID, bytes] = {}

    # --- registration and creation ---------------------------------------------
    def register(self, spec: common_pb2.TaskSpec) -> ActorEntry:
        entry = self.table.register(spec)
        self._spawn(self._create(entry))
        return entry

    def recover(self) -> None:
        """After a GCS restart: the stored actors. Creations that were under
        way start again (the worker leased for one may hold a half-built
        actor: it is stopped first). Alive actors stay as they are; their
        raylets report (ResyncNode) any that died meanwhile."""
        for entry in self.table.load():
            if entry.info.state in (PENDING, RESTARTING):
                self._spawn(self._recreate(entry))
            elif entry.info.state == ALIVE and entry.worker_id is not None:
                self._unconfirmed[entry.worker_id] = entry.node_id

    async def resync_node(self, node_id: bytes, live_workers: set[bytes]) -> None:
        """A node's report after a GCS restart: actors it hosted before the
        restart whose workers are gone died while the GCS was away."""
        for worker_id, on_node in list(self._unconfirmed.items()):
            if on_node != node_id:
                continue
            del self._unconfirmed[worker_id]
            if bytes(worker_id) not in live_workers:
                log.warning("worker %s died while the GCS was away", worker_id.hex())
                await self.on_worker_failure(worker_id)

    async def _recreate(self, entry: ActorEntry) -> None:
        worker_id, node = entry.worker_id, self._node_of(entry)
        if worker_id is not None:
            self.table.assign(entry, None, b"")      # its death is not a failure
            if node is not None:
                await self._kill_worker(node, worker_id)
        await self._create(entry)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _create(self, entry: ActorEntry) -> None:
        """Lease a worker for the actor and run its constructor there."""
        while entry.info.state != DEAD:
            version = self.server.nodes.version
            node = self._pick_node(entry)
            if node is None:
                if entry.info.state == DEAD:      # unschedulable
                    await self._notify()
                    return
                # Wait for a node that can host it: one joining, or one's
                # resources changing (a placement group's bundles placed).
                await self.server.nodes.wait_changed(version, timeout=5.0)
                continue
            spec = entry.spec
            options = spec.actor_options
            try:
                node, lease = await self._lease(node, entry)
            except Exception as exc:
                log.warning("leasing a worker for actor %s failed: %s",
                            options.class_name, exc)
                await asyncio.sleep(0.2)
                continue
            if node is None:       # sent to a node that is gone (or away): pick again
                await asyncio.sleep(0.1)
                continue
            if lease.rejected:
                self.table.mark_dead(entry, death_cause(
                    f"The actor is not schedulable: {lease.reject_reason}."))
                await self._notify()
                return
            if lease.runtime_env_error:
                # Not retried (Ray's rule): the actor dies, and its callers
                # raise RuntimeEnvSetupError.
                self.table.mark_dead(entry, serialize(
                    exceptions.RuntimeEnvSetupError(lease.runtime_env_error),
                    is_error=True).to_bytes())
                await self._notify()
                return
            if entry.info.state == DEAD:          # killed while we waited
                await self._kill_worker(node, lease.worker.worker_id)
                return
            worker_id = WorkerID(lease.worker.worker_id)
            self.table.assign(entry, worker_id, node.node_id)
            options.num_restarts = entry.info.num_restarts
            worker = self.server.channels.stub(f"{lease.worker.ip}:{lease.worker.port}",
                                               cw_grpc.CoreWorkerServiceStub)
            # The actor keeps the lease's instances (GPU ids, ...) for life.
            push = cw_pb2.PushTaskRequest(spec=spec)
            for name, ids in lease.resource_ids.items():
                push.resource_ids[name].CopyFrom(ids)
            try:
                reply = await worker.PushTask(push)
            except Exception:
                # The worker died while constructing: a failure like any other.
                # (Not entry.worker_id: a kill meanwhile has cleared it.)
                await self.on_worker_failure(worker_id)
                return
            if reply.is_application_error:
                self.table.mark_dead(entry, reply.returns[0].data if reply.returns
                                     else death_cause("The actor's constructor failed."))
                await self._kill_worker(node, lease.worker.worker_id)
            elif entry.info.state != DEAD:
                self.table.mark_alive(entry, lease.worker, entry.worker_id,
                                      lease.worker_pid)
            await self._notify()
            return

    async def _lease(self, node, entry: ActorEntry):
        """Lease a worker for the actor, starting at ``node`` and following
        the raylets' spillbacks (our view of free resources lags theirs:
        actors created together may all have picked the same node).
        Returns (the node that granted or rejected, its reply), or
        (None, None) if a spillback named a node that is gone."""
        spec = entry.spec
        options = spec.actor_options
        request = raylet_pb2.RequestWorkerLeaseRequest(
            resources=spec.resources, job_id=spec.job_id,
            function_name=options.class_name, actor_id=spec.actor_id,
            placement_resources=options.placement_resources,
            # An actor that can restart is what the memory monitor kills
            # before one that can't (Ray's rule).
            retriable=entry.can_restart(), runtime_env=spec.runtime_env)
        for _ in range(MAX_SPILLBACKS):
            raylet = self.server.channels.stub(f"{node.ip}:{node.raylet_port}",
                                               raylet_pb2_grpc.RayletServiceStub)
            lease = await raylet.RequestWorkerLease(request)
            if not lease.spillback_address:
                return node, lease
            node = next((n for n in self.server.nodes.alive_nodes()
                         if f"{n.ip}:{n.raylet_port}" == lease.spillback_address), None)
            if node is None or entry.info.state == DEAD:
                break
        return None, None

    def _pick_node(self, entry: ActorEntry):
        """Where to place the actor (None: no live node can host it yet)."""
        from miniray.raylet.cluster_policy import NodeView
        spec = entry.spec
        needed = dict(spec.resources)
        for key, value in spec.actor_options.placement_resources.items():
            needed[key] = max(needed.get(key, 0.0), value)
        manager = self.server.nodes
        nodes = {n.node_id: NodeView(n.node_id, f"{n.ip}:{n.raylet_port}",
                                     manager.total(n.node_id), manager.available(n.node_id))
                 for n in manager.alive_nodes()}
        strategy = spec.scheduling_strategy
        decision = self._policy.pick(needed, strategy.kind, nodes, strategy.node_id,
                                     strategy.soft)
        if decision.unschedulable:
            self.table.mark_dead(entry, death_cause(
                f"The actor is not schedulable: {decision.reason}."))
            return None
        if decision.node_id is None:
            return None
        # Counted taken there until the node's next heartbeat says what it
        # has: actors created together spread over the nodes that fit.
        manager.take(decision.node_id, needed)
        return manager.get(NodeID(decision.node_id))

    async def _kill_worker(self, node, worker_id: bytes) -> None:
        raylet = self.server.channels.stub(f"{node.ip}:{node.raylet_port}",
                                           raylet_pb2_grpc.RayletServiceStub)
        try:
            await raylet.KillWorker(raylet_pb2.KillWorkerRequest(worker_id=worker_id,
                                                                 force=True))
        except Exception:
            pass

    # --- failures and kills -------------------------------------------------------
    async def on_worker_failure(self, worker_id: WorkerID, is_driver: bool = False,
                                reason: str = "", dead_node: bytes = b"") -> None:
        """``reason``: how the worker ended as its raylet saw it ("Worker exit
        type: ... Worker exit detail: ..."), for the death cause of an actor
        that cannot restart; ``dead_node``: it went with its node."""
        for entry in self.table.hosted_by(worker_id):
            exiting = entry.exiting
            if self.table.on_failure(entry):
                log.info("restarting actor %s", entry.info.class_name)
                self._spawn(self._create(entry))
            elif dead_node:
                self.table.mark_dead(entry, death_cause(
                    f"The actor is dead because its node has died. Node Id: "
                    f"{dead_node.hex()}"))
            else:
                self.table.mark_dead(entry, death_cause(
                    "The actor is dead because its worker process has died. " + (
                        "Worker exit type: INTENDED_USER_EXIT Worker exit detail: "
                        "Worker exits by a user request: exit_actor() or "
                        "__ray_terminate__() was called." if exiting else
                        reason or "Worker exit type: SYSTEM_ERROR Worker exit "
                                  "detail: the worker process exited unexpectedly.")))
        owner = None
        for entry in self.table.owned_by(worker_id):
            owner = owner or entry.info.owner
            await self.kill(entry, force=True, no_restart=True, cause=(
                f"The actor is dead because its owner has died. Owner Id: "
                f"{worker_id.hex()} Owner Ip address: {owner.ip}"
                + (f" Owner worker exit detail: {reason}" if reason else "")))
        await self._notify()

    async def on_node_failure(self, node_id: bytes) -> None:
        """A node died: its actors restart elsewhere (or die)."""
        workers = {e.worker_id for e in self.table.on_node(node_id) if e.worker_id}
        for worker_id in workers:
            await self.on_worker_failure(worker_id, dead_node=node_id)

    async def kill(self, entry: ActorEntry, *, force: bool, no_restart: bool,
                   cause: str = "The actor is dead because it was killed by "
                                "`ray.kill`.") -> None:
        node = self._node_of(entry)
        worker_id = entry.worker_id
        if no_restart:
            self.table.mark_exiting(entry)
            self.table.mark_dead(entry, death_cause(cause))
        if node is None or worker_id is None:
            if not no_restart and entry.info.state != DEAD:
                # Not up yet (its creation is under way): as in Ray, the kill
                # ends this incarnation: a restart if one is left (the creation
                # under way makes it), else death.
                if not self.table.on_failure(entry):
                    self.table.mark_dead(entry, death_cause(cause))
            await self._notify()
            return
        if force:
            await self._kill_worker(node, worker_id)
        else:
            address = entry.info.address if entry.info.state == ALIVE else None
            await self._exit_gracefully(address, node, worker_id)
        await self._notify()

    async def _exit_gracefully(self, address, node, worker_id) -> None:
        if address is None:
            await self._kill_worker(node, worker_id)
            return
        stub = self.server.channels.stub(f"{address.ip}:{address.port}",
                                         cw_grpc.CoreWorkerServiceStub)
        try:
            await stub.ExitWorker(cw_pb2.ExitWorkerRequest(force=False))
        except Exception:
            await self._kill_worker(node, worker_id)

    def _node_of(self, entry: ActorEntry):
        for node in self.server.nodes.alive_nodes():
            if node.node_id == entry.node_id:
                return node
        return None

    def mark_exiting(self, actor_id: ActorID) -> None:
        entry = self.table.get(actor_id)
        if entry is not None:
            self.table.mark_exiting(entry)

    # --- watching -------------------------------------------------------------------
    async def _notify(self) -> None:
        """Wake the callers waiting on actors that changed since last time."""
        changed, self.table.changed = self.table.changed, set()
        for actor_id in changed:
            self._waiters.wake(actor_id)

    async def wait_change(self, actor_id: ActorID, known_state: int,
                          known_restarts: int, timeout: float) -> ActorEntry | None:
        def changed():
            entry = self.table.get(actor_id)
            return entry is None or entry.info.state != known_state \
                or entry.info.num_restarts != known_restarts

        await self._waiters.wait(actor_id, changed, timeout)
        return self.table.get(actor_id)
