"""Memory protection (Ray's memory monitor): which worker the raylet kills
when its node runs low on memory.

Every ``MEMORY_MONITOR_REFRESH_MS`` the raylet reads the node's memory
(``read_memory_usage``) and hands it, with the workers it has leased out
(``Candidate``), to its ``MemoryMonitor``. Above ``MEMORY_USAGE_THRESHOLD``
of the node's memory the monitor names one worker to kill, by Ray's
*retriable LIFO* policy: workers whose task may be retried first, and among
those the one whose task started last (the least progress lost); workers
running non-retriable tasks or actors only when no retriable one is left.
One kill at a time: the raylet calls ``kill_finished`` once the killed
process has exited, and only then does the monitor consider another.

What the raylet knows per worker is its lease: whether the owner's task is
retriable comes in the lease request (``RequestWorkerLeaseRequest.
retriable``; owners keep retriable and non-retriable tasks on separate
leases, so it holds for every task pushed over the lease) and the start
time is when the lease was granted. The owner pushes tasks straight to the
worker, so with lease reuse a later task on the same lease counts as
started when its lease was (off by at most ``LEASE_REUSE_S``), as in Ray.

The monitor records why it killed each worker (``failure_cause``): the
owner of a task that ran out of retries asks the raylet
(``GetWorkerFailureCause``) and raises ``OutOfMemoryError`` with that text
instead of ``WorkerCrashedError``.

Everything here is pure except ``read_memory_usage`` (files and psutil).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import psutil

GiB = 1024 ** 3
# Kill causes kept for owners to ask about (oldest forgotten first).
MAX_REMEMBERED_KILLS = 10_000


@dataclass(frozen=True)
class MemoryUsage:
    """The node's memory: used and total bytes (total 0: unknown)."""
    used: int
    total: int

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total > 0 else 0.0


@dataclass(frozen=True)
class Candidate:
    """A leased worker the monitor may kill."""
    worker_id: bytes
    pid: int
    retriable: bool          # its task (or actor) may be retried after a kill
    started_at: float        # when its lease was granted (monotonic seconds)
    is_actor: bool = False


@dataclass(frozen=True)
class Kill:
    """The monitor's decision: kill this worker, for this reason."""
    victim: Candidate
    message: str


def above_threshold(usage: MemoryUsage, threshold: float) -> bool:
    """Whether memory use exceeds ``threshold`` (a fraction of the total)."""
    return usage.total > 0 and usage.used > usage.total * threshold


def kill_order(candidates) -> list[Candidate]:
    """Retriable LIFO: retriable before non-retriable, then the task that
    started last first (ties: by worker id, for a stable order)."""
    return sorted(candidates, key=lambda c: (not c.retriable, -c.started_at, c.worker_id))


def pick_victim(candidates) -> Candidate | None:
    order = kill_order(candidates)
    return order[0] if order else None


def kill_message(usage: MemoryUsage, threshold: float, victim: Candidate, *,
                 node_id_hex: str, node_ip: str, victim_bytes: int | None = None) -> str:
    """What the raylet saw and did, for the owner's OutOfMemoryError (the
    owner puts the task's name and id in front)."""
    what = "actor" if victim.is_actor else "task"
    used = f", memory used={victim_bytes / GiB:.2f}GiB" if victim_bytes else ""
    why = ("the most recently started retriable task" if victim.retriable else
           f"the most recently started {what} and no retriable task was running")
    return (
        f"Memory on the node (IP: {node_ip}, ID: {node_id_hex}) where the {what} "
        f"was running (worker ID: {victim.worker_id.hex()}, pid={victim.pid}{used}) "
        f"was {usage.used / GiB:.2f}GiB / {usage.total / GiB:.2f}GiB "
        f"({usage.fraction:.4g}), which exceeds the memory usage threshold of "
        f"{threshold:g}. miniray killed this worker because it was {why}.\n"
        f"To avoid this: reduce the memory each task uses or how many run at "
        f"once on a node (request more CPUs per task with num_cpus, or declare "
        f"what a task needs with the memory resource: "
        f"@remote(memory=<bytes>)); provision more memory; set max_retries "
        f"(tasks) or max_restarts (actors) so that a killed one is retried. To "
        f"adjust the kill threshold set MINIRAY_MEMORY_USAGE_THRESHOLD "
        f"(a fraction of the node's memory) when starting the cluster; to "
        f"disable worker killing set MINIRAY_MEMORY_MONITOR_REFRESH_MS=0.")


