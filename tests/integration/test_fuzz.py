"""Fuzzing every server of a running cluster (issue 8, item 4).

Every method of every service declared in the generated descriptors (so a
new RPC is fuzzed without editing this file) gets a bounded number of
random and malformed requests: random and truncated bytes, messages of
another type, huge repeated fields and maps, NaN / infinite / negative
numbers, long ids and names. Requests go through stubs of the project's
ChannelPool (its channel options and the credentials it gives every stub),
raw: bytes in, bytes out. Afterwards every server still runs, nothing it holds
leaked (leases, store space, CPUs) and the cluster still runs tasks and
actors correctly.
"""
from __future__ import annotations

import asyncio
import collections
import math
import random

import grpc
import numpy as np
import psutil
import pytest
from google.protobuf import descriptor, message_factory

import miniray as ray
from miniray.common.ids import ActorID, JobID
from miniray.protocol import (
    core_worker_pb2, gcs_pb2, gcs_pb2_grpc, object_manager_pb2, raylet_pb2,
    raylet_pb2_grpc)
from miniray.rpc.channels import ChannelPool
from miniray.testing import wait_for_condition

pytestmark = pytest.mark.timeout(240)

MODULES = (gcs_pb2, raylet_pb2, object_manager_pb2, core_worker_pb2)
ITERATIONS = 14                  # requests per method and server
RPC_TIMEOUT_S = 5.0
FD = descriptor.FieldDescriptor
# Which servers answer each service (a service missing here fails the test).
TARGETS = {
    "miniray.protocol.GcsService": ["gcs"],
    "miniray.protocol.RayletService": ["raylet"],
    "miniray.protocol.ObjectManagerService": ["raylet"],
    "miniray.protocol.CoreWorkerService": ["driver", "actor"],
}
# Allowed to do what it says to the server that receives it: ExitWorker ends
# an actor's worker (as the GCS asks when killing the actor).
SKIP = {("actor", "ExitWorker")}


def all_methods():
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield service, method


