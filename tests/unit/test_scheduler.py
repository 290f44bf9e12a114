"""Unit tests for miniray.raylet.scheduler (lease policy as pure state)."""
from __future__ import annotations

import itertools
import random

import pytest

from miniray.raylet.scheduler import Lease, LeaseRequest, LeaseScheduler

JOB = b"job1"
ALICE = b"alice"
BOB = b"bob"
TOL = 1e-9

_ids = itertools.count(1)


def req(resources: dict, requester: bytes = ALICE, name: str = "") -> LeaseRequest:
    return LeaseRequest(next(_ids), dict(resources), JOB, requester, name)


def lease_for(request: LeaseRequest) -> Lease:
    return Lease(request.request_id.to_bytes(8, "big"), dict(request.resources),
                 request.requester, request.job_id,
                 resource_ids=request.resource_ids, sched_class=request.sched_class)


def ids(requests) -> list[int]:
    return [r.request_id for r in requests]


def approx_equal(a: dict, b: dict) -> bool:
    return all(abs(a.get(k, 0.0) - b.get(k, 0.0)) <= TOL for k in set(a) | set(b))


# --- construction / feasibility --------------------------------------------------------

def test_available_starts_as_copy_of_total():
    sched = LeaseScheduler({"CPU": 2.0})
    assert sched.available == {"CPU": 2.0}
    sched.available["CPU"] = 0.0
    assert sched.total == {"CPU": 2.0}


def test_explicit_available_is_kept():
    sched = LeaseScheduler({"CPU": 4.0}, available={"CPU": 1.0})
    assert sched.available == {"CPU": 1.0}


def test_feasible_is_against_total_not_available():
    sched = LeaseScheduler({"CPU": 2.0, "GPU": 1.0})
    assert sched.feasible({"CPU": 2})
    assert sched.feasible({"CPU": 1, "GPU": 1})
    assert sched.feasible({})
    assert not sched.feasible({"CPU": 3})
    assert not sched.feasible({"TPU": 1})
    assert not sched.feasible({"CPU": 1, "GPU": 2})
    # Even with everything taken, feasibility does not change.
    sched.submit(req({"CPU": 2, "GPU": 1}))
    assert len(sched.schedule()) == 1
    assert sched.available == {"CPU": 0.0, "GPU": 0.0}
    assert sched.feasible({"CPU": 2, "GPU": 1})
    assert not sched.feasible({"CPU": 2.5})


# --- schedule ---------------------------------------------------------------------------

def test_schedule_empty_queue():
    sched = LeaseScheduler({"CPU": 1.0})
    assert sched.schedule() == []
    assert sched.available == {"CPU": 1.0}


def test_schedule_grants_in_order_and_leaves_rest_queued():
    sched = LeaseScheduler({"CPU": 2.0})
    requests = [req({"CPU": 1}) for _ in range(4)]
    for r in requests:
        sched.submit(r)
    granted = sched.schedule()
    assert ids(granted) == ids(requests[:2])
    assert ids(sched.queue) == ids(requests[2:])
    assert sched.available == {"CPU": 0.0}
    # Nothing more until something is released.
    assert sched.schedule() == []
    assert ids(sched.queue) == ids(requests[2:])


def test_schedule_is_first_fit_not_head_of_line():
    sched = LeaseScheduler({"CPU": 2.0})
    big = req({"CPU": 2})
    small = [req({"CPU": 1}) for _ in range(3)]
    sched.submit(small[0])
    sched.submit(big)
    sched.submit(small[1])
    sched.submit(small[2])
    granted = sched.schedule()
    # big does not fit after small[0]; the later small request does.
    assert ids(granted) == [small[0].request_id, small[1].request_id]
    assert ids(sched.queue) == [big.request_id, small[2].request_id]


def test_release_lets_waiting_requests_in():
    sched = LeaseScheduler({"CPU": 2.0})
    first = [req({"CPU": 1}) for _ in range(2)]
    waiting = [req({"CPU": 1}) for _ in range(2)]
    for r in first + waiting:
        sched.submit(r)
    assert ids(sched.schedule()) == ids(first)
    sched.release(lease_for(first[0]))
    assert sched.available == {"CPU": 1.0}
    assert ids(sched.schedule()) == [waiting[0].request_id]
    assert ids(sched.queue) == [waiting[1].request_id]
    sched.release(lease_for(first[1]))
    assert ids(sched.schedule()) == [waiting[1].request_id]
    assert sched.queue == []
    sched.release(lease_for(waiting[0]))
    sched.release(lease_for(waiting[1]))
    assert sched.available == sched.total


