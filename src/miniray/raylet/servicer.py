"""RayletService: thin gRPC handlers over the Raylet."""
from __future__ import annotations

import asyncio

import grpc

from miniray.common.ids import ObjectID, WorkerID
from miniray.exceptions import ObjectStoreFullError
from miniray.object_store.transfer import read_chunk
from miniray.protocol import (
    common_pb2, object_manager_pb2 as om_pb2, object_manager_pb2_grpc as om_grpc,
    raylet_pb2, raylet_pb2_grpc)


class RayletServicer(raylet_pb2_grpc.RayletServiceServicer):
    def __init__(self, raylet):
        self.raylet = raylet

    async def RegisterWorker(self, request, context):
        raylet = self.raylet
        worker_id = WorkerID(request.worker_id)
        if request.is_driver:
            raylet.register_driver(worker_id, request.pid, request.job_id)
        elif not raylet.pool.on_registered(worker_id, request.port):
            raise ValueError(f"unknown worker {worker_id.hex()}")
        return raylet_pb2.RegisterWorkerReply(
            node_id=raylet.node_id, store_directory=raylet.store_directory,
            gcs_address=raylet.gcs_address, session_dir=raylet.session_dir)

    async def RequestWorkerLease(self, request, context):
        raylet = self.raylet
        if not request.grant_or_reject:
            needed = {**request.placement_resources, **request.resources}
            decision = await raylet.place(needed, request.strategy)
            if decision.unschedulable:
                return raylet_pb2.RequestWorkerLeaseReply(
                    rejected=True, reject_reason=decision.reason)
            if decision.node_id is not None and decision.node_id != bytes(raylet.node_id):
                return raylet_pb2.RequestWorkerLeaseReply(
                    spillback_address=raylet.cluster_view()[decision.node_id].address)
        lease = await raylet.request_lease(dict(request.resources), request.job_id,
                                           request.requester_worker_id,
                                           request.function_name,
                                           dict(request.placement_resources),
                                           request.actor_id,
                                           spillable=_spillable(request))
        if isinstance(lease, str):          # only another node can run it
            return raylet_pb2.RequestWorkerLeaseReply(spillback_address=lease)
        worker = raylet.pool.workers.get(WorkerID(lease.worker_id))
        if worker is None:        # died between grant and reply
            raylet.return_lease(lease.lease_id, exiting=True)
            return await self.RequestWorkerLease(request, context)
        reply = raylet_pb2.RequestWorkerLeaseReply(
            lease_id=lease.lease_id,
            worker=common_pb2.Address(ip=raylet.host, port=worker.port,
                                      worker_id=worker.worker_id,
                                      node_id=raylet.node_id))
        for name, instances in lease.resource_ids.items():
            entry = reply.resource_ids[name]
            entry.ids.extend(instances)
            entry.amounts.extend(instances.values())
        return reply

    async def ReturnWorker(self, request, context):
        self.raylet.return_lease(request.lease_id, request.worker_exiting)
        return raylet_pb2.ReturnWorkerReply()

    async def CancelLeaseRequests(self, request, context):
        self.raylet.scheduler.cancel(request.requester_worker_id)
        return raylet_pb2.CancelLeaseRequestsReply()

    async def NotifyBlocked(self, request, context):
        self.raylet.set_blocked(request.worker_id, request.blocked)
        return raylet_pb2.NotifyBlockedReply()

    async def ReserveObject(self, request, context):
        try:
            path = await asyncio.to_thread(
                self.raylet.store.reserve, ObjectID(request.object_id), request.size,
                WorkerID(request.owner_worker_id))
        except ObjectStoreFullError as exc:
            return raylet_pb2.ReserveObjectReply(error=str(exc))
        except ValueError:
            if not self.raylet.store.contains(ObjectID(request.object_id)):
                raise
            # Objects are immutable: a retried task (or generator) writing a
            # return it already wrote keeps the first copy, as in Ray.
            return raylet_pb2.ReserveObjectReply(exists=True)
        return raylet_pb2.ReserveObjectReply(path=path)

    async def SealObject(self, request, context):
        self.raylet.store.seal(ObjectID(request.object_id))
        return raylet_pb2.SealObjectReply()

    async def EnsureLocal(self, request, context):
        raylet = self.raylet
        object_id = ObjectID(request.object_id)
        try:
            if request.source_address and not raylet.store.contains(object_id):
                path = await raylet.puller.pull(object_id, request.source_address)
            else:
                path = await asyncio.to_thread(raylet.store.ensure_local, object_id)
        except (KeyError, OSError, grpc.RpcError):
            return raylet_pb2.EnsureLocalReply(found=False)
        return raylet_pb2.EnsureLocalReply(path=path, found=True)

    async def FreeObjects(self, request, context):
        self.raylet.store.delete([ObjectID(o) for o in request.object_ids])
        return raylet_pb2.FreeObjectsReply()

    async def DisconnectWorker(self, request, context):
        if request.from_gcs:
            self.raylet.forget_remote_process(WorkerID(request.worker_id))
        else:
            self.raylet.disconnect(WorkerID(request.worker_id))
        return raylet_pb2.DisconnectWorkerReply()

    async def KillWorker(self, request, context):
        raylet = self.raylet
        worker = raylet.pool.workers.get(WorkerID(request.worker_id))
        if worker is None:
            return raylet_pb2.KillWorkerReply(found=False)
        raylet.pool.kill(worker)
        raylet._on_worker_gone(worker.worker_id, worker.lease_id)
        return raylet_pb2.KillWorkerReply(found=True)

    async def GetNodeStats(self, request, context):
        raylet = self.raylet
        stats = raylet.node_stats()
        store = stats["store"]
        return raylet_pb2.GetNodeStatsReply(
            resources_total=raylet.total, resources_available=raylet.scheduler.available,
            num_workers=stats["num_workers"], num_idle_workers=stats["num_idle"],
            num_leases=stats["num_leases"], num_pending_leases=stats["pending"],
            store_capacity=store.capacity, store_used=store.used,
            store_num_objects=store.num_objects, store_num_spilled=store.num_spilled)


    async def ReserveBundle(self, request, context):
        reserved = self.raylet.reserve_bundle(request.placement_group_id,
                                              request.bundle_index, dict(request.resources))
        return raylet_pb2.ReserveBundleReply(reserved=reserved)

    async def ReturnBundles(self, request, context):
        self.raylet.return_bundles(request.placement_group_id)
        return raylet_pb2.ReturnBundlesReply()

class ObjectManagerServicer(om_grpc.ObjectManagerServiceServicer):
    """Serves chunks of this node's objects to raylets pulling them."""

    def __init__(self, raylet):
        self.raylet = raylet

    async def ReadObjectChunk(self, request, context):
        try:
            data, total = await asyncio.to_thread(
                read_chunk, self.raylet.store, ObjectID(request.object_id),
                request.offset, request.length)
        except (KeyError, OSError):
            return om_pb2.ReadObjectChunkReply(found=False)
        return om_pb2.ReadObjectChunkReply(data=data, total_size=total, found=True)


def _spillable(request) -> bool:
    """A request this raylet chose for itself (not sent here to be granted
    or rejected) and not pinned here: it may move on while it waits."""
    return (not request.grant_or_reject and not request.placement_resources
            and not request.actor_id
            and request.strategy.kind in (common_pb2.SchedulingStrategy.DEFAULT,
                                          common_pb2.SchedulingStrategy.SPREAD))
