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
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("miniray" in part for part in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def session_and_cluster_dirs() -> set:
    root = paths.temp_root(create=False)
    return set(glob.glob(os.path.join(root, "session_*"))
               + glob.glob(os.path.join(root, "cluster_*")))


def leftovers(session_dirs_before: set) -> dict:
    return {
        "processes": [p.pid for p in miniray_children()],
        "shm": glob.glob("/dev/shm/miniray-*"),
        "sessions": sorted(session_and_cluster_dirs() - session_dirs_before),
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
