"""Unit tests for miniray.raylet.cluster_policy (which node serves a lease request)."""
from __future__ import annotations

import pytest

from miniray.raylet.cluster_policy import (DEFAULT, NODE_AFFINITY, SPREAD, ClusterPolicy,
                                           Decision, NodeView, load)

PLACEMENT_GROUP = 3          # scheduled like DEFAULT by this policy

LOCAL = b"node-local"
A = b"node-a"
B = b"node-b"
C = b"node-c"
MISSING = b"node-gone"


def view(node_id: bytes, total: dict, available: dict | None = None) -> NodeView:
    return NodeView(node_id, f"{node_id.decode()}:1234", dict(total),
                    dict(total if available is None else available))


def cluster(*views: NodeView) -> dict[bytes, NodeView]:
    return {v.node_id: v for v in views}


def pick(nodes, needed, kind=DEFAULT, **kw) -> Decision:
    return ClusterPolicy(LOCAL).pick(needed, kind, nodes, **kw)


# --- load ------------------------------------------------------------------------------

def test_load_is_fraction_used_of_most_used_needed_resource():
    node = view(A, {"CPU": 4, "GPU": 2}, {"CPU": 3, "GPU": 0.5})
    assert load(node, {"CPU": 1}) == pytest.approx(0.25)
    assert load(node, {"GPU": 1}) == pytest.approx(0.75)
    assert load(node, {"CPU": 1, "GPU": 1}) == pytest.approx(0.75)


def test_load_falls_back_to_cpu_for_resources_the_node_lacks():
    node = view(A, {"CPU": 4}, {"CPU": 1})
    assert load(node, {"custom": 1}) == pytest.approx(0.75)
    assert load(view(B, {"memory": 10}), {"custom": 1}) == 0.0


# --- DEFAULT (and placement-group kind, which behaves the same) ------------------------

@pytest.mark.parametrize("kind", [DEFAULT, PLACEMENT_GROUP])
def test_default_keeps_work_local_while_under_half_loaded(kind):
    nodes = cluster(view(LOCAL, {"CPU": 4}, {"CPU": 3}),      # 25% used
                    view(A, {"CPU": 4}))                       # idle
    assert pick(nodes, {"CPU": 1}, kind) == Decision(LOCAL)


@pytest.mark.parametrize("kind", [DEFAULT, PLACEMENT_GROUP])
def test_default_picks_least_loaded_fitting_node_once_local_is_half_loaded(kind):
    nodes = cluster(view(LOCAL, {"CPU": 4}, {"CPU": 2}),      # 50%: no longer preferred
                    view(A, {"CPU": 4}, {"CPU": 1}),          # 75%
                    view(B, {"CPU": 4}, {"CPU": 3}),          # 25%
                    view(C, {"CPU": 8}, {"CPU": 1}))          # 87.5%
    assert pick(nodes, {"CPU": 1}, kind) == Decision(B)


def test_default_skips_nodes_whose_available_resources_do_not_fit():
    nodes = cluster(view(LOCAL, {"CPU": 4}, {"CPU": 0.5}),
                    view(A, {"CPU": 8}, {"CPU": 1}),           # 87.5% but fits
                    view(B, {"CPU": 8}, {"CPU": 0.5}))         # doesn't fit now
    assert pick(nodes, {"CPU": 1}) == Decision(A)


def test_default_prefers_local_on_equal_load():
    nodes = cluster(view(A, {"CPU": 4}, {"CPU": 2}),
                    view(LOCAL, {"CPU": 4}, {"CPU": 2}))
    assert pick(nodes, {"CPU": 1}) == Decision(LOCAL)


