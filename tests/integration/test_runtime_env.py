"""Runtime environments on a real two-node cluster: code and variables
travel with the job, the task and the actor; workers are only shared by
tasks of the same env; a broken env fails its task or actor clearly and
the cluster carries on."""
from __future__ import annotations

import os
import socket
import sys
import textwrap

import pytest

import miniray as ray
from miniray import exceptions
from miniray.testing import Cluster, wait_for_condition
from miniray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@pytest.fixture(scope="module")
def code(tmp_path_factory):
    """A working_dir with a module and a data file, and a py_modules package."""
    root = tmp_path_factory.mktemp("code")
    wd = root / "project"
    (wd / "data").mkdir(parents=True)
    (wd / "helper_mod.py").write_text("WHERE = 'working_dir'\n")
    (wd / "data" / "input.txt").write_text("payload\n")
    (wd / "huge.bin").write_bytes(b"\0" * 1000)
    (wd / ".gitignore").write_text("*.bin\n")
    pkg = root / "shipped_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("NAME = 'shipped_pkg'\n")
    single = root / "single_mod.py"
    single.write_text("NAME = 'single_mod'\n")
    return {"wd": str(wd), "pkg": str(pkg), "single": str(single)}


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster()
    cluster.add_node(num_cpus=2)
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.fixture
def driver(cluster):
    yield cluster
    ray.shutdown()


def _on(node):
    return NodeAffinitySchedulingStrategy(node.node_id.hex(), soft=False)