def test_infeasible_request_stays_queued_without_blocking_others():
    sched = LeaseScheduler({"CPU": 1.0})
    too_big = req({"CPU": 4})
    ok = req({"CPU": 1})
    sched.submit(too_big)
    sched.submit(ok)
    assert ids(sched.schedule()) == [ok.request_id]
    assert ids(sched.queue) == [too_big.request_id]
    assert not sched.feasible(too_big.resources)


def test_zero_resource_request_is_always_granted():
    sched = LeaseScheduler({"CPU": 1.0})
    hog = req({"CPU": 1})
    free = req({})
    zero_cpu = req({"CPU": 0})
    for r in (hog, free, zero_cpu):
        sched.submit(r)
    assert ids(sched.schedule()) == ids([hog, free, zero_cpu])
    assert sched.available == {"CPU": 0.0}


def test_placement_resources_must_exist_but_are_neither_held_nor_waited_for():
    # An actor's default "1 CPU for scheduling, 0 for running" (Ray): it
    # starts on a node whose CPUs are all busy, and takes none of them.
    sched = LeaseScheduler({"CPU": 2.0})
    sched.submit(req({"CPU": 2}))
    actor = LeaseRequest(next(_ids), {}, JOB, b"", "A", placement={"CPU": 1.0},
                         actor_id=b"actor")
    sched.submit(actor)
    assert actor.request_id in ids(sched.schedule())
    assert sched.available == {"CPU": 0.0}


def test_placement_resources_the_node_lacks_keep_the_request_queued():
    sched = LeaseScheduler({"CPU": 0.0, "memory": 1.0})
    actor = LeaseRequest(next(_ids), {}, JOB, b"", "A", placement={"CPU": 1.0},
                         actor_id=b"actor")
    sched.submit(actor)
    assert sched.schedule() == []
    assert not sched.feasible(actor.resources, actor.placement)


# --- custom / fractional resources ------------------------------------------------------

def test_custom_resources():
    sched = LeaseScheduler({"CPU": 4.0, "accel": 1.0})
    a = req({"CPU": 1, "accel": 1})
    b = req({"CPU": 1, "accel": 1})
    c = req({"CPU": 1})
    for r in (a, b, c):
        sched.submit(r)
    assert ids(sched.schedule()) == [a.request_id, c.request_id]
    assert ids(sched.queue) == [b.request_id]
    assert sched.available == {"CPU": 2.0, "accel": 0.0}
    sched.release(lease_for(a))
    assert ids(sched.schedule()) == [b.request_id]
    sched.release(lease_for(b))
    sched.release(lease_for(c))
    assert sched.available == sched.total


def test_unknown_custom_resource_never_granted():
    sched = LeaseScheduler({"CPU": 4.0})
    r = req({"CPU": 1, "nope": 1})
    sched.submit(r)
    assert sched.schedule() == []
    assert ids(sched.queue) == [r.request_id]
    assert sched.available == {"CPU": 4.0}


def test_fractional_cpus():
    sched = LeaseScheduler({"CPU": 1.0})
    halves = [req({"CPU": 0.5}) for _ in range(3)]
    for r in halves:
        sched.submit(r)
    assert ids(sched.schedule()) == ids(halves[:2])
    assert sched.available == {"CPU": 0.0}
    sched.release(lease_for(halves[0]))
    assert sched.available == {"CPU": 0.5}
    assert ids(sched.schedule()) == [halves[2].request_id]
    sched.release(lease_for(halves[1]))
    sched.release(lease_for(halves[2]))
    assert sched.available == {"CPU": 1.0}


def test_fractional_tenths_tolerate_rounding():
    sched = LeaseScheduler({"CPU": 1.0})
    tenths = [req({"CPU": 0.1}) for _ in range(11)]
    for r in tenths:
        sched.submit(r)
    granted = sched.schedule()
    assert ids(granted) == ids(tenths[:10])
    assert ids(sched.queue) == [tenths[10].request_id]
    for r in granted:
        sched.release(lease_for(r))
    assert approx_equal(sched.available, sched.total)


# --- blocking ---------------------------------------------------------------------------

