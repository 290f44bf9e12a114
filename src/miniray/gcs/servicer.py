"""GcsService: thin gRPC handlers over the GCS tables. Every request is
checked first (common/validation.py): a malformed one ends with
INVALID_ARGUMENT, one the caller may not make with PERMISSION_DENIED."""
from __future__ import annotations

import functools
import time

from miniray.common import config
from miniray.common import validation as check
from miniray.common.ids import (
    ActorID, FunctionID, JobID, NodeID, PlacementGroupID, TaskID, WorkerID)
from miniray.common.validation import InvalidArgument, NotAllowed
from miniray.gcs.actor_table import NameTakenError
from miniray.gcs.metrics_table import check_report as check_metrics_report
from miniray.gcs.placement_groups import STRATEGIES
from miniray.protocol import common_pb2, gcs_pb2, gcs_pb2_grpc


def _durable(method):
    """The handler, replying only once what it changed is committed to the
    GCS's storage: a caller is never told of a change a restart would lose."""
    @functools.wraps(method)
    async def handler(self, request, context):
        reply = await method(self, request, context)
        storage = self.server.storage
        if storage is not None:
            await storage.sync()
        return reply
    return handler


def _all_durable(cls):
    for method in gcs_pb2.DESCRIPTOR.services_by_name["GcsService"].methods:
        setattr(cls, method.name, _durable(getattr(cls, method.name)))
    return cls


