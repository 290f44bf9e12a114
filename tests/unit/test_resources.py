"""Unit tests for miniray.common.resources (pure dict arithmetic)."""
from __future__ import annotations

import pytest

from miniray.common import resources as res


# --- fits ------------------------------------------------------------------------

def test_fits_basic():
    assert res.fits({"CPU": 1}, {"CPU": 2})
    assert res.fits({"CPU": 2}, {"CPU": 2})
    assert not res.fits({"CPU": 3}, {"CPU": 2})
    assert res.fits({}, {})
    assert res.fits({}, {"CPU": 1})


def test_fits_missing_resource_counts_as_zero():
    assert not res.fits({"GPU": 1}, {"CPU": 8})
    assert not res.fits({"custom": 0.5}, {"CPU": 8})


def test_fits_ignores_zero_amounts_for_unknown_resources():
    assert res.fits({"CPU": 1, "GPU": 0}, {"CPU": 1})
    assert res.fits({"GPU": 0.0}, {})


def test_fits_every_resource_must_fit():
    assert res.fits({"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1})
    assert not res.fits({"CPU": 1, "GPU": 2}, {"CPU": 4, "GPU": 1})
    assert not res.fits({"CPU": 5, "GPU": 1}, {"CPU": 4, "GPU": 1})


def test_fits_fractional_with_float_rounding():
    available = {"CPU": 1.0}
    for _ in range(10):
        res.subtract(available, {"CPU": 0.1})
    # 1.0 - 10 * 0.1 is not exactly 0.0 in floating point; nothing more fits
    # (beyond the tolerance), and adding it all back makes 0.3 fit again.
    assert not res.fits({"CPU": 0.1}, available)
    for _ in range(3):
        res.add(available, {"CPU": 0.1})
    assert res.fits({"CPU": 0.3}, available)


def test_fits_against_negative_available():
    assert not res.fits({"CPU": 0.5}, {"CPU": -1.0})
    assert res.fits({"GPU": 1}, {"CPU": -1.0, "GPU": 1})


# --- subtract / add --------------------------------------------------------------------

def test_subtract_and_add_are_inverse():
    available = {"CPU": 4.0, "GPU": 1.0}
    request = {"CPU": 1.5, "GPU": 1, "custom": 2}
    res.subtract(available, request)
    assert available == {"CPU": 2.5, "GPU": 0.0, "custom": -2.0}
    res.add(available, request)
    assert available == {"CPU": 4.0, "GPU": 1.0, "custom": 0.0}


def test_subtract_and_add_skip_zero_amounts():
    available = {"CPU": 1.0}
    res.subtract(available, {"GPU": 0, "CPU": 0.0})
    assert available == {"CPU": 1.0}
    res.add(available, {"GPU": 0.0})
    assert available == {"CPU": 1.0}


def test_subtract_and_add_mutate_in_place_and_leave_request_alone():
    available = {"CPU": 2.0}
    request = {"CPU": 1.0}
    assert res.subtract(available, request) is None
    assert available == {"CPU": 1.0}
    assert request == {"CPU": 1.0}
    assert res.add(available, request) is None
    assert available == {"CPU": 2.0}


# --- shape_key -------------------------------------------------------------------------

def test_shape_key_ignores_order():
    a = {"CPU": 1, "GPU": 2, "x": 0.5}
    b = {"x": 0.5, "GPU": 2, "CPU": 1}
    assert res.shape_key(a) == res.shape_key(b)
    assert hash(res.shape_key(a)) == hash(res.shape_key(b))


def test_shape_key_ignores_zero_amounts():
    assert res.shape_key({"CPU": 1, "GPU": 0}) == res.shape_key({"CPU": 1})
    assert res.shape_key({"GPU": 0.0}) == res.shape_key({}) == ()


def test_shape_key_int_and_float_amounts_are_equal():
    assert res.shape_key({"CPU": 1}) == res.shape_key({"CPU": 1.0})


def test_shape_key_distinguishes_shapes():
    assert res.shape_key({"CPU": 1}) != res.shape_key({"CPU": 2})
    assert res.shape_key({"CPU": 1}) != res.shape_key({"GPU": 1})
    assert res.shape_key({"CPU": 1}) != res.shape_key({"CPU": 1, "GPU": 1})


def test_shape_key_usable_as_dict_key():
    groups: dict = {}
    for shape in ({"CPU": 1}, {"CPU": 1.0, "GPU": 0}, {"GPU": 1}):
        groups.setdefault(res.shape_key(shape), []).append(shape)
    assert len(groups) == 2


# --- validate_request ------------------------------------------------------------------

@pytest.mark.parametrize("request_", [
    {},
    {"CPU": 0},
    {"CPU": 0.0},
    {"CPU": 1},
    {"CPU": 0.5},
    {"CPU": 1.0},
    {"CPU": 2.0},
    {"CPU": 16, "GPU": 1, "custom": 0.25},
    {"custom": 1000},
])
def test_validate_request_accepts(request_):
    res.validate_request(request_)


@pytest.mark.parametrize("request_", [
    {"CPU": -1},
    {"CPU": -0.5},
    {"CPU": float("nan")},
    {"CPU": float("-inf")},
    {"CPU": float("inf")},
    {"CPU": 1.5},
    {"GPU": 2.25},
    {"custom": 100.01},
    {"CPU": "1"},
    {"CPU": None},
    {"CPU": True},
    {"CPU": False},
    {1: 1},
    {None: 1},
    {b"CPU": 1},
    {"CPU": 1, "GPU": -1},
])
def test_validate_request_rejects(request_):
    with pytest.raises(ValueError):
        res.validate_request(request_)


def test_validate_request_error_names_the_resource():
    with pytest.raises(ValueError, match="custom"):
        res.validate_request({"CPU": 1, "custom": -3})
    with pytest.raises(ValueError, match="whole"):
        res.validate_request({"GPU": 1.5})


def test_validate_request_does_not_mutate():
    request = {"CPU": 0.5, "GPU": 1}
    res.validate_request(request)
    assert request == {"CPU": 0.5, "GPU": 1}
