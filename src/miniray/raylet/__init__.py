"""The raylet: one daemon per node.

Hosts the node's lease scheduler (which resource requests get a worker),
the worker pool (starting, reusing and reaping worker processes) and the
node's shared-memory object store. Owners (drivers and workers) ask it
for worker leases and for room in the store; it registers the node with
the GCS and heartbeats its available resources there. Its memory monitor
kills a leased worker when the node runs low on memory (memory_monitor.py).
"""
