"""Ray's option checks (miniray.option_rules): a wrong type is a TypeError,
a wrong value a ValueError, each worded as Ray words it."""
from __future__ import annotations

import re
import warnings

import pytest

from miniray import option_rules
from miniray.option_rules import ACTOR, TASK, check


@pytest.mark.parametrize("key", ["max_retries", "max_calls"])
def test_a_count_of_the_wrong_type_is_a_type_error_in_rays_words(key):
    expected = (f"The type of keyword '{key}' must be {(int, type(None))}, "
                f"but received type {float}")
    with pytest.raises(TypeError, match=re.escape(expected)):
        check({key: 0.5}, TASK)


def test_num_returns_type_and_value():
    with pytest.raises(TypeError, match=re.escape(str((int, str, type(None))))):
        check({"num_returns": 1.5}, TASK)
    with pytest.raises(ValueError, match="only accepts None, a non-negative integer, "
                                         r"'streaming' \(for generators\), or 'dynamic'"):
        check({"num_returns": -1}, TASK)
    for fine in (None, 0, 3, "dynamic", "streaming"):
        check({"num_returns": fine}, TASK)


@pytest.mark.parametrize("key,infinite", [("max_calls", False), ("max_retries", True)])
def test_counts_refuse_values_below_their_floor(key, infinite):
    floor = -1 if infinite else 0
    check({key: floor}, TASK)
    with pytest.raises(ValueError, match=f"The keyword '{key}' only accepts None, 0"):
        check({key: floor - 1}, TASK)


def test_actor_counts_take_minus_one_as_no_limit():
    for key in ("max_restarts", "max_task_retries", "max_pending_calls"):
        check({key: -1}, ACTOR)
        with pytest.raises(ValueError, match="where -1 represents infinity"):
            check({key: -2}, ACTOR)
        with pytest.raises(TypeError):
            check({key: 1.0}, ACTOR)


def test_resources():
    with pytest.raises(ValueError, match="cannot be negative"):
        check({"num_cpus": -1}, TASK)
    with pytest.raises(ValueError, match="instead of 'CPU' and 'GPU'"):
        check({"resources": {"CPU": 1}}, TASK)
    with pytest.raises(ValueError, match="quantity of resource custom cannot be negative"):
        check({"resources": {"custom": -2}}, ACTOR)
    with pytest.raises(TypeError):
        check({"resources": [("custom", 1)]}, TASK)


def test_retry_exceptions_and_lifetime():
    check({"retry_exceptions": [ValueError, KeyError]}, TASK)
    with pytest.raises(ValueError, match="a boolean or a list of exceptions"):
        check({"retry_exceptions": [ValueError, "KeyError"]}, TASK)
    with pytest.raises(ValueError, match="must be one of 'detached', 'non_detached'"):
        check({"lifetime": "forever"}, ACTOR)


def test_object_store_memory_is_refused_for_tasks_and_deprecated_for_actors():
    with pytest.raises(ValueError, match="not implemented for tasks"):
        check({"object_store_memory": 1}, TASK)
    check({"object_store_memory": 1}, ACTOR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        option_rules.warn_deprecated({"object_store_memory": 1}, for_actor=True)
        option_rules.warn_deprecated({"placement_group": object()}, for_actor=False)
    messages = [str(w.message) for w in caught]
    assert any("'object_store_memory' for actors is deprecated" in m for m in messages)
    assert any("placement_group parameter is deprecated" in m for m in messages)


def test_unknown_keys_are_left_to_the_caller():
    check({"no_such_option": object()}, TASK)


def test_fractions_finer_than_a_ten_thousandth_are_refused():
    with pytest.raises(ValueError, match="precision of the fractional quantity of "
                                         "resource num_gpus cannot go beyond 0.0001"):
        check({"num_gpus": 0.0000001}, TASK)
    with pytest.raises(ValueError, match="resource custom cannot go beyond 0.0001"):
        check({"resources": {"custom": 0.00001}}, ACTOR)
    check({"num_gpus": 0.0001, "resources": {"custom": 0.5}}, TASK)


def test_non_finite_amounts_are_left_to_the_finite_number_check():
    import math
    for value in (math.inf, math.nan):        # no OverflowError from the rules
        check({"num_cpus": value, "resources": {"custom": value}}, TASK)


def test_more_than_one_gpu_must_be_whole_gpus():
    """As in Ray: a share of one GPU, or whole GPUs."""
    import miniray as ray
    for fine in (0.5, 1, 2, 2.0):
        ray.remote(num_gpus=fine)(lambda: 1)
    with pytest.raises(ValueError, match="GPU resource quantities >1 must be whole"):
        ray.remote(num_gpus=1.5)(lambda: 1)


def test_streaming_needs_a_generator_function():
    import miniray as ray

    def plain():
        return 1

    def generator():
        yield 1

    with pytest.raises(ValueError, match="only be used with generator functions"):
        ray.remote(num_returns="streaming")(plain)
    with pytest.raises(ValueError, match="only be used with generator functions"):
        ray.remote(plain).options(num_returns="streaming")
    ray.remote(num_returns="streaming")(generator)
