"""The driver-facing API: init/shutdown, get/put/wait/cancel, cluster info.

One module-level session per process: the CoreWorker and, when this
driver started the cluster itself, the node processes it must stop.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc

from miniray.common import config
from miniray.common.resources import validate_request
from miniray.common.validation import check_amount
from miniray.core_worker.core_worker import DRIVER, WORKER, CoreWorker, ownerless
from miniray.core_worker.generator import ObjectRefGenerator
from miniray.core_worker.object_ref import ObjectRef
from miniray.core_worker import object_ref as object_ref_module
from miniray import node as node_module
from miniray.rpc import auth
from miniray.protocol import raylet_pb2

from miniray import __version__

_INIT_OPTIONS = {
    "include_dashboard", "dashboard_host", "dashboard_port", "job_config",
    "configure_logging", "logging_level", "logging_format", "logging_config",
    "log_to_driver", "runtime_env", "labels", "local_mode",
    "enable_resource_isolation", "system_reserved_cpu", "system_reserved_memory",
    "_temp_dir", "_system_config", "_node_ip_address", "_memory",
}


@dataclass
class RayContext(Mapping):
    """What init() returns: as in Ray, a read-only mapping of the address
    info (``ctx["node_ip_address"]``, ``ctx.get(...)``, ``"webui_url" in
    ctx``), and a context manager that shuts down on exit."""
    address_info: dict = field(default_factory=dict)
    dashboard_url: str | None = None
    python_version: str = ".".join(map(str, sys.version_info[:3]))
    ray_version: str = __version__

    @property
    def address(self) -> str:
        return self.address_info.get("address", "")

    def __getitem__(self, key):
        return self.address_info[key]

    def __iter__(self):
        return iter(self.address_info)

    def __len__(self) -> int:
        return len(self.address_info)

    __hash__ = object.__hash__          # a Mapping, yet one session's identity

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()

    def disconnect(self):
        shutdown()


class _Session:
    def __init__(self, worker: CoreWorker, node, context: RayContext):
        self.worker = worker
        self.node = node               # NodeProcesses we started, or None
        self.context = context


_session: _Session | None = None
_lock = threading.RLock()


def is_initialized() -> bool:
    return _session is not None or object_ref_module.core_worker() is not None


def _worker() -> CoreWorker:
    worker = object_ref_module.core_worker()
    if worker is None:
        from miniray.exceptions import RaySystemError
        raise RaySystemError("miniray is not initialized: call miniray.init() first")
    return worker


def ensure_initialized() -> CoreWorker:
    """Ray starts a local cluster on first use of the API; so do we."""
    worker = object_ref_module.core_worker()
    if worker is None:
        init()
        worker = object_ref_module.core_worker()
    return worker


def init(address: str | None = None, *, num_cpus: int | None = None,
         num_gpus: int | None = None, resources: dict | None = None,
         object_store_memory: int | None = None, namespace: str | None = None,
         ignore_reinit_error: bool = False, **kwargs) -> RayContext:
    global _session
    unknown = set(kwargs) - _INIT_OPTIONS
    if unknown:
        raise RuntimeError(f"Unknown keyword argument(s): {', '.join(sorted(unknown))}")
    with _lock:
        if is_initialized():
            if ignore_reinit_error:
                return _session.context if _session else RayContext()
            raise RuntimeError(
                "Maybe you called miniray.init twice by accident? This error can be "
                "suppressed by passing in 'ignore_reinit_error=True' or by calling "
                "'miniray.shutdown()' prior to 'miniray.init()'.")
        job_config = kwargs.get("job_config")
        if job_config is not None:
            from miniray.job_config import JobConfig
            if not isinstance(job_config, JobConfig):
                raise TypeError(f"job_config must be a JobConfig, got {type(job_config)}")
            if namespace is None:        # as in Ray: init's namespace wins
                namespace = job_config.ray_namespace
        runtime_env = _job_runtime_env(kwargs.get("runtime_env"), job_config)
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError(f"namespace must be a string, got {namespace!r}")
        if namespace == "":
            raise ValueError("namespace must not be an empty string")
        for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus),
                            ("object_store_memory", object_store_memory)):
            if value is not None:
                check_amount(name, value, what="init() argument")
        if resources is not None:
            validate_request(resources)
        if kwargs.get("_temp_dir") is not None:
            _use_temp_dir(kwargs["_temp_dir"])
        if address in (None, "auto"):
            # As Ray: the environment's address, when none (or "auto") is given.
            address = os.environ.get("MINIRAY_ADDRESS") or os.environ.get("RAY_ADDRESS") \
                or address
        if address is None:
            address = _running_cluster()    # as Ray: the last `miniray start`
        if address == "local":
            address = None
        node = None
        if address is None:
            from miniray.common import system_config
            settings = system_config.to_settings(kwargs.get("_system_config"))
            _apply_driver_settings(settings)
            node = node_module.start_head(
                num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                object_store_memory=object_store_memory,
                env=system_config.to_env(settings), **_dashboard_options(kwargs))
            gcs_address = node.gcs_address
        else:
            if num_cpus is not None or num_gpus is not None or resources \
                    or object_store_memory:
                raise ValueError(
                    "When connecting to an existing cluster, num_cpus, num_gpus, "
                    "resources and object_store_memory must not be provided.")
            if kwargs.get("_system_config"):
                raise ValueError("When connecting to an existing cluster, "
                                 "_system_config must not be provided.")
            gcs_address = _resolve_address(address)
            auth.load_for_cluster(gcs_address)
        try:
            raylet_address = _local_raylet(gcs_address)
            worker = CoreWorker(mode=DRIVER, raylet_address=raylet_address,
                                gcs_address=gcs_address, namespace=namespace or "",
                                code_search_path=_code_search_path(job_config),
                                default_actor_detached=job_config is not None and
                                job_config.default_actor_lifetime == "detached",
                                ip=raylet_address.rsplit(":", 1)[0],
                                runtime_env=runtime_env)
        except BaseException:
            if node is not None:
                node.stop()
            raise
        if node is None:        # a driver of a running cluster takes its _system_config
            from miniray.common import system_config
            _apply_driver_settings(system_config.adopt(worker.cluster_system_config))
        dashboard_url = (node.dashboard_url or None) if node is not None else \
            _recorded_dashboard(worker)
        # Ray's keys; the raylet holds the node's object store (no socket
        # of its own) and serves /metrics through the dashboard's port.
        context = RayContext(address_info={
            "address": gcs_address, "gcs_address": gcs_address,
            "node_ip_address": config.NODE_IP,
            "raylet_address": raylet_address, "raylet_socket_name": raylet_address,
            "object_store_address": raylet_address, "redis_address": None,
            "node_id": worker.node_id.hex(), "session_dir": worker.session_dir,
            "webui_url": dashboard_url,
            "metrics_export_port": int(dashboard_url.rsplit(":", 1)[1])
            if dashboard_url else None,
            "dashboard_agent_listen_port": None},
            dashboard_url=dashboard_url)
        _session = _Session(worker, node, context)
        worker.prepare_runtime_env_on_nodes()
        _announce(node is not None, dashboard_url)
        return context


def _job_runtime_env(given, job_config) -> dict:
    """The job's runtime env, checked: init's ``runtime_env`` (or the
    JobConfig's), merged with the one a submitted job was given
    (MINIRAY_JOB_RUNTIME_ENV, set by the job supervisor). As in Ray, the two
    may not set one field to different values."""
    from miniray.runtime_env.runtime_env import merge, validate
    if given is None and job_config is not None:
        given = job_config.runtime_env or None
    env = validate(given)
    submitted = os.environ.get("MINIRAY_JOB_RUNTIME_ENV")
    if submitted:
        job_env = validate(json.loads(submitted))
        for key, value in env.items():
            if key == "env_vars":
                clash = {k for k, v in value.items()
                         if job_env.get("env_vars", {}).get(k, v) != v}
            else:
                clash = key in job_env and job_env[key] != value
            if clash:
                raise ValueError(
                    f"init(runtime_env=...) sets {key!r} to {value!r} but the submitted "
                    f"job's runtime_env sets it to {job_env.get(key)!r}; set it in "
                    f"one place only")
        env = merge(job_env, env)
    return env


def _dashboard_options(kwargs: dict) -> dict:
    """init()'s dashboard arguments (Ray's names), checked."""
    include = kwargs.get("include_dashboard")
    host = kwargs.get("dashboard_host")
    port = kwargs.get("dashboard_port")
    if include is not None and not isinstance(include, bool):
        raise TypeError(f"include_dashboard must be a bool or None, got {include!r}")
    if host is not None and (not isinstance(host, str) or not host):
        raise TypeError(f"dashboard_host must be a host name or address, got {host!r}")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 <= port <= 65535):
        raise ValueError(f"dashboard_port must be a port number, got {port!r}")
    return {"include_dashboard": include, "dashboard_host": host, "dashboard_port": port}


def _recorded_dashboard(worker) -> str | None:
    """The address the cluster's dashboard recorded in the GCS, if any."""
    from miniray.dashboard.source import KV_KEY, KV_NAMESPACE
    from miniray.protocol import gcs_pb2
    try:
        reply = worker.call("gcs", "KVGet", gcs_pb2.KVGetRequest(
            namespace=KV_NAMESPACE, key=KV_KEY), timeout=5)
    except Exception:           # noqa: BLE001 - the URL is only informative
        return None
    return reply.value.decode() if reply.found else None


