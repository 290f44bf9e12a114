"""Unit tests for place_bundles, the pure placement decision for placement groups."""
from __future__ import annotations

import copy
import random

import pytest

from miniray.gcs.placement_groups import STRATEGIES, place_bundles

A, B, C, D = b"node-a", b"node-b", b"node-c", b"node-d"
TOL = 1e-9


def cpus(*amounts: float) -> list[dict]:
    return [{"CPU": a} for a in amounts]


def assert_sound(placement, bundles, nodes) -> None:
    """One known node per bundle, and no node's available resources over-committed."""
    assert len(placement) == len(bundles)
    assert all(n in nodes for n in placement)
    used: dict[bytes, dict] = {}
    for node, bundle in zip(placement, bundles):
        for k, v in bundle.items():
            used.setdefault(node, {})[k] = used.get(node, {}).get(k, 0.0) + v
    for node, demand in used.items():
        for k, v in demand.items():
            assert v <= nodes[node].get(k, 0.0) + TOL, (node, k, v, nodes[node])


# --- PACK / STRICT_PACK ----------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["PACK", "STRICT_PACK"])
def test_pack_puts_everything_on_one_node_when_one_fits_all(strategy):
    nodes = {A: {"CPU": 2}, B: {"CPU": 8, "GPU": 1}, C: {"CPU": 8}}
    bundles = [{"CPU": 2}, {"CPU": 2, "GPU": 1}, {"CPU": 3}]
    assert place_bundles(bundles, strategy, nodes) == [B, B, B]


def test_pack_spreads_over_as_few_nodes_as_possible_when_none_fits_all():
    nodes = {A: {"CPU": 2}, B: {"CPU": 2}, C: {"CPU": 2}, D: {"CPU": 2}}
    placement = place_bundles(cpus(1, 1, 1), "PACK", nodes)
    assert_sound(placement, cpus(1, 1, 1), nodes)
    assert len(set(placement)) == 2


def test_pack_fills_nodes_already_in_use_before_opening_another():
    nodes = {A: {"CPU": 1, "GPU": 1}, B: {"CPU": 4}}
    bundles = [{"GPU": 1}, {"CPU": 1}, {"CPU": 1}, {"CPU": 1}]
    placement = place_bundles(bundles, "PACK", nodes)
    assert placement == [A, A, B, B]


def test_pack_returns_none_when_bundles_cannot_be_placed_at_all():
    assert place_bundles(cpus(2, 2), "PACK", {A: {"CPU": 2}, B: {"CPU": 1}}) is None
    assert place_bundles([{"GPU": 1}], "PACK", {A: {"CPU": 8}}) is None


def test_strict_pack_returns_none_when_no_single_node_fits_all():
    nodes = {A: {"CPU": 2}, B: {"CPU": 2}}
    assert place_bundles(cpus(1, 1, 1), "STRICT_PACK", nodes) is None
    # ... although PACK can still place them across nodes
    assert_sound(place_bundles(cpus(1, 1, 1), "PACK", nodes), cpus(1, 1, 1), nodes)


def test_strict_pack_needs_all_resource_kinds_on_the_same_node():
    nodes = {A: {"CPU": 4}, B: {"GPU": 4}}
    assert place_bundles([{"CPU": 1}, {"GPU": 1}], "STRICT_PACK", nodes) is None


# --- SPREAD / STRICT_SPREAD ------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["SPREAD", "STRICT_SPREAD"])
def test_spread_uses_distinct_nodes_when_possible(strategy):
    nodes = {A: {"CPU": 4}, B: {"CPU": 4}, C: {"CPU": 4}}
    placement = place_bundles(cpus(1, 1, 1), strategy, nodes)
    assert sorted(placement) == [A, B, C]


def test_spread_skips_nodes_that_do_not_fit_the_bundle():
    nodes = {A: {"CPU": 4}, B: {"CPU": 4, "GPU": 1}, C: {"CPU": 4}}
    placement = place_bundles([{"GPU": 1}, {"CPU": 1}, {"CPU": 1}], "SPREAD", nodes)
    assert placement[0] == B
    assert len(set(placement)) == 3


