"""RayletService: thin gRPC handlers over the Raylet. Every request is
checked first (common/validation.py): a malformed one ends with
INVALID_ARGUMENT, one the caller may not make with PERMISSION_DENIED."""
from __future__ import annotations

import asyncio
import time

import grpc

from miniray.common import validation as check
from miniray.common.ids import (
    ActorID, JobID, NodeID, ObjectID, PlacementGroupID, WorkerID)
from miniray.common.validation import InvalidArgument, NotAllowed
from miniray.exceptions import ObjectStoreFullError, RuntimeEnvSetupError
from miniray.object_store.policy import ObjectState
from miniray.object_store.transfer import LOCAL_WRITE_WAIT_S
from miniray.raylet import worker_logs
from miniray.protocol import (
    common_pb2, object_manager_pb2 as om_pb2, object_manager_pb2_grpc as om_grpc,
    raylet_pb2, raylet_pb2_grpc)


def _check_lease_request(request) -> None:
    check.check_resources(request.resources, "resources")
    check.check_resources(request.placement_resources, "placement_resources")
    check.check_id(request.job_id, JobID, "job_id")
    check.check_id(request.requester_worker_id, WorkerID, "requester_worker_id",
                   optional=True)
    check.check_id(request.actor_id, ActorID, "actor_id", optional=True)
    check.check_id(request.requester_node_id, NodeID, "requester_node_id", optional=True)
    check.check_id(request.root_detached_actor_id, ActorID, "root_detached_actor_id",
                   optional=True)
    check.check_name(request.function_name, "function_name")
    check.check_strategy(request.strategy)
    _check_runtime_env(request.runtime_env)


def _check_runtime_env(text: str) -> None:
    from miniray.runtime_env.runtime_env import check_wire
    if text:
        try:
            check_wire(text)
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"bad runtime_env: {exc}") from None


