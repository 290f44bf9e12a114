"""The function table, seen from a core worker.

A driver exports each remote function's pickled definition to the GCS once
(keyed by a hash of the pickle); a worker fetches a definition by id the
first time it runs it and keeps it cached.
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
import warnings

import cloudpickle

from miniray.common import config, serialization
from miniray.common.ids import FunctionID
from miniray.protocol import gcs_pb2


def module_name(obj) -> str:
    """The module a function or class is defined in, as Ray names it in
    function descriptors: a script run as ``__main__`` by its file name."""
    module = getattr(obj, "__module__", None) or "__main__"
    if module == "__main__":
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None)
        if path:
            return os.path.splitext(os.path.basename(path))[0]
    return module


def pickle_function(function) -> tuple[FunctionID, bytes]:
    try:
        pickled = serialization.dumps(function)
    except Exception as exc:
        raise TypeError(
            f"Could not serialize the remote function or class "
            f"{getattr(function, '__qualname__', function)!r}: {exc}") from exc
    check_definition_size(function, len(pickled))
    return FunctionID(hashlib.sha1(pickled).digest()), pickled


def check_definition_size(function, size: int) -> None:
    """As in Ray: a definition over FUNCTION_SIZE_ERROR_BYTES pickled is
    refused (it almost always captured a big object by accident); one over
    FUNCTION_SIZE_WARN_BYTES gets a warning."""
    if size <= config.FUNCTION_SIZE_WARN_BYTES:
        return
    if isinstance(function, type):
        what = f"actor {function.__name__}"
    else:
        what = (f"remote function {getattr(function, '__module__', '')}."
                f"{getattr(function, '__name__', function)}")
    advice = ("Check that its definition is not implicitly capturing a large array "
              "or other object in scope. Tip: pass large objects as arguments or "
              "put() them in the object store instead.")
    mib = size // (1024 * 1024)
    if size > config.FUNCTION_SIZE_ERROR_BYTES:
        limit = config.FUNCTION_SIZE_ERROR_BYTES // (1024 * 1024)
        raise ValueError(f"The {what} is too large ({mib} MiB > "
                         f"FUNCTION_SIZE_ERROR_THRESHOLD={limit} MiB). {advice}")
    warnings.warn(f"The {what} is very large ({mib} MiB). {advice}", stacklevel=4)


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
