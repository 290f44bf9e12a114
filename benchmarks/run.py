#!/usr/bin/env python
"""Time the same workloads on miniray and on Ray, and print a comparison table.

The parent process never imports a backend: each backend runs in fresh child
processes (``run.py --backend NAME ...``) that print one JSON result line per
workload; the parent merges them and prints medians.  See benchmarks/README.md.
"""
import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from typing import Callable

import numpy as np

MiB = 1 << 20
GB = 1e9
BACKENDS = ("miniray", "ray")
INIT_KWARGS = dict(num_cpus=os.cpu_count(), object_store_memory=2 << 30)
LOWER_IS_BETTER = {"s", "x"}   # units of times and of elapsed/ideal ratios
RESULT, SKIP = "@@RESULT ", "@@SKIP "  # prefixes of the child's machine-readable lines


@dataclass(frozen=True)
class Config:
    budget: float  # seconds of timed work per measurement per repetition
    warmup: int  # untimed tasks run before timing task workloads
    batch: int  # tasks submitted at once in tasks_async
    large: int  # bytes of the big array (put_large, get_large)
    medium: int  # bytes of the smaller array (get_large)
    repeat: int  # default repetitions per workload


FULL = Config(budget=0.5, warmup=100, batch=1000, large=100 * MiB, medium=10 * MiB, repeat=5)
QUICK = Config(budget=0.1, warmup=20, batch=100, large=10 * MiB, medium=1 * MiB, repeat=1)


# --------------------------------------------------------------------------- registry
@dataclass
class Workload:
    fn: Callable  # fn(backend, cfg) -> {metric: (value, unit)} for one repetition
    fresh_process: bool  # run without a shared cluster, in one new process per repetition


WORKLOADS: dict[str, Workload] = {}


def workload(name, fresh_process=False):
    """Register a workload.  Its metrics with unit "s" or "x" are lower-is-better; all others
    (rates: ops/s, GB/s, ...) are higher-is-better.  Unless fresh_process is set, the
    backend is already initialised (INIT_KWARGS) when fn is called."""

    def register(fn):
        WORKLOADS[name] = Workload(fn, fresh_process)
        return fn

    return register


def mean_time(op, budget):
    """Mean seconds per op() call, timing calls one at a time until `budget` seconds of
    timed work have accumulated.  Each call's result is dropped, untimed, before the next."""
    total, calls = 0.0, 0
    while total < budget:
        start = time.perf_counter()
        result = op()
        total += time.perf_counter() - start
        calls += 1
        del result
    return total / calls


def noop():
    return None


def warm_noop(backend, cfg):
    """Return backend.remote(noop) after running cfg.warmup of it, so workers are up."""
    f = backend.remote(noop)
    backend.get([f.remote() for _ in range(cfg.warmup)])
    return f


# --------------------------------------------------------------------------- workloads
@workload("init", fresh_process=True)
def init(backend, cfg):
    start = time.perf_counter()
    backend.init(**INIT_KWARGS)
    started = time.perf_counter()
    backend.shutdown()
    return {"init": (started - start, "s"), "shutdown": (time.perf_counter() - started, "s")}


@workload("tasks_sync")
def tasks_sync(backend, cfg):
    f = warm_noop(backend, cfg)
    return {"get(f.remote())": (1 / mean_time(lambda: backend.get(f.remote()), cfg.budget), "tasks/s")}


@workload("tasks_async")
def tasks_async(backend, cfg):
    f = warm_noop(backend, cfg)
    t = mean_time(lambda: backend.get([f.remote() for _ in range(cfg.batch)]), cfg.budget)
    return {f"get([f.remote() x {cfg.batch}])": (cfg.batch / t, "tasks/s")}


@workload("put_small")
def put_small(backend, cfg):
    return {"put(int)": (1 / mean_time(lambda: backend.put(42), cfg.budget), "ops/s")}


@workload("get_small")
def get_small(backend, cfg):
    ref = backend.put(42)
    return {"get(int)": (1 / mean_time(lambda: backend.get(ref), cfg.budget), "ops/s")}


