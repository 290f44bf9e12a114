"""``miniray status``: the nodes of a cluster and what they use, like
``ray status``."""
from __future__ import annotations

import sys
import time

import grpc

from miniray import node as node_module
from miniray.protocol import raylet_pb2, raylet_pb2_grpc
from miniray.rpc import auth
from miniray.rpc.channels import authenticated, sync_channel

_GIB = 1024 ** 3
_MEMORY_RESOURCES = ("memory", "object_store_memory")
_RULE = "-" * 63


class StatusError(Exception):
    """No cluster to report on; the message says why."""


def resolve_address(address: str | None) -> str:
    """--address, else $MINIRAY_ADDRESS / $RAY_ADDRESS, else the cluster that
    ``miniray start --head`` recorded on this machine (as the state API)."""
    from miniray.util.state.client import resolve_address as resolve
    try:
        return resolve(address)
    except ConnectionError as exc:
        raise StatusError(str(exc)) from None


def format_memory(num_bytes: float) -> str:
    if not num_bytes:
        return "0B"
    return f"{num_bytes / _GIB:.2f}GiB"


def format_amount(name: str, amount: float) -> str:
    return format_memory(amount) if name in _MEMORY_RESOURCES else f"{amount:.1f}"


def _shown(name: str) -> bool:
    return not name.startswith("node:")


def order_resources(names) -> list[str]:
    """CPU, GPU, custom resources by name, then memory and object store."""
    def key(name):
        if name == "CPU":
            return (0, "")
        if name == "GPU":
            return (1, "")
        if name in _MEMORY_RESOURCES:
            return (3, _MEMORY_RESOURCES.index(name))
        return (2, name)
    return sorted((n for n in names if _shown(n)), key=key)


def node_stats(node, timeout: float = 3.0):
    """GetNodeStats of a live node's raylet, or None if it does not answer."""
    with sync_channel(f"{node.ip}:{node.raylet_port}") as channel:
        stub = authenticated(raylet_pb2_grpc.RayletServiceStub(channel))
        try:
            return stub.GetNodeStats(raylet_pb2.GetNodeStatsRequest(), timeout=timeout)
        except grpc.RpcError:
            return None


def _node_lines(node, stats) -> list[str]:
    role = "head" if node.is_head else "worker"
    lines = [f" node {node.node_id.hex()}",
             f"   address: {node.ip}:{node.raylet_port}   role: {role}   "
             f"hostname: {node.hostname or '?'}"]
    total = dict(node.resources_total)
    if stats is not None:
        total = dict(stats.resources_total) or total
        available = dict(stats.resources_available)
    else:
        available = dict(node.resources_available)
    names = order_resources(total)
    if names:
        lines.append("   resources (available / total):")
        width = max(len(n) for n in names)
        for name in names:
            avail = available.get(name, 0.0) if node.alive else 0.0
            lines.append(f"     {name:<{width}}  {format_amount(name, avail):>9} / "
                         f"{format_amount(name, total[name])}")
    if not node.alive:
        if node.end_time:
            lines.append("   died: " + time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(node.end_time)))
        return lines
    if stats is None:
        lines.append("   (the raylet did not answer GetNodeStats)")
        return lines
    lines.append(f"   workers: {stats.num_workers} ({stats.num_idle_workers} idle)   "
                 f"leases: {stats.num_leases} granted, {stats.num_pending_leases} pending")
    lines.append(f"   object store: {format_memory(stats.store_used)} / "
                 f"{format_memory(stats.store_capacity)} used, "
                 f"{stats.store_num_objects} objects, {stats.store_num_spilled} spilled")
    return lines


def render(address: str, nodes: list, stats: dict) -> str:
    alive = [n for n in nodes if n.alive]
    dead = [n for n in nodes if not n.alive]
    alive.sort(key=lambda n: (not n.is_head, n.start_time))
    dead.sort(key=lambda n: n.end_time)
    out = [f"======== Cluster status: {time.strftime('%Y-%m-%d %H:%M:%S')} ========",
           f"GCS address: {address}",
           f"Nodes: {len(alive)} alive, {len(dead)} dead",
           "",
           "Node status",
           _RULE,
           "Active:"]
    for n in alive:
        out += _node_lines(n, stats.get(n.node_id))
    if not alive:
        out.append(" (no active nodes)")
    out.append("Dead:")
    for n in dead:
        out += _node_lines(n, None)
    if not dead:
        out.append(" (no dead nodes)")

    totals: dict[str, float] = {}
    used: dict[str, float] = {}
    pending = 0
    for n in alive:
        s = stats.get(n.node_id)
        total = dict(s.resources_total) if s is not None and s.resources_total \
            else dict(n.resources_total)
        available = dict(s.resources_available) if s is not None \
            else dict(n.resources_available)
        if s is not None:
            pending += s.num_pending_leases
        for name, amount in total.items():
            totals[name] = totals.get(name, 0.0) + amount
            used[name] = used.get(name, 0.0) + max(
                0.0, amount - available.get(name, 0.0))
    out += ["", "Resources", _RULE, "Usage:"]
    for name in order_resources(totals):
        out.append(f" {format_amount(name, used[name])}/"
                   f"{format_amount(name, totals[name])} {name}")
    if not totals:
        out.append(" (no resources)")
    out += ["", "Demands:",
            f" {pending} pending lease request{'s' if pending != 1 else ''}"
            if pending else " (no resource demands)"]
    return "\n".join(out)


def status(address: str | None = None) -> int:
    """The ``miniray status`` command; returns the exit code."""
    try:
        address = resolve_address(address)
        try:
            auth.load_for_cluster(address)
        except auth.AuthTokenError as exc:
            raise StatusError(str(exc)) from None
        try:
            nodes = node_module.get_nodes(address, timeout=5)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else ""
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise StatusError(str(auth.refused(address, "miniray status"))) from None
            raise StatusError(
                f"Could not connect to a miniray cluster at {address} ({code}). "
                "Is it running? Start one with `miniray start --head`.") from None
    except StatusError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    stats = {n.node_id: node_stats(n) for n in nodes if n.alive}
    print(render(address, nodes, stats))
    return 0


def cluster_alive(address: str, timeout: float = 2.0) -> bool:
    """True if a GCS answers at ``address``."""
    try:
        node_module.get_nodes(address, timeout=timeout)
        return True
    except grpc.RpcError as exc:
        # It answered, if only to refuse us (no token for it yet).
        return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    except ValueError:
        return False
