"""The GCS's internal key-value store, as Ray's ``ray.experimental.internal_kv``.

Keys and values are bytes (str is encoded as UTF-8); ``namespace`` keeps
libraries apart. Entries outlive jobs and GCS restarts; they go with the
cluster.
"""
from __future__ import annotations

from miniray.protocol import gcs_pb2

__all__ = ["_internal_kv_initialized", "_internal_kv_get", "_internal_kv_exists",
           "_internal_kv_put", "_internal_kv_del", "_internal_kv_list"]


def _bytes(value, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"internal_kv {what} must be bytes or str, not "
                    f"{type(value).__name__}")


def _namespace(namespace) -> str:
    if namespace is None:
        return ""
    return namespace.decode() if isinstance(namespace, bytes) else str(namespace)


def _call(method: str, request):
    from miniray import api
    return api.ensure_initialized().call("gcs", method, request)


def _internal_kv_initialized() -> bool:
    from miniray import api
    return api.is_initialized()


def _internal_kv_get(key, *, namespace=None) -> bytes | None:
    reply = _call("KVGet", gcs_pb2.KVGetRequest(namespace=_namespace(namespace),
                                                key=_bytes(key, "key")))
    return reply.value if reply.found else None


def _internal_kv_exists(key, *, namespace=None) -> bool:
    return _internal_kv_get(key, namespace=namespace) is not None


def _internal_kv_put(key, value, overwrite: bool = True, *, namespace=None) -> bool:
    """Store ``value``; returns True if ``key`` already existed (Ray's
    convention), and leaves it unchanged when ``overwrite`` is False."""
    reply = _call("KVPut", gcs_pb2.KVPutRequest(
        namespace=_namespace(namespace), key=_bytes(key, "key"),
        value=_bytes(value, "value"), overwrite=overwrite))
    return not reply.added


def _internal_kv_del(key, *, del_by_prefix: bool = False, namespace=None) -> int:
    reply = _call("KVDel", gcs_pb2.KVDelRequest(namespace=_namespace(namespace),
                                                key=_bytes(key, "key"),
                                                by_prefix=del_by_prefix))
    return reply.deleted


def _internal_kv_list(prefix, *, namespace=None) -> list[bytes]:
    reply = _call("KVKeys", gcs_pb2.KVKeysRequest(namespace=_namespace(namespace),
                                                  prefix=_bytes(prefix, "prefix")))
    return list(reply.keys)
