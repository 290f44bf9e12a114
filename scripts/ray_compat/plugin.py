"""pytest plugin that runs Ray's Core test files, unchanged, on miniray.

    PYTHONPATH=scripts python -m pytest -p ray_compat.plugin --timeout 60 test_basic.py

(``scripts/ray_conformance.py`` does this for a list of files and writes a
summary). Loaded before collection, it

* makes ``import ray`` load miniray here and in every process the run starts
  (``aliases``: a generated ``ray`` shim first on PYTHONPATH);
* keeps the run apart from anything else on the machine: its own miniray
  temp dir (so ``init()`` never attaches to a ``miniray start`` cluster of
  someone else), and ``RAY_COMPAT_RUN_ID`` in every process it starts, so
  that only those are cleaned up at the end;
* provides Ray's common fixtures (``ray_start_regular``, ``shutdown_only``,
  ``ray_start_cluster`` ..., see ``fixtures``); fixtures that need something
  miniray lacks skip with the reason.

Do not run Ray's own ``conftest.py`` with it: copy the test files alone.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import shutil
import tempfile
import uuid

import pytest

from ray_compat import aliases, procs

_owned_dirs: list[str] = []


def _prepare_environment() -> None:
    """Before miniray is imported: settings every process of the run inherits."""
    os.environ.setdefault(procs.RUN_ID_VAR, uuid.uuid4().hex)
    for var in ("RAY_ADDRESS", "MINIRAY_ADDRESS"):
        os.environ.pop(var, None)
    if "MINIRAY_TEMP_DIR" not in os.environ:
        temp = tempfile.mkdtemp(prefix="ray_compat_tmp_")
        _owned_dirs.append(temp)
        os.environ["MINIRAY_TEMP_DIR"] = os.path.join(temp, "miniray")
    shim = tempfile.mkdtemp(prefix="ray_compat_shim_")
    _owned_dirs.append(shim)
    aliases.write_shim(shim)
    os.environ["PYTHONPATH"] = aliases.subprocess_pythonpath(
        shim, os.environ.get("PYTHONPATH"))


def _remove_owned_dirs() -> None:
    for directory in _owned_dirs:
        shutil.rmtree(directory, ignore_errors=True)


_prepare_environment()
atexit.register(_remove_owned_dirs)     # also when loaded outside a pytest run
aliases.install()

import miniray  # noqa: E402  (after the environment is set)

from ray_compat import fixtures as _fx  # noqa: E402

DEFAULT_TIMEOUT_S = 60


# --- hooks ---------------------------------------------------------------------------
def pytest_configure(config):
    if getattr(config.option, "timeout", None) in (None, 0):
        config.option.timeout = DEFAULT_TIMEOUT_S      # every test gets a timeout


def pytest_unconfigure(config):
    miniray.shutdown()
    leftovers = procs.run_processes(os.environ[procs.RUN_ID_VAR])
    procs.terminate(leftovers)
    _remove_owned_dirs()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # While a test and its fixtures run, using a Ray internal skips the test.
    aliases.set_in_test(True)
    try:
        yield
    finally:
        aliases.set_in_test(False)
        # A cluster a test made itself and left up (Ray's Cluster shuts down
        # at exit; a test skipped half-way never gets there) would hold the
        # machine's "current cluster" for the next tests: end it here.
        from ray_compat.cluster_utils import shutdown_leftovers
        shutdown_leftovers()


# The exception as a traceback line, or its repr inside another message.
_INTERNAL_IN_WORKER = re.compile(
    r"RayInternalUnavailable(?:: |\(['\"])not available in miniray: ([^\n'\"]+)")


def _internal_used_in_worker(exc: BaseException | None) -> str | None:
    """The Ray internal a task or actor needed, if that is why ``exc`` came
    back from a worker (where ``Internal`` raises instead of skipping)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        match = _INTERNAL_IN_WORKER.search(str(exc))
        if match:
            return match.group(1).strip()
        exc = exc.__cause__ or exc.__context__
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed and call.excinfo is not None:
        reason = _internal_used_in_worker(call.excinfo.value)
        if reason:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0,
                               f"Skipped: {reason} (used in a task or actor)")


@pytest.fixture(autouse=True)
def _no_session_leaks_between_tests():
    """A test that inits miniray itself and then fails or is skipped half way
    (say, at a Ray internal) would leave the session to the next test, whose
    fixture's ``init`` would then fail. A session this test started (not one
    a module- or class-scoped fixture holds) ends with it."""
    held_before = miniray.is_initialized()      # wider fixtures are set up first
    yield
    if not held_before and miniray.is_initialized():
        miniray.shutdown()


# --- fixtures: a local cluster -------------------------------------------------------
@pytest.fixture
def maybe_external_redis():
    yield          # Ray runs its tests against an external Redis only on request


@pytest.fixture
def external_redis():
    pytest.skip("an external Redis for the GCS is a Ray internal; miniray has none")


@pytest.fixture
def shutdown_only():
    yield None
    miniray.shutdown()


@pytest.fixture
def ray_start_regular(request):
    with _fx.ray_start(**_fx.params(request)) as context:
        yield context


