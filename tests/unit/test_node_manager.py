"""Unit tests for miniray.gcs.node_manager (membership and liveness, explicit clock)."""
from __future__ import annotations

import pytest

from miniray.common.ids import NodeID
from miniray.gcs.node_manager import NodeManager
from miniray.protocol import common_pb2, gcs_pb2

TIMEOUT = 10.0


def node_info(node_id: NodeID, cpus: float = 4.0, **kw) -> common_pb2.NodeInfo:
    return common_pb2.NodeInfo(node_id=node_id, ip="10.0.0.1", raylet_port=7000,
                               resources_total={"CPU": cpus},
                               resources_available={"CPU": cpus}, **kw)


def beat(manager, node_id, available, now, total=None) -> bool:
    """A heartbeat carrying the node's whole maps (its first to a GCS)."""
    return manager.heartbeat(
        node_id, gcs_pb2.ResourceDelta(set=available),
        None if total is None else gcs_pb2.ResourceDelta(set=total),
        whole=True, now=now)


def delta(**changes) -> gcs_pb2.ResourceDelta:
    """Names set to amounts; a name set to None went away."""
    return gcs_pb2.ResourceDelta(
        set={k: v for k, v in changes.items() if v is not None},
        removed=[k for k, v in changes.items() if v is None])


@pytest.fixture
def manager() -> NodeManager:
    return NodeManager(death_timeout_s=TIMEOUT)


def ids(nodes) -> set[bytes]:
    return {bytes(n.node_id) for n in nodes}


def test_register_stores_an_alive_copy(manager):
    node_id = NodeID.from_random()
    info = node_info(node_id, is_head=True)
    manager.register(info, now=0.0)
    [stored] = manager.all_nodes()
    assert stored is not info
    assert not info.alive                       # the caller's message is untouched
    assert stored.alive
    assert stored.node_id == node_id
    assert stored.is_head
    assert dict(stored.resources_total) == {"CPU": 4.0}
    assert stored.start_time > 0
    assert manager.alive_nodes() == [stored]


def test_heartbeat_updates_available_and_keeps_total(manager):
    node_id = NodeID.from_random()
    manager.register(node_info(node_id), now=0.0)
    assert beat(manager, node_id, {"CPU": 1.5, "memory": 100.0}, now=1.0) is True
    [stored] = manager.all_nodes()
    assert dict(stored.resources_available) == {"CPU": 1.5, "memory": 100.0}
    assert dict(stored.resources_total) == {"CPU": 4.0}


def test_heartbeat_replaces_available_entirely(manager):
    node_id = NodeID.from_random()
    manager.register(node_info(node_id), now=0.0)
    beat(manager, node_id, {"CPU": 1.0, "GPU": 1.0}, now=1.0)
    beat(manager, node_id, {"CPU": 2.0}, now=2.0)
    assert dict(manager.all_nodes()[0].resources_available) == {"CPU": 2.0}


def test_heartbeat_updates_total_when_given(manager):
    node_id = NodeID.from_random()
    manager.register(node_info(node_id), now=0.0)
    assert beat(manager, node_id, {"CPU": 8.0}, now=1.0,
                total={"CPU": 8.0, "GPU": 2.0})
    [stored] = manager.all_nodes()
    assert dict(stored.resources_total) == {"CPU": 8.0, "GPU": 2.0}
    assert dict(stored.resources_available) == {"CPU": 8.0}


def test_heartbeat_from_unknown_node_is_rejected(manager):
    assert beat(manager, NodeID.from_random(), {"CPU": 1.0}, now=0.0) is False
    assert manager.all_nodes() == []


def test_check_timeouts_marks_silent_nodes_dead_exactly_once(manager):
    quiet, chatty = NodeID.from_random(), NodeID.from_random()
    manager.register(node_info(quiet), now=0.0)
    manager.register(node_info(chatty), now=0.0)
    beat(manager, chatty, {"CPU": 4.0}, now=8.0)

    assert manager.check_timeouts(now=TIMEOUT) == []        # not *longer* than timeout yet
    assert manager.check_timeouts(now=TIMEOUT + 0.5) == [quiet]
    assert manager.check_timeouts(now=TIMEOUT + 1.0) == []  # reported only once

    assert ids(manager.alive_nodes()) == {chatty}
    assert ids(manager.all_nodes()) == {quiet, chatty}
    dead = next(n for n in manager.all_nodes() if n.node_id == quiet)
    assert not dead.alive
    assert dead.end_time > 0
    assert dict(dead.resources_available) == {}

    assert manager.check_timeouts(now=8.0 + TIMEOUT + 1) == [chatty]
    assert manager.alive_nodes() == []


