"""Starting a grpc.aio server on the current event loop."""
from __future__ import annotations

import asyncio
import logging

import grpc

from miniray.rpc import auth
from miniray.rpc.channels import GRPC_OPTIONS


class _DropCancelledRpcs(logging.Filter):
    """grpc.aio logs every handler it cancels when a server stops (a long
    poll, a heartbeat in flight) as an unhandled error; at shutdown that is
    expected, so those records are dropped. Other errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


logging.getLogger("grpc._cython.cygrpc").addFilter(_DropCancelledRpcs())


async def start_server(add_servicers, host: str = "127.0.0.1",
                       port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Start an aio server; ``add_servicers(server)`` registers services.
Every call is checked for this process's auth token (if it has one), and
the port uses TLS when the cluster does.

    Returns the server and the port it is bound to (``port=0`` picks one).
    """
    server = grpc.aio.server(options=GRPC_OPTIONS,
                             interceptors=auth.server_interceptors())
    add_servicers(server)
    credentials = auth.server_credentials()
    if credentials is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    if bound == 0:
        raise OSError(f"cannot bind a gRPC server to {host}:{port}")
    await server.start()
    return server, bound
