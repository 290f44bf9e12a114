"""Cached grpc.aio channels and stubs, one per (address, service).

Every stub made here presents this process's auth token on each call (see
``auth``) and uses TLS when the cluster does.
"""
from __future__ import annotations

import functools

import grpc

from miniray.rpc import auth

# Large objects never travel in RPC payloads (they go through shared
# memory), but inline values, function definitions and batched replies can
# exceed gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),
    # Peers start concurrently (a raylet may dial the GCS before it listens):
    # retry connecting quickly instead of gRPC's default 1 s backoff.
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.so_reuseport", 0),
    # Peers are reached directly, never through an HTTP proxy a user's
    # environment may set (http_proxy would send cluster traffic to it).
    ("grpc.enable_http_proxy", 0),
]

_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def is_unavailable(error: BaseException) -> bool:
    """True when an RPC failed because the peer process is gone."""
    return isinstance(error, grpc.RpcError) and error.code() in _UNAVAILABLE


def describe_rpc_error(exc: BaseException) -> str:
    """A failed call's status as Ray words it (``GrpcUnavailable: RPC Error
    message: Socket closed``): what a lost actor call's error shows."""
    if isinstance(exc, grpc.RpcError):
        name = "Grpc" + exc.code().name.title().replace("_", "")
        return f"{name}: RPC Error message: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


class ChannelPool:
    """Stubs for aio channels, created lazily and owned by one event loop."""

    def __init__(self):
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, type], object] = {}
        self._gcs_stubs: dict[str, object] = {}

    def stub(self, address: str, stub_cls):
        key = (address, stub_cls)
        stub = self._stubs.get(key)
        if stub is None:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = aio_channel(address)
            stub = self._stubs[key] = authenticated(stub_cls(channel))
        return stub

    def gcs_stub(self, address: str):
        """The GCS's stub, retrying across GCS restarts (rpc/gcs_client.py)."""
        stub = self._gcs_stubs.get(address)
        if stub is None:
            from miniray.protocol import gcs_pb2_grpc
            from miniray.rpc.gcs_client import ReconnectingStub
            stub = self._gcs_stubs[address] = ReconnectingStub(
                self.stub(address, gcs_pb2_grpc.GcsServiceStub), address)
        return stub

    def forget(self, address: str) -> None:
        """Drop a dead peer's channel so a later call reconnects afresh."""
        channel = self._channels.pop(address, None)
        for key in [k for k in self._stubs if k[0] == address]:
            del self._stubs[key]
        self._gcs_stubs.pop(address, None)
        if channel is not None:
            # Let calls still in flight finish (they fail fast against a dead
            # peer) rather than cancelling them under their callers.
            import asyncio
            asyncio.ensure_future(channel.close(grace=5.0))

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        self._gcs_stubs.clear()
        for channel in channels:
            await channel.close(grace=None)


class BlockingChannelPool:
    """Blocking channels and stubs, for calls from user threads; thread-safe."""

    def __init__(self):
        import threading
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, type], object] = {}

    def stub(self, address: str, stub_cls):
        key = (address, stub_cls)
        stub = self._stubs.get(key)
        if stub is None:
            with self._lock:
                stub = self._stubs.get(key)
                if stub is None:
                    channel = self._channels.get(address)
                    if channel is None:
                        channel = self._channels[address] = sync_channel(address)
                    stub = self._stubs[key] = authenticated(stub_cls(channel))
        return stub

    def gcs_stub(self, address: str):
        """The GCS's stub, retrying across GCS restarts (rpc/gcs_client.py)."""
        from miniray.protocol import gcs_pb2_grpc
        from miniray.rpc.gcs_client import BlockingReconnectingStub
        key = (address, BlockingReconnectingStub)
        stub = self._stubs.get(key)
        if stub is None:
            plain = self.stub(address, gcs_pb2_grpc.GcsServiceStub)
            with self._lock:
                stub = self._stubs.setdefault(key, BlockingReconnectingStub(plain, address))
        return stub

    def close(self) -> None:
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
            self._stubs.clear()
        for channel in channels:
            channel.close()


def aio_channel(address: str) -> grpc.aio.Channel:
    credentials = auth.channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
    return grpc.aio.secure_channel(address, credentials, options=GRPC_OPTIONS)


def sync_channel(address: str) -> grpc.Channel:
    """A blocking channel (CLI, node startup): use with ``authenticated``."""
    credentials = auth.channel_credentials()
    if credentials is None:
        return grpc.insecure_channel(address, options=GRPC_OPTIONS)
    return grpc.secure_channel(address, credentials, options=GRPC_OPTIONS)


def authenticated(stub):
    """``stub`` with every method presenting this process's auth token."""
    metadata = auth.call_metadata()
    if metadata is not None:
        for name, method in list(vars(stub).items()):
            if callable(method):
                setattr(stub, name, functools.partial(method, metadata=metadata))
    return stub
