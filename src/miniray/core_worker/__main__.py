"""Entry point of a worker process, started by the raylet:

    python -m miniray.core_worker --raylet-address H:P --gcs-address H:P --worker-id HEX
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from miniray.common.ids import WorkerID
from miniray.common.process import die_with_parent
from miniray.core_worker.core_worker import WORKER, CoreWorker


class _PrefixedStream:
    """Prefix each line a task prints with "(task_name pid=N)", as Ray does."""

    def __init__(self, stream, worker_ref):
        self._stream = stream
        self._worker_ref = worker_ref
        self._at_line_start = True

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
        self._stream.write("".join(out))
        if "\n" in text:
            self._stream.flush()
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raylet-address", required=True)
    parser.add_argument("--gcs-address", required=True)
    parser.add_argument("--worker-id", required=True)
    args = parser.parse_args(argv)
    die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    holder: list = []
    sys.stdout = _PrefixedStream(sys.stdout, lambda: holder[0] if holder else None)
    sys.stderr = _PrefixedStream(sys.stderr, lambda: holder[0] if holder else None)
    worker = CoreWorker(mode=WORKER, raylet_address=args.raylet_address,
                        gcs_address=args.gcs_address,
                        worker_id=WorkerID.from_hex(args.worker_id))
    holder.append(worker)
    worker.executor.run_forever()
    os._exit(0)


if __name__ == "__main__":
    main()