@workload("put_large")
def put_large(backend, cfg):
    arr = np.zeros(cfg.large, np.uint8) + 1
    # Warm-up: cycle the whole store (twice, as frees are asynchronous) so that timed puts
    # do not pay first-touch page faults of fresh shared memory (3-5x slower).
    for _ in range(2 * INIT_KWARGS["object_store_memory"] // cfg.large):
        backend.put(arr)
    t = mean_time(lambda: backend.put(arr), cfg.budget)
    return {f"put {cfg.large // MiB} MiB array": (cfg.large / t / GB, "GB/s")}


@workload("get_large")
def get_large(backend, cfg):
    metrics = {}
    for size in (cfg.large, cfg.medium):
        ref = backend.put(np.zeros(size, np.uint8) + 1)
        backend.get(ref)  # warm-up: the first get maps the object
        t = mean_time(lambda: backend.get(ref), cfg.budget)
        del ref
        metrics[f"get {size // MiB} MiB array"] = (t, "s")
        metrics[f"get {size // MiB} MiB array (implied)"] = (size / t / GB, "GB/s")
    return metrics


# --------------------------------------------------------------------------- child side
# --------------------------------------------------------------------------- actors
class _Echo:
    def ping(self, x=None):
        return x


class _AsyncEcho:
    async def ping(self, x=None):
        return x


class _Caller:
    """An actor that calls another actor (the n:n workload)."""

    def __init__(self, target, backend_name):
        self.target = target
        self.backend = importlib.import_module(backend_name)

    def run(self, n):
        return len(self.backend.get([self.target.ping.remote() for _ in range(n)]))


def _actor(backend, cls, **options):
    handle = backend.remote(**options)(cls).remote() if options else backend.remote(cls).remote()
    backend.get(handle.ping.remote())
    return handle


@workload("actor_calls_sync")
def actor_calls_sync(backend, cfg):
    actor = _actor(backend, _Echo)
    rate = 1 / mean_time(lambda: backend.get(actor.ping.remote()), cfg.budget)
    return {"1:1 get(a.ping.remote())": (rate, "calls/s")}


def _batch_rate(backend, cfg, call) -> float:
    """Calls/s of get([call() x cfg.batch])."""
    t = mean_time(lambda: backend.get([call() for _ in range(cfg.batch)]), cfg.budget)
    return cfg.batch / t


@workload("actor_calls_async")
def actor_calls_async(backend, cfg):
    actor = _actor(backend, _Echo)
    return {f"1:1 get([a.ping.remote() x {cfg.batch}])":
            (_batch_rate(backend, cfg, actor.ping.remote), "calls/s")}


@workload("async_actor_calls")
def async_actor_calls(backend, cfg):
    actor = _actor(backend, _AsyncEcho)
    return {f"async actor, {cfg.batch} in flight":
            (_batch_rate(backend, cfg, actor.ping.remote), "calls/s")}


@workload("actor_calls_with_arg")
def actor_calls_with_arg(backend, cfg):
    actor = _actor(backend, _Echo)
    ref = backend.put(b"x" * 1024)
    return {f"a.ping.remote(ref) x {cfg.batch}":
            (_batch_rate(backend, cfg, lambda: actor.ping.remote(ref)), "calls/s")}


@workload("actor_calls_n_n")
def actor_calls_n_n(backend, cfg):
    n = max(2, (os.cpu_count() or 2))
    targets = [_actor(backend, _Echo) for _ in range(n)]
    callers = [backend.remote(_Caller).remote(t, backend.__name__) for t in targets]
    backend.get([c.run.remote(1) for c in callers])
    per = cfg.batch // n
    t = mean_time(lambda: backend.get([c.run.remote(per) for c in callers]), cfg.budget)
    return {f"{n} callers -> {n} actors": (per * n / t, "calls/s")}


@workload("actor_creation")
def actor_creation(backend, cfg):
    count = 10 if cfg.batch < 1000 else 20

    def create():
        actors = [backend.remote(num_cpus=0)(_Echo).remote() for _ in range(count)]
        backend.get([a.ping.remote() for a in actors])
        for a in actors:
            backend.kill(a)

    create()
    return {f"create {count} actors + first call": (count / mean_time(create, cfg.budget),
                                                    "actors/s")}


# --------------------------------------------------------------------------- parallelism
def _nap(seconds):
    time.sleep(seconds)


def _meet_barrier(barrier, backend_name):
    importlib.import_module(backend_name).get(barrier.wait.remote())


class _Barrier:
    """Holds callers until ``parties`` have arrived."""

    def __init__(self, parties):
        self.parties = parties
        self.arrived = 0
        self.event = asyncio.Event()

    async def wait(self):
        self.arrived += 1
        if self.arrived >= self.parties:
            self.event.set()
        await self.event.wait()


def _warm_workers(backend, nap, n):
    """Have n workers before timing: n tasks that wait for each other run
    at the same time, each on a worker of its own (a runtime that starts
    workers on demand and reuses leases would otherwise still be growing
    its pool during the timed rounds). Then two plain rounds."""
    barrier = backend.remote(num_cpus=0)(_Barrier).remote(n)
    meet = backend.remote(_meet_barrier)
    backend.get([meet.remote(barrier, backend.__name__) for _ in range(n)])
    for _ in range(2):
        backend.get([nap.remote(0.05) for _ in range(n)])


@workload("parallel_efficiency", fresh_process=True)
def parallel_efficiency(backend, cfg):
    """N tasks sleeping 0.1 s on N CPUs: elapsed over the ideal 0.1 s."""
    metrics = {}
    for n in (4, 16):
        backend.init(num_cpus=n)
        try:
            nap = backend.remote(_nap)
            _warm_workers(backend, nap, n)
            elapsed = []
            for _ in range(3):
                start = time.perf_counter()
                backend.get([nap.remote(0.1) for _ in range(n)])
                elapsed.append(time.perf_counter() - start)
            metrics[f"{n} x 0.1 s tasks on {n} CPUs, elapsed/ideal"] = (
                statistics.median(elapsed) / 0.1, "x")
        finally:
            backend.shutdown()
    return metrics


@workload("short_behind_long", fresh_process=True)
def short_behind_long(backend, cfg):
    """20 short tasks (10 ms) submitted after 2 long ones (2 s) on 4 CPUs:
    ideally they share the 2 free CPUs and finish in ~0.1 s."""
    backend.init(num_cpus=4)
    try:
        nap = backend.remote(_nap)
        _warm_workers(backend, nap, 4)
        longs = [nap.remote(2.0) for _ in range(2)]
        start = time.perf_counter()
        backend.get([nap.remote(0.01) for _ in range(20)])
        elapsed = time.perf_counter() - start
        backend.get(longs)
    finally:
        backend.shutdown()
    return {"20 x 10 ms tasks after 2 x 2 s on 4 CPUs": (elapsed, "s")}


# --------------------------------------------------------------------------- two nodes
def _cluster_module(backend):
    if backend.__name__ == "ray":
        return importlib.import_module("ray.cluster_utils")
    return importlib.import_module("miniray.testing")


def _sized(n):
    import numpy as np
    return np.ones(n, dtype=np.uint8)


@workload("two_nodes", fresh_process=True)
def two_nodes(backend, cfg):
    """A 2-node cluster on this host: object transfer, placement groups, tasks."""
    import numpy as np
    Cluster = _cluster_module(backend).Cluster
    store = 512 * MiB
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "object_store_memory": store})
    cluster.add_node(num_cpus=1, resources={"far": 1}, object_store_memory=store)
    cluster.wait_for_nodes()
    backend.init(address=cluster.address)
    try:
        @backend.remote(resources={"far": 1})
        def size_of(array):
            return array.nbytes

        size = cfg.large // 2
        backend.get(size_of.remote(np.ones(1024, dtype=np.uint8)))      # warm up
        arrays = []

        def transfer():
            ref = backend.put(_sized(size))      # on the head; read on the far node
            arrays.append(ref)
            backend.get(size_of.remote(ref))
            arrays.clear()

        transfer_gbps = size / mean_time(transfer, cfg.budget * 2) / 1e9

        from importlib import import_module
        util = import_module(backend.__name__ + ".util")

        def pg_cycle():
            pg = util.placement_group([{"CPU": 0.01}], strategy="PACK")
            backend.get(pg.ready())
            util.remove_placement_group(pg)

        pg_rate = 1 / mean_time(pg_cycle, cfg.budget)

        @backend.remote(num_cpus=1, scheduling_strategy="SPREAD")
        def noop_spread():
            return None

        backend.get([noop_spread.remote() for _ in range(cfg.warmup)])
        t = mean_time(lambda: backend.get([noop_spread.remote() for _ in range(cfg.batch)]),
                      cfg.budget)
        return {f"transfer {size // MiB} MiB between nodes": (transfer_gbps, "GB/s"),
                "placement group create+ready+remove": (pg_rate, "groups/s"),
                f"{cfg.batch} SPREAD tasks over 2 nodes": (cfg.batch / t, "tasks/s")}
    finally:
        backend.shutdown()
        cluster.shutdown()


