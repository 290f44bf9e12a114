"""When a raylet asks for Python garbage collection (Ray's local and global GC)."""
from miniray.raylet.gc_policy import GcPolicy

MB = 1 << 20


def test_below_the_mark_nothing_is_asked():
    policy = GcPolicy()
    policy.store_usage(60 * MB, 100 * MB, now=0.0)
    assert not policy.take_global_request()
    assert policy.local_gc_due(0.0) is None


def test_above_the_mark_a_global_gc_and_a_local_one_at_once():
    policy = GcPolicy()
    policy.store_usage(80 * MB, 100 * MB, now=5.0)
    assert policy.take_global_request()
    assert not policy.take_global_request()        # sent once per trigger
    assert policy.local_gc_due(5.0) == 0.0
    policy.local_gc_ran(5.0)
    assert policy.local_gc_due(5.1) is None


def test_global_gc_at_most_once_per_interval():
    policy = GcPolicy(global_min_interval_s=30.0)
    policy.store_full(now=0.0)
    assert policy.take_global_request()
    policy.store_full(now=29.0)
    assert not policy.take_global_request()
    policy.store_full(now=30.5)
    assert policy.take_global_request()


def test_a_local_gc_asked_too_soon_waits_for_its_window():
    policy = GcPolicy(local_min_interval_s=10.0)
    policy.global_requested()
    assert policy.local_gc_due(100.0) == 0.0
    policy.local_gc_ran(100.0)
    policy.global_requested()                       # another node asks again
    assert policy.local_gc_due(103.0) == 7.0        # held back, not dropped
    assert policy.local_gc_due(110.0) == 0.0


def test_periodic_local_gc_without_pressure():
    policy = GcPolicy(local_interval_s=60.0)
    assert policy.local_gc_due(0.0) is None         # the clock starts here
    assert policy.local_gc_due(59.0) is None
    assert policy.local_gc_due(61.0) == 0.0
    policy.local_gc_ran(61.0)
    assert policy.local_gc_due(100.0) is None


def test_an_empty_store_never_triggers():
    policy = GcPolicy()
    policy.store_usage(0, 0, now=0.0)
    assert not policy.take_global_request()
