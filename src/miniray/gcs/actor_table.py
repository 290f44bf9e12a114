"""The GCS's actor table, as pure state transitions (no I/O).

An actor moves PENDING_CREATION -> ALIVE -> (RESTARTING -> ALIVE)* -> DEAD.
The table decides what a failure means (restart or death), owns the
(namespace, name) -> actor map and frees a name when its actor dies. The
actor manager (actor_manager.py) performs the RPCs these decisions imply.
"""
from __future__ import annotations

import collections

from miniray.common.ids import ActorID, WorkerID
from miniray.protocol import common_pb2, gcs_pb2

PENDING = common_pb2.PENDING_CREATION
ALIVE = common_pb2.ALIVE
RESTARTING = common_pb2.RESTARTING
DEAD = common_pb2.DEAD


class NameTakenError(ValueError):
    pass


class ActorEntry:
    __slots__ = ("info", "spec", "max_restarts", "worker_id", "node_id", "exiting")

    def __init__(self, info: common_pb2.ActorInfo, spec: common_pb2.TaskSpec):
        self.info = info
        self.spec = spec
        self.max_restarts = spec.actor_options.max_restarts
        self.worker_id: WorkerID | None = None
        self.node_id: bytes = b""
        self.exiting = False        # the actor asked to exit: don't restart it

    @property
    def actor_id(self) -> ActorID:
        return ActorID(self.info.actor_id)

    def can_restart(self) -> bool:
        return not self.exiting and (self.max_restarts < 0
                                     or self.info.num_restarts < self.max_restarts)


