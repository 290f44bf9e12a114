"""How the state API reaches a cluster: its GCS, and each node's raylet.

In a driver or worker connected to the cluster (``address`` not given),
calls go through that process's CoreWorker: its GCS stub retries while the
GCS restarts. Elsewhere (the ``miniray`` CLI, a process that never called
``init``) they go over blocking channels to the GCS at ``address``, else
``$MINIRAY_ADDRESS`` / ``$RAY_ADDRESS``, else the cluster that ``miniray
start`` recorded on this machine, with that cluster's auth token. A state
query never starts a cluster nor joins one as a driver.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import grpc

from miniray.protocol import (
    core_worker_pb2_grpc as cw_grpc, gcs_pb2, gcs_pb2_grpc, raylet_pb2_grpc)
from miniray.util.state.common import DEFAULT_TIMEOUT, RayStateApiException

__all__ = ["StateClient", "resolve_address"]


def resolve_address(address: str | None) -> str:
    """``address`` (HOST:PORT), else $MINIRAY_ADDRESS / $RAY_ADDRESS, else the
    cluster ``miniray start`` recorded; ConnectionError if there is none."""
    from miniray import node as node_module
    from miniray.common import paths
    if address in (None, "", "auto"):
        env = None if address == "auto" else (os.environ.get("MINIRAY_ADDRESS")
                                              or os.environ.get("RAY_ADDRESS"))
        if env and env not in ("auto", "local"):
            address = env
        elif address == "auto" or env == "auto":
            address = node_module.auto_cluster_address()
        else:
            address = node_module.read_current_cluster()
        if not address:
            raise ConnectionError(
                "No miniray cluster is running on this machine (no "
                f"{paths.current_cluster_file()}). Start one with `miniray start "
                "--head`, or pass the address of one (--address=HOST:PORT).")
    if ":" not in address:
        raise ConnectionError(f"an address must look like HOST:PORT, got {address!r}")
    return address


def _connected_worker():
    from miniray.core_worker import object_ref
    return object_ref.core_worker()


class StateClient:
    """One state query's connections; use as a context manager."""

    def __init__(self, address: str | None = None, timeout: float | None = None):
        self.timeout = float(timeout or DEFAULT_TIMEOUT)
        self._worker = _connected_worker()
        if self._worker is not None and address not in (None, "", "auto",
                                                         self._worker.gcs_address):
            self._worker = None           # asked about another cluster
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, type], object] = {}
        self._nodes = None
        if self._worker is not None:
            self.address = self._worker.gcs_address
        else:
            self.address = resolve_address(address)
            self._token = self._load_token()

    def _load_token(self):
        """This cluster's token, without disturbing the one this process
        uses for its own cluster (if it is a driver of another)."""
        from miniray.rpc import auth
        previous = auth.current_token()
        try:
            auth.load_for_cluster(self.address)
            return auth.current_token()
        except auth.AuthTokenError as exc:
            raise ConnectionError(str(exc)) from None
        finally:
            if _connected_worker() is not None:
                auth.set_token(previous)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()

    # --- calls ---------------------------------------------------------------------
    def _stub(self, address: str, stub_cls):
        from miniray.rpc import auth
        from miniray.rpc.channels import authenticated, sync_channel
        key = (address, stub_cls)
        stub = self._stubs.get(key)
        if stub is None:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = sync_channel(address)
            previous = auth.current_token()
            auth.set_token(self._token)
            try:
                stub = self._stubs[key] = authenticated(stub_cls(channel))
            finally:
                auth.set_token(previous)
        return stub

    def gcs(self, method: str, request):
        """One GCS call; ConnectionError if the GCS cannot be reached."""
        try:
            if self._worker is not None:
                return self._worker.call("gcs", method, request, timeout=self.timeout)
            stub = self._stub(self.address, gcs_pb2_grpc.GcsServiceStub)
            return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _connection_error(exc, f"the GCS at {self.address}") from None

    def raylet(self, node, method: str, request):
        """One call to the raylet of ``node`` (a NodeInfo)."""
        address = f"{node.ip}:{node.raylet_port}"
        try:
            if self._worker is not None:
                worker = self._worker

                async def call():
                    return await getattr(worker.raylet_stub(address), method)(
                        request, timeout=self.timeout)
                return worker.run(call())
            stub = self._stub(address, raylet_pb2_grpc.RayletServiceStub)
            return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise RayStateApiException(exc.details()) from None
            raise _connection_error(
                exc, f"the raylet of node {node.node_id.hex()} at {address}") from None

    def core_workers(self, addresses: list[str], method: str, request,
                     timeout: float) -> list:
        """One call to each driver or worker at ``addresses``, all at once;
        for each, the reply or a ConnectionError ("UNAVAILABLE: ...": the
        process is gone)."""
        def failed(exc: grpc.RpcError) -> ConnectionError:
            return ConnectionError(f"{exc.code().name}: {exc.details()}")

        if self._worker is not None:
            import asyncio
            worker = self._worker

            async def one(address):
                try:
                    stub = worker.channels.stub(address, cw_grpc.CoreWorkerServiceStub)
                    return await getattr(stub, method)(request, timeout=timeout)
                except grpc.RpcError as exc:
                    return failed(exc)

            async def every():
                return await asyncio.gather(*(one(a) for a in addresses))
            return worker.run(every())

        def call(stub):
            try:
                return getattr(stub, method)(request, timeout=timeout)
            except grpc.RpcError as exc:
                return failed(exc)

        if not addresses:
            return []
        # Stubs made here, one thread: _stub swaps the process's auth token.
        stubs = [self._stub(a, cw_grpc.CoreWorkerServiceStub) for a in addresses]
        with ThreadPoolExecutor(min(16, len(addresses))) as pool:
            return list(pool.map(call, stubs))

    def nodes(self) -> list:
        """The GCS's node table (NodeInfo), fetched once per client."""
        if self._nodes is None:
            self._nodes = list(self.gcs("GetAllNodes", gcs_pb2.GetAllNodesRequest()).nodes)
        return self._nodes

    def alive_nodes(self) -> list:
        nodes = [n for n in self.nodes() if n.alive]
        nodes.sort(key=lambda n: not n.is_head)        # the head first
        return nodes

    def find_node(self, node_id: str | None = None, node_ip: str | None = None):
        """The live node with this id (or a unique prefix of it) or ip."""
        if node_id and node_ip:
            raise ValueError("give node_id or node_ip, not both")
        nodes = self.alive_nodes()
        if node_id:
            found = [n for n in nodes if n.node_id.hex().startswith(node_id.lower())]
        elif node_ip:
            found = [n for n in nodes if n.ip == node_ip]
        else:
            found = nodes[:1]                  # the head node
        if not found:
            what = f"id {node_id}" if node_id else f"ip {node_ip}" if node_ip else "a head"
            raise RayStateApiException(f"no live node with {what}")
        if len(found) > 1 and node_id:
            raise RayStateApiException(f"node id prefix {node_id} is ambiguous")
        return found[0]


def _connection_error(exc: grpc.RpcError, what: str) -> Exception:
    from miniray.rpc import auth
    code = exc.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ConnectionError(str(auth.refused(what, "the state API")))
    return ConnectionError(f"could not query {what}: {code.name} ({exc.details()})")
