"""The ``miniray`` command: start, stop and inspect a cluster on this machine,
like ``ray start``, ``ray stop`` and ``ray status``.

    miniray start --head [--port 6379] [--num-cpus N] [--block]
    miniray start --address=HOST:PORT [--num-cpus N] [--block]
    miniray status [--address HOST:PORT]
    miniray stop [--force]
    miniray job submit|status|logs|stop|delete|list   (cli/job_cli.py)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading

from miniray.common import config, paths

_VERSION = "0.1.0"


class CliError(Exception):
    """A user error or a failure to report without a traceback (exit code 1)."""


# --- argument types -----------------------------------------------------------------
def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive, got 0")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port must be in 1..65535, got {value}")
    return value


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes")


def _resources(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({exc.msg}): {text!r}; expected e.g. "
            "'{\"custom\": 2}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object of resource name -> amount, got {text!r}")
    for name, amount in value.items():
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) \
                or math.isnan(amount) or math.isinf(amount) or amount < 0:
            raise argparse.ArgumentTypeError(
                f"resource {name!r} must be a non-negative number, got {amount!r}")
    return value


# --- parser ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="miniray",
        description="Start, stop and inspect miniray (Ray-compatible) clusters "
                    "on this machine.")
    parser.add_argument("--version", action="version", version=f"miniray {_VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    start = commands.add_parser(
        "start", help="start the miniray processes of a node (head or worker)",
        description="Start miniray on this machine: with --head, a new cluster "
                    "(GCS and head raylet); with --address, a raylet that joins "
                    "an existing cluster. The processes run in the background "
                    "unless --block is given; stop them with `miniray stop`.")
    role = start.add_mutually_exclusive_group()
    role.add_argument("--head", action="store_true",
                      help="start the head node of a new cluster")
    role.add_argument("--address", metavar="HOST:PORT",
                      help="GCS address of the cluster to join, as printed by "
                           "`miniray start --head`")
    start.add_argument("--port", type=_port, metavar="PORT",
                       help=f"GCS port of the head node (default "
                            f"{config.DEFAULT_GCS_PORT}); only with --head")
    start.add_argument("--num-cpus", type=_non_negative_int, metavar="N",
                       help="CPUs of this node (default: all cores)")
    start.add_argument("--num-gpus", type=_non_negative_int, metavar="N",
                       help="GPUs of this node (default: 0)")
    start.add_argument("--resources", type=_resources, metavar="JSON",
                       help="custom resources as JSON, e.g. '{\"custom\": 2}'")
    start.add_argument("--object-store-memory", type=_positive_int, metavar="BYTES",
                       help="object store capacity in bytes (default: 30%% of "
                            "memory, bounded by /dev/shm)")
    start.add_argument("--memory", type=_positive_int, metavar="BYTES",
                       help="memory resource of this node in bytes (default: 70%% "
                            "of the available memory)")
    start.add_argument("--node-ip-address", metavar="IP",
                       help="address this node listens on and advertises "
                            "(default 127.0.0.1: a cluster on one machine)")
    start.add_argument("--auth-token-file", metavar="PATH",
                       help="file (mode 600) holding the cluster's auth token: "
                            "with --head, the token to use instead of a new "
                            "random one; when joining from another machine, "
                            "the head's token (same as $MINIRAY_AUTH_TOKEN_FILE)")
    start.add_argument("--tls-cert", metavar="PEM",
                       help="this node's TLS certificate: with --tls-key and "
                            "--tls-ca, every RPC of the node uses mutual TLS "
                            "(same as MINIRAY_USE_TLS=1 and MINIRAY_TLS_*)")
    start.add_argument("--tls-key", metavar="PEM", help="this node's TLS private key")
    start.add_argument("--tls-ca", metavar="PEM",
                       help="the CA certificate that signed every node's certificate")
    start.add_argument("--include-dashboard", type=_bool, metavar="BOOL",
                       help="with --head: start the dashboard (default true)")
    start.add_argument("--dashboard-host", metavar="HOST",
                       help="with --head: address the dashboard listens on (default "
                            "127.0.0.1; 0.0.0.0 for every interface)")
    start.add_argument("--dashboard-port", type=_port, metavar="PORT",
                       help="with --head: the dashboard's port (default 8265, or the "
                            "next free one)")
    start.add_argument("--block", action="store_true",
                       help="stay in the foreground; stop the node on Ctrl-C or "
                            "SIGTERM, and exit if one of its processes dies")
    start.set_defaults(func=cmd_start, parser=start)

    stop = commands.add_parser(
        "stop", help="stop every miniray process on this machine",
        description="Stop every miniray process on this machine (GCS, raylets, "
                    "workers; drivers are not touched) and remove their session "
                    "and object store directories.")
    stop.add_argument("-f", "--force", action="store_true",
                      help="send SIGKILL at once instead of SIGTERM")
    stop.add_argument("-g", "--grace-period", type=float, default=5.0, metavar="S",
                      help="seconds to wait after SIGTERM before SIGKILL (default 5)")
    stop.add_argument("-v", "--verbose", action="store_true",
                      help="list the processes being stopped")
    stop.set_defaults(func=cmd_stop, parser=stop)

    status = commands.add_parser(
        "status", help="show the nodes and resource usage of a cluster",
        description="Show every node of a cluster (alive and dead) with its "
                    "resources, and the cluster's resource usage.")
    status.add_argument("--address", metavar="HOST:PORT",
                        help="GCS address (default: $MINIRAY_ADDRESS, else the "
                             "cluster started with `miniray start --head`)")
    status.set_defaults(func=cmd_status, parser=status)

    # list, get, summary, memory, logs, timeline (Ray's state CLI)
    from miniray.cli.state_cli import add_commands
    add_commands(commands)
    from miniray.cli import job_cli          # miniray job submit|status|logs|stop|...
    job_cli.add_commands(commands)
    return parser


# --- commands ---------------------------------------------------------------------
def cmd_stop(args) -> int:
    from miniray.cli.stop import stop
    if args.grace_period < 0:
        raise CliError("--grace-period must not be negative")
    return stop(force=args.force, grace=args.grace_period, verbose=args.verbose)


def cmd_status(args) -> int:
    from miniray.cli.status import status
    return status(args.address)


def cmd_start(args) -> int:
    from miniray import node as node_module
    from miniray.cli.status import cluster_alive

    if not args.head and not args.address:
        args.parser.error("either --head (start a new cluster) or "
                          "--address=HOST:PORT (join one) is required")
    if args.port is not None and not args.head:
        args.parser.error("--port is only valid with --head")
    if args.node_ip_address:
        # Read by this node's daemons, and so by their workers.
        os.environ["MINIRAY_NODE_IP"] = config.NODE_IP = args.node_ip_address
    _security_options(args)
    resource_args = dict(num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                         resources=args.resources,
                         object_store_memory=args.object_store_memory,
                         memory=args.memory)
    try:        # validate before starting anything
        node_module.default_resources(is_head=args.head, **resource_args)
    except ValueError as exc:
        args.parser.error(f"invalid resources: {exc}")

    signals = _Signals() if args.block else None
    if args.head:
        existing = node_module.read_current_cluster()
        if existing and cluster_alive(existing):
            raise CliError(
                f"miniray is already running at {existing} on this machine "
                f"(recorded in {paths.current_cluster_file()}). Connect to it with "
                f"`miniray.init(address=\"auto\")`, or run `miniray stop` first to "
                f"stop it before starting a new head node.")
        port = args.port or config.DEFAULT_GCS_PORT
        if node_module.free_port(port, config.NODE_IP) != port:  # again in start_head
            raise CliError(_port_in_use(port))
        try:
            node = node_module.start_head(
                port=port, daemon=True, include_dashboard=args.include_dashboard,
                dashboard_host=args.dashboard_host, dashboard_port=args.dashboard_port,
                **resource_args)
        except OSError as exc:
            if "already in use" in str(exc):
                raise CliError(_port_in_use(port)) from None
            raise CliError(f"failed to start the head node: {exc}") from None
        except (RuntimeError, TimeoutError) as exc:
            raise CliError(f"failed to start the head node: {exc}") from None
        _write_current_cluster(node.gcs_address)
        _print_head_started(node, args.block)
    else:
        address = args.address
        if address == "auto":
            address = node_module.read_current_cluster()
            if not address:
                raise CliError("--address=auto: no cluster was started on this "
                               "machine; pass the head's HOST:PORT")
        host, _, port_text = address.rpartition(":")
        if not host or not port_text.isdigit():
            args.parser.error(f"argument --address: expected HOST:PORT, got {address!r}")
        if not cluster_alive(address, timeout=5):
            raise CliError(
                f"could not connect to the GCS at {address}. Is a head node "
                f"running there (`miniray start --head`)?")
        try:
            node = node_module.start_worker_node(address, daemon=True, **resource_args)
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise CliError(f"failed to start the node: {exc}") from None
        existing = node_module.read_current_cluster()
        if not existing or (existing != address and not cluster_alive(existing)):
            _write_current_cluster(address)
        _print_worker_started(node, args.block)
    if args.block:
        return _block(node, signals, is_head=args.head)
    return 0


def _security_options(args) -> None:
    """--auth-token-file and --tls-*: set as the environment this node's
    daemons (and their workers) inherit."""
    from miniray.rpc import auth
    if args.auth_token_file:
        os.environ[auth.ENV_TOKEN_FILE] = os.path.abspath(args.auth_token_file)
    tls = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(tls):
        if not all(tls):
            args.parser.error("--tls-cert, --tls-key and --tls-ca go together")
        os.environ[auth.ENV_USE_TLS] = "1"
        for name, path in zip((auth.ENV_TLS_CERT, auth.ENV_TLS_KEY, auth.ENV_TLS_CA), tls):
            os.environ[name] = os.path.abspath(path)


def _port_in_use(port: int) -> str:
    return (f"port {port} is already in use, so the GCS cannot listen on it. "
            f"Choose another port with --port, or stop what uses it (`miniray "
            f"stop` if it is an old miniray cluster).")


def _write_current_cluster(address: str) -> None:
    from miniray import node as node_module
    node_module.write_current_cluster(address)


def _describe(node) -> tuple[str, str]:
    """(IP, resource summary) of the node just started, as the GCS has it."""
    from miniray import node as node_module
    from miniray.cli.status import format_amount, order_resources
    try:
        infos = node_module.get_nodes(node.gcs_address)
    except Exception:
        infos = []
    for info in infos:
        if info.node_id == node.node_id:
            total = dict(info.resources_total)
            return info.ip, ", ".join(f"{format_amount(n, total[n])} {n}"
                                      for n in order_resources(total))
    return "127.0.0.1", "?"


def _started_banner(node) -> list[str]:
    ip, resources = _describe(node)
    return [
        f"Local node IP: {ip}",
        f"Node ID: {node.node_id.hex()}",
        f"Resources: {resources}",
        f"Logs: {os.path.join(node.session_dir, 'logs')}",
        "",
        "--------------------",
        "miniray runtime started.",
        "--------------------",
        "",
    ]


def _print_with_footer(lines: list[str], block: bool, indent: str) -> None:
    if block:
        lines += ["--block",
                  "  This command will now block forever until terminated by a "
                  "signal (Ctrl-C or SIGTERM),",
                  "  which stops the node. It exits if a miniray process dies."]
    else:
        lines += [f"{indent}To terminate the miniray runtime, run", "    miniray stop"]
    print("\n".join(lines), flush=True)


def _print_head_started(node, block: bool) -> None:
    address = node.gcs_address
    lines = _started_banner(node) + [
        "Next steps",
        "  To add another node to this cluster, run",
        f"    miniray start --address='{address}'",
        "",
        "  To connect to this cluster from Python:",
        "    import miniray as ray",
        "    ray.init(address=\"auto\")",
        f"    # or explicitly: ray.init(address=\"{address}\")",
        "",
        "  To view the status of the cluster, run",
        "    miniray status",
        "",
    ] + ([f"  Dashboard: http://{node.dashboard_url}", ""] if node.dashboard_url else [])
    _print_with_footer(lines, block, "  ")


def _print_worker_started(node, block: bool) -> None:
    lines = _started_banner(node) + [
        f"This node joined the cluster at {node.gcs_address}.",
        "",
    ]
    _print_with_footer(lines, block, "")


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class _Signals:
    """With --block: catch SIGINT/SIGTERM/SIGHUP from before the node starts, so
    that a signal during startup still stops the node cleanly."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.event = threading.Event()
        self.received: list[int] = []
        for sig in self.SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        self.received.append(signum)
        self.event.set()

    def ignore(self):
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _block(node, signals: _Signals, *, is_head: bool) -> int:
    """Wait until a signal arrives or a process of the node dies, then stop it."""
    from miniray import node as node_module
    code = 0
    while not signals.event.wait(0.2):
        dead = [p for p in node.processes if p.poll() is not None]
        if dead:
            print("Some miniray processes exited unexpectedly:", file=sys.stderr)
            for proc in dead:
                module = proc.args[2] if len(proc.args) > 2 else proc.args
                print(f"  {module} (pid {proc.pid}) exited with code {proc.returncode}",
                      file=sys.stderr)
            logs = os.path.join(node.session_dir, "logs")
            for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
                tail = _tail(os.path.join(logs, name))
                if tail:
                    print(f"--- last lines of {name} ---\n{tail}", file=sys.stderr)
            code = 1
            break
    if signals.received:
        print(f"Received {signal.Signals(signals.received[0]).name}: stopping the node.",
              flush=True)
    signals.ignore()                # let the shutdown finish
    node.stop()
    if is_head and node_module.read_current_cluster() == node.gcs_address:
        node_module.forget_current_cluster()
    print("miniray node stopped.", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except CliError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
