"""The GCS dies and comes back: its supervisor restarts it, it reloads its
tables, and the cluster's processes reconnect and resync.

To hold the GCS down for as long as a check needs, a test stops its
supervisor (SIGSTOP) before killing the server and resumes it (SIGCONT)
when the outage should end: the supervisor then reaps the dead server and
starts a new one.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest

import miniray as ray
from miniray import exceptions
from miniray.common import config
from miniray.experimental import internal_kv
from miniray.testing import gcs_server_process, wait_for_condition
from miniray.util import state
from miniray.util.placement_group import (
    placement_group, placement_group_table, remove_placement_group)


@pytest.fixture
def cluster():
    context = ray.init(num_cpus=2, namespace="ft")
    yield context
    ray.shutdown()


@contextlib.contextmanager
def gcs_down():
    """The GCS server killed, and kept down until the block ends."""
    server = gcs_server_process()
    supervisor = psutil.Process(server.ppid())
    supervisor.suspend()
    server.kill()

    def dead():             # a zombie until the supervisor resumes and reaps it
        try:
            return server.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    wait_for_condition(dead, timeout=10)
    try:
        yield server.pid
    finally:
        supervisor.resume()


def wait_gcs_back(old_pid: int, timeout: float = 30.0) -> None:
    def back():
        try:
            return gcs_server_process().pid != old_pid
        except RuntimeError:
            return False
    wait_for_condition(back, timeout=timeout)


@ray.remote
class Counter:
    def __init__(self):
        self.value = 0

    def inc(self):
        self.value += 1
        return self.value

    def pid(self):
        return os.getpid()

    def reconstructed(self):
        return ray.get_runtime_context().was_current_actor_reconstructed


@ray.remote
def nap(seconds):
    time.sleep(seconds)
    return os.getpid()


@ray.remote
def square(x):
    return x * x


def test_state_survives_a_gcs_restart_and_work_goes_on(cluster):
    keeper = Counter.options(name="keeper", lifetime="detached").remote()
    plain = Counter.remote()
    assert ray.get([keeper.inc.remote(), plain.inc.remote()]) == [1, 1]
    group = placement_group([{"CPU": 1}], name="pg")
    ray.get(group.ready(), timeout=30)
    before = placement_group_table(group)
    internal_kv._internal_kv_put(b"key", b"value", namespace="ft")
    small, big = ray.put("small"), ray.put(np.arange(1_000_000))
    ray.get(square.remote(1))                 # the function is known to the GCS
    running = nap.remote(1.0)

    with gcs_down() as old_pid:
        # What needs no GCS keeps working while it is down.
        assert ray.get(plain.inc.remote(), timeout=30) == 2
        assert ray.get(keeper.inc.remote(), timeout=30) == 2
        assert ray.get(small) == "small"
        assert ray.get(big)[-1] == 999_999
        assert isinstance(ray.get(running, timeout=30), int)
        # (A new task may need the GCS: a fresh worker fetches its function.)
        later = square.remote(7)
        # What needs the GCS waits for it...
        results = {}

        def needs_gcs():
            results["lookup"] = ray.get_actor("keeper")
            results["new"] = Counter.remote()
            results["group"] = placement_group([{"CPU": 0.5}])
        waiter = threading.Thread(target=needs_gcs, daemon=True)
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not results
    # ...and completes once it is back.
    waiter.join(30)
    assert not waiter.is_alive()
    wait_gcs_back(old_pid)
    assert ray.get(later, timeout=30) == 49
    assert ray.get(results["lookup"].inc.remote(), timeout=30) == 3
    assert ray.get(results["new"].inc.remote(), timeout=30) == 1
    assert results["group"].wait(30)
    remove_placement_group(results["group"])
    assert internal_kv._internal_kv_get(b"key", namespace="ft") == b"value"
    after = placement_group_table(group)
    assert after["state"] == "CREATED"
    assert after["bundles_to_node_id"] == before["bundles_to_node_id"]
    names = {a.name for a in state.list_actors() if a.state == "ALIVE"}
    assert "keeper" in names
    # New placement groups and tasks still work.
    another = placement_group([{"CPU": 1}])
    ray.get(another.ready(), timeout=30)
    assert ray.get(square.options(placement_group=another).remote(3), timeout=30) == 9
    ray.kill(keeper)


@ray.remote
def hold_cpu(gate: str):
    """Hold a CPU until ``gate`` exists (no ``get``: that would lend it back)."""
    with open(f"{gate}.{os.getpid()}", "w"):
        pass
    while not os.path.exists(gate):
        time.sleep(0.01)
    return os.getpid()


def test_a_task_queued_for_a_busy_cpu_runs_while_the_gcs_is_down(cluster, tmp_path):
    # The raylet asked the GCS for a fresh view of the cluster before
    # queueing a lease it could not grant at once, and that ask waited for
    # the GCS to come back: queued work stalled through the whole outage.
    gate = str(tmp_path / "gate")
    # Not retriable: the driver cannot reuse their leases for the retriable
    # task below and must ask the raylet for another. (The same function:
    # whichever worker runs it has it already, without asking the GCS.)
    hogs = [hold_cpu.options(max_retries=0).remote(gate) for _ in range(2)]
    wait_for_condition(lambda: len(list(tmp_path.glob("gate.*"))) == 2, timeout=30)
    with gcs_down() as old_pid:
        # The raylet refreshes a view older than half a heartbeat period
        # before queueing: past a whole period, the last heartbeat's view
        # is that old. (The wait makes the old bug show every time; the
        # runtime owes nothing to it.)
        time.sleep(config.HEARTBEAT_PERIOD_S)
        queued = hold_cpu.remote(gate)
        ready, _ = ray.wait([queued], timeout=0.5)
        assert not ready                         # both CPUs are taken
        open(gate, "w").close()
        assert ray.get(queued, timeout=20) in ray.get(hogs, timeout=20)
    wait_gcs_back(old_pid)


def test_a_reserved_port_is_never_handed_out_yet_a_grpc_server_can_listen_on_it():
    # What the GCS's supervisor relies on to keep its port through restarts:
    # the kernel gives a bind to port 0 (every worker's server) only ports
    # nobody has bound.
    import socket
    from concurrent import futures

    import grpc

    from miniray.node import reserve_port
    from miniray.rpc.channels import GRPC_OPTIONS

    with reserve_port(None, config.NODE_IP) as reserved:
        port = reserved.getsockname()[1]
        handed_out = set()
        for _ in range(5000):
            with socket.socket() as other:
                other.bind((config.NODE_IP, 0))
                handed_out.add(other.getsockname()[1])
        assert port not in handed_out
        server = grpc.server(futures.ThreadPoolExecutor(1), options=GRPC_OPTIONS)
        try:
            assert server.add_insecure_port(f"{config.NODE_IP}:{port}") == port
            server.start()
        finally:
            server.stop(0)


def test_actor_worker_dying_while_the_gcs_is_down_restarts(cluster):
    actor = Counter.options(max_restarts=1, max_task_retries=-1).remote()
    pid = ray.get(actor.pid.remote())
    with gcs_down() as old_pid:
        psutil.Process(pid).kill()
    wait_gcs_back(old_pid)
    assert ray.get(actor.reconstructed.remote(), timeout=60) is True
    assert ray.get(actor.pid.remote(), timeout=30) != pid


def test_owner_dying_while_the_gcs_is_down_takes_its_actors(cluster):
    @ray.remote
    class Parent:
        def spawn(self):
            self.child = Counter.remote()
            ray.get(self.child.inc.remote())
            return self.child.pid.remote()

        def pid(self):
            return os.getpid()

    parent = Parent.remote()
    child_pid = ray.get(ray.get(parent.spawn.remote()))
    parent_pid = ray.get(parent.pid.remote())
    with gcs_down() as old_pid:
        psutil.Process(parent_pid).kill()
    wait_gcs_back(old_pid)
    # The child's owner died: the restarted GCS kills the child.
    wait_for_condition(lambda: not psutil.pid_exists(child_pid)
                       or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE,
                       timeout=30)


def test_unreachable_gcs_fails_calls_and_stops_raylets(monkeypatch, shutdown_only):
    monkeypatch.setenv("MINIRAY_GCS_RECONNECT_TIMEOUT_S", "2")
    monkeypatch.setattr(config, "GCS_RECONNECT_TIMEOUT_S", 2.0)
    ray.init(num_cpus=1)
    raylet = next(p for p in psutil.Process().children(recursive=True)
                  if "miniray.raylet" in p.cmdline())
    with gcs_down():
        started = time.monotonic()
        with pytest.raises(exceptions.RaySystemError, match="unreachable"):
            ray.get_actor("nobody")
        assert time.monotonic() - started < 20
        # The raylet gives up too, and exits (with its workers).
        raylet.wait(30)


LOAD_DRIVER = """
import sys, time
import miniray as ray
from miniray.util.placement_group import placement_group
ray.init(address=sys.argv[1], namespace="cli")

