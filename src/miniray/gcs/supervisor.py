"""The GCS process and its supervisor.

    python -m miniray.gcs --port P [--host H] [--session-dir D] [--die-with-parent]

With ``--session-dir`` (how ``init()`` and ``miniray start --head`` start
it) this process is a small supervisor: it forks the GCS server and forks
a new one whenever the server dies other than by being asked to stop, as
KubeRay restarts a head. The new server reloads its tables from the
session directory (gcs/storage.py) and the cluster's processes reconnect.
The fork happens before gRPC is imported, so each server starts from a
clean process, and restarting costs no new interpreter.

SIGTERM/SIGINT to the supervisor stop the server and then the supervisor;
a server that keeps dying at once (more than ``MAX_RESTARTS`` within
``RESTART_WINDOW_S``) is given up on. Without ``--session-dir`` the server
runs in this process, in memory only.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

from miniray.common import config, paths
from miniray.common.process import die_with_parent

MAX_RESTARTS = 10
RESTART_WINDOW_S = 60.0


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m miniray.gcs")
    parser.add_argument("--host", default=config.NODE_IP)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--session-dir", default=None,
                        help="keep the tables there and restart the server if it dies")
    parser.add_argument("--die-with-parent", action="store_true")
    parser.add_argument("--reserved-fd", type=int, default=None,
                        help="a socket bound to the port (not listening), kept "
                             "open for life so no other process takes the port")
    return parser.parse_args(argv)


def _run_server(args) -> None:
    from miniray.gcs import server            # gRPC is imported here, after the fork
    from miniray.common.process import name_process
    name_process("gcs_server")                # Ray's name for it
    server.run(args.host, args.port, args.session_dir)


class Supervisor:
    def __init__(self, args):
        self.args = args
        self.child = 0
        self.stopping = False
        self.restarts: list[float] = []

    def _forward(self, signum, frame) -> None:
        self.stopping = True
        if self.child:
            try:
                os.kill(self.child, signum)
            except ProcessLookupError:
                pass

    def _start_child(self) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            die_with_parent(signal.SIGTERM)
            _run_server(self.args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:               # noqa: BLE001 - reported, then exit
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._forward)
        try:
            while True:
                started = time.monotonic()
                self.child = self._start_child()
                _, status = os.waitpid(self.child, 0)
                self.child = 0
                code = os.waitstatus_to_exitcode(status)
                if self.stopping or code == 0:
                    return 0 if self.stopping else code
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
                if len(self.restarts) >= MAX_RESTARTS:
                    print(f"miniray GCS supervisor: the GCS died {MAX_RESTARTS} times "
                          f"within {RESTART_WINDOW_S:.0f} s; giving up", file=sys.stderr,
                          flush=True)
                    return 1
                self.restarts.append(now)
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                print(f"miniray GCS supervisor: the GCS died ({how}); restarting it",
                      file=sys.stderr, flush=True)
                if now - started < 1.0:       # dying at once: don't spin
                    time.sleep(min(2.0, 0.1 * 2 ** len(self.restarts)))
                if self.stopping:
                    return 0
        finally:
            paths.remove_cluster_dir(f"{self.args.host}:{self.args.port}")


def main(argv=None) -> None:
    args = _parse(argv)
    # Inherited, and left open until this process exits (the GCS child,
    # forked, has a copy: harmless, it is never listened on).
    reserved = socket.socket(fileno=args.reserved_fd) if args.reserved_fd is not None \
        else None  # noqa: F841 - held for its side effect
    if args.die_with_parent:
        die_with_parent(signal.SIGTERM)
    if args.session_dir is None:
        try:
            _run_server(args)
        finally:
            # The cluster's private directory (its token) goes with its GCS.
            paths.remove_cluster_dir(f"{args.host}:{args.port}")
        return
    sys.exit(Supervisor(args).run())
