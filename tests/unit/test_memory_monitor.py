"""Unit tests for miniray.raylet.memory_monitor (which worker to kill when
the node runs low on memory; no processes, no sockets)."""
from __future__ import annotations

import os

import pytest

from miniray.raylet import memory_monitor as mm
from miniray.raylet.memory_monitor import Candidate, MemoryMonitor, MemoryUsage

GiB = mm.GiB
TOTAL = 16 * GiB


def usage(fraction: float) -> MemoryUsage:
    return MemoryUsage(int(TOTAL * fraction), TOTAL)


def worker(n: int, *, retriable: bool = True, started: float = 0.0,
           actor: bool = False) -> Candidate:
    return Candidate(bytes([n]) * 28, 1000 + n, retriable, started, is_actor=actor)


def monitor(threshold: float = 0.9) -> MemoryMonitor:
    return MemoryMonitor(threshold, node_id_hex="ab" * 28, node_ip="10.0.0.7")


# --- the threshold ---------------------------------------------------------------------

def test_above_threshold_is_strict():
    assert not mm.above_threshold(MemoryUsage(90, 100), 0.9)
    assert mm.above_threshold(MemoryUsage(91, 100), 0.9)


def test_unknown_total_is_never_above():
    assert not mm.above_threshold(MemoryUsage(5, 0), 0.5)
    assert MemoryUsage(5, 0).fraction == 0.0


def test_threshold_must_be_a_fraction():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            MemoryMonitor(bad)
    MemoryMonitor(0.0)
    MemoryMonitor(1.0)


def test_threshold_one_never_kills():
    assert monitor(1.0).check(MemoryUsage(TOTAL, TOTAL), [worker(1)]) is None


# --- whom to kill: retriable LIFO ----------------------------------------------------------

def test_below_threshold_kills_nobody():
    assert monitor().check(usage(0.5), [worker(1)]) is None


def test_no_candidates_kills_nobody():
    assert monitor().check(usage(0.99), []) is None


def test_most_recent_retriable_task_goes_first():
    candidates = [worker(1, started=1.0), worker(2, started=3.0), worker(3, started=2.0)]
    kill = monitor().check(usage(0.95), candidates)
    assert kill.victim == candidates[1]


def test_retriable_before_non_retriable_even_if_older():
    old_retriable = worker(1, started=1.0)
    new_fragile = worker(2, retriable=False, started=5.0)
    new_actor = worker(3, retriable=False, started=6.0, actor=True)
    order = mm.kill_order([new_fragile, old_retriable, new_actor])
    assert order == [old_retriable, new_actor, new_fragile]


def test_non_retriable_killed_when_nothing_else_left():
    only = worker(1, retriable=False, started=1.0)
    kill = monitor().check(usage(0.95), [only])
    assert kill.victim == only
    assert "no retriable task was running" in kill.message


def test_order_is_stable_for_equal_start_times():
    a, b = worker(2, started=1.0), worker(1, started=1.0)
    assert mm.pick_victim([a, b]) == mm.pick_victim([b, a]) == b


# --- one kill at a time ------------------------------------------------------------------

def test_one_kill_at_a_time_until_the_process_exits():
    mon = monitor()
    first = mon.check(usage(0.99), [worker(1, started=1.0), worker(2, started=2.0)])
    assert first.victim.worker_id == worker(2).worker_id
    assert mon.killing == worker(2).worker_id
    # Memory is still high (the process has not exited yet): no second kill.
    assert mon.check(usage(0.99), [worker(1, started=1.0)]) is None
    mon.kill_finished()
    second = mon.check(usage(0.99), [worker(1, started=1.0)])
    assert second.victim.worker_id == worker(1).worker_id


def test_no_kill_once_memory_is_back_below():
    mon = monitor()
    mon.check(usage(0.99), [worker(1), worker(2)])
    mon.kill_finished()
    assert mon.check(usage(0.5), [worker(1)]) is None
    assert mon.killing is None


# --- the recorded cause --------------------------------------------------------------------

def test_cause_is_recorded_per_worker_with_node_memory_and_advice():
    mon = monitor(0.9)
    victim = worker(4, started=1.0)
    kill = mon.check(MemoryUsage(15 * GiB, 16 * GiB), [victim],
                     victim_bytes=lambda pid: 3 * GiB if pid == victim.pid else None)
    message = mon.failure_cause(victim.worker_id)
    assert message == kill.message
    for part in ("IP: 10.0.0.7", "ID: " + "ab" * 28, f"pid={victim.pid}",
                 victim.worker_id.hex(), "15.00GiB / 16.00GiB", "(0.9375)",
                 "threshold of 0.9", "memory used=3.00GiB",
                 "MINIRAY_MEMORY_USAGE_THRESHOLD", "MINIRAY_MEMORY_MONITOR_REFRESH_MS",
                 "num_cpus", "max_retries"):
        assert part in message, part
    assert mon.failure_cause(worker(5).worker_id) is None


