"""Unit tests for miniray.object_store (policy without files, store on tmp_path)."""
from __future__ import annotations

import errno
import os
import random

import pytest

from miniray.common.ids import ObjectID, WorkerID
from miniray.exceptions import ObjectStoreFullError, OutOfDiskError
from miniray.object_store import (
    Evict, ObjectState, PlasmaStore, Spill, StorePolicy, create_and_write,
    read, write_bytes)

OWNER = WorkerID.from_random()


def oid() -> ObjectID:
    return ObjectID.from_random()


def sealed(policy: StorePolicy, size: int, primary: bool = True,
           owner: WorkerID = OWNER) -> ObjectID:
    object_id = oid()
    assert policy.reserve(object_id, size, owner, primary) == []
    policy.validate()
    policy.seal(object_id)
    policy.validate()
    return object_id


# ------------------------------------------------------------------ policy
def test_reserve_fits_without_actions():
    policy = StorePolicy(100)
    a = oid()
    assert policy.reserve(a, 60, OWNER) == []
    assert policy.lookup(a).state is ObjectState.CREATING
    assert policy.snapshot().used == 60
    policy.validate()
    policy.seal(a)
    policy.validate()
    assert policy.lookup(a).state is ObjectState.SEALED
    assert policy.reserve(oid(), 40, OWNER) == []
    policy.validate()
    assert policy.snapshot().used == 100


def test_duplicate_reserve_and_bad_size_raise_value_error():
    policy = StorePolicy(100)
    a = sealed(policy, 10)
    with pytest.raises(ValueError):
        policy.reserve(a, 10, OWNER)
    with pytest.raises(ValueError):
        policy.reserve(oid(), -1, OWNER)
    policy.validate()
    assert policy.snapshot().num_objects == 1


def test_evicts_secondary_in_lru_order_before_spilling_primary():
    policy = StorePolicy(100)
    p1 = sealed(policy, 20, primary=True)
    s1 = sealed(policy, 20, primary=False)
    s2 = sealed(policy, 20, primary=False)
    s3 = sealed(policy, 20, primary=False)
    policy.touch(s1)  # LRU order of secondaries is now s2, s3, s1
    new = oid()
    actions = policy.reserve(new, 55, OWNER)
    policy.validate()
    assert actions == [Evict(s2), Evict(s3)]
    assert policy.lookup(s2) is None and policy.lookup(s3) is None
    assert policy.lookup(p1).state is ObjectState.SEALED
    stats = policy.snapshot()
    assert stats.used == 20 + 20 + 55
    assert stats.num_evicted_total == 2 and stats.num_spilled_total == 0


def test_spills_primary_in_lru_order_after_secondaries():
    policy = StorePolicy(100)
    p1 = sealed(policy, 30)
    p2 = sealed(policy, 30)
    s1 = sealed(policy, 10, primary=False)
    p3 = sealed(policy, 30)
    policy.touch(p1)  # primary LRU order: p2, p3, p1
    actions = policy.reserve(oid(), 70, OWNER)
    policy.validate()
    assert actions == [Evict(s1), Spill(p2), Spill(p3)]
    assert policy.lookup(p2).state is ObjectState.SPILLED
    assert policy.lookup(p1).state is ObjectState.SEALED
    stats = policy.snapshot()
    assert stats.used == 100 and stats.spilled_bytes == 60
    assert stats.num_spilled == 2 and stats.num_in_memory == 2
    assert stats.num_spilled_total == 2 and stats.num_evicted_total == 1


def test_creating_objects_are_never_evicted_or_spilled():
    policy = StorePolicy(100)
    creating = oid()
    policy.reserve(creating, 50, OWNER, primary=False)
    s = sealed(policy, 30, primary=False)
    assert policy.reserve(oid(), 50, OWNER) == [Evict(s)]
    policy.validate()
    assert policy.lookup(creating).state is ObjectState.CREATING
    with pytest.raises(ObjectStoreFullError):
        policy.reserve(oid(), 1, OWNER)  # everything left is being created
    policy.validate()


