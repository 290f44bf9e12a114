"""LeaseManager: which queued task runs on which lease (no sockets)."""
from __future__ import annotations

import random

import pytest

from miniray.core_worker.lease_manager import (
    LeaseManager, PushTask, RequestLease, ReturnLease, StartIdleTimer)

K = "cpu1"


def kinds(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


@pytest.fixture
def lm():
    manager = LeaseManager(max_pending=10, reuse_s=0.5, idle_s=0.2)
    yield manager
    manager.validate()


def test_each_queued_task_asks_for_its_own_lease(lm):
    actions = []
    for i in range(4):
        actions += lm.enqueue(K, f"t{i}", now=0)
        lm.validate()
    assert len(kinds(actions, RequestLease)) == 4
    assert not kinds(actions, PushTask)


def test_lease_requests_are_bounded_per_key(lm):
    actions = []
    for i in range(50):
        actions += lm.enqueue(K, f"t{i}", now=0)
    assert len(kinds(actions, RequestLease)) == 10
    assert lm.statistics()["pending_requests"] == 10


def test_the_backlog_is_the_queue_beyond_the_pending_requests(lm):
    assert lm.backlog(K) == 0
    for i in range(16):
        lm.enqueue(K, f"t{i}", now=0)
    assert lm.backlog(K) == 6                  # 16 queued, 10 requests out
    lm.lease_granted(K, "L1", now=0)            # t0 runs; one more request
    assert lm.backlog(K) == 5
    for i in range(2, 12):
        lm.lease_granted(K, f"L{i}", now=0)
    assert lm.backlog(K) == 0                  # every queued task has a request


def test_one_task_at_a_time_per_lease(lm):
    for i in range(3):
        lm.enqueue(K, f"t{i}", now=0)
    first = lm.lease_granted(K, "L1", now=0)
    assert first == [PushTask("t0", "L1")]
    second = lm.lease_granted(K, "L2", now=0)
    assert second == [PushTask("t1", "L2")]
    assert lm.running_on("L1") == "t0" and lm.running_on("L2") == "t1"
    assert lm.is_queued("t2")


def test_finished_lease_takes_the_next_queued_task(lm):
    for i in range(2):
        lm.enqueue(K, f"t{i}", now=0)
    lm.lease_granted(K, "L1", now=0)
    assert lm.task_finished("L1", now=0.1) == [PushTask("t1", "L1")]


def test_short_tasks_do_not_wait_behind_a_long_one(lm):
    """While t0 runs, later tasks ask for (and get) leases of their own."""
    lm.enqueue(K, "long", now=0)
    lm.lease_granted(K, "L1", now=0)
    actions = []
    for i in range(3):
        actions += lm.enqueue(K, f"short{i}", now=0.01)
    assert len(kinds(actions, RequestLease)) == 3
    assert lm.lease_granted(K, "L2", now=0.02) == [PushTask("short0", "L2")]
    # L1 is still busy with the long task; L2 runs the shorts one by one.
    assert lm.task_finished("L2", now=0.1) == [PushTask("short1", "L2")]
    assert lm.running_on("L1") == "long"


def test_idle_lease_is_kept_briefly_then_returned(lm):
    lm.enqueue(K, "t0", now=0)
    lm.lease_granted(K, "L1", now=0)
    assert lm.task_finished("L1", now=0.05) == [StartIdleTimer("L1", 0.2)]
    # A new task within the idle period reuses it without a request.
    assert lm.enqueue(K, "t1", now=0.1) == [PushTask("t1", "L1")]
    assert lm.task_finished("L1", now=0.15) == [StartIdleTimer("L1", 0.2)]
    assert lm.idle_expired("L1", now=0.25) == []        # the first timer: stale
    assert lm.idle_expired("L1", now=0.35) == [ReturnLease("L1")]
    assert lm.statistics()["keys"] == 0


def test_asking_for_another_key_first_gives_back_idle_leases(lm):
    """An idle lease kept for reuse must not hold resources a new request of
    another shape may need: it goes back before that request is sent."""
    other = ("other shape",)
    lm.enqueue(K, "t0", now=0)
    lm.lease_granted(K, "L1", now=0)
    assert lm.task_finished("L1", now=0.05) == [StartIdleTimer("L1", 0.2)]
    assert lm.enqueue(other, "t1", now=0.06) == [ReturnLease("L1"), RequestLease(other)]
    lm.validate()
    assert lm.idle_expired("L1", now=0.3) == []          # already gone
    # A busy lease of another key stays; so does an idle one of the same key.
    lm.lease_granted(other, "L2", now=0.07)
    lm.enqueue(K, "t2", now=0.08)
    assert lm.enqueue(other, "t3", now=0.09) == [RequestLease(other)]
    lm.validate()


def test_a_lease_granted_after_its_queue_drained_goes_back(lm):
    lm.enqueue(K, "t0", now=0)
    lm.enqueue(K, "t1", now=0)
    lm.lease_granted(K, "L1", now=0)
    lm.task_finished("L1", now=0.01)          # runs t1 next
    assert lm.lease_granted(K, "L2", now=0.02) == [ReturnLease("L2")]


def test_old_lease_goes_back_to_the_raylet_between_tasks(lm):
    """Fairness: a lease is reused for reuse_s, then re-requested."""
    for i in range(3):
        lm.enqueue(K, f"t{i}", now=0)
    lm.lease_granted(K, "L1", now=0)
    actions = lm.task_finished("L1", now=0.6)
    assert ReturnLease("L1") in actions
    assert PushTask("t1", "L1") not in actions


def test_cancel_of_a_queued_task_removes_it(lm):
    lm.enqueue(K, "t0", now=0)
    lm.enqueue(K, "t1", now=0)
    assert lm.cancel("t1") is True
    assert not lm.is_queued("t1")
    lm.lease_granted(K, "L1", now=0)
    assert lm.running_on("L1") == "t0"
    assert lm.cancel("t0") is False           # running: the worker must be told
    assert lm.task_finished("L1", now=0.1) == [StartIdleTimer("L1", 0.2)]
    assert lm.lease_granted(K, "L2", now=0.1) == [ReturnLease("L2")]


def test_lost_lease_ends_and_a_retry_goes_first(lm):
    for i in range(2):
        lm.enqueue(K, f"t{i}", now=0)
    lm.lease_granted(K, "L1", now=0)
    actions = lm.lease_lost("L1", now=0.1)
    assert ReturnLease("L1", exiting=True) in actions
    lm.enqueue(K, "t0", now=0.1, front=True)       # the caller retries it
    assert lm.lease_granted(K, "L2", now=0.2) == [PushTask("t0", "L2")]


def test_failed_lease_request_fails_the_queue(lm):
    for i in range(3):
        lm.enqueue(K, f"t{i}", now=0)
    failed = lm.lease_request_failed(K)
    assert failed == ["t0", "t1", "t2"]
    for _ in range(2):
        assert lm.lease_request_failed(K) == []
    assert lm.statistics()["keys"] == 0


def test_keys_are_independent(lm):
    lm.enqueue("a", "t0", now=0)
    lm.enqueue("b", "t1", now=0)
    assert lm.lease_granted("b", "Lb", now=0) == [PushTask("t1", "Lb")]
    assert lm.is_queued("t0")


def test_random_event_sequences_keep_invariants():
    """Drive the manager like the submitter would, checking every step."""
    rng = random.Random(7)
    for trial in range(30):
        lm = LeaseManager(max_pending=rng.randint(1, 4), reuse_s=0.5, idle_s=0.2)
        now = 0.0
        requests: list = []          # keys with a request in flight
        leases: dict = {}            # lease -> key
        running: dict = {}           # lease -> task
        idle_timers: list = []
        done, submitted = set(), 0
        next_lease = 0

        def apply(actions):
            for a in actions:
                if isinstance(a, RequestLease):
                    requests.append(a.key)
                elif isinstance(a, PushTask):
                    running[a.lease_id] = a.task_id
                elif isinstance(a, ReturnLease):
                    leases.pop(a.lease_id)
                    assert a.lease_id not in running or a.exiting
                    running.pop(a.lease_id, None)
                elif isinstance(a, StartIdleTimer):
                    idle_timers.append((now + a.delay, a.lease_id))

        for step in range(300):
            now += rng.random() * 0.1
            choice = rng.random()
            if choice < 0.3:
                key = rng.choice("ab")
                apply(lm.enqueue(key, f"t{submitted}", now))
                submitted += 1
            elif choice < 0.55 and requests:
                key = requests.pop(rng.randrange(len(requests)))
                next_lease += 1
                leases[f"L{next_lease}"] = key
                apply(lm.lease_granted(key, f"L{next_lease}", now))
            elif choice < 0.8 and running:
                lease = rng.choice(sorted(running))
                done.add(running.pop(lease))
                apply(lm.task_finished(lease, now))
            elif choice < 0.85 and running:
                lease = rng.choice(sorted(running))
                task = running.pop(lease)
                apply(lm.lease_lost(lease, now))
                apply(lm.enqueue(leases.get(lease, "a"), task, now, front=True))
            elif choice < 0.9 and submitted:
                lm.cancel(f"t{rng.randrange(submitted)}")
            elif idle_timers:
                idle_timers.sort()
                when, lease = idle_timers.pop(0)
                now = max(now, when)
                apply(lm.idle_expired(lease, now))
            lm.validate()
            assert set(running.values()).isdisjoint(done)


def test_worker_that_reached_max_calls_is_not_reused(lm):
    for i in range(2):
        lm.enqueue(K, f"t{i}", now=0)
    lm.lease_granted(K, "L1", now=0)
    actions = lm.task_finished("L1", now=0.01, worker_exiting=True)
    assert actions[0] == ReturnLease("L1", exiting=True)
    assert not kinds(actions, PushTask)
    assert lm.lease_granted(K, "L2", now=0.02) == [PushTask("t1", "L2")]