def _announce(started: bool, dashboard_url: str | None) -> None:
    """As Ray: say where the dashboard is (with the token to open it, as
    Jupyter prints its URL: the page needs it when auth is on)."""
    if not dashboard_url:
        return
    token = auth.current_token()
    # A submitted job's driver writes to its job log: no token in there.
    if os.environ.get("MINIRAY_JOB_SUBMISSION_ID"):
        token = None
    url = f"http://{dashboard_url}" + (f"/?token={token}" if token else "")
    what = "Started a local miniray instance." if started else \
        "Connected to a miniray cluster."
    print(f"{what} View the dashboard at {url}", file=sys.stderr, flush=True)


def _use_temp_dir(temp_dir) -> None:
    """init(_temp_dir=...), as in Ray: this process's sessions and cluster
    files live there (checked like MINIRAY_TEMP_DIR, see common/paths.py)."""
    if not isinstance(temp_dir, (str, os.PathLike)):
        raise TypeError(f"_temp_dir must be a path, got {type(temp_dir).__name__}")
    config.TEMP_DIR = os.path.abspath(os.fspath(temp_dir))
    os.environ["MINIRAY_TEMP_DIR"] = config.TEMP_DIR      # and its children's


def _running_cluster() -> str | None:
    """The address of a live cluster started with `miniray start`, if any."""
    found = node_module.read_current_cluster()
    if not found:
        return None
    # Its token first: a live cluster refuses a probe without it (a new
    # head started instead makes a token of its own).
    auth.load_for_cluster(found)
    try:
        node_module.get_nodes(found, timeout=1)
    except Exception:
        return None          # a stale file: that cluster is gone
    return found


