"""Unit tests for miniray.gcs.actor_table (actor lifecycle as pure state transitions)."""
from __future__ import annotations

import pytest

from miniray.common.ids import ActorID, JobID, NodeID, WorkerID
from miniray.gcs.actor_table import (ALIVE, DEAD, PENDING, RESTARTING, ActorEntry,
                                     ActorTable, NameTakenError)
from miniray.protocol import common_pb2

JOB = JobID.from_int(1)
DRIVER = WorkerID.from_random()
OTHER_OWNER = WorkerID.from_random()
NODE_1 = NodeID.from_random()
NODE_2 = NodeID.from_random()


def creation_spec(name: str = "", namespace: str = "ns", max_restarts: int = 0,
                  detached: bool = False, owner: bytes = DRIVER,
                  class_name: str = "Counter") -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        actor_id=ActorID.of(JOB), job_id=JOB,
        caller=common_pb2.Address(ip="127.0.0.1", port=1, worker_id=owner),
        actor_options=common_pb2.ActorCreationOptions(
            max_restarts=max_restarts, name=name, namespace=namespace,
            detached=detached, class_name=class_name))


def bring_up(table: ActorTable, entry: ActorEntry, node: bytes = NODE_1) -> WorkerID:
    worker = WorkerID.from_random()
    address = common_pb2.Address(ip="10.0.0.1", port=4242, worker_id=worker, node_id=node)
    table.mark_alive(entry, address, worker, pid=1234)
    return worker


@pytest.fixture
def table() -> ActorTable:
    return ActorTable()


# --- registration and names ------------------------------------------------------------

def test_register_creates_pending_entry_from_the_spec(table):
    spec = creation_spec(name="c", max_restarts=3, detached=True)
    entry = table.register(spec)
    assert entry.actor_id == ActorID(spec.actor_id)
    assert isinstance(entry.actor_id, ActorID)
    assert table.get(entry.actor_id) is entry
    assert entry.spec is spec
    assert entry.max_restarts == 3
    info = entry.info
    assert info.state == PENDING
    assert (info.name, info.namespace, info.class_name) == ("c", "ns", "Counter")
    assert info.job_id == JOB
    assert info.owner.worker_id == DRIVER
    assert info.detached
    assert info.num_restarts == 0
    assert entry.worker_id is None and entry.node_id == b""
    assert table.alive_count() == 1
    assert table.all_actors() == [entry]


def test_get_unknown_actor_is_none(table):
    assert table.get(ActorID.from_random()) is None


def test_name_taken_in_same_namespace_raises(table):
    first = table.register(creation_spec(name="counter", namespace="ns"))
    with pytest.raises(NameTakenError, match="counter"):
        table.register(creation_spec(name="counter", namespace="ns"))
    assert table.by_name("counter", "ns") is first
    assert table.all_actors() == [first]            # the rejected one isn't recorded


def test_name_taken_error_is_a_value_error():
    assert issubclass(NameTakenError, ValueError)


def test_same_name_in_another_namespace_is_fine(table):
    a = table.register(creation_spec(name="counter", namespace="ns1"))
    b = table.register(creation_spec(name="counter", namespace="ns2"))
    assert table.by_name("counter", "ns1") is a
    assert table.by_name("counter", "ns2") is b


def test_anonymous_actors_never_clash(table):
    a = table.register(creation_spec(name=""))
    b = table.register(creation_spec(name=""))
    assert a is not b
    assert table.named(None) == []


def test_by_name_unknown_is_none(table):
    table.register(creation_spec(name="x", namespace="ns"))
    assert table.by_name("y", "ns") is None
    assert table.by_name("x", "other") is None


def test_named_filters_by_namespace(table):
    a = table.register(creation_spec(name="a", namespace="ns1"))
    b = table.register(creation_spec(name="b", namespace="ns2"))
    table.register(creation_spec(name=""))
    assert table.named("ns1") == [a]
    assert {e.info.name for e in table.named(None)} == {"a", "b"}
    assert table.named("ns2") == [b]


# --- lifecycle -------------------------------------------------------------------------

