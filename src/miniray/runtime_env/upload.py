"""Turn a checked runtime_env's local paths into package URIs, uploading
the packages the cluster does not have yet (drivers and job clients).

``working_dir`` and each ``py_modules`` entry (a directory, a module
object, a ``.zip``/``.whl`` file or a single ``.py`` file) are packed
(packaging.py) and replaced by their ``gcs://`` URI; ``excludes`` is
dropped, having been applied. URIs given as such are checked to exist.
"""
from __future__ import annotations

import os
import types
from typing import Callable

from miniray.runtime_env import packaging


def prepare(env: dict, kv: packaging.GcsKV,
            upload: Callable[[str, bytes], None] | None = None) -> dict:
    """``env`` (validated) with packages uploaded. ``upload(uri, data)``
    replaces the default (``packaging.upload`` to ``kv``), e.g. for the job
    client's HTTP upload; ``kv`` is then only read."""
    if not (env.get("working_dir") or env.get("py_modules")):
        return env
    store = upload or (lambda uri, data: packaging.upload(kv, uri, data))
    out = {k: v for k, v in env.items() if k != "excludes"}
    excludes = env.get("excludes") or []
    if env.get("working_dir"):
        out["working_dir"] = _ship(env["working_dir"], excludes, kv, store,
                                   "working_dir", include_parent_dir=False)
    if env.get("py_modules"):
        out["py_modules"] = [_ship(_module_path(m), excludes, kv, store, "py_modules",
                                   include_parent_dir=True)
                             for m in env["py_modules"]]
    return out


def _module_path(module) -> str:
    if not isinstance(module, types.ModuleType):
        return module
    path = getattr(module, "__file__", None)
    if not path:
        raise ValueError(f"runtime_env['py_modules']: module {module.__name__!r} has "
                         f"no file to ship (a namespace or built-in module)")
    if os.path.basename(path) == "__init__.py":
        return os.path.dirname(path)         # a package: ship its directory
    return path


def _ship(path: str, excludes, kv, store, what: str, include_parent_dir: bool) -> str:
    if packaging.is_uri(path):
        if not packaging.exists(kv, path):
            raise ValueError(f"runtime_env[{what!r}]: package {path} is not in the cluster")
        return path
    try:
        uri, data = packaging.pack_local(path, excludes,
                                         include_parent_dir=include_parent_dir,
                                         unwrap_single_dir=what == "working_dir")
    except packaging.PackagingError as exc:
        raise ValueError(f"runtime_env[{what!r}]: {exc}") from None
    if not packaging.exists(kv, uri):
        store(uri, data)
    return uri