def _resolve_address(address: str) -> str:
    if address == "auto":
        found = node_module.auto_cluster_address()
        if not found:
            raise ConnectionError(
                "Could not find any running miniray instance. Please specify the "
                "one to connect to by setting `address` or start one with "
                "`miniray start --head`.")
        return found
    if address.startswith("ray://"):
        raise ValueError("Ray Client (ray://) addresses are not supported")
    if ":" not in address:
        raise ValueError(f"address must look like host:port, got {address!r}")
    return address


def _local_raylet(gcs_address: str) -> str:
    try:
        cluster = node_module.get_cluster(gcs_address, wait_s=node_module.JOIN_WAIT_S)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise auth.refused(gcs_address, "this driver") from None
        raise ConnectionError(
            f"Could not connect to the miniray cluster at {gcs_address}: "
            f"{exc.code().name}") from None
    except Exception as exc:
        raise ConnectionError(
            f"Could not connect to the miniray cluster at {gcs_address}: {exc}") from None
    node_module.check_versions(cluster, gcs_address)
    nodes = [n for n in cluster.nodes if n.alive]
    if not nodes:
        raise ConnectionError(f"The cluster at {gcs_address} has no live nodes")
    nodes.sort(key=lambda n: (n.ip != config.NODE_IP, not n.is_head))   # ours first
    return f"{nodes[0].ip}:{nodes[0].raylet_port}"