# --------------------------------------------------------------------------- failures
@workload("node_death", fresh_process=True)
def node_death(backend, cfg):
    """Seconds from SIGKILL of a worker node until the cluster reports it dead."""
    Cluster = _cluster_module(backend).Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    backend.init(address=cluster.address)
    try:
        node_id = node.node_id if isinstance(node.node_id, str) else node.node_id.hex()
        started = time.monotonic()
        cluster.remove_node(node, allow_graceful=False)
        while any(n["NodeID"] == node_id and n["Alive"] for n in backend.nodes()):
            time.sleep(0.02)
        return {"node killed -> reported dead": (time.monotonic() - started, "s")}
    finally:
        backend.shutdown()
        cluster.shutdown()


@workload("gcs_recovery", fresh_process=True)
def gcs_recovery(backend, cfg):
    """Seconds from SIGKILL of the GCS until a named actor answers a lookup and
    a call again. Ray restarts its GCS only with an external Redis: not timed."""
    if backend.__name__ != "miniray":
        return {}
    from miniray.testing import kill_gcs
    backend.init(num_cpus=1)
    try:
        @backend.remote
        class Named:
            def ping(self):
                return 1

        handle = Named.options(name="recovery", lifetime="detached").remote()
        backend.get(handle.ping.remote())
        started = time.monotonic()
        kill_gcs()
        backend.get(backend.get_actor("recovery").ping.remote())
        elapsed = time.monotonic() - started
        backend.kill(handle)
        return {"GCS killed -> named actor reachable": (elapsed, "s")}
    finally:
        backend.shutdown()


