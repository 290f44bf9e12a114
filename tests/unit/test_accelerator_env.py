"""Unit tests for miniray.core_worker.accelerators: what a task sees of its
lease's GPU ids (get_gpu_ids, CUDA_VISIBLE_DEVICES, ...). No sockets."""
from __future__ import annotations

import contextvars
import threading

import pytest

from miniray.core_worker import accelerators as acc
from miniray.protocol import common_pb2, core_worker_pb2 as cw_pb2

PG = "ab" * 18


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    """Each test starts with no assignment and restores the environment."""
    for var in (list(acc.VISIBLE_DEVICES_ENV.values()) + list(acc.NOSET_ENV.values())
                + ["OMP_NUM_THREADS"]):
        monkeypatch.setenv(var, "")       # recorded, so teardown restores (or unsets) it
        monkeypatch.delenv(var)
    monkeypatch.setattr(acc, "_ORIGINAL_VISIBLE",
                        {name: None for name in acc.VISIBLE_DEVICES_ENV})
    monkeypatch.setattr(acc, "_USER_OMP_NUM_THREADS", None)
    monkeypatch.setattr(acc, "_STARTED_WITH",
                        {var: None for var in acc.VISIBLE_DEVICES_ENV.values()})
    monkeypatch.setattr(acc, "_process_wide", None)
    monkeypatch.setattr(acc, "_staged", {})
    token = acc._current.set(None)
    yield
    acc._current.reset(token)


def push(task_id: bytes, resource_ids: dict, resources: dict | None = None,
         task_type=common_pb2.NORMAL_TASK) -> cw_pb2.PushTaskRequest:
    request = cw_pb2.PushTaskRequest(spec=common_pb2.TaskSpec(
        task_id=task_id, type=task_type, resources=resources or {}))
    for name, instances in resource_ids.items():
        request.resource_ids[name].ids.extend(instances)
        request.resource_ids[name].amounts.extend(instances.values())
    return request


def run(request: cw_pb2.PushTaskRequest) -> acc.Assignment:
    acc.stage(request)
    return acc.apply(request.spec)


def test_nothing_assigned_outside_tasks():
    assert acc.gpu_ids() == []
    assert acc.assigned_resources() == {}
    assert acc.accelerator_ids() == {"GPU": [], "neuron_cores": [], "TPU": [],
                                     "NPU": [], "HPU": []}


def test_task_sees_its_gpus(monkeypatch):
    run(push(b"t1", {"CPU": {0: 1.0}, "GPU": {0: 1.0, 1: 1.0}}, {"CPU": 1, "GPU": 2}))
    assert acc.gpu_ids() == [0, 1]
    assert acc.accelerator_ids()["GPU"] == ["0", "1"]
    assert acc.assigned_resources() == {"CPU": 1.0, "GPU": 2.0}
    import os
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_fractional_gpu():
    run(push(b"t1", {"CPU": {0: 1.0}, "GPU": {1: 0.5}}))
    assert acc.gpu_ids() == [1]
    assert acc.assigned_resources() == {"CPU": 1.0, "GPU": 0.5}


def test_task_without_gpus_leaves_cuda_visible_devices_as_the_worker_started():
    """As in Ray 2.60: no GPUs, no override (a value an earlier task left
    goes back to the worker's own, here unset)."""
    import os
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"     # left over from an earlier task
    run(push(b"t1", {"CPU": {0: 1.0}}))
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert "NEURON_RT_VISIBLE_CORES" not in os.environ
    assert "TPU_VISIBLE_CHIPS" not in os.environ
    assert acc.gpu_ids() == []


def test_override_on_zero_brings_back_the_empty_value(monkeypatch):
    import os
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")
    run(push(b"t1", {"CPU": {0: 1.0}}))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert "TPU_VISIBLE_CHIPS" not in os.environ     # TPU variables are left alone


def test_noset_leaves_the_environment_alone(monkeypatch):
    import os
    monkeypatch.setenv("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", "1")
    run(push(b"t1", {"GPU": {1: 1.0}}))
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert acc.gpu_ids() == [1]                     # still reported