@_all_durable
class GcsServicer(gcs_pb2_grpc.GcsServiceServicer):
    def __init__(self, server):
        self.server = server            # miniray.gcs.server.GcsServer

    def _check_job_known(self, job_id: bytes) -> None:
        if self.server.jobs.config(JobID(job_id)) is None:
            raise InvalidArgument(f"unknown job {job_id.hex()}")

    async def RegisterNode(self, request, context):
        check.check_node_info(request.node)
        known = self.server.nodes.get(NodeID(request.node.node_id))
        if known is not None and known.alive and (known.ip, known.raylet_port) != (
                request.node.ip, request.node.raylet_port):
            raise NotAllowed("another raylet registered this node id")
        self.server.nodes.register(request.node)
        return gcs_pb2.RegisterNodeReply()

    async def UnregisterNode(self, request, context):
        node_id = NodeID(check.check_id(request.node_id, NodeID, "node_id"))
        node = self.server.nodes.get(node_id)
        if node is None:
            raise InvalidArgument(f"unknown node {node_id.hex()}")
        # Only the node itself leaves, and it stops serving first: a node
        # whose raylet still answers is not going away.
        if node.alive and await self.server.raylet_answers(node):
            raise NotAllowed(f"node {node_id.hex()} is running; only the node itself "
                             f"unregisters, as it stops")
        await self.server.node_died(request.node_id, "stopped")
        return gcs_pb2.UnregisterNodeReply()

    async def Heartbeat(self, request, context):
        check.check_id(request.node_id, NodeID, "node_id")
        for what, delta in (("available", request.available), ("total", request.total)):
            check.check_resource_delta(delta, what)
        server, nodes = self.server, self.server.nodes
        # Deltas build on what this GCS incarnation was told before: from a
        # raylet that last spoke to an earlier one, only whole maps count.
        whole = request.resources_full
        usable = whole or request.view_incarnation == server.incarnation
        alive = nodes.heartbeat(NodeID(request.node_id),
                                request.available if usable else None,
                                request.total if usable else None, whole=whole)
        if request.request_global_gc and alive:
            server.global_gc_epoch += 1           # every raylet sees it grow
        reply = gcs_pb2.HeartbeatReply(
            node_dead=not alive, gcs_incarnation=server.incarnation,
            global_gc_epoch=server.global_gc_epoch, resend_resources=not usable)
        self._fill_view(reply, request.view_version, request.view_incarnation)
        return reply

    def _fill_view(self, reply, version: int, incarnation: bytes) -> None:
        """The cluster view for a raylet that has ``version`` of it: the
        changes since, or every live node when its view is from another GCS
        incarnation (or none)."""
        nodes = self.server.nodes
        full = incarnation != self.server.incarnation or version == 0 \
            or version > nodes.version
        if full:
            reply.nodes.extend(nodes.alive_nodes())
        else:
            reply.changes.extend(nodes.changes_since(version))
        reply.view_version, reply.full_view = nodes.version, full

    async def ResyncNode(self, request, context):
        node_id = check.check_id(request.node_id, NodeID, "node_id")
        if len(request.live_workers) > check.MAX_IDS_PER_REQUEST or \
                len(request.bundles) > check.MAX_IDS_PER_REQUEST:
            raise InvalidArgument("too many entries in a node's resync")
        for worker_id in request.live_workers:
            check.check_id(worker_id, WorkerID, "live_workers")
        for bundle in request.bundles:
            check.check_id(bundle.placement_group_id, PlacementGroupID,
                           "placement_group_id")
        node = self.server.nodes.get(NodeID(node_id))
        if node is None or not node.alive:
            return gcs_pb2.ResyncNodeReply(node_dead=True)
        await self.server.resync_node(
            node_id, set(request.live_workers),
            [(b.placement_group_id, b.bundle_index) for b in request.bundles])
        return gcs_pb2.ResyncNodeReply()

    async def GetAllNodes(self, request, context):
        reply = gcs_pb2.GetAllNodesReply(version=self.server.version,
                                         python_version=self.server.python_version,
                                         gcs_incarnation=self.server.incarnation)
        if request.since_version:         # a raylet refreshing its view
            self._fill_view(reply, request.since_version, request.incarnation)
        else:
            reply.nodes.extend(self.server.nodes.all_nodes())
            reply.view_version, reply.full_view = self.server.nodes.version, True
        return reply

    async def AddJob(self, request, context):
        check.check_worker_address(request.driver, "driver", optional=True)
        check.check_int(request.driver_pid, "driver_pid", 0)
        check.check_job_config(request.config)
        job_id = self.server.jobs.add(request.config, request.driver_pid, request.driver)
        return gcs_pb2.AddJobReply(job_id=job_id,
                                   namespace=self.server.jobs.config(job_id).namespace,
                                   system_config=self.server.system_config)

    async def MarkJobFinished(self, request, context):
        job_id = JobID(check.check_id(request.job_id, JobID, "job_id"))
        self._check_job_known(job_id)
        self.server.jobs.finish(job_id)
        await self.server.placement_groups.on_job_finished(request.job_id)
        return gcs_pb2.MarkJobFinishedReply()

    async def GetJobConfig(self, request, context):
        job_id = JobID(check.check_id(request.job_id, JobID, "job_id"))
        job_config = self.server.jobs.config(job_id)
        if job_config is None:
            return gcs_pb2.GetJobConfigReply(found=False)
        driver = self.server.jobs.drivers.get(job_id)
        return gcs_pb2.GetJobConfigReply(config=job_config, found=True, driver=driver)

    async def ExportFunction(self, request, context):
        check.check_function(request.function_id, request.pickled,
                             config.FUNCTION_SIZE_ERROR_BYTES)
        check.check_id(request.job_id, JobID, "job_id", optional=True)
        check.check_name(request.name, "name")
        self.server.functions.export(FunctionID(request.function_id), request.pickled,
                                     request.name)
        return gcs_pb2.ExportFunctionReply()

    async def GetFunction(self, request, context):
        check.check_id(request.function_id, FunctionID, "function_id")
        found = self.server.functions.get(FunctionID(request.function_id))
        if found is None:
            return gcs_pb2.GetFunctionReply(found=False)
        return gcs_pb2.GetFunctionReply(pickled=found[0], name=found[1], found=True)

    async def KVPut(self, request, context):
        check.check_kv(request.namespace, request.key, request.value)
        added = self.server.kv.put(request.namespace, request.key, request.value,
                                   request.overwrite)
        return gcs_pb2.KVPutReply(added=added)

    async def KVGet(self, request, context):
        check.check_kv(request.namespace, request.key)
        value = self.server.kv.get(request.namespace, request.key)
        return gcs_pb2.KVGetReply(value=value or b"", found=value is not None)

    async def KVDel(self, request, context):
        check.check_kv(request.namespace, request.key)
        deleted = self.server.kv.delete(request.namespace, request.key, request.by_prefix)
        return gcs_pb2.KVDelReply(deleted=deleted)

    async def KVKeys(self, request, context):
        check.check_kv(request.namespace, request.prefix)
        return gcs_pb2.KVKeysReply(keys=self.server.kv.keys(request.namespace,
                                                           request.prefix))

    async def GetClusterStatus(self, request, context):
        return gcs_pb2.GetClusterStatusReply(nodes=self.server.nodes.all_nodes(),
                                             num_jobs_running=self.server.jobs.num_running())

    # --- actors ----------------------------------------------------------------
    async def RegisterActor(self, request, context):
        check.check_task_spec(request.creation_spec, "creation_spec")
        if request.creation_spec.type != common_pb2.ACTOR_CREATION_TASK:
            raise InvalidArgument("creation_spec must be an actor creation task")
        known = self.server.actors.table.get(ActorID(request.creation_spec.actor_id))
        if known is not None:
            if known.spec == request.creation_spec:    # a retry across a GCS restart
                return gcs_pb2.RegisterActorReply()
            raise InvalidArgument("an actor with this id exists already")
        self._check_job_known(request.creation_spec.job_id)
        actors = self.server.actors
        options = request.creation_spec.actor_options
        if options.get_if_exists and options.name:
            existing = actors.table.by_name(options.name, options.namespace)
            if existing is not None:
                return gcs_pb2.RegisterActorReply(existing=existing.info,
                                                  found_existing=True)
        try:
            actors.register(request.creation_spec)
        except NameTakenError as exc:
            return gcs_pb2.RegisterActorReply(error=str(exc))
        return gcs_pb2.RegisterActorReply()

    async def GetActorInfo(self, request, context):
        check.check_id(request.actor_id, ActorID, "actor_id", optional=True)
        check.check_name(request.name, "name")
        check.check_name(request.namespace, "namespace")
        table = self.server.actors.table
        if request.actor_id:
            entry = table.get(ActorID(request.actor_id))
        else:
            entry = table.by_name(request.name, request.namespace)
        if entry is None:
            return gcs_pb2.GetActorInfoReply(found=False)
        return gcs_pb2.GetActorInfoReply(info=entry.info, found=True)

    async def WaitActorChange(self, request, context):
        check.check_id(request.actor_id, ActorID, "actor_id")
        check.check_timeout(request.timeout)
        entry = await self.server.actors.wait_change(
            ActorID(request.actor_id), request.known_state, request.known_num_restarts,
            request.timeout)
        if entry is None:
            return gcs_pb2.WaitActorChangeReply(found=False)
        return gcs_pb2.WaitActorChangeReply(info=entry.info, found=True)

    async def KillActor(self, request, context):
        check.check_id(request.actor_id, ActorID, "actor_id")
        actors = self.server.actors
        entry = actors.table.get(ActorID(request.actor_id))
        if entry is None:
            return gcs_pb2.KillActorReply(found=False)
        if request.out_of_scope:
            await actors.kill(entry, force=False, no_restart=True,
                              cause="The actor is dead because all references to "
                                    "the actor were removed.")
        else:
            await actors.kill(entry, force=request.force, no_restart=request.no_restart)
        return gcs_pb2.KillActorReply(found=True)

    async def ActorExiting(self, request, context):
        check.check_id(request.actor_id, ActorID, "actor_id")
        self.server.actors.mark_exiting(ActorID(request.actor_id))
        return gcs_pb2.ActorExitingReply()

    async def ListNamedActors(self, request, context):
        check.check_name(request.namespace, "namespace")
        entries = self.server.actors.table.named(
            None if request.all_namespaces else request.namespace)
        return gcs_pb2.ListNamedActorsReply(actors=[e.info for e in entries])

    async def ReportWorkerFailure(self, request, context):
        check.check_id(request.worker_id, WorkerID, "worker_id")
        check.check_id(request.node_id, NodeID, "node_id", optional=True)
        check.check_id(request.job_id, JobID, "job_id", optional=True)
        check.check_name(request.reason, "reason")
        await self.server.actors.on_worker_failure(WorkerID(request.worker_id),
                                                   request.is_driver, request.reason)
        await self.server.broadcast_process_death(request.worker_id, request.node_id)
        self.server.metrics.forget(request.worker_id)
        return gcs_pb2.ReportWorkerFailureReply()

    # --- placement groups ---------------------------------------------------------
    async def CreatePlacementGroup(self, request, context):
        check.check_placement_group(request.info, STRATEGIES)
        known = self.server.placement_groups.groups.get(request.info.placement_group_id)
        if known is not None:
            if known.bundles == request.info.bundles and \
                    known.strategy == request.info.strategy:     # a retry
                return gcs_pb2.CreatePlacementGroupReply()
            raise InvalidArgument("a placement group with this id exists already")
        self._check_job_known(request.info.creator_job_id)
        groups = self.server.placement_groups
        error = await groups.create(request.info)
        group = groups.groups.get(request.info.placement_group_id)
        return gcs_pb2.CreatePlacementGroupReply(
            error=error, created=not error and group.state == common_pb2.PG_CREATED)

    async def RemovePlacementGroup(self, request, context):
        check.check_id(request.placement_group_id, PlacementGroupID, "placement_group_id")
        found = await self.server.placement_groups.remove(request.placement_group_id)
        return gcs_pb2.RemovePlacementGroupReply(found=found)

    async def GetPlacementGroup(self, request, context):
        check.check_id(request.placement_group_id, PlacementGroupID,
                       "placement_group_id", optional=True)
        check.check_name(request.name, "name")
        check.check_name(request.namespace, "namespace")
        groups = self.server.placement_groups
        if request.placement_group_id:
            group = groups.groups.get(request.placement_group_id)
        else:
            group = groups.by_name(request.name, request.namespace)
        if group is None:
            return gcs_pb2.GetPlacementGroupReply(found=False)
        return gcs_pb2.GetPlacementGroupReply(info=group, found=True)

    async def WaitPlacementGroupReady(self, request, context):
        check.check_id(request.placement_group_id, PlacementGroupID, "placement_group_id")
        check.check_timeout(request.timeout, negative_means_forever=True)
        group = await self.server.placement_groups.wait_ready(
            request.placement_group_id, request.timeout)
        if group is None:
            return gcs_pb2.WaitPlacementGroupReadyReply(found=False)
        return gcs_pb2.WaitPlacementGroupReadyReply(info=group, found=True)

    async def GetAllPlacementGroups(self, request, context):
        return gcs_pb2.GetAllPlacementGroupsReply(
            groups=list(self.server.placement_groups.groups.values()))

    # --- task events ----------------------------------------------------------------
    async def AddTaskEvents(self, request, context):
        if len(request.events) > check.MAX_IDS_PER_REQUEST:
            raise InvalidArgument("too many task events in one report")
        if len(request.change_task_ids) > check.MAX_IDS_PER_REQUEST:
            raise InvalidArgument("too many task state changes in one report")
        n = len(request.change_task_ids)
        if not len(request.change_attempts) == len(request.change_statuses) == \
                len(request.change_times_ns) == n:
            raise InvalidArgument("the change_* arrays of a task event report must "
                                  "have the same length")
        for task_id in set(request.change_task_ids):
            check.check_id(task_id, TaskID, "change_task_ids")
        for event in request.events:
            check.check_id(event.task_id, TaskID, "task_id")
            check.check_id(event.job_id, JobID, "job_id", optional=True)
            check.check_name(event.name, "name")
            check.check_name(event.func_or_class_name, "func_or_class_name")
            if len(event.error_message) > check.MAX_ERROR_MESSAGE_BYTES:
                raise InvalidArgument("a task event's error_message is too long")
        self.server.task_events.add_request(request)
        return gcs_pb2.AddTaskEventsReply()

    async def GetTaskEvents(self, request, context):
        check.check_id(request.job_id, JobID, "job_id", optional=True)
        check.check_id(request.task_id, TaskID, "task_id", optional=True)
        check.check_int(request.limit, "limit", 0)
        table = self.server.task_events
        tasks, total = table.get(request.job_id, request.task_id, request.limit)
        return gcs_pb2.GetTaskEventsReply(tasks=tasks, num_dropped=table.num_dropped,
                                          total=total)

    # --- metrics (gcs/metrics_table.py) ---------------------------------------------
    async def ReportMetrics(self, request, context):
        check_metrics_report(request.report)
        self.server.metrics.report(request.report, time.monotonic())
        return gcs_pb2.ReportMetricsReply()

    async def GetMetrics(self, request, context):
        metrics = self.server.metrics
        alive = {n.node_id for n in self.server.nodes.alive_nodes()}
        for report in metrics.latest(time.monotonic()):
            if report.node_id and report.node_id not in alive:
                metrics.forget_node(report.node_id)
        return gcs_pb2.GetMetricsReply(reports=metrics.latest(time.monotonic()))

    # --- state API ------------------------------------------------------------------
    async def GetAllActors(self, request, context):
        return gcs_pb2.GetAllActorsReply(
            actors=[e.info for e in self.server.actors.table.all_actors()])

    async def GetAllJobs(self, request, context):
        return gcs_pb2.GetAllJobsReply(jobs=self.server.jobs.all_jobs())