def emit(prefix, payload):
    print(prefix + json.dumps(payload), flush=True)


def run_child(backend_name, names, cfg, repeat):
    try:
        backend = importlib.import_module(backend_name)
    except ImportError as e:
        return emit(SKIP, f"{backend_name} is not importable ({e})")
    if not hasattr(backend, "init"):
        return emit(SKIP, f"{backend_name}.init does not exist yet")
    fresh = [n for n in names if WORKLOADS[n].fresh_process]
    shared = [n for n in names if n not in fresh]
    for name in fresh:
        run_workload(backend, name, cfg, repeat)
    if shared:
        backend.init(**INIT_KWARGS)
        try:
            for name in shared:
                run_workload(backend, name, cfg, repeat)
        finally:
            backend.shutdown()


def run_workload(backend, name, cfg, repeat):
    metrics = {}
    try:
        for _ in range(repeat):
            for metric, (value, unit) in WORKLOADS[name].fn(backend, cfg).items():
                metrics.setdefault(metric, {"unit": unit, "values": []})["values"].append(value)
    except Exception as e:
        traceback.print_exc()
        return emit(RESULT, {"workload": name, "error": f"{type(e).__name__}: {e}"})
    emit(RESULT, {"workload": name, "metrics": metrics})


# --------------------------------------------------------------------------- parent side
def session_pids(sid):
    """Live (not zombie) processes of session `sid`."""
    pids = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, _ppid, _pgrp, session = f.read().rsplit(")", 1)[1].split()[:4]
        except OSError:  # it exited meanwhile
            continue
        if state != "Z" and int(session) == sid:
            pids.append(pid)
    return pids


def reap_session(backend, sid, grace=5.0):
    """Wait up to `grace` s for the processes the child started to exit; warn and kill if not."""
    deadline = time.monotonic() + grace
    while (pids := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pids:
        print(f"[{backend}] WARNING: killing {len(pids)} processes left behind by the child: {pids}",
              file=sys.stderr)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def spawn(backend, names, repeat, args):
    """Run one child; return (skip reason or None, {workload: result})."""
    cmd = [sys.executable, os.path.abspath(__file__), "--backend", backend,
           "--only", ",".join(names), "--repeat", str(repeat)] + ["--quick"] * args.quick
    print(f"[{backend}] {','.join(names)} x{repeat}", file=sys.stderr, flush=True)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # Own session (id = its pid), so that we can find and kill whatever it leaves behind.
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, start_new_session=True)
        try:
            failure = f"exit code {proc.wait(timeout=args.timeout)}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            failure = f"timed out after {args.timeout:g} s"
        reap_session(backend, proc.pid)
        out.seek(0), err.seek(0)
        lines, log = out.read().splitlines(), err.read()
    skips = [json.loads(l[len(SKIP):]) for l in lines if l.startswith(SKIP)]
    results = {r["workload"]: r for r in (json.loads(l[len(RESULT):]) for l in lines if l.startswith(RESULT))}
    if skips:
        return skips[0], {}
    if proc.returncode != 0 or any("error" in r for r in results.values()):
        print(f"[{backend}] child {failure}; its stderr (tail):\n{log[-3000:]}", file=sys.stderr)
    return None, {n: results.get(n, {"error": f"no result (child {failure})"}) for n in names}


