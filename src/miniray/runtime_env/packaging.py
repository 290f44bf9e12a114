"""Packages of code for runtime environments: ``working_dir`` and
``py_modules`` directories (or ``.zip`` files) packed into a zip whose name
is its content hash, kept in the GCS's internal KV, unpacked once per node.

Runs in drivers (packing and uploading, api.init and task options), in the
job client and the dashboard (uploads over HTTP), and in raylets
(downloading and unpacking, runtime_env/manager.py).

A package is stored as chunks of at most CHUNK_BYTES under
``<name>/<index>`` and then a ``<name>`` record giving their number, size
and hash: the record is written last, so a package that has one is
complete. The zip is deterministic (sorted entries, fixed timestamps), so
the same files give the same URI and are uploaded once.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import zipfile
from typing import Callable, Iterable

from miniray.common import config
from miniray.protocol import gcs_pb2

SCHEME = "gcs://"
PREFIX = "_miniray_pkg_"
KV_NAMESPACE = "runtime_env_packages"
CHUNK_BYTES = 8 * 1024 * 1024
_EPOCH = (1980, 1, 1, 0, 0, 0)        # zip's earliest date: fixed, for stable hashes


class PackagingError(ValueError):
    """A package could not be made (missing path, too big, bad zip)."""


# --- the GCS side ------------------------------------------------------------------------
class GcsKV:
    """The KV RPCs of the GCS through ``call(method_name, request) -> reply``
    (a core worker's ``call("gcs", ...)`` or a stub's bound methods)."""

    def __init__(self, call: Callable):
        self._call = call

    def get(self, key: str) -> bytes | None:
        reply = self._call("KVGet", gcs_pb2.KVGetRequest(namespace=KV_NAMESPACE,
                                                         key=key.encode()))
        return reply.value if reply.found else None

    def put(self, key: str, value: bytes) -> None:
        self._call("KVPut", gcs_pb2.KVPutRequest(namespace=KV_NAMESPACE, key=key.encode(),
                                                 value=value, overwrite=True))

    def delete(self, key: str, by_prefix: bool = False) -> None:
        self._call("KVDel", gcs_pb2.KVDelRequest(namespace=KV_NAMESPACE, key=key.encode(),
                                                 by_prefix=by_prefix))


def is_uri(value: str) -> bool:
    return value.startswith(SCHEME)


def name_of(uri: str) -> str:
    """The package's file name: ``gcs://_miniray_pkg_<hash>.zip`` ->
    ``_miniray_pkg_<hash>.zip``, checked (it names cache directories)."""
    if not is_uri(uri):
        raise PackagingError(f"{uri!r} is not a package URI (gcs://{PREFIX}<hash>.zip)")
    name = uri[len(SCHEME):]
    check_name(name)
    return name


def check_name(name: str) -> None:
    digest = name[len(PREFIX):-len(".zip")]
    if not (name.startswith(PREFIX) and name.endswith(".zip") and digest
            and all(c in "0123456789abcdef" for c in digest) and len(digest) <= 64):
        raise PackagingError(f"bad package name {name!r}: expected {PREFIX}<hex hash>.zip")


def exists(kv: GcsKV, uri: str) -> bool:
    return kv.get(name_of(uri)) is not None


def upload(kv: GcsKV, uri: str, data: bytes) -> None:
    """Store the package (chunks first, then the record that completes it)."""
    name = name_of(uri)
    check_size(len(data), uri)
    if _uri_for(data) != uri:
        raise PackagingError(f"the data uploaded as {uri} does not hash to that name")
    count = 0
    for start in range(0, max(len(data), 1), CHUNK_BYTES):
        kv.put(f"{name}/{count}", data[start:start + CHUNK_BYTES])
        count += 1
    kv.put(name, json.dumps({"chunks": count, "size": len(data)}).encode())


def download(kv: GcsKV, uri: str) -> bytes:
    steps = _download_steps(uri)
    key = next(steps)
    try:
        while True:
            key = steps.send(kv.get(key))
    except StopIteration as done:
        return done.value


async def download_async(get, uri: str) -> bytes:
    """``download`` with ``await get(key) -> bytes | None`` (raylets)."""
    steps = _download_steps(uri)
    key = next(steps)
    try:
        while True:
            key = steps.send(await get(key))
    except StopIteration as done:
        return done.value


def _download_steps(uri: str):
    """Yields the KV keys to read, is sent their values, returns the data."""
    name = name_of(uri)
    record = yield name
    if record is None:
        raise PackagingError(f"package {uri} is not in the cluster (was it uploaded, "
                             f"and is this the cluster it was uploaded to?)")
    info = json.loads(record)
    parts = []
    for index in range(int(info["chunks"])):
        part = yield f"{name}/{index}"
        if part is None:
            raise PackagingError(f"package {uri} is incomplete (chunk {index} missing)")
        parts.append(part)
    data = b"".join(parts)
    if len(data) != info["size"] or _uri_for(data) != uri:
        raise PackagingError(f"package {uri} is corrupt (size or hash differs)")
    return data


def delete(kv: GcsKV, uri: str) -> None:
    name = name_of(uri)
    kv.delete(name)
    kv.delete(name + "/", by_prefix=True)


# --- packing -------------------------------------------------------------------------------
def check_size(size: int, what: str) -> None:
    limit = config.RUNTIME_ENV_MAX_PACKAGE_BYTES
    if size > limit:
        raise PackagingError(
            f"{what} is {size / 2**20:.1f} MiB packed, over the limit of "
            f"{limit / 2**20:.0f} MiB (MINIRAY_RUNTIME_ENV_MAX_PACKAGE_BYTES): leave "
            f"large files out with runtime_env['excludes'] or a .gitignore, and "
            f"ship data through object refs or shared storage instead")


def _uri_for(data: bytes) -> str:
    return f"{SCHEME}{PREFIX}{hashlib.sha1(data).hexdigest()}.zip"


def pack_local(path: str, excludes: Iterable[str] = (), *,
               include_parent_dir: bool = False,
               unwrap_single_dir: bool = False) -> tuple[str, bytes]:
    """(uri, zip bytes) for a local directory, ``.zip`` or ``.whl`` file,
    or single ``.py`` module. Every package holds its files at its root.

    ``include_parent_dir``: the zip holds the directory itself (a py_modules
    package ``pkg/`` unpacks to ``<root>/pkg/...``), else its contents.
    ``unwrap_single_dir``: a zip file holding one top-level directory is
    repacked with that directory's contents at the root (a working_dir
    given as a .zip, as Ray does). ``excludes`` are gitignore-style
    patterns relative to the directory; ``.gitignore`` files in it are
    honoured too (each for its own subtree).
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        if path.endswith(".py"):
            with open(path, "rb") as f:
                data = _zip_entries([(os.path.basename(path), f.read(), 0o644)])
            return _uri_for(data), data
        if not path.endswith((".zip", ".whl")):
            raise PackagingError(f"{path} is a file, not a directory or a .zip/.whl file")
        with open(path, "rb") as f:
            data = f.read()
        check_size(len(data), path)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                _check_members(archive, path)
                if unwrap_single_dir:
                    data = _unwrapped(archive) or data
        except zipfile.BadZipFile as exc:
            raise PackagingError(f"{path} is not a valid zip file: {exc}") from None
        return _uri_for(data), data
    if not os.path.isdir(path):
        raise PackagingError(f"{path} does not exist (expected a local directory "
                             f"or .zip file)")
    data = _zip_directory(os.path.abspath(path), list(excludes), include_parent_dir)
    return _uri_for(data), data


