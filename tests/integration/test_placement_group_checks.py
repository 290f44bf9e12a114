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