def collect(backend, names, repeat, args):
    """Run `names` on `backend`; return (skip reason or None, {workload: merged result})."""
    fresh = [n for n in names if WORKLOADS[n].fresh_process]
    shared = [n for n in names if n not in fresh]
    jobs = [([n], 1) for n in fresh for _ in range(repeat)] + ([(shared, repeat)] if shared else [])
    merged = {}
    for job_names, reps in jobs:
        skip, results = spawn(backend, job_names, reps, args)
        if skip:
            return skip, {}
        for name, res in results.items():
            into = merged.setdefault(name, {"metrics": {}})
            if "error" in res:
                into["error"] = res["error"]
            for metric, m in res.get("metrics", {}).items():
                into["metrics"].setdefault(metric, {"unit": m["unit"], "values": []})["values"] += m["values"]
    return None, merged


def fmt(value, unit):
    """3 significant digits (more for large numbers); seconds scaled to s / ms / us."""
    if unit == "s":
        scale, unit = next((x for x in ((1, "s"), (1e-3, "ms")) if value >= x[0]), (1e-6, "us"))
        value /= scale
    return f"{value:,.{2 if value < 10 else 1 if value < 100 else 0}f} {unit}"


def machine_info():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    ram_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))

    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {"CPUs": f"{os.cpu_count()} x {model}", "RAM": f"{ram_kib / 2**20:.1f} GiB",
            "Python": platform.python_version(), **{pkg: version(pkg) for pkg in BACKENDS}}


def table_rows(names, backends, results):
    rows, both = [], len(backends) == 2  # the ratio column only when both backends ran
    for name in names:
        metrics = {}  # metric -> unit, in order of first appearance across backends
        for b in backends:
            metrics.update({m: d["unit"] for m, d in results[b].get(name, {}).get("metrics", {}).items()})
        for metric, unit in metrics.items():
            medians = {b: statistics.median(results[b][name]["metrics"][metric]["values"])
                       for b in backends if metric in results[b].get(name, {}).get("metrics", {})}
            cells = [fmt(medians[b], unit) if b in medians
                     else "n/a" if "error" not in results[b].get(name, {"error": 1}) else "error"
                     for b in backends]
            ratio = [f"{medians['miniray'] / medians['ray']:.2f}" if len(medians) == 2 else "-"]
            rows.append([name, metric, "lower" if unit in LOWER_IS_BETTER else "higher",
                         *cells, *ratio * both])
        if not metrics:
            rows.append([name, "-", "-", *["error"] * len(backends), *["-"] * both])
    return rows


def print_table(header, rows, markdown):
    if markdown:
        for row in [header, ["---"] * len(header), *rows]:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated, default: %(default)s")
    p.add_argument("--repeat", type=int, help=f"repetitions per workload (median is reported; "
                                              f"default {FULL.repeat}, or {QUICK.repeat} with --quick)")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads, default: all")
    p.add_argument("--quick", action="store_true", help="small sizes and short timings, for a smoke test")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--timeout", type=float, default=300, help="seconds before a child is killed")
    # Child mode (used by the parent): run on this backend, print JSON lines instead of a table.
    p.add_argument("--backend", choices=BACKENDS, help=argparse.SUPPRESS)
    args = p.parse_args()
    cfg = QUICK if args.quick else FULL
    repeat = args.repeat or cfg.repeat
    names = args.only.split(",")
    backends = args.backends.split(",")
    for bad in [n for n in names if n not in WORKLOADS] + [b for b in backends if b not in BACKENDS]:
        p.error(f"unknown workload or backend {bad!r}; workloads: {', '.join(WORKLOADS)}")

    if args.backend:
        return run_child(args.backend, names, cfg, repeat)

    bullet = "- " if args.markdown else ""
    for key, value in machine_info().items():
        print(f"{bullet}{key}: {value}")
    print(f"{bullet}mode: {'quick' if args.quick else 'full'}, repeat {repeat} (median reported)", flush=True)
    results, notes = {}, []
    for backend in backends:
        skip, results[backend] = collect(backend, names, repeat, args)
        if skip:
            notes.append(f"skipped {backend}: {skip}")
    ran = [b for b in backends if results[b]]
    for note in notes:
        print(f"{bullet}{note}")
    print()
    if ran:
        header = ["workload", "metric", "better", *ran, *["miniray/ray"] * (len(ran) == 2)]
        print_table(header, table_rows(names, ran, results), args.markdown)
        print("\nValues are medians over repetitions.  miniray/ray is the ratio of the medians: "
              "above 1 favours miniray on 'higher' rows, below 1 favours it on 'lower' rows.")
    for b in ran:
        for name in names:
            if "error" in results[b].get(name, {}):
                print(f"{b} {name}: {results[b][name]['error']}")


if __name__ == "__main__":
    main()