def test_heartbeat_postpones_the_deadline(manager):
    node_id = NodeID.from_random()
    manager.register(node_info(node_id), now=0.0)
    for t in (5.0, 10.0, 15.0, 20.0):
        assert beat(manager, node_id, {"CPU": 4.0}, now=t)
        assert manager.check_timeouts(now=t + TIMEOUT - 1) == []
    assert manager.check_timeouts(now=20.0 + TIMEOUT + 1) == [node_id]


def test_heartbeat_from_dead_node_is_rejected(manager):
    node_id = NodeID.from_random()
    manager.register(node_info(node_id), now=0.0)
    manager.check_timeouts(now=TIMEOUT + 1)
    assert beat(manager, node_id, {"CPU": 4.0}, now=TIMEOUT + 2) is False
    assert manager.alive_nodes() == []
    assert dict(manager.all_nodes()[0].resources_available) == {}
    assert manager.check_timeouts(now=100 * TIMEOUT) == []


def test_mark_dead_directly(manager):
    node_id = NodeID.from_random()
    manager.register(node_info(node_id), now=0.0)
    assert manager.mark_dead(node_id) is True
    assert manager.mark_dead(node_id) is False
    assert manager.mark_dead(NodeID.from_random()) is False
    assert manager.check_timeouts(now=TIMEOUT + 1) == []


def test_alive_and_all_nodes(manager):
    nodes = [NodeID.from_random() for _ in range(3)]
    for i, node_id in enumerate(nodes):
        manager.register(node_info(node_id, cpus=i + 1), now=0.0)
    manager.mark_dead(nodes[1])
    assert ids(manager.all_nodes()) == set(nodes)
    assert ids(manager.alive_nodes()) == {nodes[0], nodes[2]}


def test_health_checks_declare_a_node_dead_after_consecutive_failures():
    from miniray.gcs.node_manager import HealthChecks
    checks = HealthChecks(threshold=3)
    node = b"n" * 28
    assert not checks.record(node, False)
    assert not checks.record(node, False)
    assert not checks.record(node, True)          # an answer resets the count
    assert not checks.record(node, False)
    assert not checks.record(node, False)
    assert checks.record(node, False)             # third in a row: dead
    assert not checks.record(node, False)         # counted afresh after that


def test_silent_since_lists_nodes_not_heard_from():
    from miniray.common.ids import NodeID
    from miniray.gcs.node_manager import NodeManager
    from miniray.protocol import common_pb2
    nodes = NodeManager(5.0)
    quiet, chatty = NodeID.from_random(), NodeID.from_random()
    nodes.register(common_pb2.NodeInfo(node_id=quiet), now=0.0)
    nodes.register(common_pb2.NodeInfo(node_id=chatty), now=0.0)
    beat(nodes, chatty, {}, now=8.0)
    assert nodes.silent_since(5.0) == [quiet]


def test_heartbeat_views_are_deltas():
    from miniray.protocol import common_pb2
    nodes = NodeManager(death_timeout_s=5)
    ids = [NodeID.from_random() for _ in range(3)]
    for node_id in ids:
        nodes.register(common_pb2.NodeInfo(node_id=bytes(node_id),
                                           resources_total={"CPU": 1}), now=0)
    start = nodes.version
    assert nodes.changes_since(start) == []
    assert len(nodes.changes_since(0)) == 3
    # A heartbeat that changes nothing costs no delta.
    beat(nodes, ids[0], {}, now=1)
    after_first = nodes.version
    beat(nodes, ids[0], {}, now=2)
    assert nodes.version == after_first
    beat(nodes, ids[1], {"CPU": 0.5}, now=2)
    assert [c.node.node_id for c in nodes.changes_since(after_first)] == [bytes(ids[1])]
    nodes.mark_dead(ids[2])
    changed = nodes.changes_since(after_first)
    assert {c.node.node_id for c in changed} == {bytes(ids[1]), bytes(ids[2])}
    assert [c.node.alive for c in changed if c.node.node_id == bytes(ids[2])] == [False]


