"""Private files (issue 8, item 3): what a running cluster writes is its
user's alone, and paths another user planted under the temp root never make
init() attach to their cluster.

A different owner is simulated with os.chown to "nobody" (needs root); a
symlink or a world-writable file needs no privileges.
"""
from __future__ import annotations

import glob
import os
import stat
import tempfile

import numpy as np
import pytest

import miniray
from miniray import node as node_module
from miniray.common import config, paths
from miniray.testing import Cluster, wait_for_condition

pytestmark = pytest.mark.timeout(90)

OTHER_UID = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="chown to another user needs root")


@pytest.fixture
def private_root(tmp_path, monkeypatch):
    """This test's temp root (MINIRAY_TEMP_DIR), with no address in the env."""
    root = tmp_path / "root"
    monkeypatch.setattr(config, "TEMP_DIR", str(root))
    for name in ("MINIRAY_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return root


@pytest.fixture(scope="module")
def attacker(tmp_path_factory):
    """Another cluster (standing in for one another user runs), with its
    files in a temp root of its own."""
    root = str(tmp_path_factory.mktemp("attacker"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "TEMP_DIR", root)
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0))
    yield cluster.address
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "TEMP_DIR", root)      # where its files are
        cluster.shutdown()
    assert not glob.glob(os.path.join(root, "cluster_*"))


def walk(top: str) -> list[str]:
    found = [top]
    for parent, dirs, files in os.walk(top):
        found += [os.path.join(parent, n) for n in dirs + files]
    return found


def assert_private(path: str) -> None:
    st = os.lstat(path)
    assert st.st_uid == os.geteuid(), path
    assert not stat.S_ISLNK(st.st_mode), path
    expected = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0, \
        f"{path} has mode {stat.S_IMODE(st.st_mode):o}, expected {expected:o}"


# --- permissions --------------------------------------------------------------------
def test_files_of_a_running_cluster_are_private(private_root):
    """`miniray start`-style daemons (log files), the current-cluster file,
    objects in shared memory and spilled to disk: nothing readable by others."""
    node = node_module.start_head(daemon=True, num_cpus=1,
                                  object_store_memory=64 * 1024 * 1024)
    try:
        node_module.write_current_cluster(node.gcs_address)
        miniray.init(address=node.gcs_address)
        refs = [miniray.put(np.full(3 * 1024 * 1024, i, dtype=np.int64))  # 24 MiB each
                for i in range(3)]

        @miniray.remote
        def big():
            return np.ones(2 * 1024 * 1024)

        refs.append(big.remote())
        assert miniray.get(refs[-1]).sum() == 2 * 1024 * 1024
        [info] = [n for n in node_module.get_nodes(node.gcs_address)
                  if n.node_id == node.node_id]
        spill = glob.glob(os.path.join(node.session_dir, "spill-*"))
        wait_for_condition(lambda: spill and os.listdir(spill[0]), timeout=20)
        logs = os.listdir(os.path.join(node.session_dir, "logs"))
        assert "gcs.log" in logs and any(n.startswith("raylet-") for n in logs)
        store = info.store_directory
        assert os.listdir(store)

        checked = walk(str(private_root)) + walk(store)
        assert os.path.join(str(private_root), "current_cluster") in checked
        for path in checked:
            assert_private(path)
        assert miniray.get(refs[0])[0] == 0          # restored from the spill file
    finally:
        miniray.shutdown()
        node.stop()
        node_module.forget_current_cluster()
    assert not glob.glob(os.path.join(str(private_root), "session_*"))


# --- planting attacks -----------------------------------------------------------------
def plant_current_cluster(root, address: str, how: str) -> None:
    os.makedirs(root, mode=0o700, exist_ok=True)
    target = os.path.join(root, "current_cluster")
    if how == "symlink":
        elsewhere = os.path.join(os.path.dirname(root), "planted")
        with open(elsewhere, "w") as f:
            f.write(address + "\n")
        os.symlink(elsewhere, target)
        return
    paths.write_private_file(target, address + "\n")
    if how == "other_owner":
        os.chown(target, OTHER_UID, OTHER_UID)
    elif how == "world_writable":
        os.chmod(target, 0o666)


@pytest.mark.parametrize("how", [pytest.param("other_owner", marks=needs_root),
                                 "symlink", "world_writable"])
def test_planted_current_cluster_is_ignored(private_root, attacker, how, monkeypatch):
    plant_current_cluster(str(private_root), attacker, how)
    assert node_module.read_current_cluster() is None
    # "auto" then looks for this user's running clusters; the attacker's
    # stands in for another user's, which that scan never sees (below).
    monkeypatch.setattr(node_module, "local_clusters", lambda: [])
    with pytest.raises(ConnectionError, match="Could not find any running"):
        miniray.init(address="auto")


def test_auto_never_finds_another_users_cluster(attacker, monkeypatch):
    """The scan behind address="auto" keeps to the caller's own processes:
    seen as another user, the (running) attacker cluster is not found."""
    assert attacker in node_module.local_clusters()
    monkeypatch.setattr(node_module.os, "getuid", lambda: OTHER_UID)
    assert attacker not in node_module.local_clusters()


def test_init_starts_its_own_cluster_instead_of_a_planted_one(private_root, attacker):
    plant_current_cluster(str(private_root), attacker, "symlink")
    try:
        context = miniray.init(num_cpus=1)
        assert context.address_info["gcs_address"] != attacker     # a new cluster
        assert os.path.dirname(context.address_info["session_dir"]) == str(private_root)

        @miniray.remote
        def f(x):
            return x + 1

        assert miniray.get(f.remote(1)) == 2
    finally:
        miniray.shutdown()


@pytest.mark.parametrize("how", [pytest.param("other_owner", marks=needs_root),
                                 "symlink"])
def test_planted_temp_root_is_refused(tmp_path, monkeypatch, attacker, how):
    """The default root, <tmp>/miniray-<uid>, made by someone else before we
    ever ran (with their cluster's address in it): init() refuses to use it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(config, "TEMP_DIR", "")
    for name in ("MINIRAY_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    theirs = tmp_path / "theirs"
    plant_current_cluster(str(theirs), attacker, "plain")
    root = tmp_path / f"miniray-{os.geteuid()}"
    if how == "symlink":
        os.symlink(theirs, root)
    else:
        os.rename(theirs, root)
        for path in walk(str(root)):
            os.chown(path, OTHER_UID, OTHER_UID)
    assert node_module.read_current_cluster() is None
    with pytest.raises(ConnectionError):
        miniray.init(address="auto")
    with pytest.raises(paths.UnsafePathError):
        miniray.init(num_cpus=1)
    assert not glob.glob(os.path.join(str(root), "session_*"))


def test_init_temp_dir_option_is_honoured_and_checked(tmp_path, monkeypatch):
    """init(_temp_dir=...) as in Ray: the session goes there, checked like
    MINIRAY_TEMP_DIR (a directory others may write to is refused)."""
    monkeypatch.setattr(config, "TEMP_DIR", "")
    monkeypatch.setenv("MINIRAY_TEMP_DIR", "")      # init sets it: restored after
    for name in ("MINIRAY_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(paths.UnsafePathError, match="writable by other users"):
        miniray.init(num_cpus=1, _temp_dir=str(shared))
    mine = tmp_path / "mine"
    try:
        context = miniray.init(num_cpus=1, _temp_dir=str(mine))
        assert os.path.dirname(context.address_info["session_dir"]) == str(mine)
        assert stat.S_IMODE(os.stat(mine).st_mode) == 0o700
    finally:
        miniray.shutdown()
    assert not glob.glob(os.path.join(str(mine), "session_*"))