class ActorTable:
    """``storage`` (gcs/storage.py, optional): every transition is written
    there, and ``load`` rebuilds the table from it after a GCS restart."""

    def __init__(self, storage=None, max_dead: int = 100_000):
        self.changed: set[ActorID] = set()     # saved since the manager last looked
        self._actors: dict[ActorID, ActorEntry] = {}
        self._names: dict[tuple[str, str], ActorID] = {}
        self._storage = storage
        # Dead actors, longest dead first; past ``max_dead`` the first go.
        self._dead: collections.OrderedDict[ActorID, None] = collections.OrderedDict()
        self._max_dead = max(0, max_dead)

    def save(self, entry: ActorEntry) -> None:
        self.changed.add(entry.actor_id)          # for WaitActorChange's waiters
        if self._storage is None:
            return
        row = gcs_pb2.ActorTableRow(info=entry.info, spec=entry.spec,
                                    worker_id=bytes(entry.worker_id or b""),
                                    node_id=entry.node_id, exiting=entry.exiting)
        self._storage.put("actors", entry.info.actor_id, row.SerializeToString())

    def load(self) -> list[ActorEntry]:
        """The stored actors, back in the table; returns them."""
        entries = []
        for value in self._storage.load("actors").values():
            row = gcs_pb2.ActorTableRow.FromString(value)
            entry = ActorEntry(row.info, row.spec)
            entry.worker_id = WorkerID(row.worker_id) if row.worker_id else None
            entry.node_id = row.node_id
            entry.exiting = row.exiting
            self._actors[entry.actor_id] = entry
            if row.info.name and row.info.state != DEAD:
                self._names[(row.info.namespace, row.info.name)] = entry.actor_id
            if row.info.state == DEAD:
                self._dead[entry.actor_id] = None
            entries.append(entry)
        self._forget_dead()
        return [e for e in entries if e.actor_id in self._actors]

    def register(self, spec: common_pb2.TaskSpec) -> ActorEntry:
        options = spec.actor_options
        key = (options.namespace, options.name)
        if options.name and key in self._names:
            raise NameTakenError(
                f"The name {options.name} (namespace={options.namespace}) is "
                f"already taken. Please use a different name or get the existing "
                f"actor using miniray.get_actor('{options.name}', "
                f"namespace='{options.namespace}')")
        info = common_pb2.ActorInfo(
            actor_id=spec.actor_id, state=PENDING, name=options.name,
            namespace=options.namespace, job_id=spec.job_id,
            class_name=options.class_name, detached=options.detached,
            class_meta=options.class_meta, max_task_retries=options.max_task_retries,
            max_pending_calls=options.max_pending_calls,
            execute_out_of_order=options.execute_out_of_order)
        info.owner.CopyFrom(spec.caller)
        entry = ActorEntry(info, spec)
        self._actors[entry.actor_id] = entry
        if options.name:
            self._names[key] = entry.actor_id
        self.save(entry)
        return entry

    def get(self, actor_id: ActorID) -> ActorEntry | None:
        return self._actors.get(actor_id)

    def by_name(self, name: str, namespace: str) -> ActorEntry | None:
        actor_id = self._names.get((namespace, name))
        return None if actor_id is None else self._actors.get(actor_id)

    def named(self, namespace: str | None) -> list[ActorEntry]:
        return [self._actors[a] for (ns, _), a in self._names.items()
                if namespace is None or ns == namespace]

    def mark_alive(self, entry: ActorEntry, address: common_pb2.Address,
                   worker_id: WorkerID, pid: int) -> None:
        entry.info.state = ALIVE
        entry.info.address.CopyFrom(address)
        entry.info.pid = pid
        entry.worker_id = worker_id
        entry.node_id = address.node_id
        self.save(entry)

    def assign(self, entry: ActorEntry, worker_id: WorkerID, node_id: bytes) -> None:
        """A worker was leased to create the actor (recorded so that a
        restarted GCS can end a creation it no longer follows)."""
        entry.worker_id = worker_id
        entry.node_id = node_id
        self.save(entry)

    def mark_exiting(self, entry: ActorEntry) -> None:
        entry.exiting = True
        self.save(entry)

    def on_failure(self, entry: ActorEntry) -> bool:
        """The actor's worker died (or creation failed to reach it).

        Returns True if the actor restarts (state RESTARTING), False if it
        is now dead.
        """
        if entry.info.state == DEAD:
            return False
        entry.worker_id = None
        entry.info.ClearField("address")
        # As in Ray, a worker that dies running the constructor is a failure
        # like any other: a restart within max_restarts, else death (never
        # an endless loop of constructors that crash their process).
        if entry.can_restart():
            entry.info.state = RESTARTING
            entry.info.num_restarts += 1
            self.save(entry)
            return True
        self.save(entry)
        return False

    def mark_dead(self, entry: ActorEntry, cause: bytes) -> None:
        if entry.info.state == DEAD:
            return
        entry.info.state = DEAD
        entry.info.death_cause = cause
        entry.info.ClearField("address")
        entry.worker_id = None
        key = (entry.info.namespace, entry.info.name)
        if entry.info.name and self._names.get(key) == entry.actor_id:
            del self._names[key]
        self.save(entry)
        self._dead[entry.actor_id] = None
        self._forget_dead()

    def _forget_dead(self) -> None:
        while len(self._dead) > self._max_dead:
            actor_id, _ = self._dead.popitem(last=False)
            self._actors.pop(actor_id, None)
            if self._storage is not None:
                self._storage.delete("actors", bytes(actor_id))

    def on_node(self, node_id: bytes) -> list[ActorEntry]:
        return [e for e in self._actors.values()
                if e.node_id == node_id and e.info.state != DEAD]

    def hosted_by(self, worker_id: WorkerID | None) -> list[ActorEntry]:
        if worker_id is None:        # pending actors have no worker yet
            return []
        return [e for e in self._actors.values() if e.worker_id == worker_id]

    def owned_by(self, worker_id: bytes) -> list[ActorEntry]:
        """Live, non-detached actors whose owner is this worker or driver."""
        return [e for e in self._actors.values()
                if e.info.owner.worker_id == worker_id and not e.info.detached
                and e.info.state != DEAD]

    def all_actors(self) -> list[ActorEntry]:
        return list(self._actors.values())

    def alive_count(self) -> int:
        return len(self._actors) - len(self._dead)
