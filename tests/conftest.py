"""Suite-wide guards: every test has a timeout (pyproject), and the suite
must leave no miniray process, shared-memory directory, session dir or
cluster dir (under the user's temp root, see miniray.common.paths)."""
from __future__ import annotations

import glob
import os
import time

import psutil
import pytest

from miniray.common import paths


def miniray_children() -> list[psutil.Process]:
    """This process's descendants that run miniray: by command line, or a
    worker by its process title (ray::...) and environment."""
    from miniray.cli.stop import is_titled_worker
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = proc.cmdline()
            if any("miniray" in part for part in cmdline) or \
                    is_titled_worker(proc, cmdline):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def session_and_cluster_dirs() -> set:
    root = paths.temp_root(create=False)
    return set(glob.glob(os.path.join(root, "session_*"))
               + glob.glob(os.path.join(root, "cluster_*"))
               + glob.glob("/dev/shm/miniray-*"))


def _ours(path: str) -> bool:
    """Made by this test process or by one that is gone: not by another
    process still running (someone else's cluster on this shared machine).
    Session names hold their creator's pid (node.new_session_dir); cluster
    dirs end with their GCS's port."""
    name = os.path.basename(path)
    if name.startswith("cluster_"):
        return name.rpartition("_")[2] not in _live_gcs_ports()
    if name.startswith("miniray-"):                # miniray-<session>-<node>
        name = name[len("miniray-"):].rpartition("-")[0]
    try:
        pid = int(name.split("_")[-2])
    except (IndexError, ValueError):
        return True
    return pid == os.getpid() or not psutil.pid_exists(pid)


def _live_gcs_ports() -> set:
    from miniray.cli.stop import find_processes
    return {p.arg("--port") for p in find_processes() if p.kind == "gcs"}


def leftovers(before: set) -> dict:
    new = sorted(p for p in session_and_cluster_dirs() - before if _ours(p))
    return {
        "processes": [p.pid for p in miniray_children()],
        "shm": [p for p in new if p.startswith("/dev/shm/")],
        "sessions": [p for p in new if not p.startswith("/dev/shm/")],
    }


def wait_until_clean(before: set, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = leftovers(before)
        if not any(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture(scope="module", autouse=True)
def no_leaks_per_module():
    """After each module: nothing miniray started may still be around."""
    before = session_and_cluster_dirs()
    yield
    import miniray
    miniray.shutdown()
    found = wait_until_clean(before)
    for pid in found["processes"]:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    assert not any(found.values()), f"leaked: {found}"
