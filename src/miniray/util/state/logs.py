"""``list_logs`` and ``get_log``: the log files of the cluster's nodes, with
Ray's names and arguments.

Each node's raylet serves the files of its logs directory (ListLogs,
ReadLog): the daemons' logs (on nodes ``miniray start`` started) and every
worker's ``worker-<worker id>-<pid>.out`` / ``.err``. A log is named by
its file name, or found from an actor id, a task id or a worker's pid.
"""
from __future__ import annotations

import re
import time
from typing import Iterator

from miniray.protocol import gcs_pb2, raylet_pb2
from miniray.util.state.client import StateClient
from miniray.util.state.common import DEFAULT_LOG_LIMIT, RayStateApiException

__all__ = ["list_logs", "get_log", "categorize"]

_CHUNK = 1024 * 1024
_FOLLOW_INTERVAL_S = 0.25
_PAST_THE_END = 2 ** 62           # an offset past any file's end: reads nothing
_WORKER_FILE = re.compile(r"^worker-([0-9a-f]+)-(\d+)\.(out|err)$")


def categorize(filenames) -> dict[str, list[str]]:
    """Ray's grouping of a node's log files: worker_out, worker_err,
    raylet, gcs_server, misc (empty groups left out)."""
    groups: dict[str, list[str]] = {}
    for name in sorted(filenames):
        match = _WORKER_FILE.match(name)
        if match:
            group = f"worker_{match.group(3)}"
        elif name.startswith("raylet"):
            group = "raylet"
        elif name.startswith("gcs"):
            group = "gcs_server"
        else:
            group = "misc"
        groups.setdefault(group, []).append(name)
    return groups


def _list_files(client: StateClient, node, glob_filter: str = "") -> list:
    reply = client.raylet(node, "ListLogs",
                          raylet_pb2.ListLogsRequest(glob_filter=glob_filter or ""))
    return list(reply.files)


def list_logs(address: str | None = None, node_id: str | None = None,
              node_ip: str | None = None, glob_filter: str | None = None,
              timeout: int | None = None, **_) -> dict[str, list[str]]:
    """The log files of one node (the head node unless ``node_id`` or
    ``node_ip`` names another), grouped as Ray does: {"worker_out": [...],
    "worker_err": [...], "raylet": [...], "gcs_server": [...], ...}.
    ``glob_filter``: only names matching it (e.g. "*worker*")."""
    with StateClient(address, timeout) as client:
        node = client.find_node(node_id, node_ip)
        files = _list_files(client, node, glob_filter or "")
    return categorize(f.filename for f in files)


def _worker_file(client: StateClient, node, suffix: str, worker_id: str = "",
                 pid: int | None = None) -> str | None:
    """The name of a worker's .out/.err file on ``node``, by its id or pid."""
    pattern = f"worker-{worker_id or '*'}-{pid if pid else '*'}.{suffix}"
    files = _list_files(client, node, pattern)
    return files[0].filename if files else None


def _resolve(client: StateClient, *, node_id, node_ip, filename, actor_id, task_id,
             pid, suffix, attempt_number) -> tuple:
    """(node, file name) of the log asked for."""
    if filename:
        if node_id or node_ip:
            return client.find_node(node_id, node_ip), filename
        for node in client.alive_nodes():
            if _list_files(client, node, filename):
                return node, filename
        raise RayStateApiException(f"no live node has a log file named {filename!r}")
    if actor_id:
        reply = client.gcs("GetAllActors", gcs_pb2.GetAllActorsRequest())
        actor = next((a for a in reply.actors if a.actor_id.hex() == actor_id.lower()),
                     None)
        if actor is None:
            raise RayStateApiException(f"no actor with id {actor_id}")
        return _by_worker(client, actor.address.node_id, actor.address.worker_id.hex(),
                          actor.pid, suffix, f"actor {actor_id}")
    if task_id:
        try:
            wanted = bytes.fromhex(task_id)
        except ValueError:
            raise RayStateApiException(f"no task with id {task_id}") from None
        events = list(client.gcs("GetTaskEvents",
                                 gcs_pb2.GetTaskEventsRequest(task_id=wanted)).tasks)
        ran = [e for e in events if e.worker_id]
        if not ran:
            raise RayStateApiException(f"task {task_id} has not run on a worker (or its "
                                       f"events have not reached the GCS yet)")
        chosen = next((e for e in ran if e.attempt == attempt_number), None) \
            or max(ran, key=lambda e: e.attempt)
        return _by_worker(client, chosen.node_id, chosen.worker_id.hex(),
                          chosen.worker_pid, suffix, f"task {task_id}")
    if pid:
        nodes = [client.find_node(node_id, node_ip)] if node_id or node_ip \
            else client.alive_nodes()
        for node in nodes:
            name = _worker_file(client, node, suffix, pid=int(pid))
            if name:
                return node, name
        raise RayStateApiException(f"no worker log of pid {pid} on "
                                   f"{'that node' if node_id or node_ip else 'any node'}")
    raise ValueError("give one of filename, actor_id, task_id or pid")


