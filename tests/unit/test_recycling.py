"""Unit tests for miniray.object_store.recycling.FilePool (on small files in tmp_path)."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from miniray.object_store.recycling import FilePool


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pool"
    directory.mkdir()
    return directory


@pytest.fixture
def pool(pool_dir: Path) -> FilePool:
    return FilePool(str(pool_dir))


def make_file(tmp_path: Path, name: str, size: int) -> str:
    path = tmp_path / name
    path.write_bytes(b"x" * size)
    return str(path)


def pooled(pool: FilePool, tmp_path: Path, *sizes: int) -> list[str]:
    """Offer one file per size; return where each landed, in offer order.

    A rename keeps the inode, so each pooled file is found by its inode.
    """
    inodes = []
    for i, size in enumerate(sizes):
        path = make_file(tmp_path, f"obj-{i}", size)
        inodes.append(os.stat(path).st_ino)
        assert pool.offer(path, size)
    by_inode = {entry.inode(): entry.path for entry in os.scandir(pool.directory)}
    return [by_inode[inode] for inode in inodes]


class SharedLock:
    """A reader's mapping: its own open file description with LOCK_SH held."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def release(self) -> None:
        os.close(self.fd)


# --- offer -----------------------------------------------------------------------------

def test_offer_renames_an_unlocked_file_into_the_pool(pool, pool_dir, tmp_path):
    path = make_file(tmp_path, "obj", 100)
    assert pool.offer(path, 100) is True
    assert not os.path.exists(path)
    [kept] = os.listdir(pool_dir)
    assert (pool_dir / kept).read_bytes() == b"x" * 100    # same file, moved
    assert pool.bytes == 100


def test_offer_refuses_a_file_a_reader_still_holds(pool, pool_dir, tmp_path):
    path = make_file(tmp_path, "obj", 100)
    reader = SharedLock(path)
    try:
        assert pool.offer(path, 100) is False
        assert os.path.exists(path)                       # left for the caller to unlink
        assert os.listdir(pool_dir) == []
        assert pool.bytes == 0
        assert pool.take(100) is None
    finally:
        reader.release()
    assert pool.offer(path, 100) is True                  # reader gone: reusable


def test_offer_does_not_keep_a_lock_on_the_pooled_file(pool, tmp_path):
    [kept] = pooled(pool, tmp_path, 100)
    fd = os.open(kept, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)    # would raise if still held
    finally:
        os.close(fd)


def test_offer_of_a_missing_file_is_refused(pool, tmp_path):
    assert pool.offer(str(tmp_path / "gone"), 100) is False
    assert pool.bytes == 0


def test_pooled_names_are_unique(pool, pool_dir, tmp_path):
    paths = pooled(pool, tmp_path, 10, 10, 10)
    assert len(set(paths)) == 3
    assert len(os.listdir(pool_dir)) == 3
    assert all(os.path.dirname(p) == str(pool_dir) for p in paths)


# --- take ------------------------------------------------------------------------------

def test_take_returns_the_smallest_file_between_size_and_twice_size(pool, tmp_path):
    small, big, medium, huge = pooled(pool, tmp_path, 90, 180, 120, 1000)
    assert pool.take(100) == medium
    assert pool.bytes == 90 + 180 + 1000
    assert pool.take(100) == big
    assert pool.take(100) is None                        # 90 too small, 1000 too big
    assert pool.bytes == 90 + 1000


def test_take_bounds_are_inclusive(pool, tmp_path):
    exact, double = pooled(pool, tmp_path, 100, 200)
    assert pool.take(100) == exact
    assert pool.take(100) == double
    assert pool.bytes == 0


def test_take_from_an_empty_pool(pool):
    assert pool.take(1) is None


def test_taken_file_is_not_handed_out_again(pool, tmp_path):
    [only] = pooled(pool, tmp_path, 100)
    assert pool.take(100) == only
    assert os.path.exists(only)                          # the caller now owns it
    assert pool.take(100) is None
    pool.trim(0)
    assert os.path.exists(only)                          # trim doesn't touch it


# --- trim ------------------------------------------------------------------------------

def test_trim_removes_oldest_first_until_under_the_limit(pool, tmp_path):
    first, second, third = pooled(pool, tmp_path, 100, 200, 300)
    pool.trim(500)
    assert not os.path.exists(first)
    assert os.path.exists(second) and os.path.exists(third)
    assert pool.bytes == 500
    pool.trim(350)
    assert not os.path.exists(second)
    assert pool.bytes == 300
    assert pool.take(300) == third


def test_trim_under_the_limit_does_nothing(pool, tmp_path):
    paths = pooled(pool, tmp_path, 100, 200)
    pool.trim(300)
    assert all(os.path.exists(p) for p in paths)
    assert pool.bytes == 300


def test_trim_to_zero_empties_the_pool(pool, pool_dir, tmp_path):
    pooled(pool, tmp_path, 100, 200, 300)
    pool.trim(0)
    assert os.listdir(pool_dir) == []
    assert pool.bytes == 0
    assert pool.take(100) is None


def test_trim_tolerates_files_already_gone(pool, tmp_path):
    first, second = pooled(pool, tmp_path, 100, 200)
    os.unlink(first)
    pool.trim(0)
    assert pool.bytes == 0
    assert not os.path.exists(second)


def test_bytes_tracks_offer_take_and_trim(pool, tmp_path):
    pooled(pool, tmp_path, 10, 20, 40, 80)
    assert pool.bytes == 150
    pool.take(35)                                         # the 40
    assert pool.bytes == 110
    pool.trim(100)                                        # drops the 10 (oldest)
    assert pool.bytes == 100
