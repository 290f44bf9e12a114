"""User metrics (miniray.util.metrics) and the GCS's table of metric
reports (gcs/metrics_table.py), without sockets."""
from __future__ import annotations

import pickle
import warnings

import pytest

from miniray.common.validation import InvalidArgument
from miniray.gcs.metrics_table import MetricsTable, check_report
from miniray.protocol import gcs_pb2
from miniray.util import metrics
from miniray.util.metrics import Counter, Gauge, Histogram


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test records into a registry of its own, which reports nowhere."""
    registry = metrics._Registry()
    monkeypatch.setattr(registry, "_ensure_reporter", lambda: None)
    monkeypatch.setattr(metrics, "_registry", registry)
    return registry


def records(registry) -> dict:
    return {r.name: r for r in registry.records()}


def test_validation_errors_are_rays():
    with pytest.raises(ValueError, match="Empty name is not allowed"):
        Counter("")
    with pytest.raises(TypeError, match="tag_keys should be a tuple type"):
        Counter("c", tag_keys=["a"])
    with pytest.raises(TypeError, match="Tag keys must be str"):
        Gauge("g", tag_keys=(1,))
    counter = Counter("c", tag_keys=("a", "b"))
    with pytest.raises(ValueError, match="Unrecognized tag key x"):
        counter.set_default_tags({"x": "1"})
    with pytest.raises(TypeError, match="Tag values must be str"):
        counter.set_default_tags({"a": 1})
    with pytest.raises(ValueError, match=r"Missing value for tag key\(s\): a,b\."):
        counter.inc()
    with pytest.raises(ValueError, match="value must be >0"):
        counter.inc(0, tags={"a": "1", "b": "2"})
    with pytest.raises(TypeError, match="value must be int or float"):
        counter.inc("1", tags={"a": "1", "b": "2"})
    with pytest.raises(TypeError, match="Tag values must be str"):
        counter.inc(tags={"a": 1, "b": "2"})
    with pytest.raises(ValueError, match="boundaries argument should be provided"):
        Histogram("h")
    with pytest.raises(ValueError, match="Use positive values"):
        Histogram("h", boundaries=[1, 0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bad = Counter("1-bad name")
    assert "Invalid metric name" in str(caught[0].message)
    bad.inc()                                   # discarded, as in Ray


def test_values_by_tags_with_defaults(fresh_registry):
    counter = Counter("requests", "served", tag_keys=("route", "code"))
    assert counter.set_default_tags({"code": "200"}) is counter
    counter.inc(tags={"route": "/a"})
    counter.inc(2.5, tags={"route": "/a"})
    counter.inc(tags={"route": "/b", "code": "500"})
    gauge = Gauge("temperature").set_default_tags({})
    gauge.set(3)
    gauge.set(1.5)
    gauge.set(None)                             # a no-op, as in Ray
    hist = Histogram("latency", boundaries=[0.1, 1.0])
    for value in (0.05, 0.1, 0.5, 7):
        hist.observe(value)
    found = records(fresh_registry)
    series = {tuple(s.tag_values): s.value for s in found["requests"].series}
    assert series == {("/a", "200"): 3.5, ("/b", "500"): 1.0}
    assert found["requests"].type == gcs_pb2.METRIC_COUNTER
    assert found["requests"].tag_keys == ["route", "code"]
    assert [s.value for s in found["temperature"].series] == [1.5]
    (h,) = found["latency"].series
    assert list(h.bucket_counts) == [2, 1, 1] and h.sum == pytest.approx(7.65)
    assert list(found["latency"].boundaries) == [0.1, 1.0]
    check_report(gcs_pb2.MetricsReport(reporter_id=b"w" * 28, component="core_worker",
                                       metrics=fresh_registry.records()))


def test_metrics_with_one_name_share_values_and_pickle_as_ray(fresh_registry):
    Counter("shared", tag_keys=("k",)).inc(tags={"k": "v"})
    again = pickle.loads(pickle.dumps(Counter("shared", tag_keys=("k",))))
    again.inc(tags={"k": "v"})
    assert [s.value for s in records(fresh_registry)["shared"].series] == [2.0]
    assert again.info == {"name": "shared", "description": "", "tag_keys": ("k",),
                          "default_tags": {}}
    hist = pickle.loads(pickle.dumps(Histogram("h", "d", [1.0], ("a",))))
    assert hist.info["boundaries"] == [1.0]


def report(reporter: bytes, node: bytes = b"n" * 28, name="m"):
    record = gcs_pb2.MetricRecord(name=name, type=gcs_pb2.METRIC_GAUGE)
    record.series.add(value=1)
    return gcs_pb2.MetricsReport(reporter_id=reporter, node_id=node,
                                 component="core_worker", metrics=[record])


def test_table_keeps_latest_report_per_process_and_forgets():
    table = MetricsTable(ttl_s=10)
    table.report(report(b"a"), now=0)
    table.report(report(b"b", node=b"x" * 28), now=1)
    table.report(report(b"a", name="newer"), now=5)
    assert [r.metrics[0].name for r in table.latest(now=6)] == ["m", "newer"]
    assert [r.reporter_id for r in table.latest(now=12)] == [b"a"]     # b silent 11 s
    table.report(report(b"c", node=b"x" * 28), now=12)
    table.forget_node(b"x" * 28)
    table.forget(b"a")
    assert table.latest(now=12) == [] and len(table) == 0
    bounded = MetricsTable(ttl_s=10, max_reporters=2)
    for i in range(3):
        bounded.report(report(b"%d" % i), now=i)
    assert [r.reporter_id for r in bounded.latest(now=3)] == [b"1", b"2"]


@pytest.mark.parametrize("mutate", [
    lambda r: setattr(r, "reporter_id", b""),
    lambda r: setattr(r, "component", "gcs"),
    lambda r: setattr(r.metrics[0], "name", "bad name"),
    lambda r: r.metrics[0].tag_keys.append("k"),                # series lacks the value
    lambda r: (setattr(r.metrics[0], "type", gcs_pb2.METRIC_HISTOGRAM),
               r.metrics[0].boundaries.extend([2.0, 1.0])),
    lambda r: setattr(r.metrics[0], "type", gcs_pb2.METRIC_HISTOGRAM),   # no buckets
])
def test_malformed_reports_are_refused(mutate):
    bad = report(b"a")
    check_report(bad)
    mutate(bad)
    with pytest.raises(InvalidArgument):
        check_report(bad)
