"""``ray._private.test_utils``: the helpers Ray's Core tests import from it that
miniray can honestly provide, written on miniray's public API.

Anything else (error pubsub, the global state accessor, raw GCS clients ...)
is a Ray internal: importing it works, using it skips the test (see
``aliases.Internal``).
"""
from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time

import psutil

import miniray
from miniray.testing import Semaphore, SignalActor, wait_for_condition
from miniray.util.queue import Empty, Queue, _QueueActor

__all__ = [
    "SignalActor", "Semaphore", "wait_for_condition", "wait_for_pid_to_exit",
    "client_test_enabled", "run_string_as_driver", "run_string_as_driver_nonblocking",
    "run_string_as_driver_stdout_stderr", "generate_system_config_map",
    "skip_flaky_core_test_premerge", "dicts_equal", "put_object",
    "kill_actor_and_wait_for_failure", "wait_for_num_actors", "convert_actor_state",
    "placement_group_assert_no_leak", "BatchQueue",
]


class RayTestTimeoutException(Exception):
    """Raised by the waiting helpers when their deadline passes."""


def client_test_enabled() -> bool:
    """Whether the tests run through Ray Client: never here."""
    return False


def wait_for_pid_to_exit(pid: int, timeout: float = 20) -> None:
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        raise RayTestTimeoutException(f"process {pid} still alive after {timeout}s") from None


# --- drivers in their own process --------------------------------------------------
def _driver_env(env: dict | None) -> dict:
    """The child's environment, always with our PYTHONPATH so that its
    ``import ray`` loads miniray (never the real ray)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "") + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_string_as_driver_stdout_stderr(driver_script: str, env: dict | None = None,
                                       encode: str = "utf-8") -> tuple[str, str]:
    proc = subprocess.run([sys.executable, "-"], input=driver_script.encode(encode),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=_driver_env(env))
    out, err = proc.stdout.decode(encode), proc.stderr.decode(encode)
    if proc.returncode:
        print(out)
        print(err)
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)
    return out, err


def run_string_as_driver(driver_script: str, env: dict | None = None,
                         encode: str = "utf-8") -> str:
    """Run ``driver_script`` with a new Python; its combined output."""
    proc = subprocess.run([sys.executable, "-"], input=driver_script.encode(encode),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=_driver_env(env))
    out = proc.stdout.decode(encode)
    if proc.returncode:
        print(out)
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out)
    return out


def run_string_as_driver_nonblocking(driver_script: str, env: dict | None = None):
    """Start ``driver_script`` in a new Python and return its Popen at once."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; exec(sys.stdin.read())"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_driver_env(env))
    proc.stdin.write(driver_script.encode("utf-8"))
    proc.stdin.close()
    return proc


# --- small helpers -------------------------------------------------------------------
def generate_system_config_map(**kwargs) -> dict:
    """Ray's fixtures accept ``{"_system_config": {...}}``; miniray ignores it."""
    return {"_system_config": kwargs}


def skip_flaky_core_test_premerge(reason: str):
    """As in Ray: skip the test unless ``CI_SKIP_FLAKY_TEST=0``."""
    import pytest

    def decorate(function):
        skip = os.environ.get("CI_SKIP_FLAKY_TEST", "1") == "1"
        return pytest.mark.skipif(skip, reason=f"Ray marks it flaky: {reason}")(function)
    return decorate


def dicts_equal(first: dict, second: dict, abs_tol: float = 1e-4) -> bool:
    if first.keys() != second.keys():
        return False
    for key, value in first.items():
        other = second[key]
        if isinstance(value, float) and isinstance(other, float):
            if not math.isclose(value, other, abs_tol=abs_tol):
                return False
        elif value != other:
            return False
    return True


@miniray.remote
def _identity(value):
    return value


def put_object(obj, use_ray_put: bool):
    """A ref to ``obj``: from ``put``, or returned by a task."""
    return miniray.put(obj) if use_ray_put else _identity.remote(obj)


# --- actors --------------------------------------------------------------------------
def convert_actor_state(state):
    """Ray passes GCS enum numbers; miniray's state API already uses names."""
    if not state:
        return None
    if isinstance(state, str):
        return state
    from ray_compat.aliases import unavailable
    unavailable("ray.core.generated.gcs_pb2.ActorTableData.ActorState")


def _actor_record(actor_id_hex: str):
    from miniray.util.state import get_actor
    return get_actor(actor_id_hex)


def kill_actor_and_wait_for_failure(actor, timeout: float = 10,
                                    retry_interval_ms: float = 100) -> None:
    """``kill`` the actor; wait until it is dead or has restarted."""
    actor_id = actor._actor_id.hex()
    restarts = _actor_record(actor_id).num_restarts
    miniray.kill(actor)

    def gone():
        record = _actor_record(actor_id)
        return record.state == "DEAD" or record.num_restarts > restarts

    wait_for_condition(gone, timeout=timeout, retry_interval_ms=retry_interval_ms)


def wait_for_num_actors(num_actors: int, state=None, timeout: float = 10) -> None:
    from miniray.util.state import list_actors
    state = convert_actor_state(state)

    def enough():
        return len([a for a in list_actors()
                    if state is None or a.state == state]) >= num_actors

    wait_for_condition(enough, timeout=timeout)


# --- placement groups ----------------------------------------------------------------
def placement_group_assert_no_leak(pgs_created) -> None:
    """Remove the groups; wait until every bundle resource is back."""
    from miniray.util import placement_group_table, remove_placement_group
    for pg in pgs_created:
        remove_placement_group(pg)

    def all_removed():
        return all(entry["state"] == "REMOVED"
                   for entry in placement_group_table().values())

    wait_for_condition(all_removed)
    total = miniray.cluster_resources()
    total.pop("memory", None)
    total.pop("object_store_memory", None)

    def recovered():
        available = miniray.available_resources()
        return (all(available.get(name) == amount for name, amount in total.items()
                    if "_group_" not in name)
                and not any("_group_" in name for name in available))

    wait_for_condition(recovered)


# --- a queue that hands out batches --------------------------------------------------
class _BatchQueueActor(_QueueActor):
    async def get_batch(self, batch_size=None, total_timeout=None, first_timeout=None):
        """Up to ``batch_size`` items (no limit if None). Waits ``first_timeout``
        for the first (else Empty), then up to ``total_timeout`` in all for the
        rest; without ``total_timeout``, a sized batch waits until full and an
        unsized one takes what is there."""
        try:
            batch = [await asyncio.wait_for(self.queue.get(), first_timeout)]
        except asyncio.TimeoutError:
            raise Empty from None
        deadline = time.monotonic() + total_timeout if total_timeout else None
        while batch_size is None or len(batch) < batch_size:
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
            else:
                timeout = None if batch_size is not None and total_timeout is None else 0
            try:
                if timeout == 0:
                    batch.append(self.queue.get_nowait())
                else:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
        return batch


class BatchQueue(Queue):
    def __init__(self, maxsize: int = 0, actor_options: dict | None = None) -> None:
        self.maxsize = maxsize
        actor_cls = miniray.remote(_BatchQueueActor)
        if actor_options:
            actor_cls = actor_cls.options(**actor_options)
        self.actor = actor_cls.remote(maxsize)

    def get_batch(self, batch_size=None, total_timeout=None, first_timeout=None) -> list:
        return miniray.get(self.actor.get_batch.remote(batch_size, total_timeout,
                                                       first_timeout))


def __getattr__(name):
    # Everything else in Ray's test_utils reaches into Ray internals.
    from ray_compat.aliases import InternalModule
    return InternalModule("ray._private.test_utils").__getattr__(name)