@ray.remote
def probe():
    import helper_mod
    with open("data/input.txt") as f:
        data = f.read().strip()
    return {"module": helper_mod.WHERE, "data": data, "cwd": os.getcwd(),
            "huge": os.path.exists("huge.bin"), "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "A": os.environ.get("A"), "B": os.environ.get("B")}


@ray.remote
class Prober:
    def probe(self):
        import helper_mod
        return {"module": helper_mod.WHERE, "cwd": os.getcwd(),
                "node": ray.get_runtime_context().get_node_id(),
                "env": ray.get_runtime_context().runtime_env}


def test_working_dir_reaches_tasks_and_actors_on_both_nodes(driver, code):
    driver.connect(runtime_env={"working_dir": code["wd"]})
    nodes = [driver.head_node, *driver.worker_nodes]
    results = ray.get([probe.options(scheduling_strategy=_on(n)).remote() for n in nodes])
    assert {r["node"] for r in results} == {n.node_id.hex() for n in nodes}
    for r in results:
        assert r["module"] == "working_dir" and r["data"] == "payload"
        assert not r["huge"]                         # .gitignore'd: not shipped
        assert os.path.realpath(r["cwd"]) != os.path.realpath(code["wd"])  # a copy
    actors = [Prober.options(scheduling_strategy=_on(n)).remote() for n in nodes]
    for actor, node in zip(actors, nodes):
        info = ray.get(actor.probe.remote())
        assert info["module"] == "working_dir" and info["node"] == node.node_id.hex()
        assert info["env"]["working_dir"].startswith("gcs://_miniray_pkg_")
    context_env = ray.get_runtime_context().runtime_env
    assert context_env["working_dir"] == info["env"]["working_dir"]


def test_env_vars_per_job_task_and_actor(driver, code):
    driver.connect(runtime_env={"env_vars": {"A": "job", "B": "job"},
                                "working_dir": code["wd"]})
    job = ray.get(probe.remote())
    task = ray.get(probe.options(runtime_env={"env_vars": {"B": "task"}}).remote())
    assert (job["A"], job["B"]) == ("job", "job")
    assert (task["A"], task["B"]) == ("job", "task")     # env_vars merge
    assert task["pid"] != job["pid"]           # another env: another worker

    @ray.remote
    def nested():
        # A child inherits its parent's env.
        return ray.get(probe.remote())["B"]

    assert ray.get(nested.options(runtime_env={"env_vars": {"B": "parent"}}).remote()) \
        == "parent"

    @ray.remote
    class Env:
        def get(self, name):
            return os.environ.get(name)

    actor = Env.options(runtime_env={"env_vars": {"A": "actor"}}).remote()
    assert ray.get([actor.get.remote("A"), actor.get.remote("B")]) == ["actor", "job"]


def test_workers_are_reused_only_within_one_env(driver):
    driver.connect()

    @ray.remote
    def pid():
        return os.getpid(), os.environ.get("FLAVOUR")

    head = _on(driver.head_node)
    plain = {ray.get(pid.options(scheduling_strategy=head).remote()) for _ in range(3)}
    sweet = {ray.get(pid.options(scheduling_strategy=head, runtime_env={
        "env_vars": {"FLAVOUR": "sweet"}}).remote()) for _ in range(3)}
    assert {f for _, f in plain} == {None} and {f for _, f in sweet} == {"sweet"}
    assert not {p for p, _ in plain} & {p for p, _ in sweet}


def test_py_modules_packages_and_single_files(driver, code):
    import importlib
    sys.path.insert(0, os.path.dirname(code["pkg"]))
    try:
        shipped = importlib.import_module("shipped_pkg")
    finally:
        sys.path.pop(0)
    driver.connect(runtime_env={"py_modules": [shipped, code["single"]]})

    @ray.remote
    def names():
        import shipped_pkg
        import single_mod
        return shipped_pkg.NAME, single_mod.NAME

    results = ray.get([names.options(scheduling_strategy=_on(n)).remote()
                       for n in [driver.head_node, *driver.worker_nodes]])
    assert results == [("shipped_pkg", "single_mod")] * 2


def test_bad_setup_fails_the_task_and_actor_and_the_cluster_carries_on(driver, code):
    driver.connect()
    missing = "gcs://_miniray_pkg_" + "0" * 40 + ".zip"

    @ray.remote
    def ok():
        return "fine"

    with pytest.raises(ValueError, match="is not in the cluster"):
        ok.options(runtime_env={"working_dir": missing}).remote()
    broken = {"pip": {"packages": ["miniray-no-such-package-xyz==0.0.1"],
                      "pip_install_options": ["--no-index"]}}
    with pytest.raises(exceptions.RuntimeEnvSetupError, match="pip install failed"):
        ray.get(ok.options(runtime_env=broken).remote(), timeout=120)
    actor = Prober.options(runtime_env=broken).remote()
    with pytest.raises(exceptions.RuntimeEnvSetupError, match="No matching distribution"):
        ray.get(actor.probe.remote(), timeout=120)
    assert ray.get(ok.remote()) == "fine"


def test_bad_runtime_env_is_refused_where_it_is_given(driver, code):
    driver.connect()

    @ray.remote
    def ok():
        return 1

    with pytest.raises(ValueError, match="'conda' is not supported"):
        ok.options(runtime_env={"conda": "myenv"})
    with pytest.raises(ValueError, match="does not exist"):
        ok.options(runtime_env={"working_dir": code["wd"] + "-missing"}).remote()
    with pytest.raises(TypeError, match="env_vars"):
        Prober.options(runtime_env={"env_vars": {"A": 1}})
    assert ray.get(ok.remote()) == 1


def test_setup_timeout_fails_clearly(driver):
    driver.connect()

    @ray.remote
    def ok():
        return 1

    # An install that cannot finish in 1 s (a package index that never answers).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        index = f"http://127.0.0.1:{listener.getsockname()[1]}/simple"
        slow = {"pip": {"packages": ["anything"],
                        "pip_install_options": ["--index-url", index, "--timeout", "30"]},
                "config": {"setup_timeout_seconds": 1}}
        with pytest.raises(exceptions.RuntimeEnvSetupError, match="longer than 1 s"):
            ray.get(ok.options(runtime_env=slow).remote(), timeout=60)
    assert ray.get(ok.remote()) == 1


def test_unused_packages_are_deleted_past_the_cache_size(tmp_path, code, monkeypatch):
    monkeypatch.setenv("MINIRAY_RUNTIME_ENV_CACHE_BYTES", "0")
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cluster.connect()
        actor = Prober.options(runtime_env={"working_dir": code["wd"]}).remote()
        where = ray.get(actor.probe.remote())["cwd"]
        assert os.path.isdir(where)
        ray.kill(actor)
        wait_for_condition(lambda: not os.path.exists(where), timeout=30)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _index_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _index_reachable(),
                    reason="needs the package index (pypi.org) to install a package")
def test_pip_installs_into_a_cached_virtualenv(driver):
    driver.connect()

    @ray.remote(runtime_env={"pip": ["pip-install-test==0.5"]})
    def installed():
        import miniray                          # noqa: F401 - still importable
        import pip_install_test                 # noqa: F401
        return sys.prefix, os.getpid()

    @ray.remote
    def plain():
        try:
            import pip_install_test             # noqa: F401
            return True
        except ImportError:
            return False

    prefix, _ = ray.get(installed.remote(), timeout=300)
    assert "runtime_resources" in prefix and prefix != sys.prefix
    again = ray.get([installed.remote() for _ in range(2)], timeout=60)
    assert {p for p, _ in again} == {prefix}            # the cached env, reused
    assert ray.get(plain.remote()) is False             # only that env has it
