"""tqdm_ray on a real cluster: bars in tasks and actors are drawn by the
driver, and what the tasks print meanwhile stays whole, on lines of its own.

Each test runs a driver script in a subprocess (with a deadline) and reads
what it wrote: through a pipe (no terminal: plain lines), or through a
pseudo-terminal whose screen is rebuilt with miniray.testing.TerminalScreen.
"""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time

import pytest

import miniray
from miniray.testing import TerminalScreen

DEADLINE_S = 90

DRIVER = textwrap.dedent("""
    import time
    import miniray
    from miniray.experimental import tqdm_ray

    miniray.init(num_cpus=2, include_dashboard=False)

    @miniray.remote
    def f():
        for i in tqdm_ray.tqdm(range(50), desc="work"):
            time.sleep(0.01)
            if i == 25:
                print("line from the task")
        print("the task is done")
        return 50

    @miniray.remote
    class Counter:
        def count(self, n):
            with tqdm_ray.tqdm(total=n, desc="counting", unit="step") as bar:
                for i in range(n):
                    time.sleep(0.02)
                    bar.update(1)
                    if i == n // 2:
                        print("line from the actor")
            return n

    counter = Counter.remote()
    assert miniray.get([f.remote(), counter.count.remote(20)]) == [50, 20]
    print("driver got", 50 + 20)
""")


def _env(**extra) -> dict:
    src = os.path.dirname(os.path.dirname(miniray.__file__))
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def test_bars_and_task_output_without_a_terminal(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          check=False,
                          timeout=DEADLINE_S, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "\x1b" not in out                     # no cursor moves into a pipe
    final = re.findall(r"^\(f pid=\d+\) work: 100%\|.{10}\| 50/50 \[\d\d:\d\d<00:00, .*\]$",
                       out, re.MULTILINE)
    assert len(final) == 1, out
    assert re.search(r"^\(Counter pid=\d+\) counting: 100%\|.{10}\| 20/20 \[.*step/s\]$",
                     out, re.MULTILINE), out
    for line in ("line from the task", "the task is done"):
        assert re.search(rf"^\(f pid=\d+\) {line}$", out, re.MULTILINE), out
    assert re.search(r"^\(Counter pid=\d+\) line from the actor$", out, re.MULTILINE), out
    assert out.rstrip().endswith("driver got 70")


def _run_in_terminal(script, columns: int = 100) -> str:
    """Run ``script`` with a pseudo-terminal as its stdout; what it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave,
                            env=_env(TERM="xterm", COLUMNS=str(columns)))
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail("the driver did not finish in time:\n"
                            + b"".join(chunks).decode(errors="replace"))
            ready, _, _ = select.select([master], [], [], remaining)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:                   # EIO: every writer has closed the tty
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=DEADLINE_S) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_bars_are_drawn_in_place_in_a_terminal_and_output_goes_above(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    raw = _run_in_terminal(script)
    assert "\x1b[K" in raw and "\x1b[J" in raw          # drawn and redrawn in place
    screen = [line for line in TerminalScreen().feed(raw).lines if line]
    shown = "\n".join(screen)
    # What is left: each line printed once and whole, each bar's final line once.
    for pattern in (r"\(f pid=\d+\) line from the task", r"\(f pid=\d+\) the task is done",
                    r"\(Counter pid=\d+\) line from the actor", r"driver got 70",
                    r"\(f pid=\d+\) work: 100%\|█{10,}\| 50/50 \[.*\]",
                    r"\(Counter pid=\d+\) counting: 100%\|█{10,}\| 20/20 \[.*\]"):
        assert len([line for line in screen if re.fullmatch(pattern, line)]) == 1, shown
    assert len(screen) == 6, shown                      # no stale or broken bar left
    assert all(len(line) < 100 for line in screen), shown
