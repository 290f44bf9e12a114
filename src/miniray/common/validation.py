"""Checks on what crosses a boundary: the public API and every gRPC servicer.

Pure (no I/O): each check raises :class:`InvalidArgument` (a ValueError)
whose message names what was wrong; servicers registered with
``rpc_guard.add_servicer`` turn it into ``INVALID_ARGUMENT`` and carry on.
What is refused: non-finite, negative or absurd numbers, ids of the wrong
length (an id becomes a file name only as the hex of a checked id),
oversized names, maps and repeated fields, KV entries and function
definitions above the limits below, and function ids that are not the hash
of their pickle. Limits are documented in docs/security.md.
"""
from __future__ import annotations

import hashlib
import math
import re
from typing import Mapping

from miniray.common.ids import (
    ActorID, FunctionID, JobID, NodeID, ObjectID, PlacementGroupID, TaskID, WorkerID)

# Resource amounts: a petabyte of memory or 10^15 CPUs is not a real node.
MAX_RESOURCE_AMOUNT = 1e15
MAX_RESOURCE_NAME_LENGTH = 512
MAX_REQUEST_RESOURCES = 1024          # names in one task, lease or bundle
MAX_NODE_RESOURCES = 1_000_000        # names a node reports (bundles add some)
MAX_NAME_LENGTH = 4096                # actor/function/class names, namespaces, ips
MAX_ADDRESS_LENGTH = 1024
MAX_IDS_PER_REQUEST = 1_000_000       # FreeObjects, UpdateRefCounts, ...
MAX_TASK_ARGS = 100_000
MAX_NUM_RETURNS = 100_000
MAX_BUNDLES = 500                     # bundles of one placement group
MAX_NESTED_REFS = 1_000_000
MAX_TIMEOUT_S = 365 * 24 * 3600.0
# Internal KV (Ray caps its KV by the gRPC message size; we say it outright).
MAX_KV_KEY_BYTES = 64 * 1024
MAX_KV_VALUE_BYTES = 64 * 1024 * 1024
MAX_KV_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_PRINT_BYTES = 64 * 1024 * 1024    # PrintLines text
MAX_ERROR_MESSAGE_BYTES = 64 * 1024   # a task event's error message
_INT32_MAX = 2**31 - 1
_HOST = re.compile(r"[A-Za-z0-9._:\[\]-]+")


class InvalidArgument(ValueError):
    """A request or argument that is malformed or out of bounds."""


class NotAllowed(PermissionError):
    """A well-formed request that the caller may not make."""


