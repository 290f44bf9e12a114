#!/usr/bin/env python
"""Ray's scalability envelope, scaled to one small machine, on miniray and
(when installed) on Ray in the same run.

Each dimension runs at two or three sizes, each size in a fresh process
(its own session, so every process it starts is measured and reaped):
time, and the peak memory of the driver, the raylets, the GCS, the workers
and /dev/shm, sampled every 0.2 s. The table shows each figure for both
backends and how it grows when the work grows tenfold.

    python benchmarks/envelope.py                       # every dimension, all sizes
    python benchmarks/envelope.py --only tasks,actors --sizes small
    python benchmarks/envelope.py --backends miniray --markdown

Dimensions (Ray's release-test figure in brackets):
  tasks        N queued no-op tasks submitted, then all gotten  [1,000,000+]
  ref_args     one task with N ObjectRef arguments              [10,000+]
  returns      one task returning N objects                     [3,000+]
  get_store    get of N objects in the shared-memory store      [10,000+]
  large        put+get of an object of half the store, and of one larger than it
  nodes        N raylets (1 CPU, 80 MiB store each): join, SPREAD tasks, GCS CPU
  pgs          N placement groups created, ready, removed       [1,000+]
  actors       N idle actors: creation and memory per actor     [10,000+]
  broadcast    one object read by tasks on N nodes              [1 GiB to 50+ nodes]
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback

import numpy as np

MiB = 1 << 20
GiB = 1 << 30
BACKENDS = ("miniray", "ray")
RESULT = "@@ENVELOPE "

# name -> {size label: parameter}; "small" sizes are a tenth of "full" ones
# where that makes sense, so the table can show growth per x10.
SIZES = {
    "tasks": {"10k": 10_000, "100k": 100_000, "1M": 1_000_000},
    "ref_args": {"1k": 1_000, "10k": 10_000},
    "returns": {"300": 300, "3k": 3_000},
    "get_store": {"1k": 1_000, "10k": 10_000},
    "large": {"store 1 GiB": GiB, "store 4 GiB": 4 * GiB},
    "nodes": {"4": 4, "32": 32},
    "pgs": {"100": 100, "1k": 1_000},
    "actors": {"20": 20, "200": 200},
    "broadcast": {"100 MiB x 8": 100 * MiB, "1 GiB x 8": GiB},
}


# --------------------------------------------------------------------------- memory
class Sampler:
    """Peak RSS by role of every process in this session, and /dev/shm."""

    def __init__(self, period: float = 0.2):
        import psutil
        self.psutil = psutil
        self.period = period
        self.peak: dict[str, int] = {}
        self.shm_base = _shm_used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self):
        while not self._stop.wait(self.period):
            self.sample()

    def sample(self) -> dict[str, int]:
        sid = os.getsid(0)
        totals: dict[str, int] = {}
        for proc in self.psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getsid(proc.pid) != sid:
                    continue
                rss = proc.memory_info().rss
            except (self.psutil.Error, OSError):
                continue
            role = _role(proc.info["cmdline"] or [], proc.pid)
            totals[role] = totals.get(role, 0) + rss
        totals["shm"] = max(0, _shm_used() - self.shm_base)
        for role, value in totals.items():
            self.peak[role] = max(self.peak.get(role, 0), value)
        return totals


def _shm_used() -> int:
    try:
        return shutil.disk_usage("/dev/shm").used
    except OSError:
        return 0


def _role(cmdline: list[str], pid: int) -> str:
    if pid == os.getpid():
        return "driver"
    text = " ".join(cmdline)
    for marker, role in (("core_worker", "workers"), ("default_worker", "workers"),
                         ("ray::", "workers"), ("gcs_server", "gcs"), ("miniray.gcs", "gcs"),
                         ("raylet", "raylet"), ("dashboard", "other")):
        if marker in text:
            return role
    return "other"


def rss_of_self() -> int:
    import psutil
    return psutil.Process().memory_info().rss


# --------------------------------------------------------------------------- dimensions
def noop(*args):
    return None


def dim_tasks(ray, n):
    ray.init(num_cpus=2, object_store_memory=GiB)
    f = ray.remote(noop)
    ray.get([f.remote() for _ in range(200)])
    base = rss_of_self()
    start = time.perf_counter()
    refs = [f.remote() for _ in range(n)]
    submitted = time.perf_counter()
    queued_rss = rss_of_self()
    ray.get(refs)
    done = time.perf_counter()
    return {"submit rate": (n / (submitted - start), "tasks/s"),
            "completion rate": (n / (done - start), "tasks/s"),
            "driver memory per queued task": ((queued_rss - base) / n, "B")}


def dim_ref_args(ray, n):
    ray.init(num_cpus=2, object_store_memory=GiB)
    f = ray.remote(lambda *args: len(args))
    refs = [ray.put(i) for i in range(n)]
    ray.get(f.remote(*refs[:10]))
    start = time.perf_counter()
    assert ray.get(f.remote(*refs)) == n
    return {"one task, N ref args": (time.perf_counter() - start, "s")}


def dim_returns(ray, n):
    ray.init(num_cpus=2, object_store_memory=GiB)
    f = ray.remote(num_returns=n)(lambda: list(range(n)))
    start = time.perf_counter()
    values = ray.get(f.remote())
    assert len(values) == n
    return {"one task, N returns": (time.perf_counter() - start, "s")}


def dim_get_store(ray, n):
    ray.init(num_cpus=2, object_store_memory=4 * GiB)
    payload = np.ones(128 * 1024, dtype=np.uint8)          # above the inline limit
    refs = [ray.put(payload) for _ in range(n)]
    start = time.perf_counter()
    values = ray.get(refs)
    elapsed = time.perf_counter() - start
    assert len(values) == n
    return {"get of N store objects": (elapsed, "s")}


def dim_large(ray, store):
    ray.init(num_cpus=2, object_store_memory=store)
    out = {}
    for label, size in (("half the store", store // 2), ("1.5x the store", store * 3 // 2)):
        array = np.ones(size, dtype=np.uint8)
        start = time.perf_counter()
        try:
            ref = ray.put(array)
            back = ray.get(ref)
            assert back.nbytes == size
            out[f"put+get {label}"] = (time.perf_counter() - start, "s")
            del back, ref
        except Exception as exc:        # noqa: BLE001 - a limit is a result too
            out[f"put+get {label}"] = (float("nan"), f"s ({type(exc).__name__})")
        del array
    return out


def _cluster(ray):
    if ray.__name__ == "ray":
        return importlib.import_module("ray.cluster_utils").Cluster
    return importlib.import_module("miniray.testing").Cluster


def dim_nodes(ray, n):
    Cluster = _cluster(ray)
    start = time.perf_counter()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "object_store_memory": 80 * MiB})
    for _ in range(n - 1):
        cluster.add_node(num_cpus=1, object_store_memory=80 * MiB)     # Ray's minimum
    cluster.wait_for_nodes()
    joined = time.perf_counter() - start
    ray.init(address=cluster.address)
    try:
        where = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(
            lambda: ray.get_runtime_context().get_node_id())
        ray.get([where.remote() for _ in range(n)])
        start = time.perf_counter()
        nodes = set(ray.get([where.remote() for _ in range(4 * n)]))
        spread = time.perf_counter() - start
        gcs_cpu = _gcs_cpu_per_node_second(n)
        return {"nodes up (start + join)": (joined, "s"),
                "4N SPREAD tasks": (spread, "s"),
                "nodes the SPREAD tasks used": (len(nodes), "nodes"),
                "GCS CPU per node per second (idle)": (gcs_cpu, "ms")}
    finally:
        ray.shutdown()
        cluster.shutdown()


def _gcs_cpu_per_node_second(n, window=10.0):
    import psutil
    sid = os.getsid(0)
    gcs = [p for p in psutil.process_iter(["cmdline"])
           if os.getsid(p.pid) == sid and _role(p.info["cmdline"] or [], p.pid) == "gcs"]
    before = sum(sum(p.cpu_times()[:2]) for p in gcs)
    time.sleep(window)
    after = sum(sum(p.cpu_times()[:2]) for p in gcs)
    return (after - before) / window / n * 1000


def dim_pgs(ray, n):
    ray.init(num_cpus=2, object_store_memory=GiB)
    util = importlib.import_module(ray.__name__ + ".util")
    start = time.perf_counter()
    groups = [util.placement_group([{"CPU": 0.001}]) for _ in range(n)]
    ray.get([g.ready() for g in groups])
    ready = time.perf_counter() - start
    for group in groups:
        util.remove_placement_group(group)
    return {"create + ready N groups": (ready, "s"),
            "... then remove them": (time.perf_counter() - start - ready, "s")}


class Idle:
    def ping(self):
        return os.getpid()


def dim_actors(ray, n):
    ray.init(num_cpus=2, object_store_memory=GiB)
    import psutil
    cls = ray.remote(num_cpus=0)(Idle)
    start = time.perf_counter()
    actors = [cls.remote() for _ in range(n)]
    pids = ray.get([a.ping.remote() for a in actors])
    created = time.perf_counter() - start
    rss = []
    for pid in set(pids):
        with contextlib.suppress(psutil.Error):
            info = psutil.Process(pid).memory_full_info()
            rss.append(info.uss)
    return {"create N actors + first call": (created, "s"),
            "memory per idle actor (USS)": (statistics.mean(rss), "B")}


def dim_broadcast(ray, size, nodes=8):
    Cluster = _cluster(ray)
    store = size + size // 2 + 256 * MiB
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "object_store_memory": store})
    for i in range(nodes):
        cluster.add_node(num_cpus=1, resources={f"n{i}": 1}, object_store_memory=store)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        size_of = ray.remote(lambda a: a.nbytes)
        ref = ray.put(np.ones(size, dtype=np.uint8))
        start = time.perf_counter()
        sizes = ray.get([size_of.options(resources={f"n{i}": 1}).remote(ref)
                         for i in range(nodes)])
        elapsed = time.perf_counter() - start
        assert sizes == [size] * nodes
        return {f"read on {nodes} nodes": (elapsed, "s"),
                "aggregate": (size * nodes / elapsed / 1e9, "GB/s")}
    finally:
        ray.shutdown()
        cluster.shutdown()


DIMENSIONS = {"tasks": dim_tasks, "ref_args": dim_ref_args, "returns": dim_returns,
              "get_store": dim_get_store, "large": dim_large, "nodes": dim_nodes,
              "pgs": dim_pgs, "actors": dim_actors, "broadcast": dim_broadcast}


# --------------------------------------------------------------------------- child
def child(backend_name: str, dimension: str, label: str) -> None:
    ray = importlib.import_module(backend_name)
    parameter = SIZES[dimension][label]
    payload = {"backend": backend_name, "dimension": dimension, "size": label}
    try:
        with Sampler() as sampler:
            start = time.perf_counter()
            try:
                metrics = DIMENSIONS[dimension](ray, parameter)
            finally:
                with contextlib.suppress(Exception):
                    ray.shutdown()
            payload["wall"] = time.perf_counter() - start
        payload["metrics"] = metrics
        payload["peak_memory"] = sampler.peak
    except Exception as exc:            # noqa: BLE001 - reported in the table
        traceback.print_exc()
        payload["error"] = f"{type(exc).__name__}: {exc}"
    print(RESULT + json.dumps(payload, default=float), flush=True)


# --------------------------------------------------------------------------- parent
def run(backend: str, dimension: str, label: str, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", backend, dimension, label]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = ""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        _reap(process.pid)
    for line in out.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    return {"backend": backend, "dimension": dimension, "size": label,
            "error": f"no result (exit {process.returncode}, timeout {timeout:g} s?)"}


def _reap(sid: int) -> None:
    """Kill whatever the child's session left behind (and say so)."""
    import psutil
    deadline = time.monotonic() + 10
    while True:
        left = [p for p in psutil.process_iter() if _sid(p.pid) == sid]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if left:
        print(f"  warning: killing {len(left)} processes left behind", file=sys.stderr)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _sid(pid: int) -> int:
    try:
        return os.getsid(pid)
    except OSError:
        return -1


