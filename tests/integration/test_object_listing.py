"""Every object reference in the cluster, as ``list_objects`` and
``miniray memory`` show them (Ray's reference types): a small put inline in
the driver, a large one in the store (read back, so its value maps the
store), an argument of a task blocked on a signal, a ref inside another
object, a ref borrowed by an actor, actor handles; a released ref goes."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import miniray as ray
from miniray.testing import SignalActor, wait_for_condition
from miniray.util import state

pytestmark = [pytest.mark.usefixtures("ray_start"), pytest.mark.timeout(180)]


@ray.remote
class Holder:
    def hold(self, refs):
        self.refs = refs
        return os.getpid()


@ray.remote
def blocked(value, signal):
    ray.get(signal.wait.remote())
    return len(value)


def references(object_id: str, pid: int | None = None) -> list:
    return [o for o in state.list_objects(filters=[("object_id", "=", object_id)],
                                          limit=-1)
            if pid is None or o.pid == pid]


def the_reference(ref, pid: int) -> state.ObjectState:
    found = {}

    def listed():
        found["refs"] = references(ref.hex(), pid)
        return len(found["refs"]) == 1
    wait_for_condition(listed, timeout=20)
    return found["refs"][0]


@pytest.fixture(scope="module")
def scene():
    driver = os.getpid()
    small = ray.put(b"x" * 100)
    big = ray.put(np.zeros(300_000))            # 2.4 MB: in the store
    view = ray.get(big)                         # maps the store: pinned
    unread = ray.put(np.zeros(200_000))
    inner = ray.put(b"inner")
    outer = ray.put([inner])
    inner_hex = inner.hex()
    del inner                                   # alive only inside outer's value
    signal = SignalActor.remote()
    argument = ray.put(b"argument")
    pending = blocked.remote(argument, signal)
    holder = Holder.remote()
    borrowed = ray.put(b"borrowed")
    holder_pid = ray.get(holder.hold.remote([borrowed]))
    yield dict(driver=driver, small=small, big=big, view=view, unread=unread,
               outer=outer, inner_hex=inner_hex, signal=signal, argument=argument,
               pending=pending, holder=holder, holder_pid=holder_pid,
               borrowed=borrowed)
    ray.get(signal.send.remote())
    assert ray.get(pending) == len(b"argument")


def test_each_reference_type(scene):
    driver = scene["driver"]
    small = the_reference(scene["small"], driver)
    assert (small.reference_type, small.storage, small.type) == (
        "LOCAL_REFERENCE", "INLINE", "DRIVER")
    assert small.owned and 100 < small.object_size < 300
    assert small.task_status == "FINISHED" and small.call_site == "disabled"
    assert small.ip and small.node_id and small.worker_id

    big = the_reference(scene["big"], driver)
    assert (big.reference_type, big.storage) == ("PINNED_IN_MEMORY", "STORE")
    assert 2_400_000 <= big.object_size < 2_410_000
    assert big.locations == [big.node_id]
    # A store object nobody read back is a local reference, as in Ray.
    unread = the_reference(scene["unread"], driver)
    assert (unread.reference_type, unread.storage) == ("LOCAL_REFERENCE", "STORE")

    inner = references(scene["inner_hex"], driver)
    assert [o.reference_type for o in inner] == ["CAPTURED_IN_OBJECT"]
    assert the_reference(scene["outer"], driver).reference_type == "LOCAL_REFERENCE"

    argument = the_reference(scene["argument"], driver)
    assert argument.reference_type == "USED_BY_PENDING_TASK"
    pending = the_reference(scene["pending"], driver)
    assert pending.reference_type == "LOCAL_REFERENCE"
    assert pending.task_status in ("PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT",
                                   "SUBMITTED_TO_WORKER")
    assert pending.object_size == -1 and pending.storage == "UNKNOWN"

    borrowed = the_reference(scene["borrowed"], scene["holder_pid"])
    assert (borrowed.reference_type, borrowed.type) == ("LOCAL_REFERENCE", "WORKER")
    assert not borrowed.owned and borrowed.owner_worker_id == small.worker_id
    assert borrowed.task_status == "NIL"
    owner_side = the_reference(scene["borrowed"], driver)
    assert owner_side.owned and owner_side.num_borrowers == 1

    handles = [o for o in state.list_objects(
        filters=[("reference_type", "=", "actor_handle"), ("pid", "=", str(driver))],
        limit=-1)]
    assert len(handles) >= 2                    # the signal's and the holder's


def test_released_reference_disappears(scene):
    ref = ray.put(b"short-lived")
    object_id = ref.hex()
    the_reference(ref, scene["driver"])
    del ref
    wait_for_condition(lambda: not references(object_id), timeout=20)


def test_summary_groups_by_call_site(scene):
    summary = state.summarize_objects()["cluster"]
    assert summary["callsite_enabled"] is False
    group = summary["summary"]["disabled"]
    assert group["total_objects"] == summary["total_objects"] >= 8
    assert group["ref_type_counts"]["PINNED_IN_MEMORY"] >= 1
    assert group["ref_type_counts"]["USED_BY_PENDING_TASK"] >= 1
    assert group["total_num_workers"] >= 2 and summary["total_size_mb"] >= 2


def memory_cli(*args) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MINIRAY_ADDRESS", "RAY_ADDRESS")}
    env["COLUMNS"] = "80"
    address = ray.get_runtime_context().gcs_address
    result = subprocess.run([sys.executable, "-m", "miniray.cli.main", "memory",
                             "--address", address, *args], env=env, text=True,
                            capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_memory_cli(scene):
    the_reference(scene["argument"], scene["driver"])
    out = memory_cli()
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    assert "Grouping by node address" in out and "--- Summary for node address:" in out
    for kind in ("LOCAL_REFERENCE", "PINNED_IN_MEMORY", "USED_BY_PENDING_TASK",
                 "CAPTURED_IN_OBJECT", "ACTOR_HANDLE"):
        assert kind in out, out
    # Full ids, as Ray shows them: a driver's put id is not a row of zeros.
    assert f"  {scene['big'].hex()}" in lines
    row = lines[lines.index(f"  {scene['big'].hex()}") - 1].split()
    assert row[:2] == [str(scene["driver"]), "Driver"] and "PINNED_IN_MEMORY" in row
    assert "MINIRAY_RECORD_REF_CREATION_SITES=1" in out
    assert "Aggregate object store stats across all nodes" in out

    stats = memory_cli("--stats-only")
    assert "--- Summary for node address:" in stats and "OBJECT_REF" not in stats
    by_site = memory_cli("--group-by", "STACK_TRACE", "--sort-by", "PID", "--units", "KB")
    assert "--- Summary for call site: disabled ---" in by_site
    assert "2400." in by_site and " KB" in by_site          # 2.4 MB in decimal KB
    wide = memory_cli("--no-format")
    line = next(line for line in wide.splitlines() if scene["big"].hex() in line)
    assert "PINNED_IN_MEMORY" in line and str(scene["driver"]) in line


CALL_SITES = """
import miniray as ray
from miniray.util.state import list_objects, summarize_objects
ray.init(num_cpus=1, include_dashboard=False)