def test_set_blocked_lends_back_cpu_only():
    sched = LeaseScheduler({"CPU": 2.0, "GPU": 1.0})
    r = req({"CPU": 2, "GPU": 1})
    sched.submit(r)
    assert sched.schedule() == [r]
    lease = lease_for(r)
    assert sched.available == {"CPU": 0.0, "GPU": 0.0}
    assert sched.set_blocked(lease, True) is True
    assert lease.blocked
    assert sched.available == {"CPU": 2.0, "GPU": 0.0}
    # Idempotent: a second "blocked" changes nothing.
    assert sched.set_blocked(lease, True) is False
    assert sched.available == {"CPU": 2.0, "GPU": 0.0}
    assert sched.set_blocked(lease, False) is True
    assert not lease.blocked
    assert sched.available == {"CPU": 0.0, "GPU": 0.0}
    assert sched.set_blocked(lease, False) is False
    assert sched.available == {"CPU": 0.0, "GPU": 0.0}


def test_blocked_cpu_can_be_granted_and_unblock_oversubscribes():
    sched = LeaseScheduler({"CPU": 1.0})
    first = req({"CPU": 1}, name="outer")
    second = req({"CPU": 1}, name="inner")     # another class: not held by a cap
    sched.submit(first)
    sched.submit(second)
    assert sched.schedule() == [first]
    lease1 = lease_for(first)
    sched.set_blocked(lease1, True)
    assert sched.schedule() == [second]          # runs on the lent CPU
    lease2 = lease_for(second)
    assert sched.available == {"CPU": 0.0}
    sched.set_blocked(lease1, False)             # takes it back regardless
    assert sched.available == {"CPU": -1.0}
    third = req({"CPU": 0.5})
    sched.submit(third)
    assert sched.schedule() == []                # oversubscribed: nothing fits
    sched.release(lease2)
    assert sched.available == {"CPU": 0.0}
    assert sched.schedule() == []
    sched.release(lease1)
    assert sched.schedule() == [third]
    sched.release(lease_for(third))
    assert sched.available == sched.total


def test_release_of_blocked_lease_returns_only_non_cpu():
    sched = LeaseScheduler({"CPU": 2.0, "GPU": 1.0, "mem": 4.0})
    r = req({"CPU": 1.5, "GPU": 1, "mem": 2})
    sched.submit(r)
    assert sched.schedule() == [r]
    lease = lease_for(r)
    sched.set_blocked(lease, True)
    assert sched.available == {"CPU": 2.0, "GPU": 0.0, "mem": 2.0}
    sched.release(lease)
    # Totals balance: the CPU came back when it blocked, the rest now.
    assert sched.available == sched.total


def test_blocked_lease_without_cpu():
    sched = LeaseScheduler({"CPU": 1.0, "GPU": 1.0})
    r = req({"GPU": 1})
    sched.submit(r)
    assert sched.schedule() == [r]
    lease = lease_for(r)
    assert sched.set_blocked(lease, True)
    assert sched.available == {"CPU": 1.0, "GPU": 0.0}
    sched.release(lease)
    assert sched.available == sched.total


def test_blocked_fractional_cpu():
    sched = LeaseScheduler({"CPU": 1.0})
    a, b, c = req({"CPU": 0.5}), req({"CPU": 0.5}), req({"CPU": 0.5}, name="inner")
    for r in (a, b, c):
        sched.submit(r)
    assert sched.schedule() == [a, b]
    la = lease_for(a)
    sched.set_blocked(la, True)
    assert sched.available == {"CPU": 0.5}
    assert sched.schedule() == [c]
    sched.set_blocked(la, False)
    assert sched.available == {"CPU": -0.5}
    for r in (a, b, c):
        sched.release(la if r is a else lease_for(r))
    assert sched.available == sched.total


# --- cancel -----------------------------------------------------------------------------

def test_cancel_drops_only_that_requesters_queued_requests():
    sched = LeaseScheduler({"CPU": 1.0})
    running = req({"CPU": 1}, ALICE)
    sched.submit(running)
    assert sched.schedule() == [running]
    a1, b1, a2, b2 = (req({"CPU": 1}, ALICE), req({"CPU": 1}, BOB),
                      req({"CPU": 1}, ALICE), req({"CPU": 1}, BOB))
    for r in (a1, b1, a2, b2):
        sched.submit(r)
    dropped = sched.cancel(ALICE)
    assert ids(dropped) == [a1.request_id, a2.request_id]
    assert ids(sched.queue) == [b1.request_id, b2.request_id]
    # Granted leases are not touched by cancel.
    assert sched.available == {"CPU": 0.0}
    assert sched.cancel(ALICE) == []
    assert sched.cancel(b"nobody") == []
    sched.release(lease_for(running))
    assert sched.schedule() == [b1]