def _code_search_path(job_config=None) -> list[str]:
    """Workers import the driver's modules from the same places: the script's
    directory and the working directory first, then the job config's
    ``code_search_path``, then the driver's sys.path."""
    paths = []
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    # As Python itself (and Ray): ``python -m pkg.mod`` puts the working
    # directory on sys.path, not the module's own directory.
    if main_file and getattr(main, "__spec__", None) is None:
        paths.append(os.path.dirname(os.path.abspath(main_file)))
    paths.append(os.getcwd())
    if job_config is not None:
        paths += [os.path.abspath(p) for p in job_config.code_search_path]
    paths += [os.path.abspath(p) for p in sys.path if p and os.path.isdir(p)]
    return list(dict.fromkeys(paths))


# config constants init(_system_config=...) changed in this process, with
# their values before: shutdown() puts them back.
_driver_overrides: dict = {}


def _apply_driver_settings(settings: dict) -> None:
    for name, value in settings.items():
        _driver_overrides.setdefault(name, getattr(config, name))
        setattr(config, name, value)


def _restore_driver_settings() -> None:
    for name, value in _driver_overrides.items():
        setattr(config, name, value)
    _driver_overrides.clear()


def shutdown() -> None:
    global _session
    with _lock:
        _restore_driver_settings()
        session, _session = _session, None
        if session is None:
            return
        worker = session.worker
        if session.node is None:
            try:
                worker.call("raylet", "DisconnectWorker",
                            raylet_pb2.DisconnectWorkerRequest(worker_id=worker.worker_id),
                            timeout=5)
            except Exception:
                pass
        worker.shutdown()
        if session.node is not None:
            session.node.stop()


atexit.register(shutdown)


# --- objects -------------------------------------------------------------------
def put(value, *, _owner=None) -> ObjectRef:
    """Store ``value`` in the object store. ``_owner``: an actor that owns
    the object instead of this process, so it outlives this process for as
    long as the actor lives and someone holds a reference."""
    worker = ensure_initialized()
    if _owner is None:
        return worker.put(value)
    from miniray.actor import ActorHandle
    if not isinstance(_owner, ActorHandle):
        raise TypeError(f"Expect an `ActorHandle` as _owner, but got: {type(_owner)}")
    return worker.put(value, owner=_actor_address(worker, _owner))


def _actor_address(worker, handle):
    """The address of a live actor's process (waiting while it starts)."""
    from miniray.common.address import WorkerAddress
    from miniray.exceptions import ActorDiedError
    from miniray.protocol import common_pb2, gcs_pb2
    reply = worker.call("gcs", "GetActorInfo",
                        gcs_pb2.GetActorInfoRequest(actor_id=handle._actor_id))
    while reply.found and reply.info.state not in (common_pb2.ALIVE, common_pb2.DEAD):
        reply = worker.call("gcs", "WaitActorChange", gcs_pb2.WaitActorChangeRequest(
            actor_id=handle._actor_id, known_state=reply.info.state,
            known_num_restarts=reply.info.num_restarts, timeout=30))
    if not reply.found or reply.info.state != common_pb2.ALIVE:
        raise ActorDiedError(f"the owner actor {handle._actor_id.hex()} is not alive")
    return WorkerAddress.from_proto(reply.info.address)


