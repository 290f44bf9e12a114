"""What the dashboard reads from the cluster: GCS tables and raylet stats,
over blocking gRPC (the HTTP server's threads share the stubs).

Each kind of answer is cached for ``ttl`` seconds, and the task events
(the biggest answer, up to the GCS's 100k task attempts) for longer when
fetching them was slow, so any number of open pages and scrapers costs
the GCS about one read per second.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from miniray.protocol import gcs_pb2, gcs_pb2_grpc, raylet_pb2, raylet_pb2_grpc
from miniray.rpc.channels import authenticated, sync_channel

RPC_TIMEOUT_S = 5.0
MAX_OBJECTS = 10_000          # the largest objects the objects view pages through
NODE_STATS_TIMEOUT_S = 1.0
LOG_LIST_TIMEOUT_S = 2.0


@dataclass
class TaskSnapshot:
    """Task attempts as the GCS has them (newest first), with each
    attempt's latest state computed once."""
    events: list
    num_dropped: int
    statuses: list = field(default_factory=list)    # latest status of events[i]


class _Cached:
    """One cached answer, refreshed by whichever thread asks after it expired."""

    def __init__(self, fetch, ttl: float, slow_factor: float = 0.0):
        self._fetch = fetch
        self._ttl = ttl
        self._slow_factor = slow_factor      # keep slow answers this many times longer
        self._lock = threading.Lock()
        self._value = None
        self._expires = 0.0

    def get(self):
        with self._lock:
            now = time.monotonic()
            if self._value is None or now >= self._expires:
                self._value = self._fetch()
                took = time.monotonic() - now
                self._expires = time.monotonic() + max(self._ttl, took * self._slow_factor)
            return self._value


