"""What a process reports of its references (core_worker/object_references.py),
how the state API types and summarizes them (util/state/objects.py) and how
`miniray memory` renders them (cli/memory.py): pure, no sockets."""
from __future__ import annotations

import gc
import os
from types import SimpleNamespace

import pyarrow as pa

from miniray.cli.format import ELLIPSIS, id_matches, shorten_ids
from miniray.cli.memory import render_memory
from miniray.common import config
from miniray.common.address import WorkerAddress
from miniray.common.ids import ActorID, JobID, NodeID, ObjectID, TaskID, WorkerID
from miniray.core_worker.object_references import PinnedBuffers, call_site, describe
from miniray.core_worker.reference_counter import ReferenceCounter
from miniray.protocol import common_pb2, core_worker_pb2 as cw_pb2
from miniray.util.state.objects import (
    ObjectListing, Process, reference_type, summarize, to_records)

JOB = JobID.from_int(1)
ME = WorkerAddress("127.0.0.1", 1, WorkerID.from_random(), NodeID.from_random())
OTHER = WorkerAddress("127.0.0.1", 2, WorkerID.from_random(), NodeID.from_random())
Info = cw_pb2.ObjectReferenceInfo


def driver_put(index: int) -> ObjectID:
    return ObjectID.for_put(TaskID.for_driver(JOB), index)


def test_actor_handle_ids_are_told_apart():
    handle = ObjectID.for_actor_handle(ActorID.of(JOB))
    assert handle.is_actor_handle()
    assert not driver_put(1).is_actor_handle()
    assert not ObjectID.for_return(TaskID.of(JOB), 1).is_actor_handle()


def test_snapshot_counts_and_call_sites():
    refs = ReferenceCounter(ME)
    put, inner, borrowed = driver_put(1), driver_put(2), driver_put(3)
    refs.add_owned(put)
    refs.add_local(put)
    refs.set_call_site(put, "(put object) | a.py:<module>:1")
    refs.set_call_site(put, "ignored: the first one stays")
    refs.add_owned(inner)
    refs.add_contained(put, [SimpleNamespace(id=inner, owner=ME)])
    refs.add_submitted([SimpleNamespace(id=borrowed, owner=OTHER)])
    refs.update_borrower(put, OTHER.worker_id, 1)
    snap = {s.object_id: s for s in refs.snapshot()}
    assert snap[put].owned and snap[put].local == 1 and snap[put].num_borrowers == 1
    assert snap[put].call_site == "(put object) | a.py:<module>:1"
    assert snap[inner].contained_in == 1 and snap[inner].call_site is None
    assert not snap[borrowed].owned and snap[borrowed].submitted == 1
    assert snap[borrowed].owner is OTHER
    refs.validate()


def test_call_site_names_the_user_frame():
    site = call_site("put object")
    assert site.startswith("(put object) | test_object_references.py:"
                           "test_call_site_names_the_user_frame:")
    assert config.RECORD_REF_CREATION_SITES is False    # off unless asked


def test_pinned_buffers_follow_the_buffers_lifetime():
    pinned = PinnedBuffers()
    object_id = driver_put(1)
    first, second = pa.py_buffer(b"abcdef"), pa.py_buffer(b"abcdef")
    pinned.note(object_id, first)
    pinned.note(object_id, second)
    assert pinned.snapshot() == {object_id: 6} and object_id in pinned
    del first
    gc.collect()
    assert pinned.snapshot() == {object_id: 6}         # one value still maps it
    del second
    gc.collect()
    assert pinned.snapshot() == {} and object_id not in pinned


def payload(object_id, size, in_plasma=False, is_error=False):
    return common_pb2.ObjectPayload(object_id=object_id, size=size, in_plasma=in_plasma,
                                    node_id=bytes(ME.node_id) if in_plasma else b"",
                                    is_error=is_error)


