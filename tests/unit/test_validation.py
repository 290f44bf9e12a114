"""miniray.common.validation: the checks every servicer and the public API
run on what they receive (no sockets: servicer behaviour through a fake
context)."""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
import random

import pytest

import miniray
from miniray.common import validation as v
from miniray.common.ids import (
    ActorID, FunctionID, JobID, NodeID, ObjectID, PlacementGroupID, TaskID, WorkerID)
from miniray.common.validation import InvalidArgument
from miniray.gcs.tables import InternalKV
from miniray.protocol import common_pb2

BAD_AMOUNTS = [math.nan, math.inf, -math.inf, -1, -1000.0, 1e16, True, "1", None]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_bad_amounts_are_refused(amount):
    with pytest.raises(InvalidArgument, match="'CPU' must be a finite, non-negative"):
        v.check_amount("CPU", amount)


@pytest.mark.parametrize("amount", [0, 0.5, 1, 16, 2**40, v.MAX_RESOURCE_AMOUNT])
def test_good_amounts_pass(amount):
    assert v.check_amount("CPU", amount) == float(amount)


def test_resource_maps():
    v.check_resources({"CPU": 1.0, "node:127.0.0.1": 1.0, "CPU_group_0_" + "ab" * 18: 2})
    with pytest.raises(InvalidArgument, match="must not be empty"):
        v.check_resources({"": 1.0})
    with pytest.raises(InvalidArgument, match="control characters"):
        v.check_resources({"a\nb": 1.0})
    with pytest.raises(InvalidArgument, match="characters long"):
        v.check_resources({"x" * 10_000: 1.0})
    with pytest.raises(InvalidArgument, match="at most 1024"):
        v.check_resources({f"r{i}": 1.0 for i in range(2000)})
    with pytest.raises(InvalidArgument, match="nan"):
        v.check_resources({"CPU": math.nan}, "resources")


def test_ids():
    v.check_id(bytes(28), ObjectID, "object_id")
    v.check_id(b"", ActorID, "actor_id", optional=True)
    for bad in (b"", b"x" * 27, b"x" * 29, b"x" * 10_000):
        with pytest.raises(InvalidArgument, match="object_id must be a 28-byte ObjectID"):
            v.check_id(bad, ObjectID, "object_id")
    with pytest.raises(InvalidArgument, match="must be bytes"):
        v.check_id("x" * 28, ObjectID, "object_id")
    with pytest.raises(InvalidArgument, match="object_ids: 3 entries"):
        v.check_ids([bytes(28)] * 3, ObjectID, "object_ids", limit=2)
    v.check_lease_id(bytes(16))
    with pytest.raises(InvalidArgument, match="lease_id"):
        v.check_lease_id(bytes(17))


def test_numbers_names_addresses_timeouts():
    assert v.check_int(5, "n", 0, 10) == 5
    for bad in (-1, 11, True, 1.5):
        with pytest.raises(InvalidArgument, match=r"n must be an integer in \[0, 10\]"):
            v.check_int(bad, "n", 0, 10)
    v.check_address("127.0.0.1:6379")
    v.check_address("", optional=True)
    for bad in ("127.0.0.1", "host:0", "host:99999", ":80", "a\x00b:1"):
        with pytest.raises(InvalidArgument):
            v.check_address(bad)
    v.check_timeout(0)
    v.check_timeout(-1, negative_means_forever=True)
    for bad in (math.nan, -1, 1e12):
        with pytest.raises(InvalidArgument, match="timeout"):
            v.check_timeout(bad)
    assert len(v.show("x" * 1000)) < 100


def test_object_size_and_kv_limits():
    assert v.check_object_size(100, 100) == 100
    with pytest.raises(InvalidArgument, match="can never fit"):
        v.check_object_size(101, 100)
    with pytest.raises(InvalidArgument, match="non-negative"):
        v.check_object_size(-1, 100)
    v.check_kv("ns", b"k", b"v" * v.MAX_KV_VALUE_BYTES)
    with pytest.raises(InvalidArgument, match="KV value of"):
        v.check_kv("ns", b"k", b"v" * (v.MAX_KV_VALUE_BYTES + 1))
    with pytest.raises(InvalidArgument, match="KV key of"):
        v.check_kv("ns", b"k" * (v.MAX_KV_KEY_BYTES + 1))


