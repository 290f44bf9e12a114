"""Tunable constants. Environment variables named MINIRAY_<NAME> override
them (read once at import), so every process of a cluster agrees."""
from __future__ import annotations

import json
import os


def _env(name: str, default, cast=None):
    value = os.environ.get("MINIRAY_" + name)
    if value is None:
        return default
    return (cast or type(default))(value)


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes")


# Record where each reference was created (a stack walk per put and call):
# shown by `miniray memory` and in lost-object errors. Ray's
# RAY_record_ref_creation_sites=1 (or _system_config) turns it on too.
RECORD_REF_CREATION_SITES = (_env("RECORD_REF_CREATION_SITES", False, _flag)
                             or _flag(os.environ.get("RAY_record_ref_creation_sites", "")))
# Objects at most this big live in their owner's memory and are inlined in
# task specs and replies; bigger ones go to the shared-memory store.
MAX_INLINE_OBJECT_BYTES = _env("MAX_INLINE_OBJECT_BYTES", 100 * 1024)
# Default object store capacity as a fraction of the machine's memory.
OBJECT_STORE_MEMORY_FRACTION = _env("OBJECT_STORE_MEMORY_FRACTION", 0.3)
# Lease requests an owner keeps outstanding per resource shape (a leased
# worker runs one task at a time; more queued tasks ask for more leases).
MAX_PENDING_LEASES_PER_KEY = _env("MAX_PENDING_LEASES_PER_KEY", 10)
# A lease runs queued tasks of its shape one after another for at most this
# long, then goes back to the raylet so other shapes and owners get a turn.
LEASE_REUSE_S = _env("LEASE_REUSE_S", 0.5)
# An owner keeps an idle lease this long before returning it to the raylet.
IDLE_LEASE_TIMEOUT_S = _env("IDLE_LEASE_TIMEOUT_S", 0.2)
# Idle workers above the node's CPU count are reaped after this long.
IDLE_WORKER_TIMEOUT_S = _env("IDLE_WORKER_TIMEOUT_S", 2.0)
# A raylet starts at most this many worker processes at once (0: the
# smaller of its CPUs and the machine's cores, Ray's default). Ray's
# RAY_worker_maximum_startup_concurrency is honoured too.
WORKER_MAXIMUM_STARTUP_CONCURRENCY = _env(
    "WORKER_MAXIMUM_STARTUP_CONCURRENCY",
    int(os.environ.get("RAY_worker_maximum_startup_concurrency", 0)))
# A worker process that has not registered with its raylet this long after
# it started is killed (its start slot is needed). Ray's
# RAY_worker_register_timeout_seconds is honoured too.
WORKER_REGISTER_TIMEOUT_S = _env(
    "WORKER_REGISTER_TIMEOUT_S",
    float(os.environ.get("RAY_worker_register_timeout_seconds", 60)))