def test_mark_alive_records_where_the_actor_runs(table):
    entry = table.register(creation_spec())
    worker = bring_up(table, entry, NODE_2)
    assert entry.info.state == ALIVE
    assert entry.info.address.worker_id == worker
    assert entry.info.address.port == 4242
    assert entry.info.pid == 1234
    assert entry.worker_id == worker
    assert entry.node_id == NODE_2


def test_failure_while_constructing_counts_as_a_failure(table):
    """As in Ray: a worker that dies running the constructor (os._exit in
    __init__) is an actor failure: restarted within max_restarts, else dead;
    not retried forever."""
    never = table.register(creation_spec(max_restarts=0))
    assert table.on_failure(never) is False
    twice = table.register(creation_spec(max_restarts=2))
    for restarts in (1, 2):
        assert table.on_failure(twice) is True
        assert twice.info.state == RESTARTING and twice.info.num_restarts == restarts
    assert table.on_failure(twice) is False


def test_failure_while_pending_of_an_exiting_actor_gives_up(table):
    entry = table.register(creation_spec())
    entry.exiting = True
    assert table.on_failure(entry) is False


def test_failure_of_alive_actor_restarts_while_restarts_remain(table):
    entry = table.register(creation_spec(max_restarts=2))
    for attempt in (1, 2):
        bring_up(table, entry)
        assert table.on_failure(entry) is True
        assert entry.info.state == RESTARTING
        assert entry.info.num_restarts == attempt
        assert entry.worker_id is None
        assert not entry.info.HasField("address")
    bring_up(table, entry)
    assert entry.info.state == ALIVE
    assert table.on_failure(entry) is False          # restarts used up
    assert entry.info.num_restarts == 2


def test_actor_without_restarts_dies_on_first_failure(table):
    entry = table.register(creation_spec(max_restarts=0))
    bring_up(table, entry)
    assert table.on_failure(entry) is False
    assert entry.info.num_restarts == 0


def test_infinite_restarts(table):
    entry = table.register(creation_spec(max_restarts=-1))
    for attempt in range(1, 101):
        bring_up(table, entry)
        assert table.on_failure(entry) is True
        assert entry.info.num_restarts == attempt
        assert entry.info.state == RESTARTING


def test_exiting_actor_is_not_restarted(table):
    entry = table.register(creation_spec(max_restarts=-1))
    bring_up(table, entry)
    entry.exiting = True
    assert not entry.can_restart()
    assert table.on_failure(entry) is False
    assert entry.info.num_restarts == 0


def test_failure_of_a_dead_actor_is_a_no_op(table):
    entry = table.register(creation_spec(max_restarts=-1))
    bring_up(table, entry)
    table.mark_dead(entry, b"cause")
    assert table.on_failure(entry) is False
    assert entry.info.state == DEAD
    assert entry.info.num_restarts == 0


def test_mark_dead_records_cause_and_clears_location(table):
    entry = table.register(creation_spec())
    bring_up(table, entry)
    table.mark_dead(entry, b"pickled-error")
    assert entry.info.state == DEAD
    assert entry.info.death_cause == b"pickled-error"
    assert not entry.info.HasField("address")
    assert entry.worker_id is None
    assert table.alive_count() == 0
    assert table.get(entry.actor_id) is entry        # still known, as DEAD


def test_mark_dead_twice_keeps_the_first_cause(table):
    entry = table.register(creation_spec())
    table.mark_dead(entry, b"first")
    table.mark_dead(entry, b"second")
    assert entry.info.death_cause == b"first"


def test_mark_dead_frees_the_name(table):
    old = table.register(creation_spec(name="svc", namespace="ns"))
    table.mark_dead(old, b"")
    assert table.by_name("svc", "ns") is None
    new = table.register(creation_spec(name="svc", namespace="ns"))
    assert table.by_name("svc", "ns") is new
    # The old actor dying again (or late) must not free the new actor's name.
    table.mark_dead(old, b"")
    assert table.by_name("svc", "ns") is new


