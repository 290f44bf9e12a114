"""Memory protection on a real cluster: the raylet's memory monitor kills
the worker of a task that drives the node above the memory usage
threshold; the task is retried (max_retries) and then fails with
OutOfMemoryError naming the node, the worker and the memory figures.

The threshold is set from the machine's current use, so that a task
allocating well under 2 GiB crosses it; nothing here comes close to
exhausting the machine.
"""
from __future__ import annotations

import os
import time

import pytest

import miniray as ray
from miniray.exceptions import OutOfMemoryError, RayError
from miniray.raylet.memory_monitor import GiB, read_memory_usage
from miniray.testing import wait_for_condition

pytestmark = pytest.mark.timeout(120)

# The threshold is MARGIN above what the machine uses when each test starts
# its cluster (other processes on the machine come and go: each test gets a
# fresh cluster and a fresh baseline); a task allocates at most CAP.
MARGIN = int(0.9 * GiB)
CAP = int(1.9 * GiB)
CHUNK = 64 * 1024 * 1024
ENV = ("MINIRAY_MEMORY_USAGE_THRESHOLD", "MINIRAY_MEMORY_MONITOR_REFRESH_MS")


@pytest.fixture
def memory_threshold():
    """A 2-CPU cluster whose raylet kills workers MARGIN above the memory in
    use now, checking every 50 ms; the environment is restored after."""
    usage = read_memory_usage()
    threshold = round((usage.used + MARGIN) / usage.total, 4)
    saved = {name: os.environ.get(name) for name in ENV}
    os.environ["MINIRAY_MEMORY_USAGE_THRESHOLD"] = str(threshold)
    os.environ["MINIRAY_MEMORY_MONITOR_REFRESH_MS"] = "50"
    try:
        ray.init(num_cpus=2)
        yield threshold
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def allocate(limit: int) -> str:
    """Allocate up to ``limit`` bytes, touching every page, a chunk at a
    time so the monitor sees memory grow; the monitor should kill us first."""
    blocks = []
    while len(blocks) * CHUNK < limit:
        block = bytearray(CHUNK)
        block[::4096] = b"\1" * len(range(0, CHUNK, 4096))
        blocks.append(block)
        time.sleep(0.02)
    return "survived"


@ray.remote
def hog(attempts_file: str) -> str:
    with open(attempts_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    return allocate(CAP)


@ray.remote
def hog_on_first_attempt(attempts_file: str) -> str:
    with open(attempts_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(attempts_file) as f:
        if len(f.read().split()) == 1:
            return allocate(CAP)
    return "done on attempt 2"


def attempts(path) -> list[int]:
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def test_task_without_retries_fails_with_out_of_memory(memory_threshold, tmp_path):
    path = tmp_path / "attempts"
    ref = hog.options(max_retries=0).remote(str(path))
    with pytest.raises(OutOfMemoryError) as info:
        ray.get(ref, timeout=60)
    assert isinstance(info.value, RayError)
    pids = attempts(path)
    assert len(pids) == 1
    message = str(info.value)
    node_id = ray.get_runtime_context().get_node_id()
    for part in ("hog", ref.task_id().hex(), f"ID: {node_id}", "IP: 127.0.0.1",
                 f"pid={pids[0]}", "GiB / ", f"threshold of {memory_threshold:g}",
                 "MINIRAY_MEMORY_USAGE_THRESHOLD", "MINIRAY_MEMORY_MONITOR_REFRESH_MS",
                 "num_cpus"):
        assert part in message, (part, message)


def test_task_is_retried_then_fails_with_out_of_memory(memory_threshold, tmp_path):
    path = tmp_path / "attempts"
    with pytest.raises(OutOfMemoryError) as info:
        ray.get(hog.options(max_retries=1).remote(str(path)), timeout=60)
    pids = attempts(path)
    assert len(pids) == 2 and pids[0] != pids[1]       # each on a new worker
    assert f"pid={pids[1]}" in str(info.value)


def test_retriable_task_killed_once_then_succeeds(memory_threshold, tmp_path):
    path = tmp_path / "attempts"
    ref = hog_on_first_attempt.options(max_retries=2).remote(str(path))
    assert ray.get(ref, timeout=60) == "done on attempt 2"
    assert len(attempts(path)) == 2


def test_cluster_keeps_working_after_a_kill(memory_threshold, tmp_path):
    with pytest.raises(OutOfMemoryError):
        ray.get(hog.options(max_retries=0).remote(str(tmp_path / "attempts")), timeout=60)

    def below_threshold():
        usage = read_memory_usage()
        return usage.used < usage.total * memory_threshold
    wait_for_condition(below_threshold, timeout=30)      # the killed worker is gone

    @ray.remote
    def add(a, b):
        return a + b

    assert ray.get([add.remote(i, 1) for i in range(4)], timeout=30) == [1, 2, 3, 4]
    assert ray.get(add.options(max_retries=0).remote(2, 3), timeout=30) == 5


@ray.remote(max_restarts=0)
class Hoarder:
    def hoard(self):
        return allocate(CAP)

    def ping(self):
        return "pong"


def test_an_actor_killed_for_memory_dies_saying_so(memory_threshold):
    actor = Hoarder.remote()
    assert ray.get(actor.ping.remote(), timeout=30) == "pong"
    # As in Ray: the call that was running fails with OutOfMemoryError ...
    with pytest.raises(OutOfMemoryError, match="Hoarder.hoard.*running low on memory"):
        ray.get(actor.hoard.remote(), timeout=60)
    # ... and later calls find the actor dead, with memory as the cause.
    with pytest.raises(ray.exceptions.ActorDiedError, match="out of memory"):
        ray.get(actor.ping.remote(), timeout=30)


@ray.remote(max_restarts=1, max_task_retries=1)
class RestartingHoarder:
    def hoard(self):
        return allocate(CAP)

    def ping(self):
        return "pong"


def test_a_restartable_actor_call_killed_for_memory_twice_fails_with_oom(memory_threshold):
    actor = RestartingHoarder.remote()
    with pytest.raises(OutOfMemoryError):
        ray.get(actor.hoard.remote(), timeout=90)