def test_cancel_then_schedule_skips_cancelled():
    sched = LeaseScheduler({"CPU": 2.0})
    a, b = req({"CPU": 2}, ALICE), req({"CPU": 1}, BOB)
    sched.submit(a)
    sched.submit(b)
    sched.cancel(ALICE)
    assert sched.schedule() == [b]
    assert sched.available == {"CPU": 1.0}


def test_cancel_by_node_drops_the_requests_of_every_process_there():
    sched = LeaseScheduler({"CPU": 0.0})
    here = LeaseRequest(next(_ids), {"CPU": 1}, JOB, ALICE, requester_node=b"n1")
    there = LeaseRequest(next(_ids), {"CPU": 1}, JOB, BOB, requester_node=b"n2")
    sched.submit(here)
    sched.submit(there)
    assert sched.cancel(node=b"n2") == [there]
    assert sched.queue == [here]
    assert sched.cancel() == []          # neither named: nothing


def _naive_first_fit(total: dict, queue: list) -> list[int]:
    """Reference: try every request in order against what is left."""
    available = dict(total)
    granted = []
    for request in queue:
        if all(available.get(k, 0.0) + TOL >= v for k, v in request.resources.items()):
            for k, v in request.resources.items():
                available[k] = available.get(k, 0.0) - v
            granted.append(request.request_id)
    return granted


@pytest.mark.parametrize("seed", range(6))
def test_a_pass_skips_shapes_that_did_not_fit_without_changing_the_outcome(seed):
    rng = random.Random(seed)
    shapes = [{"CPU": 1}, {"CPU": 2}, {"CPU": 0.5}, {"CPU": 1, "disk": 1}, {"disk": 2}]
    total = {"CPU": 6.0, "disk": 3.0}
    queue = [req(rng.choice(shapes)) for _ in range(60)]
    sched = LeaseScheduler(dict(total))
    for request in queue:
        sched.submit(request)
    assert ids(sched.schedule()) == _naive_first_fit(total, queue)


# --- randomized -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_randomized_conservation(seed):
    rng = random.Random(seed)
    total = {"CPU": 4.0, "GPU": 2.0, "custom": 3.0}
    sched = LeaseScheduler(dict(total))
    amounts = [0, 0.25, 0.5, 1, 2, 5]     # 5 is infeasible for every resource
    requesters = [ALICE, BOB, b"carol"]
    queued: dict[int, LeaseRequest] = {}
    leases: dict[int, Lease] = {}

    def check():
        for name, cap in total.items():
            assert sched.available.get(name, 0.0) <= cap + TOL, (name, sched.available)
        assert set(sched.available) <= set(total)
        assert ids(sched.queue) == sorted(queued)        # arrival order kept
        # Conservation: available + held by granted leases == total, where a
        # blocked lease holds no CPU.
        held = {k: 0.0 for k in total}
        for lease in leases.values():
            for k, v in lease.resources.items():
                if not (lease.blocked and k == "CPU"):
                    held[k] += v
        for k in total:
            assert abs(sched.available.get(k, 0.0) + held[k] - total[k]) <= TOL, k
        sched.validate(leases.values())      # GPU ids: none over-allocated

    for _ in range(3000):
        op = rng.random()
        if op < 0.35:
            shape = {k: rng.choice(amounts) for k in total if rng.random() < 0.6}
            r = req(shape, rng.choice(requesters))
            queued[r.request_id] = r
            sched.submit(r)
        elif op < 0.55:
            available_before = dict(sched.available)
            granted = sched.schedule()
            for r in granted:
                del queued[r.request_id]
                leases[r.request_id] = lease_for(r)
            # Whatever is still queued did not fit what was left at its turn;
            # at least, nothing still queued fits now if nothing was granted
            # (in amount, or, for GPUs, in instances: 0.5 + 0.5 free on two
            # ids is no whole GPU).
            if not granted:
                assert sched.available == available_before
                for r in sched.queue:
                    fits = all(sched.available.get(k, 0.0) + TOL >= v
                               for k, v in r.resources.items() if v > 0)
                    taken = sched.instances.allocate(r.resources) if fits else None
                    assert taken is None, (r.resources, sched.instances.pools)
        elif op < 0.8 and leases:
            rid = rng.choice(sorted(leases))
            sched.release(leases.pop(rid))
        elif op < 0.95 and leases:
            lease = leases[rng.choice(sorted(leases))]
            assert sched.set_blocked(lease, not lease.blocked)
        else:
            who = rng.choice(requesters)
            dropped = sched.cancel(who)
            assert all(r.requester == who for r in dropped)
            for r in dropped:
                del queued[r.request_id]
            assert all(r.requester != who for r in sched.queue)
        check()

    for lease in list(leases.values()):
        if rng.random() < 0.5 and lease.blocked:
            sched.set_blocked(lease, False)
        sched.release(lease)
    leases.clear()
    check()
    assert approx_equal(sched.available, total)
    # With everything free, every feasible queued request is eventually
    # granted (each pass grants at least the first feasible one).
    for _ in range(len(sched.queue) + 1):
        granted = sched.schedule()
        if not granted:
            break
        for r in granted:
            sched.release(lease_for(r))
        assert approx_equal(sched.available, total)
    assert all(not sched.feasible(r.resources) for r in sched.queue)


