"""``JobConfig``: settings of a job (one driver and everything it starts),
as in Ray's ``ray.job_config``. Pass it to ``init(job_config=...)``.

What a job config changes:

- ``ray_namespace``: the job's namespace (``init(namespace=...)`` wins);
- ``default_actor_lifetime``: the lifetime of actors created without
  ``lifetime=`` anywhere in the job ("non_detached", the default: they die
  with their owner; "detached": they live until killed);
- ``code_search_path``: directories put on ``sys.path`` of the job's workers,
  so modules there import by name in tasks and actors.

``metadata``, ``runtime_env`` and ``jvm_options`` are kept on the object
for compatibility and have no effect.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

__all__ = ["JobConfig"]

_LIFETIMES = ("detached", "non_detached")


class JobConfig:
    """The configuration of a job (Ray's ``ray.job_config.JobConfig``)."""

    def __init__(self, jvm_options: Optional[List[str]] = None,
                 code_search_path: Optional[List[str]] = None,
                 runtime_env: Optional[dict] = None, _client_job: bool = False,
                 metadata: Optional[dict] = None, ray_namespace: Optional[str] = None,
                 default_actor_lifetime: str = "non_detached",
                 _py_driver_sys_path: Optional[List[str]] = None):
        self.jvm_options = list(jvm_options or [])
        if code_search_path is not None and not isinstance(code_search_path, (list, tuple)):
            # A bare string would be read as a list of one-letter paths.
            raise TypeError("The type of code search path is incorrect: "
                            f"{type(code_search_path)}")
        self.code_search_path = list(code_search_path or [])
        self._client_job = _client_job
        self.metadata = dict(metadata or {})
        self.ray_namespace = ray_namespace
        self.set_runtime_env(runtime_env)
        self.set_default_actor_lifetime(default_actor_lifetime)
        self._py_driver_sys_path = list(_py_driver_sys_path or [])
        self.py_logging_config = None

    def set_metadata(self, key: str, value: str) -> None:
        """Set one metadata entry (overwriting an existing one)."""
        self.metadata[key] = value

    def set_runtime_env(self, runtime_env: Optional[Dict[str, Any]],
                        validate: bool = False) -> None:
        """Replace the job's runtime environment (not applied by miniray)."""
        self.runtime_env = runtime_env if runtime_env is not None else {}

    def set_py_logging_config(self, logging_config=None) -> None:
        self.py_logging_config = logging_config

    def set_ray_namespace(self, ray_namespace: str) -> None:
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        """"detached" or "non_detached" (the lifetime of actors created
        without ``lifetime=``)."""
        if default_actor_lifetime not in _LIFETIMES:
            raise ValueError(
                "Default actor lifetime must be one of `detached`, `non_detached`")
        self._default_actor_lifetime = default_actor_lifetime

    @property
    def default_actor_lifetime(self) -> str:
        return self._default_actor_lifetime

    @classmethod
    def from_json(cls, job_config_json: dict) -> "JobConfig":
        """A JobConfig from a dict with the constructor's keys (``client_job``
        and ``py_driver_sys_path`` without the underscore)."""
        return cls(jvm_options=job_config_json.get("jvm_options"),
                   code_search_path=job_config_json.get("code_search_path"),
                   runtime_env=job_config_json.get("runtime_env"),
                   metadata=job_config_json.get("metadata"),
                   ray_namespace=job_config_json.get("ray_namespace"),
                   _client_job=job_config_json.get("client_job", False),
                   _py_driver_sys_path=job_config_json.get("py_driver_sys_path"))

    def __repr__(self) -> str:
        return (f"JobConfig(ray_namespace={self.ray_namespace!r}, "
                f"default_actor_lifetime={self._default_actor_lifetime!r}, "
                f"code_search_path={self.code_search_path!r})")
