"""CoreWorkerService: thin gRPC handlers over the CoreWorker."""
from __future__ import annotations

import asyncio
import os

from miniray.common.ids import ObjectID, TaskID
from miniray.protocol import core_worker_pb2 as cw_pb2
from miniray.protocol import core_worker_pb2_grpc as cw_grpc


class CoreWorkerServicer(cw_grpc.CoreWorkerServiceServicer):
    def __init__(self, worker):
        self.worker = worker

    async def PushTask(self, request, context):
        executor = self.worker.executor
        if executor is None:
            raise RuntimeError("drivers do not execute tasks")
        return await executor.push(request.spec)

    async def GetObject(self, request, context):
        worker = self.worker
        object_id = ObjectID(request.object_id)
        if request.lost and not worker.submitter.reconstruct(object_id):
            return cw_pb2.GetObjectReply(status=cw_pb2.GetObjectReply.FREED)
        payload = worker.memory_store.get(object_id)
        if payload is None:
            with worker._lock:
                known = object_id in worker.refs
            if not known:
                return cw_pb2.GetObjectReply(status=cw_pb2.GetObjectReply.FREED)
            future = asyncio.get_running_loop().create_future()

            def ready(_):
                if not future.done():
                    future.set_result(None)

            if worker.memory_store.add_waiter(object_id, ready):
                timeout = None if request.timeout < 0 else request.timeout
                try:
                    await asyncio.wait_for(future, timeout)
                except asyncio.TimeoutError:
                    worker.memory_store.remove_waiter(object_id, ready)
                    return cw_pb2.GetObjectReply(status=cw_pb2.GetObjectReply.PENDING)
            payload = worker.memory_store.get(object_id)
            if payload is None:
                return cw_pb2.GetObjectReply(status=cw_pb2.GetObjectReply.FREED)
        return cw_pb2.GetObjectReply(status=cw_pb2.GetObjectReply.READY, payload=payload)

    async def UpdateRefCounts(self, request, context):
        self.worker.handle_ref_updates(request.updates)
        return cw_pb2.UpdateRefCountsReply()

    async def CancelTask(self, request, context):
        executor = self.worker.executor
        attempted = executor is not None and await executor.cancel(
            TaskID(request.task_id), request.force, request.recursive)
        return cw_pb2.CancelTaskReply(attempted=attempted)

    async def ReportGeneratorItem(self, request, context):
        self.worker.submitter.on_generator_item(TaskID(request.task_id),
                                                request.index, request.item)
        return cw_pb2.ReportGeneratorItemReply()

    async def ExitWorker(self, request, context):
        executor = self.worker.executor
        if request.force or executor is None or executor.actor is None:
            os._exit(0)
        executor.actor.request_exit()
        return cw_pb2.ExitWorkerReply()
