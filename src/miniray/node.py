"""Starting and stopping the processes of a node (GCS and raylet).

Used by ``miniray.init()`` for a local cluster owned by the driver, by the
``miniray start`` CLI for long-lived daemons, and by miniray.testing.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass, field

import grpc
import psutil

from miniray.common import config, paths
from miniray.common.ids import NodeID
from miniray.protocol import gcs_pb2, gcs_pb2_grpc
from miniray.rpc import auth
from miniray.rpc.channels import authenticated, sync_channel

log = logging.getLogger("miniray")


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free port")


def reserve_port(preferred: int | None = None, host: str = "127.0.0.1") -> socket.socket:
    """A socket bound (not listening) to ``preferred`` or a free port, with
    SO_REUSEADDR: while it is open, the kernel never hands that port to a
    bind to port 0 (a worker's server), yet a gRPC server (which also sets
    SO_REUSEADDR) can still listen on it. Whoever keeps it open holds the
    port for a server that starts, or restarts, later."""
    for port in ([preferred] if preferred else []) + [0]:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            continue
        return sock
    raise OSError("no free port")


def new_session_dir() -> str:
    """A new private (0700) session directory with its ``logs``, under the
    user's temp root."""
    name = time.strftime("session_%Y-%m-%d_%H-%M-%S") + f"_{os.getpid()}_{os.urandom(4).hex()}"
    path = os.path.join(paths.temp_root(), name)
    os.mkdir(path, paths.PRIVATE_DIR_MODE)          # never an existing one
    os.mkdir(os.path.join(path, "logs"), paths.PRIVATE_DIR_MODE)
    return path


def default_resources(num_cpus=None, num_gpus=None, resources=None,
                      object_store_memory=None, memory=None, is_head=False) -> dict:
    from miniray.common.resources import validate_request
    from miniray.raylet.raylet import default_object_store_memory
    custom = dict(resources or {})
    for reserved in ("CPU", "GPU"):
        if reserved in custom:
            raise ValueError(
                f"Use the 'num_{reserved.lower()}s' argument instead of "
                f"'{reserved}' in 'resources'")
    validate_request(custom)
    store = int(object_store_memory or default_object_store_memory())
    total = {
        "CPU": float(os.cpu_count() if num_cpus is None else num_cpus),
        "memory": float(memory if memory is not None
                        else int(psutil.virtual_memory().available * 0.7)),
        "object_store_memory": float(store),
        f"node:{config.NODE_IP}": 1.0,
    }
    if num_gpus:
        total["GPU"] = float(num_gpus)
    if is_head:
        total["node:__internal_head__"] = 1.0
    total.update({k: float(v) for k, v in custom.items()})
    return {k: v for k, v in total.items() if v}


@dataclass
class NodeProcesses:
    """Processes this process started, and how to reach the cluster."""
    gcs_address: str
    session_dir: str
    node_id: NodeID
    processes: list = field(default_factory=list)
    is_head: bool = False           # runs the GCS: owns the cluster's files
    cluster_dir: str = ""           # the head's: the cluster's private directory
    dashboard_url: str = ""         # host:port of the head's dashboard, if started

    def stop(self, timeout: float = 5.0) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for proc in self.processes:         # what its workers printed last is shown
            source = _forwarded_output.get(proc)
            if source is not None:
                source.wait_closed(max(0.1, min(2.0, deadline - time.monotonic())))
        remove_session_files(self.session_dir)
        if self.cluster_dir:          # as made at start, whatever the settings now
            shutil.rmtree(self.cluster_dir, ignore_errors=True)


def remove_session_files(session_dir: str) -> None:
    name = os.path.basename(session_dir)
    for path in glob.glob(os.path.join(config.SHM_ROOT, f"miniray-{name}-*")):
        shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(session_dir, ignore_errors=True)




# Processes whose output the driver shows itself (see _spawn).
_forwarded_output: weakref.WeakKeyDictionary[subprocess.Popen, object] = \
    weakref.WeakKeyDictionary()


