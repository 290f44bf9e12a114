"""The GCS's durable tables (gcs/storage.py) and the tables reloading from
them, as a restarted GCS does: no sockets, a real sqlite3 file."""
from __future__ import annotations

import asyncio
import os
import stat

from miniray.common.ids import FunctionID, JobID, NodeID
from miniray.gcs.actor_table import ALIVE, DEAD, PENDING, RESTARTING, ActorTable
from miniray.gcs.node_manager import NodeManager
from miniray.gcs.storage import GcsStorage
from miniray.gcs.tables import FunctionTable, InternalKV, JobTable
from miniray.protocol import common_pb2, gcs_pb2

from test_actor_table import bring_up, creation_spec


def reopen(storage: GcsStorage) -> GcsStorage:
    """What a restarted GCS sees: the file, as the killed one left it."""
    path = storage.path
    storage._db.close()                  # no flush: only what was committed
    return GcsStorage(path)


def test_file_is_private_and_in_wal_mode(tmp_path):
    storage = GcsStorage(str(tmp_path / "gcs.sqlite3"))
    storage.put("kv", b"k", b"v")
    storage.flush()
    assert stat.S_IMODE(os.stat(storage.path).st_mode) == 0o600
    assert storage._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for suffix in ("-wal", "-shm"):
        if os.path.exists(storage.path + suffix):
            assert stat.S_IMODE(os.stat(storage.path + suffix).st_mode) & 0o077 == 0
    storage.close()


def test_changes_of_one_loop_turn_commit_together_before_sync_returns(tmp_path):
    storage = GcsStorage(str(tmp_path / "gcs.sqlite3"))

    async def scenario():
        for i in range(100):
            storage.put("kv", b"%d" % i, b"x")
        storage.delete("kv", b"5")
        assert storage.commits == 0          # buffered, not yet written
        await storage.sync()
        assert storage.commits == 1          # one transaction for all of them
        await storage.sync()                 # nothing pending: returns at once

    asyncio.run(scenario())
    again = reopen(storage)
    rows = again.load("kv")
    assert len(rows) == 99 and b"5" not in rows
    again.close()


def test_actor_table_reloads_states_names_and_workers(tmp_path):
    storage = GcsStorage(str(tmp_path / "gcs.sqlite3"))
    table = ActorTable(storage)
    alive = table.register(creation_spec(name="kept", max_restarts=1))
    worker = bring_up(table, alive)
    restarting = table.register(creation_spec(max_restarts=2))
    bring_up(table, restarting)
    table.on_failure(restarting)
    dead = table.register(creation_spec(name="gone"))
    table.mark_dead(dead, b"cause")
    pending = table.register(creation_spec())
    storage.flush()

    reloaded = ActorTable(reopen(storage))
    entries = {e.actor_id: e for e in reloaded.load()}
    assert entries[alive.actor_id].info.state == ALIVE
    assert entries[alive.actor_id].worker_id == worker
    assert entries[restarting.actor_id].info.state == RESTARTING
    assert entries[restarting.actor_id].info.num_restarts == 1
    assert entries[dead.actor_id].info.state == DEAD
    assert entries[pending.actor_id].info.state == PENDING
    assert reloaded.by_name("kept", "ns").actor_id == alive.actor_id
    assert reloaded.by_name("gone", "ns") is None      # a dead actor's name is free
    assert entries[alive.actor_id].spec == alive.spec


def test_jobs_functions_kv_and_nodes_reload(tmp_path):
    storage = GcsStorage(str(tmp_path / "gcs.sqlite3"))
    jobs = JobTable(storage)
    driver = common_pb2.Address(ip="127.0.0.1", port=5, worker_id=b"d" * 28)
    first = jobs.add(gcs_pb2.JobConfig(), 100, driver)
    second = jobs.add(gcs_pb2.JobConfig(namespace="ns"), 101)
    jobs.finish(first)
    functions = FunctionTable(storage)
    function_id = FunctionID(b"f" * 20)
    functions.export(function_id, b"pickled", "f")
    kv = InternalKV(storage=storage)
    kv.put("ns", b"a", b"1", overwrite=True)
    kv.put("", b"b", b"2", overwrite=True)
    kv.delete("", b"b")
    nodes = NodeManager(5.0, storage)
    node_id = NodeID.from_random()
    nodes.register(common_pb2.NodeInfo(node_id=node_id, ip="127.0.0.1", raylet_port=9))
    storage.flush()

    again = reopen(storage)
    jobs2, functions2, kv2, nodes2 = (JobTable(again), FunctionTable(again),
                                      InternalKV(storage=again), NodeManager(5.0, again))
    for table in (jobs2, functions2, kv2):
        table.load()
    nodes2.load(now=0.0)
    assert {j.job_id: j.is_dead for j in jobs2.all_jobs()} == {first: True, second: False}
    assert jobs2.config(JobID(second)).namespace == "ns"
    assert jobs2.add(gcs_pb2.JobConfig(), 100, driver) == first   # a retried AddJob
    assert jobs2.add(gcs_pb2.JobConfig(), 102) == JobID.from_int(3)
    assert functions2.get(function_id) == (b"pickled", "f")
    assert kv2.get("ns", b"a") == b"1" and kv2.get("", b"b") is None
    assert kv2.bytes == kv.bytes
    assert [n.node_id for n in nodes2.alive_nodes()] == [node_id]
    assert nodes2.check_timeouts(now=4.0) == []          # a fresh grace period
    assert nodes2.check_timeouts(now=6.0) == [node_id]


def test_rows_load_in_the_order_they_were_last_written(tmp_path):
    # What keeps "the longest removed first" true across a GCS restart.
    path = str(tmp_path / "tables.sqlite3")
    storage = GcsStorage(path)
    for key in (b"c", b"b", b"a"):
        storage.put("placement_groups", key, b"1")
        storage.flush()
    storage.put("placement_groups", b"b", b"2")      # rewritten last
    storage.close()
    reloaded = GcsStorage(path)
    assert list(reloaded.load("placement_groups")) == [b"c", b"a", b"b"]
    reloaded.close()
