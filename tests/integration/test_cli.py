"""The ``miniray`` command line: start / status / stop, run as subprocesses.

The tests share one cluster started with ``miniray start --head`` on a free
port. They run with MINIRAY_TEMP_DIR pointing at a private directory, so the
current-cluster file and session directories are theirs alone. ``miniray
stop`` ends *every* miniray process on the machine (that is what it is for),
so it runs once, in the last test; the fixture runs it again at teardown only
if that test did not leave the machine clean.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from miniray.node import free_port

pytestmark = pytest.mark.timeout(60)

MODULES = ("miniray.gcs", "miniray.raylet", "miniray.core_worker")

DRIVER = textwrap.dedent("""
    import miniray as ray
    ray.init(address="auto")

    @ray.remote
    def f():
        return 42

    print(ray.get(f.remote()))
""")


# --- helpers ------------------------------------------------------------------------
def make_env(temp_root) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MINIRAY_ADDRESS", "RAY_ADDRESS")}
    env["MINIRAY_TEMP_DIR"] = str(temp_root)
    return env


def cli(env, *args, timeout=45) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "miniray.cli.main", *args],
                          env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def run_driver(env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=45,
                          stdin=subprocess.DEVNULL)


def poll(condition, timeout=20.0, interval=0.05, what="condition"):
    """Return condition()'s first truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not met within {timeout}s")
        time.sleep(interval)


def miniray_processes() -> dict[int, tuple[float, str]]:
    """pid -> (create_time, command line) of every process running a miniray
    module on this machine."""
    from miniray.cli.stop import is_titled_worker
    found = {}
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        cmdline = proc.info["cmdline"] or []
        if any(module in cmdline for module in MODULES) or \
                is_titled_worker(proc, cmdline):
            found[proc.pid] = (proc.info["create_time"], " ".join(cmdline))
    return found


def status_until(env, *needles, timeout=20.0) -> str:
    """Run `miniray status` until its output contains every needle."""
    last = {}

    def check():
        result = cli(env, "status")
        last["out"] = result.stdout + result.stderr
        return result.returncode == 0 and all(n in result.stdout for n in needles) \
            and result.stdout
    deadline = time.monotonic() + timeout
    while True:
        out = check()
        if out:
            return out
        if time.monotonic() > deadline:
            pytest.fail(f"`miniray status` never showed {needles}:\n{last['out']}")
        time.sleep(0.1)


# --- fixtures --------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    temp_root = tmp_path_factory.mktemp("miniray-cli")
    env = make_env(temp_root)
    port = free_port()
    state = {"env": env, "temp_root": str(temp_root), "port": port,
             "address": f"127.0.0.1:{port}", "clean": False, "workdir": str(temp_root)}
    try:
        result = cli(env, "start", "--head", "--port", str(port), "--num-cpus", "2",
                     "--resources", '{"custom": 2}',
                     "--object-store-memory", str(256 * 1024 * 1024))
        state["start"] = result
        assert result.returncode == 0, result.stdout + result.stderr
        yield state
    finally:
        if not state["clean"]:
            cli(env, "stop")
        shutil.rmtree(temp_root, ignore_errors=True)


