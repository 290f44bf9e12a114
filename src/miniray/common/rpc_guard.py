"""Registering a grpc.aio servicer so that bad requests get a clear status.

Used where each process adds its services to its server (the GCS, the
raylet, every core worker). ``add_servicer`` registers every method of a
service, from its descriptor, with two guards around the handler:

- a request that does not parse as the method's message ends with
  INVALID_ARGUMENT ("not a valid KVPutRequest: ...") instead of gRPC's
  UNKNOWN and a logged traceback;
- a handler raising ``validation.InvalidArgument`` ends with
  INVALID_ARGUMENT and its message, one raising ``PermissionError``
  (``validation.NotAllowed``) with PERMISSION_DENIED.

Other exceptions are left to gRPC (UNKNOWN). The server carries on either
way. Server interceptors (authentication) run before any of this.
"""
from __future__ import annotations

import functools
import inspect

import grpc
from google.protobuf import message_factory

from miniray.common.validation import InvalidArgument

__all__ = ["add_servicer", "guard", "Undecodable"]

_CODES = ((InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
          (PermissionError, grpc.StatusCode.PERMISSION_DENIED))
_MAKERS = {(False, False): grpc.unary_unary_rpc_method_handler,
           (False, True): grpc.unary_stream_rpc_method_handler,
           (True, False): grpc.stream_unary_rpc_method_handler,
           (True, True): grpc.stream_stream_rpc_method_handler}


class Undecodable:
    """What a request that does not parse is handed to the handler as."""
    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _deserializer(message_class):
    parse = message_class.FromString
    name = message_class.DESCRIPTOR.name

    def deserialize(data: bytes):
        try:
            return parse(data)
        except Exception as exc:          # noqa: BLE001 - reported to the caller
            return Undecodable(f"the request is not a valid {name}: {exc}")
    return deserialize


async def _abort(context, exc: Exception):
    for kind, code in _CODES:
        if isinstance(exc, kind):
            await context.abort(code, str(exc))
    raise exc


def _check(request):
    if isinstance(request, Undecodable):
        raise InvalidArgument(request.reason)
    return request


def guard(behavior, client_streaming: bool = False):
    """``behavior`` (an async servicer method) with the two guards."""
    if client_streaming:
        async def checked(request_iterator, rejected: list):
            async for request in request_iterator:
                if isinstance(request, Undecodable):
                    rejected.append(request.reason)
                    return
                yield request

    if inspect.isasyncgenfunction(behavior):
        @functools.wraps(behavior)
        async def stream(request, context):
            rejected: list = []
            try:
                source = checked(request, rejected) if client_streaming else _check(request)
                async for reply in behavior(source, context):
                    yield reply
                if rejected:
                    raise InvalidArgument(rejected[0])
            except (InvalidArgument, PermissionError) as exc:
                await _abort(context, exc)
        return stream

    @functools.wraps(behavior)
    async def unary(request, context):
        rejected: list = []
        try:
            source = checked(request, rejected) if client_streaming else _check(request)
            reply = await behavior(source, context)
            if rejected:
                raise InvalidArgument(rejected[0])
            return reply
        except (InvalidArgument, PermissionError) as exc:
            await _abort(context, exc)
    return unary


def add_servicer(server, servicer, service) -> None:
    """Register every method of ``service`` (a ServiceDescriptor, e.g.
    ``gcs_pb2.DESCRIPTOR.services_by_name["GcsService"]``) on ``server``,
    handled by ``servicer``'s method of the same name, guarded."""
    handlers = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        reply_class = message_factory.GetMessageClass(method.output_type)
        make = _MAKERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            guard(getattr(servicer, method.name), method.client_streaming),
            request_deserializer=_deserializer(request_class),
            response_serializer=reply_class.SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
