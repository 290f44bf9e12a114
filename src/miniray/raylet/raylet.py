"""The raylet process: wires the scheduler, worker pool and object store to
gRPC, the GCS and the processes on this node.

    python -m miniray.raylet --gcs-address H:P --node-id HEX --session-dir D ...
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import replace

import psutil

from miniray.common import config
from miniray.common.ids import NodeID, WorkerID
from miniray.common.resources import fits, subtract
from miniray.common.process import die_with_parent, name_process
from miniray.common.rpc_guard import add_servicer
from miniray.exceptions import RuntimeEnvSetupError
from miniray.object_store.store import PlasmaStore
from miniray.protocol import (
    common_pb2, gcs_pb2, gcs_pb2_grpc, raylet_pb2)
from miniray.object_store.data_plane import ObjectStreamServer
from miniray.object_store.transfer import ObjectPuller
from miniray.raylet.cluster_policy import ClusterPolicy, Decision, NodeView
from miniray.raylet.gc_policy import GcPolicy
from miniray.raylet.memory_monitor import (
    Candidate, MemoryMonitor, process_memory, read_memory_usage)
from miniray.raylet.resource_view import ClusterView, ResourceReport
from miniray.raylet.scheduler import Lease, LeaseRequest, LeaseScheduler
from miniray.protocol import object_manager_pb2 as om_pb2
from miniray.raylet.servicer import ObjectManagerServicer, RayletServicer
from miniray.raylet.worker_logs import WorkerLogs
from miniray.raylet.worker_pool import ExitedProcess, WorkerPool, WorkerStartFailed
from miniray.runtime_env import packaging
from miniray.runtime_env.manager import RuntimeEnvManager
from miniray.rpc import ChannelPool, auth, start_server

log = logging.getLogger("miniray.raylet")


class Raylet:
    def __init__(self, *, node_id: NodeID, gcs_address: str, session_dir: str,
                 resources: dict, object_store_memory: int, is_head: bool,
                 host: str = config.NODE_IP, owns_session_dir: bool = False):
        self.node_id = node_id
        self.gcs_address = gcs_address
        self.session_dir = session_dir
        self.host = host
        self.is_head = is_head
        self.owns_session_dir = owns_session_dir      # remove it on exit
        self.scheduler = LeaseScheduler(dict(resources))
        self.total = self.scheduler.total          # grows with placement groups
        self.object_store_memory = object_store_memory
        short = node_id.hex()[:8]
        self.store_directory = os.path.join(
            config.SHM_ROOT, f"miniray-{os.path.basename(session_dir)}-{short}")
        self.store = PlasmaStore(self.store_directory, object_store_memory,
                                 os.path.join(session_dir, f"spill-{short}"))
        self.channels = ChannelPool()
        self.puller = ObjectPuller(self.store, self.channels)
        self.streams = ObjectStreamServer(host)     # object bytes to other nodes
        self.policy = ClusterPolicy(bytes(node_id))
        self.view = ClusterView(bytes(node_id))       # the others, from the GCS
        self.leases: dict[bytes, Lease] = {}
        self.drivers: dict[WorkerID, tuple[int, bytes]] = {}   # id -> (pid, job)
        self._driver_start_ms: dict[WorkerID, int] = {}
        self._driver_ports: dict[WorkerID, int] = {}     # their CoreWorkerService
        self.log_directory = os.path.join(session_dir, "logs")
        self._waiting: dict[int, asyncio.Future] = {}
        self._cap_timer: asyncio.TimerHandle | None = None   # see _schedule
        self._request_ids = itertools.count()
        self._lease_ids = itertools.count(1)
        self._warned_infeasible: set = set()
        # Processes known to be gone; a lease request of theirs still in flight
        # when they left must not be granted (nobody would ever return it).
        self._departed: dict[bytes, None] = {}        # insertion-ordered, bounded
        self._departed_nodes: set[bytes] = set()      # dead nodes (few: kept)
        self._stop = asyncio.Event()
        self.pool: WorkerPool | None = None
        self.memory_monitor = MemoryMonitor(config.MEMORY_USAGE_THRESHOLD,
                                            node_id_hex=node_id.hex(), node_ip=host)
        self.gc = GcPolicy(config.HIGH_PLASMA_STORAGE_USAGE, config.LOCAL_GC_MIN_INTERVAL_S,
                           config.GLOBAL_GC_MIN_INTERVAL_S, config.LOCAL_GC_INTERVAL_S)
        self._gc_timer: asyncio.TimerHandle | None = None
        # Runtime envs set up on this node (packages, virtualenvs): its own
        # directory, removed when the raylet exits.
        self.envs = RuntimeEnvManager(
            os.path.join(session_dir, f"runtime_resources-{short}"),
            self._fetch_package, config.RUNTIME_ENV_CACHE_BYTES)

    @property
    def gcs(self):
        return self.channels.gcs_stub(self.gcs_address)

    # --- lifecycle ------------------------------------------------------------
    async def serve(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        def add_servicers(server):
            add_servicer(server, RayletServicer(self),
                         raylet_pb2.DESCRIPTOR.services_by_name["RayletService"])
            add_servicer(server, ObjectManagerServicer(self),
                         om_pb2.DESCRIPTOR.services_by_name["ObjectManagerService"])

        server, self.port = await start_server(add_servicers, self.host, port)
        await self.streams.start()
        address = f"{self.host}:{self.port}"
        # Workers' output goes to files in the logs directory; on a node
        # init() started (its raylet shares the driver's terminal) also to
        # the terminal, else workers forward what tasks print to drivers.
        self.pool = WorkerPool(address, self.gcs_address,
                               int(self.total.get("CPU", 1)), self.host,
                               forward_output=not self.owns_session_dir,
                               logs=WorkerLogs(self.log_directory,
                                               tee=self.owns_session_dir),
                               envs=self.envs,
                               startup_concurrency=config.WORKER_MAXIMUM_STARTUP_CONCURRENCY)
        self.pool.prestart(int(min(self.total.get("CPU", 0), os.cpu_count() or 1)))
        await self._register_node()
        tasks = [asyncio.create_task(self._heartbeat_loop()),
                 asyncio.create_task(self._monitor_loop()),
                 asyncio.create_task(self._memory_monitor_loop()),
                 asyncio.create_task(self._metrics_loop())]
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            self.envs.close()
            self.streams.close()
            self.pool.kill_all()
            # Stop serving first: the GCS unregisters a node only once its
            # raylet no longer answers (so nobody else can unregister it).
            await server.stop(grace=None)
            try:
                # Not self.gcs: a GCS stopping with the cluster is not waited for.
                gcs = self.channels.stub(self.gcs_address, gcs_pb2_grpc.GcsServiceStub)
                await asyncio.wait_for(gcs.UnregisterNode(
                    gcs_pb2.UnregisterNodeRequest(node_id=self.node_id)), 1)
            except Exception:
                pass
            self.store.close()
            self.envs.remove_all()
            if self.owns_session_dir:
                shutil.rmtree(self.session_dir, ignore_errors=True)

    async def _register_node(self) -> None:
        info = common_pb2.NodeInfo(
            node_id=self.node_id, ip=self.host, raylet_port=self.port,
            resources_total=self.total, resources_available=self.scheduler.available,
            alive=True, is_head=self.is_head, store_directory=self.store_directory,
            session_dir=self.session_dir, hostname=socket.gethostname(),
            object_store_memory=self.object_store_memory)
        await self.gcs.RegisterNode(gcs_pb2.RegisterNodeRequest(node=info),
                                    wait_for_ready=True, timeout=30)

    async def _heartbeat_loop(self) -> None:
        """Report this node to the GCS. While the GCS is down (restarting)
        keep trying; once a restarted GCS answers, resync with it. Shut down
        when the GCS says this node is dead (never come back as a zombie)
        or stays unreachable past GCS_RECONNECT_TIMEOUT_S."""
        incarnation = None
        gc_epoch = None              # the GCS's count of global GCs asked for
        last_ok = time.monotonic()
        sent_at = 0.0
        report = ResourceReport()
        available, total = self.scheduler.available, self.total
        while True:
            await asyncio.sleep(config.HEARTBEAT_PERIOD_S)
            self.maybe_collect()          # the periodic local GC, when due
            global_gc = self.gc.take_global_request()
            # Idle (nothing changed, nothing queued): only a keepalive now and
            # then. Queued work needs a fresh view of the others to spill to.
            if report.unchanged(available, total) and not self.scheduler.queue \
                    and incarnation and not global_gc \
                    and time.monotonic() - sent_at < config.IDLE_HEARTBEAT_PERIOD_S:
                continue
            whole, (avail_set, avail_gone), (total_set, total_gone), snapshot = \
                report.build(available, total)
            try:
                sent_at = time.monotonic()
                reply = await self.gcs.Heartbeat(gcs_pb2.HeartbeatRequest(
                    node_id=self.node_id, resources_full=whole,
                    available=gcs_pb2.ResourceDelta(set=avail_set, removed=avail_gone),
                    total=gcs_pb2.ResourceDelta(set=total_set, removed=total_gone),
                    view_version=self.view.version,
                    view_incarnation=self.view.incarnation,
                    request_global_gc=global_gc), timeout=5)
            except Exception as exc:
                if global_gc:
                    self.gc.store_full_again()     # ask at the next heartbeat
                if time.monotonic() - last_ok > config.GCS_RECONNECT_TIMEOUT_S:
                    log.error("could not reach the GCS at %s for %g s (%s): shutting "
                              "down", self.gcs_address, config.GCS_RECONNECT_TIMEOUT_S,
                              exc)
                    self._stop.set()
                    return
                continue
            last_ok = time.monotonic()
            if reply.node_dead:
                log.error("the GCS marked this node dead: shutting down")
                self._stop.set()
                return
            report.taken(snapshot)
            restarted = incarnation is not None and reply.gcs_incarnation != incarnation
            if restarted or reply.resend_resources:
                report.reset()                # a new GCS: tell it everything again
            if restarted:
                log.warning("the GCS restarted: resyncing this node with it")
                if not await self._resync():
                    continue                  # try again at the next heartbeat
            # Another node asked for a global GC (our own request we have
            # acted on already: the count it raised is no news).
            if gc_epoch is not None and reply.gcs_incarnation == incarnation \
                    and reply.global_gc_epoch > gc_epoch and not global_gc:
                self.gc.global_requested()
                self.maybe_collect()
            gc_epoch = reply.global_gc_epoch
            incarnation = reply.gcs_incarnation
            self.view.apply(reply)
            self._respill()

    async def _metrics_loop(self) -> None:
        """Report this node's CPU, memory and store figures to the GCS
        (node_metrics.py); the dashboard exports them."""
        from miniray.raylet.node_metrics import node_report
        psutil.cpu_percent(interval=None)          # starts the CPU measurement
        while True:
            await asyncio.sleep(config.METRICS_REPORT_INTERVAL_S)
            report = node_report(bytes(self.node_id), self.store.stats(),
                                 len(self.pool.workers))
            try:
                await self.gcs.ReportMetrics(gcs_pb2.ReportMetricsRequest(report=report),
                                             timeout=5)
            except Exception as exc:       # noqa: BLE001 - the next report may work
                log.debug("reporting node metrics failed: %s", exc)

    async def _resync(self) -> bool:
        """Tell a restarted GCS what runs here now (it settles what changed
        while it was away); False if it could not be told."""
        request = gcs_pb2.ResyncNodeRequest(
            node_id=self.node_id,
            live_workers=[bytes(w) for w in self.pool.workers] +
                         [bytes(d) for d in self.drivers])
        for pg_id, bundles in self.scheduler.bundles.items():
            for bundle in bundles:
                request.bundles.add(placement_group_id=pg_id, bundle_index=bundle.index)
        try:
            reply = await self.gcs.ResyncNode(request, timeout=10)
        except Exception as exc:
            log.warning("resyncing with the GCS failed: %s", exc)
            return False
        if reply.node_dead:
            log.error("the GCS marked this node dead: shutting down")
            self._stop.set()
        return True

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            for worker in self.pool.reap_dead():
                self._on_worker_gone(worker.worker_id, worker.lease_id,
                                     reason=self.pool.exit_reason(worker))
            for driver_id, (pid, _) in list(self.drivers.items()):
                if not _process_alive(pid):
                    self.disconnect(driver_id)
            for worker in self.pool.reap_idle():
                asyncio.get_running_loop().create_task(self._ask_idle_exit(worker))
            now = time.monotonic()
            if self.store.has_unsealed(expired_before=now):
                for object_id in await asyncio.to_thread(self.store.release_unsealed,
                                                         None, now):
                    log.warning("object %s was reserved but not sealed in time: "
                                "released", object_id.hex())

    async def _memory_monitor_loop(self) -> None:
        """Memory protection (memory_monitor.py): while the node's memory is
        above the threshold, kill one leased worker at a time, waiting for
        its process to exit before the next kill. Its owner learns why with
        GetWorkerFailureCause."""
        period = config.MEMORY_MONITOR_REFRESH_MS / 1000
        if period <= 0:
            return
        monitor = self.memory_monitor
        victim = None                 # the killed worker's process, until it exits
        while True:
            await asyncio.sleep(period)
            if victim is not None:
                if victim.poll() is None:
                    continue
                victim = None
                monitor.kill_finished()
            try:
                usage = read_memory_usage()
            except Exception:          # noqa: BLE001 - try again next period
                log.exception("could not read the node's memory usage")
                continue
            candidates = []
            for lease in self.leases.values():
                worker = self.pool.workers.get(WorkerID(lease.worker_id)) \
                    if lease.worker_id and lease.granted_at else None
                if worker is not None and worker.process is not None:
                    candidates.append(Candidate(bytes(worker.worker_id), worker.pid,
                                                lease.retriable, lease.granted_at,
                                                is_actor=bool(lease.actor_id)))
            kill = monitor.check(usage, candidates, process_memory)
            if kill is None:
                continue
            worker = self.pool.workers[WorkerID(kill.victim.worker_id)]
            log.warning("the node is low on memory: killing worker %s (pid %d). %s",
                        worker.worker_id.hex(), worker.pid, kill.message)
            victim = worker.process
            self.pool.kill(worker, "SYSTEM_ERROR",
                           f"killed because the node ran out of memory. {kill.message}")
            self._on_worker_gone(worker.worker_id, worker.lease_id,
                                 reason=f"Worker exit type: NODE_OUT_OF_MEMORY Worker exit "
                                        f"detail: killed because the node ran out of "
                                        f"memory. {kill.message}")

    # --- placement across nodes -------------------------------------------------------
    def cluster_view(self) -> dict[bytes, NodeView]:
        """Every live node, this one included (its maps are the scheduler's
        own: read them, never keep or modify them)."""
        view = dict(self.view.nodes)
        view[bytes(self.node_id)] = NodeView(
            bytes(self.node_id), f"{self.host}:{self.port}", self.total,
            self.scheduler.available)
        return view

    async def place(self, needed: dict, strategy) -> Decision:
        """Which node should take a request (local first when it fits)."""
        if strategy.kind in (0, 3) and fits(needed, self.scheduler.available):
            return Decision(bytes(self.node_id))      # the common, fast path
        if time.monotonic() - self.view.updated_at > config.HEARTBEAT_PERIOD_S / 2:
            await self._refresh_view()
        decision = self.policy.pick(needed, strategy.kind, self.cluster_view(),
                                    strategy.node_id, strategy.soft)
        if decision.node_id is None:
            await self._refresh_view()      # a node may have just joined
            decision = self.policy.pick(needed, strategy.kind, self.cluster_view(),
                                        strategy.node_id, strategy.soft)
        return decision

    async def _refresh_view(self) -> None:
        """A fresher view of the other nodes, if the GCS answers at once.
        One try, not the reconnecting stub: scheduling must go on with the
        view it has while the GCS is down (restarting), not wait for it."""
        gcs = self.channels.stub(self.gcs_address, gcs_pb2_grpc.GcsServiceStub)
        try:
            reply = await gcs.GetAllNodes(gcs_pb2.GetAllNodesRequest(
                since_version=self.view.version, incarnation=self.view.incarnation),
                timeout=2)
        except Exception:
            return
        self.view.apply(reply)

    def _respill(self) -> None:
        """Requests queued here that only another node can run, or that
        another node could run now while this one is full: send them on
        (Ray's spillback of queued work)."""
        view = self.cluster_view()
        for request in list(self.scheduler.queue):
            needed = {**request.placement, **request.resources}
            if self.scheduler.feasible(request.resources, request.placement):
                if not request.spillable or (
                        fits(needed, self.scheduler.available) and
                        not self.scheduler.at_cap(request, asyncio.get_running_loop().time())):
                    continue
                decision = self.policy.pick(needed, 0, view)
                node = view.get(decision.node_id)
                if node is None or not fits(needed, node.available):
                    continue                   # nowhere free either: wait here
            else:
                decision = self.policy.pick(needed, 0, view)
            if decision.node_id is None or decision.node_id == bytes(self.node_id):
                continue
            self.scheduler.queue.remove(request)
            node = view[decision.node_id]
            available = dict(node.available)   # don't send it all to one node
            subtract(available, needed)
            view[decision.node_id] = replace(node, available=available)
            future = self._waiting.pop(request.request_id, None)
            if future is not None and not future.done():
                future.set_result(node.address)

    # --- leases ---------------------------------------------------------------------
    async def _fetch_package(self, uri: str) -> bytes:
        """A runtime env package from the GCS's KV (runtime_env/manager.py)."""
        async def get(key: str):
            reply = await self.gcs.KVGet(gcs_pb2.KVGetRequest(
                namespace=packaging.KV_NAMESPACE, key=key.encode()))
            return reply.value if reply.found else None
        return await packaging.download_async(get, uri)

    async def request_lease(self, resources: dict, job_id: bytes, requester: bytes,
                            name: str, placement: dict | None = None,
                            actor_id: bytes = b"", spillable: bool = False,
                            runtime_env: str = "", depth: int = 0,
                            backlog: int = 0, requester_node: bytes = b"",
                            root_detached: bytes = b"") -> Lease | str:
        """A lease granted here, or the address of a raylet to ask instead
        (``spillable``: also when another node has room first). ``backlog``:
        the owner's tasks of this shape queued beyond its requests, for
        which plain workers are started ahead (as in Ray)."""
        if requester and requester in self._departed:
            raise RuntimeError("the requesting process has exited")
        if requester_node and requester_node in self._departed_nodes:
            raise RuntimeError("the requesting process's node has died")
        if backlog and not actor_id and not runtime_env and not _uses_gpu(resources):
            self.pool.prestart_for_backlog(
                min(backlog, int(self.scheduler.available.get("CPU", 0.0))))
        if not self.scheduler.feasible(resources, placement):
            self._warn_infeasible({**(placement or {}), **resources}, name)
        request = LeaseRequest(next(self._request_ids), resources, job_id, requester, name,
                               placement or {}, actor_id, spillable=spillable,
                               runtime_env=runtime_env, depth=depth,
                               requester_node=requester_node, root_detached=root_detached)
        future = asyncio.get_running_loop().create_future()
        self._waiting[request.request_id] = future
        self.scheduler.submit(request)
        self._schedule()
        try:
            return await future
        except asyncio.CancelledError:
            self._abandon(request, future)
            raise

    def _abandon(self, request: LeaseRequest, future: asyncio.Future) -> None:
        """The requester hung up (its RPC was cancelled): forget its request,
        and return a lease granted to it meanwhile, so nothing stays held."""
        self._waiting.pop(request.request_id, None)
        if request in self.scheduler.queue:
            self.scheduler.queue.remove(request)
        if future.done() and not future.cancelled() and future.exception() is None \
                and isinstance(future.result(), Lease):
            self.return_lease(future.result().lease_id, exiting=False)

    def _warn_infeasible(self, resources: dict, name: str) -> None:
        key = tuple(sorted(resources.items()))
        if key in self._warned_infeasible:
            return
        self._warned_infeasible.add(key)
        log.info("task %s requires %s but this node only has %s: it stays "
                 "pending until a node that can run it joins", name, resources,
                 self.total)

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        for request in self.scheduler.schedule(loop.time()):
            future = self._waiting.pop(request.request_id, None)
            # Unique across the cluster: owners hold leases from several raylets.
            lease_id = bytes(self.node_id[:8]) + next(self._lease_ids).to_bytes(8, "big")
            lease = Lease(lease_id, request.resources,
                          request.requester, request.job_id, actor_id=request.actor_id,
                          requester_node=request.requester_node,
                          resource_ids=request.resource_ids,
                          runtime_env=request.runtime_env,
                          sched_class=request.sched_class,
                          root_detached=request.root_detached)
            self.leases[lease.lease_id] = lease
            loop.create_task(self._grant(lease, future))
        # Requests a class's cap holds back: look again when one may go.
        admit = self.scheduler.next_admission()
        if admit is not None and (self._cap_timer is None
                                  or self._cap_timer.when() > admit):
            if self._cap_timer is not None:
                self._cap_timer.cancel()
            self._cap_timer = loop.call_at(admit, self._on_cap_timer)

    def _on_cap_timer(self) -> None:
        self._cap_timer = None
        self._schedule()

    async def _grant(self, lease: Lease, future: asyncio.Future | None,
                     attempt: int = 1) -> None:
        try:
            env = await self.envs.setup(lease.runtime_env)
        except RuntimeEnvSetupError as exc:
            # Not retried (Ray's rule): the owner fails the lease's tasks.
            self._end_lease(lease.lease_id)
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        try:
            worker = await self.pool.pop(lease.job_id, _uses_gpu(lease.resources), env,
                                         for_actor=bool(lease.actor_id))
        except WorkerStartFailed as exc:          # the new worker died while starting
            if self._stop.is_set() or future is None or future.done():
                self._end_lease(lease.lease_id)
                return
            # Workers that crash at startup fail the lease after 3 tries (a
            # broken environment); workers killed from outside are not the
            # lease's fault and are replaced (within a generous bound).
            if attempt < (50 if exc.killed else 3):
                await self._grant(lease, future, attempt + 1)
                return
            self._end_lease(lease.lease_id)
            future.set_exception(RuntimeError(
                "worker processes keep dying (or hanging) at startup; see their worker-*.err "
                f"files in {self.log_directory}"))
            return
        if lease.lease_id not in self.leases:
            # The lease ended while its worker started (its owner left). A
            # worker that never ran a task can serve anyone; one that did
            # carries that job's state and goes.
            if worker.used:
                self.pool.kill(worker)
            else:
                worker.job_id, worker.gpu = b"", None
                self.pool.push_idle(worker)
            return
        lease.worker_id = worker.worker_id
        worker.lease_id = lease.lease_id
        worker.used = True
        worker.served_detached = worker.served_detached or bool(lease.root_detached)
        if future is None or future.done():     # the requester went away
            self.return_lease(lease.lease_id, exiting=False)
            return
        future.set_result(lease)

    def return_lease(self, lease_id: bytes, exiting: bool) -> None:
        lease = self._end_lease(lease_id)
        if lease is None:
            return
        worker = self.pool.workers.get(WorkerID(lease.worker_id)) if lease.worker_id else None
        if worker is not None:
            if exiting:
                # Never leased again; as in Ray it exits once nothing it owns
                # is referenced (a max_calls worker whose returned refs are
                # still in use), or at once if it owns nothing.
                asyncio.get_running_loop().create_task(self._retire(worker))
            else:
                self.pool.push_idle(worker)
        self._schedule()

    async def _ask_idle_exit(self, worker) -> None:
        """An idle worker the pool has too many of: it exits unless it owns
        objects still in use (then it stays in the pool, as in Ray)."""
        from miniray.protocol import core_worker_pb2, core_worker_pb2_grpc
        try:
            stub = self.channels.stub(f"{self.host}:{worker.port}",
                                      core_worker_pb2_grpc.CoreWorkerServiceStub)
            reply = await stub.ExitWorker(core_worker_pb2.ExitWorkerRequest(if_idle=True),
                                          timeout=5)
        except Exception:           # gone already, or not answering: end it
            self.pool.kill(worker)
            return
        if not reply.exiting:
            worker.exit = None
            self.pool.push_idle(worker)     # asked again after another idle period

    async def _retire(self, worker) -> None:
        from miniray.protocol import core_worker_pb2, core_worker_pb2_grpc
        self.pool.retire(worker)
        try:
            stub = self.channels.stub(f"{self.host}:{worker.port}",
                                      core_worker_pb2_grpc.CoreWorkerServiceStub)
            await stub.ExitWorker(core_worker_pb2.ExitWorkerRequest(force=False),
                                  timeout=5)
        except Exception:           # gone already, or not answering: end it
            self.pool.kill(worker)

    def _end_lease(self, lease_id: bytes) -> Lease | None:
        lease = self.leases.pop(lease_id, None)
        if lease is not None:
            self.scheduler.release(lease)
        return lease

    def set_blocked(self, worker_id: bytes, blocked: bool) -> None:
        for lease in self.leases.values():
            if lease.worker_id == worker_id:
                if self.scheduler.set_blocked(lease, blocked) and blocked:
                    self._schedule()
                return

    # --- placement group bundles -------------------------------------------------------
    def reserve_bundle(self, pg_id: bytes, index: int, resources: dict) -> bool:
        if not self.scheduler.reserve_bundle(pg_id, index, resources):
            return False
        self._schedule()
        return True

    def return_bundles(self, pg_id: bytes, indexes=None) -> None:
        """Give back the group's bundles on this node (``indexes``: only
        those, which no lease can use yet: a placement attempt rolled back)."""
        if pg_id not in self.scheduler.bundles:
            return
        suffix = pg_id.hex()
        # The bundles' resource names end so (CPU_group_<i>_<pg>, or any of
        # the group's when all of them go).
        endings = (suffix,) if indexes is None \
            else tuple(f"_group_{i}_{suffix}" for i in indexes)
        # End the leases in those bundles (their workers go), with no
        # scheduling pass until the bundles are gone: nothing may be granted
        # out of them meanwhile.
        for lease in [l for l in self.leases.values()
                      if any(k.endswith(endings) for k in l.resources)]:
            self._end_lease(lease.lease_id)
            worker = self.pool.workers.get(WorkerID(lease.worker_id)) \
                if lease.worker_id else None
            if worker is not None:
                self.pool.kill(worker)
        self.scheduler.return_bundles(pg_id, indexes)
        self._schedule()

    # --- Python garbage collection (gc_policy.py) --------------------------------
    def store_pressure(self, full: bool = False) -> None:
        """After the store grew (``full``: it could not fit an object): past
        the mark, a local GC now and a global one at the next heartbeat.
        (Every seal passes here: below the mark it is one comparison.)"""
        now = time.monotonic()
        if full:
            asked = self.gc.store_full(now)
        else:
            asked = self.gc.store_usage(*self.store.usage(), now)
        if asked:
            self.maybe_collect()

    def maybe_collect(self) -> None:
        """Run a local GC if one is due; one held back by the minimum
        interval runs when the interval ends."""
        now = time.monotonic()
        delay = self.gc.local_gc_due(now)
        if delay is None:
            return
        if delay > 0:
            if self._gc_timer is None:
                def later():
                    self._gc_timer = None
                    self.maybe_collect()
                self._gc_timer = asyncio.get_running_loop().call_later(delay, later)
            return
        self.gc.local_gc_ran(now)
        targets = [f"{self.host}:{worker.port}" for worker in self.pool.workers.values()
                   if worker.port] if self.pool is not None else []
        targets += [f"{self.host}:{port}" for port in self._driver_ports.values() if port]
        if targets:
            log.info("asking %d workers and drivers to collect Python garbage "
                     "(cycles may hold object references)", len(targets))
        for target in targets:
            asyncio.get_running_loop().create_task(self._local_gc(target))

    async def _local_gc(self, target: str) -> None:
        from miniray.protocol import core_worker_pb2, core_worker_pb2_grpc
        try:
            stub = self.channels.stub(target, core_worker_pb2_grpc.CoreWorkerServiceStub)
            await stub.LocalGC(core_worker_pb2.LocalGCRequest(triggered_by_global_gc=True),
                               timeout=30)
        except Exception as exc:          # noqa: BLE001 - gone, or busy: best effort
            log.debug("LocalGC to %s failed: %s", target, exc)

    # --- processes coming and going -------------------------------------------------
    def register_driver(self, worker_id: WorkerID, pid: int, job_id: bytes,
                        port: int = 0) -> None:
        self.drivers[worker_id] = (pid, job_id)
        self._driver_start_ms[worker_id] = int(time.time() * 1000)
        self._driver_ports[worker_id] = port

    def disconnect(self, worker_id: WorkerID) -> None:
        """A driver or worker left: end its job (drivers) and what it owned."""
        driver = self.drivers.pop(worker_id, None)
        self._driver_ports.pop(worker_id, None)
        if driver is not None:
            pid, job_id = driver
            self.pool.record_exit(ExitedProcess(
                bytes(worker_id), pid, True, job_id,
                self._driver_start_ms.pop(worker_id, 0), int(time.time() * 1000),
                "INTENDED_USER_EXIT", "the driver disconnected"))
            for worker in self.pool.workers_of_job(job_id):
                if self._hosts_actor(worker):
                    continue    # the GCS decides: detached actors outlive drivers
                lease = self.leases.get(worker.lease_id)
                if lease is not None and lease.root_detached:
                    continue    # works for a detached actor: outlives the driver too
                if worker.served_detached and lease is None:
                    # Idle, after work for a detached actor: it may own what
                    # the actor still uses, so it leaves (as Ray's idle
                    # workers do) once nothing it owns is referenced.
                    asyncio.get_running_loop().create_task(self._retire(worker))
                    continue
                self.pool.kill(worker)
                self._on_worker_gone(worker.worker_id, worker.lease_id)
            asyncio.get_running_loop().create_task(self._mark_job_finished(job_id))
            if not self._stop.is_set():
                self.pool.top_up()
        worker = self.pool.workers.get(worker_id)
        if worker is not None:
            self.pool.kill(worker, "INTENDED_USER_EXIT", "the worker disconnected")
        self._on_worker_gone(worker_id, worker.lease_id if worker else b"",
                             is_driver=driver is not None,
                             reason=self.pool.exit_reason(worker) if worker else "")

    def forget_remote_process(self, worker_id: WorkerID) -> None:
        """A process (here or on another node) died: drop its lease requests,
        end the leases it held as an owner (their tasks have no owner now) and
        free the objects it owned here (they fate-share with their owner)."""
        self._departed[worker_id] = None
        if len(self._departed) > 10_000:
            del self._departed[next(iter(self._departed))]
        for request in self.scheduler.cancel(worker_id):
            future = self._waiting.pop(request.request_id, None)
            if future is not None and not future.done():
                log.info("dropping a lease request of %s (%s): that process is gone",
                         worker_id.hex(), request.name)
                future.cancel()
        for lease in [l for l in self.leases.values() if l.requester == worker_id]:
            self.return_lease(lease.lease_id, exiting=True)
        self.store.delete_owned_by(worker_id)
        self.store.release_unsealed(writer=worker_id)      # it died mid-write

    def forget_remote_node(self, node_id: bytes) -> None:
        """Another node died, and every process on it: drop the lease
        requests of its processes and end the leases they held here (their
        tasks have no owner now, as for one process in forget_remote_process)."""
        self._departed_nodes.add(bytes(node_id))
        for request in self.scheduler.cancel(node=bytes(node_id)):
            future = self._waiting.pop(request.request_id, None)
            if future is not None and not future.done():
                log.info("dropping a lease request of %s (%s): its node %s is gone",
                         request.requester.hex(), request.name, bytes(node_id).hex())
                future.cancel()
        for lease in [l for l in self.leases.values()
                      if l.requester_node == bytes(node_id)]:
            self.return_lease(lease.lease_id, exiting=True)
        self._schedule()

    def _hosts_actor(self, worker) -> bool:
        lease = self.leases.get(worker.lease_id)
        return lease is not None and bool(lease.actor_id)

    async def _report_failure(self, worker_id: WorkerID, is_driver: bool,
                              reason: str = "") -> None:
        """The GCS restarts or buries actors hosted or owned by this worker."""
        try:
            await self.gcs.ReportWorkerFailure(gcs_pb2.ReportWorkerFailureRequest(
                worker_id=worker_id, node_id=self.node_id, is_driver=is_driver,
                reason=reason))
        except Exception:
            pass

    async def _mark_job_finished(self, job_id: bytes) -> None:
        try:
            await self.gcs.MarkJobFinished(gcs_pb2.MarkJobFinishedRequest(job_id=job_id))
        except Exception:
            pass

    def _on_worker_gone(self, worker_id: WorkerID, lease_id: bytes,
                        is_driver: bool = False, reason: str = "") -> None:
        asyncio.get_running_loop().create_task(
            self._report_failure(worker_id, is_driver, reason))
        if lease_id:
            self._end_lease(lease_id)
        self.forget_remote_process(worker_id)
        self._schedule()

    async def is_cluster_raylet(self, address: str) -> bool:
        """Whether ``address`` is a live node's raylet (as the GCS knows them)."""
        def known():
            return any(n.address == address for n in self.cluster_view().values())
        if known():
            return True
        await self._refresh_view()           # a node may have just joined
        return known()

    def process_running(self, worker_id: bytes) -> bool:
        """Whether a worker or driver of this node is still running (its
        process may have exited before the monitor loop noticed)."""
        worker = self.pool.workers.get(WorkerID(worker_id))
        if worker is not None:
            return worker.process is None or worker.process.poll() is None
        driver = self.drivers.get(WorkerID(worker_id))
        return driver is not None and _process_alive(driver[0])

    @staticmethod
    def process_alive(pid: int) -> bool:
        return _process_alive(pid)

    def is_local_process(self, worker_id: bytes) -> bool:
        """A live worker or driver registered with this raylet."""
        return WorkerID(worker_id) in self.drivers or (
            WorkerID(worker_id) in self.pool.workers)

    def reservation_deadline(self, size: int) -> float:
        """When a reservation of ``size`` bytes not sealed yet is released."""
        return time.monotonic() + config.OBJECT_RESERVATION_TIMEOUT_S + size / 100e6

    def list_workers(self) -> list[raylet_pb2.WorkerInfo]:
        """Every worker and driver of this node, live ones first, then the
        last ones that exited (for the state API)."""
        infos = []
        for worker in list(self.pool.workers.values()):
            lease = self.leases.get(worker.lease_id) if worker.lease_id else None
            infos.append(raylet_pb2.WorkerInfo(
                worker_id=worker.worker_id, pid=worker.pid, job_id=worker.job_id,
                is_alive=True, start_time_ms=worker.start_time_ms, port=worker.port,
                actor_id=lease.actor_id if lease is not None else b""))
        for driver_id, (pid, job_id) in list(self.drivers.items()):
            infos.append(raylet_pb2.WorkerInfo(
                worker_id=driver_id, pid=pid, is_driver=True, job_id=job_id,
                is_alive=True, start_time_ms=self._driver_start_ms.get(driver_id, 0),
                port=self._driver_ports.get(driver_id, 0)))
        for gone in reversed(self.pool.exited):
            infos.append(raylet_pb2.WorkerInfo(
                worker_id=gone.worker_id, pid=gone.pid, is_driver=gone.is_driver,
                job_id=gone.job_id, is_alive=False, exit_type=gone.exit_type,
                exit_detail=gone.exit_detail, start_time_ms=gone.start_time_ms,
                end_time_ms=gone.end_time_ms))
        return infos

    def node_stats(self) -> dict:
        stats = self.store.stats()
        return dict(num_workers=len(self.pool.workers), num_idle=self.pool.num_idle(),
                    num_leases=len(self.leases), pending=len(self.scheduler.queue),
                    store=stats)


def _process_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def default_object_store_memory() -> int:
    memory = int(psutil.virtual_memory().total * config.OBJECT_STORE_MEMORY_FRACTION)
    try:
        shm = shutil.disk_usage(config.SHM_ROOT).free
        memory = min(memory, int(shm * 0.95))
    except OSError:
        pass
    return memory


def _uses_gpu(resources: dict) -> bool:
    return any(amount > 0 and (name == "GPU" or name.startswith("GPU_group_"))
               for name, amount in resources.items())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m miniray.raylet")
    parser.add_argument("--gcs-address", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default=config.NODE_IP)
    parser.add_argument("--resources", default="{}", help="JSON: name -> amount")
    parser.add_argument("--object-store-memory", type=int, default=0)
    parser.add_argument("--head", action="store_true")
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args(argv)
    name_process("raylet")
    if args.die_with_parent:
        die_with_parent(signal.SIGTERM)
    logging.basicConfig(level=os.environ.get("MINIRAY_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s raylet %(levelname)s %(message)s")
    auth.load_from_env()
    resources = {k: float(v) for k, v in json.loads(args.resources).items()}
    raylet = Raylet(node_id=NodeID.from_hex(args.node_id), gcs_address=args.gcs_address,
                    session_dir=args.session_dir, resources=resources,
                    object_store_memory=args.object_store_memory
                    or default_object_store_memory(), is_head=args.head,
                    owns_session_dir=args.die_with_parent, host=args.host)
    asyncio.run(raylet.serve(args.port))


if __name__ == "__main__":
    main()
