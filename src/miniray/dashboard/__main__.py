"""The dashboard process.

    python -m miniray.dashboard --gcs-address H:P [--host H] [--port P]
                                [--listen-fd N] [--session-dir D]
                                [--die-with-parent --parent-pid P]

Serves on the socket its parent bound (``--listen-fd``, see
node.start_dashboard) or else on ``--port`` or, if that is taken, the next
free port (and says so); records its address in the GCS's internal KV, and serves until
SIGTERM, its parent's death (``--die-with-parent``) or the GCS staying
unreachable past ``GCS_RECONNECT_TIMEOUT_S``. The cluster's token comes
from the environment, as for the GCS.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time

from miniray.common import config
from miniray.common.process import die_with_parent

log = logging.getLogger("miniray.dashboard")
PING_PERIOD_S = 5.0


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m miniray.dashboard")
    parser.add_argument("--gcs-address", required=True)
    parser.add_argument("--host", default=config.DEFAULT_DASHBOARD_HOST)
    parser.add_argument("--port", type=int, default=config.DEFAULT_DASHBOARD_PORT)
    parser.add_argument("--listen-fd", type=int, default=None,
                        help="serve on this listening socket (bound by the parent)")
    parser.add_argument("--session-dir", default=None,
                        help="the session this dashboard belongs to (for miniray stop)")
    parser.add_argument("--die-with-parent", action="store_true")
    parser.add_argument("--parent-pid", type=int, default=0,
                        help="with --die-with-parent: exit at once if this process "
                             "is already gone")
    return parser.parse_args(argv)


def _watch_gcs(source, stop: threading.Event) -> None:
    """Stop once the GCS has not answered for GCS_RECONNECT_TIMEOUT_S (the
    cluster is gone), as a raylet does."""
    last_ok = time.monotonic()
    while not stop.wait(PING_PERIOD_S):
        try:
            source.ping()
            last_ok = time.monotonic()
        except Exception as exc:
            if time.monotonic() - last_ok > config.GCS_RECONNECT_TIMEOUT_S:
                log.error("the GCS at %s has not answered for %g s (%s): stopping",
                          source.gcs_address, config.GCS_RECONNECT_TIMEOUT_S, exc)
                stop.set()


def _job_server(server, source, session_dir: str | None):
    """The job server's routes on ``server`` (dashboard/jobs.py); returns
    its job manager, which resumes watching unfinished jobs in a thread."""
    from miniray.dashboard.jobs import JobRoutes, session_name
    from miniray.job_submission.manager import JobManager
    from miniray.dashboard.source import RPC_TIMEOUT_S

    def call(method, request):
        return getattr(source.gcs, method)(request, timeout=RPC_TIMEOUT_S)
    logs_dir = os.path.join(session_dir, "logs") if session_dir else None
    manager = JobManager(source.gcs_address, call, logs_dir)
    server.jobs = JobRoutes(manager, call, session_name(session_dir))
    threading.Thread(target=manager.resume, name="job-resume", daemon=True).start()
    return manager


def main(argv=None) -> int:
    args = _parse(argv)
    if args.die_with_parent:
        die_with_parent()
        if args.parent_pid and os.getppid() != args.parent_pid:
            return 1                  # the parent died before we could follow it
    logging.basicConfig(level=os.environ.get("MINIRAY_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s dashboard %(levelname)s %(message)s")
    from miniray.dashboard.server import DashboardServer, bind
    from miniray.dashboard.source import ClusterSource
    from miniray.rpc import auth
    auth.load_from_env()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    source = ClusterSource(args.gcs_address)
    try:
        if args.listen_fd is not None:
            server = DashboardServer.on_socket(
                socket.socket(fileno=args.listen_fd), source, auth.current_token())
        else:
            server = bind(args.host, args.port, source, auth.current_token())
    except OSError as exc:
        log.error("the dashboard could not listen on %s: %s", args.host, exc)
        return 1
    manager = _job_server(server, source, args.session_dir)
    port = server.server_address[1]
    if args.port and port != args.port:
        log.warning("dashboard port %d is in use: listening on %d instead",
                    args.port, port)
    host = args.host if ":" not in args.host else f"[{args.host}]"
    try:
        source.publish_address(f"{host}:{port}")
    except Exception as exc:
        from miniray.rpc.channels import is_unavailable
        # Unreachable: the cluster is already going away (a short script).
        (log.debug if is_unavailable(exc) else log.warning)(
            "could not record the dashboard's address in the GCS: %s", exc)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                               name="http", daemon=True)
    serving.start()
    threading.Thread(target=_watch_gcs, args=(source, stop), name="gcs-watch",
                     daemon=True).start()
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    manager.close()
    source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
