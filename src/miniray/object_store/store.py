"""The node's object store, hosted by the raylet.

:class:`PlasmaStore` owns the accounting (a :class:`StorePolicy`) and applies
its decisions to files: one file per object in ``directory`` (normally under
/dev/shm) and spilled copies in ``spill_directory`` (on disk).  It never
writes new objects itself; workers do that with
:func:`miniray.object_store.client.create_and_write` into the path that
:meth:`PlasmaStore.reserve` returns.  All methods are thread-safe.
"""
from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from typing import Iterable

from miniray.common.ids import ObjectID, WorkerID
from miniray.common.paths import PRIVATE_FILE_MODE, ensure_private_dir
from miniray.exceptions import ObjectStoreFullError, OutOfDiskError
from miniray.object_store.policy import (
    Action, Evict, ObjectRecord, ObjectState, Spill, StorePolicy, StoreStats)
from miniray.object_store.recycling import FilePool

__all__ = ["PlasmaStore"]

_TMP = ".tmp"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _copy(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` atomically (via ``dst.tmp`` and a rename); the
    copy is readable by this user only."""
    try:
        with open(src, "rb") as fsrc:
            fd = os.open(dst + _TMP, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                         PRIVATE_FILE_MODE)
            try:
                size, offset = os.fstat(fsrc.fileno()).st_size, 0
                while offset < size:         # in the kernel, as shutil.copyfile
                    sent = os.sendfile(fd, fsrc.fileno(), offset, size - offset)
                    if sent == 0:
                        break
                    offset += sent
            finally:
                os.close(fd)
        os.rename(dst + _TMP, dst)
    except BaseException:
        _unlink(dst + _TMP)
        raise


def _check_id(object_id: ObjectID) -> ObjectID:
    """A file is named after the hex of an id of exactly the right length."""
    if len(object_id) != ObjectID.SIZE:
        raise ValueError(f"an object id is {ObjectID.SIZE} bytes, got {len(object_id)}")
    return object_id


class PlasmaStore:
    """Shared-memory object files plus their capacity accounting."""

    def __init__(self, directory: str, capacity: int,
                 spill_directory: str) -> None:
        self.directory = directory
        self.spill_directory = spill_directory
        ensure_private_dir(directory)          # 0700, ours, not a planted link
        ensure_private_dir(spill_directory)
        self._policy = StorePolicy(capacity)
        self._pool = FilePool(directory)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)   # a seal or a drop
        self._closed = False
        # Reservations a process is writing: object -> (writer, deadline).
        self._unsealed: dict[ObjectID, tuple[bytes, float]] = {}

    # ----------------------------------------------------------------- paths
    def path(self, object_id: ObjectID) -> str:
        """Where the object's in-memory file lives (whether or not it does)."""
        return os.path.join(self.directory, _check_id(object_id).hex())

    def spill_path(self, object_id: ObjectID) -> str:
        return os.path.join(self.spill_directory, _check_id(object_id).hex())

    # ------------------------------------------------------------ operations
    def reserve(self, object_id: ObjectID, size: int, owner: WorkerID,
                primary: bool = True, writer: bytes | None = None,
                deadline: float | None = None) -> str:
        """Make room for a new object and return the path to write it to.

        The writer must produce exactly ``size`` bytes at the returned path
        (see ``client.create_and_write``) and then call :meth:`seal`; if it
        is named, :meth:`release_unsealed` drops the reservation when that
        process dies or the (monotonic) ``deadline`` passes first.
        Raises ValueError if the object already exists and
        ObjectStoreFullError if no room can be made.
        """
        _check_id(object_id)
        with self._lock:
            if size > self._policy.capacity:
                # Bigger than the whole store: written straight to the spill
                # directory and read from there (Ray's fallback allocation).
                self._policy.reserve_on_disk(object_id, size, owner, primary)
                if writer is not None:
                    self._unsealed[object_id] = (bytes(writer), deadline or float("inf"))
                return self.spill_path(object_id)
            actions = self._policy.reserve(object_id, size, owner, primary)
            try:
                self._apply(actions)
            except BaseException:
                self._drop(object_id)
                raise
            path = self.path(object_id)
            reused = self._pool.take(size)
            if reused is not None:
                os.rename(reused, path + _TMP)       # the writer fills it in place
            stats = self._policy.snapshot()
            self._pool.trim(stats.capacity - stats.used)
            if writer is not None:
                self._unsealed[object_id] = (bytes(writer), deadline or float("inf"))
            return path

    def seal(self, object_id: ObjectID) -> None:
        """Mark a written object immutable and readable.

        Raises FileNotFoundError if the writer did not produce the file and
        ValueError if its size differs from the reservation; the reservation
        is kept either way (the caller may :meth:`delete` it).
        """
        with self._lock:
            record = self._policy.lookup(object_id)
            if record is None:
                raise KeyError(object_id)
            if record.state is not ObjectState.CREATING:
                raise ValueError(f"object {object_id.hex()} is "
                                 f"{record.state.value}, cannot seal it")
            path = self.spill_path(object_id) if record.on_disk else self.path(object_id)
            actual = os.stat(path).st_size
            if actual != record.size:
                raise ValueError(
                    f"object {object_id.hex()} file has {actual} bytes, "
                    f"{record.size} were reserved")
            self._policy.seal(object_id)
            self._unsealed.pop(object_id, None)
            self._changed.notify_all()

    def contains(self, object_id: ObjectID) -> bool:
        """Whether the object is sealed here (in memory or spilled)."""
        with self._lock:
            record = self._policy.lookup(object_id)
            return record is not None and record.state is not ObjectState.CREATING

    def ensure_local(self, object_id: ObjectID) -> str:
        """Return the path of a sealed object, restoring it if spilled.

        An object bigger than the store, or one the store has no room to
        restore now, is read from its spilled file in place. Raises KeyError
        if the object is unknown and ValueError if it is not sealed yet.  A
        spilled object whose restore fails (I/O error) is lost and
        forgotten; the error propagates.
        """
        with self._lock:
            record = self._policy.lookup(object_id)
            if record is None:
                raise KeyError(object_id)
            if record.state is ObjectState.SEALED:
                self._policy.touch(object_id)
            elif record.state is ObjectState.SPILLED:
                if record.size > self._policy.capacity:
                    return self.spill_path(object_id)
                try:
                    self._restore(object_id)
                except ObjectStoreFullError:
                    return self.spill_path(object_id)    # no room now: from disk
            else:
                raise ValueError(f"object {object_id.hex()} is not sealed yet")
            return self.path(object_id)

    def wait_local(self, object_id: ObjectID, timeout: float) -> str:
        """:meth:`ensure_local`, but a copy still being written here (by a
        local task, or another pull) is waited for until it is sealed.
        Raises KeyError if the object is unknown or its writer gives up,
        TimeoutError if it is not sealed within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                try:
                    return self.ensure_local(object_id)
                except ValueError:                     # not sealed yet
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"object {object_id.hex()} was not "
                                           f"sealed within {timeout:g} s") from None
                    self._changed.wait(remaining)

    def delete(self, object_ids: Iterable[ObjectID]) -> int:
        """Free objects; their memory is kept for reuse when nobody maps it.
        Returns how many were known."""
        with self._lock:
            count = 0
            for oid in object_ids:
                record = self._policy.lookup(oid)
                if record is not None and record.state is ObjectState.SEALED:
                    self._pool.offer(self.path(oid), record.size)
                count += self._drop(oid)
            stats = self._policy.snapshot()
            self._pool.trim(stats.capacity - stats.used)
            return count

    def delete_if_owned(self, object_ids: Iterable[ObjectID], owner: WorkerID) -> int:
        """Free the objects that ``owner`` owns here, and secondary copies
        (caches of objects stored elsewhere); others are left alone.
        Returns how many were freed."""
        with self._lock:
            allowed = [oid for oid in object_ids
                       if (r := self._policy.lookup(oid)) is not None
                       and (r.owner == owner or not r.primary)]
            return self.delete(allowed)

    def release_unsealed(self, writer: bytes | None = None,
                         now: float | None = None) -> list[ObjectID]:
        """Drop reservations never sealed whose writer is ``writer`` (it
        died) or whose deadline is before ``now``; returns their ids."""
        if not self._unsealed or (writer is None and not self.has_unsealed(now)):
            return []                   # the common case: nothing to drop
        with self._lock:
            doomed = [oid for oid, (w, deadline) in self._unsealed.items()
                      if w == writer or (now is not None and deadline < now)]
            for oid in doomed:
                self._drop(oid)
            return doomed

    def unsealed_writer(self, object_id: ObjectID) -> bytes | None:
        """The writer of ``object_id`` if it is reserved and not sealed yet."""
        entry = self._unsealed.get(object_id)
        return None if entry is None else entry[0]

    def has_unsealed(self, expired_before: float | None = None) -> bool:
        """Whether reservations are being written (whose deadline passed
        before ``expired_before``, if given). Lock-free, for a quick check."""
        deadlines = [d for _, d in list(self._unsealed.values())]
        if expired_before is None:
            return bool(deadlines)
        return any(d < expired_before for d in deadlines)

    def delete_owned_by(self, owner: WorkerID) -> list[ObjectID]:
        """Free every object owned by ``owner`` (e.g. when it dies)."""
        with self._lock:
            owned = self._policy.objects_owned_by(owner)
            self.delete(owned)
            return owned

    def records(self) -> list[ObjectRecord]:
        """What the store knows of each object: size, owner, primary or
        not, in memory, spilled or being written (for the state API)."""
        with self._lock:
            return self._policy.records()

    def stats(self) -> StoreStats:
        with self._lock:
            return self._policy.snapshot()

    def usage(self) -> tuple[int, int]:
        """(bytes used, capacity) without the full snapshot's scan."""
        with self._lock:
            return self._policy.used, self._policy.capacity

    def close(self) -> None:
        """Delete every object and both directories.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._policy = StorePolicy(self._policy.capacity)
            for directory in (self.directory, self.spill_directory):
                shutil.rmtree(directory, ignore_errors=True)

    # ------------------------------------------------------------- internals
    def _apply(self, actions: list[Action]) -> None:
        """Make the files match decisions the policy has already recorded.

        If spilling a primary copy fails, that object is lost: it is
        forgotten and the error propagates (OutOfDiskError for ENOSPC).
        """
        for action in actions:
            oid = action.object_id
            if isinstance(action, Evict):
                _unlink(self.path(oid))
            elif isinstance(action, Spill):
                try:
                    _copy(self.path(oid), self.spill_path(oid))
                except BaseException as e:
                    self._drop(oid)
                    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                        raise OutOfDiskError(
                            f"cannot spill object {oid.hex()} to "
                            f"{self.spill_directory}: {e}") from e
                    raise
                _unlink(self.path(oid))
            else:  # pragma: no cover - exhaustive over Action
                raise TypeError(f"unknown action {action!r}")

    def _restore(self, object_id: ObjectID) -> None:
        actions = self._policy.restore(object_id)
        try:
            self._apply(actions)
            _copy(self.spill_path(object_id), self.path(object_id))
        except BaseException:
            self._drop(object_id)
            raise
        _unlink(self.spill_path(object_id))
        self._policy.seal(object_id)

    def _drop(self, object_id: ObjectID) -> bool:
        """Forget the object and remove all of its files."""
        self._unsealed.pop(object_id, None)
        self._changed.notify_all()
        known = self._policy.delete(object_id)
        path, spilled = self.path(object_id), self.spill_path(object_id)
        for p in (path, path + _TMP, spilled, spilled + _TMP):
            _unlink(p)
        return known
