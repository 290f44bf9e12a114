"""This node's figures for the metrics the dashboard exports (Ray's names
without the ``ray_`` prefix; the dashboard adds ``miniray_``): CPU and
memory of the machine, and the object store's use. The raylet reports
them to the GCS every ``METRICS_REPORT_INTERVAL_S`` (``ReportMetrics``)."""
from __future__ import annotations

import os

import psutil

from miniray.protocol import gcs_pb2


def _gauge(name: str, description: str, value: float, tags: dict | None = None):
    tags = tags or {}
    record = gcs_pb2.MetricRecord(name=name, description=description,
                                  type=gcs_pb2.METRIC_GAUGE, tag_keys=list(tags))
    record.series.add(tag_values=list(tags.values()), value=float(value))
    return record


def node_report(node_id: bytes, store_stats, num_workers: int) -> gcs_pb2.MetricsReport:
    """The report of this node: ``store_stats`` is the store's StoreStats."""
    memory = psutil.virtual_memory()
    metrics = [
        _gauge("node_cpu_utilization", "Total CPU usage of the node, in percent.",
               psutil.cpu_percent(interval=None)),
        _gauge("node_cpu_count", "Total CPUs of the node.", psutil.cpu_count() or 0),
        _gauge("node_mem_used", "Memory used on the node (total - available), bytes.",
               memory.total - memory.available),
        _gauge("node_mem_available", "Memory available on the node, bytes.",
               memory.available),
        _gauge("node_mem_total", "Total memory of the node, bytes.", memory.total),
        _gauge("object_store_available_memory", "Free object store memory, bytes.",
               max(0, store_stats.capacity - store_stats.used)),
        _gauge("object_store_num_local_objects", "Objects in the node's store.",
               store_stats.num_objects),
        _gauge("num_workers", "Worker processes of the node.", num_workers),
    ]
    store = gcs_pb2.MetricRecord(
        name="object_store_memory", type=gcs_pb2.METRIC_GAUGE, tag_keys=["Location"],
        description="Object store memory by location (MMAP_SHM: in shared memory, "
                    "SPILLED: spilled to disk), bytes.")
    store.series.add(tag_values=["MMAP_SHM"], value=float(store_stats.used))
    store.series.add(tag_values=["SPILLED"], value=float(store_stats.spilled_bytes))
    metrics.append(store)
    return gcs_pb2.MetricsReport(reporter_id=node_id, node_id=node_id, component="raylet",
                                 pid=os.getpid(), metrics=metrics)
