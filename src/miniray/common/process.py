"""Small process helpers (Linux)."""
from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent exits."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:     # the parent died before prctl took effect
        os._exit(1)


def raise_open_files_limit(wanted: int = 65536) -> None:
    """Raise this process's soft limit on open files towards the hard one,
    as Ray does: each object a process has mapped holds one descriptor (the
    lock that keeps the store from recycling it), and ``get`` of 10,000
    store objects must not run out."""
    import resource
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass


def name_process(name: str) -> None:
    """The process's name (what ``ps -o comm``, ``top`` and psutil's
    ``name()`` show) as Ray's daemon has it; the command line, by which
    ``miniray stop`` finds the process, is left alone."""
    try:
        import setproctitle
        setproctitle.setthreadtitle(name)      # the main thread: the process's name
    except Exception:          # noqa: BLE001 - cosmetic
        pass


def descendants(*pids: int) -> list[int]:
    """The processes ``pids`` started, and theirs, from /proc (children
    before their own children); none for no pids."""
    if not pids:
        return []
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue                    # exited meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(pids)
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def kill_descendants(*pids: int, found: list[int] | None = None) -> None:
    """SIGKILL what ``pids`` started, or the processes ``found`` before, as
    Ray's workers do when they exit
    (kill_child_processes_on_worker_exit): a task's subprocesses never
    outlive its worker."""
    for child in descendants(*pids) if found is None else found:
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass


def exit_worker(code: int = 0) -> None:
    """End a worker process now, with the processes it started."""
    kill_descendants(os.getpid())
    os._exit(code)