# Modules every worker imports when it starts (Ray's preload_python_modules,
# a JSON list); one that fails to import is reported in the worker's log.
PRELOAD_PYTHON_MODULES = _env("PRELOAD_PYTHON_MODULES", [], json.loads)
# Raylet -> GCS heartbeat period, and how long until a silent node is dead.
HEARTBEAT_PERIOD_S = _env("HEARTBEAT_PERIOD_S", 0.5)
NODE_DEATH_TIMEOUT_S = _env("NODE_DEATH_TIMEOUT_S", 5.0)
# A raylet whose resources have not changed and that queues nothing sends a
# heartbeat only this often (a keepalive): an idle node costs the GCS a
# quarter of a busy one. Always well within NODE_DEATH_TIMEOUT_S.
IDLE_HEARTBEAT_PERIOD_S = min(_env("IDLE_HEARTBEAT_PERIOD_S", 2.0), NODE_DEATH_TIMEOUT_S / 3)
# How long raylets, workers and drivers keep retrying a GCS that is down
# (restarting) before giving up: raylets then shut down, calls fail.
GCS_RECONNECT_TIMEOUT_S = _env("GCS_RECONNECT_TIMEOUT_S", 60.0)
# The GCS probes every raylet this often; a node failing this many probes in
# a row (each allowed the timeout) is dead. A killed raylet refuses at once:
# detected in about threshold x period. (Ray: 3 s, 10 s, 5.)
HEALTH_CHECK_PERIOD_S = _env("HEALTH_CHECK_PERIOD_S", 1.0)
HEALTH_CHECK_TIMEOUT_S = _env("HEALTH_CHECK_TIMEOUT_S", 5.0)
HEALTH_CHECK_FAILURE_THRESHOLD = _env("HEALTH_CHECK_FAILURE_THRESHOLD", 3)
# A store reservation (ReserveObject) not sealed within this many seconds,
# plus one per 100 MB, is released (its writer hung or lied about itself).
OBJECT_RESERVATION_TIMEOUT_S = _env("OBJECT_RESERVATION_TIMEOUT_S", 60.0)
# Memory protection (Ray's memory monitor): every MEMORY_MONITOR_REFRESH_MS
# (0: never) each raylet checks its node's memory and, above this fraction of
# it, kills a leased worker (retriable tasks first, the newest first). Ray's
# RAY_memory_usage_threshold and RAY_memory_monitor_refresh_ms are honoured too.
MEMORY_USAGE_THRESHOLD = _env(
    "MEMORY_USAGE_THRESHOLD", float(os.environ.get("RAY_memory_usage_threshold", 0.95)))
MEMORY_MONITOR_REFRESH_MS = _env(
    "MEMORY_MONITOR_REFRESH_MS", int(os.environ.get("RAY_memory_monitor_refresh_ms", 250)))
# The GCS keeps this many dead actors (for the state API and handles that
# ask later), forgetting the longest dead first. Ray's
# RAY_maximum_gcs_destroyed_actor_cached_count is honoured too.
MAXIMUM_GCS_DESTROYED_ACTOR_CACHED_COUNT = _env(
    "MAXIMUM_GCS_DESTROYED_ACTOR_CACHED_COUNT",
    int(os.environ.get("RAY_maximum_gcs_destroyed_actor_cached_count", 100_000)))
# The GCS keeps this many removed placement groups (for the state API),
# forgetting the longest removed first.
MAXIMUM_GCS_REMOVED_PLACEMENT_GROUP_COUNT = _env(
    "MAXIMUM_GCS_REMOVED_PLACEMENT_GROUP_COUNT", 10_000)
# Task events (the state API's list_tasks, the timeline): each process
# buffers its tasks' state changes and sends them to the GCS every
# TASK_EVENTS_REPORT_INTERVAL_MS (0: no events); a buffer past
# TASK_EVENTS_MAX_BUFFER drops its oldest; the GCS keeps the latest
# TASK_EVENTS_MAX_TASKS_IN_GCS task attempts. (Ray's names, defaults.)
TASK_EVENTS_REPORT_INTERVAL_MS = _env("TASK_EVENTS_REPORT_INTERVAL_MS", 1000)
TASK_EVENTS_MAX_BUFFER = _env("TASK_EVENTS_MAX_BUFFER", 100_000)
TASK_EVENTS_MAX_TASKS_IN_GCS = _env("TASK_EVENTS_MAX_TASKS_IN_GCS", 100_000)
# Python garbage collection for reference cycles that hold ObjectRefs
# (raylet/gc_policy.py): above HIGH_PLASMA_STORAGE_USAGE of its store a
# raylet asks every node for a GC (at most once per GLOBAL_GC_MIN_INTERVAL_S);
# a node collects in its workers and drivers at most once per
# LOCAL_GC_MIN_INTERVAL_S, and at least every LOCAL_GC_INTERVAL_S. Ray's
# names (RAY_high_plasma_storage_usage, ...) and defaults.
HIGH_PLASMA_STORAGE_USAGE = _env(
    "HIGH_PLASMA_STORAGE_USAGE", float(os.environ.get("RAY_high_plasma_storage_usage", 0.7)))
