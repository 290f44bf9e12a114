#!/usr/bin/env python
"""Chaos run: a workload on a three-node cluster while a seeded killer
SIGKILLs workers, a non-head raylet and the GCS; every result is checked.

    python tests/chaos/chaos.py --seed 7 --duration 120

The workload, in rounds until the duration is up:
- a tree of dependent tasks (sums of sums) whose result is known;
- large objects (numpy, in the shared-memory store) made by tasks spread
  over the nodes and read by tasks elsewhere, checked by checksum;
- calls to actors that restart (max_restarts=-1, max_task_retries=-1).
The killer, meanwhile, at seeded random times: kills a random worker
process, kills a worker node's raylet (and adds a fresh node, so three
stay), and kills the GCS (its supervisor restarts it), GCS_KILLS times.
Tasks use max_retries=-1: system failures are retried as often as needed.

Afterwards: resources back to full, then the cluster is shut down and the
caller checks nothing is left (tests/chaos/test_chaos.py does).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time

import numpy as np
import psutil

import miniray as ray
from miniray.cli.stop import is_titled_worker
from miniray.testing import Cluster, kill_gcs, wait_for_condition

GCS_KILLS = 2
BIG = 2 * 1024 * 1024            # bytes of each large object (above the inline size)


@ray.remote(max_retries=-1)
def leaf(i):
    return i


@ray.remote(max_retries=-1)
def add(a, b):
    return a + b


@ray.remote(max_retries=-1, scheduling_strategy="SPREAD")
def make_big(seed):
    return np.random.default_rng(seed).integers(0, 255, BIG, dtype=np.uint8)


@ray.remote(max_retries=-1, scheduling_strategy="SPREAD")
def checksum(array):
    return int(array.sum(dtype=np.uint64))


@ray.remote(max_restarts=-1, max_task_retries=-1)
class Squarer:
    def square(self, x):
        return x * x


def _tree(width: int, offset: int):
    """A tree of add() over leaf(offset..offset+width): (ref, expected)."""
    level = [leaf.remote(offset + i) for i in range(width)]
    while len(level) > 1:
        level = [add.remote(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0], sum(range(offset, offset + width))


def _expected_checksum(seed: int) -> int:
    return int(np.random.default_rng(seed).integers(0, 255, BIG, dtype=np.uint8)
               .sum(dtype=np.uint64))


class Killer(threading.Thread):
    """Kills things at seeded random times until stopped."""

    def __init__(self, cluster: Cluster, rng: random.Random, duration: float):
        super().__init__(daemon=True)
        self.cluster, self.rng, self.duration = cluster, rng, duration
        self.stop = threading.Event()
        self.kills = {"worker": 0, "raylet": 0, "gcs": 0}
        self.errors: list[str] = []
        # The GCS dies at two random moments in the first 70% of the run, a
        # raylet once in the middle; workers die throughout.
        self.gcs_at = sorted(rng.uniform(0.1, 0.7) * duration for _ in range(GCS_KILLS))
        self.raylet_at = rng.uniform(0.3, 0.6) * duration

    def _workers(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.Process().children(recursive=True):
            try:
                cmdline = proc.cmdline()
                if "miniray.core_worker" in cmdline or is_titled_worker(proc, cmdline):
                    found.append(proc)
            except psutil.Error:
                pass
        return found

    def run(self) -> None:
        started = time.monotonic()
        try:
            while not self.stop.wait(self.rng.uniform(0.2, 1.0)):
                now = time.monotonic() - started
                if self.gcs_at and now >= self.gcs_at[0]:
                    self.gcs_at.pop(0)
                    kill_gcs(self.cluster.address)
                    self.kills["gcs"] += 1
                elif self.raylet_at is not None and now >= self.raylet_at:
                    self.raylet_at = None
                    victim = self.rng.choice(self.cluster.worker_nodes)
                    self.cluster.kill_node(victim)
                    self.cluster.add_node(num_cpus=1, object_store_memory=128 << 20)
                    self.kills["raylet"] += 1
                else:
                    workers = self._workers()
                    if workers:
                        try:
                            self.rng.choice(workers).kill()
                            self.kills["worker"] += 1
                        except psutil.Error:
                            pass
        except Exception as exc:         # noqa: BLE001 - reported by the run
            self.errors.append(f"{type(exc).__name__}: {exc}")


def run_chaos(seed: int, duration: float) -> dict:
    """Run the chaos workload; returns its figures. Raises on a wrong
    result. The caller's process must not be connected to a cluster."""
    rng = random.Random(seed)
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "object_store_memory": 256 << 20})
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=128 << 20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    stats = {"seed": seed, "duration_s": duration, "rounds": 0, "tasks_checked": 0,
             "objects_checked": 0, "actor_calls_checked": 0}
    killer = Killer(cluster, rng, duration)
    started = time.monotonic()
    try:
        actors = [Squarer.remote() for _ in range(2)]
        ray.get([a.square.remote(1) for a in actors], timeout=60)
        killer.start()
        round_no = 0
        while time.monotonic() - started < duration or killer.gcs_at or \
                killer.raylet_at is not None:
            round_no += 1
            width = rng.randint(16, 48)
            tree, expected = _tree(width, offset=round_no)
            seeds = [rng.randrange(1 << 30) for _ in range(3)]
            sums = [checksum.remote(make_big.remote(s)) for s in seeds]
            xs = [rng.randrange(1000) for _ in range(8)]
            squares = [actors[i % 2].square.remote(x) for i, x in enumerate(xs)]
            assert ray.get(tree, timeout=120) == expected, "wrong task tree result"
            assert ray.get(sums, timeout=120) == [_expected_checksum(s) for s in seeds], \
                "wrong checksum of a large object"
            assert ray.get(squares, timeout=120) == [x * x for x in xs], \
                "wrong actor result"
            stats["rounds"] = round_no
            stats["tasks_checked"] += 2 * width - 1 + 2 * len(seeds)
            stats["objects_checked"] += len(seeds)
            stats["actor_calls_checked"] += len(xs)
            if time.monotonic() - started > duration * 4 + 120:
                raise TimeoutError("the workload is not keeping up with the killer")
        killer.stop.set()
        killer.join(30)
        if killer.errors:
            raise RuntimeError(f"the killer failed: {killer.errors}")
        for actor in actors:
            ray.kill(actor)
        # Everything given back: all resources available again.
        wait_for_condition(lambda: ray.available_resources().get("CPU", 0)
                           == ray.cluster_resources().get("CPU", -1), timeout=60)
        stats["kills"] = dict(killer.kills)
        stats["elapsed_s"] = round(time.monotonic() - started, 1)
        return stats
    finally:
        killer.stop.set()
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(2), "big"))
    parser.add_argument("--duration", type=float, default=120.0, help="seconds")
    args = parser.parse_args()
    print(json.dumps(run_chaos(args.seed, args.duration)))


if __name__ == "__main__":
    main()
