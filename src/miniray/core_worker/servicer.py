"""CoreWorkerService: thin gRPC handlers over the CoreWorker. Every request
is checked first (common/validation.py): a malformed one ends with
INVALID_ARGUMENT (a task in a PushTasks stream: a system error reply)."""
from __future__ import annotations

import asyncio
import collections
import functools
import gc
import math

from miniray.common.process import exit_worker
from miniray.common import validation as check
from miniray.common.ids import NodeID, ObjectID, TaskID, WorkerID
from miniray.core_worker import accelerators, driver_output
from miniray.core_worker.executor import ReplySink
from miniray.protocol import common_pb2
from miniray.protocol import core_worker_pb2 as cw_pb2
from miniray.protocol import core_worker_pb2_grpc as cw_grpc


def _check_push(request) -> None:
    check.check_task_spec(request.spec)
    check.check_count(request.resource_ids, "resource_ids", check.MAX_REQUEST_RESOURCES)
    for name, ids in request.resource_ids.items():
        check.check_name(name, "resource_ids name", allow_empty=False,
                         max_length=check.MAX_RESOURCE_NAME_LENGTH, printable=True)
        check.check_count(ids.ids, "resource_ids ids", 10_000)
        for amount in ids.amounts:
            check.check_amount(name, amount, what="resource_ids")