def test_spread_reuses_nodes_when_there_are_more_bundles_than_nodes():
    nodes = {A: {"CPU": 4}, B: {"CPU": 4}}
    bundles = cpus(1, 1, 1, 1, 1)
    placement = place_bundles(bundles, "SPREAD", nodes)
    assert_sound(placement, bundles, nodes)
    assert set(placement) == {A, B}


def test_spread_reuses_a_node_when_the_fresh_ones_are_too_small():
    nodes = {A: {"CPU": 4}, B: {"CPU": 1}}
    placement = place_bundles(cpus(2, 2), "SPREAD", nodes)
    assert placement == [A, A]


def test_strict_spread_returns_none_when_fewer_nodes_than_bundles_fit():
    nodes = {A: {"CPU": 4}, B: {"CPU": 4}, C: {"CPU": 1}}
    assert place_bundles(cpus(2, 2, 2), "STRICT_SPREAD", nodes) is None
    assert place_bundles(cpus(1, 1, 1, 1), "STRICT_SPREAD", nodes) is None
    assert sorted(place_bundles(cpus(2, 2), "STRICT_SPREAD", nodes)) == [A, B]


# --- general ---------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_inputs_are_not_modified(strategy):
    nodes = {A: {"CPU": 4, "GPU": 1}, B: {"CPU": 2}, C: {"CPU": 3, "mem": 5.0}}
    bundles = [{"CPU": 1, "GPU": 1}, {"CPU": 1}]
    nodes_before, bundles_before = copy.deepcopy(nodes), copy.deepcopy(bundles)
    assert place_bundles(bundles, strategy, nodes) is not None
    assert nodes == nodes_before
    assert bundles == bundles_before


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_nodes_means_no_placement(strategy):
    assert place_bundles(cpus(1), strategy, {}) is None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fractional_amounts_add_up_exactly(strategy):
    nodes = {A: {"CPU": 1.0}, B: {"CPU": 1.0}, C: {"CPU": 1.0}}
    placement = place_bundles(cpus(0.1, 0.2, 0.3), strategy, nodes)
    assert_sound(placement, cpus(0.1, 0.2, 0.3), nodes)


@pytest.mark.parametrize("seed", range(20))
def test_random_placements_are_sound(seed):
    rng = random.Random(seed)
    for _ in range(50):
        nodes = {}
        for i in range(rng.randint(1, 5)):
            resources = {"CPU": float(rng.randint(0, 8))}
            if rng.random() < 0.4:
                resources["GPU"] = float(rng.randint(1, 4))
            if rng.random() < 0.2:
                resources["custom"] = rng.choice([0.5, 1.0, 2.0])
            nodes[bytes([i]) * 28] = resources
        bundles = []
        for _ in range(rng.randint(1, 6)):
            bundle = {"CPU": rng.choice([0.5, 1.0, 2.0, 3.0])}
            if rng.random() < 0.3:
                bundle["GPU"] = float(rng.randint(1, 2))
            if rng.random() < 0.1:
                bundle["custom"] = 0.5
            bundles.append(bundle)
        strategy = rng.choice(STRATEGIES)
        before = copy.deepcopy(nodes)

        placement = place_bundles(bundles, strategy, nodes)

        assert nodes == before
        if placement is None:
            continue
        assert_sound(placement, bundles, nodes)
        if strategy == "STRICT_PACK":
            assert len(set(placement)) == 1
        if strategy == "STRICT_SPREAD":
            assert len(set(placement)) == len(bundles)


# --- a greedy choice must not block a later bundle ---------------------------------
# A small bundle placed first could take the only node a later, larger bundle
# fits on; place_bundles places larger bundles first and backtracks.

def test_strict_spread_finds_the_assignment_that_exists():
    nodes = {A: {"CPU": 1, "GPU": 1}, B: {"CPU": 1}}
    assert place_bundles([{"CPU": 1}, {"GPU": 1}], "STRICT_SPREAD", nodes) == [B, A]


@pytest.mark.parametrize("strategy", ["PACK", "SPREAD"])
def test_soft_strategies_find_the_assignment_that_exists(strategy):
    nodes = {A: {"CPU": 2}, B: {"CPU": 1}}
    assert place_bundles(cpus(1, 2), strategy, nodes) == [B, A]
