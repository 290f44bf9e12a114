"""The raylet's worker pool: starts worker processes, hands out idle ones,
reaps extras and notices deaths.

A worker is bound to the job of the first lease it serves (its sys.path and
working directory come from that job) and is only reused for that job. A
worker started for a runtime env (runtime_env/manager.py: its python, cwd
and variables) only ever serves tasks of that same env.
Its output goes to files of its own (worker_logs.py). The pool remembers
the last workers that exited, for the state API (``list_workers``).

As in Ray (``maximum_startup_concurrency``), at most ``startup_concurrency``
processes start at once (by default the smaller of the node's CPUs and the
machine's cores). A pop that finds no idle worker and no free start slot
waits in line; it takes whichever comes first, a worker that goes idle or a
slot. Starting twenty processes at once on two cores would bring all of them
up late together; in line, the first ones are ready after one start time.
"""
from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from miniray.common import config
from miniray.common.ids import WorkerID
from miniray.common.process import descendants, kill_descendants
from miniray.raylet.worker_logs import WorkerLogs
from miniray.runtime_env.manager import NO_ENV, WorkerEnv

# Exited workers (and drivers) the state API still lists.
MAX_EXITED_RECORDS = 1000


@dataclass(frozen=True)
class ExitedProcess:
    """A worker or driver of this node that is gone, as list_workers shows it."""
    worker_id: bytes
    pid: int
    is_driver: bool
    job_id: bytes
    start_time_ms: int
    end_time_ms: int
    exit_type: str          # Ray's names: INTENDED_SYSTEM_EXIT, SYSTEM_ERROR, ...
    exit_detail: str


class WorkerProcess:
    __slots__ = ("worker_id", "process", "port", "job_id", "ready", "idle_since",
                 "lease_id", "dead", "used", "gpu", "start_time_ms", "exit", "env",
                 "timed_out", "served_detached")

    def __init__(self, worker_id: WorkerID, process: subprocess.Popen | None,
                 ready: asyncio.Future, env: WorkerEnv = NO_ENV):
        self.worker_id = worker_id
        self.process = process
        self.port = 0
        self.job_id: bytes = b""
        self.ready = ready
        self.idle_since: float | None = None
        self.lease_id: bytes = b""
        self.dead = False
        self.used = False           # has been leased to an owner
        self.gpu: bool | None = None   # ran GPU work (True) or not (False): kept apart
        self.start_time_ms = int(time.time() * 1000)
        self.exit: tuple[str, str] | None = None    # (exit type, detail) if killed
        self.env = env              # the runtime env it was started in
        self.timed_out = False      # killed for not registering in time
        self.served_detached = False   # was leased for a detached actor's tasks

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0


class WorkerStartFailed(RuntimeError):
    """A new worker process died before it was ready. ``killed``: by a
    signal (something killed it), not by exiting on its own (it crashed) or
    hanging until the register timeout."""

    def __init__(self, killed: bool):
        super().__init__("worker process " + ("was killed" if killed else "exited")
                         + " during startup")
        self.killed = killed


