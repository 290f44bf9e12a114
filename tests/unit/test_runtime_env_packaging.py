"""Packing, uploading and unpacking runtime_env packages, and the node's
cache policy (no cluster: a dict stands in for the GCS's KV)."""
from __future__ import annotations

import io
import os
import zipfile

import pytest

from miniray.common import config
from miniray.runtime_env import packaging, upload
from miniray.runtime_env.uri_cache import URICache


class DictKV:
    def __init__(self):
        self.data: dict[str, bytes] = {}

    def get(self, key):
        return self.data.get(key)

    def put(self, key, value):
        self.data[key] = bytes(value)

    def delete(self, key, by_prefix=False):
        for k in [k for k in self.data if (k.startswith(key) if by_prefix else k == key)]:
            del self.data[k]


def _tree(root, files: dict):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _names(data: bytes) -> list[str]:
    return sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())


def test_same_files_give_the_same_uri(tmp_path):
    _tree(tmp_path / "a", {"m.py": "X = 1", "pkg/__init__.py": ""})
    uri1, data1 = packaging.pack_local(str(tmp_path / "a"))
    os.utime(tmp_path / "a" / "m.py", (1, 1))             # timestamps don't matter
    uri2, data2 = packaging.pack_local(str(tmp_path / "a"))
    assert uri1 == uri2 and data1 == data2
    assert uri1.startswith("gcs://_miniray_pkg_") and uri1.endswith(".zip")
    (tmp_path / "a" / "m.py").write_text("X = 2")
    assert packaging.pack_local(str(tmp_path / "a"))[0] != uri1


def test_excludes_and_gitignore_files_are_honoured(tmp_path):
    _tree(tmp_path, {"keep.py": "", "big.dat": "x", "logs/run.log": "",
                     "sub/.gitignore": "secret.txt\n", "sub/secret.txt": "",
                     "sub/ok.txt": "", ".gitignore": "*.dat\n"})
    _, data = packaging.pack_local(str(tmp_path), excludes=["logs/"])
    assert _names(data) == [".gitignore", "keep.py", "sub/.gitignore", "sub/ok.txt"]


def test_a_package_directory_keeps_its_name(tmp_path):
    _tree(tmp_path, {"mypkg/__init__.py": "", "mypkg/core.py": ""})
    _, data = packaging.pack_local(str(tmp_path / "mypkg"), include_parent_dir=True)
    assert _names(data) == ["mypkg/__init__.py", "mypkg/core.py"]


def test_a_zip_with_one_top_directory_is_unwrapped_for_working_dir(tmp_path):
    path = tmp_path / "code.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("project/main.py", "print(1)")
        archive.writestr("project/lib/util.py", "")
    _, data = packaging.pack_local(str(path), unwrap_single_dir=True)
    assert _names(data) == ["lib/util.py", "main.py"]
    _, kept = packaging.pack_local(str(path))
    assert _names(kept) == ["project/lib/util.py", "project/main.py"]


def test_size_limit_has_a_clear_error(tmp_path, monkeypatch):
    _tree(tmp_path, {"data.txt": "x" * 5000})
    monkeypatch.setattr(config, "RUNTIME_ENV_MAX_PACKAGE_BYTES", 1000)
    with pytest.raises(packaging.PackagingError, match="over the limit.*excludes"):
        packaging.pack_local(str(tmp_path))


def test_missing_or_wrong_paths_are_reported(tmp_path):
    with pytest.raises(packaging.PackagingError, match="does not exist"):
        packaging.pack_local(str(tmp_path / "nope"))
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(packaging.PackagingError, match="not a directory"):
        packaging.pack_local(str(tmp_path / "notes.txt"))
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(packaging.PackagingError, match="not a valid zip"):
        packaging.pack_local(str(tmp_path / "bad.zip"))


