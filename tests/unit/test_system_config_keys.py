"""Ray's _system_config keys mapped onto miniray's knobs (pure)."""
import json

import pytest

from miniray.common import system_config


def test_known_keys_become_settings_in_miniray_units():
    settings = system_config.to_settings({
        "health_check_period_ms": 250, "max_direct_call_object_size": 1024,
        "worker_register_timeout_seconds": 5, "preload_python_modules": ["json"]})
    assert settings == {"HEALTH_CHECK_PERIOD_S": 0.25, "MAX_INLINE_OBJECT_BYTES": 1024,
                        "WORKER_REGISTER_TIMEOUT_S": 5.0,
                        "PRELOAD_PYTHON_MODULES": ["json"]}
    env = system_config.to_env(settings)
    assert env["MINIRAY_HEALTH_CHECK_PERIOD_S"] == "0.25"
    assert json.loads(env["MINIRAY_PRELOAD_PYTHON_MODULES"]) == ["json"]


def test_unknown_keys_are_named_in_a_warning_and_ignored():
    with pytest.warns(UserWarning, match="object_timeout_milliseconds"):
        assert system_config.to_settings({"object_timeout_milliseconds": 10}) == {}
    assert system_config.to_settings(None) == {}


@pytest.mark.parametrize("bad", [
    {"health_check_period_ms": "fast"}, {"max_direct_call_object_size": True},
    {"preload_python_modules": "json"}, {"preload_python_modules": [1]}])
def test_values_of_the_wrong_type_are_refused_with_the_key(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        system_config.to_settings(bad)


def test_a_system_config_that_is_not_a_dict_is_refused():
    with pytest.raises(TypeError, match="_system_config must be a dict"):
        system_config.to_settings([("health_check_period_ms", 1)])


def test_booleans_and_the_whole_config_for_connecting_drivers():
    settings = system_config.to_settings({"record_ref_creation_sites": True,
                                          "health_check_period_ms": 500})
    assert settings == {"RECORD_REF_CREATION_SITES": True, "HEALTH_CHECK_PERIOD_S": 0.5}
    env = system_config.to_env(settings)
    assert env["MINIRAY_RECORD_REF_CREATION_SITES"] == "1"
    # The head's GCS hands the whole of it to drivers that connect later.
    text = system_config.from_env(env)
    assert system_config.adopt(text) == settings
    with pytest.raises(ValueError, match="record_ref_creation_sites"):
        system_config.to_settings({"record_ref_creation_sites": "yes"})


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"NOT_A_KNOB": 1}'])
def test_a_driver_adopts_only_known_settings(text):
    assert system_config.adopt(text) == {}
    assert system_config.from_env({system_config.ENV_VAR: text}) == ""
