"""``/metrics``: the cluster's metrics in Prometheus' text format, read
from the GCS at each scrape (a custom collector, no background thread).

System metrics carry Ray's names with ``miniray_`` for ``ray_``:

- ``miniray_tasks{State,Name,IsRetry}``: tasks by the state of their latest
  attempt (IsRetry "1" when it is a retry)
- ``miniray_actors{State,Name}``: actors by state and class
- ``miniray_resources{Name,State,InstanceId}``: logical resources per node,
  ``State`` USED or AVAILABLE
- ``miniray_object_store_memory{Location,InstanceId}``: MMAP_SHM or SPILLED
- ``miniray_node_cpu_utilization``, ``miniray_node_mem_used``,
  ``miniray_node_mem_total`` (and a few more) ``{InstanceId,ip}``, as each
  raylet reported them

User metrics (``miniray.util.metrics``) are exported as ``miniray_<name>``
with their tags plus ``WorkerId``, ``NodeId`` and ``Component``, one
series per process that recorded them.
"""
from __future__ import annotations

import logging
import re

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

from miniray.dashboard import views
from miniray.protocol import gcs_pb2

log = logging.getLogger("miniray.dashboard")

PREFIX = "miniray_"
SYSTEM_NAMES = {"tasks", "actors", "resources", "object_store_memory"}
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """A tag key as a valid Prometheus label name."""
    name = _LABEL_BAD.sub("_", key) or "_"
    return "_" + name if name[0].isdigit() else name


def _format_bound(bound: float) -> str:
    return repr(float(bound))


class ClusterCollector:
    """A prometheus_client collector over a ``source.ClusterSource``."""

    def __init__(self, source):
        self.source = source

    def describe(self):
        return []          # not known before a scrape: never collect at registration

    def collect(self):
        source = self.source
        yield from task_families(views.task_counts(source.tasks()))
        yield from actor_families(source.actors())
        nodes = source.nodes()
        yield from resource_families(nodes, source.node_stats())
        yield from report_families(source.metric_reports(),
                                   {n.node_id: n.ip for n in nodes})


def registry_for(source) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(source))
    return registry


def task_families(counts: dict):
    family = GaugeMetricFamily(PREFIX + "tasks", "Current number of tasks by the state of "
                               "their latest attempt.", labels=["State", "Name", "IsRetry"])
    for (state, name, is_retry), count in sorted(counts.items()):
        family.add_metric([state, name, is_retry], count)
    yield family


def actor_families(actors):
    counts: dict[tuple[str, str], int] = {}
    for actor in actors:
        key = (views.ACTOR_STATES.get(actor.state, "UNKNOWN"), actor.class_name)
        counts[key] = counts.get(key, 0) + 1
    family = GaugeMetricFamily(PREFIX + "actors", "Current number of actors by state "
                               "and class.", labels=["State", "Name"])
    for (state, name), count in sorted(counts.items()):
        family.add_metric([state, name], count)
    yield family


def resource_families(nodes, stats: dict):
    family = GaugeMetricFamily(PREFIX + "resources", "Logical resources of each node, "
                               "USED or AVAILABLE.", labels=["Name", "State", "InstanceId"])
    for node in nodes:
        if not node.alive:
            continue
        node_stats = stats.get(node.node_id)
        total = node_stats.resources_total if node_stats else node.resources_total
        available = node_stats.resources_available if node_stats \
            else node.resources_available
        for name in sorted(total):
            free = available.get(name, 0.0)
            family.add_metric([name, "USED", node.node_id.hex()],
                              max(0.0, total[name] - free))
            family.add_metric([name, "AVAILABLE", node.node_id.hex()], free)
    yield family


def report_families(reports, node_ips: dict):
    """Families from the processes' metric reports (raylets' node figures,
    user metrics), one family per name: a name reported with different
    types or tag keys keeps the first and drops the others."""
    families: dict[str, tuple] = {}     # name -> (family, (type, labels, boundaries))
    for report in reports:
        node_hex = report.node_id.hex()
        for metric in report.metrics:
            if metric.name in SYSTEM_NAMES and report.component != "raylet":
                continue        # a user metric may not shadow a system one
            keys = [label_name(k) for k in metric.tag_keys]
            if len(set(keys)) != len(keys) or (
                    metric.type == gcs_pb2.METRIC_HISTOGRAM and "le" in keys):
                continue        # not expressible as Prometheus labels
            if report.component == "raylet":
                extra = {"InstanceId": node_hex, "ip": node_ips.get(report.node_id, "")}
            else:
                extra = {"WorkerId": report.reporter_id.hex(), "NodeId": node_hex,
                         "Component": report.component}
            extra = {k: v for k, v in extra.items() if k not in keys}
            labels = keys + list(extra)
            signature = (metric.type, tuple(labels), tuple(metric.boundaries))
            known = families.get(metric.name)
            if known is None:
                known = families[metric.name] = (_new_family(metric, labels), signature)
            family, first = known
            if signature != first:
                continue
            for series in metric.series:
                _add(family, metric, list(series.tag_values) + list(extra.values()), series)
    return [f for f, *_ in families.values()]


def _new_family(metric, labels: list):
    """An empty family of ``metric``'s type."""
    name, help_text = PREFIX + metric.name, metric.description or metric.name
    if metric.type == gcs_pb2.METRIC_COUNTER:
        return CounterMetricFamily(name, help_text, labels=labels)
    if metric.type == gcs_pb2.METRIC_HISTOGRAM:
        return HistogramMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


def _add(family, metric, values: list, series) -> None:
    if metric.type == gcs_pb2.METRIC_HISTOGRAM:
        buckets, running = [], 0.0
        for bound, count in zip(list(metric.boundaries) + [float("inf")],
                                series.bucket_counts):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else _format_bound(bound),
                            running))
        family.add_metric(values, buckets, series.sum)
    else:
        family.add_metric(values, series.value)
