"""miniray: a small, Ray-compatible distributed task runtime.

``import miniray as ray`` and write Ray Core programs: ``init``,
``@remote``, ``get``/``put``/``wait``. This module is the whole public
surface (pinned by tests/test_public_api.py). Names are imported on first
use, so the daemons (``python -m miniray.raylet`` ...) start quickly.
"""
import os as _os

# gRPC's C core logs connection churn (peers exiting) at INFO; keep quiet.
_os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
# gRPC's fork handlers cannot stop the threads of its asyncio stack: with
# them on, a child forked by the user's code (multiprocessing.Pool after
# init) intermittently crashes in them. Off, a forked child that never uses
# gRPC is safe (it is not safe to use miniray from a forked child either way,
# as with Ray). Read by the C core when it starts, so set before any import.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


def _grpc_experiments() -> None:
    """gRPC's EventEngine client and listener hand each message through two
    more threads (an I/O thread, then the completion-queue poller) than the
    older poller does: a round trip on a stream costs about 320 us instead
    of 225 us here (docs/performance.md). Turned off for the grpcio versions
    where those experiments exist (an unknown name is logged as an error),
    unless the user set GRPC_EXPERIMENTS. Read without importing grpc."""
    if "GRPC_EXPERIMENTS" in _os.environ:
        return
    import importlib.util
    import re
    spec = importlib.util.find_spec("grpc")
    try:
        path = _os.path.join(spec.submodule_search_locations[0], "_grpcio_metadata.py")
        with open(path) as file:
            found = re.search(r"(\d+)\.(\d+)\.", file.read())
    except (AttributeError, OSError, TypeError, IndexError):
        return
    if found and (1, 85) <= (int(found[1]), int(found[2])) <= (1, 89):
        _os.environ["GRPC_EXPERIMENTS"] = "-event_engine_client,-event_engine_listener"


_grpc_experiments()
del _os, _grpc_experiments   # only miniray's own modules are reachable as attributes

__version__ = "0.1.0"

_EXPORTS = {
    # Ray's typed ids, exported at the top level as Ray does.
    "ActorID": "miniray.common.ids",
    "FunctionID": "miniray.common.ids",
    "JobID": "miniray.common.ids",
    "NodeID": "miniray.common.ids",
    "PlacementGroupID": "miniray.common.ids",
    "TaskID": "miniray.common.ids",
    "WorkerID": "miniray.common.ids",
    "DynamicObjectRefGenerator": "miniray.core_worker.generator",
    "ObjectRef": "miniray.core_worker.object_ref",
    "ObjectRefGenerator": "miniray.core_worker.generator",
    "available_resources": "miniray.api",
    "cancel": "miniray.api",
    "cluster_resources": "miniray.api",
    "get": "miniray.api",
    "get_gpu_ids": "miniray.api",
    "get_actor": "miniray.api",
    "kill": "miniray.api",
    "method": "miniray.actor",
    "get_runtime_context": "miniray.runtime_context",
    "init": "miniray.api",
    "is_initialized": "miniray.api",
    "nodes": "miniray.api",
    "put": "miniray.api",
    "remote": "miniray.decorators",
    "shutdown": "miniray.api",
    "timeline": "miniray.util.state",
    "wait": "miniray.api",
}
_SUBMODULES = {"exceptions", "util", "testing", "actor", "runtime_context", "job_config",
               "dag"}
# Older names Ray still answers to.
_ALIASES = {"ObjectID": "ObjectRef"}

__all__ = sorted([*_EXPORTS, *_ALIASES, "__version__", "exceptions"])


def __getattr__(name):
    import importlib
    module = _EXPORTS.get(name)
    if name in _ALIASES:
        value = __getattr__(_ALIASES[name])
    elif module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"miniray.{name}")
    else:
        raise AttributeError(f"module 'miniray' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
