"""The GCS (global control service), a process on the head node.

Owns cluster metadata: node membership and liveness, jobs, the function
table and an internal KV. Raylets register and heartbeat to it; drivers
register jobs and export functions; workers fetch functions and job
configs. State is in memory: a GCS restart is out of scope.
"""
