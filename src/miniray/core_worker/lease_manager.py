"""Which queued task runs on which leased worker, and when to ask the
raylet for leases or give them back: pure state, no I/O.

Used by the owner's NormalTaskSubmitter (io thread), which feeds it events
and carries out the actions it returns. The rules, as in Ray:

- A leased worker runs one task at a time. Throughput comes from asking
  for more leases as a scheduling key's queue grows: one lease request per
  queued task, at most ``max_pending`` outstanding per key.
- A worker that finishes a task takes the next queued task of its key
  (lease reuse), until the lease is ``reuse_s`` old: then it goes back to
  the raylet and a fresh request joins the raylet's queue, so other keys
  and other owners get their turn.
- A lease with nothing to run is kept for ``idle_s`` (a loop of
  ``get(f.remote())`` reuses it), then returned. A lease granted when its
  key's queue is already empty goes straight back. Ray gives an idle lease
  back at once; keeping it must not change where other work goes, so an
  owner about to ask for a lease of another key first gives back those it
  holds idle (their resources may be what the new request needs: SPREAD
  over a node whose only CPU our idle lease holds).
- Cancelling a task that is still queued removes it at once.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Hashable


@dataclass(frozen=True)
class RequestLease:
    """Ask the raylet for one more worker for ``key``."""
    key: Hashable


@dataclass(frozen=True)
class PushTask:
    """Send ``task_id`` to the worker of ``lease_id``."""
    task_id: Hashable
    lease_id: Hashable


@dataclass(frozen=True)
class ReturnLease:
    """Give the lease back; ``exiting``: its worker is dead or must die."""
    lease_id: Hashable
    exiting: bool = False


@dataclass(frozen=True)
class StartIdleTimer:
    """Call ``idle_expired(lease_id)`` after ``delay`` seconds."""
    lease_id: Hashable
    delay: float


class _Lease:
    __slots__ = ("key", "granted_at", "task_id", "idle_since", "used")

    def __init__(self, key, now: float):
        self.key = key
        self.granted_at = now
        self.task_id = None          # the task it runs; None while idle
        self.idle_since = now
        self.used = False            # has run a task


class _Key:
    __slots__ = ("queue", "pending", "leases")

    def __init__(self):
        self.queue: collections.deque = collections.deque()
        self.pending = 0             # lease requests sent, not yet answered
        self.leases: dict = {}       # lease id -> _Lease


class LeaseManager:
    def __init__(self, max_pending: int = 10, reuse_s: float = 0.5, idle_s: float = 0.2):
        self.max_pending = max_pending
        self.reuse_s = reuse_s
        self.idle_s = idle_s
        self._keys: dict[Hashable, _Key] = {}
        self._leases: dict[Hashable, _Lease] = {}
        self._queued: dict[Hashable, Hashable] = {}      # task id -> key
        self._idle: dict[Hashable, None] = {}     # leases kept with nothing to run

    # --- events --------------------------------------------------------------
    def enqueue(self, key, task_id, now: float, front: bool = False) -> list:
        """A task whose arguments are ready wants a worker of shape ``key``."""
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key()
        if front:                    # a retry goes before later submissions
            state.queue.appendleft(task_id)
        else:
            state.queue.append(task_id)
        self._queued[task_id] = key
        return self._dispatch(key, state, now)

    def lease_granted(self, key, lease_id, now: float) -> list:
        state = self._keys[key]
        state.pending -= 1
        lease = self._leases[lease_id] = _Lease(key, now)
        state.leases[lease_id] = lease
        if not state.queue:
            return self._end(lease_id) + self._cleanup(key, state)
        return self._dispatch(key, state, now)

    def lease_request_failed(self, key) -> list:
        """The request got no lease (the raylet is gone, or rejected it as
        unschedulable): every task queued under ``key`` fails. Returns
        their ids for the caller to fail."""
        self._keys[key].pending -= 1
        return self.take_queue(key)

    def task_finished(self, lease_id, now: float, worker_exiting: bool = False) -> list:
        """The lease's task replied; the worker is free (or, ``worker_exiting``,
        done: it ran its function ``max_calls`` times and goes)."""
        lease = self._leases[lease_id]
        lease.task_id = None
        lease.idle_since = now
        state = self._keys[lease.key]
        if worker_exiting:
            return self._end(lease_id, exiting=True) + self._dispatch(lease.key, state, now)
        if not self._reusable(state, lease, now):
            return self._end(lease_id) + self._dispatch(lease.key, state, now)
        if state.queue:
            return self._dispatch(lease.key, state, now)
        self._idle[lease_id] = None
        return [StartIdleTimer(lease_id, self.idle_s)]

    def lease_lost(self, lease_id, now: float) -> list:
        """The worker died (or the push failed): the lease ends. The caller
        re-enqueues or fails its task."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return []
        state = self._keys[lease.key]
        return self._end(lease_id, exiting=True) + self._dispatch(lease.key, state, now)

    def idle_expired(self, lease_id, now: float) -> list:
        lease = self._leases.get(lease_id)
        if lease is None or lease.task_id is not None \
                or now - lease.idle_since < self.idle_s - 1e-6:
            return []                 # busy again, or idle again since later
        state = self._keys[lease.key]
        return self._end(lease_id) + self._cleanup(lease.key, state)

    def cancel(self, task_id) -> bool:
        """Drop a queued task; False if it is not queued (running or unknown)."""
        key = self._queued.pop(task_id, None)
        if key is None:
            return False
        self._keys[key].queue.remove(task_id)
        return True

    def take_queue(self, key) -> list:
        """Remove and return every task queued under ``key``."""
        state = self._keys.get(key)
        if state is None:
            return []
        tasks = list(state.queue)
        state.queue.clear()
        for task_id in tasks:
            del self._queued[task_id]
        self._cleanup(key, state)
        return tasks

    # --- queries -----------------------------------------------------------------
    def running_on(self, lease_id):
        lease = self._leases.get(lease_id)
        return None if lease is None else lease.task_id

    def is_queued(self, task_id) -> bool:
        return task_id in self._queued

    def backlog(self, key) -> int:
        """Tasks of ``key`` queued beyond the lease requests already sent
        (Ray's backlog size, sent with each request)."""
        state = self._keys.get(key)
        return 0 if state is None else max(0, len(state.queue) - state.pending)

    def statistics(self) -> dict:
        return {"keys": len(self._keys), "queued": len(self._queued),
                "leases": len(self._leases),
                "busy": sum(1 for l in self._leases.values() if l.task_id is not None),
                "pending_requests": sum(s.pending for s in self._keys.values())}

    # --- internals ------------------------------------------------------------------
    def _dispatch(self, key, state: _Key, now: float) -> list:
        actions: list = []
        if state.queue:
            for lease_id, lease in list(state.leases.items()):
                if not state.queue:
                    break
                if lease.task_id is not None:
                    continue
                if not self._reusable(state, lease, now):
                    actions += self._end(lease_id)     # back to the raylet
                    continue
                task_id = state.queue.popleft()
                del self._queued[task_id]
                self._idle.pop(lease_id, None)
                lease.task_id = task_id
                lease.used = True
                actions.append(PushTask(task_id, lease_id))
        wanted = min(len(state.queue), self.max_pending) - state.pending
        if wanted > 0 and self._idle:
            actions += self._return_idle(but=key)
        for _ in range(wanted):
            state.pending += 1
            actions.append(RequestLease(key))
        return actions + self._cleanup(key, state)

    def _reusable(self, state: _Key, lease: _Lease, now: float) -> bool:
        """May this lease take a (another) queued task?"""
        return not lease.used or now - lease.granted_at < self.reuse_s

    def _return_idle(self, but) -> list:
        """End the idle leases of keys other than ``but``."""
        actions: list = []
        for lease_id in [i for i in self._idle if self._leases[i].key != but]:
            other = self._leases[lease_id].key
            actions += self._end(lease_id) + self._cleanup(other, self._keys[other])
        return actions

    def _end(self, lease_id, exiting: bool = False) -> list:
        self._idle.pop(lease_id, None)
        lease = self._leases.pop(lease_id)
        del self._keys[lease.key].leases[lease_id]
        return [ReturnLease(lease_id, exiting)]

    def _cleanup(self, key, state: _Key) -> list:
        if not state.queue and not state.pending and not state.leases:
            del self._keys[key]
        return []

    def validate(self) -> None:
        """Invariants (checked by the unit tests after every step)."""
        queued = 0
        for key, state in self._keys.items():
            assert state.pending >= 0, (key, state.pending)
            assert state.queue or state.pending or state.leases, f"empty key {key}"
            assert len(set(state.queue)) == len(state.queue), "a task queued twice"
            for task_id in state.queue:
                assert self._queued.get(task_id) == key, task_id
            queued += len(state.queue)
            for lease_id, lease in state.leases.items():
                assert self._leases.get(lease_id) is lease
                assert lease.key == key
            if state.queue:
                # Queued work never waits while one of its leases is idle.
                assert all(l.task_id is not None for l in state.leases.values()), key
                assert state.pending >= min(len(state.queue), self.max_pending) or \
                    state.pending == self.max_pending, key
        assert queued == len(self._queued)
        assert len(self._leases) == sum(len(s.leases) for s in self._keys.values())
        assert all(self._leases[i].task_id is None for i in self._idle), "a busy lease idle"
        running = [l.task_id for l in self._leases.values() if l.task_id is not None]
        assert len(set(running)) == len(running), "a task on two leases"
        assert not set(running) & set(self._queued), "a task both queued and running"