def _by_worker(client: StateClient, node_id: bytes, worker_hex: str, pid: int,
               suffix: str, what: str) -> tuple:
    node = next((n for n in client.alive_nodes() if n.node_id == node_id), None)
    if node is None:
        raise RayStateApiException(f"the node that ran {what} is not alive")
    name = _worker_file(client, node, suffix, worker_id=worker_hex) \
        or (pid and _worker_file(client, node, suffix, pid=pid))
    if not name:
        raise RayStateApiException(f"no log file of the worker of {what} on node "
                                   f"{node.node_id.hex()}")
    return node, name


def get_log(address: str | None = None, node_id: str | None = None,
            node_ip: str | None = None, filename: str | None = None,
            actor_id: str | None = None, task_id: str | None = None,
            pid: int | None = None, follow: bool = False,
            tail: int = DEFAULT_LOG_LIMIT, timeout: int | None = None,
            suffix: str = "out", encoding: str = "utf-8", errors: str = "replace",
            attempt_number: int = 0, _interval: float | None = None,
            **_) -> Iterator[str]:
    """The lines (without their newline) of a log file: named by
    ``filename`` (on ``node_id``/``node_ip``, else on whichever live node
    has it), or the ``.out`` (``suffix="err"``: ``.err``) file of the worker
    running ``actor_id``, the one that ran ``task_id`` (its whole log, not
    only that task's lines) or with ``pid``. The last ``tail`` lines (-1:
    all); with ``follow`` it then keeps yielding lines as they are written,
    until the caller stops."""
    if suffix not in ("out", "err"):
        raise ValueError(f"suffix must be 'out' or 'err', got {suffix!r}")
    if not (filename or actor_id or task_id or pid):
        raise ValueError("give one of filename, actor_id, task_id or pid")
    interval = _FOLLOW_INTERVAL_S if _interval is None else float(_interval)
    with StateClient(address, timeout) as client:
        node, name = _resolve(client, node_id=node_id, node_ip=node_ip, filename=filename,
                              actor_id=actor_id, task_id=task_id, pid=pid,
                              suffix=suffix, attempt_number=attempt_number)

        def read(**kwargs):
            return client.raylet(node, "ReadLog", raylet_pb2.ReadLogRequest(
                filename=name, max_bytes=_CHUNK, **kwargs))

        if tail is None or tail < 0:
            reply = read(offset=0)                   # the whole file
        elif tail == 0:
            reply = read(offset=_PAST_THE_END)       # nothing: only new lines
        else:
            reply = read(tail_lines=tail)
        pending = b""
        offset = reply.offset
        while True:
            offset += len(reply.data)
            lines = (pending + reply.data).split(b"\n")
            pending = lines.pop()
            for line in lines:
                yield line.decode(encoding, errors)
            if offset < reply.file_size:
                reply = read(offset=offset)          # the rest of what is there
                continue
            if not follow:
                break
            time.sleep(interval)
            reply = read(offset=offset)
            if reply.file_size < offset:             # truncated: start over
                offset, pending = 0, b""
                reply = read(offset=0)
        if pending:
            yield pending.decode(encoding, errors)