# --- malformed requests ---------------------------------------------------------------
class Mutator:
    """Builds request bytes of every kind the test sends."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.all_types = [method.input_type for _, method in all_methods()]

    def number(self, field):
        rng = self.rng
        if field.cpp_type in (FD.CPPTYPE_DOUBLE, FD.CPPTYPE_FLOAT):
            return rng.choice([math.nan, math.inf, -math.inf, -1000.0, -1e-9, 0.0, 0.5,
                               1.0, 1e300])
        if field.cpp_type == FD.CPPTYPE_BOOL:
            return rng.random() < 0.5
        if field.cpp_type in (FD.CPPTYPE_UINT32, FD.CPPTYPE_UINT64):
            return rng.choice([0, 1, 2**32 - 1])
        if field.cpp_type == FD.CPPTYPE_INT32 or field.cpp_type == FD.CPPTYPE_ENUM:
            return rng.choice([-2**31, -1000, -1, 0, 1, 3, 7, 2**31 - 1])
        return rng.choice([-2**63, -1, 0, 1, 2**40, 2**63 - 1])

    def text(self):
        return self.rng.choice(["", "x", "CPU", "ray\x00\n\x1b[31m", "../../etc/passwd",
                                "y" * self.rng.choice([100, 5000, 100_000]), "127.0.0.1:1",
                                "\u2603" * 50])

    def blob(self):
        return self.rng.randbytes(self.rng.choice([0, 1, 4, 16, 20, 24, 28, 29, 512,
                                                   100_000]))

    def scalar(self, field):
        if field.type == FD.TYPE_STRING:
            return self.text()
        if field.type == FD.TYPE_BYTES:
            return self.blob()
        return self.number(field)

    def fill(self, message, depth: int = 0, huge: bool = False) -> None:
        """Set every field of ``message`` to something odd."""
        rng = self.rng
        for field in message.DESCRIPTOR.fields:
            if rng.random() < 0.3:
                continue
            container = getattr(message, field.name) if field.is_repeated else None
            count = rng.choice([0, 1, 3]) if not huge else rng.choice([1, 3, 20_000])
            if field.is_repeated and field.message_type is not None \
                    and field.message_type.GetOptions().map_entry:
                key_field = field.message_type.fields_by_name["key"]
                value_field = field.message_type.fields_by_name["value"]
                for i in range(count):
                    key = self.scalar(key_field) if i < 3 else f"k{i}"
                    if value_field.type == FD.TYPE_MESSAGE:
                        if depth < 3:
                            self.fill(container[key], depth + 1)
                    else:
                        container[key] = self.scalar(value_field)
            elif field.is_repeated:
                for _ in range(count):
                    if field.type == FD.TYPE_MESSAGE:
                        if depth < 3:
                            self.fill(container.add(), depth + 1)
                    else:
                        container.append(self.scalar(field))
            elif field.type == FD.TYPE_MESSAGE:
                if depth < 3:
                    self.fill(getattr(message, field.name), depth + 1)
            else:
                setattr(message, field.name, self.scalar(field))

    def message(self, message_type, huge: bool = False) -> bytes:
        message = message_factory.GetMessageClass(message_type)()
        self.fill(message, huge=huge)
        return message.SerializeToString()

    def request(self, input_type) -> tuple[str, bytes]:
        rng = self.rng
        kind = rng.choice(["random", "truncated", "wrong_type", "huge", "odd_values",
                           "empty"])
        if kind == "random":
            data = rng.randbytes(rng.choice([1, 7, 64, 1000, 70_000]))
        elif kind == "truncated":
            whole = self.message(input_type)
            data = whole[:rng.randrange(len(whole))] if whole else b"\xff"
        elif kind == "wrong_type":
            data = self.message(rng.choice(self.all_types))
        elif kind == "huge":
            data = self.message(input_type, huge=True)
        elif kind == "odd_values":
            data = self.message(input_type)
        else:
            data = b""
        return kind, data


# --- the cluster ------------------------------------------------------------------------------
@ray.remote
class Echo:
    def ping(self, x):
        return x

    def my_id(self):
        return ray.get_runtime_context().get_actor_id()


@ray.remote
def add(a, b):
    return a + b


RESERVATION_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def cluster():
    with pytest.MonkeyPatch.context() as mp:     # read by the raylet it starts
        mp.setenv("MINIRAY_OBJECT_RESERVATION_TIMEOUT_S", str(RESERVATION_TIMEOUT_S))
        context = ray.init(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    actor = Echo.remote()
    actor_id = ActorID.from_hex(ray.get(actor.my_id.remote()))
    yield context, actor, actor_id
    ray.shutdown()


async def _with_pool(use):
    pool = ChannelPool()
    try:
        return await use(pool)
    finally:
        await pool.close()


def addresses(gcs: str, actor_id: bytes, raylet: str) -> dict:
    async def ask(pool):
        stub = pool.stub(gcs, gcs_pb2_grpc.GcsServiceStub)
        actor = await stub.GetActorInfo(gcs_pb2.GetActorInfoRequest(actor_id=actor_id),
                                        timeout=5)
        job = await stub.GetJobConfig(gcs_pb2.GetJobConfigRequest(
            job_id=JobID.from_int(1)), timeout=5)
        return actor.info.address, job.driver

    actor, driver = asyncio.run(_with_pool(ask))
    return {"gcs": gcs, "raylet": raylet, "actor": f"{actor.ip}:{actor.port}",
            "driver": f"{driver.ip}:{driver.port}"}


def node_stats(raylet: str):
    async def ask(pool):
        return await pool.stub(raylet, raylet_pb2_grpc.RayletServiceStub).GetNodeStats(
            raylet_pb2.GetNodeStatsRequest(), timeout=5)
    return asyncio.run(_with_pool(ask))


def raw_stub_class(service):
    """A stub class for ``service`` whose methods take and return bytes."""
    def identity(data):
        return data

    def __init__(self, channel):
        for method in service.methods:
            kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                    (True, False): channel.stream_unary, (True, True): channel.stream_stream}
            setattr(self, method.name, kind[(method.client_streaming, method.server_streaming)](
                f"/{service.full_name}/{method.name}", request_serializer=identity,
                response_deserializer=identity))

    return type(f"Raw{service.name}Stub", (), {"__init__": __init__})


def daemons() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if any(m in " ".join(p.cmdline()) for m in ("miniray.gcs", "miniray.raylet"))]


async def fuzz(targets: dict, seed: int) -> collections.Counter:
    """Send the requests; returns how many ended with each status code."""
    rng = random.Random(seed)
    mutator = Mutator(rng)
    pool = ChannelPool()
    stub_classes: dict = {}
    outcomes: collections.Counter = collections.Counter()
    try:
        for service, method in all_methods():
            assert service.full_name in TARGETS, \
                f"no server known for {service.full_name}: add it to TARGETS"
            stub_class = stub_classes.setdefault(service.full_name, raw_stub_class(service))
            for target in TARGETS[service.full_name]:
                if (target, method.name) in SKIP:
                    continue
                rpc = getattr(pool.stub(targets[target], stub_class), method.name)
                for _ in range(ITERATIONS):
                    kind, data = mutator.request(method.input_type)
                    code = await call(rpc, method, data)
                    outcomes[(target, method.name, code)] += 1
                    outcomes[code] += 1
    finally:
        await pool.close()
    return outcomes


async def call(rpc, method, data: bytes):
    """Send ``data`` (twice, the second cut short, on a request stream)."""
    request = iter([data, data[: len(data) // 2]]) if method.client_streaming else data
    try:
        response = rpc(request, timeout=RPC_TIMEOUT_S)
        if method.server_streaming:
            async for _ in response:
                pass
        else:
            await response
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_servers_survive_fuzzing_and_the_cluster_still_works(cluster):
    context, actor, actor_id = cluster
    raylet = context.address_info["raylet_address"]
    targets = addresses(context.address_info["gcs_address"], actor_id, raylet)
    before = {p.pid for p in daemons()}
    baseline = node_stats(raylet)

    outcomes = asyncio.run(fuzz(targets, seed=20261130))

    # Every server is still up, and no request broke a handler: a malformed
    # request gets INVALID_ARGUMENT (or bytes gRPC cannot parse, INTERNAL),
    # never an unhandled error (UNKNOWN) or a hang (DEADLINE_EXCEEDED).
    assert {p.pid for p in daemons()} == before
    unhandled = {k: n for k, n in outcomes.items() if isinstance(k, tuple)
                 and k[2] in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED)}
    assert not unhandled, unhandled
    assert outcomes[grpc.StatusCode.INVALID_ARGUMENT] > 100

    # Nothing leaked or got corrupted: resources, leases, the store.
    stats = node_stats(raylet)
    assert dict(stats.resources_total) == dict(baseline.resources_total)
    assert all(math.isfinite(v) for v in stats.resources_available.values())
    wait_for_condition(lambda: node_stats(raylet).num_pending_leases == 0, timeout=10)
    wait_for_condition(
        lambda: node_stats(raylet).resources_available["CPU"]
        == baseline.resources_available["CPU"], timeout=10)
    assert stats.store_used == baseline.store_used

    # And the cluster still runs tasks and actors correctly.
    assert ray.get([add.remote(i, i) for i in range(20)]) == [2 * i for i in range(20)]
    big = np.arange(2_000_000)
    assert (ray.get(add.remote(ray.put(big), 1)) == big + 1).all()
    assert ray.get(actor.ping.remote("still here"), timeout=30) == "still here"
    fresh = Echo.remote()
    assert ray.get([fresh.ping.remote(i) for i in range(10)]) == list(range(10))
    ray.kill(fresh)


# --- reservations never sealed ------------------------------------------------------------
def reserve(size: int):
    """ReserveObject as this process (a driver or worker of the node), never sealed."""
    from miniray.api import _worker
    from miniray.common.ids import ObjectID
    worker = _worker()
    object_id = ObjectID.from_random()
    reply = worker.call("raylet", "ReserveObject", raylet_pb2.ReserveObjectRequest(
        object_id=object_id, size=size, owner_worker_id=worker.worker_id,
        writer_worker_id=worker.worker_id))
    assert reply.path and not reply.error
    return object_id


@ray.remote(max_retries=0)
def reserve_and_die(size: int):
    import os
    reserve(size)
    os._exit(1)


def test_reservation_of_a_writer_that_dies_is_released(cluster):
    raylet = cluster[0].address_info["raylet_address"]
    used = node_stats(raylet).store_used
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(reserve_and_die.remote(64 * 1024 * 1024))
    wait_for_condition(lambda: node_stats(raylet).store_used == used, timeout=10)


def test_reservation_never_sealed_is_released_after_its_deadline(cluster):
    raylet = cluster[0].address_info["raylet_address"]
    used = node_stats(raylet).store_used
    object_id = reserve(64 * 1024 * 1024)
    assert node_stats(raylet).store_used == used + 64 * 1024 * 1024
    wait_for_condition(lambda: node_stats(raylet).store_used == used,
                       timeout=RESERVATION_TIMEOUT_S + 10)
    from miniray.api import _worker
    with pytest.raises(grpc.RpcError) as error:       # too late to seal it now
        _worker().call("raylet", "SealObject",
                       raylet_pb2.SealObjectRequest(object_id=object_id))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "was not reserved here" in error.value.details()