def _spawn(args: list[str], log_path: str | None, pass_fds=(),
           forward_output: bool = False, env: dict | None = None) -> subprocess.Popen:
    """Start ``python -m args``: output to ``log_path`` (a daemon), else to
    the driver's terminal; ``forward_output``: through pipes this process
    reads (core_worker/driver_output.py), so its workers' lines are written
    by the driver, above any progress bars."""
    out = paths.open_private_log(log_path) if log_path else None
    pipes = [os.pipe(), os.pipe()] if forward_output and out is None else []
    stdout, stderr = (pipes[0][1], pipes[1][1]) if pipes else (out, out)
    try:
        # The token travels in the environment: never in the arguments (ps).
        proc = subprocess.Popen([sys.executable, "-m", *args], stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr, close_fds=True,
                                pass_fds=pass_fds, start_new_session=log_path is not None,
                                env={**auth.child_env(), **(env or {})})
    except BaseException:
        for read_end, _ in pipes:
            os.close(read_end)
        raise
    finally:
        if out is not None:
            os.close(out)
        for _, write_end in pipes:
            os.close(write_end)
    if pipes:
        from miniray.core_worker import driver_output
        _forwarded_output[proc] = driver_output.forward_process_output(
            pipes[0][0], pipes[1][0])
    return proc


def start_gcs(session_dir: str, reserved: socket.socket, *, daemon: bool,
              env: dict | None = None) -> subprocess.Popen:
    """``reserved``: the GCS's port (reserve_port); its supervisor keeps it
    for the cluster's life, so no other process can take the port between
    now and the GCS listening, or while a dead GCS restarts."""
    port = reserved.getsockname()[1]
    args = ["miniray.gcs", "--port", str(port), "--session-dir", session_dir,
            "--reserved-fd", str(reserved.fileno())]
    if not daemon:
        args.append("--die-with-parent")
    log = os.path.join(session_dir, "logs", "gcs.log") if daemon else None
    return _spawn(args, log, pass_fds=(reserved.fileno(),), env=env)


def start_raylet(session_dir: str, gcs_address: str, node_id: NodeID,
                 resources: dict, *, is_head: bool, daemon: bool,
                 port: int = 0, host: str | None = None,
                 env: dict | None = None) -> subprocess.Popen:
    store = int(resources.get("object_store_memory", 0))
    args = ["miniray.raylet", "--gcs-address", gcs_address, "--node-id", node_id.hex(),
            "--session-dir", session_dir, "--port", str(port),
            "--resources", json.dumps(resources), "--object-store-memory", str(store),
            "--host", host or config.NODE_IP]
    if is_head:
        args.append("--head")
    if not daemon:
        args.append("--die-with-parent")
    log = os.path.join(session_dir, "logs", f"raylet-{node_id.hex()[:8]}.log") \
        if daemon else None
    return _spawn(args, log, forward_output=not daemon, env=env)


def start_dashboard(session_dir: str, gcs_address: str, host: str, port: int, *,
                    daemon: bool) -> tuple[subprocess.Popen, str]:
    """The head's dashboard (miniray/dashboard/) on ``port`` or, if that is
    taken, the next free one, as Ray does; returns it and its host:port.
    The socket is bound here and handed over, so the port cannot be taken
    in between."""
    from miniray.dashboard.ports import listen
    sock = listen(host, port)
    chosen = sock.getsockname()[1]
    if port and chosen != port:
        log.warning("The dashboard port %d is in use: the dashboard uses port %d "
                    "instead (choose one with dashboard_port= or --dashboard-port).",
                    port, chosen)
    args = ["miniray.dashboard", "--gcs-address", gcs_address, "--host", host,
            "--port", str(chosen), "--listen-fd", str(sock.fileno()),
            "--session-dir", session_dir]
    if not daemon:
        args += ["--die-with-parent", "--parent-pid", str(os.getpid())]
    log_path = os.path.join(session_dir, "logs", "dashboard.log") if daemon else None
    shown = f"[{host}]" if ":" in host else host
    try:
        return _spawn(args, log_path, pass_fds=(sock.fileno(),)), f"{shown}:{chosen}"
    finally:
        sock.close()


