"""gRPC plumbing shared by every process: aio servers, cached client
channels and the mapping of RPC failures to miniray exceptions."""
from miniray.rpc.channels import ChannelPool, GRPC_OPTIONS, is_unavailable
from miniray.rpc.server import start_server

__all__ = ["ChannelPool", "GRPC_OPTIONS", "is_unavailable", "start_server"]
