"""How a pull splits an object over the sources holding copies."""
from miniray.object_store.transfer import MIN_RANGE_BYTES, split


def test_small_objects_come_from_one_source():
    assert split(100, 4) == [(0, 100)]
    assert split(MIN_RANGE_BYTES * 2 - 1, 4) == [(0, MIN_RANGE_BYTES * 2 - 1)]


def test_big_objects_are_split_evenly_and_covered_exactly():
    total = MIN_RANGE_BYTES * 10 + 7
    for sources in (1, 2, 3, 4):
        ranges = split(total, sources)
        assert len(ranges) == sources
        assert ranges[0][0] == 0
        assert all(a[0] + a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert sum(length for _, length in ranges) == total
        assert max(length for _, length in ranges) - min(length for _, length in ranges) \
            <= sources


def test_empty_objects_have_one_empty_range():
    assert split(0, 3) == [(0, 0)]