@pytest.fixture(scope="module")
def ray_start_regular_shared(request):
    with _fx.ray_start(**_fx.params(request)) as context:
        yield context


@pytest.fixture(scope="module", params=[{"local_mode": True}, {"local_mode": False}])
def ray_start_shared_local_modes(request):
    with _fx.ray_start(**_fx.params(request)) as context:
        yield context


@pytest.fixture
def ray_start_no_cpu(request):
    with _fx.ray_start(**{"num_cpus": 0, **_fx.params(request)}) as context:
        yield context


@pytest.fixture
def ray_start_2_cpus(request):
    with _fx.ray_start(**{"num_cpus": 2, **_fx.params(request)}) as context:
        yield context


@pytest.fixture
def ray_start_10_cpus(request):
    with _fx.ray_start(**{"num_cpus": 10, **_fx.params(request)}) as context:
        yield context


@pytest.fixture
def ray_start_object_store_memory(request):
    store_size = request.param
    with _fx.ray_start(object_store_memory=store_size, namespace=None):
        yield store_size


@pytest.fixture(scope="class")
def class_ray_instance():
    yield miniray.init()
    miniray.shutdown()


@pytest.fixture
def ray_start_with_dashboard():
    pytest.skip("miniray has no dashboard")


# --- fixtures: several nodes ---------------------------------------------------------
@pytest.fixture
def ray_start_cluster(request):
    with _fx.ray_start_cluster(**_fx.params(request)) as cluster:
        yield cluster


@pytest.fixture
def ray_start_cluster_enabled(request):
    with _fx.ray_start_cluster(**_fx.params(request)) as cluster:
        yield cluster


@pytest.fixture
def ray_start_cluster_init(request):
    with _fx.ray_start_cluster(**{"do_init": True, **_fx.params(request)}) as cluster:
        yield cluster


@pytest.fixture
def ray_start_cluster_head(request):
    args = {"do_init": True, "num_nodes": 1, **_fx.params(request)}
    with _fx.ray_start_cluster(**args) as cluster:
        yield cluster


@pytest.fixture
def ray_start_cluster_head_with_external_redis(request):
    """Ray keeps its GCS tables in an external Redis for GCS fault
    tolerance; miniray's GCS keeps them itself and its supervisor restarts
    it, so this is a plain head node."""
    args = {"do_init": True, "num_nodes": 1, **_fx.params(request)}
    with _fx.ray_start_cluster(**args) as cluster:
        yield cluster


@pytest.fixture
def ray_start_cluster_2_nodes(request):
    args = {"do_init": True, "num_nodes": 2, **_fx.params(request)}
    with _fx.ray_start_cluster(**args) as cluster:
        yield cluster


@pytest.fixture
def ray_start_cluster_head_with_env_vars(request, monkeypatch):
    args = {"do_init": True, "num_nodes": 1, **_fx.params(request)}
    for name, value in args.pop("env_vars", {}).items():
        monkeypatch.setenv(name, value)       # the nodes inherit them
    with _fx.ray_start_cluster(**args) as cluster:
        yield cluster


@pytest.fixture
def two_node_cluster():
    cluster = _fx.Cluster()
    try:
        for _ in range(2):
            remote_node = cluster.add_node(num_cpus=1)
        miniray.init(address=cluster.address)
        yield cluster, remote_node
    finally:
        miniray.shutdown()
        cluster.shutdown()


@pytest.fixture(params=["ray_client", "no_ray_client"])
def start_cluster(ray_start_cluster_enabled, request):
    if request.param == "ray_client":
        pytest.skip("Ray Client (ray://) is not part of miniray")
    cluster = ray_start_cluster_enabled
    cluster.add_node(num_cpus=4)
    yield cluster, cluster.address


@pytest.fixture
def call_ray_start(request):
    with _fx.call_ray_start_context(request) as address:
        yield address


# --- fixtures that need Ray internals ------------------------------------------------
@pytest.fixture
def error_pubsub():
    pytest.skip("Ray-internal API: GCS error pubsub channel (error_pubsub fixture)")


@pytest.fixture
def log_pubsub():
    pytest.skip("Ray-internal API: GCS log pubsub channel (log_pubsub fixture)")


@pytest.fixture
def set_enable_auto_connect():
    # Ray's fixture switches auto-init off via ray._private.auto_init_hook
    # (whatever its parameter says); miniray always auto-initialises.
    pytest.skip("Ray-internal API: ray._private.auto_init_hook.enable_auto_connect")


@pytest.fixture(params=[True, False])
def start_http_proxy(request):
    if request.param:
        pytest.skip("needs a local HTTP proxy (proxy.py) and Ray's internal "
                    "RAY_grpc_enable_http_proxy switch")
    # Ray: with a proxy that is not used, a local cluster must still work.
    yield {"http_proxy": "http://example.com", "https_proxy": "http://example.com"}


@pytest.fixture
def event_loop():
    """pytest-asyncio's fixture before 1.0, which Ray's async tests still ask for."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def propagate_logs():
    loggers = [logging.getLogger(name) for name in ("ray", "miniray")]
    for logger in loggers:
        logger.propagate = True
    yield
    for logger in loggers:
        logger.propagate = False
