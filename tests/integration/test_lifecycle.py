"""Cluster lifecycle: init/shutdown, a driver killed or exiting, leaks."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import miniray as ray
from miniray.testing import wait_for_condition


def _miniray_processes_of(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def test_init_twice_and_shutdown(shutdown_only):
    ray.init(num_cpus=1)
    assert ray.is_initialized()
    with pytest.raises(RuntimeError, match="twice"):
        ray.init(num_cpus=1)
    ray.init(ignore_reinit_error=True)
    ray.shutdown()
    assert not ray.is_initialized()
    ray.shutdown()          # idempotent


def test_api_auto_initializes(shutdown_only):
    @ray.remote
    def f():
        return 3

    assert ray.get(f.remote()) == 3
    assert ray.is_initialized()


def test_a_handle_from_an_earlier_session_is_refused_at_once(shutdown_only):
    """As in Ray: after shutdown() and init(), an old actor handle names an
    actor this connection cannot find; the call fails when it is made."""
    @ray.remote
    class A:
        def f(self):
            return 1

    ray.init(num_cpus=1)
    actor = A.remote()
    assert ray.get(actor.f.remote()) == 1
    ray.shutdown()
    ray.init(num_cpus=1)
    with pytest.raises(ValueError, match="It might be dead or it's from a different cluster"):
        actor.f.remote()
    assert ray.get(A.remote().f.remote()) == 1


def test_init_rejects_bad_arguments(shutdown_only):
    with pytest.raises(RuntimeError, match="Unknown keyword"):
        ray.init(bogus=1)
    with pytest.raises(ValueError):
        ray.init(num_cpus=-1)
    with pytest.raises(ValueError):
        ray.init(resources={"CPU": 2})
    assert not ray.is_initialized()


SCRIPT = textwrap.dedent("""
    import sys, time
    import miniray as ray
    ray.init(num_cpus=2)

    @ray.remote
    def f():
        return 1

    ref = ray.put(bytes(10 * 1024 * 1024))
    ray.get([f.remote() for _ in range(4)])
    print("ready", flush=True)
    if sys.argv[1] == "hang":
        time.sleep(600)
""")


def _run_driver(tmp_path, mode):
    script = tmp_path / "driver.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE,
                            text=True)


def test_driver_exit_leaves_nothing(tmp_path):
    before = set(glob.glob("/dev/shm/miniray-*"))
    proc = _run_driver(tmp_path, "exit")
    out, _ = proc.communicate(timeout=60)
    assert "ready" in out and proc.returncode == 0
    assert set(glob.glob("/dev/shm/miniray-*")) <= before


def test_killed_driver_takes_its_cluster_down(tmp_path):
    before = set(glob.glob("/dev/shm/miniray-*"))
    proc = _run_driver(tmp_path, "hang")
    assert proc.stdout.readline().strip() == "ready"
    children = _miniray_processes_of(proc.pid)
    assert len(children) >= 3          # gcs, raylet, workers
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    wait_for_condition(lambda: not any(c.is_running() and c.status() != "zombie"
                                       for c in children), timeout=15)
    wait_for_condition(lambda: set(glob.glob("/dev/shm/miniray-*")) <= before, timeout=15)


ABANDONING_DRIVER = textwrap.dedent("""
    import sys
    import miniray as ray
    ray.init(address=sys.argv[1])

    @ray.remote
    def slow():
        import time
        time.sleep(5)

    @ray.remote
    class Holder:
        def ping(self):
            return 1

    holder = Holder.remote()
    ray.get(holder.ping.remote())
    refs = [slow.remote() for _ in range(20)]   # leases requested, workers starting
    print("leaving", flush=True)