def test_kv_total_is_bounded_and_accounted():
    kv = InternalKV(max_bytes=100)
    assert kv.put("n", b"a", b"x" * 50, overwrite=False)
    assert kv.bytes == 52
    with pytest.raises(InvalidArgument, match="KV is full"):
        kv.put("n", b"b", b"x" * 50, overwrite=False)
    assert kv.get("n", b"b") is None
    assert not kv.put("n", b"a", b"y" * 10, overwrite=True)      # replaced
    assert kv.bytes == 12 and kv.get("n", b"a") == b"y" * 10
    kv.put("n", b"ab", b"z", overwrite=False)
    assert kv.delete("n", b"a", by_prefix=True) == 2 and kv.bytes == 0


def test_function_ids_must_be_the_hash_of_the_pickle():
    pickled = b"definition"
    function_id = hashlib.sha1(pickled).digest()
    assert v.function_id_of(pickled) == function_id
    v.check_function(function_id, pickled, max_bytes=100)
    with pytest.raises(InvalidArgument, match="not the SHA-1 hash"):
        v.check_function(function_id, b"other definition", max_bytes=100)
    with pytest.raises(InvalidArgument, match="at most 5 are allowed"):
        v.check_function(function_id, pickled, max_bytes=5)
    with pytest.raises(InvalidArgument, match="function_id must be a 20-byte"):
        v.check_function(b"short", pickled, max_bytes=100)


# --- messages ---------------------------------------------------------------------------
def make_spec(kind=common_pb2.NORMAL_TASK) -> common_pb2.TaskSpec:
    job = JobID.from_int(1)
    spec = common_pb2.TaskSpec(
        task_id=TaskID.of(job), job_id=job, parent_task_id=TaskID.for_driver(job),
        type=kind, function_id=FunctionID.from_random(), function_name="m.f", name="f",
        num_returns=1, max_retries=3, resources={"CPU": 1.0})
    spec.caller.ip, spec.caller.port = "127.0.0.1", 1234
    spec.caller.worker_id, spec.caller.node_id = WorkerID.from_random(), NodeID.from_random()
    spec.args.add().value.data = b"inline"                 # no object id needed
    spec.args.add().ref.object_id = ObjectID.from_random()
    if kind != common_pb2.NORMAL_TASK:
        spec.actor_id = ActorID.of(job)
    return spec


def test_well_formed_specs_pass():
    for kind in (common_pb2.NORMAL_TASK, common_pb2.ACTOR_CREATION_TASK,
                 common_pb2.ACTOR_TASK):
        spec = make_spec(kind)
        v.check_task_spec(spec)
        assert v._task_spec_ok(spec)
    spec = make_spec()
    nested = spec.args[0].value.nested_refs.add(object_id=ObjectID.from_random())
    nested.owner.CopyFrom(spec.caller)
    v.check_task_spec(spec)            # the detailed path accepts nested refs
    spec.name = "a task\tname\n"       # free text, as in Ray
    v.check_task_spec(spec)


@pytest.mark.parametrize("field, value, message", [
    ("task_id", b"x", "spec.task_id must be a 24-byte TaskID"),
    ("job_id", b"x" * 100, "spec.job_id must be a 4-byte JobID"),
    ("function_id", b"", "spec.function_id must be a 20-byte FunctionID"),
    ("num_returns", 10**6, "spec.num_returns"),
    ("max_retries", -5, "spec.max_retries"),
    ("type", 7, "spec.type"),
    ("function_name", "f" * 5000, "function_name is 5000 characters long"),
])
def test_malformed_specs_name_the_field(field, value, message):
    spec = make_spec()
    setattr(spec, field, value)
    with pytest.raises(InvalidArgument, match=message):
        v.check_task_spec(spec)


