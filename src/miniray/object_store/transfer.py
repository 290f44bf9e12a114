"""Pulling objects between nodes (runs in the raylet).

A node that needs an object stored elsewhere asks each node known to hold
a copy for a stream of it (``OpenObjectStream``), splits the object into
one byte range per source that has it, and receives the ranges in parallel
straight into the new store file's mapping (data_plane.py). A range whose
source fails is fetched again from another. Concurrent pulls of one
object on this node share a single transfer.
"""
from __future__ import annotations

import asyncio
import mmap
import os

from miniray.common.ids import ObjectID, WorkerID
from miniray.object_store import data_plane
from miniray.object_store.client import open_sized
from miniray.protocol import object_manager_pb2 as om_pb2
from miniray.protocol import object_manager_pb2_grpc as om_grpc

# Each source streams a range of at least this much: small objects come
# from one source (the first that answers), big ones from all of them.
MIN_RANGE_BYTES = 16 * 1024 * 1024
MAX_SOURCES = 4
# How long a pull waits for a copy being written on this node by someone
# else (its writer's own deadline usually ends the wait sooner).
LOCAL_WRITE_WAIT_S = 60.0


def split(total: int, sources: int) -> list[tuple[int, int]]:
    """(offset, length) ranges covering ``total`` bytes, one per source used."""
    if total <= 0:
        return [(0, 0)]
    count = max(1, min(sources, total // MIN_RANGE_BYTES))
    step = -(-total // count)
    return [(offset, min(step, total - offset)) for offset in range(0, total, step)]


class ObjectPuller:
    def __init__(self, store, channels):
        self.store = store              # PlasmaStore
        self.channels = channels
        self._pulls: dict[ObjectID, asyncio.Future] = {}
        self.objects_pulled = 0         # statistics (GetNodeStats)
        self.bytes_pulled = 0
        self.streams = 0

    async def pull(self, object_id: ObjectID, source: str,
                   others: list[str] = ()) -> str:
        """Path of a local copy of ``object_id``, pulled from ``source`` and
        any of ``others`` (raylets that also hold a copy)."""
        if self.store.contains(object_id):
            return await asyncio.to_thread(self.store.ensure_local, object_id)
        pending = self._pulls.get(object_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._pulls[object_id] = future
        try:
            sources = list(dict.fromkeys([source, *others]))[:MAX_SOURCES]
            path = await self._transfer(object_id, sources)
            future.set_result(path)
            return path
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()          # retrieved: no "never retrieved" warning
            raise
        finally:
            del self._pulls[object_id]

    async def _open(self, source: str, object_id: ObjectID):
        """(source, reply) of a stream opened on ``source``, or None."""
        stub = self.channels.stub(source, om_grpc.ObjectManagerServiceStub)
        try:
            reply = await stub.OpenObjectStream(om_pb2.OpenObjectStreamRequest(
                object_id=object_id))
        except Exception:           # noqa: BLE001 - that source is gone: try others
            return None
        return (source, reply) if reply.found else None

    async def _transfer(self, object_id: ObjectID, sources: list[str]) -> str:
        opened = [o for o in await asyncio.gather(*(self._open(s, object_id)
                                                    for s in sources)) if o]
        if not opened:
            raise KeyError(object_id)
        total = opened[0][1].total_size
        if total < 0 or any(reply.total_size != total for _, reply in opened):
            raise OSError(f"the sources of {object_id.hex()} disagree on its size")
        try:
            path = await asyncio.to_thread(self.store.reserve, object_id, total,
                                           WorkerID.nil(), False)
        except ValueError:
            # A copy appeared here meanwhile (a task re-run on this node to
            # rebuild the object, or a local put): that one will do.
            return await asyncio.to_thread(self.store.wait_local, object_id,
                                           LOCAL_WRITE_WAIT_S)
        tmp = path + ".tmp"
        fd = open_sized(tmp, total)
        mapping = mmap.mmap(fd, total) if total else None
        try:
            if mapping is not None:
                await self._receive(object_id, memoryview(mapping), opened)
        except BaseException:
            _unmap(mapping)
            os.close(fd)
            self.store.delete([object_id])
            raise
        _unmap(mapping)
        os.close(fd)
        os.rename(tmp, path)
        self.objects_pulled += 1
        self.bytes_pulled += total
        self.store.seal(object_id)
        return path

    async def _receive(self, object_id: ObjectID, view: memoryview, opened) -> None:
        ranges = split(len(view), len(opened))   # unused tickets expire

        async def fetch(index: int, offset: int, length: int) -> None:
            part = view[offset:offset + length]
            first, reply = opened[index]
            if await self._stream(first, reply, offset, part):
                return
            # Again from another source (a fresh ticket: they are single-use).
            for other in [s for s, _ in opened if s != first] + [first]:
                again = await self._open(other, object_id)
                if again is not None and await self._stream(other, again[1], offset, part):
                    return
            raise OSError(f"no source could send bytes {offset}..{offset + length} "
                          f"of {object_id.hex()}")

        try:
            await asyncio.gather(*(fetch(i, offset, length)
                                   for i, (offset, length) in enumerate(ranges)))
        finally:
            view.release()


    async def _stream(self, source: str, reply, offset: int, part: memoryview) -> bool:
        """Receive ``part`` from ``source``'s stream; False if it failed."""
        self.streams += 1
        try:
            await data_plane.receive(source.rsplit(":", 1)[0].strip("[]"), reply.port,
                                     reply.ticket, offset, part)
            return True
        except (OSError, EOFError):
            return False


def _unmap(mapping) -> None:
    if mapping is None:
        return
    try:
        mapping.close()
    except BufferError:      # a failed stream's buffer is still referenced: GC unmaps it
        pass
