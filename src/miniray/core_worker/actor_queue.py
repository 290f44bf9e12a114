"""Calls from this process to one actor: ordering, retries and the actor's
lifecycle, as pure decisions (no I/O).

Used by the ActorTaskSubmitter (io thread), which feeds it events and
carries out the actions it returns. The rules, as in Ray:

- Calls are sent in submission order; a call whose arguments are not
  ready holds back the calls after it, unless the actor runs calls out of
  order (async and threaded actors, ``allow_out_of_order_execution``):
  then each call goes as soon as its arguments are ready. Each call sent to an incarnation
  of the actor gets the next sequence number of that incarnation, so the
  actor runs them in order even if the messages overtake each other.
- Calls made before the actor is ALIVE wait here; when a new incarnation
  comes up (a restart), numbering starts again at 0.
- A call whose push fails (the actor's worker died) is retried on the
  next incarnation, in its original place, while ``max_task_retries``
  allows; otherwise it fails: with the actor's death cause once the actor
  is DEAD, or as "died, restarting, not retried".
- A call made while the actor is known to be RESTARTING, with no retries
  (max_task_retries 0, the default: at-most-once), fails at once as
  "restarting" instead of waiting (Ray's ActorUnavailableError); calls
  with retries, and calls already queued before the restart began, wait
  for the new incarnation.
- A call still queued here is cancelled at once; one already sent is
  cancelled by asking the actor.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from miniray.protocol import common_pb2

ALIVE, DEAD, RESTARTING = common_pb2.ALIVE, common_pb2.DEAD, common_pb2.RESTARTING


@dataclass(frozen=True)
class Send:
    """Push ``task`` (its spec numbered ``seq``) to incarnation ``incarnation``."""
    task: object
    seq: int
    incarnation: int


@dataclass(frozen=True)
class Fail:
    """Finish ``task`` with an error: "cancelled", "dead" (the actor's death
    cause), "not_retried" (it died while running the call) or "restarting"
    (made while the actor restarts, with no retries to wait with)."""
    task: object
    reason: str


@dataclass(frozen=True)
class CancelSent:
    """Ask the actor to cancel ``task``, which it has already received (and
    the tasks it submitted, if ``recursive``)."""
    task: object
    recursive: bool = True


@dataclass(frozen=True)
class AwaitSettled:
    """Ask the GCS how the failure of ``incarnation`` ended, then call
    ``settled(task, dead)``."""
    task: object
    incarnation: int


class ActorCallQueue:
    def __init__(self, actor_id):
        self.actor_id = actor_id
        self.state: int | None = None     # unknown until the GCS answers
        self.incarnation = -1
        self.address = None               # of the ALIVE incarnation
        self.max_task_retries = 0
        self.death_cause: bytes = b""
        self._queue: list = []            # not sent yet, by submission order
        self._orders: list[int] = []      # task.order of each queued call
        self._inflight: dict = {}         # task id -> task, sent and not answered
        self._next_seq = 0
        self._counter = 0

    # --- events ------------------------------------------------------------------
    def submit(self, task, rebuild: bool = False) -> list:
        """A new call; its arguments may not be ready yet (``task.resolved``).
        ``rebuild``: a finished call sent again to rebuild its lost outputs;
        it keeps the retries it has left (``task.retries_left``)."""
        self._counter += 1
        task.order = self._counter
        if self.state == DEAD:
            return [Fail(task, "dead")]
        if not rebuild:
            task.retries_left = None      # known once the GCS describes the actor
            if self.state == RESTARTING and self.retry_budget(task) == 0:
                return [Fail(task, "restarting")]
        self._insert(task)
        return self._send_ready()

    def resolved(self, task, still_pending: bool) -> list:
        """The call's arguments are ready (or a failed argument already
        finished it: ``still_pending`` False)."""
        if not still_pending:
            self._remove(task)
        return self._send_ready()

    def on_info(self, state: int, incarnation: int, address, max_task_retries: int,
                death_cause: bytes = b"") -> list:
        """What the GCS says about the actor now."""
        self.max_task_retries = max_task_retries
        if state == ALIVE:
            if incarnation != self.incarnation or self.state != ALIVE:
                self.incarnation = incarnation
                self.address = address
                self._next_seq = 0
                self.state = ALIVE
            return self._send_ready()
        if state == DEAD:
            self.state = DEAD
            self.death_cause = death_cause
            failed = [Fail(task, "dead") for task in self._queue]
            self._queue.clear()
            self._orders.clear()
            return failed
        self.state = state
        return []

    def replied(self, task) -> None:
        """The actor answered the call (success or application error)."""
        self._inflight.pop(task.task_id, None)

    def retry(self, task) -> list:
        """Run a call again (an exception its retry_exceptions allows)."""
        self._inflight.pop(task.task_id, None)
        self._use_retry(task)
        return self._send_ready()

    def connection_lost(self, incarnation: int) -> None:
        """The stream to ``incarnation`` broke: until the GCS says what
        happened, new calls wait here instead of going to a dead process."""
        if incarnation == self.incarnation and self.state == ALIVE:
            self.state = None

    def push_failed(self, task, incarnation: int) -> list:
        """The call could not run: the incarnation it was sent to is gone."""
        self._inflight.pop(task.task_id, None)
        self.connection_lost(incarnation)
        if task.cancelled:
            return [Fail(task, "cancelled")]
        if task.retries_left != 0:
            self._use_retry(task)
            return self._send_ready()
        return [AwaitSettled(task, incarnation)]

    def settled(self, task, dead: bool) -> list:
        return [Fail(task, "dead" if dead else "not_retried")]

    def cancel(self, task, recursive: bool = True) -> list:
        if task in self._queue:
            self._remove(task)
            return [Fail(task, "cancelled")] + self._send_ready()
        if self._inflight.get(task.task_id) is task:
            return [CancelSent(task, recursive)]
        return []

    # --- queries -----------------------------------------------------------------
    def has_work(self) -> bool:
        """Calls waiting or in flight: someone should watch the actor."""
        return bool(self._queue or self._inflight)

    def inflight(self) -> list:
        return list(self._inflight.values())

    # --- internals ------------------------------------------------------------------
    def retry_budget(self, task) -> int:
        """The call's retry budget: its method's max_task_retries, else the actor's."""
        spec = task.spec
        return spec.max_retries if spec.method_max_retries else self.max_task_retries

    def _use_retry(self, task) -> None:
        if task.retries_left is not None and task.retries_left > 0:
            task.retries_left -= 1
        task.spec.attempt += 1
        self._insert(task)

    def _insert(self, task) -> None:
        """Queue a call at its submission-order place (retries go back there)."""
        position = bisect.bisect(self._orders, task.order)
        self._orders.insert(position, task.order)
        self._queue.insert(position, task)

    def _remove(self, task) -> None:
        for i, queued in enumerate(self._queue):
            if queued is task:
                del self._queue[i]
                del self._orders[i]
                return

    def _send_ready(self) -> list:
        actions: list = []
        i = 0
        while i < len(self._queue) and self.state == ALIVE:
            task = self._queue[i]
            if task.waiting_deps or not task.resolved:
                if task.spec.execute_out_of_order:
                    i += 1                # later calls may go ahead of it
                    continue
                break                     # later calls wait: order is kept
            del self._queue[i]
            del self._orders[i]
            if task.cancelled:
                actions.append(Fail(task, "cancelled"))
                continue
            if task.retries_left is None:
                task.retries_left = self.retry_budget(task)
            seq = self._next_seq
            self._next_seq += 1
            task.spec.sequence_number = seq
            self._inflight[task.task_id] = task
            actions.append(Send(task, seq, self.incarnation))
        return actions

    def validate(self) -> None:
        """Invariants (checked by the unit tests after every step)."""
        assert self._orders == sorted(self._orders), "queue out of submission order"
        assert [t.order for t in self._queue] == self._orders
        assert len({id(t) for t in self._queue}) == len(self._queue), "a call queued twice"
        sent = {id(t) for t in self._inflight.values()}
        assert not sent & {id(t) for t in self._queue}, "a call both queued and sent"
        if self.state == DEAD:
            assert not self._queue, "calls wait on a dead actor"
