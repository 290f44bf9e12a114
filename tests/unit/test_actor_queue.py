"""ActorCallQueue: ordering, retries and lifecycle of calls to one actor
(no sockets)."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from miniray.core_worker.actor_queue import (
    ALIVE, DEAD, ActorCallQueue, AwaitSettled, CancelSent, Fail, Send)
from miniray.protocol import common_pb2

RESTARTING = common_pb2.RESTARTING


def call(name, resolved=True, out_of_order=False):
    spec = SimpleNamespace(sequence_number=-1, attempt=0, max_retries=0,
                           method_max_retries=False, execute_out_of_order=out_of_order)
    return SimpleNamespace(task_id=name, spec=spec,
                           order=0, retries_left=None, cancelled=False,
                           waiting_deps=0, resolved=resolved)


def sent(actions):
    return [(a.task.task_id, a.seq, a.incarnation) for a in actions if isinstance(a, Send)]


@pytest.fixture
def q():
    queue = ActorCallQueue("actor")
    yield queue
    queue.validate()


def test_calls_wait_until_the_actor_is_alive(q):
    assert q.submit(call("a")) == []
    assert q.submit(call("b")) == []
    actions = q.on_info(ALIVE, 0, "addr", max_task_retries=0)
    assert sent(actions) == [("a", 0, 0), ("b", 1, 0)]


def test_a_call_with_pending_arguments_holds_back_later_calls(q):
    q.on_info(ALIVE, 0, "addr", 0)
    first, second = call("a", resolved=False), call("b")
    assert q.submit(first) == []
    assert q.submit(second) == []          # behind "a", which is not ready
    first.resolved = True
    assert sent(q.resolved(first, still_pending=True)) == [("a", 0, 0), ("b", 1, 0)]


def test_out_of_order_calls_go_as_soon_as_their_arguments_are_ready(q):
    # Async and threaded actors (Ray's default for them): a call waiting for
    # its arguments holds back nothing.
    q.on_info(ALIVE, 0, "addr", 0)
    first = call("a", resolved=False, out_of_order=True)
    second, third = call("b", out_of_order=True), call("c", out_of_order=True)
    assert q.submit(first) == []
    assert sent(q.submit(second)) == [("b", 0, 0)]
    assert sent(q.submit(third)) == [("c", 1, 0)]
    first.resolved = True
    assert sent(q.resolved(first, still_pending=True)) == [("a", 2, 0)]


def test_a_call_finished_by_a_failed_argument_lets_the_others_go(q):
    q.on_info(ALIVE, 0, "addr", 0)
    first, second = call("a", resolved=False), call("b")
    q.submit(first)
    q.submit(second)
    assert sent(q.resolved(first, still_pending=False)) == [("b", 0, 0)]


def test_push_failure_retries_in_place_on_the_next_incarnation(q):
    q.on_info(ALIVE, 0, "addr0", max_task_retries=1)
    a, b, c = call("a"), call("b"), call("c")
    for task in (a, b, c):
        q.submit(task)
    q.replied(a)
    # The actor dies with b and c in flight; both are retried, in order.
    assert q.push_failed(c, 0) == []
    assert q.push_failed(b, 0) == []
    assert q.state is None                      # unknown until the GCS says
    assert b.retries_left == 0 and b.spec.attempt == 1
    q.on_info(RESTARTING, 0, None, 1)
    actions = q.on_info(ALIVE, 1, "addr1", 1)
    assert sent(actions) == [("b", 0, 1), ("c", 1, 1)]
    assert q.address == "addr1"


def test_push_failure_without_retries_waits_for_the_verdict(q):
    q.on_info(ALIVE, 0, "addr", max_task_retries=0)
    a = call("a")
    q.submit(a)
    assert q.push_failed(a, 0) == [AwaitSettled(a, 0)]
    assert q.settled(a, dead=True) == [Fail(a, "dead")]
    b = call("b")
    q.submit(b)
    assert q.settled(b, dead=False) == [Fail(b, "not_retried")]


def test_calls_without_retries_fail_at_once_while_restarting(q):
    """At-most-once calls (max_task_retries 0) made while the actor is
    known to be restarting fail as "restarting"; a method with its own
    retries waits, and so do calls queued before the restart began."""
    q.on_info(ALIVE, 0, "addr0", max_task_retries=0)
    q.connection_lost(0)
    queued = call("queued")
    q.submit(queued)
    assert q.on_info(RESTARTING, 0, None, 0) == []
    b, patient = call("b"), call("patient")
    patient.spec.max_retries, patient.spec.method_max_retries = 2, True
    assert q.submit(b) == [Fail(b, "restarting")]
    assert q.submit(patient) == []
    q.validate()
    assert sent(q.on_info(ALIVE, 1, "addr1", 0)) == [("queued", 0, 1), ("patient", 1, 1)]
    c = call("c")
    assert sent(q.submit(c)) == [("c", 2, 1)]


def test_a_rebuild_keeps_the_retries_it_has_left(q):
    """A finished call sent again to rebuild its lost output goes behind
    the queued calls, waits through a restart and keeps its retry budget."""
    q.on_info(ALIVE, 0, "addr0", max_task_retries=3)
    q.connection_lost(0)
    q.on_info(RESTARTING, 0, None, 3)
    queued, rebuild = call("queued"), call("rebuild")
    q.submit(queued)
    rebuild.retries_left = 1           # what the first run left, minus this one
    assert q.submit(rebuild, rebuild=True) == []
    assert sent(q.on_info(ALIVE, 1, "addr1", 3)) == [("queued", 0, 1), ("rebuild", 1, 1)]
    assert rebuild.retries_left == 1 and queued.retries_left == 3
    assert q.push_failed(rebuild, 1) == []          # its last retry
    assert rebuild.retries_left == 0
    q.on_info(DEAD, 1, None, 3)
    dead = call("dead")
    dead.retries_left = -1
    assert q.submit(dead, rebuild=True) == [Fail(dead, "dead")]


def test_dead_actor_fails_queued_and_new_calls(q):
    a = call("a")
    q.submit(a)
    assert q.on_info(DEAD, 0, None, 0, death_cause=b"x") == [Fail(a, "dead")]
    b = call("b")
    assert q.submit(b) == [Fail(b, "dead")]
    assert q.death_cause == b"x"


def test_cancel_queued_and_sent_calls(q):
    a, b = call("a"), call("b")
    q.submit(a)
    q.submit(b)
    assert q.cancel(b) == [Fail(b, "cancelled")]
    q.on_info(ALIVE, 0, "addr", 0)
    assert q.cancel(a) == [CancelSent(a)]
    q.replied(a)
    assert q.cancel(a) == []
    assert not q.has_work()


def test_cancelled_call_that_failed_in_flight_is_not_retried(q):
    q.on_info(ALIVE, 0, "addr", max_task_retries=-1)
    a = call("a")
    q.submit(a)
    a.cancelled = True
    assert q.push_failed(a, 0) == [Fail(a, "cancelled")]


def test_retry_exceptions_resends_in_place(q):
    q.on_info(ALIVE, 0, "addr", max_task_retries=2)
    a, b = call("a"), call("b", resolved=False)
    q.submit(a)
    q.submit(b)
    q.replied(a)
    assert sent(q.retry(a)) == [("a", 1, 0)]
    assert a.retries_left == 1


def test_random_sequences_keep_order_and_invariants():
    rng = random.Random(3)
    for trial in range(40):
        q = ActorCallQueue("actor")
        incarnation = 0
        inflight: dict = {}
        done: list = []
        pending_resolve: list = []
        names = 0
        for step in range(150):
            choice = rng.random()
            if choice < 0.35:
                names += 1
                task = call(f"t{names}", resolved=rng.random() < 0.8)
                if not task.resolved:
                    pending_resolve.append(task)
                actions = q.submit(task)
            elif choice < 0.45 and pending_resolve:
                task = pending_resolve.pop(0)
                task.resolved = True
                actions = q.resolved(task, still_pending=True)
            elif choice < 0.65 and inflight:
                task = rng.choice(sorted(inflight.values(), key=lambda t: t.order))
                del inflight[task.task_id]
                q.replied(task)
                done.append(task)
                actions = []
            elif choice < 0.75 and inflight:
                task = rng.choice(sorted(inflight.values(), key=lambda t: t.order))
                del inflight[task.task_id]
                actions = q.push_failed(task, incarnation)
            elif choice < 0.85:
                incarnation += 1
                actions = q.on_info(ALIVE, incarnation, f"addr{incarnation}", -1)
            else:
                actions = q.on_info(ALIVE, incarnation, f"addr{incarnation}", -1)
            seqs = []
            for action in actions:
                if isinstance(action, Send):
                    assert action.incarnation == q.incarnation
                    inflight[action.task.task_id] = action.task
                    seqs.append((action.seq, action.task.order))
            # Within one batch, sequence numbers follow submission order.
            assert [o for _, o in sorted(seqs)] == sorted(o for _, o in seqs)
            q.validate()


def test_calls_wait_after_the_connection_to_the_actor_is_lost(q):
    q.on_info(ALIVE, 0, "addr0", max_task_retries=0)
    q.connection_lost(0)
    a = call("a")
    assert q.submit(a) == []              # not sent to a process that is gone
    assert sent(q.on_info(ALIVE, 1, "addr1", 0)) == [("a", 0, 1)]


def test_cancel_of_a_sent_call_carries_recursive(q):
    q.on_info(ALIVE, 0, "addr", 0)
    a = call("a")
    q.submit(a)
    assert q.cancel(a, recursive=False) == [CancelSent(a, False)]
    assert q.cancel(a) == [CancelSent(a, True)]
