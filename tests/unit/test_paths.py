"""miniray.common.paths: the per-user temp root and private files, checked
against paths another user planted (a different owner needs root to
simulate; a symlink does not)."""
from __future__ import annotations

import os
import stat
import tempfile

import pytest

from miniray.common import config, paths
from miniray.object_store.store import PlasmaStore

OTHER_UID = 65534          # "nobody"
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="chown to another user needs root")


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """<tmp> is tmp_path and MINIRAY_TEMP_DIR is unset: the default root is
    tmp_path/miniray-<uid>."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(config, "TEMP_DIR", "")
    return tmp_path


def test_default_root_is_per_user_and_private(tmp):
    root = paths.temp_root()
    assert root == str(tmp / f"miniray-{os.geteuid()}")
    assert mode(root) == 0o700 and os.lstat(root).st_uid == os.geteuid()


def test_root_of_ours_with_loose_mode_is_made_private(tmp):
    root = tmp / f"miniray-{os.geteuid()}"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)
    paths.temp_root()
    assert mode(root) == 0o700


@needs_root
def test_root_planted_by_another_user_is_refused(tmp):
    root = tmp / f"miniray-{os.geteuid()}"
    root.mkdir(mode=0o700)
    os.chown(root, OTHER_UID, OTHER_UID)
    for create in (True, False):
        with pytest.raises(paths.UnsafePathError, match="owned by uid 65534"):
            paths.temp_root(create=create)


def test_root_that_is_a_symlink_is_refused(tmp):
    elsewhere = tmp / "attacker"
    elsewhere.mkdir(mode=0o700)
    os.symlink(elsewhere, tmp / f"miniray-{os.geteuid()}")
    with pytest.raises(paths.UnsafePathError, match="symbolic link"):
        paths.temp_root()
    with pytest.raises(paths.UnsafePathError):
        paths.current_cluster_file()


def test_root_that_is_a_file_is_refused(tmp):
    (tmp / f"miniray-{os.geteuid()}").write_text("x")
    with pytest.raises(paths.UnsafePathError, match="not a directory"):
        paths.temp_root()


def test_explicit_root_is_created_and_must_not_be_writable_by_others(tmp_path, monkeypatch):
    explicit = tmp_path / "a" / "b" / "miniray"
    monkeypatch.setattr(config, "TEMP_DIR", str(explicit))
    assert paths.temp_root() == str(explicit) and mode(explicit) == 0o700
    os.chmod(explicit, 0o757)
    with pytest.raises(paths.UnsafePathError, match="writable by other users"):
        paths.temp_root()
    os.chmod(explicit, 0o755)           # readable is the user's choice
    assert paths.temp_root() == str(explicit)


def test_private_file_round_trip(tmp_path):
    path = str(tmp_path / "f")
    paths.write_private_file(path, "hello\n")
    assert mode(path) == 0o600
    assert paths.read_private_file(path, secret=True) == b"hello\n"
    paths.write_private_file(path, b"again")          # replaces it atomically
    assert paths.read_private_file(path) == b"again"
    assert os.listdir(tmp_path) == ["f"]
    assert paths.read_private_file(str(tmp_path / "missing")) is None


def test_read_private_file_refuses_unsafe_files(tmp_path):
    target = tmp_path / "target"
    paths.write_private_file(str(target), "x")
    os.symlink(target, tmp_path / "link")
    with pytest.raises(paths.UnsafePathError, match="symbolic link"):
        paths.read_private_file(str(tmp_path / "link"))
    os.chmod(target, 0o666)
    with pytest.raises(paths.UnsafePathError, match="accessible to other users"):
        paths.read_private_file(str(target))
    os.chmod(target, 0o644)
    assert paths.read_private_file(str(target)) == b"x"
    with pytest.raises(paths.UnsafePathError):
        paths.read_private_file(str(target), secret=True)
    with pytest.raises(paths.UnsafePathError, match="not a regular file"):
        paths.read_private_file(str(tmp_path))


@needs_root
def test_read_private_file_refuses_another_users_file(tmp_path):
    path = str(tmp_path / "planted")
    paths.write_private_file(path, "127.0.0.1:1\n")
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(paths.UnsafePathError, match="owned by uid 65534"):
        paths.read_private_file(path)


def test_cluster_auth_dir_is_private_and_named_safely(tmp):
    path = paths.cluster_auth_dir("localhost:6379")
    assert path == os.path.join(paths.temp_root(), "cluster_127.0.0.1_6379")
    assert mode(path) == 0o700
    odd = paths.cluster_auth_dir("../../etc/x:1")
    assert os.path.dirname(odd) == paths.temp_root()
    assert paths.cluster_auth_dir("[::1]:7", create=False).endswith("cluster____1__7")


@needs_root
def test_cluster_auth_dir_planted_by_another_user_is_refused(tmp):
    planted = os.path.join(paths.temp_root(), "cluster_127.0.0.1_6379")
    os.mkdir(planted, 0o777)
    os.chown(planted, OTHER_UID, OTHER_UID)
    for create in (True, False):
        with pytest.raises(paths.UnsafePathError):
            paths.cluster_auth_dir("127.0.0.1:6379", create=create)


def test_private_log_is_0600_and_never_follows_a_link(tmp_path):
    fd = paths.open_private_log(str(tmp_path / "x.log"))
    os.close(fd)
    assert mode(tmp_path / "x.log") == 0o600
    os.symlink(tmp_path / "x.log", tmp_path / "link.log")
    with pytest.raises(OSError):
        paths.open_private_log(str(tmp_path / "link.log"))


def test_store_refuses_a_planted_store_directory(tmp_path):
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp_path / "shm")
    with pytest.raises(paths.UnsafePathError):
        PlasmaStore(str(tmp_path / "shm"), 1000, str(tmp_path / "spill"))


@needs_root
def test_store_refuses_a_store_directory_of_another_user(tmp_path):
    planted = tmp_path / "shm"
    planted.mkdir(mode=0o777)
    os.chown(planted, OTHER_UID, OTHER_UID)
    with pytest.raises(paths.UnsafePathError, match="owned by uid"):
        PlasmaStore(str(planted), 1000, str(tmp_path / "spill"))


def test_store_files_are_private(tmp_path):
    from miniray.common.ids import ObjectID, WorkerID
    from miniray.object_store import client
    store = PlasmaStore(str(tmp_path / "shm"), 1000, str(tmp_path / "spill"))
    try:
        assert mode(store.directory) == mode(store.spill_directory) == 0o700
        ids = [ObjectID.from_random() for _ in range(3)]
        for oid in ids:           # the third spills the first
            path = store.reserve(oid, 400, WorkerID.from_random())
            client.write_bytes(path, b"s" * 400)
            store.seal(oid)
        assert os.listdir(store.spill_directory) == [ids[0].hex()]
        for name in os.listdir(store.directory):
            assert mode(os.path.join(store.directory, name)) == 0o600
        assert mode(store.spill_path(ids[0])) == 0o600
    finally:
        store.close()
