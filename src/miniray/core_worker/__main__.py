"""Entry point of a worker process, started by the raylet:

    python -m miniray.core_worker --raylet-address H:P --gcs-address H:P --worker-id HEX
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from miniray.common import config
from miniray.common.ids import WorkerID
from miniray.common.process import die_with_parent, exit_worker
from miniray.core_worker.core_worker import WORKER, CoreWorker
from miniray.protocol import core_worker_pb2 as cw_pb2
from miniray.rpc import auth
from miniray.rpc.channels import describe_rpc_error, is_unavailable


class _PrefixedStream:
    """Prefix each line a task prints with "(task_name pid=N)", as Ray does.

    On nodes started by `miniray start` the worker's output goes to a log
    file, so it is also forwarded, in order, to the driver of the task's job.
    """

    def __init__(self, stream, worker_ref, is_stderr: bool):
        self._stream = stream
        self._worker_ref = worker_ref
        self._is_stderr = is_stderr
        self._at_line_start = True
        self._forward = os.environ.get("MINIRAY_FORWARD_OUTPUT") == "1"
        self._pending: list[str] = []
        self._sending = False
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        worker = self._worker_ref()
        name = worker.current_task_name if worker is not None else ""
        actor = worker.executor.actor if worker is not None else None
        if actor is not None:
            name = actor.class_name          # Ray prefixes actor output "(Cls pid=N)"
        prefix = f"({name} pid={os.getpid()}) " if name else f"(pid={os.getpid()}) "
        out = []
        for line in text.splitlines(keepends=True):
            if self._at_line_start:
                out.append(prefix)
            out.append(line)
            self._at_line_start = line.endswith("\n")
        joined = "".join(out)
        self._stream.write(joined)
        if "\n" in text:
            self._stream.flush()
        if self._forward and worker is not None and worker.job_driver is not None:
            self._send(worker, joined)
        return len(text)

    def _send(self, worker, text: str) -> None:
        with self._lock:
            self._pending.append(text)
            if self._sending:
                return
            self._sending = True
        worker.loop.call_soon_threadsafe(lambda: worker.spawn(self._drain(worker)))

    async def _drain(self, worker) -> None:
        """One sender at a time, so lines reach the driver in order."""
        while True:
            with self._lock:
                if not self._pending:
                    self._sending = False
                    return
                text = "".join(self._pending)
                self._pending.clear()
            try:
                await worker.worker_stub(worker.job_driver).PrintLines(
                    cw_pb2.PrintLinesRequest(text=text, is_stderr=self._is_stderr))
            except Exception:        # noqa: BLE001 - the driver is gone
                pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _preload(modules) -> None:
    """Ray's preload_python_modules: import them before the first task (a
    module that fails to import is reported in this worker's log)."""
    import importlib
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:       # noqa: BLE001 - never fatal, as in Ray
            print(f"preload_python_modules: could not import {name}: "
                  f"{type(exc).__name__}: {exc}", file=sys.__stderr__)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raylet-address", required=True)
    parser.add_argument("--gcs-address", required=True)
    parser.add_argument("--worker-id", required=True)
    args = parser.parse_args(argv)
    # The raylet's death (or stop) ends the worker and what its tasks
    # started (Ray's kill_child_processes_on_worker_exit).
    die_with_parent(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: exit_worker(0))
    holder: list = []
    sys.stdout = _PrefixedStream(sys.stdout, lambda: holder[0] if holder else None, False)
    sys.stderr = _PrefixedStream(sys.stderr, lambda: holder[0] if holder else None, True)
    auth.load_from_env()
    try:
        worker = CoreWorker(mode=WORKER, raylet_address=args.raylet_address,
                            gcs_address=args.gcs_address,
                            worker_id=WorkerID.from_hex(args.worker_id))
    except Exception as exc:      # noqa: BLE001 - the raylet died while we started
        if not is_unavailable(exc):
            raise
        print(f"worker exiting: its raylet at {args.raylet_address} is gone "
              f"({describe_rpc_error(exc)})", file=sys.__stderr__)
        os._exit(1)
    holder.append(worker)
    _preload(config.PRELOAD_PYTHON_MODULES)
    from miniray.core_worker import proctitle
    proctitle.set_title(proctitle.IDLE)
    worker.executor.run_forever()
    exit_worker(0)


if __name__ == "__main__":
    main()