def test_heartbeat_deltas_change_only_what_they_name(manager):
    node_id = NodeID.from_random()
    manager.register(node_info(node_id), now=0.0)
    beat(manager, node_id, {"CPU": 4.0, "GPU": 1.0, "bundle_group_x": 1000.0}, now=1.0)
    assert manager.heartbeat(node_id, delta(CPU=3.0, bundle_group_x=None), None, now=2.0)
    assert dict(manager.get(node_id).resources_available) == {"CPU": 3.0, "GPU": 1.0}
    assert manager.available(node_id) == {"CPU": 3.0, "GPU": 1.0}
    manager.heartbeat(node_id, delta(), delta(GPU=2.0), now=3.0)
    assert manager.total(node_id) == {"CPU": 4.0, "GPU": 2.0}
    assert dict(manager.get(node_id).resources_total) == {"CPU": 4.0, "GPU": 2.0}


def test_views_carry_only_the_names_that_changed(manager):
    a, b = NodeID.from_random(), NodeID.from_random()
    manager.register(node_info(a), now=0.0)
    manager.register(node_info(b), now=0.0)
    names = {f"GPU_group_{i}_pg": 1.0 for i in range(100)}
    manager.heartbeat(a, delta(**names), delta(**names), now=1.0)
    seen = manager.version
    manager.heartbeat(a, delta(CPU=2.0, GPU_group_7_pg=0.0), None, now=2.0)
    manager.heartbeat(a, delta(GPU_group_3_pg=None), delta(GPU_group_3_pg=None), now=3.0)
    [change] = manager.changes_since(seen)
    assert not change.full and change.node.node_id == bytes(a)
    assert len(change.node.resources_available) == 0       # no whole maps
    assert dict(change.available.set) == {"CPU": 2.0, "GPU_group_7_pg": 0.0}
    assert list(change.available.removed) == ["GPU_group_3_pg"]
    assert list(change.total.removed) == ["GPU_group_3_pg"] and not change.total.set
    # A node that joined (or died) after the asker's version comes whole.
    c = NodeID.from_random()
    manager.register(node_info(c), now=4.0)
    [whole] = [x for x in manager.changes_since(seen) if x.node.node_id == bytes(c)]
    assert whole.full and dict(whole.node.resources_total) == {"CPU": 4.0}


def test_history_of_gone_names_is_compacted(manager):
    node_id = NodeID.from_random()
    manager.register(node_info(node_id), now=0.0)
    early = manager.version
    for i in range(3000):           # bundles come and go, each with its own name
        manager.heartbeat(node_id, delta(**{f"b_{i}": 1.0}), None, now=1.0)
        manager.heartbeat(node_id, delta(**{f"b_{i}": None}), None, now=1.0)
    state = manager._nodes[node_id]
    assert len(state.changed) < 3000
    [change] = manager.changes_since(early)        # too old: the node whole
    assert change.full and dict(change.node.resources_available) == {"CPU": 4.0}
    recent = manager.version
    manager.heartbeat(node_id, delta(b_x=1.0), None, now=2.0)
    [change] = manager.changes_since(recent)
    assert not change.full and dict(change.available.set) == {"b_x": 1.0}


def test_taken_resources_count_until_the_node_reports(manager):
    node_id = NodeID.from_random()
    manager.register(node_info(node_id), now=0.0)
    version = manager.version
    manager.take(bytes(node_id), {"CPU": 3.0, "other": 1.0})
    assert manager.available(node_id) == {"CPU": 1.0}
    assert manager.version == version          # raylets' views do not change
    # The node's next heartbeat brings its own figure, even if unchanged.
    manager.heartbeat(node_id, delta(), None, now=1.0)
    assert manager.available(node_id) == {"CPU": 4.0}
    manager.take(bytes(node_id), {"CPU": 3.0})
    manager.heartbeat(node_id, delta(CPU=1.5), None, now=2.0)
    assert manager.available(node_id) == {"CPU": 1.5}
