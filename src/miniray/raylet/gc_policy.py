"""When a node asks its workers and drivers to run Python's garbage
collector (Ray's local and global GC). Pure decisions, no I/O.

A reference cycle that holds ObjectRefs keeps their objects alive until
Python's cycle collector runs, which may be never in a process that
allocates little (or that called ``gc.disable()``). So, as in Ray:

- when this node's object store is more than ``high_usage`` full, the
  raylet asks for a **global GC** (every node), at most once per
  ``global_min_interval_s``;
- a node runs a **local GC** (a LocalGC RPC to each of its workers and
  drivers) when it asked for a global GC, when another node did, and at
  least every ``local_interval_s``; never twice within
  ``local_min_interval_s`` (one asked for sooner waits for that window).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GcPolicy:
    high_usage: float = 0.7
    local_min_interval_s: float = 10.0
    global_min_interval_s: float = 30.0
    local_interval_s: float = 90 * 60.0

    def __post_init__(self):
        self._last_global: float | None = None
        self._last_local: float | None = None
        self._local_wanted = False
        self._global_wanted = False     # not yet sent to the GCS
        self._started: float | None = None

    # --- inputs --------------------------------------------------------------------
    def store_usage(self, used: int, capacity: int, now: float) -> bool:
        """The store holds ``used`` of ``capacity`` bytes. True if that
        asks for a GC (then see local_gc_due)."""
        if capacity <= 0 or used <= self.high_usage * capacity:
            return False
        return self.store_full(now)

    def store_full(self, now: float) -> bool:
        """The store is under pressure (above the mark, or full). True if
        that asks for a GC (not within global_min_interval_s of the last)."""
        if self._last_global is not None and \
                now - self._last_global < self.global_min_interval_s:
            return False
        self._last_global = now
        self._global_wanted = True
        self._local_wanted = True        # the GCS does not echo our own request
        return True

    def store_full_again(self) -> None:
        """The global GC request could not be sent: send it next time."""
        self._global_wanted = True

    def global_requested(self) -> None:
        """Another node asked for a global GC."""
        self._local_wanted = True

    # --- decisions -------------------------------------------------------------------
    def take_global_request(self) -> bool:
        """Whether to ask the GCS for a global GC now (once per trigger)."""
        wanted, self._global_wanted = self._global_wanted, False
        return wanted

    def local_gc_due(self, now: float) -> float | None:
        """0 if a local GC should run now; else the seconds until one may
        (a wanted one held back by the minimum interval); else None."""
        if self._started is None:
            self._started = now
        since_last = now - (self._last_local if self._last_local is not None
                            else self._started)
        if not self._local_wanted and since_last < self.local_interval_s:
            return None
        if self._last_local is not None and \
                now - self._last_local < self.local_min_interval_s:
            return self.local_min_interval_s - (now - self._last_local)
        return 0.0

    def local_gc_ran(self, now: float) -> None:
        self._last_local = now
        self._local_wanted = False