def test_unsafe_zip_members_are_refused(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("../escape.py", "")
    with pytest.raises(packaging.PackagingError, match="unsafe path"):
        packaging.pack_local(str(path))


def test_upload_in_chunks_then_download(tmp_path, monkeypatch):
    monkeypatch.setattr(packaging, "CHUNK_BYTES", 100)
    _tree(tmp_path / "src", {f"f{i}.txt": os.urandom(64).hex() for i in range(10)})
    uri, data = packaging.pack_local(str(tmp_path / "src"))
    kv = DictKV()
    assert not packaging.exists(kv, uri)
    packaging.upload(kv, uri, data)
    assert packaging.exists(kv, uri)
    assert len(kv.data) > 3                              # several chunks + the record
    assert packaging.download(kv, uri) == data
    target = tmp_path / "unpacked"
    packaging.unpack(packaging.download(kv, uri), str(target))
    assert sorted(os.listdir(target)) == sorted(f"f{i}.txt" for i in range(10))
    assert oct(os.stat(target).st_mode & 0o777) == "0o700"
    packaging.delete(kv, uri)
    assert kv.data == {}


def test_corrupt_or_missing_packages_are_detected(tmp_path):
    _tree(tmp_path, {"a.py": ""})
    uri, data = packaging.pack_local(str(tmp_path))
    kv = DictKV()
    with pytest.raises(packaging.PackagingError, match="not in the cluster"):
        packaging.download(kv, uri)
    with pytest.raises(packaging.PackagingError, match="does not hash"):
        packaging.upload(kv, uri, data + b"x")
    packaging.upload(kv, uri, data)
    name = packaging.name_of(uri)
    kv.data[f"{name}/0"] = kv.data[f"{name}/0"][:-1] + b"!"
    with pytest.raises(packaging.PackagingError, match="corrupt"):
        packaging.download(kv, uri)


def test_prepare_uploads_once_and_replaces_paths(tmp_path):
    _tree(tmp_path, {"wd/main.py": "", "wd/skip.log": "", "mod.py": "",
                     "pkg/__init__.py": ""})
    kv = DictKV()
    uploads = []

    def store(uri, data):
        uploads.append(uri)
        packaging.upload(kv, uri, data)

    env = {"working_dir": str(tmp_path / "wd"), "excludes": ["*.log"],
           "py_modules": [str(tmp_path / "pkg"), str(tmp_path / "mod.py")],
           "env_vars": {"A": "1"}}
    prepared = upload.prepare(env, kv, store)
    assert "excludes" not in prepared and prepared["env_vars"] == {"A": "1"}
    assert all(packaging.is_uri(u) for u in [prepared["working_dir"],
                                             *prepared["py_modules"]])
    assert len(uploads) == 3
    assert upload.prepare(env, kv, store) == prepared and len(uploads) == 3
    with pytest.raises(ValueError, match="working_dir.*does not exist"):
        upload.prepare({"working_dir": str(tmp_path / "missing")}, kv, store)


def test_uri_cache_deletes_unused_oldest_first_past_capacity():
    cache = URICache(capacity=100)
    cache.add("a", 60)
    cache.acquire("a")
    cache.add("b", 60)
    cache.acquire("b")
    assert cache.evictable() == []               # both in use
    assert cache.release("a") == []              # a unused: 60 <= 100
    assert cache.release("b") == ["a"]           # 120 unused: the oldest goes
    assert "a" not in cache and "b" in cache
    cache.acquire("b")
    cache.add("c", 200)
    assert cache.evictable() == ["c"]            # unused and alone over capacity
    cache.release("b")
    assert cache.users("b") == 0 and cache.unused_bytes() == 60


def test_uri_cache_keeps_what_was_just_made():
    cache = URICache(capacity=0)
    cache.add("old", 10)
    cache.add("new", 10)
    assert cache.evictable(keep="new") == ["old"]
    assert "new" in cache
    cache.acquire("new")
    assert cache.release("new") == ["new"]
