"""runtime_env checking, merging and the wire form (no cluster)."""
from __future__ import annotations

import json

import pytest

from miniray.runtime_env import RuntimeEnv, RuntimeEnvConfig
from miniray.runtime_env.runtime_env import (
    check_wire, merge, serialize, setup_timeout, validate)


@pytest.mark.parametrize("key", ["conda", "container", "uv", "image_uri", "java_jars"])
def test_unsupported_keys_are_refused_by_name(key):
    with pytest.raises(ValueError, match=f"'{key}' is not supported by miniray"):
        validate({key: "x"})


def test_unknown_key_is_refused():
    with pytest.raises(ValueError, match="unknown runtime_env field 'env_var'"):
        validate({"env_var": {"A": "1"}})


@pytest.mark.parametrize("bad", [{"A": 1}, {1: "a"}, ["A=1"], {"": "x"}, {"A=B": "x"}])
def test_env_vars_must_be_str_to_str(bad):
    with pytest.raises((TypeError, ValueError)):
        validate({"env_vars": bad})


def test_runtime_env_must_be_a_dict():
    with pytest.raises(TypeError, match="must be a dict"):
        validate(["env_vars"])


def test_pip_forms_normalize_to_one(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nrequests==2.0  # pinned\n\nsix\n")
    expected = {"packages": ["requests==2.0", "six"], "pip_check": False}
    assert validate({"pip": ["requests==2.0", "six"]})["pip"] == expected
    assert validate({"pip": str(requirements)})["pip"] == expected
    assert validate({"pip": {"packages": str(requirements)}})["pip"] == expected
    with_options = validate({"pip": {"packages": ["six"], "pip_check": True,
                                     "pip_install_options": ["--no-cache-dir"]}})["pip"]
    assert with_options == {"packages": ["six"], "pip_check": True,
                            "pip_install_options": ["--no-cache-dir"]}


def test_pip_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        validate({"pip": str(tmp_path / "missing.txt")})
    with pytest.raises(ValueError, match="pip_version"):
        validate({"pip": {"packages": ["six"], "pip_version": "==22.0"}})
    with pytest.raises(ValueError, match="unknown runtime_env\\['pip'\\] field"):
        validate({"pip": {"packages": ["six"], "extra": 1}})
    with pytest.raises(TypeError):
        validate({"pip": [""]})


def test_remote_uris_other_than_gcs_are_refused():
    with pytest.raises(ValueError, match="only local paths and gcs:// URIs"):
        validate({"working_dir": "s3://bucket/code.zip"})


def test_config_is_checked():
    assert validate({"config": {"setup_timeout_seconds": 5}})["config"] == {
        "setup_timeout_seconds": 5, "eager_install": True}
    with pytest.raises(ValueError, match="setup_timeout_seconds"):
        RuntimeEnvConfig(setup_timeout_seconds=0)
    with pytest.raises(ValueError, match="unknown RuntimeEnvConfig"):
        validate({"config": {"timeout": 5}})
    assert setup_timeout({"config": {"setup_timeout_seconds": -1}}) is None
    assert setup_timeout({}) == 600


def test_excludes_without_packages_are_dropped():
    assert validate({"env_vars": {"A": "1"}, "excludes": ["*.log"]}) == {
        "env_vars": {"A": "1"}}


def test_runtime_env_class_is_a_checked_dict():
    env = RuntimeEnv(env_vars={"A": "1"}, pip=["six"])
    assert isinstance(env, dict)
    assert env.env_vars() == {"A": "1"}
    assert env.pip_config() == {"packages": ["six"], "pip_check": False}
    assert env.has_pip() and not env.has_working_dir()
    assert RuntimeEnv.deserialize(env.serialize()) == env
    with pytest.raises(ValueError):
        RuntimeEnv(conda="env")


def test_merge_follows_rays_inheritance():
    parent = {"env_vars": {"A": "job", "B": "job"}, "working_dir": "gcs://p.zip",
              "pip": {"packages": ["six"], "pip_check": False}}
    child = {"env_vars": {"B": "task", "C": "task"},
             "pip": {"packages": ["attrs"], "pip_check": False}}
    merged = merge(parent, child)
    assert merged["env_vars"] == {"A": "job", "B": "task", "C": "task"}
    assert merged["pip"]["packages"] == ["attrs"]        # replaced, not merged
    assert merged["working_dir"] == "gcs://p.zip"        # inherited
    assert merge(parent, None) == parent and merge(parent, {}) == parent
    assert merge({}, child) == child


def test_serialization_is_canonical():
    a = serialize({"env_vars": {"B": "2", "A": "1"}, "config": {"eager_install": True}})
    b = serialize({"config": {"eager_install": True}, "env_vars": {"A": "1", "B": "2"}})
    assert a == b and json.loads(a)["env_vars"] == {"A": "1", "B": "2"}
    assert serialize({}) == ""


def test_wire_form_only_carries_uploaded_packages():
    good = serialize({"working_dir": "gcs://_miniray_pkg_" + "ab" * 20 + ".zip"})
    assert check_wire(good)["working_dir"].startswith("gcs://")
    for bad in ({"working_dir": "/etc"}, {"py_modules": ["gcs://../../x.zip"]},
                {"working_dir": "gcs://_miniray_pkg_xyz.zip"}):
        with pytest.raises(ValueError):
            check_wire(serialize(bad))
    with pytest.raises(ValueError, match="JSON"):
        check_wire("{not json")
    with pytest.raises(ValueError, match="conda"):
        check_wire(json.dumps({"conda": "x"}))