def get(object_refs, *, timeout: float | None = None):
    single = isinstance(object_refs, ObjectRef)
    refs = [object_refs] if single else object_refs
    if not isinstance(refs, list):
        if isinstance(object_refs, ObjectRefGenerator):
            return object_refs            # as Ray does: the refs come from iterating it
        raise ValueError(
            f"Invalid type of object refs, {type(object_refs)}, is given. "
            "'object_refs' must either be an ObjectRef or a list of ObjectRefs.")
    for ref in refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"Attempting to call `get` on the value {ref!r}, which is "
                            "not an ObjectRef.")
        if ref.owner is None:
            raise ValueError(ownerless(ref))
    if timeout is not None and not isinstance(timeout, (int, float)):
        raise ValueError(f"'timeout' must be a number or None, got {timeout!r}")
    if timeout is not None and timeout < 0:
        timeout = None            # as in Ray: a negative timeout waits forever
    values = _worker().get(refs, timeout)
    return values[0] if single else values


def wait(object_refs, *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True):
    if isinstance(object_refs, (ObjectRef, ObjectRefGenerator)):
        raise TypeError("wait() expected a list of ObjectRef or ObjectRefGenerator, "
                        f"got a single {type(object_refs).__name__} {object_refs}")
    if not isinstance(object_refs, list):
        raise TypeError("wait() expected a list of ObjectRef or ObjectRefGenerator, "
                        f"got {type(object_refs)}")
    for ref in object_refs:
        if isinstance(ref, ObjectRefGenerator):
            continue
        if not isinstance(ref, ObjectRef):
            raise TypeError("wait() expected a list of ObjectRef or ObjectRefGenerator, "
                            f"got list containing {type(ref)}")
        if ref.owner is None:
            raise ValueError(ownerless(ref))
    _check_timeout(timeout)
    if not object_refs:
        return [], []
    if len(object_refs) != len(set(object_refs)):
        raise ValueError("Wait requires a list of unique ray_waitables.")
    if num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns}.")
    if num_returns > len(object_refs):
        raise ValueError("num_returns cannot be greater than the number of "
                         f"ray_waitables provided to ray.wait. ({num_returns} > "
                         f"{len(object_refs)})")
    if any(isinstance(ref, ObjectRefGenerator) for ref in object_refs):
        return _wait_with_generators(object_refs, num_returns, timeout, fetch_local)
    return _worker().wait(object_refs, num_returns, timeout, fetch_local)


# How often a wait that includes generators looks at them again.
_GENERATOR_POLL_S = 0.02


def _wait_with_generators(waitables: list, num_returns: int, timeout, fetch_local):
    """As Ray: a generator is ready when its next item is (or its end)."""
    import time
    worker = _worker()
    refs = [w for w in waitables if isinstance(w, ObjectRef)]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        ready_refs = set(worker.wait(refs, len(refs), 0, fetch_local)[0]) if refs else set()
        ready = [w for w in waitables if (w in ready_refs if isinstance(w, ObjectRef)
                                          else w._has_next_or_end())]
        left = None if deadline is None else deadline - time.monotonic()
        if len(ready) >= num_returns or (left is not None and left <= 0):
            ready = ready[:num_returns]
            chosen = {id(w) for w in ready}
            return ready, [w for w in waitables if id(w) not in chosen]
        pause = _GENERATOR_POLL_S if left is None else min(_GENERATOR_POLL_S, left)
        if refs and len(ready_refs) < len(refs):
            worker.wait(refs, len(ready_refs) + 1, pause, fetch_local)
        else:
            time.sleep(pause)


def cancel(ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    if isinstance(ref, ObjectRefGenerator):
        ref = ObjectRef(_first_return(ref.task_id()), _worker().address)
    if not isinstance(ref, ObjectRef):
        raise TypeError("miniray.cancel() only supported for object refs. For actors, "
                        f"try miniray.kill(). Got: {type(ref)}.")
    _worker().cancel(ref, force, recursive)


def _first_return(task_id):
    from miniray.common.ids import ObjectID
    return ObjectID.for_return(task_id, 1)


def _check_timeout(timeout) -> None:
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"The 'timeout' argument must be nonnegative. Received {timeout}")