def test_describe_one_process():
    refs = ReferenceCounter(ME)
    small, big, failed = driver_put(1), driver_put(2), driver_put(3)
    task = TaskID.of(JOB)
    pending = ObjectID.for_return(task, 1)
    borrowed = ObjectID.for_return(TaskID.of(JOB), 1)
    lone = driver_put(9)                       # mapped, no ref left
    for oid in (small, big, failed, pending):
        refs.add_owned(oid)
        refs.add_local(oid)
    refs.add_local(borrowed, OTHER)
    payloads = {small: payload(small, 120), big: payload(big, 5_000_000, True),
                failed: payload(failed, 50, is_error=True)}
    infos, total = describe(refs.snapshot(), payloads.get,
                            {big: 5_000_000, lone: 300_000},
                            {task: "SUBMITTED_TO_WORKER"}.get, bytes(ME.worker_id))
    assert total == 6
    by_id = {ObjectID(i.object_id): i for i in infos}
    assert [ObjectID(i.object_id) for i in infos[:2]] == [big, lone]   # largest first
    assert by_id[small].storage == Info.INLINE and by_id[small].object_size == 120
    assert by_id[small].task_status == "FINISHED" and by_id[small].is_put
    assert by_id[big].storage == Info.STORE and by_id[big].pinned_in_memory
    assert by_id[big].node_id == bytes(ME.node_id)
    assert by_id[failed].task_status == "FAILED"
    assert by_id[pending].task_status == "SUBMITTED_TO_WORKER"
    assert by_id[pending].object_size == -1 and by_id[pending].storage == Info.UNKNOWN
    assert not by_id[borrowed].owned and by_id[borrowed].task_status == ""
    assert by_id[borrowed].owner_worker_id == bytes(OTHER.worker_id)
    assert by_id[lone].pinned_in_memory and by_id[lone].local_ref_count == 0
    cut, total = describe(refs.snapshot(), payloads.get, {}, {}.get,
                          bytes(ME.worker_id), limit=2)
    assert len(cut) == 2 and total == 5


def test_reference_type_follows_rays_order():
    handle = bytes(ObjectID.for_actor_handle(ActorID.of(JOB)))
    plain = bytes(driver_put(1))
    assert reference_type(Info(object_id=handle, local_ref_count=1)) == "ACTOR_HANDLE"
    assert reference_type(Info(object_id=plain, pinned_in_memory=True,
                               submitted_task_ref_count=1)) == "PINNED_IN_MEMORY"
    assert reference_type(Info(object_id=plain, submitted_task_ref_count=1,
                               local_ref_count=1)) == "USED_BY_PENDING_TASK"
    assert reference_type(Info(object_id=plain, local_ref_count=1,
                               contained_in_count=1)) == "LOCAL_REFERENCE"
    assert reference_type(Info(object_id=plain, contained_in_count=1)) == \
        "CAPTURED_IN_OBJECT"
    assert reference_type(Info(object_id=plain)) == "UNKNOWN_STATUS"


DRIVER = Process("aa" * 28, 111, True, "127.0.0.1", 5000, "bb" * 28)
WORKER = Process("cc" * 28, 222, False, "127.0.0.2", 5001, "dd" * 28)


def listing(call_sites=False) -> ObjectListing:
    big, small = driver_put(1), driver_put(2)
    driver_reply = cw_pb2.GetObjectReferencesReply(refs=[
        Info(object_id=big, local_ref_count=1, owned=True, object_size=3_000_000,
             storage=Info.STORE, task_status="FINISHED", pinned_in_memory=True,
             call_site="(put object) | job.py:<module>:3" if call_sites else ""),
        Info(object_id=small, submitted_task_ref_count=1, owned=True, object_size=30,
             storage=Info.INLINE, task_status="FINISHED")])
    worker_reply = cw_pb2.GetObjectReferencesReply(refs=[
        Info(object_id=small, local_ref_count=1, object_size=-1,
             owner_worker_id=bytes.fromhex(DRIVER.worker_id))])
    records = to_records(DRIVER, driver_reply, {bytes(big): {DRIVER.node_id}}) + \
        to_records(WORKER, worker_reply)
    return ObjectListing(records=records, call_sites_recorded=call_sites)