def test_too_big_raises_with_useful_message_and_changes_nothing():
    policy = StorePolicy(1000)
    s = sealed(policy, 100, primary=False)
    policy.reserve(oid(), 500, OWNER)
    before = policy.snapshot()
    with pytest.raises(ObjectStoreFullError) as info:
        policy.reserve(oid(), 1234, OWNER)  # bigger than the whole store
    assert "1234 bytes" in str(info.value)
    assert "capacity is 1000 bytes" in str(info.value)
    with pytest.raises(ObjectStoreFullError) as info:
        policy.reserve(oid(), 501, OWNER)  # 400 free + 100 evictable
    message = str(info.value)
    for figure in ("501 bytes", "1000 bytes", "600 in use", "400 free", "100"):
        assert figure in message
    assert policy.snapshot() == before
    assert policy.lookup(s).state is ObjectState.SEALED
    policy.validate()


def test_restore_makes_room_and_returns_to_creating():
    policy = StorePolicy(100)
    p1 = sealed(policy, 60)
    p2 = oid()
    assert policy.reserve(p2, 60, OWNER) == [Spill(p1)]
    policy.validate()
    policy.seal(p2)
    assert policy.restore(p1) == [Spill(p2)]
    policy.validate()
    assert policy.lookup(p1).state is ObjectState.CREATING
    policy.seal(p1)
    policy.validate()
    stats = policy.snapshot()
    assert stats.num_restored_total == 1 and stats.spilled_bytes == 60
    with pytest.raises(ValueError):
        policy.restore(p1)  # not spilled
    with pytest.raises(KeyError):
        policy.restore(oid())


def test_delete_in_every_state():
    policy = StorePolicy(100)
    creating = oid()
    policy.reserve(creating, 10, OWNER)
    sealed_id = sealed(policy, 20)
    spilled_id = sealed(policy, 30)
    policy.mark_spilled(spilled_id)
    policy.validate()
    for object_id in (creating, sealed_id, spilled_id):
        assert policy.delete(object_id) is True
        policy.validate()
        assert policy.delete(object_id) is False
    stats = policy.snapshot()
    assert stats.used == 0 and stats.spilled_bytes == 0 and stats.num_objects == 0


def test_objects_owned_by_and_state_errors():
    policy = StorePolicy(100)
    other = WorkerID.from_random()
    mine = {sealed(policy, 1), sealed(policy, 1, primary=False)}
    theirs = sealed(policy, 1, owner=other)
    assert set(policy.objects_owned_by(OWNER)) == mine
    assert policy.objects_owned_by(other) == [theirs]
    with pytest.raises(ValueError):
        policy.seal(theirs)  # already sealed
    with pytest.raises(KeyError):
        policy.touch(oid())


def test_randomized_operations_keep_invariants():
    rng = random.Random(1234)
    policy = StorePolicy(10_000)
    known: list[ObjectID] = []
    for _ in range(5000):
        op = rng.random()
        if op < 0.45 or not known:
            object_id = oid()
            try:
                policy.reserve(object_id, rng.randint(0, 3000), OWNER,
                               primary=rng.random() < 0.5)
                known.append(object_id)
            except ObjectStoreFullError:
                pass
        else:
            object_id = rng.choice(known)
            record = policy.lookup(object_id)
            if record is None:  # evicted
                known.remove(object_id)
            elif op < 0.65:
                if record.state is ObjectState.CREATING:
                    policy.seal(object_id)
                else:
                    policy.touch(object_id)
            elif op < 0.8 and record.state is ObjectState.SPILLED:
                try:
                    policy.restore(object_id)
                except ObjectStoreFullError:
                    pass
            elif op < 0.85 and record.state is ObjectState.SEALED:
                policy.mark_spilled(object_id)
            elif op >= 0.85:
                assert policy.delete(object_id)
                known.remove(object_id)
        policy.validate()
    stats = policy.snapshot()
    assert stats.num_evicted_total and stats.num_spilled_total
    assert stats.num_restored_total


