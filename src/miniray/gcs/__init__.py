"""The GCS (global control service), a process on the head node.

Owns cluster metadata: node membership and liveness, jobs, the function
table and an internal KV. Raylets register and heartbeat to it; drivers
register jobs and export functions; workers fetch functions and job
configs. Its tables are written to a sqlite3 file in the session
directory (storage.py); a supervisor (supervisor.py) restarts the server
if it dies, and the new one reloads them.
"""