class CoreWorkerServicer(cw_grpc.CoreWorkerServiceServicer):
    def __init__(self, worker):
        self.worker = worker

    async def PushTask(self, request, context):
        _check_push(request)
        executor = self.worker.executor
        if executor is None:
            raise check.InvalidArgument("drivers do not execute tasks")
        accelerators.stage(request)       # the lease's GPU ids etc., for the executor
        return await executor.push_and_wait(request.spec)

    async def PushTasks(self, request_iterator, context):
        """Run an owner's tasks as they arrive; reply as each finishes (the
        replies ready at once travel in one message). Each task is started
        straight from the read loop and answers through a ReplySink: no
        asyncio task or future per call on this hot path."""
        executor = self.worker.executor
        if executor is None:
            raise check.InvalidArgument("drivers do not execute tasks")
        ready: collections.deque = collections.deque()
        loop = asyncio.get_running_loop()
        state = {"outstanding": 0, "reading": True, "wake": None}

        def wake() -> None:
            waiting = state["wake"]
            if waiting is not None and not waiting.done():
                waiting.set_result(None)

        def deliver(task_id: bytes, reply, error) -> None:
            if error is not None:
                reply = cw_pb2.PushTaskReply(system_error=str(error) or type(error).__name__)
            reply.task_id = task_id
            ready.append(reply)
            wake()

        async def read():
            try:
                async for batch in request_iterator:
                    for request in batch.tasks:
                        state["outstanding"] += 1
                        sink = ReplySink(functools.partial(deliver, request.spec.task_id))
                        try:
                            _check_push(request)
                            if request.resource_ids:
                                accelerators.stage(request)
                            executor.push(request.spec, sink)
                        except Exception as exc:     # noqa: BLE001 - reported per call
                            sink.fail(exc)
            finally:
                state["reading"] = False
                wake()

        reader = asyncio.ensure_future(read())
        try:
            while state["reading"] or state["outstanding"]:
                if not ready:
                    state["wake"] = loop.create_future()
                    await state["wake"]
                    state["wake"] = None
                    continue
                batch = cw_pb2.PushTaskReplyBatch()
                batch.replies.extend(ready)
                ready.clear()
                state["outstanding"] -= len(batch.replies)
                yield batch
        finally:
            reader.cancel()

    async def LocalGC(self, request, context):
        """Collect reference cycles (they may hold ObjectRefs that keep store
        objects alive), as Ray's workers do when their raylet asks."""
        gc.collect()
        return cw_pb2.LocalGCReply()

    async def GetObject(self, request, context):
        if math.isnan(request.timeout):
            raise check.InvalidArgument("timeout must be a number of seconds, got nan")
        worker = self.worker
        object_id = ObjectID(check.check_id(request.object_id, ObjectID, "object_id"))
        check.check_id(request.lost_node_id, NodeID, "lost_node_id", optional=True)
        if request.lost and not await worker._recover(object_id,
                                                      lost_node=request.lost_node_id):
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
                timeout = None if not 0 <= request.timeout <= check.MAX_TIMEOUT_S \
                    else request.timeout          # negative or huge: forever
                try:
                    await asyncio.wait_for(future, timeout)
                except asyncio.TimeoutError:
                    worker.memory_store.remove_waiter(object_id, ready)
                    return cw_pb2.GetObjectReply(status=cw_pb2.GetObjectReply.PENDING)
            payload = worker.memory_store.get(object_id)
            if payload is None:
                return cw_pb2.GetObjectReply(status=cw_pb2.GetObjectReply.FREED)
        copies = worker.locations.get(object_id) if payload.in_plasma else None
        if copies:
            # Where else it is: borrowers pull from several nodes at once.
            payload = _with_copies(payload, copies)
        return cw_pb2.GetObjectReply(status=cw_pb2.GetObjectReply.READY, payload=payload)

    async def UpdateRefCounts(self, request, context):
        check.check_count(request.updates, "updates", check.MAX_IDS_PER_REQUEST)
        for update in request.updates:
            check.check_id(update.object_id, ObjectID, "updates.object_id")
            check.check_id(update.borrower_id, WorkerID, "updates.borrower_id")
        self.worker.handle_ref_updates(request.updates)
        return cw_pb2.UpdateRefCountsReply()

    async def AssignObjectOwner(self, request, context):
        check.check_payload(request.payload)
        check.check_id(request.borrower_id, WorkerID, "borrower_id")
        await self.worker.adopt_object(request.payload, WorkerID(request.borrower_id))
        return cw_pb2.AssignObjectOwnerReply()

    async def CancelTask(self, request, context):
        check.check_id(request.task_id, TaskID, "task_id")
        if request.as_owner:
            try:
                await self.worker.submitter.cancel(TaskID(request.task_id), request.force,
                                                   request.recursive)
            except ValueError as exc:       # force=True on an actor task
                raise check.InvalidArgument(str(exc)) from None
            return cw_pb2.CancelTaskReply(attempted=True)
        executor = self.worker.executor
        attempted = executor is not None and await executor.cancel(
            TaskID(request.task_id), request.force, request.recursive)
        return cw_pb2.CancelTaskReply(attempted=attempted)

    async def ReportGeneratorItem(self, request, context):
        check.check_id(request.task_id, TaskID, "task_id")
        check.check_int(request.index, "index", 0)
        check.check_payload(request.item, "item")
        self.worker.submitter.on_generator_item(TaskID(request.task_id),
                                                request.index, request.item)
        return cw_pb2.ReportGeneratorItemReply()

    async def ExitWorker(self, request, context):
        executor = self.worker.executor
        if executor is None:
            raise check.NotAllowed("a driver does not exit on request")
        if request.force:
            exit_worker(0)
        if request.if_idle:
            if executor.actor is not None or self.worker.owns_referenced_objects():
                return cw_pb2.ExitWorkerReply(exiting=False)
            # After this reply is sent: the raylet learns we go.
            asyncio.get_running_loop().call_later(0.05, exit_worker, 0)
            return cw_pb2.ExitWorkerReply(exiting=True)
        if executor.actor is None:
            # A task worker done with its leases: it exits once nothing it
            # owns is referenced (its returned refs may still be in use).
            self.worker.spawn(self.worker.exit_when_unreferenced())
        else:
            executor.actor.request_exit()
        return cw_pb2.ExitWorkerReply()

    async def PrintLines(self, request, context):
        if len(request.text) > check.MAX_PRINT_BYTES:
            raise check.InvalidArgument(f"text of {len(request.text)} characters: at "
                                        f"most {check.MAX_PRINT_BYTES} are allowed")
        # Output, or progress bars' states (tqdm_ray): shown by the driver.
        driver_output.handle_print_lines(request.text, request.is_stderr)
        return cw_pb2.PrintLinesReply()

    async def AddObjectLocation(self, request, context):
        check.check_id(request.object_id, ObjectID, "object_id")
        check.check_id(request.node_id, NodeID, "node_id")
        self.worker.add_location(ObjectID(request.object_id), request.node_id)
        return cw_pb2.AddObjectLocationReply()

    async def GetObjectReferences(self, request, context):
        check.check_int(request.limit, "limit", 0)
        return self.worker.object_references(request.limit)


def _with_copies(payload, copies) -> common_pb2.ObjectPayload:
    out = common_pb2.ObjectPayload()
    out.CopyFrom(payload)
    out.copy_node_ids.extend(n for n in list(copies)[:16] if n != payload.node_id)
    return out