# ------------------------------------------------------------------- store
@pytest.fixture
def store(tmp_path):
    s = PlasmaStore(str(tmp_path / "shm"), 1000, str(tmp_path / "spill"))
    yield s
    s.close()


def put(store: PlasmaStore, data: bytes, primary: bool = True) -> ObjectID:
    object_id = oid()
    path = store.reserve(object_id, len(data), OWNER, primary)
    write_bytes(path, data)
    store.seal(object_id)
    return object_id


def test_round_trip(store):
    object_id = oid()
    path = store.reserve(object_id, 5, OWNER)
    assert path == os.path.join(store.directory, object_id.hex())
    assert not store.contains(object_id)

    def fill(view: memoryview) -> None:
        view[:] = b"hello"

    create_and_write(path, 5, fill)
    assert not os.path.exists(path + ".tmp")
    store.seal(object_id)
    assert store.contains(object_id)
    assert store.ensure_local(object_id) == path
    assert read(path).to_pybytes() == b"hello"
    assert store.stats().used == 5


def test_empty_object(store):
    object_id = put(store, b"")
    assert read(store.ensure_local(object_id)).to_pybytes() == b""


def test_seal_checks_file(store):
    object_id = oid()
    path = store.reserve(object_id, 4, OWNER)
    with pytest.raises(FileNotFoundError):
        store.seal(object_id)
    write_bytes(path, b"abc")
    with pytest.raises(ValueError):
        store.seal(object_id)
    with pytest.raises(KeyError):
        store.seal(oid())


def test_failed_write_leaves_no_tmp_file(store):
    object_id = oid()
    path = store.reserve(object_id, 4, OWNER)

    def boom(view: memoryview) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        create_and_write(path, 4, boom)
    assert os.listdir(store.directory) == []


def test_spill_when_full_and_restore_same_bytes(store):
    first = put(store, b"a" * 600)
    second = put(store, b"b" * 600)  # spills first
    assert not os.path.exists(store.path(first))
    assert os.path.exists(store.spill_path(first))
    assert store.contains(first)
    with pytest.raises(FileNotFoundError):
        read(store.path(first))
    path = store.ensure_local(first)  # spills second
    assert read(path).to_pybytes() == b"a" * 600
    assert not os.path.exists(store.spill_path(first))
    assert os.path.exists(store.spill_path(second))
    assert read(store.ensure_local(second)).to_pybytes() == b"b" * 600
    stats = store.stats()
    assert stats.num_spilled_total == 3 and stats.num_restored_total == 2


def test_spill_failure_loses_victim_and_rolls_back(store, monkeypatch):
    victim = put(store, b"v" * 600)

    def no_space(*args) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "sendfile", no_space)
    new = oid()
    with pytest.raises(OutOfDiskError):
        store.reserve(new, 600, OWNER)
    assert not store.contains(victim) and not store.contains(new)
    assert store.stats().used == 0 and store.stats().num_objects == 0
    assert os.listdir(store.directory) == os.listdir(store.spill_directory) == []


def test_secondary_copies_are_evicted(store):
    secondary = put(store, b"s" * 600, primary=False)
    put(store, b"p" * 600)
    assert not store.contains(secondary)
    assert os.listdir(store.spill_directory) == []
    with pytest.raises(KeyError):
        store.ensure_local(secondary)


def test_full_store_raises_and_duplicate_raises(store):
    store.reserve(oid(), 600, OWNER)          # being written: cannot be moved
    with pytest.raises(ObjectStoreFullError):
        store.reserve(oid(), 500, OWNER)
    object_id = put(store, b"x")
    with pytest.raises(ValueError):
        store.reserve(object_id, 1, OWNER)