def test_restarting_keeps_the_name(table):
    entry = table.register(creation_spec(name="svc", max_restarts=1))
    bring_up(table, entry)
    assert table.on_failure(entry)
    assert table.by_name("svc", "ns") is entry
    with pytest.raises(NameTakenError):
        table.register(creation_spec(name="svc"))


# --- queries ---------------------------------------------------------------------------

def test_hosted_by_finds_the_actor_on_a_worker(table):
    a = table.register(creation_spec())
    b = table.register(creation_spec())
    worker_a = bring_up(table, a)
    bring_up(table, b)
    assert table.hosted_by(worker_a) == [a]
    assert table.hosted_by(WorkerID.from_random()) == []
    table.on_failure(a)                               # worker gone
    assert table.hosted_by(worker_a) == []


def test_on_node_lists_live_actors_there(table):
    a = table.register(creation_spec())
    b = table.register(creation_spec())
    c = table.register(creation_spec())
    bring_up(table, a, NODE_1)
    bring_up(table, b, NODE_1)
    bring_up(table, c, NODE_2)
    assert table.on_node(NODE_1) == [a, b]
    assert table.on_node(NODE_2) == [c]
    table.mark_dead(b, b"")
    assert table.on_node(NODE_1) == [a]


def test_owned_by_excludes_detached_and_dead_actors(table):
    mine = table.register(creation_spec(owner=DRIVER))
    detached = table.register(creation_spec(owner=DRIVER, detached=True))
    dead = table.register(creation_spec(owner=DRIVER))
    theirs = table.register(creation_spec(owner=OTHER_OWNER))
    table.mark_dead(dead, b"")
    assert table.owned_by(DRIVER) == [mine]
    assert table.owned_by(bytes(DRIVER)) == [mine]
    assert table.owned_by(OTHER_OWNER) == [theirs]
    assert detached not in table.owned_by(DRIVER)


def test_alive_count_counts_everything_not_dead(table):
    pending = table.register(creation_spec())
    alive = table.register(creation_spec(max_restarts=1))
    bring_up(table, alive)
    table.on_failure(alive)                            # RESTARTING
    assert table.alive_count() == 2
    table.mark_dead(pending, b"")
    assert table.alive_count() == 1


def test_no_actor_is_hosted_by_no_worker(table):
    """Pending actors have no worker: a failure reported for "no worker"
    (a creation whose worker was cleared by a kill) must not hit them."""
    pending = table.register(creation_spec())
    assert pending.worker_id is None
    assert table.hosted_by(None) == []


# --- the cache of dead actors ------------------------------------------------------------

def test_dead_actors_past_the_cap_are_forgotten_longest_dead_first():
    table = ActorTable(max_dead=2)
    entries = [table.register(creation_spec()) for _ in range(4)]
    for entry in entries:
        bring_up(table, entry)
    for entry in entries[:3]:
        table.mark_dead(entry, b"cause")
    assert table.get(entries[0].actor_id) is None          # died first
    assert [table.get(e.actor_id) for e in entries[1:]] == entries[1:]
    assert table.alive_count() == 1
    table.mark_dead(entries[3], b"cause")
    assert table.get(entries[1].actor_id) is None
    assert len(table.all_actors()) == 2


class _MemoryStorage:
    def __init__(self):
        self.rows: dict = {}

    def put(self, table, key, value):
        self.rows.setdefault(table, {})[bytes(key)] = value

    def delete(self, table, key):
        self.rows.get(table, {}).pop(bytes(key), None)

    def load(self, table):
        return dict(self.rows.get(table, {}))


def test_forgotten_dead_actors_leave_the_storage_and_a_reload_keeps_the_cap():
    storage = _MemoryStorage()
    table = ActorTable(storage, max_dead=1)
    first, second, alive = (table.register(creation_spec()) for _ in range(3))
    table.mark_dead(first, b"cause")
    table.mark_dead(second, b"cause")
    assert set(storage.rows["actors"]) == {bytes(second.actor_id), bytes(alive.actor_id)}
    reloaded = ActorTable(storage, max_dead=0)
    assert [e.actor_id for e in reloaded.load()] == [alive.actor_id]
    assert set(storage.rows["actors"]) == {bytes(alive.actor_id)}
