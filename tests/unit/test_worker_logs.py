"""Workers' log files and reading a node's logs (raylet/worker_logs.py):
files named and private as Ray's, the tee to the terminal in whole lines,
and ReadLog refusing anything but a plain file in the logs directory."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from miniray.common.validation import InvalidArgument
from miniray.raylet.worker_logs import (
    WorkerLogs, check_log_name, list_log_files, read_log)
from miniray.testing import wait_for_condition

pytestmark = pytest.mark.timeout(30)


def write(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("name", ["", ".", "..", "../gcs.log", "a/b", "/etc/passwd",
                                  "x\x00y", "y" * 256])
def test_log_names_are_never_paths(name):
    with pytest.raises(InvalidArgument):
        check_log_name(name)


def test_read_refuses_links_directories_and_what_is_outside(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    write(tmp_path / "secret", b"secret\n")
    os.symlink(tmp_path / "secret", logs / "link.out")
    (logs / "sub").mkdir()
    write(logs / "sub" / "inner.out", b"inner\n")
    for name in ("link.out", "sub", "missing.out"):
        with pytest.raises(FileNotFoundError):
            read_log(str(logs), name)
    with pytest.raises(InvalidArgument):
        read_log(str(logs), "../secret")
    with pytest.raises(InvalidArgument):
        read_log(str(logs), "sub/inner.out")
    write(logs / "gcs.log", b"ok\n")
    assert [f[0] for f in list_log_files(str(logs))] == ["gcs.log"]   # no link, no dir
    assert list_log_files(str(logs), "raylet*") == []


def test_read_from_an_offset_and_the_last_lines(tmp_path):
    write(tmp_path / "w.out", b"".join(b"line %d\n" % i for i in range(10)))
    data, offset, size = read_log(str(tmp_path), "w.out")
    assert offset == 0 and size == len(data) and data.count(b"\n") == 10
    assert read_log(str(tmp_path), "w.out", offset=7)[0].startswith(b"line 1\n")
    assert read_log(str(tmp_path), "w.out", offset=size + 100)[:2] == (b"", size)
    assert read_log(str(tmp_path), "w.out", tail_lines=2)[0] == b"line 8\nline 9\n"
    assert read_log(str(tmp_path), "w.out", tail_lines=50)[1] == 0
    assert read_log(str(tmp_path), "w.out", max_bytes=5)[0] == b"line "
    # A last line without its newline is a line.
    write(tmp_path / "p.out", b"a\nb\nc")
    assert read_log(str(tmp_path), "p.out", tail_lines=2)[0] == b"b\nc"
    # Lines longer than a read block.
    long = b"x" * 200_000
    write(tmp_path / "l.out", long + b"\n" + long + b"\nend\n")
    data, offset, _ = read_log(str(tmp_path), "l.out", tail_lines=2)
    assert data == long + b"\nend\n" and offset == len(long) + 1


def test_worker_files_are_private_and_named_after_the_pid(tmp_path):
    logs = WorkerLogs(str(tmp_path / "logs"), tee=False)
    files = logs.open("ab" * 28)
    proc = subprocess.Popen([sys.executable, "-c",
                             "import sys; print('out'); print('err', file=sys.stderr)"],
                            stdout=files.stdout, stderr=files.stderr)
    files.started(proc.pid)
    proc.wait(10)
    base = tmp_path / "logs" / f"worker-{'ab' * 28}-{proc.pid}"
    for suffix, text in (("out", "out\n"), ("err", "err\n")):
        path = f"{base}.{suffix}"
        assert open(path).read() == text
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(os.listdir(tmp_path / "logs")) == 2


def test_tee_copies_whole_lines_to_the_file_and_the_terminal(tmp_path):
    terminal_r, terminal_w = os.pipe()
    err_r, err_w = os.pipe()
    logs = WorkerLogs(str(tmp_path), tee=True, terminals=(terminal_w, err_w))
    files = logs.open("cd" * 28)
    script = ("import sys, time\n"
              "sys.stdout.write('par'); sys.stdout.flush(); time.sleep(0.05)\n"
              "sys.stdout.write('tial\\nsecond\\n'); sys.stdout.flush()\n"
              "sys.stdout.write('no newline'); sys.stdout.flush()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=files.stdout,
                            stderr=files.stderr)
    files.started(proc.pid)
    proc.wait(10)
    seen = b""
    os.set_blocking(terminal_r, False)

    def terminal_has_everything():
        nonlocal seen
        try:
            seen += os.read(terminal_r, 4096)
        except BlockingIOError:
            pass
        return seen.endswith(b"no newline")
    wait_for_condition(terminal_has_everything, timeout=10)
    assert seen == b"partial\nsecond\nno newline"
    path = tmp_path / f"worker-{'cd' * 28}-{proc.pid}.out"
    wait_for_condition(lambda: path.read_bytes() == seen, timeout=10)
    for fd in (terminal_r, terminal_w, err_r, err_w):
        os.close(fd)
