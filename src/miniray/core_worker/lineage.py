"""Lineage: what an owner keeps to rebuild its lost objects, as pure
bookkeeping (no I/O).

Used by the NormalTaskSubmitter (io thread) of the owner. For each
finished task with a return in a node's store, the owner keeps the
task's spec while any of those returns is referenced, so a return lost
with its node can be rebuilt by running the task again (Ray's lineage
reconstruction). The rules, as in Ray:

- A rebuild takes one of the task's retries (``max_retries``; an actor
  method's ``max_task_retries``), shared with the retries after worker
  failures. A task with none left cannot be rebuilt (OUT_OF_RETRIES); a
  task that never had any keeps no spec at all (NO_RETRIES): at-most-once
  actor methods, the default, are never re-run.
- A kept spec keeps the lineage of the tasks whose returns it takes as
  arguments ("pins" them), so an argument freed since is rebuilt first,
  recursively. A spec is dropped once none of its task's returns is
  referenced and no kept spec pins it.
- Specs are kept up to a byte budget (``MAX_LINEAGE_BYTES``, Ray's
  ``RAY_max_lineage_bytes``): beyond it the oldest are evicted, and their
  returns, if lost, cannot be rebuilt (EVICTED).
- ``put`` objects have no lineage (PUT).

Events: ``record`` (a return is stored), ``forget`` (a return is freed),
``rebuild`` (a return is lost: resubmit, or why not).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

from miniray import exceptions
from miniray.common.ids import ObjectID, TaskID

# Why a lost object cannot be rebuilt.
PUT = "put"                         # made by put(): there is no task to re-run
NO_RETRIES = "no_retries"           # its task could never be retried
OUT_OF_RETRIES = "out_of_retries"   # its task used up its retries
EVICTED = "evicted"                 # its lineage went over the byte budget
UNKNOWN = "unknown"                 # no lineage recorded for it


@dataclass(frozen=True)
class Resubmit:
    """Run ``spec`` again; it has ``retries_left`` after this attempt."""
    spec: object
    retries_left: int


@dataclass(frozen=True)
class CannotRebuild:
    """The object is lost for good; ``reason`` is one of the constants above."""
    reason: str
    function_name: str = ""
    is_actor_task: bool = False


@dataclass(frozen=True)
class LineageStatistics:
    tasks: int           # tasks with an entry (spec kept or not)
    kept: int            # of which with their spec kept
    kept_bytes: int
    evicted: int         # specs evicted over the budget since the start


class _Entry:
    __slots__ = ("spec", "size", "retries_left", "live", "pins", "deps", "gone",
                 "function_name", "is_actor_task")

    def __init__(self, spec):
        self.spec = spec                  # None once dropped (see ``gone``)
        self.size = 0
        self.retries_left = 0
        self.live: set[ObjectID] = set()  # its returns still referenced
        self.pins = 0                     # kept specs taking one of them as argument
        self.deps: tuple[TaskID, ...] = ()   # tasks this spec pins
        self.gone = ""
        self.function_name = spec.function_name
        self.is_actor_task = bool(spec.actor_id)


class Lineage:
    def __init__(self, owner_id: bytes, max_bytes: int):
        self.owner_id = bytes(owner_id)
        self.max_bytes = max_bytes
        self._entries: dict[TaskID, _Entry] = {}
        self._kept: collections.OrderedDict[TaskID, None] = collections.OrderedDict()
        self._kept_bytes = 0
        self._evicted = 0

    # --- events ---------------------------------------------------------------------
    def record(self, object_id: ObjectID, spec, retries_left: int | None,
               could_retry: bool = True) -> None:
        """``object_id``, a return of ``spec``'s task, is stored in a node's
        store; the task has ``retries_left`` (-1: unlimited). ``could_retry``:
        whether it had any retries to begin with (when none are left)."""
        task_id = object_id.task_id()
        entry = self._entries.get(task_id)
        retries_left = retries_left or 0
        if entry is None:
            entry = self._entries[task_id] = _Entry(spec)
            entry.retries_left = retries_left
            if retries_left != 0:
                self._keep(task_id, entry, spec)
            else:
                entry.spec = None
                entry.gone = OUT_OF_RETRIES if could_retry else NO_RETRIES
        else:
            # Another return of the task, or the task ran again (a rebuild).
            entry.retries_left = retries_left
            if retries_left == 0 and entry.spec is not None:
                self._drop_spec(task_id, entry, OUT_OF_RETRIES)
        entry.live.add(object_id)
        self._evict_over_budget()

    def forget(self, object_id: ObjectID) -> None:
        """``object_id`` is freed (nothing references it any more)."""
        task_id = object_id.task_id()
        entry = self._entries.get(task_id)
        if entry is not None and object_id in entry.live:
            entry.live.discard(object_id)
            self._release([task_id])

    def rebuild(self, object_id: ObjectID) -> Resubmit | CannotRebuild:
        """``object_id`` is lost (or freed, and a rebuild needs it): run its
        task again, taking one of its retries, or say why it cannot be."""
        if object_id.is_put():
            return CannotRebuild(PUT)
        entry = self._entries.get(object_id.task_id())
        if entry is None:
            return CannotRebuild(UNKNOWN)
        if entry.spec is None:
            return CannotRebuild(entry.gone, entry.function_name, entry.is_actor_task)
        if entry.retries_left == 0:       # its last retry is rebuilding it already
            return CannotRebuild(OUT_OF_RETRIES, entry.function_name,
                                 entry.is_actor_task)
        if entry.retries_left > 0:
            entry.retries_left -= 1
        return Resubmit(entry.spec, entry.retries_left)

    # --- queries ----------------------------------------------------------------------
    def has_lineage(self, object_id: ObjectID) -> bool:
        """Whether a rebuild of ``object_id`` could start (its spec is kept)."""
        entry = self._entries.get(object_id.task_id())
        return entry is not None and entry.spec is not None and not object_id.is_put()

    def function_name(self, task_id: TaskID) -> str:
        entry = self._entries.get(task_id)
        return entry.function_name if entry is not None else ""

    def attempt(self, task_id: TaskID) -> int:
        """The attempt that made the task's kept returns (0 if not known)."""
        entry = self._entries.get(task_id)
        return entry.spec.attempt if entry is not None and entry.spec is not None else 0

    def statistics(self) -> LineageStatistics:
        return LineageStatistics(len(self._entries), len(self._kept), self._kept_bytes,
                                 self._evicted)

    # --- internals ------------------------------------------------------------------------
    def _keep(self, task_id: TaskID, entry: _Entry, spec) -> None:
        entry.size = spec.ByteSize()
        self._kept[task_id] = None
        self._kept_bytes += entry.size
        deps = []
        for arg in spec.args:
            if arg.HasField("ref") and arg.ref.owner.worker_id == self.owner_id:
                dep_id = ObjectID(arg.ref.object_id)
                dep = self._entries.get(dep_id.task_id())
                if dep is not None and not dep_id.is_put():
                    dep.pins += 1
                    deps.append(dep_id.task_id())
        entry.deps = tuple(deps)

    def _drop_spec(self, task_id: TaskID, entry: _Entry, why: str) -> None:
        """Forget a kept spec (its entry stays while its returns live)."""
        del self._kept[task_id]
        self._kept_bytes -= entry.size
        entry.spec, entry.size, entry.gone = None, 0, why
        deps, entry.deps = entry.deps, ()
        for dep_id in deps:
            self._entries[dep_id].pins -= 1
        self._release(deps)

    def _release(self, task_ids) -> None:
        """Drop the entries of ``task_ids`` that nothing needs any more."""
        stack = list(task_ids)
        while stack:
            task_id = stack.pop()
            entry = self._entries.get(task_id)
            if entry is None or entry.live or entry.pins:
                continue
            del self._entries[task_id]
            if entry.spec is not None:
                del self._kept[task_id]
                self._kept_bytes -= entry.size
            for dep_id in entry.deps:
                self._entries[dep_id].pins -= 1
                stack.append(dep_id)

    def _evict_over_budget(self) -> None:
        while self._kept_bytes > self.max_bytes and self._kept:
            task_id = next(iter(self._kept))          # the oldest
            self._evicted += 1
            self._drop_spec(task_id, self._entries[task_id], EVICTED)

    def validate(self) -> None:
        """Invariants (checked by the unit tests after every step)."""
        pins: collections.Counter = collections.Counter()
        total = 0
        for task_id, entry in self._entries.items():
            assert entry.live or entry.pins, f"{task_id} should have been dropped"
            assert (entry.spec is not None) == (task_id in self._kept), task_id
            assert entry.spec is not None or entry.gone, task_id
            assert entry.spec is not None or not entry.deps, task_id
            if entry.spec is not None:
                total += entry.size
            for dep_id in entry.deps:
                assert dep_id in self._entries, (task_id, dep_id)
                pins[dep_id] += 1
            assert all(o.task_id() == task_id for o in entry.live), task_id
        assert total == self._kept_bytes, (total, self._kept_bytes)
        for task_id, entry in self._entries.items():
            assert entry.pins == pins[task_id], (task_id, entry.pins, pins[task_id])