def test_an_object_bigger_than_the_store_goes_to_disk(store):
    data = bytes(range(256)) * 10                  # 2560 bytes, the store has 1000
    object_id = oid()
    path = store.reserve(object_id, len(data), OWNER)
    assert path == store.spill_path(object_id)
    write_bytes(path, data)
    store.seal(object_id)
    assert store.contains(object_id)
    assert store.ensure_local(object_id) == path        # read in place, not restored
    assert read(path).to_pybytes() == data
    stats = store.stats()
    assert (stats.used, stats.spilled_bytes, stats.num_spilled) == (0, len(data), 1)
    small = put(store, b"s" * 900)                      # memory is all still free
    assert store.ensure_local(small) == store.path(small)
    store._policy.validate()
    assert store.delete([object_id]) == 1
    assert not os.path.exists(path) and store.stats().spilled_bytes == 0


def test_a_spilled_object_with_no_room_to_restore_is_read_from_disk(store):
    spilled = put(store, b"a" * 600)
    store.delete([put(store, b"b" * 600)])             # spilled the first
    store.reserve(oid(), 500, OWNER)                   # being written: not movable
    assert store.ensure_local(spilled) == store.spill_path(spilled)
    assert read(store.spill_path(spilled)).to_pybytes() == b"a" * 600


def test_delete_removes_files(store):
    spilled = put(store, b"a" * 600)
    in_memory = put(store, b"b" * 600)
    creating = oid()
    open(store.reserve(creating, 10, OWNER) + ".tmp", "wb").close()
    assert store.delete([spilled, in_memory, creating, oid()]) == 3
    # Only the recycled memory of the freed in-memory object remains.
    assert all(name.startswith("free-") for name in os.listdir(store.directory))
    assert os.listdir(store.spill_directory) == []
    assert store.stats().used == 0 and store.stats().num_objects == 0


def test_delete_owned_by(store):
    other = WorkerID.from_random()
    mine = put(store, b"m")
    theirs = oid()
    write_bytes(store.reserve(theirs, 1, other), b"t")
    store.seal(theirs)
    assert store.delete_owned_by(OWNER) == [mine]
    assert not store.contains(mine) and store.contains(theirs)


def test_close_removes_directories(tmp_path):
    store = PlasmaStore(str(tmp_path / "shm"), 1000, str(tmp_path / "spill"))
    put(store, b"a" * 600)
    put(store, b"b" * 600)
    store.close()
    assert not os.path.exists(store.directory)
    assert not os.path.exists(store.spill_directory)
    store.close()  # idempotent


def test_read_is_zero_copy_and_read_only(tmp_path):
    path = str(tmp_path / "obj")
    write_bytes(path, bytes(range(256)) * 16)
    first, second = read(path), read(path)
    assert memoryview(first).readonly is True
    with pytest.raises(TypeError):
        memoryview(first)[0] = 1
    assert first.to_pybytes() == second.to_pybytes() == bytes(range(256)) * 16
    os.unlink(path)  # the mapping stays valid after the file is gone
    assert first.to_pybytes()[:3] == b"\x00\x01\x02"
    with pytest.raises(FileNotFoundError):
        read(path)


def test_freed_memory_is_reused_unless_mapped(tmp_path):
    store = PlasmaStore(str(tmp_path / "shm"), 10_000, str(tmp_path / "spill"))
    first = put(store, b"x" * 1000)
    store.delete([first])
    assert os.listdir(store.directory) == ["free-0"]
    second = oid()
    path = store.reserve(second, 900, OWNER)
    assert os.path.exists(path + ".tmp")            # the recycled file, in place
    write_bytes(path, b"y" * 900)
    store.seal(second)
    assert bytes(read(path)) == b"y" * 900

    # A file that a reader still maps is never recycled.
    view = read(path)
    store.delete([second])
    assert os.listdir(store.directory) == []
    assert bytes(view) == b"y" * 900
    store.close()


def test_recycled_memory_counts_against_capacity(tmp_path):
    store = PlasmaStore(str(tmp_path / "shm"), 2000, str(tmp_path / "spill"))
    small = put(store, b"s" * 300)
    store.delete([small])
    assert os.listdir(store.directory) == ["free-0"]
    big = oid()
    store.reserve(big, 1900, OWNER)              # no room left for the pool
    assert "free-0" not in os.listdir(store.directory)
    store.close()


