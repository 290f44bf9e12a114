"""Unit tests for miniray.raylet.resource_view: the resource deltas a raylet
sends the GCS and the cluster view it builds from the GCS's replies."""
from __future__ import annotations

from miniray.protocol import common_pb2, gcs_pb2
from miniray.raylet.resource_view import ClusterView, ResourceReport, delta

ME, A, B = b"m" * 28, b"a" * 28, b"b" * 28


def test_delta_names_changed_amounts_and_gone_names():
    assert delta({"CPU": 1.0}, {"CPU": 1.0}) == ({}, [])
    assert delta({"CPU": 0.0, "new": 1.0}, {"CPU": 1.0, "old": 2.0}) == \
        ({"CPU": 0.0, "new": 1.0}, ["old"])


def test_report_sends_whole_maps_first_then_changes():
    report = ResourceReport()
    available, total = {"CPU": 2.0}, {"CPU": 2.0}
    assert not report.unchanged(available, total)
    whole, avail, tot, snapshot = report.build(available, total)
    assert whole and avail == ({"CPU": 2.0}, []) and tot == ({"CPU": 2.0}, [])
    report.taken(snapshot)
    assert report.unchanged(available, total)
    available["CPU"] = 1.0                 # the scheduler's dict, changed in place
    assert not report.unchanged(available, total)
    whole, avail, tot, snapshot = report.build(available, total)
    assert not whole and avail == ({"CPU": 1.0}, []) and tot == ({}, [])
    # Not taken (the RPC failed): the next heartbeat sends it again.
    assert report.build(available, total)[1] == ({"CPU": 1.0}, [])
    report.taken(snapshot)
    report.reset()                         # the GCS restarted
    assert report.build(available, total)[0] is True


def node(node_id, alive=True, **available):
    return common_pb2.NodeInfo(node_id=node_id, ip="127.0.0.1", raylet_port=1,
                               alive=alive, resources_total={"CPU": 4.0},
                               resources_available=available)


def reply(version, *, nodes=(), changes=(), full=False, incarnation=b"i1"):
    return gcs_pb2.HeartbeatReply(nodes=nodes, changes=changes, full_view=full,
                                  view_version=version, gcs_incarnation=incarnation)


def test_view_applies_whole_views_then_deltas():
    view = ClusterView(ME)
    view.apply(reply(3, nodes=[node(ME, CPU=1.0), node(A, CPU=4.0, x=1.0)], full=True),
               now=1.0)
    assert set(view.nodes) == {A} and view.version == 3 and view.updated_at == 1.0
    change = gcs_pb2.NodeChange(node=common_pb2.NodeInfo(node_id=A, alive=True),
                                available=gcs_pb2.ResourceDelta(set={"CPU": 2.0},
                                                                removed=["x"]))
    view.apply(reply(5, changes=[change, gcs_pb2.NodeChange(node=node(B, CPU=1.0),
                                                              full=True)]))
    assert view.nodes[A].available == {"CPU": 2.0}
    assert view.nodes[B].available == {"CPU": 1.0} and view.version == 5
    # An older reply (a refresh answered before a heartbeat) changes nothing.
    view.apply(reply(4, changes=[gcs_pb2.NodeChange(node=node(A, alive=False))]))
    assert A in view.nodes and view.version == 5
    view.apply(reply(6, changes=[gcs_pb2.NodeChange(node=node(A, alive=False))]))
    assert set(view.nodes) == {B}


def test_view_asks_for_a_whole_one_when_a_delta_cannot_apply():
    view = ClusterView(ME)
    view.apply(reply(2, nodes=[node(A, CPU=4.0)], full=True))
    unknown = gcs_pb2.NodeChange(node=common_pb2.NodeInfo(node_id=B, alive=True),
                                 available=gcs_pb2.ResourceDelta(set={"CPU": 1.0}))
    view.apply(reply(3, changes=[unknown]))
    assert view.version == 0                   # the next heartbeat gets it whole
    view.apply(reply(4, nodes=[node(A), node(B)], full=True, incarnation=b"i2"))
    assert set(view.nodes) == {A, B} and view.incarnation == b"i2"
