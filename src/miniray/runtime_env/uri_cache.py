"""Which runtime-env resources (unpacked packages, pip environments) a node
keeps: pure bookkeeping, no I/O (runtime_env/manager.py acts on it).

A resource is in use while some worker started with it lives. Unused ones
stay cached for the next worker that needs them, until the unused ones
together take more than ``capacity`` bytes: then the least recently used
are deleted first (Ray's URI cache).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Entry:
    size: int
    users: int = 0
    last_used: int = 0


class URICache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: dict[str, _Entry] = {}
        self._clock = 0

    def __contains__(self, uri: str) -> bool:
        return uri in self._entries

    def add(self, uri: str, size: int) -> None:
        """A resource now set up (not yet in use)."""
        self._clock += 1
        self._entries[uri] = _Entry(size, 0, self._clock)

    def acquire(self, uri: str) -> None:
        entry = self._entries[uri]
        entry.users += 1
        self._clock += 1
        entry.last_used = self._clock

    def release(self, uri: str) -> list[str]:
        """One user fewer; returns the resources to delete now."""
        entry = self._entries.get(uri)
        if entry is not None and entry.users > 0:
            entry.users -= 1
            self._clock += 1
            entry.last_used = self._clock
        return self.evictable()

    def evictable(self, keep: str | None = None) -> list[str]:
        """Unused resources to delete, oldest first, until the unused ones
        fit in the capacity (``keep`` is not one of them: it was just made
        for a worker about to use it); they are forgotten here."""
        unused = sorted((e.last_used, uri) for uri, e in self._entries.items()
                        if e.users == 0 and uri != keep)
        total = sum(self._entries[uri].size for _, uri in unused)
        out = []
        for _, uri in unused:
            if total <= self.capacity:
                break
            total -= self._entries.pop(uri).size
            out.append(uri)
        return out

    def users(self, uri: str) -> int:
        entry = self._entries.get(uri)
        return entry.users if entry else 0

    def unused_bytes(self) -> int:
        return sum(e.size for e in self._entries.values() if e.users == 0)
