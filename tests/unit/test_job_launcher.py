"""The entrypoint launcher of job supervisors (supervisor._LAUNCHER), run
as the supervisor runs it: it exits as its command did, and it takes its
whole process group down when its parent is not the one it was given."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from miniray.job_submission.supervisor import _LAUNCHER


def _launch(command: str, parent: int | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(parent or os.getpid()), command],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.parametrize("command, code", [
    ("echo hi", 0), ("exit 3", 3), ("kill -TERM $$", -15), ("kill -KILL $$", -9)])
def test_the_launcher_exits_as_its_command(command, code):
    proc = _launch(command)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == code
    if code == 0:
        assert out == b"hi\n"


def test_the_launcher_ignores_sigterm_and_waits_for_its_command():
    proc = _launch("trap 'echo bye; exit 7' TERM; echo up; while :; do sleep 0.05; done")
    assert proc.stdout.readline() == b"up\n"
    os.killpg(proc.pid, 15)
    out, _ = proc.communicate(timeout=30)
    assert b"bye" in out and proc.returncode == 7


def test_the_launcher_kills_its_group_without_its_parent():
    proc = _launch("sleep 600 & wait", parent=1)        # not our parent: already "dead"
    proc.communicate(timeout=30)
    assert proc.returncode == -9
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)                           # nothing left in the group
