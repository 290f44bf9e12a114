"""One PushTasks stream from this owner to one worker (io thread).

Requests go out in the order ``send`` is called; replies come back as each
task finishes. A stream is much cheaper per task than a unary RPC in
grpc.aio, and each message carries every request queued since the last
write (a burst of calls costs one write, not one each), so both submitters
use one: the actor submitter per actor incarnation, the normal task
submitter per lease (which still runs one task at a time). When the stream breaks (the worker died), every task
still in flight is handed to ``on_broken``, in submission order (an empty
list when the worker went away while idle; nothing when we closed it).
"""
from __future__ import annotations

import asyncio
from typing import Callable

from miniray.protocol import core_worker_pb2 as cw_pb2
from miniray.rpc.channels import describe_rpc_error


class TaskStream:
    def __init__(self, worker, address, on_reply: Callable, on_broken: Callable):
        self._on_reply = on_reply          # (task, reply)
        self._on_broken = on_broken        # (tasks still in flight)
        self.call = worker.worker_stub(address).PushTasks()
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._inflight: dict[bytes, object] = {}
        self.closed = False
        self.error = ""          # why the stream broke, in gRPC's words
        worker.spawn(self._write())
        worker.spawn(self._read())

    def send(self, task, request: cw_pb2.PushTaskRequest | None = None) -> None:
        """Push ``task`` (``request`` defaults to its spec alone)."""
        self._inflight[task.spec.task_id] = task
        self._outbox.put_nowait(request or cw_pb2.PushTaskRequest(spec=task.spec))

    async def _write(self) -> None:
        outbox = self._outbox
        try:
            while True:
                batch = cw_pb2.PushTaskBatch(tasks=[await outbox.get()])
                while not outbox.empty():
                    batch.tasks.append(outbox.get_nowait())
                await self.call.write(batch)
        except Exception:       # noqa: BLE001 - the reader sees the stream fail
            pass

    async def _read(self) -> None:
        try:
            async for batch in self.call:
                for reply in batch.replies:
                    task = self._inflight.pop(reply.task_id, None)
                    if task is not None:
                        self._on_reply(task, reply)
        except Exception as exc:       # noqa: BLE001 - the worker went away
            self.error = describe_rpc_error(exc)
        closed_by_us = self.closed
        self.closed = True
        failed = sorted(self._inflight.values(), key=lambda t: t.order)
        self._inflight.clear()
        if failed or not closed_by_us:
            self._on_broken(failed)

    def close(self) -> None:
        """Cancel the call: tasks still in flight go to ``on_broken``."""
        self.closed = True
        self.call.cancel()

