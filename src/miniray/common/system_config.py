"""Ray's ``_system_config`` (``init(_system_config=...)``, and a test
cluster's ``add_node(_system_config=...)``), mapped onto miniray's knobs.

miniray's knobs are ``config`` constants that each process reads from
``MINIRAY_<NAME>`` environment variables at import. A ``_system_config``
becomes those variables in the environment of the processes the call
starts (GCS, raylet, and through the raylet every worker), and, for a
driver's ``init``, the constants of the driver itself. Ray's keys that
have no counterpart here are named in a warning and otherwise ignored (Ray
has hundreds of internal knobs; a program that sets one still runs). Pure:
no I/O beyond the warning.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable

# Ray key -> (miniray config name, value in Ray's unit -> value in ours).
KEYS: dict[str, tuple[str, Callable]] = {
    "max_direct_call_object_size": ("MAX_INLINE_OBJECT_BYTES", int),
    "max_pending_lease_requests_per_scheduling_category":
        ("MAX_PENDING_LEASES_PER_KEY", int),
    "idle_worker_killing_time_threshold_ms":
        ("IDLE_WORKER_TIMEOUT_S", lambda ms: float(ms) / 1000),
    "worker_register_timeout_seconds": ("WORKER_REGISTER_TIMEOUT_S", float),
    "worker_maximum_startup_concurrency": ("WORKER_MAXIMUM_STARTUP_CONCURRENCY", int),
    "health_check_period_ms": ("HEALTH_CHECK_PERIOD_S", lambda ms: float(ms) / 1000),
    "health_check_timeout_ms": ("HEALTH_CHECK_TIMEOUT_S", lambda ms: float(ms) / 1000),
    "health_check_failure_threshold": ("HEALTH_CHECK_FAILURE_THRESHOLD", int),
    "gcs_rpc_server_reconnect_timeout_s": ("GCS_RECONNECT_TIMEOUT_S", float),
    "memory_usage_threshold": ("MEMORY_USAGE_THRESHOLD", float),
    "memory_monitor_refresh_ms": ("MEMORY_MONITOR_REFRESH_MS", int),
    "maximum_gcs_destroyed_actor_cached_count":
        ("MAXIMUM_GCS_DESTROYED_ACTOR_CACHED_COUNT", int),
    "preload_python_modules": ("PRELOAD_PYTHON_MODULES", list),
    "record_ref_creation_sites": ("RECORD_REF_CREATION_SITES", bool),
}


def to_settings(system_config: dict | None) -> dict[str, object]:
    """miniray config name -> value for the keys miniray knows; a
    ValueError names a key whose value has the wrong type."""
    if not system_config:
        return {}
    if not isinstance(system_config, dict):
        raise TypeError(f"_system_config must be a dict, not {type(system_config).__name__}")
    settings: dict[str, object] = {}
    unknown = []
    for key, value in system_config.items():
        if key not in KEYS:
            unknown.append(key)
            continue
        name, convert = KEYS[key]
        if name == "PRELOAD_PYTHON_MODULES":
            if not isinstance(value, (list, tuple)) or \
                    not all(isinstance(m, str) for m in value):
                raise ValueError("_system_config['preload_python_modules'] must be a "
                                 "list of module names")
            settings[name] = convert(value)
            continue
        if convert is bool:
            if not isinstance(value, (bool, int)):
                raise ValueError(f"_system_config[{key!r}] must be a boolean, not {value!r}")
            settings[name] = bool(value)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"_system_config[{key!r}] must be a number, not {value!r}")
        settings[name] = convert(value)
    if unknown:
        warnings.warn(f"_system_config keys that miniray does not have are ignored: "
                      f"{', '.join(sorted(map(str, unknown)))}", stacklevel=3)
    return settings


ENV_VAR = "MINIRAY_SYSTEM_CONFIG"


def to_env(settings: dict[str, object]) -> dict[str, str]:
    """The settings as MINIRAY_<NAME> environment variables, and all of
    them as JSON in ENV_VAR (the GCS hands that to drivers that connect)."""
    env = {f"MINIRAY_{name}": json.dumps(value) if isinstance(value, list)
           else str(int(value)) if isinstance(value, bool) else str(value)
           for name, value in settings.items()}
    if settings:
        env[ENV_VAR] = json.dumps(settings, sort_keys=True)
    return env


def from_env(environ) -> str:
    """The JSON of ENV_VAR if it is a valid settings object, else ""."""
    text = environ.get(ENV_VAR, "")
    return text if text and adopt(text) else ""


def adopt(text: str) -> dict[str, object]:
    """The settings of a cluster's JSON (AddJobReply.system_config) that a
    connecting driver takes: only names this table maps to, so a newer or
    damaged head cannot set arbitrary constants."""
    try:
        settings = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(settings, dict):
        return {}
    known = {name for name, _ in KEYS.values()}
    return {name: value for name, value in settings.items() if name in known}
