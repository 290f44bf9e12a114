"""``miniray stop``: end every miniray process on this machine and clean up.

miniray processes are recognised by their command line: a Python interpreter
running ``-m miniray.gcs``, ``-m miniray.raylet``, ``-m miniray.core_worker`` or
``-m miniray.dashboard``. A worker replaces its command line with a process
title (``ray::IDLE``, ``ray::<task>``; core_worker/proctitle.py): one titled
so is ours if its environment has MINIRAY_CORE_WORKER (a Ray worker's has not).
Drivers (user scripts) are never touched, and neither are the calling process
and its ancestors.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import time
from dataclasses import dataclass

import psutil

from miniray import node as node_module
from miniray.common import config, paths

MODULES = {"miniray.gcs": "gcs", "miniray.raylet": "raylet",
           "miniray.core_worker": "core_worker", "miniray.dashboard": "dashboard"}
# Python options that take a separate value (``python -W error -m ...``).
_OPTIONS_WITH_VALUE = {"-W", "-X", "--check-hash-based-pycs"}
# A session directory whose creator is alive and that is younger than this is
# probably a cluster being started right now (no process references it yet).
_YOUNG_SESSION_S = 60.0


@dataclass
class MinirayProcess:
    process: psutil.Process
    kind: str                   # gcs | raylet | core_worker | dashboard
    cmdline: list

    @property
    def pid(self) -> int:
        return self.process.pid

    def arg(self, name: str) -> str | None:
        """The value of ``--name value`` or ``--name=value`` on the command line."""
        for i, item in enumerate(self.cmdline):
            if item == name and i + 1 < len(self.cmdline):
                return self.cmdline[i + 1]
            if item.startswith(name + "="):
                return item[len(name) + 1:]
        return None


def process_kind(cmdline: list) -> str | None:
    """'gcs', 'raylet', 'core_worker' or 'dashboard' if ``cmdline`` runs one."""
    if not cmdline:
        return None
    exe = os.path.basename(cmdline[0])
    if not exe.startswith(("python", "pypy")):
        return None
    args = iter(cmdline[1:])
    for arg in args:
        if not arg.startswith("-") or arg == "-" or arg.startswith("-c"):
            return None          # a script, stdin or -c: options are over
        if arg == "-m":
            return MODULES.get(next(args, ""))
        if arg.startswith("-m"):
            return MODULES.get(arg[2:])
        if arg in _OPTIONS_WITH_VALUE:
            next(args, None)
    return None


def is_titled_worker(proc: psutil.Process, cmdline: list) -> bool:
    """A miniray worker whose process title replaced its command line."""
    from miniray.core_worker.proctitle import MARKER, PREFIX
    if not cmdline or not cmdline[0].startswith(PREFIX):
        return False
    try:
        return proc.environ().get(MARKER) == "1"
    except psutil.Error:
        return False


def _protected_pids() -> set[int]:
    me = psutil.Process()
    pids = {me.pid}
    try:
        pids.update(p.pid for p in me.parents())
    except psutil.Error:
        pass
    return pids


def find_processes() -> list[MinirayProcess]:
    """Every live miniray process on this machine, except ourselves."""
    protected = _protected_pids()
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid in protected:
            continue
        try:
            cmdline = proc.info["cmdline"] or []
        except (psutil.Error, KeyError):
            continue
        kind = process_kind(cmdline)
        if kind is None and is_titled_worker(proc, cmdline):
            kind = "core_worker"
        if kind is not None:
            found.append(MinirayProcess(proc, kind, list(cmdline)))
    return found


def _signal(procs: list[MinirayProcess], sig: int, denied: set[int]) -> None:
    for p in procs:
        try:
            p.process.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
        except psutil.AccessDenied:
            denied.add(p.pid)


def _gone(proc: psutil.Process) -> bool:
    """Exited. A zombie counts: its parent (often init, for daemons) reaps it
    whenever it gets round to it, but it holds nothing any more."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _wait(procs: list[MinirayProcess], timeout: float) -> list[MinirayProcess]:
    """Wait until ``procs`` exit or ``timeout`` passes; return the ones alive."""
    deadline = time.monotonic() + max(0.0, timeout)
    alive = list(procs)
    while True:
        alive = [p for p in alive if not _gone(p.process)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def terminate(procs: list[MinirayProcess], *, force: bool, grace: float,
              log=print) -> tuple[list[MinirayProcess], set[int]]:
    """Stop ``procs``: raylets and workers first, then the GCS; SIGKILL what is
    left after ``grace`` seconds. Returns the survivors and the pids we were not
    allowed to signal."""
    denied: set[int] = set()
    first = [p for p in procs if p.kind != "gcs"]
    gcs = [p for p in procs if p.kind == "gcs"]
    deadline = time.monotonic() + grace
    if force:
        _signal(procs, signal.SIGKILL, denied)
        alive = _wait(procs, 2.0)
    else:
        _signal(first, signal.SIGTERM, denied)
        alive = _wait(first, deadline - time.monotonic())
        _signal(gcs, signal.SIGTERM, denied)
        alive += _wait(gcs, max(1.0, deadline - time.monotonic()))
        if alive:
            log(f"{len(alive)} miniray process(es) did not exit within {grace:g}s "
                f"of SIGTERM: sending SIGKILL")
            _signal(alive, signal.SIGKILL, denied)
            alive = _wait(alive, 2.0)
    return alive, denied


def _session_creator(path: str) -> int | None:
    """The pid in session_<date>_<time>_<pid>_<hex> (see node.new_session_dir)."""
    parts = os.path.basename(path).split("_")
    try:
        return int(parts[-2])
    except (IndexError, ValueError):
        return None


def _maybe_starting(path: str) -> bool:
    """A session directory that a live process created moments ago: a cluster
    is probably starting there right now, so leave it alone."""
    creator = _session_creator(path)
    if creator is None or creator == os.getpid() or not psutil.pid_exists(creator):
        return False
    try:
        return time.time() - os.stat(path).st_mtime < _YOUNG_SESSION_S
    except OSError:
        return False


def _remove(path: str) -> bool:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return not os.path.lexists(path)


def _is_mine(path: str) -> bool:
    """Owned by this user and not a symlink (others' files are not ours to remove)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not os.path.islink(path)


def clean_up(stopped_sessions: set[str]) -> tuple[int, int]:
    """Remove session directories, cluster directories and object store
    directories of this user that no running miniray process uses any more,
    and the current-cluster file.

    Returns (session directories removed, object store directories removed)."""
    in_use: set[str] = set()          # session names still used by live processes
    gcs_ports: set[str] = set()       # ports of live GCSes (their cluster dirs stay)
    for p in find_processes():
        session = p.arg("--session-dir")
        if session:
            in_use.add(os.path.basename(os.path.normpath(session)))
        if p.kind == "gcs" and p.arg("--port"):
            gcs_ports.add(p.arg("--port"))

    try:
        root = paths.temp_root(create=False)
    except paths.UnsafePathError as exc:
        print(f"Not cleaning up {exc}")
        root = None
    sessions = {os.path.normpath(s) for s in stopped_sessions
                if os.path.basename(os.path.normpath(s)).startswith("session_")}
    if root:
        sessions.update(os.path.normpath(s) for s in
                        glob.glob(os.path.join(root, "session_*")))
        for path in glob.glob(os.path.join(root, "cluster_*")):
            if path.rpartition("_")[2] not in gcs_ports and _is_mine(path):
                _remove(path)
    keep = set(in_use)
    removed_sessions = 0
    for path in sorted(sessions):
        name = os.path.basename(path)
        if name in in_use or (path not in stopped_sessions and _maybe_starting(path)):
            keep.add(name)
            continue
        if os.path.isdir(path) and _remove(path):
            removed_sessions += 1

    removed_stores = 0
    for path in glob.glob(os.path.join(config.SHM_ROOT, "miniray-*")):
        # miniray-<session name>-<node id prefix>
        session = os.path.basename(path)[len("miniray-"):].rpartition("-")[0]
        if session in keep or not _is_mine(path):
            continue
        if _remove(path):
            removed_stores += 1

    node_module.forget_current_cluster()
    return removed_sessions, removed_stores


def stop(*, force: bool = False, grace: float = 5.0, verbose: bool = False) -> int:
    """The ``miniray stop`` command; returns the exit code."""
    procs = find_processes()
    sessions = {os.path.normpath(s) for p in procs
                if p.kind == "raylet" and (s := p.arg("--session-dir"))}
    if verbose:
        for p in procs:
            print(f"  {p.kind:<12} pid {p.pid}")
    alive, denied = terminate(procs, force=force, grace=grace)
    stopped = len(procs) - len(alive)
    removed_sessions, removed_stores = clean_up(sessions)

    if not procs:
        print("Did not find any active miniray processes.")
    else:
        counts: dict[str, int] = {}
        alive_pids = {p.pid for p in alive}
        for p in procs:
            if p.pid not in alive_pids:
                counts[p.kind] = counts.get(p.kind, 0) + 1
        labels = {"gcs": ("GCS", "GCS"), "raylet": ("raylet", "raylets"),
                  "core_worker": ("worker", "workers"),
                  "dashboard": ("dashboard", "dashboards")}
        detail = ", ".join(f"{counts[kind]} {labels[kind][counts[kind] != 1]}"
                           for kind in labels if kind in counts)
        print(f"Stopped {stopped} miniray process{'es' if stopped != 1 else ''}"
              + (f" ({detail})." if detail else "."))
    if verbose or removed_sessions or removed_stores:
        print(f"Removed {removed_sessions} session director"
              f"{'ies' if removed_sessions != 1 else 'y'} and {removed_stores} "
              f"object store director{'ies' if removed_stores != 1 else 'y'}.")
    if alive:
        pids = ", ".join(str(p.pid) for p in alive)
        reason = " (permission denied)" if denied & {p.pid for p in alive} else ""
        print(f"Could not stop {len(alive)} miniray process(es){reason}: pid {pids}")
        return 1
    return 0