def wait_for_node(gcs_address: str, node_id: NodeID, processes, timeout: float = 30.0):
    """Block until the raylet of ``node_id`` has registered with the GCS."""
    deadline = time.monotonic() + timeout
    with sync_channel(gcs_address) as channel:
        stub = authenticated(gcs_pb2_grpc.GcsServiceStub(channel))
        while True:
            for proc in processes:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"a miniray process exited during startup (code {proc.returncode}): "
                        f"{' '.join(proc.args[2:4])}")
            try:
                reply = stub.GetAllNodes(gcs_pb2.GetAllNodesRequest(), timeout=1,
                                         wait_for_ready=True)
                for node in reply.nodes:
                    if node.node_id == node_id and node.alive:
                        return node
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise auth.refused(gcs_address, "this node") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"the raylet did not register within {timeout}s")
            time.sleep(0.005)


def _started(node: NodeProcesses) -> NodeProcesses:
    """Wait for the node's raylet to register; stop everything if it fails."""
    try:
        wait_for_node(node.gcs_address, node.node_id, node.processes)
    except BaseException:
        node.stop(timeout=2)
        raise
    return node


def start_head(*, port: int | None = None, daemon: bool = False,
               include_dashboard: bool | None = None, dashboard_host: str | None = None,
               dashboard_port: int | None = None, env: dict | None = None,
               **resource_args) -> NodeProcesses:
    """Start a GCS and a head raylet, then the dashboard (unless
    ``include_dashboard`` is False); returns once the raylet is registered.
    ``env``: extra environment of the GCS and raylet (and so of the
    raylet's workers): knobs set by ``_system_config``."""
    resources = default_resources(is_head=True, **resource_args)
    reserved = reserve_port(port, config.NODE_IP)
    try:
        gcs_port = reserved.getsockname()[1]
        if port and gcs_port != port:
            raise OSError(f"port {port} is already in use")
        session_dir = new_session_dir()
        gcs_address = f"{config.NODE_IP}:{gcs_port}"
        auth.create_cluster_token(gcs_address)       # this new cluster's secret
        node_id = NodeID.from_random()
        procs = [start_gcs(session_dir, reserved, daemon=daemon, env=env),
                 start_raylet(session_dir, gcs_address, node_id, resources,
                              is_head=True, daemon=daemon, env=env)]
    finally:
        reserved.close()             # the GCS's supervisor holds it now
    node = _started(NodeProcesses(gcs_address, session_dir, node_id, procs, is_head=True,
                                  cluster_dir=paths.cluster_auth_dir(gcs_address,
                                                                     create=False)))
    if include_dashboard is not False:
        dashboard, node.dashboard_url = start_dashboard(
            session_dir, gcs_address, dashboard_host or config.DEFAULT_DASHBOARD_HOST,
            config.DEFAULT_DASHBOARD_PORT if dashboard_port is None else dashboard_port,
            daemon=daemon)
        node.processes.append(dashboard)
    return node


# A node or driver joining while the GCS restarts waits this long for it.
JOIN_WAIT_S = 15.0


def start_worker_node(gcs_address: str, *, daemon: bool = False,
                      node_ip_address: str | None = None, env: dict | None = None,
                      **resource_args) -> NodeProcesses:
    """Start a raylet that joins the cluster whose GCS is at ``gcs_address``."""
    resources = default_resources(**resource_args)
    auth.load_for_cluster(gcs_address)
    check_versions(get_cluster(gcs_address, wait_s=JOIN_WAIT_S), gcs_address)
    if node_ip_address:
        resources.pop(f"node:{config.NODE_IP}", None)
        resources[f"node:{node_ip_address}"] = 1.0
    session_dir = new_session_dir()
    node_id = NodeID.from_random()
    procs = [start_raylet(session_dir, gcs_address, node_id, resources,
                          is_head=False, daemon=daemon, host=node_ip_address, env=env)]
    return _started(NodeProcesses(gcs_address, session_dir, node_id, procs))