def test_malformed_spec_parts():
    spec = make_spec()
    spec.resources["CPU"] = math.nan
    with pytest.raises(InvalidArgument, match="spec.resources: 'CPU'"):
        v.check_task_spec(spec)
    spec = make_spec()
    spec.args[1].ref.object_id = b"../../etc/passwd"
    with pytest.raises(InvalidArgument, match="spec.args.ref.object_id"):
        v.check_task_spec(spec)
    spec = make_spec()
    spec.args[0].value.in_plasma = True          # in a store: needs its id
    with pytest.raises(InvalidArgument, match="spec.args.value.object_id"):
        v.check_task_spec(spec)
    spec = make_spec()
    spec.scheduling_strategy.node_id = b"short"
    with pytest.raises(InvalidArgument, match="scheduling_strategy.node_id"):
        v.check_task_spec(spec)
    spec = make_spec(common_pb2.ACTOR_CREATION_TASK)
    spec.actor_options.concurrency_groups["io"] = 0
    with pytest.raises(InvalidArgument, match="concurrency_groups"):
        v.check_task_spec(spec)
    spec = make_spec(common_pb2.ACTOR_TASK)
    spec.actor_id = b""
    with pytest.raises(InvalidArgument, match="spec.actor_id"):
        v.check_task_spec(spec)


def test_quick_path_is_never_more_lenient_than_the_detailed_checks():
    """Random corruptions: whenever the quick test accepts, so do the
    detailed checks (the quick test may only send more to them)."""
    rng = random.Random(8)
    fields = [("task_id", lambda: rng.randbytes(rng.choice([0, 23, 24, 25]))),
              ("job_id", lambda: rng.randbytes(rng.choice([0, 4, 5]))),
              ("type", lambda: rng.choice([0, 1, 2, 3])),
              ("function_id", lambda: rng.randbytes(rng.choice([0, 20, 21]))),
              ("actor_id", lambda: rng.randbytes(rng.choice([0, 16, 3]))),
              ("num_returns", lambda: rng.choice([-1, 0, 5, 10**6])),
              ("attempt", lambda: rng.choice([-1, 0, 2])),
              ("name", lambda: rng.choice(["", "x", "\x07", "y" * 5000]))]
    for _ in range(2000):
        spec = make_spec(rng.choice([0, 1, 2]))
        for field, make in rng.sample(fields, rng.randint(0, 3)):
            setattr(spec, field, make())
        if rng.random() < 0.2:
            spec.resources[rng.choice(["CPU", ""])] = rng.choice([1.0, -1.0, math.nan])
        if rng.random() < 0.2:
            spec.caller.worker_id = rng.randbytes(rng.choice([0, 28, 9]))
        if v._task_spec_ok(spec):
            v._explain_task_spec(spec, "spec")


def test_placement_groups_and_nodes():
    info = common_pb2.PlacementGroupInfo(placement_group_id=PlacementGroupID.from_random(),
                                         strategy="PACK", creator_job_id=JobID.from_int(1))
    info.bundles.add().resources["CPU"] = 1
    v.check_placement_group(info, ("PACK",))
    bad = common_pb2.PlacementGroupInfo()
    bad.CopyFrom(info)
    bad.strategy = "NOPE"
    with pytest.raises(InvalidArgument, match="strategy"):
        v.check_placement_group(bad, ("PACK",))
    bad.CopyFrom(info)
    bad.bundles[0].resources["CPU"] = -1000
    with pytest.raises(InvalidArgument, match="bundles"):
        v.check_placement_group(bad, ("PACK",))
    bad.CopyFrom(info)
    for _ in range(v.MAX_BUNDLES):
        bad.bundles.add().resources["CPU"] = 1
    with pytest.raises(InvalidArgument, match="1 to 500 bundles"):
        v.check_placement_group(bad, ("PACK",))
    node = common_pb2.NodeInfo(node_id=NodeID.from_random(), ip="127.0.0.1",
                               raylet_port=5, resources_total={"CPU": 2})
    v.check_node_info(node)
    node.resources_available["CPU"] = -1e-17     # oversubscribed, or float rounding
    v.check_node_info(node)
    node.resources_total["CPU"] = math.inf
    with pytest.raises(InvalidArgument, match="resources_total"):
        v.check_node_info(node)


# --- servicers (common/rpc_guard.py) ---------------------------------------------------
class _Aborted(Exception):
    pass