# --- cluster information ------------------------------------------------------------
def nodes() -> list[dict]:
    worker = _worker()
    result = []
    for n in node_module.get_nodes(worker.gcs_address):
        result.append({
            "NodeID": n.node_id.hex(), "Alive": n.alive, "alive": n.alive,
            "NodeManagerAddress": n.ip, "NodeManagerHostname": n.hostname,
            "NodeManagerPort": n.raylet_port, "NodeName": n.ip,
            "ObjectStoreSocketName": n.store_directory,
            "Resources": dict(n.resources_total) if n.alive else {},
            "Labels": dict(n.labels), "IsHead": n.is_head,
            # The raylet serves the object manager and the store: one port.
            "RayletSocketName": f"{n.ip}:{n.raylet_port}",
            "ObjectManagerPort": n.raylet_port,
        })
    return result


def cluster_resources() -> dict:
    totals: dict = {}
    for n in node_module.get_nodes(_worker().gcs_address):
        if n.alive:
            for k, v in n.resources_total.items():
                totals[k] = totals.get(k, 0.0) + v
    return totals


def available_resources() -> dict:
    worker = _worker()
    local = worker.call("raylet", "GetNodeStats", raylet_pb2.GetNodeStatsRequest())
    totals: dict = {}
    for n in node_module.get_nodes(worker.gcs_address):
        if not n.alive:
            continue
        source = local.resources_available if n.node_id == worker.node_id \
            else n.resources_available
        for k, v in source.items():
            totals[k] = totals.get(k, 0.0) + v
    return {k: v for k, v in totals.items() if v > 0}


def get_gpu_ids() -> list:
    """The GPU ids assigned to the current task or actor ([] in a driver)."""
    from miniray.core_worker import accelerators
    _worker()
    return accelerators.gpu_ids()


def is_worker_process() -> bool:
    worker = object_ref_module.core_worker()
    return worker is not None and worker.mode == WORKER


# --- actors ---------------------------------------------------------------------
def kill(actor, *, no_restart: bool = True) -> None:
    """Kill an actor at once (queued and running calls fail)."""
    from miniray.actor import ActorHandle
    from miniray.protocol import gcs_pb2
    if not isinstance(actor, ActorHandle):
        raise ValueError("miniray.kill() only supported for actors. For tasks, try "
                         f"miniray.cancel(). Got: {type(actor)}.")
    _worker().call("gcs", "KillActor", gcs_pb2.KillActorRequest(
        actor_id=actor._actor_id, force=True, no_restart=no_restart))


def get_actor(name: str, namespace: str | None = None):
    """A handle to the live actor called ``name`` in ``namespace``."""
    from miniray.actor import ActorHandle
    from miniray.protocol import common_pb2, gcs_pb2
    if not isinstance(name, str) or not name:
        raise ValueError("Please supply a non-empty value to get_actor")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be None or a string, got {type(namespace)}")
    worker = ensure_initialized()
    reply = worker.call("gcs", "GetActorInfo", gcs_pb2.GetActorInfoRequest(
        name=name, namespace=worker.namespace if namespace is None else namespace))
    if not reply.found or reply.info.state == common_pb2.DEAD:
        raise ValueError(
            f"Failed to look up actor with name '{name}'. This could because 1. You "
            "are trying to look up a named actor you didn't create. 2. The named "
            "actor died. 3. You did not use a namespace matching the namespace of "
            "the actor.")
    return ActorHandle._from_info(reply.info)


def list_named_actors(all_namespaces: bool = False) -> list:
    from miniray.protocol import gcs_pb2
    worker = _worker()
    reply = worker.call("gcs", "ListNamedActors", gcs_pb2.ListNamedActorsRequest(
        all_namespaces=all_namespaces, namespace=worker.namespace))
    if all_namespaces:
        return [{"name": a.name, "namespace": a.namespace} for a in reply.actors]
    return [a.name for a in reply.actors]
