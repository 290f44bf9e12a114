"""The function table, seen from a core worker.

A driver exports each remote function's pickled definition to the GCS once
(keyed by a hash of the pickle); a worker fetches a definition by id the
first time it runs it and keeps it cached.
"""
from __future__ import annotations

import hashlib
import threading

import cloudpickle

from miniray.common.ids import FunctionID
from miniray.protocol import gcs_pb2


def pickle_function(function) -> tuple[FunctionID, bytes]:
    try:
        pickled = cloudpickle.dumps(function)
    except Exception as exc:
        raise TypeError(
            f"Could not serialize the remote function or class "
            f"{getattr(function, '__qualname__', function)!r}: {exc}") from exc
    return FunctionID(hashlib.sha1(pickled).digest()), pickled


class FunctionManager:
    def __init__(self, worker):
        self.worker = worker
        self._exported: set[FunctionID] = set()
        self._loaded: dict[bytes, object] = {}
        self._lock = threading.Lock()

    def export(self, function_id: FunctionID, pickled: bytes, name: str) -> None:
        if function_id in self._exported:
            return
        worker = self.worker
        worker.call("gcs", "ExportFunction", gcs_pb2.ExportFunctionRequest(
            function_id=function_id, job_id=worker.job_id, pickled=pickled, name=name))
        self._exported.add(function_id)

    def load(self, function_id: bytes):
        function = self._loaded.get(function_id)
        if function is not None:
            return function
        worker = self.worker
        reply = worker.call("gcs", "GetFunction",
                            gcs_pb2.GetFunctionRequest(function_id=function_id))
        if not reply.found:
            raise RuntimeError(
                f"function {function_id.hex()} is not in the GCS function table")
        function = cloudpickle.loads(reply.pickled)
        with self._lock:
            self._loaded[function_id] = function
        return function
