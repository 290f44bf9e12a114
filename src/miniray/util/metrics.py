"""User metrics with Ray's API (``ray.util.metrics``): ``Counter``,
``Gauge`` and ``Histogram``.

Recording (``inc``/``set``/``observe``) only updates this process's values
under a lock. A background thread reports them to the GCS every
``METRICS_REPORT_INTERVAL_S`` (2 s) once the process is connected to a
cluster; the head's dashboard exports them on ``/metrics`` as
``miniray_<name>``, with the metric's tags plus ``WorkerId``, ``NodeId``
and ``Component`` labels (see docs/observability.md). Metrics with one
name share their values within a process, as in Ray.
"""
from __future__ import annotations

import bisect
import logging
import math
import os
import re
import threading
import warnings
from typing import Any, Dict, List, Optional, Tuple, Union

from miniray.common import config

log = logging.getLogger("miniray")

__all__ = ["Counter", "Gauge", "Histogram"]

# Prometheus' metric name syntax (names outside it are discarded, as Ray does).
_VALID_METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_GAUGE, _COUNTER, _HISTOGRAM = "gauge", "counter", "histogram"


def _is_invalid_metric_name(name: str) -> bool:
    if not isinstance(name, str):
        raise TypeError(f"The metric name must be a str, got {type(name)}.")
    if len(name) == 0:
        raise ValueError("Empty name is not allowed. Please provide a metric name.")
    if not _VALID_METRIC_NAME_RE.match(name):
        warnings.warn(
            f"Invalid metric name: {name}. Metric will be discarded and data will not "
            "be collected or published. Metric names can only contain letters, "
            "numbers, _, and :. Metric names cannot start with numbers.", UserWarning)
        return True
    return False


class Metric:
    """The parent class of Counter, Gauge and Histogram."""

    _kind = _GAUGE

    def __init__(self, name: str, description: str = "",
                 tag_keys: Optional[Tuple[str, ...]] = None):
        self._discard_metric = _is_invalid_metric_name(name)
        self._name = name
        self._description = description
        self._default_tags: Dict[str, str] = {}
        self._tag_keys = tag_keys or tuple()
        if not isinstance(self._tag_keys, tuple):
            raise TypeError(f"tag_keys should be a tuple type, got: {type(self._tag_keys)}")
        for key in self._tag_keys:
            if not isinstance(key, str):
                raise TypeError(f"Tag keys must be str, got {type(key)}.")
        self._values: _Values | None = None

    def _register(self, boundaries: tuple = ()) -> None:
        if not self._discard_metric:
            self._values = _registry.values_for(
                self._name, self._kind, str(self._description), self._tag_keys, boundaries)

    def set_default_tags(self, default_tags: Dict[str, str]):
        """Tags used by every record call (those passed to it win);
        returns the metric itself."""
        for key, value in default_tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key}.")
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be str, got {type(value)}.")
        self._default_tags = default_tags
        return self

    def _record(self, value: Union[int, float], tags: Optional[Dict[str, str]] = None):
        if self._discard_metric:
            return
        final_tags = self._get_final_tags(tags)
        self._validate_tags(final_tags)
        self._values.record(tuple(final_tags[key] for key in self._tag_keys), value)

    def _get_final_tags(self, tags):
        if not tags:
            return self._default_tags
        for value in tags.values():
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be str, got {type(value)}.")
        return {**self._default_tags, **tags}

    def _validate_tags(self, final_tags) -> None:
        missing = [key for key in self._tag_keys if key not in final_tags]
        if missing:
            raise ValueError(f"Missing value for tag key(s): {','.join(missing)}.")

    @property
    def info(self) -> Dict[str, Any]:
        """The metric's name, description, tag keys and default tags."""
        return {"name": self._name, "description": self._description,
                "tag_keys": self._tag_keys, "default_tags": self._default_tags}


class Counter(Metric):
    """A cumulative metric that only increases (Prometheus' counter,
    exported as ``miniray_<name>_total``)."""

    _kind = _COUNTER

    def __init__(self, name: str, description: str = "",
                 tag_keys: Optional[Tuple[str, ...]] = None):
        super().__init__(name, description, tag_keys)
        self._register()

    def __reduce__(self):
        return self.__class__, (self._name, self._description, self._tag_keys)

    def inc(self, value: Union[int, float] = 1.0, tags: Dict[str, str] = None):
        """Increment the counter by ``value`` (default 1); ``tags`` override
        the default tags."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"value must be int or float, got {type(value)}.")
        if value <= 0:
            raise ValueError(f"value must be >0, got {value}")
        self._record(value, tags=tags)


class Gauge(Metric):
    """Keeps the last recorded value (Prometheus' gauge)."""

    _kind = _GAUGE

    def __init__(self, name: str, description: str = "",
                 tag_keys: Optional[Tuple[str, ...]] = None):
        super().__init__(name, description, tag_keys)
        self._register()

    def __reduce__(self):
        return Gauge, (self._name, self._description, self._tag_keys)

    def set(self, value: Optional[Union[int, float]], tags: Dict[str, str] = None):
        """Set the gauge to ``value`` (None: do nothing)."""
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"value must be int or float, got {type(value)}.")
        self._record(value, tags)


