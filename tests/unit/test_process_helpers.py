"""Unit tests for miniray.common.process: finding and ending what a process
started (real child processes, no cluster)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from miniray.common.process import descendants, kill_descendants
from miniray.testing import wait_for_condition

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def test_descendants_include_grandchildren_and_can_be_killed():
    # A shell (child) that starts two sleeps (grandchildren) and waits.
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    try:
        wait_for_condition(lambda: len(descendants(shell.pid)) == 2, timeout=10)
        found = descendants(os.getpid())
        assert shell.pid in found and set(descendants(shell.pid)) <= set(found)
        assert found.index(shell.pid) < min(found.index(p) for p in descendants(shell.pid))
        grandchildren = descendants(shell.pid)
        kill_descendants(shell.pid)
        shell.wait(timeout=10)            # its children killed: wait returns
        assert shell.returncode == 0 or shell.returncode < 0
        for pid in grandchildren:
            wait_for_condition(lambda: not _alive(pid), timeout=10)
    finally:
        shell.kill()
        shell.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