def test_records_and_summary():
    records = listing().records
    big, small, borrowed = records
    assert (big.reference_type, big.storage, big.type, big.pid) == (
        "PINNED_IN_MEMORY", "STORE", "DRIVER", 111)
    assert big.locations == [DRIVER.node_id] and big.job_id == "00000001"
    assert small.reference_type == "USED_BY_PENDING_TASK"
    assert (borrowed.reference_type, borrowed.task_status, borrowed.owned) == (
        "LOCAL_REFERENCE", "NIL", False)
    assert borrowed.call_site == "disabled" and borrowed.owner_worker_id == DRIVER.worker_id
    summary = summarize(records, False)["cluster"]
    group = summary["summary"]["disabled"]
    assert summary["total_objects"] == group["total_objects"] == 3
    assert group["total_num_workers"] == 2 and group["total_num_nodes"] == 2
    assert group["ref_type_counts"] == {"PINNED_IN_MEMORY": 1, "USED_BY_PENDING_TASK": 1,
                                        "LOCAL_REFERENCE": 1}
    assert abs(summary["total_size_mb"] - 3_000_030 / 1024 ** 2) < 1e-9


def test_memory_report_fits_80_columns():
    data = listing()
    data.truncated["worker pid=222 on 127.0.0.2"] = (10_000, 12_000)
    data.missing.append("worker pid=333 on 127.0.0.1: DEADLINE_EXCEEDED: slow")
    out = render_memory(data, store_stats=[SimpleNamespace(
        store_used=3_000_000, store_capacity=100_000_000, store_num_objects=1), None])
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    assert "--- Summary for node address: 127.0.0.1 ---" in lines
    assert "--- Object references for node address: 127.0.0.2 ---" in lines
    big = driver_put(1).hex()
    row = lines[lines.index("  " + big) - 1].split()
    assert row == ["111", "Driver", "2.9", "MiB", "PINNED_IN_MEMORY", "FINISHED"]
    assert "?" in lines[lines.index("  " + driver_put(2).hex()) - 1].split()
    assert "Plasma memory usage 2.9 MiB, 1 objects, 3.0% full" in lines
    assert "(no store stats from 1 node(s) that did not answer)" in lines
    assert "listed its 10000 largest" in out and "Left out worker pid=333" in out
    assert "MINIRAY_RECORD_REF_CREATION_SITES=1" in out
    # Ray's order by size: smallest first.
    refs_of_driver = [line for line in lines if line.startswith("111 ")]
    assert "USED_BY_PENDING_TASK" in refs_of_driver[0]


def test_memory_report_options():
    data = listing(call_sites=True)
    stats = render_memory(data, stats_only=True)
    assert "OBJECT_REF" not in stats and "Mem used by objects: 2.9 MiB" in stats
    by_site = render_memory(data, group_by="STACK_TRACE", units="KB", sort_by="PID")
    assert "--- Summary for call site: (put object) | job.py:<module>:3 ---" in by_site
    assert "3000.00 KB" in by_site and "MINIRAY_RECORD" not in by_site
    assert "  (put object) | job.py:<module>:3" in render_memory(data).splitlines()
    wide = render_memory(data, no_format=True).splitlines()
    line = next(line for line in wide if driver_put(1).hex() in line)
    assert line.split()[:5] == ["111", "Driver", "2.9", "MiB", "PINNED_IN_MEMORY"]
    few = render_memory(data, num_entries=1)
    assert "... and 1 more (--num-entries)" in few and "Display 1 entries" in few


def test_a_drivers_put_ids_are_not_shown_as_zeros():
    only = driver_put(1).hex()
    shown = shorten_ids([only])[only]
    assert shown == "000000" + ELLIPSIS + "00001" and id_matches(only, shown)
    several = [driver_put(i).hex() for i in (1, 2)]
    shown = shorten_ids(several)
    assert len(set(shown.values())) == 2 and all(not v.startswith("0" * 12)
                                                 for v in shown.values())
    node = os.urandom(28).hex()
    assert shorten_ids([node])[node] == node[:12] + ELLIPSIS
