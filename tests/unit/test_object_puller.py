"""ObjectPuller's decisions around the local store, with the network part
(opening a source's stream) replaced: what a pull does when a copy of the
object appears on this node while it is under way."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from miniray.common.ids import ObjectID, WorkerID
from miniray.object_store import PlasmaStore, read, write_bytes
from miniray.object_store.transfer import ObjectPuller

OWNER = WorkerID.from_random()


@pytest.fixture
def store(tmp_path):
    s = PlasmaStore(str(tmp_path / "shm"), 1000, str(tmp_path / "spill"))
    yield s
    s.close()


def _puller_racing_a_local_writer(store, object_id, finish):
    """A puller whose source, while it is being opened, sees a local task
    reserve the same object (a re-run rebuilding it on this node);
    ``finish(path)`` runs on the loop a moment later."""
    puller = ObjectPuller(store, channels=None)

    async def open_source(source, oid):
        path = store.reserve(oid, 3, OWNER, writer=bytes(WorkerID.from_random()),
                             deadline=1e9)
        asyncio.get_running_loop().call_later(0.05, finish, path)
        return source, SimpleNamespace(found=True, total_size=3)

    puller._open = open_source
    return puller


def test_a_pull_that_meets_a_local_copy_being_written_returns_that_copy(store):
    object_id = ObjectID.from_random()

    def seal(path):
        write_bytes(path, b"abc")
        store.seal(object_id)

    puller = _puller_racing_a_local_writer(store, object_id, seal)
    path = asyncio.run(puller.pull(object_id, "127.0.0.1:1"))
    assert read(path).to_pybytes() == b"abc"
    assert puller.objects_pulled == 0            # nothing was transferred


def test_a_pull_whose_local_writer_gives_up_reports_the_object_missing(store):
    object_id = ObjectID.from_random()

    def die(path):
        store.release_unsealed(now=2e9)          # the writer's deadline passed

    puller = _puller_racing_a_local_writer(store, object_id, die)
    with pytest.raises(KeyError):
        asyncio.run(puller.pull(object_id, "127.0.0.1:1"))
