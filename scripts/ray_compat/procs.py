"""Finding and ending the processes of one conformance run, and only those.

Every process of a run inherits ``RAY_COMPAT_RUN_ID`` from the pytest process
(miniray's daemons and workers copy their parent's environment), so a
process is ours exactly when its environment carries our run id. Another
engineer's miniray processes on the same machine are never touched.
"""
from __future__ import annotations

import os
import psutil

RUN_ID_VAR = "RAY_COMPAT_RUN_ID"


def run_processes(run_id: str, exclude: set[int] | None = None) -> list[psutil.Process]:
    """Live processes whose environment has ``RAY_COMPAT_RUN_ID=run_id``."""
    exclude = set(exclude or ()) | {os.getpid()}
    found = []
    for proc in psutil.process_iter():
        if proc.pid in exclude:
            continue
        try:
            if proc.environ().get(RUN_ID_VAR) == run_id:
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def terminate(procs: list[psutil.Process], grace: float = 3.0) -> list[int]:
    """SIGTERM, then SIGKILL what is still alive after ``grace``; the pids."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return [p.pid for p in procs]


def is_miniray_daemon(proc: psutil.Process) -> bool:
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return False
    return any(arg.startswith("miniray.") for arg in cmdline[1:3])