def fmt(value, unit: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return f"- {unit}" if unit.startswith("s (") else "-"
    if unit == "B":
        for scale, name in ((GiB, "GiB"), (MiB, "MiB"), (1024, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.1f} {name}"
        return f"{value:.0f} B"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def table(results: list[dict], backends: list[str], markdown: bool) -> str:
    rows = []
    by_key = {(r["backend"], r["dimension"], r["size"]): r for r in results}
    for dimension, sizes in SIZES.items():
        for label in sizes:
            entries = {b: by_key.get((b, dimension, label)) for b in backends}
            if not any(entries.values()):
                continue
            metric_names = []
            for entry in entries.values():
                for name in (entry or {}).get("metrics", {}):
                    if name not in metric_names:
                        metric_names.append(name)
            for name in metric_names + ["peak memory (driver)", "peak memory (raylets)",
                                        "peak memory (GCS)", "peak memory (workers)",
                                        "peak /dev/shm"]:
                cells = []
                values = {}
                for backend in backends:
                    entry = entries[backend] or {}
                    if "error" in entry:
                        cells.append("error")
                        continue
                    value, unit = _value(entry, name)
                    values[backend] = value
                    cells.append(fmt(value, unit) if value is not None else "")
                ratio = ""
                if len(values) == 2 and all(isinstance(v, (int, float)) and v
                                            for v in values.values()):
                    ratio = f"{values[backends[0]] / values[backends[1]]:.2f}"
                rows.append([dimension, label, name, *cells, ratio])
    header = ["dimension", "size", "metric", *backends,
              f"{backends[0]}/{backends[1]}" if len(backends) == 2 else ""]
    errors = [f"{r['backend']} {r['dimension']} {r['size']}: {r['error']}"
              for r in results if "error" in r]
    return _render(header, rows, markdown) + ("\n\nerrors:\n" + "\n".join(errors)
                                              if errors else "")


def growth(results: list[dict], backends: list[str], markdown: bool) -> str:
    """How each time and memory grows from one size to the next (x10 work)."""
    rows = []
    by_key = {(r["backend"], r["dimension"], r["size"]): r for r in results}
    for dimension, sizes in SIZES.items():
        labels = list(sizes)
        for small, big in zip(labels, labels[1:]):
            factor = sizes[big] / sizes[small]
            for backend in backends:
                a, b = by_key.get((backend, dimension, small)), by_key.get(
                    (backend, dimension, big))
                if not a or not b or "error" in a or "error" in b:
                    continue
                time_ratio = b["wall"] / a["wall"] if a.get("wall") else None
                mem_a = sum(v for k, v in a["peak_memory"].items() if k != "shm")
                mem_b = sum(v for k, v in b["peak_memory"].items() if k != "shm")
                rows.append([dimension, f"{small} -> {big} (x{factor:g})", backend,
                             f"x{time_ratio:.1f}" if time_ratio else "",
                             f"x{mem_b / mem_a:.2f}" if mem_a else ""])
    return _render(["dimension", "work", "backend", "wall time", "peak memory (all)"],
                   rows, markdown)


def _value(entry: dict, name: str):
    if name.startswith("peak"):
        key = {"peak memory (driver)": "driver", "peak memory (raylets)": "raylet",
               "peak memory (GCS)": "gcs", "peak memory (workers)": "workers",
               "peak /dev/shm": "shm"}[name]
        return entry.get("peak_memory", {}).get(key), "B"
    metric = entry.get("metrics", {}).get(name)
    return (metric[0], metric[1]) if metric else (None, "")


def _render(header, rows, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--only", default=",".join(SIZES), help="comma-separated dimensions")
    parser.add_argument("--sizes", choices=("small", "all"), default="all",
                        help="small: only the smaller sizes of each dimension")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds before one measurement is abandoned")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--from-json", nargs="+", metavar="FILE",
                        help="only print the tables of saved results (later files "
                             "replace earlier ones' entries)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.from_json:
        merged = {}
        for path in args.from_json:
            with open(path) as f:
                for entry in json.load(f):
                    merged[(entry["backend"], entry["dimension"], entry["size"])] = entry
        backends = [b for b in args.backends.split(",")
                    if any(k[0] == b for k in merged)]
        print(table(list(merged.values()), backends, args.markdown))
        print()
        print(growth(list(merged.values()), backends, args.markdown))
        return 0
    backends = []
    for backend in args.backends.split(","):
        try:
            importlib.import_module(backend)
            backends.append(backend)
        except ImportError:
            print(f"{backend} is not installed: skipped", file=sys.stderr)
    results = []
    for dimension in args.only.split(","):
        labels = list(SIZES[dimension])
        if args.sizes == "small":
            labels = labels[:-1]
        for label in labels:
            for backend in backends:
                print(f"[{backend}] {dimension} {label}", file=sys.stderr, flush=True)
                results.append(run(backend, dimension, label, args.timeout))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(table(results, backends, args.markdown))
    print()
    print(growth(results, backends, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