# --- the per-class cap (Ray's fair queueing of scheduling classes) ----------------------

def test_a_class_runs_at_most_what_the_cpus_hold_even_when_blocked():
    s = LeaseScheduler({"CPU": 2.0})
    first = [req({"CPU": 1}, name="f") for _ in range(2)]
    more_f, g = req({"CPU": 1}, name="f"), req({"CPU": 1}, name="g")
    for r in first + [more_f]:
        s.submit(r)
    leases = [lease_for(r) for r in s.schedule(now=0.0)]
    assert ids(leases and first) == ids(first)
    for lease in leases:
        s.set_blocked(lease, True)            # both f's wait on deeper work
    s.submit(g)
    # The lent CPUs go to g, not to a third f (its class is at its cap).
    assert ids(s.schedule(now=0.1)) == [g.request_id]
    assert s.queue == [more_f]
    s.validate(leases + [lease_for(g)])


def test_past_the_cap_one_more_goes_after_a_doubling_delay():
    s = LeaseScheduler({"CPU": 4.0}, cap_delay_s=1.0, cap_max_delay_s=10.0)
    r1, r2, r3 = (req({"CPU": 1}, name="f") for _ in range(3))
    s.submit(r1)
    lease = lease_for(s.schedule(now=0.0)[0])
    s.set_blocked(lease, True)
    s.total["CPU"] = 1.0                     # a 1-CPU node: capacity 1 for f
    s.submit(r2)
    s.submit(r3)
    assert s.schedule(now=0.0) == []
    assert s.next_admission() == pytest.approx(1.0)
    assert ids(s.schedule(now=1.0)) == [r2.request_id]      # one, after 1 s
    assert s.schedule(now=1.5) == []
    # Asked at 1.0 with two over the cap: the next one waits 2 s.
    assert s.next_admission() == pytest.approx(3.0)
    assert ids(s.schedule(now=3.0)) == [r3.request_id]


def test_depth_and_shape_make_separate_classes_and_actors_are_not_capped():
    s = LeaseScheduler({"CPU": 1.0})
    top = req({"CPU": 1}, name="fib")
    s.submit(top)
    lease = lease_for(s.schedule(now=0.0)[0])
    s.set_blocked(lease, True)
    deeper = req({"CPU": 1}, name="fib")
    deeper.depth = 2
    actor = req({"CPU": 1}, name="fib")
    actor.actor_id = b"a" * 16
    s.submit(deeper)
    assert ids(s.schedule(now=0.0)) == [deeper.request_id]
    assert actor.sched_class is None and req({"GPU": 1}).sched_class is None


def test_releasing_below_the_cap_forgets_the_backoff():
    s = LeaseScheduler({"CPU": 1.0})
    a, b = req({"CPU": 1}, name="f"), req({"CPU": 1}, name="f")
    s.submit(a)
    s.submit(b)
    (granted,) = s.schedule(now=0.0)
    lease = lease_for(granted)
    s.set_blocked(lease, True)                    # b fits now, but the cap holds it
    assert s.schedule(now=0.0) == [] and s.next_admission() is not None
    s.release(lease)
    assert s.next_admission() is None and not s.running
    assert ids(s.schedule(now=0.0)) == [b.request_id]     # at once, no delay
