"""Serialization: the byte layout shared by inline values and the store."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from miniray.common.serialization import deserialize, note_nested_ref, serialize


class Holder:
    def __init__(self, refs):
        self.refs = refs

    def __reduce__(self):
        for ref in self.refs:
            note_nested_ref(ref)
        return Holder, ([],)


@pytest.mark.parametrize("value", [None, 0, -7, 3.5, "text", b"bytes", True,
                                   [1, {"a": (2, 3)}], {"nested": [None, "x"]}])
def test_round_trip(value):
    data = serialize(value).to_bytes()
    assert deserialize(data) == (value, False)


def test_numpy_buffers_are_out_of_band_aligned_and_read_only():
    array = np.arange(100_000, dtype=np.float64)
    serialized = serialize({"a": array, "b": array[:10].copy()})
    assert len(serialized.buffers) == 2
    data = serialized.to_bytes()
    assert len(data) == serialized.size
    value, is_error = deserialize(memoryview(data))
    assert not is_error and np.array_equal(value["a"], array)
    assert not value["a"].flags.writeable
    assert value["a"].ctypes.data % 64 == (np.frombuffer(data, np.uint8).ctypes.data % 64)


def test_write_to_matches_to_bytes():
    serialized = serialize([np.ones(1000), "x"])
    out = bytearray(serialized.size)
    serialized.write_to(memoryview(out))
    assert bytes(out) == serialized.to_bytes()


def test_errors_are_flagged():
    data = serialize(ValueError("bad"), is_error=True).to_bytes()
    value, is_error = deserialize(data)
    assert is_error and isinstance(value, ValueError) and str(value) == "bad"


def test_unserializable_values_name_themselves():
    with pytest.raises(TypeError, match="lock"):
        serialize({"lock": threading.Lock()})


def test_nested_refs_are_collected_per_call():
    serialized = serialize([Holder(["r1", "r2"]), Holder(["r3"])])
    assert serialized.nested_refs == ["r1", "r2", "r3"]
    assert serialize(Holder([])).nested_refs == []


def test_closures_pickle_by_value():
    factor = 3
    value, _ = deserialize(serialize(lambda x: x * factor).to_bytes())
    assert value(2) == 6
