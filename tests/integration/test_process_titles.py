"""Workers' process titles, as Ray sets them (what ps, top and py-spy show)."""
from __future__ import annotations

import os

import psutil
import pytest
import setproctitle

import miniray as ray
from miniray.cli.stop import find_processes
from miniray.testing import wait_for_condition

pytestmark = [pytest.mark.usefixtures("ray_start"), pytest.mark.timeout(60)]


def _title(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline()).strip()


@ray.remote
def running_title():
    return setproctitle.getproctitle(), os.getpid()


@ray.remote
class Worker:
    def title(self):
        return setproctitle.getproctitle(), os.getpid()


def test_a_task_runs_under_its_name_and_its_worker_idles_as_ray_idle():
    title, pid = ray.get(running_title.remote())
    assert title == "ray::running_title"
    assert ray.get(running_title.options(name="custom").remote())[0] == "ray::custom"
    wait_for_condition(lambda: _title(pid) == "ray::IDLE", timeout=10)


def test_an_actor_call_runs_as_class_method_and_the_actor_idles_as_its_class():
    actor = Worker.remote()
    title, pid = ray.get(actor.title.remote())
    assert title == "ray::Worker.title"
    assert ray.get(actor.title.options(name="renamed").remote())[0] == "ray::renamed"
    wait_for_condition(lambda: _title(pid) == "ray::Worker", timeout=10)
    ray.kill(actor)


def test_titled_workers_are_still_found_as_minirays_own():
    """`miniray stop` and the leak checks find workers by their environment
    once the title has replaced the command line."""
    _, pid = ray.get(running_title.remote())
    found = {p.pid: p.kind for p in find_processes()}
    assert found.get(pid) == "core_worker"
    assert found.get(os.getpid()) is None         # never the driver


def test_threads_that_run_calls_keep_their_names():
    """Only the main thread's name follows the title, as in Ray: an async
    actor's event-loop threads keep one name however many calls they run
    (Ray's test_actor_bounded_threads counts threads by name)."""
    @ray.remote(concurrency_groups={"io": 2})
    class Async:
        async def names(self):
            import threading
            pid = os.getpid()
            names = {}
            for thread in threading.enumerate():
                with open(f"/proc/{pid}/task/{thread.native_id}/comm") as f:
                    names[thread.name] = f.read().strip()
            return names

        @ray.method(concurrency_group="io")
        async def io(self):
            return 1

    actor = Async.remote()
    before = ray.get(actor.names.remote())
    assert ray.get([actor.io.remote() for _ in range(10)]) == [1] * 10
    after = ray.get(actor.names.remote())
    assert after == before
    assert after["MainThread"] == "ray::Async"
    ray.kill(actor)


def test_daemons_are_named_as_rays_and_keep_their_command_lines():
    """ps/top/psutil show the raylet as "raylet" and the GCS server as
    "gcs_server", as Ray's binaries are named; `miniray stop` still finds
    them by their command lines."""
    names = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            names.setdefault(proc.name(), []).append(" ".join(proc.cmdline()))
        except psutil.Error:         # a killed actor's worker, not reaped yet
            continue
    assert any("miniray.raylet" in cmd for cmd in names.get("raylet", []))
    assert any("miniray.gcs" in cmd for cmd in names.get("gcs_server", []))