def test_preset_visible_devices_map_ids(monkeypatch):
    import os
    monkeypatch.setitem(acc._ORIGINAL_VISIBLE, "GPU", ["uuid1", "uuid2"])
    run(push(b"t1", {"GPU": {1: 1.0}}))
    assert acc.gpu_ids() == ["uuid2"]
    assert acc.accelerator_ids()["GPU"] == ["uuid2"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "uuid2"


def test_without_resource_ids_the_spec_gives_the_amounts():
    """A push that carries no instances (an owner that does not send them)."""
    run(push(b"t1", {}, {"CPU": 1.0, f"GPU_group_0_{PG}": 1.0,
                         f"bundle_group_0_{PG}": 0.001}))
    assert acc.assigned_resources() == {"CPU": 1.0, "GPU": 1.0}
    assert acc.gpu_ids() == []


def test_placement_group_names():
    run(push(b"t1", {f"CPU_group_0_{PG}": {0: 1.0}, f"GPU_group_0_{PG}": {1: 1.0},
                     f"bundle_group_0_{PG}": {0: 0.001}}))
    assert acc.gpu_ids() == [1]
    assert acc.assigned_resources() == {"CPU": 1.0, "GPU": 1.0}
    # Holding both the group-wide and a bundle's name: the bundle's ids count.
    run(push(b"t2", {f"GPU_group_{PG}": {0: 1.0}, f"GPU_group_1_{PG}": {1: 1.0}}))
    assert acc.gpu_ids() == [1]


def test_actor_calls_keep_the_actors_assignment():
    import os
    run(push(b"creation", {"GPU": {1: 1.0}}, task_type=common_pb2.ACTOR_CREATION_TASK))
    os.environ["CUDA_VISIBLE_DEVICES"] = "changed by the actor"
    # An actor call carries no instances: nothing is staged or changed.
    acc.stage(push(b"call", {"GPU": {0: 1.0}}, task_type=common_pb2.ACTOR_TASK))
    assert acc._staged == {}
    assert acc.gpu_ids() == [1]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "changed by the actor"
    # Calls on other threads (threaded and async actors) see it too.
    seen = []
    thread = threading.Thread(target=lambda: seen.append(acc.gpu_ids()))
    thread.start()
    thread.join()
    assert seen == [[1]]


def test_each_context_sees_its_own_assignment():
    """The assignment follows the context (contextvars), not just the process."""
    def in_task(task_id, ids):
        run(push(task_id, {"GPU": ids}))
        return acc.gpu_ids()

    first = contextvars.copy_context()
    second = contextvars.copy_context()
    assert first.run(in_task, b"a", {0: 1.0}) == [0]
    assert second.run(in_task, b"b", {1: 1.0}) == [1]
    assert first.run(acc.gpu_ids) == [0]
    assert second.run(acc.gpu_ids) == [1]


def test_staged_ids_are_per_task():
    """Pushes pipelined to one worker are applied to the right task."""
    acc.stage(push(b"a", {"GPU": {0: 0.5}}))
    acc.stage(push(b"b", {"GPU": {0: 0.5}, "CPU": {0: 2.0}}))
    spec_b = push(b"b", {}).spec
    spec_a = push(b"a", {}).spec
    assert acc.apply(spec_a).resources == {"GPU": 0.5}
    assert acc.apply(spec_b).resources == {"GPU": 0.5, "CPU": 2.0}
    assert acc._staged == {}


def test_omp_num_threads_follows_the_cpus_held():
    # As in Ray: the CPUs the task holds, rounded down, at least 1.
    import os
    run(push(b"t1", {"CPU": {0: 2.0}}, {"CPU": 2}))
    assert os.environ["OMP_NUM_THREADS"] == "2"
    run(push(b"t2", {"CPU": {0: 0.25}}, {"CPU": 0.25}))
    assert os.environ["OMP_NUM_THREADS"] == "1"
    run(push(b"t3", {f"CPU_group_0_{PG}": {0: 3.0}, f"bundle_group_0_{PG}": {0: 0.001}}))
    assert os.environ["OMP_NUM_THREADS"] == "3"
    # An actor that holds no CPU while it runs.
    run(push(b"a1", {}, {}, task_type=common_pb2.ACTOR_CREATION_TASK))
    assert os.environ["OMP_NUM_THREADS"] == "1"


def test_omp_num_threads_the_worker_started_with_is_kept(monkeypatch):
    import os
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setattr(acc, "_USER_OMP_NUM_THREADS", "4")
    run(push(b"t1", {"CPU": {0: 2.0}}, {"CPU": 2}))
    assert os.environ["OMP_NUM_THREADS"] == "4"