class WorkerPool:
    def __init__(self, raylet_address: str, gcs_address: str, soft_limit: int,
                 node_ip: str = "127.0.0.1", forward_output: bool = False,
                 logs: WorkerLogs | None = None, envs=None,
                 startup_concurrency: int = 0):
        self.node_ip = node_ip
        # Daemon nodes log workers' output to files only: send it to drivers too.
        self.forward_output = forward_output
        self.logs = logs
        self.envs = envs            # RuntimeEnvManager: workers hold its resources
        self.exited: collections.deque[ExitedProcess] = collections.deque(
            maxlen=MAX_EXITED_RECORDS)
        self.raylet_address = raylet_address
        self.gcs_address = gcs_address
        self.soft_limit = max(1, soft_limit)
        self.startup_concurrency = max(1, startup_concurrency or min(
            soft_limit, os.cpu_count() or 1))
        self._registering = 0       # processes started, not yet registered
        self._prestart_wanted = 0   # backlog prestarts waiting for a start slot
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self.workers: dict[WorkerID, WorkerProcess] = {}
        self._idle: list[WorkerProcess] = []
        self._leaving: set[WorkerProcess] = set()   # asked to exit (reap_idle)
        self._starting: list[WorkerProcess] = []   # started, not yet handed out
        self._dying: list[subprocess.Popen] = []     # killed, not yet waited for

    # --- starting and registration ---------------------------------------------
    def start_worker(self, runtime_env: WorkerEnv = NO_ENV) -> WorkerProcess:
        worker_id = WorkerID.from_random()
        process = self._spawn(worker_id, runtime_env)
        worker = WorkerProcess(worker_id, process,
                               asyncio.get_running_loop().create_future(), runtime_env)
        self.workers[worker_id] = worker
        self._registering += 1
        worker.ready.add_done_callback(self._registered)
        timer = asyncio.get_running_loop().call_later(
            config.WORKER_REGISTER_TIMEOUT_S, self._register_timeout, worker)
        worker.ready.add_done_callback(lambda _: timer.cancel())
        if self.envs is not None:
            self.envs.acquire(runtime_env)
        return worker

    def _registered(self, _future: asyncio.Future) -> None:
        """A start slot is free (the worker registered or died starting):
        pops in line come first, then backlog prestarts."""
        self._registering -= 1
        self._wake()

    def prestart_for_backlog(self, wanted: int) -> None:
        """Ray's PrestartWorkers: an owner has ``backlog`` more tasks queued
        than it asked leases for, so have up to ``wanted`` (the backlog, at
        most the free CPUs) plain workers idle or starting. They start
        through the same slots, after the pops in line, and join the idle
        pool; otherwise the tasks run one after another on the leases the
        owner already holds, and the pool never grows to the CPUs."""
        usable = len(self._starting) + sum(
            1 for w in self._idle if not w.env.key and w.gpu is not True)
        self._prestart_wanted = max(self._prestart_wanted, wanted - usable)
        self._start_prestarts()

    def _start_prestarts(self) -> None:
        """Start wanted prestarts in free slots; they never take the pool
        past ``soft_limit`` processes (the CPUs), where idle reaping would
        only kill them again."""
        if len(self.workers) >= self.soft_limit:
            self._prestart_wanted = 0
        while self._prestart_wanted > 0 and not self._waiters \
                and self._registering < self.startup_concurrency \
                and len(self.workers) < self.soft_limit:
            self._prestart_wanted -= 1
            self.prestart(1)

    def _register_timeout(self, worker: WorkerProcess) -> None:
        if not worker.ready.done():
            worker.timed_out = True
            self.kill(worker, "SYSTEM_ERROR", "did not register with the raylet within "
                      f"{config.WORKER_REGISTER_TIMEOUT_S:g} s of starting")

    def _wake(self) -> None:
        """Let the pops waiting in line look again, oldest first; backlog
        prestarts get the slots they leave (an idle worker may serve them)."""
        woke = False
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                woke = True
        if self._prestart_wanted:
            if woke:        # after the woken pops have looked (FIFO callbacks)
                asyncio.get_running_loop().call_soon(self._start_prestarts)
            else:
                self._start_prestarts()

    def _spawn(self, worker_id: WorkerID, runtime_env: WorkerEnv) -> subprocess.Popen:
        # MINIRAY_CORE_WORKER: how `miniray stop` knows it once its process
        # title (core_worker/proctitle.py) replaced its command line.
        # RAY_RAYLET_PID: Ray's name; a worker (or a test) finds its raylet by it.
        env = dict(os.environ, PYTHONUNBUFFERED="1", MINIRAY_NODE_IP=self.node_ip,
                   MINIRAY_CORE_WORKER="1", SPT_NOENV="1", RAY_RAYLET_PID=str(os.getpid()))
        env.update(runtime_env.env)
        if self.forward_output:
            env["MINIRAY_FORWARD_OUTPUT"] = "1"
        output = self.logs.open(worker_id.hex()) if self.logs is not None else None
        try:
            process = subprocess.Popen(
                [runtime_env.python, "-m", "miniray.core_worker",
                 "--raylet-address", self.raylet_address,
                 "--gcs-address", self.gcs_address, "--worker-id", worker_id.hex()],
                stdin=subprocess.DEVNULL, env=env, close_fds=True, cwd=runtime_env.cwd,
                stdout=output.stdout if output else None,
                stderr=output.stderr if output else None)
        except BaseException:
            if output is not None:
                output.failed()
            raise
        if output is not None:
            output.started(process.pid)
        return process

    def prestart(self, count: int) -> None:
        for _ in range(count):
            worker = self.start_worker()
            self._starting.append(worker)
            worker.ready.add_done_callback(lambda _, w=worker: self._prestarted(w))

    def top_up(self) -> None:
        """Keep ``soft_limit`` unbound workers ready (idle or starting), so the
        next job's first tasks don't wait for processes to start."""
        ready = sum(1 for w in self._idle if not w.job_id and not w.env.key) \
            + len(self._starting)
        if ready < self.soft_limit:
            self.prestart(self.soft_limit - ready)

    def _prestarted(self, worker: WorkerProcess) -> None:
        if worker in self._starting and not worker.dead:
            self._starting.remove(worker)
            self.push_idle(worker)

    def on_registered(self, worker_id: WorkerID, port: int) -> bool:
        worker = self.workers.get(worker_id)
        if worker is None:
            return False
        worker.port = port
        if not worker.ready.done():
            worker.ready.set_result(worker)
        return True

    # --- leasing -----------------------------------------------------------------
    async def pop(self, job_id: bytes, gpu: bool = False,
                  runtime_env: WorkerEnv = NO_ENV, for_actor: bool = False) -> WorkerProcess:
        """An idle worker for this job, else an unbound one, else a new one,
        in the same runtime env. As in Ray, a worker that ran GPU work only
        runs GPU work again, and one that ran CPU-only work never gets a GPU
        (CUDA state set up in a process stays with it); and an actor never
        gets a worker that ran tasks: it may own their objects, which must
        not die with the actor."""
        key = runtime_env.key

        def fits(w: WorkerProcess) -> bool:
            return w.gpu in (None, gpu) and w.env.key == key and not (for_actor and w.used)

        waited = False
        while True:
            for candidates in (
                    [w for w in self._idle if w.job_id == job_id and fits(w)],
                    [w for w in self._idle if not w.job_id and fits(w)]):
                if candidates:
                    worker = candidates[-1]
                    self._idle.remove(worker)
                    worker.job_id = job_id
                    worker.gpu = gpu
                    worker.idle_since = None
                    if waited and not key:
                        # It found no worker and waited for a slot to start
                        # one; the process still starts (as a prestart), so
                        # the pool grows with demand as it would without the
                        # line.
                        self._prestart_wanted += 1
                        asyncio.get_running_loop().call_soon(self._start_prestarts)
                    return worker
            worker = self._take_starting() if not key else None
            if worker is not None:
                break
            # Woken pops look again in the order they came; a newcomer
            # never starts a process ahead of pops waiting in line.
            if self._registering < self.startup_concurrency and not self._waiters:
                worker = self.start_worker(runtime_env)
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            waited = True
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                self._wake()        # pass its turn on
                raise
        worker.job_id = job_id
        worker.gpu = gpu
        await worker.ready
        if worker.dead:
            code = worker.process.poll() if worker.process else None
            raise WorkerStartFailed(killed=code is not None and code < 0
                                    and not worker.timed_out)
        return worker

    def _take_starting(self) -> WorkerProcess | None:
        if self._starting:
            return self._starting.pop(0)
        return None

    def push_idle(self, worker: WorkerProcess) -> None:
        if worker.dead:
            return
        worker.lease_id = b""
        worker.idle_since = time.monotonic()
        self._leaving.discard(worker)
        self._idle.append(worker)
        self._wake()

    # --- ending -------------------------------------------------------------------
    def retire(self, worker: WorkerProcess) -> None:
        """A worker that will exit by itself: never handed out again (it
        stays tracked until its process exits: reap_dead, kill_all)."""
        if worker in self._idle:
            self._idle.remove(worker)      # only idle workers are handed out

    def kill(self, worker: WorkerProcess, exit_type: str = "INTENDED_SYSTEM_EXIT",
             detail: str = "stopped by the raylet", *, with_children: bool = True) -> None:
        """SIGKILL the worker and (``with_children``) what its tasks started,
        found first: once the worker is gone they belong to init."""
        if worker.exit is None:
            worker.exit = (exit_type, detail)
        self._forget(worker)
        if worker.process and worker.process.poll() is None:
            started = descendants(worker.process.pid) if with_children else []
            try:
                worker.process.kill()
            except ProcessLookupError:
                pass
            kill_descendants(found=started)
            self._dying.append(worker.process)

    def _forget(self, worker: WorkerProcess) -> None:
        if not worker.dead and worker.process is not None:
            self._record_exit(worker)
            if self.envs is not None:
                self.envs.release(worker.env)
        worker.dead = True
        self.workers.pop(worker.worker_id, None)
        self._leaving.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        if worker in self._starting:
            self._starting.remove(worker)
        if not worker.ready.done():
            worker.ready.set_result(worker)

    def reap_dead(self) -> list[WorkerProcess]:
        """Collect worker processes that exited since the last call."""
        dead = [w for w in self.workers.values()
                if w.process is not None and w.process.poll() is not None]
        for worker in dead:
            self._forget(worker)
        self._dying = [p for p in self._dying if p.poll() is None]
        return dead

    def reap_idle(self) -> list[WorkerProcess]:
        """Idle workers beyond the soft limit, idle long enough: taken out
        of the idle list (never handed out meanwhile) for the raylet to ask
        them to exit (ExitWorker if_idle). One that refuses (it owns objects
        still in use, as in Ray) comes back with push_idle."""
        now = time.monotonic()
        excess = len(self.workers) - len(self._leaving) - self.soft_limit
        asked = []
        for worker in sorted(self._idle, key=lambda w: w.idle_since or now):
            if excess <= 0:
                break
            if now - (worker.idle_since or now) >= config.IDLE_WORKER_TIMEOUT_S:
                self._idle.remove(worker)
                worker.exit = ("INTENDED_SYSTEM_EXIT", "idle for too long")
                asked.append(worker)
                excess -= 1
        self._leaving.update(asked)
        return asked

    def _record_exit(self, worker: WorkerProcess) -> None:
        if worker.exit is not None:
            exit_type, detail = worker.exit
        else:
            code = worker.process.poll()
            if code == 0:
                exit_type, detail = "INTENDED_USER_EXIT", "exited with code 0"
            elif code is not None and code < 0:
                exit_type, detail = "SYSTEM_ERROR", f"killed by signal {-code}"
            else:
                exit_type, detail = "SYSTEM_ERROR", f"exited with code {code}"
            worker.exit = (exit_type, detail)
        self.record_exit(ExitedProcess(bytes(worker.worker_id), worker.pid, False,
                                       worker.job_id, worker.start_time_ms,
                                       int(time.time() * 1000), exit_type, detail))

    @staticmethod
    def exit_reason(worker: WorkerProcess) -> str:
        """How a worker that is gone ended, in Ray's words (for the GCS)."""
        exit_type, detail = worker.exit or ("SYSTEM_ERROR", "unknown")
        return f"Worker exit type: {exit_type} Worker exit detail: {detail}"

    def record_exit(self, record: ExitedProcess) -> None:
        self.exited.append(record)

    def workers_of_job(self, job_id: bytes) -> list[WorkerProcess]:
        return [w for w in self.workers.values() if w.job_id == job_id]

    def num_idle(self) -> int:
        return len(self._idle)

    def kill_all(self) -> None:
        workers = list(self.workers.values())
        # One look at /proc for all of them, not one per worker.
        started = descendants(*[w.pid for w in workers if w.process])
        for worker in workers:
            self.kill(worker, with_children=False)
        kill_descendants(found=started)
        deadline = time.monotonic() + 2
        for worker in workers:
            if worker.process:
                try:
                    worker.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
