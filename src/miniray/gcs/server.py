"""The GCS process: one event loop serving GcsService.

    python -m miniray.gcs --port P [--host H]
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import miniray
from miniray.common import config
from miniray.common.process import die_with_parent
from miniray.gcs.actor_manager import ActorManager
from miniray.gcs.node_manager import NodeManager
from miniray.gcs.placement_groups import PlacementGroupManager
from miniray.gcs.servicer import GcsServicer
from miniray.gcs.tables import FunctionTable, InternalKV, JobTable
from miniray.common.rpc_guard import add_servicer
from miniray.protocol import gcs_pb2
from miniray.rpc import ChannelPool, auth, start_server

log = logging.getLogger("miniray.gcs")


class GcsServer:
    def __init__(self):
        self.nodes = NodeManager(config.NODE_DEATH_TIMEOUT_S)
        self.jobs = JobTable()
        self.functions = FunctionTable()
        self.kv = InternalKV()
        self.channels = ChannelPool()
        self.actors = ActorManager(self)
        self.placement_groups = PlacementGroupManager(self)
        self.version = miniray.__version__        # drivers and nodes must match
        self.python_version = "%d.%d" % sys.version_info[:2]

    async def broadcast_process_death(self, worker_id: bytes, node_id: bytes) -> None:
        """Tell the other raylets, which may hold its leases and objects."""
        from miniray.protocol import raylet_pb2, raylet_pb2_grpc
        for node in self.nodes.alive_nodes():
            if node.node_id == node_id:
                continue
            stub = self.channels.stub(f"{node.ip}:{node.raylet_port}",
                                      raylet_pb2_grpc.RayletServiceStub)
            try:
                await stub.DisconnectWorker(raylet_pb2.DisconnectWorkerRequest(
                    worker_id=worker_id, from_gcs=True), timeout=5)
            except Exception:
                pass

    async def raylet_answers(self, node) -> bool:
        """Whether the node's raylet still serves RPCs."""
        from miniray.protocol import raylet_pb2, raylet_pb2_grpc
        stub = self.channels.stub(f"{node.ip}:{node.raylet_port}",
                                  raylet_pb2_grpc.RayletServiceStub)
        try:
            await stub.GetNodeStats(raylet_pb2.GetNodeStatsRequest(), timeout=1)
        except Exception:
            return False
        return True

    async def serve(self, host: str, port: int) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server, _ = await start_server(
            lambda s: add_servicer(s, GcsServicer(self),
                                   gcs_pb2.DESCRIPTOR.services_by_name["GcsService"]),
            host, port)
        monitor = asyncio.create_task(self._monitor_nodes())
        await stop.wait()
        monitor.cancel()
        await server.stop(grace=None)

    async def _monitor_nodes(self) -> None:
        while True:
            await asyncio.sleep(config.HEARTBEAT_PERIOD_S)
            for node_id in self.nodes.check_timeouts():
                log.warning("node %s missed its heartbeats: marked dead", node_id.hex())
                await self.actors.on_node_failure(node_id)
                await self.placement_groups.on_node_failure(node_id)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m miniray.gcs")
    parser.add_argument("--host", default=config.NODE_IP)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args(argv)
    if args.die_with_parent:
        die_with_parent(signal.SIGTERM)
    logging.basicConfig(level=os.environ.get("MINIRAY_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s gcs %(levelname)s %(message)s")
    auth.load_from_env()
    try:
        asyncio.run(GcsServer().serve(args.host, args.port))
    finally:
        # The cluster's private directory (its token) goes with its GCS.
        auth.remove_cluster_files(f"{args.host}:{args.port}")


if __name__ == "__main__":
    main()
