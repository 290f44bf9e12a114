"""The dashboard's pure parts without sockets: JSON views and paging
(dashboard/views.py), the token check (dashboard/server.py) and the
Prometheus families (dashboard/prometheus.py), parsed back with
prometheus_client's text parser."""
from __future__ import annotations

import dataclasses

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from miniray.common.ids import JobID, NodeID, TaskID, WorkerID
from miniray.dashboard import prometheus, views
from miniray.dashboard.server import token_ok
from miniray.dashboard.source import TaskSnapshot
from miniray.gcs.task_events import latest_status
from miniray.protocol import common_pb2, gcs_pb2

JOB = JobID.from_int(1)
NODE = NodeID.from_random()


def event(name="f", states=(gcs_pb2.RUNNING, gcs_pb2.FINISHED), attempt=0, task_id=None,
          start_ns=1_000_000_000, kind=common_pb2.NORMAL_TASK, pid=7):
    e = gcs_pb2.TaskEvent(task_id=task_id or TaskID.from_random(), attempt=attempt,
                          job_id=JOB, name=name, func_or_class_name=name, type=kind,
                          node_id=NODE, worker_id=WorkerID.from_random(), worker_pid=pid)
    for i, status in enumerate(states):
        e.changes.add(status=status, time_ns=start_ns + i * 2_000_000)
    return e


def snapshot(events, dropped=0):
    return TaskSnapshot(events, dropped, [latest_status(e) for e in events])


def families(collected) -> dict:
    """name -> parsed family, through the text format and its parser."""
    class One:
        def collect(self):
            return list(collected)
    from prometheus_client.registry import CollectorRegistry
    registry = CollectorRegistry(auto_describe=False)
    registry.register(One())
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


# --- paging and tasks -------------------------------------------------------------------
def test_page_args_bounds():
    assert views.page_args({}) == (views.DEFAULT_LIMIT, 0)
    assert views.page_args({"limit": "5", "offset": "10"}) == (5, 10)
    for bad in ({"limit": "-1"}, {"offset": "-2"}, {"limit": "x"},
                {"limit": str(views.MAX_LIMIT + 1)}):
        with pytest.raises(ValueError):
            views.page_args(bad)


def test_tasks_view_filters_and_pages_without_converting_everything():
    events = [event("square") for _ in range(30)] + \
             [event("Big.method", states=(gcs_pb2.RUNNING,)) for _ in range(5)] + \
             [event("boom", states=(gcs_pb2.RUNNING, gcs_pb2.FAILED))]
    snap = snapshot(events, dropped=3)
    page = views.tasks_view(snap, {"limit": "10", "offset": "25"})
    assert page["total"] == 36 and len(page["tasks"]) == 10 and page["num_dropped"] == 3
    assert page["tasks"][0]["task_id"] == events[25].task_id.hex()
    running = views.tasks_view(snap, {"state": "RUNNING"})
    assert running["total"] == 5 and {t["name"] for t in running["tasks"]} == {"Big.method"}
    assert views.tasks_view(snap, {"name": "big."})["total"] == 5       # any case
    failed = views.tasks_view(snap, {"state": "FAILED"})["tasks"]
    assert [t["name"] for t in failed] == ["boom"]
    assert views.tasks_view(snap, {"job_id": JobID.from_int(2).hex()})["total"] == 0
    with pytest.raises(ValueError):
        views.tasks_view(snap, {"state": "NOT_A_STATE"})


def test_task_record_has_the_state_api_field_names():
    from miniray.util.state import TaskState
    record = views.task_record(event("g"))
    names = {f.name for f in dataclasses.fields(TaskState)}
    assert set(record) <= names, set(record) - names
    assert record["state"] == "FINISHED" and record["start_time_ms"] == 1000
    assert record["end_time_ms"] == 1002 and record["worker_pid"] == 7


def test_summary_counts_the_latest_attempt_of_each_task():
    retried = TaskID.from_random()
    events = [event("f", states=(gcs_pb2.FAILED,), task_id=retried, attempt=0),
              event("f", task_id=retried, attempt=1),
              event("f"), event("A.m", kind=common_pb2.ACTOR_TASK,
                                states=(gcs_pb2.RUNNING,))]
    summary = views.tasks_summary(snapshot(events))["cluster"]
    assert summary["summary"]["f"]["state_counts"] == {"FINISHED": 2}
    assert summary["state_counts"] == {"FINISHED": 2, "RUNNING": 1}
    assert (summary["total_tasks"], summary["total_actor_tasks"]) == (2, 1)
    assert views.task_counts(snapshot(events)) == {("FINISHED", "f", "1"): 1,
                                                   ("FINISHED", "f", "0"): 1,
                                                   ("RUNNING", "A.m", "0"): 1}
    capped = views.tasks_summary(snapshot(events), max_names=1)["cluster"]
    assert list(capped["summary"]) == ["f"] and capped["num_functions"] == 2


