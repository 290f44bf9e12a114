"""The ``runtime_env`` a job, task or actor asks for: Ray's keys, checked
where they enter (``init``, ``.options``, ``@remote``), normalized to one
canonical form, and merged as Ray merges them.

Pure data: runs in drivers and workers. Packing and uploading local paths
is upload.py; setting the environment up on a node is manager.py.

Supported keys: ``env_vars``, ``working_dir``, ``py_modules``, ``pip``,
``excludes`` (for the two before it) and ``config``. The others Ray knows
(``conda``, ``container``, ``uv``, ...) are refused with a clear error.

Inheritance (Ray's rule): a task or actor runs in its parent's environment
(the job's, for the driver's calls); a ``runtime_env`` it is given replaces
the parent's key by key, except ``env_vars``, which are merged (the child's
value wins for a variable both set).
"""
from __future__ import annotations

import json
import os
import types
from typing import Any, Dict, List, Optional, Union

SUPPORTED = ("env_vars", "working_dir", "py_modules", "pip", "excludes", "config")
UNSUPPORTED = ("conda", "container", "image_uri", "uv", "java_jars", "mpi", "nsight",
               "rocprof_sys", "worker_process_setup_hook", "docker")
CONFIG_KEYS = ("setup_timeout_seconds", "eager_install")
PIP_KEYS = ("packages", "pip_check", "pip_install_options", "pip_version")
DEFAULT_SETUP_TIMEOUT_S = 600


class RuntimeEnvConfig(dict):
    """Ray's ``RuntimeEnvConfig``: how the environment is set up.

    ``setup_timeout_seconds``: a setup taking longer fails the task or actor
    with RuntimeEnvSetupError (-1: no limit). ``eager_install``: a job-level
    environment starts installing when the job starts, not at its first task.
    """

    def __init__(self, setup_timeout_seconds: int = DEFAULT_SETUP_TIMEOUT_S,
                 eager_install: bool = True, **unknown):
        if unknown:
            raise ValueError(f"unknown RuntimeEnvConfig field(s) {sorted(unknown)}; "
                             f"supported: {', '.join(CONFIG_KEYS)}")
        if isinstance(setup_timeout_seconds, bool) or not isinstance(
                setup_timeout_seconds, int) or (setup_timeout_seconds <= 0
                                                and setup_timeout_seconds != -1):
            raise ValueError("runtime_env config setup_timeout_seconds must be a positive "
                             f"integer or -1 (no limit), got {setup_timeout_seconds!r}")
        if not isinstance(eager_install, bool):
            raise TypeError("runtime_env config eager_install must be a bool, got "
                            f"{type(eager_install).__name__}")
        super().__init__(setup_timeout_seconds=setup_timeout_seconds,
                         eager_install=eager_install)

    @classmethod
    def parse_and_validate_runtime_env_config(cls, config) -> "RuntimeEnvConfig":
        if isinstance(config, RuntimeEnvConfig):
            return config
        if not isinstance(config, dict):
            raise TypeError("runtime_env['config'] must be a dict or RuntimeEnvConfig, "
                            f"got {type(config).__name__}")
        return cls(**config)

    def to_dict(self) -> dict:
        return dict(self)