def test_default_load_considers_only_the_requested_resources():
    # Local is GPU-saturated, but a CPU-only request doesn't care.
    nodes = cluster(view(LOCAL, {"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 0}),
                    view(A, {"CPU": 4, "GPU": 1}))
    assert pick(nodes, {"CPU": 1}) == Decision(LOCAL)
    assert pick(nodes, {"GPU": 1}) == Decision(A)


@pytest.mark.parametrize("kind", [DEFAULT, PLACEMENT_GROUP])
def test_default_queues_locally_when_local_is_feasible_but_nothing_is_free(kind):
    nodes = cluster(view(LOCAL, {"CPU": 2}, {"CPU": 0}),
                    view(A, {"CPU": 8}, {"CPU": 0}))
    assert pick(nodes, {"CPU": 1}, kind) == Decision(LOCAL)


def test_default_queues_on_least_loaded_feasible_node_when_local_is_infeasible():
    nodes = cluster(view(LOCAL, {"CPU": 1}),
                    view(A, {"CPU": 4, "GPU": 2}, {"CPU": 0, "GPU": 0}),     # 100%
                    view(B, {"CPU": 4, "GPU": 4}, {"CPU": 0, "GPU": 0.5}))   # 87.5%
    assert pick(nodes, {"GPU": 1}) == Decision(B)


def test_default_works_without_the_local_node_in_the_view():
    nodes = cluster(view(A, {"CPU": 4}, {"CPU": 1}), view(B, {"CPU": 4}, {"CPU": 3}))
    assert pick(nodes, {"CPU": 1}) == Decision(B)


@pytest.mark.parametrize("kind", [DEFAULT, SPREAD, PLACEMENT_GROUP])
def test_infeasible_everywhere_is_no_node_but_not_unschedulable(kind):
    nodes = cluster(view(LOCAL, {"CPU": 4}), view(A, {"CPU": 8}))
    decision = pick(nodes, {"GPU": 1}, kind)
    assert decision.node_id is None
    assert not decision.unschedulable
    assert "GPU" in decision.reason
    assert pick(nodes, {"CPU": 16}, kind).node_id is None


def test_infeasible_on_empty_cluster():
    decision = pick({}, {"CPU": 1})
    assert decision.node_id is None and not decision.unschedulable


def test_custom_resource_only_on_one_node_routes_there():
    nodes = cluster(view(LOCAL, {"CPU": 4}),
                    view(A, {"CPU": 4}),
                    view(B, {"CPU": 4, "accelerator": 1}))
    assert pick(nodes, {"CPU": 1, "accelerator": 1}) == Decision(B)
    # ... even when it is busy right now: the request waits there.
    busy = cluster(view(LOCAL, {"CPU": 4}),
                   view(B, {"CPU": 4, "accelerator": 1}, {"CPU": 4, "accelerator": 0}))
    assert pick(busy, {"accelerator": 1}) == Decision(B)


def test_zero_amounts_are_ignored():
    nodes = cluster(view(LOCAL, {"CPU": 4}))
    assert pick(nodes, {"CPU": 1, "GPU": 0}) == Decision(LOCAL)


# --- SPREAD ----------------------------------------------------------------------------

def test_spread_rotates_over_nodes_that_fit():
    nodes = cluster(view(C, {"CPU": 4}), view(LOCAL, {"CPU": 4}),
                    view(A, {"CPU": 4}), view(B, {"CPU": 1}))   # B can't take CPU=2
    policy = ClusterPolicy(LOCAL)
    picks = [policy.pick({"CPU": 2}, SPREAD, nodes).node_id for _ in range(6)]
    assert B not in picks
    assert set(picks[:3]) == {A, C, LOCAL}           # each fitting node once per round
    assert picks[3:] == picks[:3]                     # then the same rotation again


def test_spread_prefers_nodes_with_room_now():
    nodes = cluster(view(LOCAL, {"CPU": 4}, {"CPU": 0}),
                    view(A, {"CPU": 4}),
                    view(B, {"CPU": 4}))
    policy = ClusterPolicy(LOCAL)
    picks = [policy.pick({"CPU": 1}, SPREAD, nodes).node_id for _ in range(4)]
    assert LOCAL not in picks
    assert set(picks) == {A, B}


def test_spread_rotates_over_feasible_nodes_when_none_has_room():
    nodes = cluster(view(LOCAL, {"CPU": 4}, {"CPU": 0}),
                    view(A, {"CPU": 4}, {"CPU": 0}),
                    view(B, {"GPU": 1}))                       # never fits
    policy = ClusterPolicy(LOCAL)
    picks = [policy.pick({"CPU": 1}, SPREAD, nodes).node_id for _ in range(4)]
    assert set(picks) == {LOCAL, A}
    assert picks[0] != picks[1]


# --- NODE_AFFINITY ---------------------------------------------------------------------

def test_hard_affinity_to_a_node_that_fits_goes_there_even_if_busy():
    nodes = cluster(view(LOCAL, {"CPU": 4}), view(A, {"CPU": 2}, {"CPU": 0}))
    assert pick(nodes, {"CPU": 1}, NODE_AFFINITY, target=A) == Decision(A)


def test_hard_affinity_to_a_missing_node_is_unschedulable():
    nodes = cluster(view(LOCAL, {"CPU": 4}))
    decision = pick(nodes, {"CPU": 1}, NODE_AFFINITY, target=MISSING)
    assert decision.node_id is None
    assert decision.unschedulable
    assert MISSING.hex() in decision.reason
    assert "not alive" in decision.reason


def test_hard_affinity_to_a_node_that_cannot_fit_is_unschedulable():
    nodes = cluster(view(LOCAL, {"CPU": 4, "GPU": 1}), view(A, {"CPU": 4}))
    decision = pick(nodes, {"GPU": 1}, NODE_AFFINITY, target=A)
    assert decision.node_id is None
    assert decision.unschedulable
    assert A.hex() in decision.reason
    assert "cannot fit" in decision.reason


def test_soft_affinity_to_a_missing_node_falls_back_to_default():
    nodes = cluster(view(LOCAL, {"CPU": 4}), view(A, {"CPU": 4}))
    assert pick(nodes, {"CPU": 1}, NODE_AFFINITY, target=MISSING, soft=True) \
        == Decision(LOCAL)


def test_soft_affinity_to_a_node_that_cannot_fit_falls_back_to_default():
    nodes = cluster(view(LOCAL, {"CPU": 4}), view(A, {"CPU": 4}),
                    view(B, {"CPU": 4, "GPU": 1}))
    assert pick(nodes, {"GPU": 1}, NODE_AFFINITY, target=A, soft=True) == Decision(B)


def test_soft_affinity_with_no_feasible_node_is_not_unschedulable():
    nodes = cluster(view(LOCAL, {"CPU": 4}))
    decision = pick(nodes, {"GPU": 1}, NODE_AFFINITY, target=MISSING, soft=True)
    assert decision.node_id is None
    assert not decision.unschedulable


def test_soft_affinity_to_a_node_that_fits_still_goes_there():
    nodes = cluster(view(LOCAL, {"CPU": 4}), view(A, {"CPU": 4}, {"CPU": 0}))
    assert pick(nodes, {"CPU": 1}, NODE_AFFINITY, target=A, soft=True) == Decision(A)
