"""The GCS stubs' retry policy across a GCS restart, blocking and aio (no sockets)."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from miniray.exceptions import RaySystemError
from miniray.rpc.gcs_client import BlockingReconnectingStub, ReconnectingStub


class Error(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code


class FlakyMethod:
    """Fails with ``code`` ``failures`` times, then answers."""

    def __init__(self, failures, code=grpc.StatusCode.UNAVAILABLE):
        self.failures, self.code, self.calls = failures, code, 0

    def __call__(self, request, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise Error(self.code)
        return ("reply", request, kwargs)


class Stub:
    def __init__(self, method):
        self.Ping = method


class AioStub:
    def __init__(self, method):
        async def ping(request, **kwargs):
            return method(request, **kwargs)
        self.Ping = ping


def test_blocking_stub_rides_out_an_outage():
    method = FlakyMethod(3)
    stub = BlockingReconnectingStub(Stub(method), "gcs:1", timeout_s=30)
    assert stub.Ping("req", timeout=5) == ("reply", "req", {"timeout": 5})
    assert method.calls == 4 and stub.down_since is None


def test_blocking_stub_gives_up_past_the_timeout():
    stub = BlockingReconnectingStub(Stub(FlakyMethod(10**6)), "gcs:1", timeout_s=0.2)
    with pytest.raises(RaySystemError, match="unreachable for more than 0.2 s"):
        stub.Ping("req")


def test_other_errors_are_not_retried():
    method = FlakyMethod(1, grpc.StatusCode.INVALID_ARGUMENT)
    stub = BlockingReconnectingStub(Stub(method), "gcs:1", timeout_s=30)
    with pytest.raises(grpc.RpcError):
        stub.Ping("req")
    assert method.calls == 1


def test_aio_stub_has_the_same_policy():
    method = FlakyMethod(2)
    stub = ReconnectingStub(AioStub(method), "gcs:1", timeout_s=30)
    assert asyncio.run(stub.Ping("req")) == ("reply", "req", {})
    assert method.calls == 3
    stuck = ReconnectingStub(AioStub(FlakyMethod(10**6)), "gcs:1", timeout_s=0.2)
    with pytest.raises(RaySystemError):
        asyncio.run(stuck.Ping("req"))
