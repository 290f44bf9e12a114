"""miniray: a small, Ray-compatible distributed task runtime.

``import miniray as ray`` and write Ray Core programs: ``init``,
``@remote``, ``get``/``put``/``wait``. This module is the whole public
surface (pinned by tests/test_public_api.py).
"""
import os as _os

# gRPC's C core logs connection churn (peers exiting) at INFO; keep quiet.
_os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from miniray import exceptions  # noqa: E402
from miniray.api import (
    __version__, available_resources, cancel, cluster_resources, get, get_gpu_ids,
    init, is_initialized, nodes, put, shutdown, wait)
from miniray.core_worker.generator import ObjectRefGenerator
from miniray.core_worker.object_ref import ObjectRef
from miniray.decorators import remote
from miniray.runtime_context import get_runtime_context

__all__ = [
    "ObjectRef", "ObjectRefGenerator", "__version__", "available_resources", "cancel",
    "cluster_resources", "exceptions", "get", "get_gpu_ids", "get_runtime_context",
    "init", "is_initialized", "nodes", "put", "remote", "shutdown", "wait",
]
