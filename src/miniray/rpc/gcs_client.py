"""A GcsService stub that rides out a GCS restart.

A call failing with UNAVAILABLE (the GCS is down or restarting) is retried,
with backoff, while gRPC reconnects the channel underneath. Once the GCS
has been unreachable for ``config.GCS_RECONNECT_TIMEOUT_S`` (Ray's
``gcs_rpc_server_reconnect_timeout_s``, 60 s by default) calls fail with
``RaySystemError`` saying so, instead of hanging. Per-call ``timeout=``
bounds each attempt, as before.

Retried calls may reach a GCS that already applied them before it died:
the GCS makes those idempotent (a re-registered actor or placement group
with the same id and spec, a driver adding its job again).
"""
from __future__ import annotations

import asyncio
import time

import grpc

from miniray.common import config

_RETRIED = (grpc.StatusCode.UNAVAILABLE,)


class GcsUnreachable(Exception):
    """Raised when the GCS stayed unreachable past the reconnect timeout."""


class _Outage:
    """When the GCS stopped answering, and how long to wait before trying
    again (shared by the aio and the blocking stub)."""

    def __init__(self, address: str, timeout_s: float | None):
        self.address = address
        self.timeout_s = config.GCS_RECONNECT_TIMEOUT_S if timeout_s is None \
            else timeout_s
        self.down_since: float | None = None     # monotonic; None while reachable

    def failed(self, exc: grpc.RpcError, delay: float) -> float:
        """Seconds to wait before the next try; raises if ``exc`` is not
        worth retrying or the outage lasted too long."""
        if exc.code() not in _RETRIED:
            raise exc
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        if now - self.down_since > self.timeout_s:
            raise self.unreachable_error() from None
        return min(1.0, delay * 2)

    def unreachable_error(self):
        from miniray.exceptions import RaySystemError
        return RaySystemError(
            f"the GCS at {self.address} has been unreachable for more than "
            f"{self.timeout_s:g} s (MINIRAY_GCS_RECONNECT_TIMEOUT_S): the head node "
            f"or its GCS is down")


class _Stub:
    def __init__(self, stub, address: str, timeout_s: float | None = None):
        self._stub = stub
        self._outage = _Outage(address, timeout_s)
        self._methods: dict[str, object] = {}

    @property
    def down_since(self) -> float | None:
        return self._outage.down_since

    def unreachable_error(self):
        return self._outage.unreachable_error()

    def __getattr__(self, name: str):
        method = self._methods.get(name)
        if method is None:
            method = self._methods[name] = self._wrap(getattr(self._stub, name))
        return method


class ReconnectingStub(_Stub):
    """For the event loop (grpc.aio stubs)."""

    def _wrap(self, method):
        outage = self._outage

        async def call(request, **kwargs):
            delay = 0.025
            while True:
                try:
                    reply = await method(request, **kwargs)
                except grpc.RpcError as exc:
                    delay = outage.failed(exc, delay)
                    await asyncio.sleep(delay)
                    continue
                outage.down_since = None
                return reply
        return call


class BlockingReconnectingStub(_Stub):
    """For user threads (blocking stubs: no hop through the event loop)."""

    def _wrap(self, method):
        outage = self._outage

        def call(request, **kwargs):
            delay = 0.025
            while True:
                try:
                    reply = method(request, **kwargs)
                except grpc.RpcError as exc:
                    delay = outage.failed(exc, delay)
                    time.sleep(delay)
                    continue
                outage.down_since = None
                return reply
        return call