def show(value, limit: int = 60) -> str:
    """A short repr of an untrusted value, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(truncated)"


# --- numbers and names -----------------------------------------------------------------
def check_amount(name: str, amount, *, what: str = "resource",
                 signed: bool = False) -> float:
    """A finite amount in [0, MAX_RESOURCE_AMOUNT] (``signed``: in
    [-MAX, MAX], for what a node has available, which oversubscription and
    float rounding can take below zero)."""
    low = -MAX_RESOURCE_AMOUNT if signed else 0
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) \
            or not math.isfinite(amount) or not low <= amount <= MAX_RESOURCE_AMOUNT:
        raise InvalidArgument(
            f"{what} {show(name)} must be a finite"
            f"{'' if signed else ', non-negative'} number at most "
            f"{MAX_RESOURCE_AMOUNT:g}{' in size' if signed else ''}, got {show(amount)}")
    return float(amount)


def check_resources(resources: Mapping, what: str = "resources", *,
                    max_entries: int = MAX_REQUEST_RESOURCES,
                    signed: bool = False) -> None:
    """Every name a printable string of sane length, every amount valid
    (``signed``: a node's state, see check_amount; else a request)."""
    if len(resources) > max_entries:
        raise InvalidArgument(f"{what}: {len(resources)} names, at most "
                              f"{max_entries} are allowed")
    for name, amount in resources.items():
        check_name(name, f"{what}: a resource name", allow_empty=False,
                   max_length=MAX_RESOURCE_NAME_LENGTH, printable=True)
        check_amount(name, amount, what=f"{what}:", signed=signed)


def check_resource_delta(delta, what: str) -> None:
    """A gcs_pb2.ResourceDelta a raylet reports: amounts as a node's state
    (check_resources, signed), names that went away as resource names."""
    check_resources(delta.set, f"{what}.set", max_entries=MAX_NODE_RESOURCES,
                    signed=True)
    if len(delta.removed) > MAX_NODE_RESOURCES:
        raise InvalidArgument(f"{what}.removed: {len(delta.removed)} names, at most "
                              f"{MAX_NODE_RESOURCES} are allowed")
    for name in delta.removed:
        check_name(name, f"{what}.removed: a resource name", allow_empty=False,
                   max_length=MAX_RESOURCE_NAME_LENGTH, printable=True)


def check_name(value, what: str, *, allow_empty: bool = True,
               max_length: int = MAX_NAME_LENGTH, printable: bool = False) -> str:
    """A string at most ``max_length`` long (free text, as Ray allows in task
    and actor names); ``printable``: without control characters, for names
    that key resources and show up in logs."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise InvalidArgument(f"{what} must not be empty")
    if len(value) > max_length:
        raise InvalidArgument(f"{what} is {len(value)} characters long, at most "
                              f"{max_length} are allowed")
    if printable and not value.isprintable():
        raise InvalidArgument(f"{what} contains control characters: {show(value)}")
    return value


def check_int(value: int, what: str, low: int, high: int = _INT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{what} must be an integer in [{low}, {high}], "
                              f"got {show(value)}")
    return value


def check_timeout(value: float, what: str = "timeout", *,
                  negative_means_forever: bool = False) -> float:
    """Seconds: finite and at most a year (negative only if it means forever)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or math.isnan(value) or value > MAX_TIMEOUT_S \
            or (value < 0 and not negative_means_forever):
        raise InvalidArgument(f"{what} must be a number of seconds in "
                              f"[0, {MAX_TIMEOUT_S:g}], got {show(value)}")
    return value


def check_count(values, what: str, limit: int) -> None:
    if len(values) > limit:
        raise InvalidArgument(f"{what}: {len(values)} entries, at most {limit} "
                              f"are allowed")


# --- ids ---------------------------------------------------------------------------------
def check_id(value: bytes, id_type: type, what: str, *, optional: bool = False) -> bytes:
    """Exactly ``id_type.SIZE`` bytes (or empty, if ``optional``)."""
    if not isinstance(value, (bytes, bytearray)):
        raise InvalidArgument(f"{what} must be bytes, got {type(value).__name__}")
    if len(value) != id_type.SIZE and not (optional and not value):
        raise InvalidArgument(
            f"{what} must be a {id_type.SIZE}-byte {id_type.__name__}"
            f"{' (or empty)' if optional else ''}, got {len(value)} bytes")
    return value


def check_lease_id(value: bytes) -> bytes:
    """A lease id: the granting node's id prefix (8 bytes) and a counter (8)."""
    if not isinstance(value, (bytes, bytearray)) or len(value) != 16:
        raise InvalidArgument(f"lease_id must be 16 bytes, got {show(value)}")
    return value


def check_ids(values, id_type: type, what: str,
              limit: int = MAX_IDS_PER_REQUEST) -> None:
    check_count(values, what, limit)
    for value in values:
        check_id(value, id_type, what)


def check_host(host: str, what: str = "host") -> str:
    """An IP address or host name (letters, digits, ``.-_:[]``)."""
    check_name(host, what, allow_empty=False, max_length=MAX_ADDRESS_LENGTH)
    if not _HOST.fullmatch(host):
        raise InvalidArgument(f"{what} is not an IP address or host name: {show(host)}")
    return host


def check_address(address: str, what: str = "address", *, optional: bool = False) -> str:
    """``host:port`` with a port in 1..65535."""
    if optional and not address:
        return address
    check_name(address, what, allow_empty=False, max_length=MAX_ADDRESS_LENGTH)
    host, _, port = address.rpartition(":")
    if not host or not _HOST.fullmatch(host) or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise InvalidArgument(f"{what} must look like HOST:PORT, got {show(address)}")
    return address


def check_worker_address(address, what: str = "address", *, optional: bool = False) -> None:
    """A common_pb2.Address: where a driver or worker listens."""
    if optional and not address.ip and not address.worker_id:
        return
    check_host(address.ip, f"{what}.ip")
    check_int(address.port, f"{what}.port", 0, 65535)
    check_id(address.worker_id, WorkerID, f"{what}.worker_id")
    check_id(address.node_id, NodeID, f"{what}.node_id", optional=True)


# --- sizes and contents --------------------------------------------------------------
def check_object_size(size: int, capacity: int) -> int:
    """An object that could ever fit in a store of ``capacity`` bytes."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidArgument(f"object size must be a non-negative integer, "
                              f"got {show(size)}")
    if size > capacity:
        raise InvalidArgument(f"an object of {size} bytes can never fit in this "
                              f"node's object store ({capacity} bytes)")
    return size


def check_kv(namespace: str, key: bytes, value: bytes | None = None) -> None:
    check_name(namespace, "KV namespace", max_length=MAX_NAME_LENGTH)
    if len(key) > MAX_KV_KEY_BYTES:
        raise InvalidArgument(f"KV key of {len(key)} bytes: at most "
                              f"{MAX_KV_KEY_BYTES} are allowed")
    if value is not None and len(value) > MAX_KV_VALUE_BYTES:
        raise InvalidArgument(f"KV value of {len(value)} bytes: at most "
                              f"{MAX_KV_VALUE_BYTES} are allowed")


def function_id_of(pickled: bytes) -> FunctionID:
    """How a function's id is made: the SHA-1 of its pickled definition."""
    return FunctionID(hashlib.sha1(pickled).digest())


def check_function(function_id: bytes, pickled: bytes, max_bytes: int) -> None:
    """An exported definition: its id is the hash of its pickle."""
    check_id(function_id, FunctionID, "function_id")
    if len(pickled) > max_bytes:
        raise InvalidArgument(f"function definition of {len(pickled)} bytes: at most "
                              f"{max_bytes} are allowed")
    if function_id_of(pickled) != function_id:
        raise InvalidArgument("function_id is not the SHA-1 hash of the pickled "
                              "definition")


# --- messages ------------------------------------------------------------------------------
def check_strategy(strategy, what: str = "strategy") -> None:
    """A common_pb2.SchedulingStrategy."""
    check_int(strategy.kind, f"{what}.kind", 0, 3)
    check_id(strategy.node_id, NodeID, f"{what}.node_id", optional=True)
    check_id(strategy.placement_group_id, PlacementGroupID,
             f"{what}.placement_group_id", optional=True)
    check_int(strategy.bundle_index, f"{what}.bundle_index", -1, MAX_BUNDLES)


def check_payload(payload, what: str = "payload", *, anonymous: bool = False) -> None:
    """A common_pb2.ObjectPayload (an inline value or a store location);
    ``anonymous``: an inline task argument, which needs no object id."""
    check_id(payload.object_id, ObjectID, f"{what}.object_id",
             optional=anonymous and not payload.in_plasma)
    check_int(payload.size, f"{what}.size", 0, 2**63 - 1)
    check_id(payload.node_id, NodeID, f"{what}.node_id", optional=True)
    check_count(payload.nested_refs, f"{what}.nested_refs", MAX_NESTED_REFS)
    for ref in payload.nested_refs:
        check_id(ref.object_id, ObjectID, f"{what}.nested_refs.object_id")
        check_worker_address(ref.owner, f"{what}.nested_refs.owner", optional=True)


def check_task_spec(spec, what: str = "spec") -> None:
    """A common_pb2.TaskSpec: ids, counts, resources, arguments. (Every task
    pushed passes here: a quick test first, the detailed checks, which
    name what is wrong, only when that is not enough.)"""
    if not _task_spec_ok(spec):
        _explain_task_spec(spec, what)


def _amounts_ok(resources) -> bool:
    if len(resources) > MAX_REQUEST_RESOURCES:
        return False
    for name, amount in resources.items():
        if not (0 <= amount <= MAX_RESOURCE_AMOUNT and 0 < len(name) <= MAX_RESOURCE_NAME_LENGTH
                and name.isprintable()):
            return False              # (NaN fails the comparison too)
    return True


def _address_ok(address) -> bool:
    if not address.ip and not address.worker_id:
        return True
    return (0 < len(address.ip) <= MAX_ADDRESS_LENGTH and _HOST.fullmatch(address.ip)
            and 0 <= address.port <= 65535 and len(address.worker_id) == WorkerID.SIZE
            and len(address.node_id) in (0, NodeID.SIZE))


def _task_spec_ok(spec) -> bool:
    kind = spec.type
    if not (len(spec.task_id) == TaskID.SIZE and len(spec.job_id) == JobID.SIZE
            and len(spec.parent_task_id) in (0, TaskID.SIZE) and 0 <= kind <= 2
            and len(spec.root_detached_actor_id) in (0, ActorID.SIZE)):
        return False
    if not ((len(spec.function_id) == FunctionID.SIZE or kind == 2 and not spec.function_id)
            and (len(spec.actor_id) == ActorID.SIZE or kind == 0 and not spec.actor_id)
            and 0 <= spec.num_returns <= MAX_NUM_RETURNS and spec.max_retries >= -1
            and spec.attempt >= 0 and spec.max_calls >= 0 and spec.sequence_number >= 0
            and len(spec.args) <= MAX_TASK_ARGS and len(spec.kwarg_names) <= len(spec.args)):
        return False
    for text in (spec.function_name, spec.name, spec.method_name,
                 spec.function_descriptor):
        if len(text) > MAX_NAME_LENGTH:
            return False
    for arg in spec.args:
        if arg.HasField("value"):
            value = arg.value
            if not ((len(value.object_id) == ObjectID.SIZE
                     or not value.object_id and not value.in_plasma) and value.size >= 0
                    and len(value.node_id) in (0, NodeID.SIZE) and not value.nested_refs):
                return False          # (nested refs: the detailed checks)
        elif len(arg.ref.object_id) != ObjectID.SIZE:
            return False
    strategy = spec.scheduling_strategy
    if not (0 <= strategy.kind <= 3 and len(strategy.node_id) in (0, NodeID.SIZE)
            and len(strategy.placement_group_id) in (0, PlacementGroupID.SIZE)
            and -1 <= strategy.bundle_index <= MAX_BUNDLES):
        return False
    if not (_amounts_ok(spec.resources) and _address_ok(spec.caller)):
        return False
    if kind == 1:
        try:
            check_actor_options(spec.actor_options)
        except InvalidArgument:
            return False
    return True


def _explain_task_spec(spec, what: str) -> None:
    check_id(spec.task_id, TaskID, f"{what}.task_id")
    check_id(spec.job_id, JobID, f"{what}.job_id")
    check_id(spec.parent_task_id, TaskID, f"{what}.parent_task_id", optional=True)
    check_id(spec.root_detached_actor_id, ActorID, f"{what}.root_detached_actor_id",
             optional=True)
    check_int(spec.type, f"{what}.type", 0, 2)
    check_id(spec.function_id, FunctionID, f"{what}.function_id", optional=spec.type == 2)
    check_id(spec.actor_id, ActorID, f"{what}.actor_id", optional=spec.type == 0)
    check_name(spec.function_name, f"{what}.function_name")
    check_name(spec.name, f"{what}.name")
    check_name(spec.method_name, f"{what}.method_name")
    check_name(spec.function_descriptor, f"{what}.function_descriptor")
    check_int(spec.num_returns, f"{what}.num_returns", 0, MAX_NUM_RETURNS)
    check_int(spec.max_retries, f"{what}.max_retries", -1)
    check_int(spec.attempt, f"{what}.attempt", 0)
    check_int(spec.max_calls, f"{what}.max_calls", 0)
    check_int(spec.sequence_number, f"{what}.sequence_number", 0, 2**63 - 1)
    check_count(spec.args, f"{what}.args", MAX_TASK_ARGS)
    if len(spec.kwarg_names) > len(spec.args):
        raise InvalidArgument(f"{what}: more keyword names than arguments")
    for arg in spec.args:
        if arg.HasField("value"):
            check_payload(arg.value, f"{what}.args.value", anonymous=True)
        else:
            check_id(arg.ref.object_id, ObjectID, f"{what}.args.ref.object_id")
    check_resources(spec.resources, f"{what}.resources")
    check_worker_address(spec.caller, f"{what}.caller", optional=True)
    check_strategy(spec.scheduling_strategy, f"{what}.scheduling_strategy")
    if spec.type == 1:
        check_actor_options(spec.actor_options, f"{what}.actor_options")


def check_actor_options(options, what: str = "actor_options") -> None:
    check_int(options.max_restarts, f"{what}.max_restarts", -1)
    check_int(options.max_task_retries, f"{what}.max_task_retries", -1)
    check_int(options.max_concurrency, f"{what}.max_concurrency", 0, 1_000_000)
    check_int(options.max_pending_calls, f"{what}.max_pending_calls", -1)
    check_name(options.name, f"{what}.name")
    check_name(options.namespace, f"{what}.namespace")
    check_name(options.class_name, f"{what}.class_name")
    check_count(options.concurrency_groups, f"{what}.concurrency_groups", 10_000)
    for group, size in options.concurrency_groups.items():
        check_name(group, f"{what}.concurrency_groups name")
        check_int(size, f"{what}.concurrency_groups[{show(group)}]", 1, 1_000_000)
    check_resources(options.placement_resources, f"{what}.placement_resources")


def check_placement_group(info, strategies) -> None:
    """A common_pb2.PlacementGroupInfo being created."""
    check_id(info.placement_group_id, PlacementGroupID, "placement_group_id")
    check_name(info.name, "name")
    check_name(info.namespace, "namespace")
    check_id(info.creator_job_id, JobID, "creator_job_id")
    if info.strategy not in strategies:
        raise InvalidArgument(f"strategy must be one of {list(strategies)}, "
                              f"got {show(info.strategy)}")
    if not 0 < len(info.bundles) <= MAX_BUNDLES:
        raise InvalidArgument(f"a placement group has 1 to {MAX_BUNDLES} bundles, "
                              f"got {len(info.bundles)}")
    for index, bundle in enumerate(info.bundles):
        check_resources(bundle.resources, f"bundles[{index}]")
        if not any(bundle.resources.values()):
            raise InvalidArgument(f"bundles[{index}] reserves nothing")
        if bundle.node_id:
            raise InvalidArgument(f"bundles[{index}].node_id is set by the GCS")


def check_node_info(node) -> None:
    """A common_pb2.NodeInfo a raylet registers."""
    check_id(node.node_id, NodeID, "node.node_id")
    check_host(node.ip, "node.ip")
    check_int(node.raylet_port, "node.raylet_port", 1, 65535)
    check_resources(node.resources_total, "node.resources_total",
                    max_entries=MAX_NODE_RESOURCES, signed=True)
    check_resources(node.resources_available, "node.resources_available",
                    max_entries=MAX_NODE_RESOURCES, signed=True)
    for field in ("store_directory", "session_dir", "hostname"):
        check_name(getattr(node, field), f"node.{field}")
    check_int(node.object_store_memory, "node.object_store_memory", 0, 2**63 - 1)
    check_count(node.labels, "node.labels", 10_000)


def check_job_config(config) -> None:
    check_name(config.namespace, "config.namespace")
    check_name(config.working_dir, "config.working_dir")
    check_count(config.code_search_path, "config.code_search_path", 10_000)
    for path in config.code_search_path:
        check_name(path, "config.code_search_path entry")