""")


def test_a_driver_leaving_mid_work_leaves_no_workers_behind(tmp_path):
    from miniray.protocol import raylet_pb2, raylet_pb2_grpc
    from miniray.rpc.channels import authenticated, sync_channel
    from miniray.testing import Cluster

    cluster = Cluster()
    head = cluster.add_node(num_cpus=2)
    try:
        script = tmp_path / "driver.py"
        script.write_text(ABANDONING_DRIVER)
        out = subprocess.run([sys.executable, str(script), cluster.address],
                             capture_output=True, text=True, timeout=60)
        assert "leaving" in out.stdout, out.stderr
        node = next(n for n in __import__("miniray.node", fromlist=["x"]).get_nodes(
            cluster.address) if n.node_id == head.node_id)
        with sync_channel(f"{node.ip}:{node.raylet_port}") as channel:
            stub = authenticated(raylet_pb2_grpc.RayletServiceStub(channel))

            def settled():
                stats = stub.GetNodeStats(raylet_pb2.GetNodeStatsRequest(), timeout=5)
                return stats.num_leases == 0 and stats.num_workers == stats.num_idle_workers \
                    and stats.resources_available["CPU"] == 2

            wait_for_condition(settled, timeout=30)
    finally:
        cluster.shutdown()


FORKING_DRIVER = textwrap.dedent("""
    import multiprocessing as mp
    import miniray as ray

    def square(x):
        return x * x

    @ray.remote
    def f(x):
        return x + 1

    if __name__ == "__main__":
        ray.init(num_cpus=2)
        for round_ in range(10):
            refs = [f.remote(i) for i in range(32)]    # gRPC busy while forking
            with mp.get_context("fork").Pool(4) as pool:
                assert pool.map_async(square, range(64)).get(timeout=30) == [
                    x * x for x in range(64)]
            assert ray.get(refs) == list(range(1, 33))
        ray.shutdown()
        print("forked fine", flush=True)
""")


def test_a_driver_can_fork_a_multiprocessing_pool_after_init(tmp_path):
    # Children forked from a driver whose gRPC threads are running must not
    # crash in gRPC's fork handlers (Ray's test_multiprocessing forks a stdlib
    # Pool next to ray's own). The child never touches miniray.
    script = tmp_path / "driver.py"
    script.write_text(FORKING_DRIVER)
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=150, env=env)
    assert out.returncode == 0 and "forked fine" in out.stdout, out.stderr[-3000:]


def test_a_second_drivers_init_auto_finds_a_cluster_init_started(tmp_path, shutdown_only):
    """As in Ray: init("auto") connects to a running cluster on this machine
    even when no `miniray start` recorded one (here: the one this test's
    init() started), and its work runs there as a job of its own."""
    context = ray.init(num_cpus=1)
    script = tmp_path / "second.py"
    script.write_text(
        "import miniray\n"
        "ctx = miniray.init('auto')\n"
        "@miniray.remote\n"
        "class A:\n"
        "    def ready(self):\n"
        "        return miniray.get_runtime_context().get_job_id()\n"
        "print(ctx.address_info['gcs_address'], miniray.get(A.remote().ready.remote()))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MINIRAY_ADDRESS", "RAY_ADDRESS")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=90)
    assert out.returncode == 0, out.stderr
    address, job_id = out.stdout.split()
    assert address == context.address_info["gcs_address"]
    assert job_id != ray.get_runtime_context().get_job_id()


# Tasks and an actor that start subprocesses and leave them running (Ray's
# test_failure_3 does the same): the pids go to a file the test reads.
LEAKING_DRIVER = textwrap.dedent("""
    import json, multiprocessing, os, sys, time
    import miniray as ray

    def start_sleeper():
        proc = multiprocessing.Process(target=time.sleep, args=(1000,), daemon=True)
        proc.start()
        return proc.pid

    @ray.remote
    class Leaker:
        def leak(self, n):
            return [start_sleeper() for _ in range(n)]

    @ray.remote
    def leak():
        return start_sleeper()

    ray.init(address=sys.argv[1])
    leaker = Leaker.remote()        # kept: a dead actor's subprocesses die with it
    pids = ray.get(leaker.leak.remote(3)) + ray.get([leak.remote() for _ in range(3)])
    with open(sys.argv[2] + ".tmp", "w") as f:
        json.dump(pids, f)
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    while True:
        time.sleep(1)