def test_timeline_is_chrome_trace_slices_newest_last():
    events = [event("a", start_ns=3_000_000_000), event("b", start_ns=1_000_000_000),
              event("pending", states=(gcs_pb2.PENDING_NODE_ASSIGNMENT,)),
              event("bad", states=(gcs_pb2.RUNNING, gcs_pb2.FAILED),
                    start_ns=2_000_000_000)]
    trace = views.timeline(snapshot(events))
    assert [e["name"] for e in trace] == ["b", "bad", "a"]
    assert all(e["ph"] == "X" and e["dur"] == 2000.0 for e in trace)
    assert trace[1]["args"]["state"] == "FAILED" and trace[0]["tid"] == "Worker 7"
    assert [e["name"] for e in views.timeline(snapshot(events), limit=1)] == ["a"]


# --- nodes, actors, objects ---------------------------------------------------------------
def node_info(alive=True, head=True):
    return common_pb2.NodeInfo(node_id=NodeID.from_random(), ip="127.0.0.1",
                               raylet_port=1, alive=alive, is_head=head,
                               resources_total={"CPU": 4.0},
                               resources_available={"CPU": 1.0},
                               object_store_memory=1000)


def raylet_report(node_id: bytes):
    from miniray.object_store.policy import StoreStats
    from miniray.raylet.node_metrics import node_report
    stats = StoreStats(capacity=1000, used=250, num_objects=3, num_in_memory=3,
                       num_spilled=1, spilled_bytes=40, num_evicted_total=0,
                       num_spilled_total=1, num_restored_total=0)
    return node_report(node_id, stats, num_workers=2)


def test_node_records_merge_raylet_stats_and_metric_reports():
    from miniray.protocol import raylet_pb2
    head, dead = node_info(), node_info(alive=False, head=False)
    stats = {head.node_id: raylet_pb2.GetNodeStatsReply(
        resources_total={"CPU": 4.0}, resources_available={"CPU": 3.0}, num_workers=5,
        store_capacity=1000, store_used=300, store_num_objects=4)}
    records = views.node_records([dead, head], stats, [raylet_report(head.node_id)])
    assert [r["state"] for r in records] == ["ALIVE", "DEAD"]
    live = records[0]
    assert live["resources_available"] == {"CPU": 3.0} and live["num_workers"] == 5
    assert live["object_store_used"] == 300 and live["object_store_spilled"] == 40
    assert live["mem_total"] > 0 and live["cpu_percent"] is not None
    assert records[1]["resources_available"] == {}
    status = views.cluster_status(gcs_pb2.GetAllNodesReply(nodes=[head, dead]), stats, 1)
    assert status["resources_used"] == {"CPU": 1.0} and status["num_nodes_dead"] == 1
    objects = views.objects_view(records, None, "no RPC for it", {})
    assert objects["objects"] == [] and objects["stores"][0]["used"] == 300
    assert "no RPC for it" in objects["note"]
    listed = [{"object_id": "a", "object_size": 5}, {"object_id": "b", "object_size": 50}]
    objects = views.objects_view(records, listed, "", {"limit": "1"})
    assert [o["object_id"] for o in objects["objects"]] == ["b"]
    assert (objects["total"], objects["total_size"], objects["note"]) == (2, 55, "")


def test_actors_view_alive_first_with_counts():
    actors = [common_pb2.ActorInfo(actor_id=b"%d" % i * 16, class_name=c, state=s)
              for i, (c, s) in enumerate([("A", common_pb2.DEAD), ("B", common_pb2.ALIVE),
                                          ("A", common_pb2.ALIVE)])]
    view = views.actors_view(actors, {"limit": "2"})
    assert [a["state"] for a in view["actors"]] == ["ALIVE", "ALIVE"]
    assert view["total"] == 3 and view["state_counts"] == {"DEAD": 1, "ALIVE": 2}
    assert views.actors_view(actors, {"class_name": "a"})["total"] == 2
    from miniray.util.state import ActorState
    assert set(view["actors"][0]) <= {f.name for f in dataclasses.fields(ActorState)}


