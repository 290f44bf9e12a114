"""Ray's common test fixtures, as context managers on miniray.

The plugin wraps these in pytest fixtures of the same names as Ray's
conftest; test files that import helpers from ``ray.tests.conftest`` get
this module. A fixture's ``request.param`` dict is merged over the defaults
and passed on, so ``@pytest.mark.parametrize("ray_start_regular",
[{"num_cpus": 2}], indirect=True)`` works as in Ray.

Defaults follow Ray's fixtures (1 CPU, a 150 MiB object store, the
``default_test_namespace`` namespace). Ray's fixtures also pass
``dashboard_port=None`` and a ``_system_config`` of internal timeouts;
miniray has neither a dashboard nor those knobs, so they are left out.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import contextmanager

import pytest

import miniray
from ray_compat import aliases, procs
from ray_compat.cluster_utils import Cluster

DEFAULT_INIT = {
    "num_cpus": 1,
    "object_store_memory": 150 * 1024 * 1024,
    "namespace": "default_test_namespace",
}


def params(request, default=None) -> dict:
    """A copy of the fixture's ``request.param`` (Ray's fixtures take a dict)."""
    value = getattr(request, "param", default)
    return dict(value) if isinstance(value, dict) else (value if value is not None else {})


@contextmanager
def ray_start(**overrides):
    """``ray.init("local", ...)`` with Ray's fixture defaults; shut down after."""
    if overrides.get("local_mode"):
        pytest.skip("local_mode (deprecated in Ray) is not implemented by miniray")
    kwargs = {**DEFAULT_INIT, **overrides}
    context = miniray.init("local", **kwargs)
    try:
        yield context
    finally:
        miniray.shutdown()


@contextmanager
def ray_start_cluster(**kwargs):
    """A ``Cluster`` with ``num_nodes`` nodes; ``do_init`` connects the driver."""
    kwargs.pop("skip_cluster", None)          # clusters always work here
    num_nodes = kwargs.pop("num_nodes", 0)
    do_init = kwargs.pop("do_init", num_nodes > 0)
    node_args = {**DEFAULT_INIT, **kwargs}
    namespace = node_args.pop("namespace")
    cluster = Cluster()
    try:
        for i in range(num_nodes):
            cluster.add_node(**node_args)
            if i == 0 and do_init:
                miniray.init(address=cluster.address, namespace=namespace)
        yield cluster
    finally:
        miniray.shutdown()
        cluster.shutdown()


# --- `ray start` on the command line -----------------------------------------------
_IGNORED_START_FLAGS = {"--min-worker-port", "--max-worker-port"}   # worker ports
_START_FLAGS = {"--head", "--num-cpus", "--num-gpus", "--resources", "--port",
                "--object-store-memory", "--memory", "--node-ip-address", "--address"}


def _translate_ray_start(command: str) -> list[str]:
    """``ray start ...`` -> ``miniray start ...``, or skip for flags we lack."""
    words = command.split()
    if words[:2] != ["ray", "start"]:
        pytest.skip(f"call_ray_start: not a `ray start` command: {command!r}")
    out = [sys.executable, "-m", "miniray.cli", "start"]
    args = iter(words[2:])
    for word in args:
        flag, eq, value = word.partition("=")
        takes_value = flag not in ("--head", "--block")
        if takes_value and not eq:
            value = next(args, "")
        if flag in _IGNORED_START_FLAGS:
            continue
        if flag not in _START_FLAGS:
            pytest.skip(f"`ray start {flag}` has no miniray equivalent")
        if flag == "--port" and value == "0":
            # Ray reads port 0 as "any free port"; `miniray start` needs a number.
            from miniray.node import free_port
            value = str(free_port())
        out += [flag] if not takes_value else [flag, value]
    return out


@contextmanager
def call_ray_start_context(request):
    """Start a head node with the CLI (Ray: ``ray start --head ...``); yield its
    address; stop exactly the processes it started (never ``miniray stop``,
    which would stop every miniray cluster on the machine)."""
    default = "ray start --head --num-cpus=1 --min-worker-port=0 --max-worker-port=0 --port 0"
    parameter = getattr(request, "param", default)
    env = None
    if isinstance(parameter, dict):
        if "env" in parameter:
            env = {**os.environ, **parameter["env"]}
        parameter = parameter.get("cmd", default)
    command = _translate_ray_start(parameter)
    before = {p.pid for p in procs.run_processes(os.environ[procs.RUN_ID_VAR])}
    out = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=env, text=True, check=True).stdout
    match = re.search(r"--address='([^']+)'", out)
    address = match.group(1) if match else None
    try:
        yield address
    finally:
        miniray.shutdown()
        started = [p for p in procs.run_processes(os.environ[procs.RUN_ID_VAR])
                   if p.pid not in before and procs.is_miniray_daemon(p)]
        procs.terminate(started)
        logs = re.search(r"Logs: (\S+)/logs", out)
        if logs:
            from miniray.node import forget_current_cluster, remove_session_files
            remove_session_files(logs.group(1))
            forget_current_cluster()


def __getattr__(name):
    # Other helpers of Ray's conftest rely on Ray internals (Redis, Ray Client...).
    return aliases.InternalModule("ray.tests.conftest").__getattr__(name)
