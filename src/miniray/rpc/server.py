"""Starting a grpc.aio server on the current event loop."""
from __future__ import annotations

import grpc

from miniray.rpc.channels import GRPC_OPTIONS


async def start_server(add_servicers, host: str = "127.0.0.1",
                       port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Start an aio server; ``add_servicers(server)`` registers services.

    Returns the server and the port it is bound to (``port=0`` picks one).
    """
    server = grpc.aio.server(options=GRPC_OPTIONS)
    add_servicers(server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind a gRPC server to {host}:{port}")
    await server.start()
    return server, bound
