"""The GCS's table of metric reports (no I/O): the latest report of each
process that records metrics.

Drivers and workers report their user metrics (``miniray.util.metrics``)
and raylets their node's figures (CPU, memory, object store) every few
seconds with ``ReportMetrics``; each report replaces the reporter's
previous one. A reporter is forgotten when its process dies (the raylet
reports the death), when its node dies, or when it falls silent for
``ttl_s``. The dashboard reads the reports (``GetMetrics``) and exports
them for Prometheus.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict

from miniray.common.validation import MAX_NAME_LENGTH, InvalidArgument
from miniray.protocol import gcs_pb2

# Bounds on what one process may report, and on the table.
MAX_METRICS_PER_REPORT = 1_000
MAX_SERIES_PER_REPORT = 100_000
MAX_TAG_KEYS = 64
MAX_BOUNDARIES = 1_000
MAX_REPORTERS = 100_000
MAX_ID_BYTES = 64
MAX_TAG_VALUE_LENGTH = 1024
# Prometheus' metric name syntax (tag keys may be any printable text: the
# dashboard makes label names of them).
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
COMPONENTS = ("core_worker", "driver", "raylet")


def check_report(report: gcs_pb2.MetricsReport) -> None:
    """Raise InvalidArgument for a malformed or oversized report."""
    if not 0 < len(report.reporter_id) <= MAX_ID_BYTES or \
            len(report.node_id) > MAX_ID_BYTES:
        raise InvalidArgument("a metrics report needs a reporter_id (and node_id) of at "
                              f"most {MAX_ID_BYTES} bytes")
    if report.component not in COMPONENTS:
        raise InvalidArgument(f"component must be one of {', '.join(COMPONENTS)}")
    if len(report.metrics) > MAX_METRICS_PER_REPORT:
        raise InvalidArgument(f"more than {MAX_METRICS_PER_REPORT} metrics in one report")
    series = 0
    for metric in report.metrics:
        if len(metric.name) > MAX_NAME_LENGTH or not METRIC_NAME.match(metric.name):
            raise InvalidArgument(f"invalid metric name {metric.name[:80]!r}")
        if len(metric.description) > MAX_NAME_LENGTH:
            raise InvalidArgument(f"the description of {metric.name} is too long")
        if len(metric.tag_keys) > MAX_TAG_KEYS or len(set(metric.tag_keys)) != \
                len(metric.tag_keys) or not all(
                    k and k.isprintable() and len(k) <= MAX_NAME_LENGTH
                    for k in metric.tag_keys):
            raise InvalidArgument(f"invalid tag keys for {metric.name}")
        if len(metric.boundaries) > MAX_BOUNDARIES or \
                not all(math.isfinite(b) for b in metric.boundaries) or \
                list(metric.boundaries) != sorted(set(metric.boundaries)):
            raise InvalidArgument(f"invalid histogram boundaries for {metric.name}")
        series += len(metric.series)
        if series > MAX_SERIES_PER_REPORT:
            raise InvalidArgument(f"more than {MAX_SERIES_PER_REPORT} series in one report")
        buckets = len(metric.boundaries) + 1
        for s in metric.series:
            if len(s.tag_values) != len(metric.tag_keys) or \
                    any(len(v) > MAX_TAG_VALUE_LENGTH for v in s.tag_values):
                raise InvalidArgument(f"a series of {metric.name} does not match its "
                                      f"tag keys")
            if metric.type == gcs_pb2.METRIC_HISTOGRAM and len(s.bucket_counts) != buckets:
                raise InvalidArgument(f"a series of {metric.name} needs {buckets} buckets")


class MetricsTable:
    """The latest report of each reporter, oldest report first."""

    def __init__(self, ttl_s: float, max_reporters: int = MAX_REPORTERS):
        self.ttl_s = ttl_s
        self.max_reporters = max(1, max_reporters)
        self._reports: OrderedDict[bytes, tuple[float, gcs_pb2.MetricsReport]] = \
            OrderedDict()

    def __len__(self) -> int:
        return len(self._reports)

    def report(self, report: gcs_pb2.MetricsReport, now: float) -> None:
        self._reports.pop(report.reporter_id, None)
        self._reports[report.reporter_id] = (now, report)
        while len(self._reports) > self.max_reporters:
            self._reports.popitem(last=False)

    def forget(self, reporter_id: bytes) -> None:
        """A reporter whose process died."""
        self._reports.pop(reporter_id, None)

    def forget_node(self, node_id: bytes) -> None:
        """Every reporter of a node that died."""
        for key in [k for k, (_, r) in self._reports.items() if r.node_id == node_id]:
            del self._reports[key]

    def latest(self, now: float) -> list[gcs_pb2.MetricsReport]:
        """The live reports (silent ones past the TTL are dropped first)."""
        while self._reports:
            key, (when, _) = next(iter(self._reports.items()))
            if now - when <= self.ttl_s:
                break
            del self._reports[key]
        return [report for _, report in self._reports.values()]
