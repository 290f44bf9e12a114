"""Placement group checks made at submission, as Ray makes them."""
from __future__ import annotations

import pytest

import miniray as ray


def test_placement_group_requests_must_fit_a_bundle(shutdown_only):
    """As in Ray: 'bundle' is a reserved resource name, and a task or actor
    whose request fits no bundle of its placement group (or not the bundle
    it names) is refused at .remote() instead of pending forever."""
    from miniray.util import placement_group, remove_placement_group
    from miniray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(num_cpus=2, resources={"a": 1})
    with pytest.raises(ValueError, match="reserved"):
        placement_group([{"bundle": 1}])
    pg = placement_group([{"a": 1}, {"CPU": 1}])
    assert pg.wait(timeout_seconds=30)
    in_pg = PlacementGroupSchedulingStrategy(placement_group=pg)
    in_first = PlacementGroupSchedulingStrategy(placement_group=pg,
                                                placement_group_bundle_index=0)

    @ray.remote
    class A:
        def ready(self):
            return True

    @ray.remote
    def uses_a():
        return "ran"

    with pytest.raises(ValueError, match="cannot fit"):
        A.options(scheduling_strategy=in_first).remote()     # placing needs a CPU
    with pytest.raises(ValueError, match="cannot fit"):
        uses_a.options(num_cpus=1, resources={"a": 1}, scheduling_strategy=in_pg).remote()
    with pytest.raises(ValueError, match="reserved"):
        uses_a.options(resources={"bundle": 1}, scheduling_strategy=in_pg).remote()
    assert ray.get(A.options(scheduling_strategy=in_pg).remote().ready.remote())
    assert ray.get(uses_a.options(num_cpus=0, resources={"a": 1},
                                  scheduling_strategy=in_first).remote()) == "ran"
    remove_placement_group(pg)


def test_bundle_indexes_are_checked_when_the_call_is_made(shutdown_only):
    """As in Ray: an index past the group's bundles, below -1, or given
    without a placement group is refused at .remote()."""
    from miniray.util import placement_group, remove_placement_group
    from miniray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(num_cpus=2)
    pg = placement_group([{"CPU": 1}, {"CPU": 1}])

    @ray.remote(num_cpus=1)
    def f():
        return 1

    with pytest.raises(ValueError, match="bundle index 3 is invalid"):
        f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=3)).remote()
    with pytest.raises(ValueError, match="bundle index -2 is invalid"):
        f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=-2)).remote()
    with pytest.raises(ValueError, match="bundle index must be -1"):
        f.options(placement_group_bundle_index=0).remote()
    assert ray.get(f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
        pg, placement_group_bundle_index=1)).remote(), timeout=30) == 1
    assert pg.wait(10)
    remove_placement_group(pg)
    with pytest.raises(ValueError, match="is removed"):     # as in Ray
        pg.wait(10)


def test_placement_group_table_reports_scheduling_stats(shutdown_only):
    """Ray's placement_group_table()["stats"]: attempts, state (FINISHED,
    NO_RESOURCES while the cluster is busy, INFEASIBLE when no node could
    ever hold it, REMOVED) and latencies."""
    from miniray.testing import wait_for_condition
    from miniray.util import placement_group, placement_group_table, remove_placement_group

    ray.init(num_cpus=2)
    first = placement_group([{"CPU": 2}])
    assert first.wait(30)
    stats = placement_group_table(first)["stats"]
    assert stats["scheduling_state"] == "FINISHED" and stats["scheduling_attempt"] == 1
    assert stats["end_to_end_creation_latency_ms"] > 0
    assert stats["scheduling_latency_ms"] > 0

    busy = placement_group([{"CPU": 2}])
    never = placement_group([{"CPU": 64}])

    def state(pg):
        return placement_group_table(pg)["stats"]["scheduling_state"]

    wait_for_condition(lambda: state(busy) == "NO_RESOURCES", timeout=20)
    wait_for_condition(lambda: state(never) == "INFEASIBLE", timeout=20)
    assert placement_group_table(busy)["stats"]["end_to_end_creation_latency_ms"] == 0
    remove_placement_group(first)
    assert busy.wait(30)
    after = placement_group_table(busy)["stats"]
    assert after["scheduling_state"] == "FINISHED" and after["scheduling_attempt"] >= 2
    remove_placement_group(never)
    wait_for_condition(lambda: state(never) == "REMOVED", timeout=20)
    remove_placement_group(busy)