LOCAL_GC_MIN_INTERVAL_S = _env(
    "LOCAL_GC_MIN_INTERVAL_S", float(os.environ.get("RAY_local_gc_min_interval_s", 10)))
GLOBAL_GC_MIN_INTERVAL_S = _env(
    "GLOBAL_GC_MIN_INTERVAL_S", float(os.environ.get("RAY_global_gc_min_interval_s", 30)))
LOCAL_GC_INTERVAL_S = _env(
    "LOCAL_GC_INTERVAL_S", float(os.environ.get("RAY_local_gc_interval_s", 90 * 60)))
# Default number of retries of a task whose worker died.
DEFAULT_MAX_RETRIES = 3
# Each owner keeps the specs of finished tasks whose returns it may have to
# rebuild (lineage) up to this many bytes, evicting the oldest beyond it: a
# lost object whose lineage was evicted cannot be rebuilt. Ray's
# RAY_max_lineage_bytes is honoured too (default 1 GiB).
MAX_LINEAGE_BYTES = _env(
    "MAX_LINEAGE_BYTES", int(os.environ.get("RAY_max_lineage_bytes", 1 << 30)))
# A remote function or actor class whose pickled definition is bigger than
# this fails at .remote() with ValueError; above the warning size it warns
# (Ray's limits; Ray's FUNCTION_SIZE_ERROR_THRESHOLD variable is honoured too).
FUNCTION_SIZE_WARN_BYTES = 10**7
FUNCTION_SIZE_ERROR_BYTES = _env(
    "FUNCTION_SIZE_ERROR_BYTES", int(os.environ.get("FUNCTION_SIZE_ERROR_THRESHOLD", 10**8)))
# Where sessions (logs, spill files, the current cluster's address) live:
# this directory if set, else <tmp>/miniray-<uid>. Use it through
# common/paths.py: temp_root(), which checks it is private before use.
TEMP_DIR = _env("TEMP_DIR", "")
SHM_ROOT = _env("SHM_DIR", "/dev/shm")
DEFAULT_GCS_PORT = 6379
# The address this node's processes listen on and advertise. 127.0.0.1 keeps
# a cluster on one machine; set it (miniray start --node-ip-address) to an
# address the other machines can reach to span several.
NODE_IP = _env("NODE_IP", "127.0.0.1")
# Metrics (docs/observability.md): processes that record metrics (user
# metrics, a raylet's node figures) report them to the GCS every
# METRICS_REPORT_INTERVAL_S; the GCS forgets a reporter silent for
# METRICS_REPORT_TTL_S. The head's dashboard listens on DEFAULT_DASHBOARD_PORT
# (Ray's 8265), or the next free port.
METRICS_REPORT_INTERVAL_S = _env("METRICS_REPORT_INTERVAL_S", 2.0)
METRICS_REPORT_TTL_S = _env("METRICS_REPORT_TTL_S", 30.0)
DEFAULT_DASHBOARD_PORT = 8265
DEFAULT_DASHBOARD_HOST = "127.0.0.1"
# Runtime environments: a working_dir or py_modules package may be at most
# this big (packed); unused packages and pip environments on a node are
# deleted, oldest first, once the unused ones take more than the cache size.
RUNTIME_ENV_MAX_PACKAGE_BYTES = _env("RUNTIME_ENV_MAX_PACKAGE_BYTES", 500 * 1024 * 1024)
RUNTIME_ENV_CACHE_BYTES = _env("RUNTIME_ENV_CACHE_BYTES", 10 * 1024 ** 3)
RUNTIME_ENV_SETUP_TIMEOUT_S = _env("RUNTIME_ENV_SETUP_TIMEOUT_S", 600.0)
