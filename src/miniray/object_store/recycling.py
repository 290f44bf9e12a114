"""Reusing the shared memory of freed objects.

Writing a new object into fresh /dev/shm pages makes the kernel allocate
and zero each page (about 3 GB/s here); writing into pages that a freed
object already faulted in is twice as fast. So a freed object's file is
renamed into a small pool instead of being unlinked, and a new object of
a similar size takes it over.

A file may only be reused once nobody maps it: every reader holds a shared
``flock`` on its file for as long as its mapping lives (see
``client.read``), and the store recycles a file only if it can take an
exclusive lock without waiting. Otherwise it unlinks the file, and readers
keep their pages until they let go.
"""
from __future__ import annotations

import fcntl
import itertools
import os


class FilePool:
    def __init__(self, directory: str):
        self.directory = directory
        self._files: list[tuple[int, str]] = []       # (size, path)
        self._names = itertools.count()
        self.bytes = 0

    def offer(self, path: str, size: int) -> bool:
        """Keep ``path`` for reuse if no process maps it (else False)."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False                      # a reader still maps it
            pooled = os.path.join(self.directory, f"free-{next(self._names)}")
            os.rename(path, pooled)
        finally:
            os.close(fd)                          # releases the lock
        self._files.append((size, pooled))
        self.bytes += size
        return True

    def take(self, size: int) -> str | None:
        """A pooled file of at least ``size`` bytes (and at most twice that)."""
        best = None
        for entry in self._files:
            if size <= entry[0] <= 2 * size and (best is None or entry[0] < best[0]):
                best = entry
        if best is None:
            return None
        self._files.remove(best)
        self.bytes -= best[0]
        return best[1]

    def trim(self, max_bytes: int) -> None:
        """Unlink pooled files (oldest first) until at most ``max_bytes`` remain."""
        while self._files and self.bytes > max_bytes:
            size, path = self._files.pop(0)
            self.bytes -= size
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