""")


def _start_leaking_driver(tmp_path, address):
    script, pids = tmp_path / "driver.py", tmp_path / "pids.json"
    script.write_text(LEAKING_DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), address, str(pids)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_condition(lambda: pids.exists() or driver.poll() is not None, timeout=60)
    assert pids.exists(), driver.stderr.read().decode()
    import json
    processes = [psutil.Process(pid) for pid in json.loads(pids.read_text())]
    assert len(processes) == 6
    wait_for_condition(lambda: all(p.status() == psutil.STATUS_SLEEPING
                                   for p in processes), timeout=10)
    return driver, processes


def _all_gone(processes) -> bool:
    def gone(proc):
        try:
            return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    return all(gone(p) for p in processes)


def test_subprocesses_of_tasks_die_with_their_driver(tmp_path):
    """As in Ray (kill_child_processes_on_worker_exit): when the driver is
    interrupted, its workers end and so does every process their tasks and
    actors started; the cluster goes on."""
    from miniray.testing import Cluster
    cluster = Cluster()
    cluster.add_node(num_cpus=4)
    driver = None
    try:
        driver, processes = _start_leaking_driver(tmp_path, cluster.address)
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=30)
        wait_for_condition(lambda: _all_gone(processes), timeout=30)
        ray.init(address=cluster.address)
        assert ray.get(ray.remote(lambda: 1).remote()) == 1
    finally:
        ray.shutdown()
        if driver is not None and driver.poll() is None:
            driver.kill()
        cluster.shutdown()


def test_subprocesses_of_tasks_die_with_their_raylet(tmp_path):
    """A node whose raylet is killed takes its workers' subprocesses along."""
    from miniray.testing import Cluster
    cluster = Cluster()
    cluster.add_node(num_cpus=0)               # the head: nothing runs here
    node = cluster.add_node(num_cpus=4)
    cluster.wait_for_nodes()
    driver = None
    try:
        driver, processes = _start_leaking_driver(tmp_path, cluster.address)
        cluster.kill_node(node)
        wait_for_condition(lambda: _all_gone(processes), timeout=30)
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        cluster.shutdown()


DETACHED_HOLDER_DRIVER = """
import os, sys
import miniray as ray

@ray.remote
def make(x):
    return os.getpid(), ray.put(x)          # owned by this task's worker

@ray.remote
class Holder:
    def invoke(self):
        self.ref = make.remote(42)
        ray.get(self.ref)

    def get(self):
        return self.ref

ray.init(address=sys.argv[1])
holder = Holder.options(name="holder", namespace="shared", lifetime="detached").remote()
ray.get(holder.invoke.remote())
"""


def test_work_for_a_detached_actor_outlives_the_driver(tmp_path, monkeypatch):
    """As in Ray (root_detached_actor_id): a task a detached actor submitted
    runs in a worker that the driver's exit does not end, and an idle worker
    that owns objects still in use is not reaped (Ray's idle workers refuse
    to exit then): an object that task's worker put and the actor holds
    stays readable (a driver's own task workers end with it: test_lifecycle)."""
    import subprocess
    import sys
    import time
    from miniray.testing import Cluster
    # Idle workers beyond the pool's soft limit (1 CPU: one worker) are
    # asked to leave after 0.2 s, so the reaper runs many times below.
    monkeypatch.setenv("MINIRAY_IDLE_WORKER_TIMEOUT_S", "0.2")
    cluster = Cluster()
    cluster.add_node(num_cpus=1)
    try:
        script = tmp_path / "driver.py"
        script.write_text(DETACHED_HOLDER_DRIVER)
        out = subprocess.run([sys.executable, str(script), cluster.address],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        ray.init(address=cluster.address)
        holder = ray.get_actor("holder", namespace="shared")
        outer = ray.get(holder.get.remote())
        pid, inner = ray.get(outer)
        watch_until = time.monotonic() + 2.0       # ten idle periods
        while time.monotonic() < watch_until:
            assert _running(pid), "the worker owning the object was ended"
            time.sleep(0.1)
        assert ray.get(inner, timeout=20) == 42
        ray.kill(holder)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_plain_init_joins_the_cluster_recorded_on_this_machine(tmp_path):
    """As in Ray: a driver's init() with no address joins the cluster that
    `miniray start` (or a testing.Cluster, like Ray's) recorded on this
    machine, reading its token, instead of starting a cluster of its own."""
    from miniray.testing import Cluster
    cluster = Cluster()
    cluster.add_node(num_cpus=1)
    try:
        script = tmp_path / "driver.py"
        script.write_text(textwrap.dedent("""
            import miniray as ray
            ray.init()
            print(ray.get_runtime_context().gcs_address, flush=True)
        """))
        env = {k: v for k, v in os.environ.items()
               if k not in ("MINIRAY_ADDRESS", "RAY_ADDRESS", "MINIRAY_AUTH_TOKEN")}
        out = subprocess.run([sys.executable, str(script)], capture_output=True,
                             text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-1] == cluster.address
    finally:
        cluster.shutdown()