def lost_error(object_id: ObjectID, outcome: CannotRebuild, owner: str,
               max_bytes: int, call_site: str = "") -> exceptions.ObjectLostError:
    """The error a lost object's readers get, saying why it is not rebuilt
    (and where its ref was created, if that was recorded)."""
    hex_id = object_id.hex()
    name = outcome.function_name
    kind = f"actor method {name}" if outcome.is_actor_task else f"task {name}"
    if outcome.reason == PUT:
        return exceptions.ObjectLostError(hex_id, owner, call_site, detail=(
            "It was created by put(), and its only copy is lost: objects made by "
            "put() cannot be reconstructed (only task outputs have lineage)."))
    if outcome.reason == NO_RETRIES and outcome.is_actor_task:
        return exceptions.ObjectReconstructionFailedError(hex_id, owner, call_site, detail=(
            f"It was returned by the {kind}, which cannot be retried "
            f"(max_task_retries=0, the default: at-most-once). Set max_task_retries "
            f"on the actor or the method, and max_restarts on the actor, to have "
            f"lost outputs rebuilt."))
    if outcome.reason in (NO_RETRIES, OUT_OF_RETRIES):
        option = "max_task_retries" if outcome.is_actor_task else "max_retries"
        return exceptions.ObjectReconstructionFailedMaxAttemptsExceededError(
            hex_id, owner, call_site, detail=(
                f"Its {kind} has no retries left to re-run it ({option})."))
    if outcome.reason == EVICTED:
        return exceptions.ObjectReconstructionFailedLineageEvictedError(
            hex_id, owner, call_site, detail=(
                f"The lineage of its {kind} was evicted: its owner keeps at most "
                f"MINIRAY_MAX_LINEAGE_BYTES={max_bytes} bytes of task specs."))
    return exceptions.ObjectLostError(hex_id, owner, call_site)