# --- auth ---------------------------------------------------------------------------------
def test_token_check_accepts_header_or_cookie():
    assert token_ok(None, None, None)                       # auth disabled
    assert token_ok("s3cret-token-123456", "Bearer s3cret-token-123456", None)
    assert token_ok("s3cret-token-123456", None, "a=b; miniray_token=s3cret-token-123456")
    assert not token_ok("s3cret-token-123456", None, None)
    assert not token_ok("s3cret-token-123456", "Bearer wrong", "miniray_token=wrong")
    assert not token_ok("s3cret-token-123456", "Basic s3cret-token-123456", None)
    assert not token_ok("s3cret-token-123456", None, "bad cookie \x00;;")


# --- Prometheus -----------------------------------------------------------------------------
def test_system_families_parse_with_rays_labels():
    counts = {("FINISHED", "f", "0"): 3, ("RUNNING", "g", "0"): 1}
    actors = [common_pb2.ActorInfo(class_name="A", state=common_pb2.ALIVE)] * 2
    head = node_info()
    found = families([*prometheus.task_families(counts), *prometheus.actor_families(actors),
                      *prometheus.resource_families([head], {})])
    tasks = {(s.labels["State"], s.labels["Name"], s.labels["IsRetry"]): s.value
             for s in found["miniray_tasks"].samples}
    assert tasks == {("FINISHED", "f", "0"): 3.0, ("RUNNING", "g", "0"): 1.0}
    assert [(s.labels, s.value) for s in found["miniray_actors"].samples] == \
        [({"State": "ALIVE", "Name": "A"}, 2.0)]
    resources = {s.labels["State"]: s.value for s in found["miniray_resources"].samples}
    assert resources == {"USED": 3.0, "AVAILABLE": 1.0}


def user_report(worker: bytes, records, component="core_worker"):
    return gcs_pb2.MetricsReport(reporter_id=worker, node_id=NODE, component=component,
                                 metrics=records)


def test_user_metrics_keep_their_type_tags_and_process():
    w1, w2 = WorkerID.from_random(), WorkerID.from_random()
    counter = gcs_pb2.MetricRecord(name="requests", description="served",
                                   type=gcs_pb2.METRIC_COUNTER, tag_keys=["route", "my-key"])
    counter.series.add(tag_values=["/a", "x"], value=5)
    hist = gcs_pb2.MetricRecord(name="latency", type=gcs_pb2.METRIC_HISTOGRAM,
                                boundaries=[0.1, 1.0])
    hist.series.add(tag_values=[], bucket_counts=[1, 2, 3], sum=9.5)
    other = gcs_pb2.MetricRecord(name="requests", type=gcs_pb2.METRIC_GAUGE)   # conflict
    other.series.add(value=1)
    shadow = gcs_pb2.MetricRecord(name="tasks", type=gcs_pb2.METRIC_GAUGE)      # system name
    shadow.series.add(value=99)
    reports = [user_report(w1, [counter, hist, shadow]), user_report(w2, [other]),
               raylet_report(NODE)]
    found = families(prometheus.report_families(reports, {NODE: "10.0.0.1"}))
    (sample,) = [s for s in found["miniray_requests"].samples if s.name.endswith("_total")]
    assert found["miniray_requests"].type == "counter" and sample.value == 5
    assert sample.labels == {"route": "/a", "my_key": "x", "WorkerId": w1.hex(),
                             "NodeId": NODE.hex(), "Component": "core_worker"}
    buckets = {s.labels["le"]: s.value for s in found["miniray_latency"].samples
               if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 1.0, "1.0": 3.0, "+Inf": 6.0}
    assert "miniray_tasks" not in found
    cpu = found["miniray_node_cpu_utilization"].samples[0]
    assert cpu.labels == {"InstanceId": NODE.hex(), "ip": "10.0.0.1"}
    store = {s.labels["Location"]: s.value for s in found["miniray_object_store_memory"].samples}
    assert store == {"MMAP_SHM": 250.0, "SPILLED": 40.0}
    assert prometheus.label_name("9lives") == "_9lives"


def test_views_of_ten_thousand_tasks_stay_one_page():
    import time
    events = [event(f"f{i % 40}", start_ns=1_000_000_000 + i * 1000) for i in range(10_000)]
    start = time.monotonic()
    snap = snapshot(events)
    page = views.tasks_view(snap, {"limit": "50", "offset": "2700", "name": "f1"})
    summary = views.tasks_summary(snap)["cluster"]
    trace = views.timeline(snap, limit=2000)
    assert len(page["tasks"]) == 50 and page["total"] == 2750      # f1, f10..f19
    assert summary["total_tasks"] == 10_000 and len(summary["summary"]) == 40
    assert len(trace) == 2000
    assert time.monotonic() - start < 10          # generous: a loaded 2-core machine