class MemoryMonitor:
    """The raylet's memory protection state (no I/O: the raylet reads the
    memory, lists the candidates and kills)."""

    def __init__(self, threshold: float, *, node_id_hex: str = "", node_ip: str = ""):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"the memory usage threshold must be a fraction of the "
                             f"node's memory in [0, 1], got {threshold!r}")
        self.threshold = threshold
        self.node_id_hex = node_id_hex
        self.node_ip = node_ip
        self.killing: bytes | None = None     # worker killed, not exited yet
        self._causes: OrderedDict[bytes, str] = OrderedDict()

    def check(self, usage: MemoryUsage, candidates,
              victim_bytes=None) -> Kill | None:
        """The worker to kill now, if memory is above the threshold and no
        earlier kill is still in progress (its cause is recorded at once).
        ``victim_bytes``: an optional ``pid -> bytes`` for the message."""
        if self.killing is not None or not above_threshold(usage, self.threshold):
            return None
        victim = pick_victim(candidates)
        if victim is None:
            return None
        size = victim_bytes(victim.pid) if victim_bytes is not None else None
        message = kill_message(usage, self.threshold, victim, node_id_hex=self.node_id_hex,
                               node_ip=self.node_ip, victim_bytes=size)
        self.killing = victim.worker_id
        self._causes[victim.worker_id] = message
        while len(self._causes) > MAX_REMEMBERED_KILLS:
            self._causes.popitem(last=False)
        return Kill(victim, message)

    def kill_finished(self) -> None:
        """The killed worker's process exited: the next kill may come."""
        self.killing = None

    def failure_cause(self, worker_id: bytes) -> str | None:
        """Why this monitor killed the worker, or None if it did not."""
        return self._causes.get(bytes(worker_id))


# --- reading the node's memory (I/O) ---------------------------------------------------
CGROUP_ROOT = "/sys/fs/cgroup"
ZONEINFO = "/proc/zoneinfo"


def read_memory_usage(cgroup_root: str = CGROUP_ROOT,
                      zoneinfo: str = ZONEINFO) -> MemoryUsage:
    """The node's memory as Ray measures it: a cgroup's limit and working
    set when a limit below the machine's memory is set (containers), else
    the machine's: used = total - available.

    Unlike Ray, the machine's available memory also counts the free pages
    the kernel keeps on per-CPU lists (``/proc/zoneinfo``): MemAvailable
    leaves them out, and since Linux 6.7 those lists grow to hundreds of
    MiB per CPU, so memory a killed worker freed would show as used for
    seconds and the monitor would kill again at once."""
    system = psutil.virtual_memory()
    used = system.total - system.available - percpu_free_bytes(zoneinfo)
    usage = MemoryUsage(min(max(0, used), system.total), system.total)
    cgroup = cgroup_memory_usage(cgroup_root)
    if cgroup is not None and 0 < cgroup.total <= usage.total:
        return cgroup
    return usage


def percpu_free_bytes(zoneinfo: str = ZONEINFO) -> int:
    """Free pages on the kernel's per-CPU lists, in bytes (0 if unknown)."""
    try:
        with open(zoneinfo) as f:
            text = f.read()
    except OSError:
        return 0
    return percpu_free_pages(text) * os.sysconf("SC_PAGE_SIZE")


def percpu_free_pages(zoneinfo_text: str) -> int:
    """The ``count:`` of every per-CPU pageset in /proc/zoneinfo, summed."""
    pages = 0
    for line in zoneinfo_text.splitlines():
        line = line.strip()
        if line.startswith("count:"):
            value = line[len("count:"):].strip()
            if value.isdigit():
                pages += int(value)
    return pages


def cgroup_memory_usage(root: str = CGROUP_ROOT) -> MemoryUsage | None:
    """The cgroup's (v2, else v1) limit and working set (usage minus
    inactive file cache); None without a readable limit."""
    v2 = _read_cgroup(os.path.join(root, "memory.max"),
                      os.path.join(root, "memory.current"),
                      os.path.join(root, "memory.stat"), v2=True)
    if v2 is not None:
        return v2
    v1 = os.path.join(root, "memory")
    return _read_cgroup(os.path.join(v1, "memory.limit_in_bytes"),
                        os.path.join(v1, "memory.usage_in_bytes"),
                        os.path.join(v1, "memory.stat"), v2=False)


def _read_cgroup(limit_path: str, usage_path: str, stat_path: str, *,
                 v2: bool) -> MemoryUsage | None:
    try:
        with open(limit_path) as f:
            limit_text = f.read().strip()
        with open(stat_path) as f:
            stat = parse_memory_stat(f.read())
        if v2:
            with open(usage_path) as f:
                current = int(f.read().strip())
    except (OSError, ValueError):
        return None
    if limit_text == "max" or not limit_text.isdigit() or int(limit_text) <= 0:
        return None              # no limit
    return working_set(int(limit_text), stat, current if v2 else None)


def parse_memory_stat(text: str) -> dict[str, int]:
    stat = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            stat[parts[0]] = int(parts[1])
    return stat


def working_set(limit: int, stat: dict[str, int], current: int | None) -> MemoryUsage | None:
    """cgroup v2: memory.current - inactive_file; v1 (``current`` None):
    total_rss + total_cache - total_inactive_file. Clamped to [0, limit]."""
    if current is not None:
        if "inactive_file" not in stat:
            return None
        used = current - stat["inactive_file"]
    else:
        if not {"total_rss", "total_cache", "total_inactive_file"} <= stat.keys():
            return None
        used = stat["total_rss"] + stat["total_cache"] - stat["total_inactive_file"]
    return MemoryUsage(min(max(used, 0), limit), limit)


def process_memory(pid: int) -> int | None:
    """A process's resident memory (for the kill message), if readable."""
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None