def get_nodes(gcs_address: str, timeout: float = 5.0) -> list:
    return list(get_cluster(gcs_address, timeout).nodes)


def get_cluster(gcs_address: str, timeout: float = 5.0, wait_s: float = 0.0):
    """The GCS's GetAllNodes reply: the nodes, and the cluster's versions.
    ``wait_s``: keep trying that long while the GCS does not answer (it
    may be restarting)."""
    deadline = time.monotonic() + wait_s
    with sync_channel(gcs_address) as channel:
        stub = authenticated(gcs_pb2_grpc.GcsServiceStub(channel))
        while True:
            try:
                return stub.GetAllNodes(gcs_pb2.GetAllNodesRequest(), timeout=timeout)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or \
                        time.monotonic() > deadline:
                    raise
            time.sleep(0.1)


def check_versions(reply, gcs_address: str) -> None:
    """As Ray does: a driver or node must run the cluster's miniray and
    Python versions (objects and functions travel as pickles)."""
    import miniray
    python = "%d.%d" % sys.version_info[:2]
    if reply.version and (reply.version, reply.python_version) != \
            (miniray.__version__, python):
        raise RuntimeError(
            f"Version mismatch: the miniray cluster at {gcs_address} runs miniray "
            f"{reply.version} on Python {reply.python_version}, this process "
            f"miniray {miniray.__version__} on Python {python}. Use the same "
            f"versions on every node and driver.")


def forget_current_cluster() -> None:
    """Remove the address file of `miniray start`."""
    try:
        os.unlink(paths.current_cluster_file())
    except OSError:
        pass


def write_current_cluster(address: str) -> None:
    """Record the GCS address of the cluster `miniray start` began (0600)."""
    paths.temp_root()           # created and checked
    paths.write_private_file(paths.current_cluster_file(), address + "\n")


def read_current_cluster() -> str | None:
    """The address `miniray start` recorded, if the file is safely this
    user's: one another user owns or could have written (or a symlink) is
    ignored with a warning, so init() never attaches to their cluster."""
    try:
        data = paths.read_private_file(paths.current_cluster_file())
    except paths.UnsafePathError as exc:
        log.warning("ignoring the recorded cluster address: %s", exc)
        return None
    except OSError:
        return None
    return (data or b"").decode(errors="replace").strip() or None


def local_clusters() -> list[str]:
    """GCS addresses of the clusters this user's raylets on this machine
    belong to, the newest raylet's first (read from their command lines:
    ``-m miniray.raylet --gcs-address HOST:PORT``). Other users' processes
    are never considered."""
    found: dict[str, float] = {}
    uid = os.getuid()
    for proc in psutil.process_iter(["uids", "cmdline", "create_time"]):
        info = proc.info
        cmdline = info.get("cmdline") or []
        uids = info.get("uids")
        if uids is None or uids.real != uid or "miniray.raylet" not in cmdline:
            continue
        try:
            address = cmdline[cmdline.index("--gcs-address") + 1]
        except (ValueError, IndexError):
            continue
        found[address] = max(found.get(address, 0.0), info.get("create_time") or 0.0)
    return sorted(found, key=found.get, reverse=True)


def auto_cluster_address() -> str | None:
    """What ``address="auto"`` finds, as in Ray: the cluster `miniray start`
    recorded while a raylet of it runs here, else the newest cluster this
    user runs on this machine (one a driver's ``init()`` started, say), else
    the recorded address as it is (it may be a remote head), else None."""
    recorded = read_current_cluster()
    running = local_clusters()
    if recorded and (recorded in running or not running):
        return recorded
    return running[0] if running else None