# ------------------------------------------------- reservations and frees (issue 8)
def test_unsealed_reservation_is_released_when_its_writer_dies(store):
    writer, other = WorkerID.from_random(), WorkerID.from_random()
    mine = oid()
    path = store.reserve(mine, 600, OWNER, writer=writer, deadline=1e9)
    with open(path + ".tmp", "wb") as f:          # half written
        f.write(b"x" * 100)
    theirs = oid()
    store.reserve(theirs, 100, OWNER, writer=other, deadline=1e9)
    assert store.unsealed_writer(mine) == bytes(writer)     # who to check on a conflict
    assert store.unsealed_writer(oid()) is None
    assert store.has_unsealed() and not store.has_unsealed(expired_before=10.0)
    assert store.release_unsealed(writer=writer) == [mine]
    assert store.stats().used == 100 and not os.path.exists(path + ".tmp")
    store.reserve(mine, 600, OWNER, writer=other)       # a retry can write it now
    assert store.release_unsealed(now=10.0) == []       # (no deadline: not expired)


def test_unsealed_reservation_is_released_after_its_deadline(store):
    late, sealed_in_time = oid(), oid()
    store.reserve(late, 400, OWNER, writer=WorkerID.from_random(), deadline=5.0)
    path = store.reserve(sealed_in_time, 400, OWNER, writer=WorkerID.from_random(),
                         deadline=5.0)
    write_bytes(path, b"s" * 400)
    store.seal(sealed_in_time)
    assert store.release_unsealed(now=4.0) == []
    assert store.has_unsealed(expired_before=6.0)
    assert store.release_unsealed(now=6.0) == [late]
    assert not store.has_unsealed()
    assert store.contains(sealed_in_time) and store.stats().used == 400
    with pytest.raises(KeyError):
        store.seal(late)


def test_only_the_owner_frees_a_primary_copy(store):
    mine, secondary = put(store, b"m" * 100), put(store, b"s" * 100, primary=False)
    assert store.delete_if_owned([mine, secondary], WorkerID.from_random()) == 1
    assert store.contains(mine) and not store.contains(secondary)
    assert store.delete_if_owned([mine, oid()], OWNER) == 1
    assert not store.contains(mine)


def test_ids_of_the_wrong_length_never_become_paths(store):
    for bad in (ObjectID(b""), ObjectID(b"../x"), ObjectID(b"x" * 300)):
        with pytest.raises(ValueError):
            store.path(bad)
        with pytest.raises(ValueError):
            store.reserve(bad, 1, OWNER)


def test_wait_local_waits_for_a_copy_being_written_to_be_sealed(store):
    import threading
    object_id = oid()
    assert pytest.raises(KeyError, store.wait_local, object_id, 0.1)
    writer = WorkerID.from_random()
    path = store.reserve(object_id, 3, OWNER, writer=writer, deadline=1e9)
    with pytest.raises(ValueError):
        store.ensure_local(object_id)         # being written: not readable yet
    with pytest.raises(TimeoutError):
        store.wait_local(object_id, 0.05)
    found = []
    waiter = threading.Thread(target=lambda: found.append(store.wait_local(object_id, 30)))
    waiter.start()
    write_bytes(path, b"abc")
    store.seal(object_id)
    waiter.join(30)
    assert found == [path]
    assert read(path).to_pybytes() == b"abc"


def test_wait_local_gives_up_when_the_writer_does(store):
    import threading
    object_id, writer = oid(), WorkerID.from_random()
    store.reserve(object_id, 3, OWNER, writer=writer, deadline=1e9)
    errors = []

    def wait():
        try:
            store.wait_local(object_id, 30)
        except KeyError as exc:
            errors.append(exc)
    waiter = threading.Thread(target=wait)
    waiter.start()
    assert store.release_unsealed(writer=writer) == [object_id]   # it died
    waiter.join(30)
    assert len(errors) == 1
