"""Distributed reference counting, as pure bookkeeping (no I/O).

Each process keeps one entry per object it can reach. An entry counts
  local         ObjectRef instances alive in this process,
  submitted     pending tasks this process submitted that use the object,
  contained_in  live objects whose value contains a ref to it,
  borrowers     (owned objects) per-process counts reported by borrowers.
An owned object is freed when all four are zero. A borrowed entry that
drops to zero tells the owner to decrement this process's count.

Borrower counts are signed deltas, so a "-1" that overtakes its "+1" on
the wire leaves a non-zero count (-1) and never frees early. Methods
return a list of actions for the caller to carry out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from miniray.common.ids import ObjectID, WorkerID


@dataclass(frozen=True)
class FreeObject:
    """Nobody references this owned object any more: drop its value."""
    object_id: ObjectID


@dataclass(frozen=True)
class ReleaseBorrow:
    """Tell ``owner`` this process no longer holds ``object_id``."""
    object_id: ObjectID
    owner: object        # WorkerAddress
    delta: int           # negative: the +1s registered for this process


@dataclass(frozen=True)
class RefSnapshot:
    """One entry as the state API sees it (``snapshot``)."""
    object_id: ObjectID
    owned: bool
    owner: object        # WorkerAddress
    local: int
    submitted: int
    contained_in: int
    num_borrowers: int
    call_site: str | None


class _Entry:
    __slots__ = ("owned", "owner", "local", "submitted", "contained_in",
                 "borrowers", "registered", "contains", "call_site")

    def __init__(self, owned: bool, owner):
        self.owned = owned
        self.owner = owner
        self.local = 0
        self.submitted = 0
        self.contained_in = 0
        self.borrowers: dict[WorkerID, int] = {}
        self.registered = 0          # +1s the owner has on this process's behalf
        self.contains: list[ObjectID] = []
        self.call_site: str | None = None     # where it was made, if recorded

    def in_use(self) -> bool:
        return bool(self.local or self.submitted or self.contained_in
                    or self.borrowers)


class ReferenceCounter:
    def __init__(self, self_address):
        self.self_address = self_address
        self._entries: dict[ObjectID, _Entry] = {}

    # --- creation --------------------------------------------------------
    def add_owned(self, object_id: ObjectID) -> None:
        """A put or a task return owned by this process (refs follow)."""
        if object_id not in self._entries:
            self._entries[object_id] = _Entry(True, self.self_address)

    def _entry(self, object_id: ObjectID, owner) -> _Entry:
        entry = self._entries.get(object_id)
        if entry is None:
            owned = owner is None or owner.worker_id == self.self_address.worker_id
            entry = self._entries[object_id] = _Entry(owned, owner)
        return entry

    # --- local refs --------------------------------------------------------
    def add_local(self, object_id: ObjectID, owner=None) -> None:
        self._entry(object_id, owner).local += 1

    def remove_local(self, object_id: ObjectID) -> list:
        entry = self._entries.get(object_id)
        if entry is None:
            return []
        entry.local -= 1
        return self._maybe_release(object_id, entry)

    # --- task arguments ------------------------------------------------------
    def add_submitted(self, refs: Iterable) -> None:
        for ref in refs:
            self._entry(ref.id, ref.owner).submitted += 1

    def remove_submitted(self, object_ids: Iterable[ObjectID]) -> list:
        actions: list = []
        for object_id in object_ids:
            entry = self._entries.get(object_id)
            if entry is not None:
                entry.submitted -= 1
                actions += self._maybe_release(object_id, entry)
        return actions

    # --- nesting ---------------------------------------------------------------
    def add_contained(self, outer: ObjectID, inner_refs: Iterable,
                      registered_for_us: bool = False) -> None:
        """``outer``'s value holds ``inner_refs``; they live while it does.

        ``registered_for_us``: the process that produced the value already
        told each foreign inner ref's owner that we borrow it (task replies).
        """
        outer_entry = self._entries.get(outer)
        for ref in inner_refs:
            entry = self._entry(ref.id, ref.owner)
            entry.contained_in += 1
            if registered_for_us and not entry.owned:
                entry.registered += 1
            if outer_entry is not None:
                outer_entry.contains.append(ref.id)

    # --- borrowers ---------------------------------------------------------------
    def update_borrower(self, object_id: ObjectID, borrower: WorkerID,
                        delta: int) -> list:
        entry = self._entries.get(object_id)
        if entry is None or not entry.owned:
            return []
        count = entry.borrowers.get(borrower, 0) + delta
        if count:
            entry.borrowers[borrower] = count
        else:
            entry.borrowers.pop(borrower, None)
        return self._maybe_release(object_id, entry)

    def unregistered_borrows(self) -> list[tuple[ObjectID, object]]:
        """Foreign refs held here whose owners don't know it yet."""
        return [(oid, e.owner) for oid, e in self._entries.items()
                if not e.owned and not e.registered and e.in_use()]

    def mark_registered(self, object_id: ObjectID) -> None:
        entry = self._entries.get(object_id)
        if entry is not None:
            entry.registered += 1

    # --- queries ---------------------------------------------------------------
    def __contains__(self, object_id: ObjectID) -> bool:
        return object_id in self._entries

    def is_owned(self, object_id: ObjectID) -> bool:
        entry = self._entries.get(object_id)
        return entry is not None and entry.owned

    def owner_of(self, object_id: ObjectID):
        entry = self._entries.get(object_id)
        return None if entry is None else entry.owner

    def counts(self, object_id: ObjectID) -> dict | None:
        entry = self._entries.get(object_id)
        if entry is None:
            return None
        return {"local": entry.local, "submitted": entry.submitted,
                "contained_in": entry.contained_in,
                "borrowers": dict(entry.borrowers), "registered": entry.registered}

    def set_call_site(self, object_id: ObjectID, call_site: str) -> None:
        """Where the reference was created (only when call sites are recorded)."""
        entry = self._entries.get(object_id)
        if entry is not None and entry.call_site is None:
            entry.call_site = call_site

    def call_site(self, object_id: ObjectID) -> str:
        """Where the reference was created, if recorded, else ""."""
        entry = self._entries.get(object_id)
        return (entry.call_site or "") if entry is not None else ""

    def snapshot(self) -> list[RefSnapshot]:
        """Every entry's counts, for the state API (``miniray memory``)."""
        return [RefSnapshot(oid, e.owned, e.owner, e.local, e.submitted, e.contained_in,
                            len(e.borrowers), e.call_site)
                for oid, e in self._entries.items()]

    def num_objects(self) -> int:
        return len(self._entries)

    def owned_ids(self) -> list[ObjectID]:
        return [oid for oid, e in self._entries.items() if e.owned]

    # --- release -------------------------------------------------------------
    def _maybe_release(self, object_id: ObjectID, entry: _Entry) -> list:
        if entry.in_use():
            return []
        actions: list = []
        stack = [(object_id, entry)]
        while stack:
            oid, e = stack.pop()
            del self._entries[oid]
            if e.owned:
                actions.append(FreeObject(oid))
            elif e.registered:
                actions.append(ReleaseBorrow(oid, e.owner, -e.registered))
            for inner_id in e.contains:
                inner = self._entries.get(inner_id)
                if inner is None:
                    continue
                inner.contained_in -= 1
                if not inner.in_use():
                    stack.append((inner_id, inner))
        return actions

    def validate(self) -> None:
        """Check invariants (used by tests after every step)."""
        contained: dict[ObjectID, int] = {}
        for e in self._entries.values():
            for inner in e.contains:
                contained[inner] = contained.get(inner, 0) + 1
        for oid, e in self._entries.items():
            assert e.local >= 0 and e.submitted >= 0, (oid, e.local, e.submitted)
            assert e.contained_in >= contained.get(oid, 0) >= 0, oid
            assert e.in_use(), f"{oid} should have been released"
            assert e.owned or not e.borrowers, oid
