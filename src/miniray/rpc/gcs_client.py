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


class ReconnectingStub:
    def __init__(self, stub, address: str, timeout_s: float | None = None):
        self._stub = stub
        self._address = address
        self._timeout_s = config.GCS_RECONNECT_TIMEOUT_S if timeout_s is None \
            else timeout_s
        self.down_since: float | None = None     # monotonic; None while reachable
        self._methods: dict[str, object] = {}

    def __getattr__(self, name: str):
        method = self._methods.get(name)
        if method is None:
            method = self._methods[name] = self._wrap(getattr(self._stub, name))
        return method

    def unreachable_error(self):
        from miniray.exceptions import RaySystemError
        return RaySystemError(
            f"the GCS at {self._address} has been unreachable for more than "
            f"{self._timeout_s:g} s (MINIRAY_GCS_RECONNECT_TIMEOUT_S): the head node "
            f"or its GCS is down")

    def _wrap(self, method):
        async def call(request, **kwargs):
            delay = 0.05
            while True:
                try:
                    reply = await method(request, **kwargs)
                except grpc.RpcError as exc:
                    if exc.code() not in _RETRIED:
                        raise
                    now = time.monotonic()
                    if self.down_since is None:
                        self.down_since = now
                    if now - self.down_since > self._timeout_s:
                        raise self.unreachable_error() from None
                    await asyncio.sleep(delay)
                    delay = min(1.0, delay * 2)
                    continue
                self.down_since = None
                return reply
        return call