@ray.remote
class Keeper:
    def __init__(self):
        self.n = 0
    def inc(self):
        self.n += 1
        return self.n

@ray.remote
def add(a, b):
    time.sleep(0.01)
    return a + b

keeper = Keeper.options(name="survivor", namespace="cli", lifetime="detached").remote()
assert ray.get(keeper.inc.remote()) == 1
group = placement_group([{"CPU": 1}], name="kept", lifetime="detached")
ray.get(group.ready(), timeout=30)
print("READY", flush=True)
total, expected = 0, 0
deadline = time.monotonic() + 4
while time.monotonic() < deadline:         # keeps going through the kill
    refs = [add.remote(i, add.remote(i, 1)) for i in range(20)]
    total += sum(ray.get(refs, timeout=60))
    expected += sum(2 * i + 1 for i in range(20))
    ray.get(keeper.inc.remote(), timeout=60)
assert total == expected, (total, expected)
print("OK", flush=True)
"""

CHECK_DRIVER = """
import sys
import miniray as ray
from miniray.util.placement_group import get_placement_group
ray.init(address=sys.argv[1], namespace="cli")
keeper = ray.get_actor("survivor", namespace="cli")
print("COUNT", ray.get(keeper.inc.remote()) > 2)
print("PG", get_placement_group("kept").wait(10))
ray.kill(keeper)
"""


def test_cli_cluster_survives_its_gcs_being_killed_under_load(tmp_path):
    import subprocess
    import sys
    from miniray.node import free_port
    env = {k: v for k, v in os.environ.items()
           if k not in ("MINIRAY_ADDRESS", "RAY_ADDRESS")}
    env["MINIRAY_TEMP_DIR"] = str(tmp_path)
    port = free_port(None, config.NODE_IP)
    address = f"{config.NODE_IP}:{port}"
    head = subprocess.Popen(
        [sys.executable, "-m", "miniray.cli.main", "start", "--head", "--port", str(port),
         "--num-cpus", "2", "--block"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        wait_for_condition(lambda: _serving(address, env), timeout=30)
        driver = subprocess.Popen([sys.executable, "-c", LOAD_DRIVER, address], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, stdin=subprocess.DEVNULL)
        assert driver.stdout.readline().strip() == "READY"
        time.sleep(1.0)         # under load: tasks in flight when the GCS goes
        old = gcs_server_process(address)
        old.kill()
        out, err = driver.communicate(timeout=90)
        assert driver.returncode == 0, err
        assert "OK" in out
        assert gcs_server_process(address).pid != old.pid
        check = subprocess.run([sys.executable, "-c", CHECK_DRIVER, address], env=env,
                               capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
        assert check.returncode == 0, check.stderr
        assert "COUNT True" in check.stdout and "PG True" in check.stdout
    finally:
        head.send_signal(signal.SIGTERM)
        head.communicate(timeout=30)
    wait_for_condition(lambda: not _processes_on(port), timeout=15)


def _serving(address: str, env: dict) -> bool:
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "miniray.cli.main", "status",
                           "--address", address], env=env, capture_output=True,
                          timeout=30, stdin=subprocess.DEVNULL).returncode == 0


def _processes_on(port: int) -> list:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "miniray" in cmdline and str(port) in cmdline:
            found.append(proc.pid)
    return found


def _alive_nodes(address: str) -> set:
    from miniray.node import get_nodes
    return {bytes(n.node_id) for n in get_nodes(address) if n.alive}


def test_health_checks_find_a_killed_node_before_its_heartbeats_time_out(monkeypatch):
    """A killed raylet refuses the GCS's probes: it is declared dead after
    HEALTH_CHECK_FAILURE_THRESHOLD of them, long before the heartbeat
    timeout (set far out here so only the probes can find it)."""
    from miniray.testing import Cluster
    monkeypatch.setenv("MINIRAY_NODE_DEATH_TIMEOUT_S", "120")
    monkeypatch.setenv("MINIRAY_HEALTH_CHECK_PERIOD_S", "0.2")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        doomed = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cluster.kill_node(doomed)
        wait_for_condition(lambda: bytes(doomed.node_id) not in _alive_nodes(
            cluster.address), timeout=30)
    finally:
        cluster.shutdown()


def test_a_node_declared_dead_shuts_down_instead_of_coming_back(monkeypatch):
    """A raylet that stops answering (SIGSTOP) is declared dead; when it
    wakes up it learns so from the GCS and exits, with its workers."""
    from miniray.testing import Cluster
    monkeypatch.setenv("MINIRAY_HEALTH_CHECK_PERIOD_S", "0.2")
    monkeypatch.setenv("MINIRAY_HEALTH_CHECK_TIMEOUT_S", "0.5")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        frozen = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        raylet = psutil.Process(frozen.processes[0].pid)
        raylet.suspend()
        try:
            wait_for_condition(lambda: bytes(frozen.node_id) not in _alive_nodes(
                cluster.address), timeout=30)
        finally:
            raylet.resume()
        frozen.processes[0].wait(30)         # it shut itself down
        cluster.worker_nodes.remove(frozen)
        frozen.stop()                        # its files
        assert bytes(frozen.node_id) not in _alive_nodes(cluster.address)
    finally:
        cluster.shutdown()


def test_the_gcs_keeps_a_bounded_number_of_dead_actors(monkeypatch, shutdown_only):
    # Ray's maximum_gcs_destroyed_actor_cached_count: the longest dead go
    # first. A handle that first asks about a forgotten actor gets
    # ActorDiedError, not a hang.
    import cloudpickle
    monkeypatch.setenv("MINIRAY_MAXIMUM_GCS_DESTROYED_ACTOR_CACHED_COUNT", "2")
    ray.init(num_cpus=2)
    victim = Counter.remote()
    ray.get(victim.inc.remote())
    wrapped = cloudpickle.dumps(victim)
    ray.kill(victim)
    others = [Counter.remote() for _ in range(3)]
    ray.get([a.inc.remote() for a in others])
    for actor in others:
        ray.kill(actor)
    wait_for_condition(lambda: sum(a.state == "DEAD" for a in state.list_actors()) == 2,
                       timeout=30)
    assert victim._actor_id.hex() not in {a.actor_id for a in state.list_actors()}

    @ray.remote
    def call(wrapped):
        handle = cloudpickle.loads(wrapped)          # never seen by this worker
        try:
            ray.get(handle.inc.remote(), timeout=30)
        except exceptions.ActorDiedError as exc:
            return str(exc)

    assert "no longer keeps its record" in ray.get(call.remote(wrapped), timeout=60)


def test_the_gcs_keeps_a_bounded_number_of_removed_placement_groups(monkeypatch,
                                                                   shutdown_only):
    # A program that makes and removes groups all day must not grow the
    # GCS's tables (nor their durable copy): the longest removed go first.
    monkeypatch.setenv("MINIRAY_MAXIMUM_GCS_REMOVED_PLACEMENT_GROUP_COUNT", "2")
    ray.init(num_cpus=2)
    kept = placement_group([{"CPU": 1}])
    ray.get(kept.ready(), timeout=30)
    removed = []
    for _ in range(4):
        group = placement_group([{"CPU": 0.5}])
        ray.get(group.ready(), timeout=30)
        remove_placement_group(group)
        removed.append(group.id.hex())
    table = placement_group_table()
    assert set(table) == {kept.id.hex(), *removed[-2:]}
    assert all(table[g]["state"] == "REMOVED" for g in removed[-2:])
    assert table[kept.id.hex()]["state"] == "CREATED"
    # Their bundles all went back, forgotten or not.
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 1.0, timeout=30)
