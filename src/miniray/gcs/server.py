"""The GCS server: one event loop serving GcsService (started by
gcs/supervisor.py, which restarts it if it dies)."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

import miniray
from miniray.common import config, system_config
from miniray.gcs.actor_manager import ActorManager
from miniray.gcs.metrics_table import MetricsTable
from miniray.gcs.node_manager import HealthChecks, NodeManager
from miniray.gcs.placement_groups import PlacementGroupManager
from miniray.gcs.servicer import GcsServicer
from miniray.gcs.storage import GcsStorage
from miniray.gcs.task_events import TaskEventTable
from miniray.common.ids import NodeID
from miniray.gcs.tables import FunctionTable, InternalKV, JobTable
from miniray.common.rpc_guard import add_servicer
from miniray.protocol import gcs_pb2
from miniray.rpc import ChannelPool, auth, start_server

log = logging.getLogger("miniray.gcs")
STORAGE_FILE = "gcs_tables.sqlite3"        # in the session directory


class GcsServer:
    """``storage``: the durable tables (gcs/storage.py); None keeps
    everything in memory only (a GCS that cannot be restarted)."""

    def __init__(self, storage: GcsStorage | None = None):
        self.storage = storage
        self.nodes = NodeManager(config.NODE_DEATH_TIMEOUT_S, storage)
        self.health = HealthChecks(config.HEALTH_CHECK_FAILURE_THRESHOLD)
        self.jobs = JobTable(storage)
        self.functions = FunctionTable(storage)
        self.kv = InternalKV(storage=storage)
        self.channels = ChannelPool()
        self.actors = ActorManager(self)
        self.placement_groups = PlacementGroupManager(self)
        self.version = miniray.__version__        # drivers and nodes must match
        self.python_version = "%d.%d" % sys.version_info[:2]
        # The head's _system_config, for drivers that connect (common/system_config.py).
        self.system_config = system_config.from_env(os.environ)
        self.task_events = TaskEventTable(config.TASK_EVENTS_MAX_TASKS_IN_GCS)
        self.metrics = MetricsTable(config.METRICS_REPORT_TTL_S)
        self.incarnation = os.urandom(8)          # new at each start of the GCS
        # Global GCs raylets asked for (store pressure), this incarnation:
        # heartbeat replies carry it, a raylet that sees it grow collects.
        self.global_gc_epoch = 0
        self.recovered = False

    def recover(self) -> None:
        """Reload the tables a previous run of this GCS wrote (call on the
        event loop, before serving)."""
        if self.storage is None:
            return
        self.nodes.load()
        self.jobs.load()
        self.functions.load()
        self.kv.load()
        self.actors.recover()
        self.placement_groups.recover()
        self.recovered = bool(self.nodes.all_nodes())
        if self.recovered:
            log.warning("recovered the GCS tables: %d nodes, %d jobs, %d actors, "
                        "%d placement groups", len(self.nodes.all_nodes()),
                        len(self.jobs.all_jobs()), len(self.actors.table.all_actors()),
                        len(self.placement_groups.groups))

    async def resync_node(self, node_id: bytes, live_workers: set[bytes],
                          bundles: list[tuple[bytes, int]]) -> None:
        await self.actors.resync_node(node_id, live_workers)
        node = self.nodes.get(NodeID(node_id))
        for pg_id in self.placement_groups.held_elsewhere(node_id, bundles):
            from miniray.protocol import raylet_pb2
            try:
                await self.placement_groups._raylet(node).ReturnBundles(
                    raylet_pb2.ReturnBundlesRequest(placement_group_id=pg_id))
            except Exception:
                pass

    async def raylet_answers(self, node, timeout: float = 1.0) -> bool:
        """Whether the node's raylet still serves RPCs."""
        from miniray.protocol import raylet_pb2, raylet_pb2_grpc
        stub = self.channels.stub(f"{node.ip}:{node.raylet_port}",
                                  raylet_pb2_grpc.RayletServiceStub)
        try:
            await stub.GetNodeStats(raylet_pb2.GetNodeStatsRequest(), timeout=timeout)
        except Exception:
            return False
        return True

    async def node_died(self, node_id: bytes, why: str) -> None:
        """Declare a node dead: its actors restart elsewhere (or die), its
        bundles are placed again. Its raylet, if it still runs, learns it
        at its next heartbeat and shuts down."""
        if not self.nodes.mark_dead(NodeID(node_id)):
            return
        log.warning("node %s %s: marked dead", node_id.hex(), why)
        self.health.forget(node_id)
        await self.actors.on_node_failure(node_id)
        await self.placement_groups.on_node_failure(node_id)
        await self.broadcast_process_death(b"", node_id)

    async def broadcast_process_death(self, worker_id: bytes, node_id: bytes) -> None:
        """Tell the other raylets, which may hold its leases and objects:
        a process (``worker_id``) of ``node_id`` died, or the whole node."""
        from miniray.protocol import raylet_pb2, raylet_pb2_grpc
        request = raylet_pb2.DisconnectWorkerRequest(
            worker_id=worker_id, from_gcs=True, node_id=b"" if worker_id else node_id)

        async def tell(node) -> None:
            stub = self.channels.stub(f"{node.ip}:{node.raylet_port}",
                                      raylet_pb2_grpc.RayletServiceStub)
            try:
                await stub.DisconnectWorker(request, timeout=5)
            except Exception:
                pass
        await asyncio.gather(*(tell(node) for node in self.nodes.alive_nodes()
                               if node.node_id != node_id))

    async def serve(self, host: str, port: int) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: _stop_within(stop, SHUTDOWN_LIMIT_S))
        self.recover()
        server, _ = await start_server(
            lambda s: add_servicer(s, GcsServicer(self),
                                   gcs_pb2.DESCRIPTOR.services_by_name["GcsService"]),
            host, port)
        monitors = [asyncio.create_task(self._monitor_nodes()),
                    asyncio.create_task(self._health_checks())]
        await stop.wait()
        for monitor in monitors:
            monitor.cancel()
        await server.stop(grace=None)
        if self.storage is not None:
            self.storage.close()

    async def _monitor_nodes(self) -> None:
        """Nodes silent for NODE_DEATH_TIMEOUT_S are dead."""
        while True:
            await asyncio.sleep(config.HEARTBEAT_PERIOD_S)
            now = time.monotonic()
            for node_id in self.nodes.silent_since(now - config.NODE_DEATH_TIMEOUT_S):
                await self.node_died(bytes(node_id), "missed its heartbeats")

    async def _health_checks(self) -> None:
        """Probe every live raylet each HEALTH_CHECK_PERIOD_S; one failing
        HEALTH_CHECK_FAILURE_THRESHOLD probes in a row is dead (a killed
        raylet refuses at once, so that takes about threshold x period)."""
        while True:
            await asyncio.sleep(config.HEALTH_CHECK_PERIOD_S)
            # A node whose heartbeat arrived lately (an idle one sends a
            # keepalive every IDLE_HEARTBEAT_PERIOD_S) is alive: only the
            # silent ones are probed (a probe is an RPC: this keeps the GCS's
            # cost per healthy node to its heartbeats).
            recent = time.monotonic() - max(
                config.HEALTH_CHECK_PERIOD_S,
                config.IDLE_HEARTBEAT_PERIOD_S + config.HEARTBEAT_PERIOD_S)
            nodes = []
            for node in self.nodes.alive_nodes():
                if self.nodes.heard_since(NodeID(node.node_id), recent):
                    self.health.record(node.node_id, True)
                else:
                    nodes.append(node)
            answers = await asyncio.gather(*(
                self.raylet_answers(node, config.HEALTH_CHECK_TIMEOUT_S) for node in nodes))
            for node, ok in zip(nodes, answers):
                if self.health.record(node.node_id, ok):
                    await self.node_died(node.node_id, f"failed {self.health.threshold} "
                                                       f"health checks in a row")


SHUTDOWN_LIMIT_S = 10.0


def _stop_within(stop: asyncio.Event, limit: float) -> None:
    """Start shutting down; exit regardless after ``limit`` seconds (a task
    that will not finish must not leave the GCS running forever)."""
    import threading
    if not stop.is_set():
        stop.set()
        timer = threading.Timer(limit, os._exit, (1,))
        timer.daemon = True
        timer.start()


def run(host: str, port: int, session_dir: str | None) -> None:
    """Serve until SIGTERM; the tables persist in ``session_dir`` if given."""
    logging.basicConfig(level=os.environ.get("MINIRAY_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s gcs %(levelname)s %(message)s")
    auth.load_from_env()
    storage = GcsStorage(os.path.join(session_dir, STORAGE_FILE)) if session_dir else None
    asyncio.run(GcsServer(storage).serve(host, port))