def _zip_directory(root: str, excludes: list[str], include_parent_dir: bool) -> bytes:
    data = _zip_entries(_directory_entries(root, excludes, include_parent_dir))
    check_size(len(data), root)
    return data


def _directory_entries(root: str, excludes: list[str], include_parent_dir: bool):
    """(name in the zip, data, mode) of each file under ``root`` not excluded,
    in a stable order, one file read at a time."""
    import pathspec

    base = os.path.basename(root.rstrip(os.sep)) if include_parent_dir else ""
    user_spec = pathspec.GitIgnoreSpec.from_lines(excludes)
    ignores: list[tuple[str, object]] = []        # (dir relative to root, spec)
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        ignore_file = os.path.join(dirpath, ".gitignore")
        if os.path.isfile(ignore_file):
            with open(ignore_file, encoding="utf-8", errors="replace") as f:
                ignores.append((rel_dir, pathspec.GitIgnoreSpec.from_lines(f)))

        def excluded(rel: str, is_dir: bool) -> bool:
            probe = rel + "/" if is_dir else rel
            if user_spec.match_file(probe):
                return True
            for scope, spec in ignores:
                if scope and not rel.startswith(scope + "/"):
                    continue
                if spec.match_file(probe[len(scope) + 1:] if scope else probe):
                    return True
            return False

        dirnames[:] = sorted(d for d in dirnames if not excluded(_join(rel_dir, d), True))
        for name in sorted(filenames):
            rel = _join(rel_dir, name)
            full = os.path.join(dirpath, name)
            if excluded(rel, False) or not os.path.isfile(full):
                continue
            total += os.path.getsize(full)
            check_size(total, f"the directory {root} (at least)")
            with open(full, "rb") as f:
                yield _join(base, rel), f.read(), os.stat(full).st_mode & 0o777


def _unwrapped(archive: zipfile.ZipFile) -> bytes | None:
    """The archive repacked without its single top-level directory, or None
    when it has files at its root or several top-level entries."""
    names = [n for n in archive.namelist() if n.rstrip("/")]
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1 or not any("/" in n for n in names):
        return None
    top = tops.pop() + "/"
    if any(not n.startswith(top) for n in names):
        return None
    entries = [(info.filename[len(top):], archive.read(info),
                (info.external_attr >> 16) & 0o777)
               for info in sorted(archive.infolist(), key=lambda i: i.filename)
               if not info.is_dir() and info.filename[len(top):]]
    return _zip_entries(entries)


def _zip_entries(entries) -> bytes:
    """A deterministic zip of (name, data, mode) entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, _EPOCH)
            info.external_attr = (stat.S_IFREG | (mode or 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=1)
    return buffer.getvalue()


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def _check_members(archive: zipfile.ZipFile, what: str) -> None:
    for member in archive.namelist():
        parts = member.replace("\\", "/").split("/")
        if member.startswith("/") or ".." in parts:
            raise PackagingError(f"{what} holds an unsafe path {member!r}")


# --- unpacking (raylets) ----------------------------------------------------------------
def unpack(data: bytes, target: str) -> None:
    """Unpack into ``target`` (created, private to the user) atomically: a
    temporary directory renamed into place."""
    parent = os.path.dirname(target)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".unpack-", dir=parent)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_members(archive, "the package")
            archive.extractall(staging)
            for info in archive.infolist():       # keep the files' permissions
                mode = (info.external_attr >> 16) & 0o777
                if mode and not info.is_dir():
                    os.chmod(os.path.join(staging, info.filename), mode | 0o600)
        os.chmod(staging, 0o700)
        try:
            os.rename(staging, target)
        except OSError:
            if not os.path.isdir(target):     # else someone else unpacked it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def directory_size(path: str) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