class RayletServicer(raylet_pb2_grpc.RayletServiceServicer):
    def __init__(self, raylet):
        self.raylet = raylet

    async def RegisterWorker(self, request, context):
        raylet = self.raylet
        worker_id = WorkerID(check.check_id(request.worker_id, WorkerID, "worker_id"))
        check.check_int(request.port, "port", 0, 65535)
        if request.is_driver:
            check.check_id(request.job_id, JobID, "job_id")
            check.check_int(request.pid, "pid", 1)
            if not raylet.process_alive(request.pid):
                raise InvalidArgument(f"no live process has pid {request.pid}")
            raylet.register_driver(worker_id, request.pid, request.job_id, request.port)
        elif not raylet.pool.on_registered(worker_id, request.port):
            raise InvalidArgument(f"unknown worker {worker_id.hex()}: this raylet did "
                                  f"not start it")
        return raylet_pb2.RegisterWorkerReply(
            node_id=raylet.node_id, store_directory=raylet.store_directory,
            gcs_address=raylet.gcs_address, session_dir=raylet.session_dir)

    async def RequestWorkerLease(self, request, context):
        _check_lease_request(request)
        return await self._lease(request, context)

    async def _lease(self, request, context):
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
        try:
            lease = await raylet.request_lease(dict(request.resources), request.job_id,
                                               request.requester_worker_id,
                                               request.function_name,
                                               dict(request.placement_resources),
                                               request.actor_id,
                                               spillable=_spillable(request),
                                               runtime_env=request.runtime_env,
                                               depth=request.depth,
                                               backlog=request.backlog_size,
                                               requester_node=request.requester_node_id,
                                               root_detached=request.root_detached_actor_id)
        except RuntimeEnvSetupError as exc:
            return raylet_pb2.RequestWorkerLeaseReply(
                runtime_env_error=exc.error_message or "unknown error")
        if isinstance(lease, str):          # only another node can run it
            return raylet_pb2.RequestWorkerLeaseReply(spillback_address=lease)
        worker = raylet.pool.workers.get(WorkerID(lease.worker_id))
        if worker is None:        # died between grant and reply
            raylet.return_lease(lease.lease_id, exiting=True)
            return await self._lease(request, context)
        # What the memory monitor kills first: retriable, most recent.
        lease.retriable, lease.granted_at = request.retriable, time.monotonic()
        reply = raylet_pb2.RequestWorkerLeaseReply(
            lease_id=lease.lease_id,
            worker=common_pb2.Address(ip=raylet.host, port=worker.port,
                                      worker_id=worker.worker_id,
                                      node_id=raylet.node_id),
            worker_pid=worker.pid or 0)
        for name, instances in lease.resource_ids.items():
            entry = reply.resource_ids[name]
            entry.ids.extend(instances)
            entry.amounts.extend(instances.values())
        return reply

    async def PrepareRuntimeEnv(self, request, context):
        _check_runtime_env(request.runtime_env)
        try:
            await self.raylet.envs.setup(request.runtime_env)
        except RuntimeEnvSetupError as exc:
            return raylet_pb2.PrepareRuntimeEnvReply(error=exc.error_message or "failed")
        return raylet_pb2.PrepareRuntimeEnvReply()

    async def ReturnWorker(self, request, context):
        check.check_lease_id(request.lease_id)
        self.raylet.return_lease(request.lease_id, request.worker_exiting)
        return raylet_pb2.ReturnWorkerReply()

    async def CancelLeaseRequests(self, request, context):
        check.check_id(request.requester_worker_id, WorkerID, "requester_worker_id")
        self.raylet.scheduler.cancel(request.requester_worker_id)
        return raylet_pb2.CancelLeaseRequestsReply()

    async def NotifyBlocked(self, request, context):
        check.check_id(request.worker_id, WorkerID, "worker_id")
        self.raylet.set_blocked(request.worker_id, request.blocked)
        return raylet_pb2.NotifyBlockedReply()

    async def ReserveObject(self, request, context):
        raylet = self.raylet
        object_id = ObjectID(check.check_id(request.object_id, ObjectID, "object_id"))
        owner = WorkerID(check.check_id(request.owner_worker_id, WorkerID,
                                        "owner_worker_id"))
        check.check_id(request.writer_worker_id, WorkerID, "writer_worker_id")
        if request.size < 0:
            raise InvalidArgument(f"object size must not be negative, got {request.size}")
        if not raylet.is_local_process(request.writer_worker_id):
            raise NotAllowed("writer_worker_id is not a worker or driver of this node")
        deadline = time.monotonic() + 30
        while True:
            try:
                path = await asyncio.to_thread(
                    raylet.store.reserve, object_id, request.size, owner,
                    writer=request.writer_worker_id,
                    deadline=raylet.reservation_deadline(request.size))
            except ObjectStoreFullError as exc:       # also: bigger than the store
                raylet.store_pressure(full=True)
                return raylet_pb2.ReserveObjectReply(error=str(exc))
            except ValueError:
                if raylet.store.contains(object_id):
                    # Objects are immutable: a retried task (or generator)
                    # writing a return it already wrote keeps the first copy.
                    return raylet_pb2.ReserveObjectReply(exists=True)
                # Another attempt is writing it: a retried task's previous
                # run, whose worker may have died a moment ago (before this
                # raylet noticed). A dead writer's reservation goes now; a
                # live one is waited for (it seals, or dies).
                writer = raylet.store.unsealed_writer(object_id)
                if writer is not None and not raylet.process_running(writer):
                    raylet.store.release_unsealed(writer=writer)
                    continue
                if time.monotonic() > deadline:
                    raise InvalidArgument(f"object {object_id.hex()} is being written "
                                          f"already") from None
                await asyncio.sleep(0.02)
                continue
            return raylet_pb2.ReserveObjectReply(path=path)

    async def SealObject(self, request, context):
        object_id = ObjectID(check.check_id(request.object_id, ObjectID, "object_id"))
        try:
            self.raylet.store.seal(object_id)
        except KeyError:
            raise InvalidArgument(f"object {object_id.hex()} was not reserved "
                                  f"here") from None
        except FileNotFoundError:
            raise InvalidArgument(f"object {object_id.hex()} was not written") from None
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        self.raylet.store_pressure()
        return raylet_pb2.SealObjectReply()

    async def EnsureLocal(self, request, context):
        raylet = self.raylet
        object_id = ObjectID(check.check_id(request.object_id, ObjectID, "object_id"))
        check.check_address(request.source_address, "source_address", optional=True)
        if request.source_address and not await raylet.is_cluster_raylet(
                request.source_address):
            raise NotAllowed(f"source_address {check.show(request.source_address)} is "
                             f"not a raylet of this cluster")
        if len(request.other_sources) > 64:
            raise InvalidArgument("at most 64 other_sources")
        others = []
        for other in request.other_sources:
            check.check_address(other, "other_sources")
            if other != request.source_address and await raylet.is_cluster_raylet(other):
                others.append(other)            # unknown ones are left out
        try:
            if request.source_address and not raylet.store.contains(object_id):
                path = await raylet.puller.pull(object_id, request.source_address, others)
            else:       # here, or being written here: wait for its seal
                path = await asyncio.to_thread(raylet.store.wait_local, object_id,
                                               LOCAL_WRITE_WAIT_S)
        except (KeyError, OSError, grpc.RpcError):       # (TimeoutError is an OSError)
            return raylet_pb2.EnsureLocalReply(found=False)
        return raylet_pb2.EnsureLocalReply(path=path, found=True)

    async def FreeObjects(self, request, context):
        check.check_ids(request.object_ids, ObjectID, "object_ids")
        owner = WorkerID(check.check_id(request.owner_worker_id, WorkerID,
                                        "owner_worker_id"))
        self.raylet.store.delete_if_owned([ObjectID(o) for o in request.object_ids], owner)
        return raylet_pb2.FreeObjectsReply()

    async def DisconnectWorker(self, request, context):
        if request.from_gcs and request.node_id and not request.worker_id:
            self.raylet.forget_remote_node(check.check_id(request.node_id, NodeID, "node_id"))
            return raylet_pb2.DisconnectWorkerReply()
        check.check_id(request.worker_id, WorkerID, "worker_id")
        if request.from_gcs:
            self.raylet.forget_remote_process(WorkerID(request.worker_id))
        else:
            self.raylet.disconnect(WorkerID(request.worker_id))
        return raylet_pb2.DisconnectWorkerReply()

    async def KillWorker(self, request, context):
        check.check_id(request.worker_id, WorkerID, "worker_id")
        raylet = self.raylet
        worker = raylet.pool.workers.get(WorkerID(request.worker_id))
        if worker is None:
            return raylet_pb2.KillWorkerReply(found=False)
        raylet.pool.kill(worker, "INTENDED_USER_EXIT",
                         "killed at the GCS's request (its actor was killed or ended)")
        raylet._on_worker_gone(worker.worker_id, worker.lease_id)
        return raylet_pb2.KillWorkerReply(found=True)

    async def GetWorkerFailureCause(self, request, context):
        worker_id = check.check_id(request.worker_id, WorkerID, "worker_id")
        message = self.raylet.memory_monitor.failure_cause(worker_id)
        if message is None:
            return raylet_pb2.GetWorkerFailureCauseReply()
        return raylet_pb2.GetWorkerFailureCauseReply(
            cause=raylet_pb2.GetWorkerFailureCauseReply.OUT_OF_MEMORY, message=message)

    async def GetNodeStats(self, request, context):
        raylet = self.raylet
        stats = raylet.node_stats()
        store = stats["store"]
        return raylet_pb2.GetNodeStatsReply(
            resources_total=raylet.total, resources_available=raylet.scheduler.available,
            num_workers=stats["num_workers"], num_idle_workers=stats["num_idle"],
            num_leases=stats["num_leases"], num_pending_leases=stats["pending"],
            store_capacity=store.capacity, store_used=store.used,
            store_num_objects=store.num_objects, store_num_spilled=store.num_spilled,
            objects_pulled=raylet.puller.objects_pulled,
            bytes_pulled=raylet.puller.bytes_pulled, pull_streams=raylet.puller.streams)


    async def ReserveBundle(self, request, context):
        check.check_id(request.placement_group_id, PlacementGroupID, "placement_group_id")
        check.check_int(request.bundle_index, "bundle_index", 0, check.MAX_BUNDLES - 1)
        check.check_resources(request.resources, "resources")
        if not any(request.resources.values()):
            raise InvalidArgument("a bundle must reserve something")
        reserved = self.raylet.reserve_bundle(request.placement_group_id,
                                              request.bundle_index, dict(request.resources))
        return raylet_pb2.ReserveBundleReply(reserved=reserved)

    async def ReturnBundles(self, request, context):
        check.check_id(request.placement_group_id, PlacementGroupID, "placement_group_id")
        for index in request.bundle_indexes:
            check.check_int(index, "bundle_indexes", 0, check.MAX_BUNDLES - 1)
        self.raylet.return_bundles(request.placement_group_id,
                                   set(request.bundle_indexes) or None)
        return raylet_pb2.ReturnBundlesReply()

    # --- the state API -------------------------------------------------------------
    async def ListWorkers(self, request, context):
        return raylet_pb2.ListWorkersReply(workers=self.raylet.list_workers())

    async def ListObjects(self, request, context):
        check.check_int(request.limit, "limit", 0)
        records = self.raylet.store.records()
        reply = raylet_pb2.ListObjectsReply(total=len(records))
        where = {ObjectState.SEALED: raylet_pb2.StoreObjectInfo.IN_MEMORY,
                 ObjectState.SPILLED: raylet_pb2.StoreObjectInfo.SPILLED,
                 ObjectState.CREATING: raylet_pb2.StoreObjectInfo.BEING_WRITTEN}
        for record in records[:request.limit or None]:
            reply.objects.add(object_id=record.object_id, size=record.size,
                              owner_worker_id=record.owner, primary=record.primary,
                              where=where[record.state])
        return reply

    async def ListLogs(self, request, context):
        check.check_name(request.glob_filter, "glob_filter",
                         max_length=worker_logs.MAX_NAME_LENGTH)
        files = await asyncio.to_thread(worker_logs.list_log_files,
                                        self.raylet.log_directory, request.glob_filter)
        return raylet_pb2.ListLogsReply(files=[
            raylet_pb2.LogFileInfo(filename=name, size=size, mtime_ms=mtime)
            for name, size, mtime in files])

    async def ReadLog(self, request, context):
        worker_logs.check_log_name(request.filename)
        check.check_int(request.offset, "offset", 0, 2**63 - 1)
        check.check_int(request.max_bytes, "max_bytes", 0, 2**63 - 1)
        check.check_int(request.tail_lines, "tail_lines", 0)
        try:
            data, offset, size = await asyncio.to_thread(
                worker_logs.read_log, self.raylet.log_directory, request.filename,
                request.offset, request.max_bytes, request.tail_lines)
        except FileNotFoundError:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no log file {request.filename!r} on this node")
        return raylet_pb2.ReadLogReply(data=data, offset=offset, file_size=size)


class ObjectManagerServicer(om_grpc.ObjectManagerServiceServicer):
    """Opens streams of this node's objects for raylets pulling them."""

    def __init__(self, raylet):
        self.raylet = raylet

    async def OpenObjectStream(self, request, context):
        object_id = ObjectID(check.check_id(request.object_id, ObjectID, "object_id"))
        raylet = self.raylet
        try:
            path = await asyncio.to_thread(raylet.store.ensure_local, object_id)
            ticket, size = raylet.streams.issue(path)
        except (KeyError, OSError):
            return om_pb2.OpenObjectStreamReply(found=False)
        return om_pb2.OpenObjectStreamReply(found=True, total_size=size,
                                            port=raylet.streams.port, ticket=ticket)


def _spillable(request) -> bool:
    """A request this raylet chose for itself (not sent here to be granted
    or rejected) and not pinned here: it may move on while it waits. An
    actor's too (the GCS follows the spillback), as in Ray: the GCS's view
    lags, and actors created together may all have been sent here."""
    return (not request.grant_or_reject
            and request.strategy.kind in (common_pb2.SchedulingStrategy.DEFAULT,
                                          common_pb2.SchedulingStrategy.SPREAD))
