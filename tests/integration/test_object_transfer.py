"""Object bytes between raylets: the ticketed data plane (real sockets on
loopback), and pulls that use every node holding a copy."""
from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

import miniray as ray
from miniray.object_store import data_plane
from miniray.protocol import raylet_pb2, raylet_pb2_grpc
from miniray.rpc.channels import authenticated, sync_channel
from miniray.testing import Cluster


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def source_file(tmp_path):
    path = tmp_path / "object"
    data = os.urandom(3 * 1024 * 1024 + 11)
    path.write_bytes(data)
    return str(path), data


def test_a_stream_delivers_exactly_the_range_asked(source_file):
    path, data = source_file

    async def main():
        server = data_plane.ObjectStreamServer("127.0.0.1")
        await server.start()
        try:
            out = {}
            for offset, length in ((0, len(data)), (1000, 70_000), (len(data) - 5, 5)):
                ticket, size = server.issue(path)
                assert size == len(data)
                buffer = bytearray(length)
                await data_plane.receive("127.0.0.1", server.port, ticket, offset,
                                         memoryview(buffer))
                out[(offset, length)] = bytes(buffer)
            return out
        finally:
            server.close()

    for (offset, length), got in _run(main()).items():
        assert got == data[offset:offset + length]


def test_tickets_are_single_use_and_checked(source_file):
    path, data = source_file

    async def main():
        server = data_plane.ObjectStreamServer("127.0.0.1")
        await server.start()
        try:
            ticket, _ = server.issue(path)
            await data_plane.receive("127.0.0.1", server.port, ticket, 0,
                                     memoryview(bytearray(10)))
            errors = []
            for bad_ticket, offset, length in ((ticket, 0, 10),          # used already
                                               (os.urandom(32), 0, 10),  # never issued
                                               (None, len(data), 1)):    # past the end
                if bad_ticket is None:
                    bad_ticket, _ = server.issue(path)
                try:
                    await data_plane.receive("127.0.0.1", server.port, bad_ticket,
                                             offset, memoryview(bytearray(length)))
                    errors.append(None)
                except (EOFError, OSError) as exc:
                    errors.append(exc)
            return errors, len(server._tickets)
        finally:
            server.close()

    errors, left = _run(main())
    assert all(isinstance(e, (EOFError, OSError)) for e in errors), errors
    assert left == 0                      # refused tickets are gone too


def test_unused_tickets_expire_and_close_their_files(source_file, monkeypatch):
    path, _ = source_file
    monkeypatch.setattr(data_plane, "TICKET_TTL_S", 0.05)

    async def main():
        server = data_plane.ObjectStreamServer("127.0.0.1")
        await server.start()
        try:
            ticket, _ = server.issue(path)
            entry = server._tickets[ticket]
            deadline = asyncio.get_running_loop().time() + 10
            while server._tickets and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            return entry.file.closed, len(server._tickets)
        finally:
            server.close()

    assert _run(main()) == (True, 0)


def _stats(node):
    entry = next(n for n in ray.nodes() if n["NodeID"] == node.node_id.hex())
    address = f"{entry['NodeManagerAddress']}:{entry['NodeManagerPort']}"
    with sync_channel(address) as channel:
        stub = authenticated(raylet_pb2_grpc.RayletServiceStub(channel))
        return stub.GetNodeStats(raylet_pb2.GetNodeStatsRequest(), timeout=10)


@pytest.fixture
def three_nodes():
    cluster = Cluster()
    cluster.add_node(num_cpus=1, object_store_memory=300 * 1024 * 1024)
    for name in ("a", "b"):
        cluster.add_node(num_cpus=1, resources={name: 1},
                         object_store_memory=300 * 1024 * 1024)
    cluster.wait_for_nodes()
    cluster.connect()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@ray.remote
def checksum(array):
    return int(array[::4096].sum()), array.nbytes


def test_a_pull_uses_every_node_that_holds_a_copy(three_nodes):
    a, b = three_nodes.worker_nodes
    array = np.arange(80 * 1024 * 1024, dtype=np.uint8)
    expected = (int(array[::4096].sum()), array.nbytes)
    ref = ray.put(array)                                    # on the head
    assert ray.get(checksum.options(resources={"a": 1}).remote(ref)) == expected
    first = _stats(a)
    assert (first.objects_pulled, first.pull_streams) == (1, 1)
    assert array.nbytes <= first.bytes_pulled < array.nbytes + 4096   # + its header
    # b pulls from the head and from a, which now has a copy.
    assert ray.get(checksum.options(resources={"b": 1}).remote(ref)) == expected
    second = _stats(b)
    assert second.objects_pulled == 1 and second.pull_streams == 2