class RuntimeEnv(dict):
    """Ray's ``RuntimeEnv``: a dict of the environment's fields, checked
    when made. ``RuntimeEnv(env_vars={"A": "1"}, working_dir=".")``."""

    def __init__(self, *, py_modules: Optional[List[Any]] = None,
                 working_dir: Optional[str] = None,
                 pip: Optional[Union[List[str], str, Dict]] = None,
                 env_vars: Optional[Dict[str, str]] = None,
                 config: Optional[Union[Dict, RuntimeEnvConfig]] = None,
                 excludes: Optional[List[str]] = None,
                 _validate: bool = True, **kwargs):
        fields = dict(kwargs)
        for key, value in (("py_modules", py_modules), ("working_dir", working_dir),
                           ("pip", pip), ("env_vars", env_vars), ("config", config),
                           ("excludes", excludes)):
            if value is not None:
                fields[key] = value
        super().__init__(validate(fields) if _validate else fields)

    # Ray's accessors.
    def env_vars(self) -> dict:
        return dict(self.get("env_vars") or {})

    def working_dir(self) -> str:
        return self.get("working_dir", "")

    def py_modules(self) -> list:
        return list(self.get("py_modules") or [])

    def pip_config(self) -> dict:
        return dict(self.get("pip") or {})

    def has_working_dir(self) -> bool:
        return bool(self.get("working_dir"))

    def has_py_modules(self) -> bool:
        return bool(self.get("py_modules"))

    def has_pip(self) -> bool:
        return bool(self.get("pip"))

    def to_dict(self) -> dict:
        return dict(self)

    def serialize(self) -> str:
        return serialize(self)

    @classmethod
    def deserialize(cls, serialized: str) -> "RuntimeEnv":
        return cls(_validate=False, **json.loads(serialized or "{}"))


# --- checking ------------------------------------------------------------------------------
def validate(env) -> dict:
    """The canonical form of ``env`` (a dict or RuntimeEnv), or a clear
    ValueError/TypeError naming what is wrong."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise TypeError(f"runtime_env must be a dict or a RuntimeEnv, "
                        f"got {type(env).__name__}")
    out: dict = {}
    for key, value in env.items():
        if key in UNSUPPORTED:
            raise ValueError(f"runtime_env field {key!r} is not supported by miniray "
                             f"(supported: {', '.join(SUPPORTED)})")
        if key not in SUPPORTED:
            raise ValueError(f"unknown runtime_env field {key!r} (supported: "
                             f"{', '.join(SUPPORTED)})")
        if value is None:
            continue
        out[key] = _CHECKS[key](value)
    if "excludes" in out and not ("working_dir" in out or "py_modules" in out):
        del out["excludes"]          # only means something for packed directories
    return out


def _check_env_vars(value) -> dict:
    if not isinstance(value, dict):
        raise TypeError("runtime_env['env_vars'] must be a dict of str to str, got "
                        f"{type(value).__name__}")
    for name, val in value.items():
        if not isinstance(name, str) or not isinstance(val, str):
            raise TypeError("runtime_env['env_vars'] must be a dict of str to str; "
                            f"{name!r}: {val!r} is not")
        if not name or "=" in name or "\0" in name or "\0" in val:
            raise ValueError(f"runtime_env['env_vars'] has an invalid variable name "
                             f"{name!r}")
    return dict(value)


def _path(value, what: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what} must be a path (str), got {value!r}")
    if "://" in value and not value.startswith("gcs://"):
        raise ValueError(f"{what} {value!r}: only local paths and gcs:// URIs are "
                         f"supported by miniray (not remote URIs)")
    return value


def _check_working_dir(value) -> str:
    return _path(value, "runtime_env['working_dir']")


def _check_py_modules(value) -> list:
    if not isinstance(value, (list, tuple)):
        raise TypeError("runtime_env['py_modules'] must be a list of paths or modules, "
                        f"got {type(value).__name__}")
    out = []
    for item in value:
        if isinstance(item, types.ModuleType):
            out.append(item)            # packed from its files by upload.py
        else:
            out.append(_path(item, "a runtime_env['py_modules'] entry"))
    return out


def _check_pip(value) -> dict:
    if isinstance(value, str):
        return {"packages": _read_requirements(value), "pip_check": False}
    if isinstance(value, (list, tuple)):
        return {"packages": _packages(value), "pip_check": False}
    if not isinstance(value, dict):
        raise TypeError("runtime_env['pip'] must be a list of requirements, a "
                        "requirements file or a dict, got " + type(value).__name__)
    unknown = set(value) - set(PIP_KEYS)
    if unknown:
        raise ValueError(f"unknown runtime_env['pip'] field(s) {sorted(unknown)}; "
                         f"supported: {', '.join(PIP_KEYS)}")
    if value.get("pip_version"):
        raise ValueError("runtime_env['pip']['pip_version'] is not supported by miniray: "
                         "environments are installed with the cluster's own pip")
    packages = value.get("packages")
    if packages is None:
        raise ValueError("runtime_env['pip'] needs 'packages' (a list or a "
                         "requirements file)")
    out = {"packages": _read_requirements(packages) if isinstance(packages, str)
           else _packages(packages),
           "pip_check": bool(value.get("pip_check", False))}
    options = value.get("pip_install_options")
    if options:
        if not isinstance(options, (list, tuple)) or not all(
                isinstance(o, str) for o in options):
            raise TypeError("runtime_env['pip']['pip_install_options'] must be a list "
                            "of str")
        out["pip_install_options"] = list(options)
    return out


def _packages(value) -> list:
    if not all(isinstance(p, str) and p.strip() for p in value):
        raise TypeError("runtime_env['pip'] requirements must be non-empty strings, "
                        f"got {list(value)!r}")
    return [p.strip() for p in value]


def _read_requirements(path: str) -> list:
    if not os.path.isfile(path):
        raise ValueError(f"runtime_env['pip'] requirements file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        lines = [line.split(" #")[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith("#")]


def _check_excludes(value) -> list:
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise TypeError("runtime_env['excludes'] must be a list of str patterns")
    return list(value)


def _check_config(value) -> dict:
    return RuntimeEnvConfig.parse_and_validate_runtime_env_config(value).to_dict()


_CHECKS = {"env_vars": _check_env_vars, "working_dir": _check_working_dir,
           "py_modules": _check_py_modules, "pip": _check_pip,
           "excludes": _check_excludes, "config": _check_config}


# --- merging and the wire form --------------------------------------------------------------
def merge(parent: dict, child: dict | None) -> dict:
    """Ray's inheritance: the child's keys replace the parent's, except
    ``env_vars``, merged with the child's winning."""
    if not child:
        return dict(parent)
    merged = {**parent, **child}
    if parent.get("env_vars") and child.get("env_vars"):
        merged["env_vars"] = {**parent["env_vars"], **child["env_vars"]}
    return merged