@ray.remote
def f(x):
    return 1

@ray.remote
class Holder:
    def hold(self, refs):
        self.refs = refs
        return 1

a = ray.put(b"x")
b = f.remote(a)
holder = Holder.remote()
ray.get(holder.hold.remote([a]))
for o in list_objects(limit=-1):
    print("SITE", o.call_site)
print("ENABLED", summarize_objects()["cluster"]["callsite_enabled"])
ray.shutdown()
"""


def test_call_sites_when_recorded(tmp_path):
    """MINIRAY_RECORD_REF_CREATION_SITES=1 (read when a process starts, so
    in a driver of its own, whose workers inherit it)."""
    script = tmp_path / "sites.py"
    script.write_text(CALL_SITES)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MINIRAY_ADDRESS", "RAY_ADDRESS")}
    env["MINIRAY_RECORD_REF_CREATION_SITES"] = "1"
    result = subprocess.run([sys.executable, str(script)], env=env, text=True,
                            capture_output=True, timeout=120, cwd=tmp_path,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    sites = {line[5:] for line in result.stdout.splitlines() if line.startswith("SITE ")}
    assert "(put object) | sites.py:<module>:16" in sites, result.stdout
    assert "(task call) | sites.py:<module>:17" in sites, result.stdout
    assert "(deserialize task arg) Holder.hold" in sites, result.stdout
    assert "(actor handle) | sites.py:<module>:18" in sites, result.stdout
    assert "ENABLED True" in result.stdout


def test_a_retried_tasks_return_shows_its_attempt_number(tmp_path):
    marker = tmp_path / "crashed-once"

    @ray.remote(max_retries=2)
    def crash_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)              # a system failure: the task is retried
        return "second try"

    ref = crash_once.remote(str(marker))
    assert ray.get(ref, timeout=60) == "second try"
    (record,) = references(ref.hex(), os.getpid())
    assert record.attempt_number == 1 and record.task_status == "FINISHED"
    first_try = ray.put("x")
    (put_record,) = references(first_try.hex(), os.getpid())
    assert put_record.attempt_number == 0