class Histogram(Metric):
    """Counts observations in buckets bounded by ``boundaries``
    (Prometheus' histogram)."""

    _kind = _HISTOGRAM

    def __init__(self, name: str, description: str = "",
                 boundaries: List[float] = None,
                 tag_keys: Optional[Tuple[str, ...]] = None):
        super().__init__(name, description, tag_keys)
        if boundaries is None or len(boundaries) == 0:
            raise ValueError(
                "boundaries argument should be provided when using the Histogram "
                "class. e.g., Histogram(\"name\", boundaries=[1.0, 2.0])")
        for i, boundary in enumerate(boundaries):
            if boundary <= 0:
                raise ValueError(
                    f"Invalid `boundaries` argument at index {i}, {boundaries}. Use "
                    "positive values for the arguments.")
        self.boundaries = boundaries
        self._register(tuple(sorted(set(float(b) for b in boundaries))))

    def __reduce__(self):
        return Histogram, (self._name, self._description, self.boundaries, self._tag_keys)

    def observe(self, value: Union[int, float], tags: Dict[str, str] = None):
        """Add ``value`` to its bucket."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"value must be int or float, got {type(value)}.")
        self._record(value, tags)

    @property
    def info(self):
        info = super().info
        info.update({"boundaries": self.boundaries})
        return info


# --- this process's values and their reporting ------------------------------------------
class _Values:
    """The values of one metric name in this process, by tag values."""

    def __init__(self, kind: str, description: str, tag_keys: tuple, boundaries: tuple):
        self.kind = kind
        self.description = description
        self.tag_keys = tag_keys
        self.boundaries = boundaries
        self.lock = threading.Lock()
        # counter/gauge: value; histogram: [bucket counts..., sum]
        self.series: dict[tuple, Any] = {}

    def record(self, tag_values: tuple, value: float) -> None:
        if not math.isfinite(value) and self.kind != _GAUGE:
            return
        with self.lock:
            if self.kind == _GAUGE:
                self.series[tag_values] = float(value)
            elif self.kind == _COUNTER:
                self.series[tag_values] = self.series.get(tag_values, 0.0) + value
            else:
                entry = self.series.get(tag_values)
                if entry is None:
                    entry = self.series[tag_values] = [0] * (len(self.boundaries) + 1) + [0.0]
                entry[bisect.bisect_left(self.boundaries, value)] += 1
                entry[-1] += value

    def snapshot(self) -> dict:
        with self.lock:
            if self.kind == _HISTOGRAM:
                return {k: list(v) for k, v in self.series.items()}
            return dict(self.series)


class _Registry:
    """Every metric name recorded in this process, and the thread that
    reports their values to the GCS."""

    def __init__(self):
        self._lock = threading.Lock()
        self._metrics: dict[str, _Values] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    def values_for(self, name: str, kind: str, description: str, tag_keys: tuple,
                   boundaries: tuple) -> _Values:
        with self._lock:
            known = self._metrics.get(name)
            if known is None or (known.kind, known.tag_keys, known.boundaries) != \
                    (kind, tag_keys, boundaries):
                if known is not None:
                    log.warning("metric %s redefined (as a %s with tag keys %s): its "
                                "previous values are dropped", name, kind, tag_keys)
                known = self._metrics[name] = _Values(kind, description, tag_keys,
                                                      boundaries)
            self._ensure_reporter()
            return known

    def records(self) -> list:
        """This process's metrics as MetricRecord protos."""
        from miniray.protocol import gcs_pb2
        types = {_GAUGE: gcs_pb2.METRIC_GAUGE, _COUNTER: gcs_pb2.METRIC_COUNTER,
                 _HISTOGRAM: gcs_pb2.METRIC_HISTOGRAM}
        with self._lock:
            metrics = list(self._metrics.items())
        records = []
        for name, values in metrics:
            record = gcs_pb2.MetricRecord(
                name=name, description=values.description, type=types[values.kind],
                tag_keys=values.tag_keys, boundaries=values.boundaries)
            for tag_values, value in values.snapshot().items():
                if values.kind == _HISTOGRAM:
                    record.series.add(tag_values=tag_values, bucket_counts=value[:-1],
                                      sum=value[-1])
                else:
                    record.series.add(tag_values=tag_values, value=value)
            records.append(record)
        return records

    def _ensure_reporter(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._report_forever,
                                        name="miniray-metrics", daemon=True)
        self._thread.start()

    def _report_forever(self) -> None:
        pid = os.getpid()
        wake = threading.Event()
        while pid == os.getpid():
            wake.wait(config.METRICS_REPORT_INTERVAL_S)
            try:
                self.report_once()
            except Exception as exc:
                log.debug("reporting metrics failed: %s", exc)

    def report_once(self) -> bool:
        """Send this process's values to the GCS now; False when not
        connected to a cluster."""
        from miniray.core_worker.core_worker import DRIVER
        from miniray.core_worker.object_ref import core_worker
        from miniray.protocol import gcs_pb2
        worker = core_worker()
        if worker is None or getattr(worker, "node_id", None) is None:
            return False
        report = gcs_pb2.MetricsReport(
            reporter_id=bytes(worker.worker_id), node_id=bytes(worker.node_id),
            component="driver" if worker.mode == DRIVER else "core_worker",
            pid=os.getpid(), metrics=self.records())
        request = gcs_pb2.ReportMetricsRequest(report=report)

        async def send():
            return await worker.gcs.ReportMetrics(request, timeout=10)
        # Bounded: a loop stopped by shutdown() never runs the call.
        worker.run(send(), timeout=15)
        return True


_registry = _Registry()
