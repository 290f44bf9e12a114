"""Runtime environments (Ray's ``runtime_env``): what a job, task or actor
needs around it (environment variables, a working directory, modules, pip
packages), shipped to whichever node runs it.

- runtime_env.py: the ``RuntimeEnv`` class, checking, merging (drivers, workers)
- packaging.py / upload.py: packing local code and uploading it to the GCS
- manager.py / uri_cache.py: setting environments up on a node (raylets)

Public: ``miniray.runtime_env.RuntimeEnv`` and ``RuntimeEnvConfig``, as in Ray.
"""
from miniray.runtime_env.runtime_env import RuntimeEnv, RuntimeEnvConfig

__all__ = ["RuntimeEnv", "RuntimeEnvConfig"]
