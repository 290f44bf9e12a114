"""``init(job_config=JobConfig(...))``, as in Ray: the job's namespace, the
default lifetime of its actors, and code search paths for its workers."""
from __future__ import annotations

import importlib

import pytest

import miniray as ray
from miniray import exceptions
from miniray.job_config import JobConfig
from miniray.testing import wait_for_condition


def test_job_config_checks_its_arguments():
    with pytest.raises(ValueError, match="detached"):
        JobConfig(default_actor_lifetime="forever")
    with pytest.raises(TypeError):
        JobConfig(code_search_path="/not/a/list")
    config = JobConfig.from_json({"ray_namespace": "n", "metadata": {"k": "v"}})
    assert (config.ray_namespace, config.metadata) == ("n", {"k": "v"})
    assert config.default_actor_lifetime == "non_detached"
    assert ray.job_config.JobConfig is JobConfig
    with pytest.raises(TypeError, match="JobConfig"):
        ray.init(job_config={"ray_namespace": "n"})
    assert not ray.is_initialized()


def test_namespace_and_code_search_path(shutdown_only, tmp_path):
    (tmp_path / "job_config_search_path_module.py").write_text("VALUE = 'found'\n")
    ray.init(num_cpus=1, job_config=JobConfig(ray_namespace="from-job-config",
                                              code_search_path=[str(tmp_path)]))
    assert ray.get_runtime_context().namespace == "from-job-config"

    @ray.remote
    def load():
        module = importlib.import_module("job_config_search_path_module")
        return module.VALUE, ray.get_runtime_context().namespace

    assert ray.get(load.remote()) == ("found", "from-job-config")


def test_init_namespace_wins_over_job_config(shutdown_only):
    ray.init(num_cpus=1, namespace="from-init",
             job_config=JobConfig(ray_namespace="from-job-config"))
    assert ray.get_runtime_context().namespace == "from-init"


@ray.remote
class Child:
    def ready(self):
        return "ok"


@ray.remote
class Owner:
    def make_children(self):
        # One child takes the job's default lifetime, one says non_detached.
        self.children = (Child.remote(), Child.options(lifetime="non_detached").remote())
        ray.get([c.ready.remote() for c in self.children])
        return self.children


def _dead(actor) -> bool:
    try:
        ray.get(actor.ready.remote())
        return False
    except exceptions.RayActorError:
        return True


def test_default_actor_lifetime_detached(shutdown_only):
    ray.init(num_cpus=2, job_config=JobConfig(default_actor_lifetime="detached"))
    owner = Owner.remote()
    by_default, non_detached = ray.get(owner.make_children.remote())
    ray.kill(owner)
    # The owner's death takes its non-detached child; the other child took
    # the job's default and outlives it.
    wait_for_condition(lambda: _dead(non_detached), timeout=20)
    assert ray.get(by_default.ready.remote()) == "ok"
    ray.kill(by_default)
