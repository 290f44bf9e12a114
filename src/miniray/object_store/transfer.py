"""Pulling objects between nodes (runs in the raylet).

A node that needs an object stored elsewhere reads it from the source
raylet in chunks, several in flight, into a secondary copy in its own
store. Concurrent pulls of one object share a single transfer.
"""
from __future__ import annotations

import asyncio
import os

from miniray.common.ids import ObjectID, WorkerID
from miniray.object_store.client import open_sized
from miniray.protocol import object_manager_pb2 as om_pb2
from miniray.protocol import object_manager_pb2_grpc as om_grpc

CHUNK_BYTES = 8 * 1024 * 1024
CHUNKS_IN_FLIGHT = 4


class ObjectPuller:
    def __init__(self, store, channels):
        self.store = store              # PlasmaStore
        self.channels = channels
        self._pulls: dict[ObjectID, asyncio.Future] = {}

    async def pull(self, object_id: ObjectID, source: str) -> str:
        """Path of a local copy of ``object_id``, pulled from ``source``."""
        if self.store.contains(object_id):
            return await asyncio.to_thread(self.store.ensure_local, object_id)
        pending = self._pulls.get(object_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._pulls[object_id] = future
        try:
            path = await self._transfer(object_id, source)
            future.set_result(path)
            return path
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()          # retrieved: no "never retrieved" warning
            raise
        finally:
            del self._pulls[object_id]

    async def _transfer(self, object_id: ObjectID, source: str) -> str:
        stub = self.channels.stub(source, om_grpc.ObjectManagerServiceStub)
        first = await stub.ReadObjectChunk(om_pb2.ReadObjectChunkRequest(
            object_id=object_id, offset=0, length=CHUNK_BYTES))
        if not first.found:
            raise KeyError(object_id)
        total = first.total_size
        if total < 0 or len(first.data) != min(total, CHUNK_BYTES):
            raise OSError(f"{source} sent a malformed first chunk of {object_id.hex()}")
        path = await asyncio.to_thread(self.store.reserve, object_id, total,
                                       WorkerID.nil(), False)
        tmp = path + ".tmp"
        fd = open_sized(tmp, total)
        try:
            os.pwrite(fd, first.data, 0)
            limit = asyncio.Semaphore(CHUNKS_IN_FLIGHT)

            async def fetch(offset: int) -> None:
                async with limit:
                    reply = await stub.ReadObjectChunk(om_pb2.ReadObjectChunkRequest(
                        object_id=object_id, offset=offset, length=CHUNK_BYTES))
                    if not reply.found:
                        raise KeyError(object_id)
                    if len(reply.data) != min(CHUNK_BYTES, total - offset):
                        raise OSError(f"{source} sent a malformed chunk of "
                                      f"{object_id.hex()} at {offset}")
                    await asyncio.to_thread(os.pwrite, fd, reply.data, offset)

            await asyncio.gather(*(fetch(o) for o in range(len(first.data), total,
                                                           CHUNK_BYTES)))
        except BaseException:
            os.close(fd)
            self.store.delete([object_id])
            raise
        os.close(fd)
        os.rename(tmp, path)
        self.store.seal(object_id)
        return path


def read_chunk(store, object_id: ObjectID, offset: int, length: int):
    """(data, total size) of one chunk of a local object; KeyError if absent."""
    path = store.ensure_local(object_id)
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        return os.pread(f.fileno(), length, offset), total
