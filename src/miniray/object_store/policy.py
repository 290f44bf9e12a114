"""Pure bookkeeping and eviction/spilling decisions for the object store.

No I/O happens here: :class:`StorePolicy` only tracks sizes and states and
says which objects must be evicted or spilled to make room.  The raylet's
:class:`~miniray.object_store.store.PlasmaStore` applies those decisions to
files.

Accounting is updated *as part of* every decision, so the policy never
over-commits: when :meth:`StorePolicy.reserve` returns ``[Evict(a), Spill(b)]``
it has already forgotten ``a`` and marked ``b`` as spilled, and the caller's
only job is to make the files match before the new object is written.
"""
from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Union

from miniray.common.ids import ObjectID, WorkerID
from miniray.exceptions import ObjectStoreFullError

__all__ = [
    "ObjectState", "ObjectRecord", "Evict", "Spill", "Action", "StoreStats",
    "StorePolicy", "ObjectStoreFullError",
]


class ObjectState(enum.Enum):
    CREATING = "creating"  # reserved in memory, being written (or restored)
    SEALED = "sealed"      # immutable and readable in memory
    SPILLED = "spilled"    # only on disk, costs no memory capacity


@dataclass(frozen=True)
class ObjectRecord:
    """What the store knows about one object."""
    object_id: ObjectID
    size: int
    state: ObjectState
    primary: bool
    owner: WorkerID
    # Written straight to disk: bigger than the whole store (Ray's fallback
    # allocation); counted as spilled from the start.
    on_disk: bool = False

    @property
    def in_memory(self) -> bool:
        return self.state is not ObjectState.SPILLED and not self.on_disk


@dataclass(frozen=True)
class Evict:
    """Drop this (secondary) copy: delete its memory file, forget it."""
    object_id: ObjectID


@dataclass(frozen=True)
class Spill:
    """Move this (primary) copy from memory to the spill directory."""
    object_id: ObjectID


Action = Union[Evict, Spill]


@dataclass(frozen=True)
class StoreStats:
    capacity: int
    used: int
    num_objects: int
    num_in_memory: int
    num_spilled: int
    spilled_bytes: int
    num_evicted_total: int
    num_spilled_total: int
    num_restored_total: int