class FakeContext:
    def __init__(self):
        self.code = self.details = None

    async def abort(self, code, details):
        self.code, self.details = code, details
        raise _Aborted


class FakeServicer:
    async def Unary(self, request, context):
        v.check_id(request.object_id, ObjectID, "object_id")
        return "ok"

    async def Denied(self, request, context):
        raise v.NotAllowed("not yours")

    async def Broken(self, request, context):
        raise KeyError("a bug")

    async def Stream(self, request_iterator, context):
        async for request in request_iterator:
            v.check_amount("CPU", request.timeout)
            yield request.timeout


def run_guarded(behavior, request, client_streaming=False):
    """(status code, details) if the guard aborted the call, else its result."""
    import grpc
    from miniray.common.rpc_guard import guard
    guarded = guard(behavior, client_streaming)
    context = FakeContext()

    async def go():
        if inspect.isasyncgenfunction(guarded):
            return [item async for item in guarded(request, context)]
        return await guarded(request, context)

    try:
        return asyncio.run(go())
    except _Aborted:
        assert context.code in (grpc.StatusCode.INVALID_ARGUMENT,
                                grpc.StatusCode.PERMISSION_DENIED)
        return context.code.name, context.details


def test_guard_maps_errors_to_status_codes():
    from miniray.common.rpc_guard import Undecodable
    from miniray.protocol import core_worker_pb2, raylet_pb2
    servicer = FakeServicer()
    good = raylet_pb2.SealObjectRequest(object_id=bytes(28))
    assert run_guarded(servicer.Unary, good) == "ok"
    code, details = run_guarded(servicer.Unary, raylet_pb2.SealObjectRequest(object_id=b"x"))
    assert code == "INVALID_ARGUMENT" and "object_id must be a 28-byte" in details
    assert run_guarded(servicer.Unary, Undecodable("the request is not a valid X")) == (
        "INVALID_ARGUMENT", "the request is not a valid X")
    assert run_guarded(servicer.Denied, good) == ("PERMISSION_DENIED", "not yours")
    with pytest.raises(KeyError):
        run_guarded(servicer.Broken, good)     # other errors: as gRPC reports them

    async def requests(*items):
        for item in items:
            yield item

    ok = core_worker_pb2.GetObjectRequest(timeout=1.0)
    nan = core_worker_pb2.GetObjectRequest(timeout=math.nan)
    assert run_guarded(servicer.Stream, requests(ok, ok), True) == [1.0, 1.0]
    assert run_guarded(servicer.Stream, requests(ok, nan), True)[0] == "INVALID_ARGUMENT"
    code, details = run_guarded(servicer.Stream, requests(ok, Undecodable("bad"), ok), True)
    assert (code, details) == ("INVALID_ARGUMENT", "bad")


def test_undecodable_requests_are_handed_over_not_raised():
    from miniray.common.rpc_guard import Undecodable, _deserializer
    from miniray.protocol import gcs_pb2
    parse = _deserializer(gcs_pb2.KVPutRequest)
    assert parse(gcs_pb2.KVPutRequest(key=b"k").SerializeToString()).key == b"k"
    bad = parse(b"\xff\xff\xff")
    assert isinstance(bad, Undecodable) and "not a valid KVPutRequest" in bad.reason


# --- the public API -----------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    dict(num_cpus=math.nan), dict(num_cpus=math.inf), dict(num_gpus=-1),
    dict(memory=1e30), dict(resources={"custom": math.inf}),
    dict(resources={"custom": -1000}), dict(resources={"": 1}),
])
def test_api_refuses_bad_resource_options(options):
    @miniray.remote
    def f():
        pass

    with pytest.raises(ValueError):
        f.options(**options)

    @miniray.remote
    class A:
        pass

    with pytest.raises(ValueError):
        A.options(**options)


def test_api_refuses_bad_bundles_and_node_ids():
    from miniray.util.placement_group import _validate_bundles
    from miniray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    for bundles in ([{"CPU": math.inf}], [{"CPU": math.nan}], [{"CPU": 1}] * 501):
        with pytest.raises(ValueError):
            _validate_bundles(bundles)
    with pytest.raises(ValueError, match="28-byte"):
        NodeAffinitySchedulingStrategy("abcd", soft=False)
