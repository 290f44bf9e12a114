"""Where miniray keeps its files on this machine, and keeping them private.

Used by every process that creates or reads miniray's files: ``node.py``
(session directories, daemon logs, the current-cluster file), the raylet
(object store and spill directories), the CLI and the auth token code.

Everything lives under a *temp root* private to the user: the explicit
``MINIRAY_TEMP_DIR`` if set, else ``<tmp>/miniray-<uid>``. Before use the
root is checked to be a real directory (not a symlink) owned by the current
user; the default one is created 0700 (and put back to 0700 if it is
ours), an explicit one must not be writable by anyone else. A path planted
by another user in a shared directory (``/tmp``, ``/dev/shm``) is refused,
never followed. Directories miniray creates are 0700, files 0600.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile

from miniray.common import config

__all__ = [
    "UnsafePathError", "PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "temp_root",
    "default_temp_root", "current_cluster_file", "cluster_auth_dir",
    "ensure_private_dir", "write_private_file", "read_private_file",
    "open_private_log",
]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_UNSAFE_ADDRESS_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class UnsafePathError(PermissionError):
    """A miniray path exists but may be controlled by someone else."""


def default_temp_root() -> str:
    """``<tmp>/miniray-<uid>``: per user, so no user shares it with another."""
    return os.path.join(tempfile.gettempdir(), f"miniray-{os.geteuid()}")


def temp_root(create: bool = True) -> str:
    """The checked, private directory for this user's sessions and cluster
    files. Raises UnsafePathError if it exists but is not safely ours; with
    ``create=False`` a missing root is returned as is (nothing to read)."""
    explicit = config.TEMP_DIR
    root = os.path.abspath(explicit) if explicit else default_temp_root()
    if create:
        if explicit:
            os.makedirs(os.path.dirname(root), exist_ok=True)
        try:
            os.mkdir(root, PRIVATE_DIR_MODE)
        except FileExistsError:
            pass
    if os.path.lexists(root):
        _check_dir(root, os.lstat(root), explicit=bool(explicit))
    return root


def current_cluster_file() -> str:
    """The file holding the GCS address of the cluster `miniray start` began."""
    return os.path.join(temp_root(create=False), "current_cluster")


def cluster_auth_dir(gcs_address: str, create: bool = True) -> str:
    """The private (0700) directory of the cluster whose GCS listens at
    ``gcs_address``: where its authentication token file lives, so that
    processes and drivers of the same user on this machine find the token
    from the address alone. Removed when that cluster's head stops."""
    host, _, port = gcs_address.rpartition(":")
    if host in ("localhost", ""):
        host = "127.0.0.1"
    name = "cluster_" + _UNSAFE_ADDRESS_CHARS.sub("_", f"{host}_{port}")
    path = os.path.join(temp_root(create=create), name)
    if create:
        ensure_private_dir(path)
    elif os.path.lexists(path):
        _check_dir(path, os.lstat(path), explicit=False)
    return path


def remove_cluster_dir(gcs_address: str) -> None:
    """The cluster's private directory (its token), once its GCS is gone."""
    import shutil
    try:
        shutil.rmtree(cluster_auth_dir(gcs_address, create=False))
    except OSError:
        pass


def ensure_private_dir(path: str) -> str:
    """Create ``path`` 0700 if missing; raise UnsafePathError unless it is a
    real directory owned by this user. One of ours that others may enter is
    put back to 0700."""
    try:
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        pass
    _check_dir(path, os.lstat(path), explicit=False)
    return path


def _check_dir(path: str, st: os.stat_result, *, explicit: bool) -> None:
    """``explicit``: a directory the user chose (MINIRAY_TEMP_DIR): it only
    must not be writable by others. Else it is made 0700 (it is ours)."""
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(
            f"{path} is a symbolic link; miniray does not follow links for its "
            f"private directories (another user may have planted it). Remove it.")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{path} exists and is not a directory. Remove it.")
    _check_owner(path, st)
    if explicit:
        if st.st_mode & 0o022:
            raise UnsafePathError(
                f"{path} (MINIRAY_TEMP_DIR) is writable by other users "
                f"(mode {stat.S_IMODE(st.st_mode):o}); use a directory only you can "
                f"write to.")
    elif st.st_mode & 0o077:
        os.chmod(path, PRIVATE_DIR_MODE)


def _check_owner(path: str, st: os.stat_result) -> None:
    if st.st_uid != os.geteuid():
        raise UnsafePathError(
            f"{path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()}); "
            f"miniray will not use files another user controls. Remove it, or "
            f"set MINIRAY_TEMP_DIR to a directory of your own.")


def write_private_file(path: str, data: bytes | str) -> None:
    """Atomically replace ``path`` with ``data``, readable only by this user."""
    if isinstance(data, str):
        data = data.encode()
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_private_file(path: str, *, secret: bool = False) -> bytes | None:
    """The contents of ``path`` (None if it does not exist), refusing with
    UnsafePathError a symlink, a non-regular file, a file owned by another
    user or writable by others, and with ``secret`` one others may read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePathError(f"{path} is a symbolic link; not following it") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{path} is not a regular file")
        _check_owner(path, st)
        if st.st_mode & (0o077 if secret else 0o022):
            raise UnsafePathError(
                f"{path} is accessible to other users (mode "
                f"{stat.S_IMODE(st.st_mode):o}, expected 600)")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_private_log(path: str) -> int:
    """A file descriptor appending to ``path``, created 0600 (never via a link)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                   | os.O_CLOEXEC, PRIVATE_FILE_MODE)