class StorePolicy:
    """Capacity accounting plus LRU eviction/spilling decisions.

    ``used`` counts CREATING and SEALED objects (both occupy memory);
    SPILLED objects are tracked in ``spilled_bytes`` instead.  Only SEALED
    objects are ever evicted (secondary copies) or spilled (primary copies),
    least recently used first; CREATING objects are never touched.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.used = 0
        self.spilled_bytes = 0
        self._records: dict[ObjectID, ObjectRecord] = {}
        # SEALED in-memory objects, least recently used first.
        self._lru: OrderedDict[ObjectID, None] = OrderedDict()
        self._evicted_total = 0
        self._spilled_total = 0
        self._restored_total = 0

    # ---------------------------------------------------------------- queries
    def __contains__(self, object_id: object) -> bool:
        return object_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def lookup(self, object_id: ObjectID) -> ObjectRecord | None:
        """The object's record, or None if unknown."""
        return self._records.get(object_id)

    def records(self) -> list[ObjectRecord]:
        """Every object the store knows of (for the state API)."""
        return list(self._records.values())

    def objects_owned_by(self, owner: WorkerID) -> list[ObjectID]:
        return [r.object_id for r in self._records.values() if r.owner == owner]

    def snapshot(self) -> StoreStats:
        num_spilled = sum(1 for r in self._records.values() if not r.in_memory)
        return StoreStats(
            capacity=self.capacity,
            used=self.used,
            num_objects=len(self._records),
            num_in_memory=len(self._records) - num_spilled,
            num_spilled=num_spilled,
            spilled_bytes=self.spilled_bytes,
            num_evicted_total=self._evicted_total,
            num_spilled_total=self._spilled_total,
            num_restored_total=self._restored_total,
        )

    # -------------------------------------------------------------- decisions
    def reserve(self, object_id: ObjectID, size: int, owner: WorkerID,
                primary: bool = True) -> list[Action]:
        """Admit a new object in CREATING state, making room if needed.

        Returns the evictions/spills (already accounted for) that the caller
        must carry out before the object is written.  Raises ValueError for a
        duplicate ID or negative size, ObjectStoreFullError if no room can be
        made; in both cases nothing changes.
        """
        if object_id in self._records:
            raise ValueError(f"object {object_id.hex()} already exists")
        if size < 0:
            raise ValueError(f"object size must be >= 0, got {size}")
        actions = self._make_room(object_id, size)
        self._records[object_id] = ObjectRecord(
            object_id, size, ObjectState.CREATING, primary, owner)
        self.used += size
        return actions

    def reserve_on_disk(self, object_id: ObjectID, size: int, owner: WorkerID,
                        primary: bool = True) -> None:
        """Admit an object too big for the store's memory, to be written to
        disk (CREATING; SPILLED once sealed). Costs no memory capacity."""
        if object_id in self._records:
            raise ValueError(f"object {object_id.hex()} already exists")
        if size < 0:
            raise ValueError(f"object size must be >= 0, got {size}")
        self._records[object_id] = ObjectRecord(
            object_id, size, ObjectState.CREATING, primary, owner, on_disk=True)
        self.spilled_bytes += size

    def restore(self, object_id: ObjectID) -> list[Action]:
        """Bring a SPILLED object back into memory, in CREATING state.

        Room is made exactly as for :meth:`reserve`.  The caller copies the
        spilled data back and then calls :meth:`seal`.
        """
        record = self._get(object_id, ObjectState.SPILLED)
        actions = self._make_room(object_id, record.size)
        self.spilled_bytes -= record.size
        self.used += record.size
        self._records[object_id] = replace(record, state=ObjectState.CREATING,
                                           on_disk=False)
        self._restored_total += 1
        return actions

    def seal(self, object_id: ObjectID) -> None:
        """CREATING -> SEALED; the object becomes the most recently used.
        (An object written to disk goes to SPILLED instead.)"""
        record = self._get(object_id, ObjectState.CREATING)
        if record.on_disk:
            self._records[object_id] = replace(record, state=ObjectState.SPILLED)
            return
        self._records[object_id] = replace(record, state=ObjectState.SEALED)
        self._lru[object_id] = None

    def touch(self, object_id: ObjectID) -> None:
        """Mark a SEALED object as most recently used (no-op otherwise)."""
        if object_id not in self._records:
            raise KeyError(object_id)
        if object_id in self._lru:
            self._lru.move_to_end(object_id)

    def mark_spilled(self, object_id: ObjectID) -> None:
        """SEALED -> SPILLED (also usable for proactive spilling)."""
        record = self._get(object_id, ObjectState.SEALED)
        del self._lru[object_id]
        self.used -= record.size
        self.spilled_bytes += record.size
        self._records[object_id] = replace(record, state=ObjectState.SPILLED)
        self._spilled_total += 1

    def mark_evicted(self, object_id: ObjectID) -> None:
        """Forget a SEALED copy whose memory file is being deleted."""
        self._get(object_id, ObjectState.SEALED)
        self._forget(object_id)
        self._evicted_total += 1

    def delete(self, object_id: ObjectID) -> bool:
        """Forget an object in any state; returns whether it was known."""
        if object_id not in self._records:
            return False
        self._forget(object_id)
        return True

    # -------------------------------------------------------------- internals
    def _get(self, object_id: ObjectID, state: ObjectState) -> ObjectRecord:
        record = self._records.get(object_id)
        if record is None:
            raise KeyError(object_id)
        if record.state is not state:
            raise ValueError(f"object {object_id.hex()} is {record.state.value}, "
                             f"expected {state.value}")
        return record

    def _forget(self, object_id: ObjectID) -> None:
        record = self._records.pop(object_id)
        self._lru.pop(object_id, None)
        if record.in_memory:
            self.used -= record.size
        else:
            self.spilled_bytes -= record.size

    def _make_room(self, object_id: ObjectID, size: int) -> list[Action]:
        """Plan (and account) evictions, then spills, until ``size`` fits."""
        free = self.capacity - self.used
        if size <= free:
            return []
        sealed = [self._records[oid] for oid in self._lru]
        victims = ([r for r in sealed if not r.primary]
                   + [r for r in sealed if r.primary])
        reclaimable = sum(r.size for r in victims)
        if size > free + reclaimable:
            what = (f"cannot store object {object_id.hex()} of {size} bytes: "
                    f"object store capacity is {self.capacity} bytes")
            if size > self.capacity:
                raise ObjectStoreFullError(f"{what}, smaller than the object")
            raise ObjectStoreFullError(
                f"{what}, {self.used} in use ({free} free), and only "
                f"{reclaimable} bytes of sealed objects can be evicted or "
                f"spilled")
        actions: list[Action] = []
        for record in victims:
            if size <= self.capacity - self.used:
                break
            if record.primary:
                self.mark_spilled(record.object_id)
                actions.append(Spill(record.object_id))
            else:
                self.mark_evicted(record.object_id)
                actions.append(Evict(record.object_id))
        return actions

    def validate(self) -> None:
        """Assert every bookkeeping invariant (for tests and debugging)."""
        records = self._records.values()
        in_memory = [r for r in records if r.in_memory]
        assert self.used == sum(r.size for r in in_memory), "used mismatch"
        assert self.spilled_bytes == sum(
            r.size for r in records if not r.in_memory), "spilled mismatch"
        assert 0 <= self.used <= self.capacity, "over capacity"
        sealed = {r.object_id for r in records if r.state is ObjectState.SEALED}
        assert set(self._lru) == sealed, "LRU != sealed in-memory objects"
        assert len(self._lru) == len(sealed)
        for oid, r in self._records.items():
            assert oid == r.object_id and r.size >= 0
