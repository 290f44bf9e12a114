"""The dashboard: one process on the head node serving a live page, JSON
endpoints under ``/api/`` and Prometheus metrics on ``/metrics``.

    python -m miniray.dashboard --gcs-address H:P [--host 127.0.0.1] [--port 8265]

Started by ``node.start_head`` beside the GCS (``init()``, ``miniray start
--head``); it dies with the cluster. It owns no state of its own: every
request reads the GCS (and, for node figures, each raylet) over gRPC with
the cluster's token, through ``source.ClusterSource``, which caches each
answer for about a second so many open pages cost the GCS little.

- ``server.py``: the HTTP server (standard library), routing, the token
  check for ``/api/`` and ``/metrics``.
- ``source.py``: gRPC reads of the GCS and raylets.
- ``views.py``: pure functions turning those replies into JSON-ready
  records (the field names of ``miniray.util.state``), paging, summaries
  and the timeline.
- ``prometheus.py``: the ``/metrics`` collector.
- ``static/``: the page (HTML, CSS, JS; no build step, nothing fetched
  from elsewhere).
"""
