"""Object file access for worker and driver processes (no RPC here).

The flow for a put is: ask the raylet to reserve space (it returns the final
path), :func:`create_and_write` the object, then ask the raylet to seal it.
A get asks the raylet where the object is and :func:`read` s it zero-copy.
"""
from __future__ import annotations

import collections
import errno
import fcntl
import mmap
import os
import threading
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import pyarrow


__all__ = ["create_and_write", "read", "write_bytes"]

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)     # prefault in one call (Linux)


def allocate(fd: int, size: int) -> None:
    """Give the file ``size`` bytes of real backing.

    On tmpfs (/dev/shm) fallocate fails cleanly with ENOSPC when memory is
    short; a sparse ftruncate would instead SIGBUS the writer mid-copy.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)


def open_sized(path: str, size: int) -> int:
    """Open (creating if needed) ``path`` for writing, exactly ``size`` bytes
    long, keeping the pages of a recycled file that is already there."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)   # private
    try:
        current = os.fstat(fd).st_size
        if current > size:
            os.ftruncate(fd, size)
        elif current < size:
            allocate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_and_write(path: str, size: int,
                     write: Callable[[memoryview], None]) -> None:
    """Create ``path`` holding exactly ``size`` bytes produced by ``write``.

    ``write`` gets a writable memoryview over a fresh shared mapping of
    ``path + ".tmp"`` and must fill it without keeping references to it.
    The finished file is atomically renamed to ``path``; on any failure the
    temporary file is removed and the exception propagates.
    """
    tmp = path + ".tmp"
    # No O_TRUNC: the store may have placed a recycled file here whose pages
    # are already faulted in; resize it instead of starting from nothing.
    fd = open_sized(tmp, size)
    try:
        try:
            if size == 0:
                write(memoryview(bytearray()))
            else:
                _write_via_mapping(fd, size, write)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _write_via_mapping(fd: int, size: int, write: Callable[[memoryview], None]) -> None:
    stat = os.fstat(fd)
    key = (stat.st_dev, stat.st_ino)
    mapping = _mappings.take(key, size)
    if mapping is None:
        mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _POPULATE,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)
    view = memoryview(mapping)
    try:
        write(view)
    finally:
        view.release()
    # No msync: readers map the same page-cache pages, so the data is
    # visible to them without forcing it to a disk.
    _mappings.keep(key, mapping)


class _WriteMappings:
    """Writable mappings of files this process wrote, kept for when the store
    hands one of those files back to us recycled: writing through a mapping
    that already exists is a plain memcpy (about 20 GB/s here) instead of
    setting up the page tables of a fresh one. A mapping is only written
    while its file is our reservation's ``.tmp`` file, never while it holds
    an object. Bounded, because a kept mapping keeps its pages alive."""

    MAX_ENTRIES = 4
    MAX_BYTES = 512 << 20

    def __init__(self):
        self._lock = threading.Lock()
        self._maps: collections.OrderedDict = collections.OrderedDict()

    def take(self, key, size: int):
        with self._lock:
            mapping = self._maps.pop(key, None)
        if mapping is not None and len(mapping) != size:
            mapping.close()
            return None
        return mapping

    def keep(self, key, mapping) -> None:
        evicted = []
        with self._lock:
            self._maps[key] = mapping
            total = sum(len(m) for m in self._maps.values())
            while self._maps and (len(self._maps) > self.MAX_ENTRIES
                                  or total > self.MAX_BYTES):
                _, old = self._maps.popitem(last=False)
                total -= len(old)
                evicted.append(old)
        for old in evicted:
            old.close()


_mappings = _WriteMappings()


def write_bytes(path: str, data: bytes | bytearray | memoryview) -> None:
    """Convenience wrapper: store ``data`` as the object file ``path``."""
    src = memoryview(data).cast("B")

    def copy(view: memoryview) -> None:
        view[:] = src

    create_and_write(path, src.nbytes, copy)


def read(path: str) -> "pyarrow.Buffer":
    """Map the sealed object file ``path`` read-only, without copying.

    The returned buffer keeps the mapping alive (the file descriptor is
    closed right away).  Raises FileNotFoundError if the file is gone, e.g.
    evicted or spilled; the caller should then ask the raylet to restore it.
    """
    import pyarrow as pa    # imported on first use: daemons never need it

    # A pyarrow Buffer over a Python mmap: constant time whatever the size
    # (pyarrow's own memory_map().read_buffer() madvises the whole file).
    # The shared flock, held while the mapping lives, stops the store from
    # recycling the file under us (see recycling.py). The mmap keeps a
    # duplicate of the descriptor (sharing the lock) until it is unmapped, so
    # ours is closed at once: one descriptor per mapped object, not two.
    fd = os.open(path, os.O_RDONLY)               # FileNotFoundError if missing
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileNotFoundError(path) from None   # being recycled right now
        stat = os.fstat(fd)
        if os.stat(path).st_ino != stat.st_ino:
            raise FileNotFoundError(path)             # replaced since we opened it
        if stat.st_size == 0:
            return pa.py_buffer(b"")
        mapping = mmap.mmap(fd, stat.st_size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    return pa.py_buffer(mapping)