class ClusterSource:
    def __init__(self, gcs_address: str, ttl: float = 1.0):
        self.gcs_address = gcs_address
        self._channel = sync_channel(gcs_address)
        self.gcs = authenticated(gcs_pb2_grpc.GcsServiceStub(self._channel))
        self._raylets: dict[str, object] = {}
        self._raylet_channels: dict[str, object] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="node-stats")
        self._nodes = _Cached(self._fetch_nodes, ttl)
        self._actors = _Cached(lambda: list(self.gcs.GetAllActors(
            gcs_pb2.GetAllActorsRequest(), timeout=RPC_TIMEOUT_S).actors), ttl)
        self._groups = _Cached(lambda: list(self.gcs.GetAllPlacementGroups(
            gcs_pb2.GetAllPlacementGroupsRequest(), timeout=RPC_TIMEOUT_S).groups), ttl)
        self._jobs = _Cached(lambda: list(self.gcs.GetAllJobs(
            gcs_pb2.GetAllJobsRequest(), timeout=RPC_TIMEOUT_S).jobs), ttl)
        self._metrics = _Cached(lambda: list(self.gcs.GetMetrics(
            gcs_pb2.GetMetricsRequest(), timeout=RPC_TIMEOUT_S).reports), ttl)
        self._stats = _Cached(self._fetch_node_stats, ttl)
        self._tasks = _Cached(self._fetch_tasks, ttl, slow_factor=4.0)
        self._objects = _Cached(self._fetch_objects, ttl * 2, slow_factor=4.0)
        self._log_listings = _Cached(self._fetch_log_listings, ttl, slow_factor=4.0)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for channel in [self._channel, *self._raylet_channels.values()]:
            channel.close()

    # --- cached reads -------------------------------------------------------------------
    def cluster(self):
        """The GCS's GetAllNodes reply (nodes and the cluster's versions)."""
        return self._nodes.get()

    def nodes(self) -> list:
        return list(self.cluster().nodes)

    def actors(self) -> list:
        return self._actors.get()

    def placement_groups(self) -> list:
        return self._groups.get()

    def jobs(self) -> list:
        return self._jobs.get()

    def metric_reports(self) -> list:
        return self._metrics.get()

    def node_stats(self) -> dict:
        """{node_id: GetNodeStatsReply} of the live nodes that answered."""
        return self._stats.get()

    def tasks(self) -> TaskSnapshot:
        return self._tasks.get()

    def objects(self) -> tuple[list[dict] | None, str]:
        """(objects largest first, as ``miniray.util.state.list_objects``
        records; or None where the cluster cannot list them, and why)."""
        return self._objects.get()

    def log_listings(self) -> list:
        """[(NodeInfo, [(file name, size, mtime in ms)], error or None)] of
        the live nodes: their logs directories, as their raylets list them."""
        return self._log_listings.get()

    def read_log(self, node, filename: str, offset: int = 0, max_bytes: int = 0,
                 tail_lines: int = 0):
        """One ReadLog call to ``node``'s raylet (never cached)."""
        return self._raylet(f"{node.ip}:{node.raylet_port}").ReadLog(
            raylet_pb2.ReadLogRequest(filename=filename, offset=offset, max_bytes=max_bytes,
                                      tail_lines=tail_lines), timeout=RPC_TIMEOUT_S)

    # --- fetching -----------------------------------------------------------------------
    def _fetch_nodes(self):
        return self.gcs.GetAllNodes(gcs_pb2.GetAllNodesRequest(), timeout=RPC_TIMEOUT_S)

    def _fetch_tasks(self) -> TaskSnapshot:
        from miniray.gcs.task_events import latest_status
        reply = self.gcs.GetTaskEvents(gcs_pb2.GetTaskEventsRequest(),
                                       timeout=RPC_TIMEOUT_S * 4)
        events = list(reply.tasks)
        return TaskSnapshot(events, reply.num_dropped, [latest_status(e) for e in events])

    def _fetch_objects(self):
        try:
            from miniray.util.state import list_objects
        except ImportError:
            return None, "this miniray cannot list single objects"
        try:
            records = list_objects(address=self.gcs_address, limit=MAX_OBJECTS,
                                   raise_on_missing_output=False, timeout=RPC_TIMEOUT_S)
        except Exception as exc:
            return None, f"could not list objects: {type(exc).__name__}: {exc}"
        return [r.to_dict() for r in records], ""

    def _raylet(self, address: str):
        with self._lock:
            stub = self._raylets.get(address)
            if stub is None:
                channel = self._raylet_channels[address] = sync_channel(address)
                stub = self._raylets[address] = authenticated(
                    raylet_pb2_grpc.RayletServiceStub(channel))
            return stub

    def _fetch_node_stats(self) -> dict:
        alive = [n for n in self.nodes() if n.alive]

        def ask(node):
            try:
                return self._raylet(f"{node.ip}:{node.raylet_port}").GetNodeStats(
                    raylet_pb2.GetNodeStatsRequest(), timeout=NODE_STATS_TIMEOUT_S)
            except Exception:
                return None
        replies = list(self._pool.map(ask, alive))
        return {n.node_id: r for n, r in zip(alive, replies) if r is not None}

    def _fetch_log_listings(self) -> list:
        alive = [n for n in self.nodes() if n.alive]

        def ask(node):
            try:
                reply = self._raylet(f"{node.ip}:{node.raylet_port}").ListLogs(
                    raylet_pb2.ListLogsRequest(), timeout=LOG_LIST_TIMEOUT_S)
            except Exception as exc:
                code = getattr(exc, "code", None)
                what = code().name if callable(code) else type(exc).__name__
                return node, [], f"could not list its logs ({what})"
            return node, [(f.filename, f.size, f.mtime_ms) for f in reply.files], None
        return list(self._pool.map(ask, alive))

    # --- writes -------------------------------------------------------------------------
    def publish_address(self, address: str) -> None:
        """Record where the dashboard listens (init(address=...) reads it)."""
        self.gcs.KVPut(gcs_pb2.KVPutRequest(namespace=KV_NAMESPACE, key=KV_KEY,
                                            value=address.encode(), overwrite=True),
                       timeout=RPC_TIMEOUT_S)

    def ping(self) -> None:
        """Raises if the GCS does not answer."""
        self.gcs.KVGet(gcs_pb2.KVGetRequest(namespace=KV_NAMESPACE, key=KV_KEY),
                       timeout=RPC_TIMEOUT_S)


# Where the dashboard's address is kept in the GCS's internal KV.
KV_NAMESPACE = "dashboard"
KV_KEY = b"address"