def test_actor_victim_is_named_an_actor():
    kill = monitor().check(usage(0.99), [worker(1, retriable=False, actor=True)])
    assert "where the actor was running" in kill.message


def test_causes_are_bounded(monkeypatch):
    monkeypatch.setattr(mm, "MAX_REMEMBERED_KILLS", 3)
    mon = monitor()
    for n in range(5):
        mon.check(usage(0.99), [worker(n)])
        mon.kill_finished()
    assert mon.failure_cause(worker(0).worker_id) is None
    assert mon.failure_cause(worker(1).worker_id) is None
    assert all(mon.failure_cause(worker(n).worker_id) for n in (2, 3, 4))


# --- reading memory: cgroups ------------------------------------------------------------------

def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_and_working_set(tmp_path):
    _write(tmp_path / "memory.max", "4294967296\n")
    _write(tmp_path / "memory.current", str(3 * GiB) + "\n")
    _write(tmp_path / "memory.stat", f"anon 1000\ninactive_file {GiB}\nactive_file 5\n")
    assert mm.cgroup_memory_usage(str(tmp_path)) == MemoryUsage(2 * GiB, 4 * GiB)


def test_cgroup_v2_without_limit_is_ignored(tmp_path):
    _write(tmp_path / "memory.max", "max\n")
    _write(tmp_path / "memory.current", "100\n")
    _write(tmp_path / "memory.stat", "inactive_file 10\n")
    assert mm.cgroup_memory_usage(str(tmp_path)) is None


def test_cgroup_v1_working_set(tmp_path):
    v1 = tmp_path / "memory"
    _write(v1 / "memory.limit_in_bytes", str(8 * GiB))
    _write(v1 / "memory.usage_in_bytes", str(6 * GiB))
    _write(v1 / "memory.stat", f"cache 1\nrss 2\ntotal_cache {2 * GiB}\n"
                               f"total_rss {3 * GiB}\ntotal_inactive_file {GiB}\n")
    assert mm.cgroup_memory_usage(str(tmp_path)) == MemoryUsage(4 * GiB, 8 * GiB)


def test_working_set_is_clamped():
    assert mm.working_set(100, {"inactive_file": 50}, 20) == MemoryUsage(0, 100)
    assert mm.working_set(100, {"inactive_file": 0}, 150) == MemoryUsage(100, 100)
    assert mm.working_set(100, {}, 20) is None


def test_no_cgroup_files_means_no_cgroup(tmp_path):
    assert mm.cgroup_memory_usage(str(tmp_path)) is None


def test_read_memory_usage_prefers_a_cgroup_limit_below_the_machine(tmp_path):
    cgroup = tmp_path / "cgroup"
    machine = mm.read_memory_usage(str(cgroup))        # no cgroup here
    assert 0 < machine.used <= machine.total
    _write(cgroup / "memory.max", str(GiB))
    _write(cgroup / "memory.current", str(GiB // 2))
    _write(cgroup / "memory.stat", "inactive_file 0\n")
    assert mm.read_memory_usage(str(cgroup)) == MemoryUsage(GiB // 2, GiB)
    # A limit above the machine's memory is no limit.
    _write(cgroup / "memory.max", str(machine.total * 4))
    assert mm.read_memory_usage(str(cgroup)).total == machine.total


ZONEINFO = """Node 0, zone   Normal
  pages free     4566991
        min      11313
  pagesets
    cpu: 0
              count:    213461
              high:     214598
              batch:    63
    cpu: 1
              count:    37372
              high:     46221
              batch:    63
  node_unreclaimable:  0
Node 0, zone  Movable
  pages free     0
"""


def test_free_pages_on_per_cpu_lists_count_as_available(tmp_path):
    assert mm.percpu_free_pages(ZONEINFO) == 213461 + 37372
    assert mm.percpu_free_pages("") == 0
    assert mm.percpu_free_bytes(str(tmp_path / "missing")) == 0
    _write(tmp_path / "zoneinfo", ZONEINFO)
    cached = mm.percpu_free_bytes(str(tmp_path / "zoneinfo"))
    assert cached == (213461 + 37372) * os.sysconf("SC_PAGE_SIZE")
    plain = mm.read_memory_usage(str(tmp_path), str(tmp_path / "missing"))
    corrected = mm.read_memory_usage(str(tmp_path), str(tmp_path / "zoneinfo"))
    assert corrected.total == plain.total
    # used = total - available - per-CPU free pages (both sampled now: allow drift)
    assert abs(plain.used - cached - corrected.used) < 256 * 1024**2 or corrected.used == 0