# --- tests without a cluster --------------------------------------------------------
def test_help():
    env = make_env("/nonexistent-miniray-test-root")
    result = cli(env, "--help")
    assert result.returncode == 0
    for command in ("start", "stop", "status"):
        assert command in result.stdout
        sub = cli(env, command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert f"usage: miniray {command}" in sub.stdout
    assert "--num-cpus" in cli(env, "start", "--help").stdout
    script = shutil.which("miniray")
    if script:
        result = subprocess.run([script, "--help"], capture_output=True, text=True,
                                env=env, timeout=30)
        assert result.returncode == 0 and "start" in result.stdout


@pytest.mark.parametrize("cmdline, kind", [
    (["/usr/bin/python3", "-m", "miniray.gcs", "--port", "1"], "gcs"),
    (["python", "-u", "-m", "miniray.raylet", "--head"], "raylet"),
    (["python3.11", "-W", "ignore", "-mminiray.core_worker"], "core_worker"),
    (["python", "-m", "pytest", "-m", "miniray.gcs"], None),
    (["pytest", "-m", "miniray.raylet"], None),
    (["python", "driver.py", "-m", "miniray.gcs"], None),
    (["python", "-c", "pass", "-m", "miniray.gcs"], None),
    (["bash", "-c", "python -m miniray.gcs"], None),
    ([], None),
])
def test_stop_recognises_only_miniray_processes(cmdline, kind):
    from miniray.cli.stop import process_kind
    assert process_kind(cmdline) == kind


@pytest.mark.parametrize("args, message", [
    ((), "--head"),
    (("--head", "--resources", "{bad"), "JSON"),
    (("--head", "--resources", "[1, 2]"), "JSON object"),
    (("--head", "--resources", '{"custom": -1}'), "non-negative"),
    (("--head", "--resources", '{"CPU": 2}'), "num_cpus"),
    (("--head", "--num-cpus", "-1"), "--num-cpus"),
    (("--head", "--num-cpus", "two"), "--num-cpus"),
    (("--head", "--port", "70000"), "--port"),
    (("--head", "--address", "127.0.0.1:1"), "not allowed with"),
    (("--address", "127.0.0.1:1", "--port", "5000"), "--port"),
    (("--address", "nohostport",), "HOST:PORT"),
    (("--head", "--bogus"), "unrecognized arguments"),
])
def test_start_rejects_bad_arguments(tmp_path, args, message):
    env = make_env(tmp_path)
    result = cli(env, "start", *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not glob.glob(os.path.join(tmp_path, "session_*"))


def test_join_unreachable_cluster_fails(tmp_path):
    env = make_env(tmp_path)
    result = cli(env, "start", f"--address=127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "could not connect" in result.stderr
    assert not glob.glob(os.path.join(tmp_path, "session_*"))


def test_status_without_cluster(tmp_path):
    env = make_env(tmp_path)
    result = cli(env, "status")
    assert result.returncode == 1
    assert "No miniray cluster is running" in result.stderr
    result = cli(env, "status", "--address", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "Could not connect" in result.stderr
    assert "Traceback" not in result.stderr


# --- the shared cluster --------------------------------------------------------------
def test_start_head_prints_how_to_connect(cluster):
    out = cluster["start"].stdout
    address = cluster["address"]
    assert "miniray runtime started" in out
    assert 'ray.init(address="auto")' in out
    assert f"miniray start --address='{address}'" in out
    assert "miniray stop" in out
    with open(os.path.join(cluster["temp_root"], "current_cluster")) as f:
        assert f.read().strip() == address


def test_status_shows_head(cluster):
    node_id = re.search(r"Node ID: ([0-9a-f]+)", cluster["start"].stdout).group(1)
    out = status_until(cluster["env"], "0.0/2.0 CPU")
    assert f"GCS address: {cluster['address']}" in out
    assert "Nodes: 1 alive, 0 dead" in out
    assert node_id in out
    assert "role: head" in out
    assert "0.0/2.0 custom" in out
    assert "0.25GiB object_store_memory" in out
    assert re.search(r"workers: \d+", out)
    # An explicit --address works the same.
    result = cli(cluster["env"], "status", "--address", cluster["address"])
    assert result.returncode == 0 and node_id in result.stdout


def test_second_head_is_refused(cluster):
    result = cli(cluster["env"], "start", "--head", "--port", str(free_port()))
    assert result.returncode == 1
    assert "already running" in result.stderr
    assert "miniray stop" in result.stderr


def test_head_on_busy_port_is_refused(cluster, tmp_path):
    env = make_env(tmp_path)             # no current cluster here
    result = cli(env, "start", "--head", "--port", str(cluster["port"]))
    assert result.returncode == 1
    assert "already in use" in result.stderr
    assert not glob.glob(os.path.join(tmp_path, "session_*"))


def test_drivers_connect_and_cluster_outlives_them(cluster):
    env, workdir = cluster["env"], cluster["workdir"]
    first = run_driver(env, workdir)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1] == "42"
    # The driver is gone; the cluster is not.
    status_until(env, "Nodes: 1 alive", "0.0/2.0 CPU")
    second = run_driver(env, workdir)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines()[-1] == "42"
    status_until(env, "Nodes: 1 alive")


PRINTING_DRIVER = textwrap.dedent("""
    import io, sys, time
    import miniray as ray

    seen = io.StringIO()

    class Tee:
        def write(self, text):
            seen.write(text)
            return sys.__stdout__.write(text)

        def flush(self):
            sys.__stdout__.flush()

    sys.stdout = Tee()
    ray.init(address="auto")

    @ray.remote
    def shout():
        print("hello from a task")

    ray.get(shout.remote())
    deadline = time.monotonic() + 20
    while "hello from a task" not in seen.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
""")


def test_task_output_reaches_the_driver(cluster):
    # The node's workers log to files; what a task prints is forwarded.
    result = subprocess.run([sys.executable, "-c", PRINTING_DRIVER], env=cluster["env"],
                            cwd=cluster["workdir"], capture_output=True, text=True,
                            timeout=45, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\(shout pid=\d+\) hello from a task", result.stdout), result.stdout


def test_worker_node_joins(cluster):
    env = cluster["env"]
    result = cli(env, "start", f"--address={cluster['address']}", "--num-cpus", "1",
                 "--resources", '{"side": 1}',
                 "--object-store-memory", str(128 * 1024 * 1024))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"joined the cluster at {cluster['address']}" in result.stdout
    node_id = re.search(r"Node ID: ([0-9a-f]+)", result.stdout).group(1)
    out = status_until(env, "Nodes: 2 alive", "0.0/3.0 CPU")
    assert node_id in out
    assert "role: worker" in out and "role: head" in out
    assert "0.0/1.0 side" in out
    # Drivers still work with two nodes.
    driver = run_driver(env, cluster["workdir"])
    assert driver.returncode == 0, driver.stderr
    assert driver.stdout.strip().splitlines()[-1] == "42"


def test_driver_elsewhere_needs_the_token_file(cluster, tmp_path):
    """A driver that can't find the cluster's files (another machine: here
    another temp root) is refused without the token, with a message saying
    how to give it; with MINIRAY_AUTH_TOKEN_FILE it connects."""
    token_path = os.path.join(cluster["temp_root"],
                              f"cluster_127.0.0.1_{cluster['port']}", "auth_token")
    assert os.stat(token_path).st_mode & 0o777 == 0o600
    copy = tmp_path / "cluster.token"
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(token_path, "rb") as source, os.fdopen(fd, "wb") as dest:
        dest.write(source.read())
    elsewhere = make_env(tmp_path / "other-machine")
    elsewhere["MINIRAY_ADDRESS"] = cluster["address"]
    refused = run_driver(elsewhere, cluster["workdir"])
    assert refused.returncode != 0
    assert "has no authentication token" in refused.stderr
    assert "MINIRAY_AUTH_TOKEN_FILE" in refused.stderr
    elsewhere["MINIRAY_AUTH_TOKEN_FILE"] = str(copy)
    connected = run_driver(elsewhere, cluster["workdir"])
    assert connected.returncode == 0 and connected.stdout.strip() == "42", connected.stderr
    status = cli(elsewhere, "status")
    assert status.returncode == 0 and cluster["address"] in status.stdout


def test_block_runs_in_foreground_until_signalled(tmp_path):
    env = make_env(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "miniray.cli.main", "start", "--head", "--block",
         "--port", str(port), "--num-cpus", "1",
         "--object-store-memory", str(128 * 1024 * 1024)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL)
    children: list = []
    try:
        def started():
            assert proc.poll() is None, proc.stdout.read()
            try:
                children[:] = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                return False
            return cli(env, "status").returncode == 0
        poll(started, timeout=30, what="the --block head to come up")
        assert any("miniray.gcs" in " ".join(c.cmdline()) for c in children)
        driver = run_driver(env, str(tmp_path))
        assert driver.returncode == 0, driver.stderr
        assert driver.stdout.strip().splitlines()[-1] == "42"

        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "Received SIGTERM" in out and "node stopped" in out

        def all_gone():
            return not [c for c in children if c.is_running()
                        and c.status() != psutil.STATUS_ZOMBIE]
        poll(all_gone, timeout=10, what="the --block node's processes to exit")
        assert not glob.glob(os.path.join(tmp_path, "session_*"))
        assert not os.path.exists(os.path.join(tmp_path, "current_cluster"))
        assert cli(env, "status").returncode == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass


def test_stop_ends_everything(cluster):
    """Last test of the module: `miniray stop` kills every miniray process."""
    env, address = cluster["env"], cluster["address"]
    before = miniray_processes()
    ours = {pid for pid, (_, cmd) in before.items()
            if address in cmd or f"--port {cluster['port']}" in cmd}
    assert len(ours) >= 3, before          # GCS and two raylets at least
    shm_before = set(glob.glob("/dev/shm/miniray-*"))
    sessions = {os.path.basename(s) for s in
                glob.glob(os.path.join(cluster["temp_root"], "session_*"))}
    assert len(sessions) == 2              # head and worker node

    result = cli(env, "stop")
    assert result.returncode == 0, result.stdout + result.stderr
    stopped = int(re.search(r"Stopped (\d+) miniray process", result.stdout).group(1))
    assert stopped >= len(ours)

    # Every miniray process that was running is gone. (Others may have started
    # since, if someone else runs miniray on this machine: those are not ours.)
    after = miniray_processes()
    survivors = {pid: cmd for pid, (created, cmd) in after.items()
                 if before.get(pid, (None,))[0] == created}
    assert not survivors, survivors
    assert not [cmd for _, cmd in after.values() if address in cmd]
    assert not (shm_before & set(glob.glob("/dev/shm/miniray-*")))
    for session in sessions:
        assert not glob.glob(f"/dev/shm/miniray-{session}-*")
    assert not glob.glob(os.path.join(cluster["temp_root"], "session_*"))
    assert not os.path.exists(os.path.join(cluster["temp_root"], "current_cluster"))
    assert cli(env, "status").returncode == 1

    cluster["clean"] = True

    # Idempotent: stopping again succeeds and finds nothing. (Skipped if
    # someone else started miniray processes meanwhile: no need to kill them.)
    if not miniray_processes():
        again = cli(env, "stop")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Did not find any active miniray processes" in again.stdout