def serialize(env: dict) -> str:
    """The canonical JSON (sorted keys) that task specs, lease requests and
    worker matching carry; "" for no environment."""
    if not env:
        return ""
    return json.dumps(env, sort_keys=True, separators=(",", ":"))


def deserialize(text: str) -> dict:
    return json.loads(text) if text else {}


def setup_timeout(env: dict) -> float | None:
    """Seconds the node may spend setting ``env`` up (None: no limit)."""
    seconds = (env.get("config") or {}).get("setup_timeout_seconds",
                                            DEFAULT_SETUP_TIMEOUT_S)
    return None if seconds == -1 else float(seconds)


MAX_SERIALIZED_BYTES = 1024 * 1024


def check_wire(text: str) -> dict:
    """A serialized env as it reaches a raylet or the GCS: well-formed, with
    packages as uploaded URIs only (never a path on the receiving node).
    Raises ValueError naming the problem."""
    if not text:
        return {}
    if len(text) > MAX_SERIALIZED_BYTES:
        raise ValueError(f"runtime_env of {len(text)} bytes: at most "
                         f"{MAX_SERIALIZED_BYTES} are allowed")
    try:
        env = json.loads(text)
    except ValueError:
        raise ValueError("runtime_env is not valid JSON") from None
    if not isinstance(env, dict):
        raise ValueError("runtime_env must be a JSON object")
    from miniray.runtime_env import packaging
    uris = ([env["working_dir"]] if "working_dir" in env else []) + \
        list(env.get("py_modules") or [])
    for uri in uris:
        if not isinstance(uri, str):
            raise ValueError(f"runtime_env package {uri!r} is not a string")
        packaging.name_of(uri)               # a gcs:// package name, or PackagingError
    if "excludes" in env:
        raise ValueError("runtime_env 'excludes' must be applied before sending")
    return validate(env)
