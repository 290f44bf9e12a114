"""The dashboard's log endpoints without a cluster: /api/logs/read's
argument parsing, the node lookup, cutting reads at whole characters and
lines, the file list (dashboard/views.py); Api.logs_read against a fake
source whose "raylet" is the real worker_logs.read_log on a temporary
directory (dashboard/server.py); and the page's line trimming
(keepLastLines in static/app.js, run by node when it is installed)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from http import HTTPStatus
from importlib import resources

import grpc
import pytest

from miniray.common.ids import NodeID
from miniray.common.validation import InvalidArgument
from miniray.dashboard import views
from miniray.dashboard.server import Api, HttpError
from miniray.protocol import common_pb2, raylet_pb2
from miniray.raylet import worker_logs


def node_info(alive=True, head=True, ip="10.0.0.1", node_id=None):
    return common_pb2.NodeInfo(node_id=node_id or NodeID.from_random(), ip=ip,
                               raylet_port=1, alive=alive, is_head=head)


# --- arguments ------------------------------------------------------------------------------
NODE_HEX = "ab" * 28


def test_read_args_defaults_tail_and_clamped_size():
    args = views.log_read_args({"node_id": NODE_HEX.upper(), "filename": "raylet.out"})
    assert args == views.LogRead(NODE_HEX, "raylet.out", 0, 0, views.MAX_LOG_READ)
    args = views.log_read_args({"node_id": "abab", "filename": "w.out", "offset": "17",
                                "size": "100"})
    assert (args.node_id, args.offset, args.tail, args.size) == ("abab", 17, 0, 100)
    assert views.log_read_args({"node_id": "ab", "filename": "w.out",
                                "tail": "50"}).tail == 50
    huge = views.log_read_args({"node_id": "ab", "filename": "w", "size": str(10 ** 12)})
    assert huge.size == views.MAX_LOG_READ == 256 * 1024
    # Empty values are the defaults (the page's query() leaves them out anyway).
    assert views.log_read_args({"node_id": "ab", "filename": "w", "offset": "",
                                "tail": "5"}).tail == 5


@pytest.mark.parametrize("query, message", [
    ({"filename": "w.out"}, "node_id is required"),
    ({"node_id": "xyz", "filename": "w.out"}, "not a node id"),
    ({"node_id": "../ab", "filename": "w.out"}, "not a node id"),
    ({"node_id": "a" * 65, "filename": "w.out"}, "not a node id"),
    ({"node_id": "ab"}, "filename is required"),
    ({"node_id": "ab", "filename": "../x"}, "not a log file name: '../x'"),
    ({"node_id": "ab", "filename": "/etc/passwd"}, "never a path"),
    ({"node_id": "ab", "filename": ".."}, "not a log file name"),
    ({"node_id": "ab", "filename": "."}, "not a log file name"),
    ({"node_id": "ab", "filename": "a\x00b"}, "not a log file name"),
    ({"node_id": "ab", "filename": "x" * 256}, "not a log file name"),
    ({"node_id": "ab", "filename": "w", "offset": "1", "tail": "2"}, "not both"),
    ({"node_id": "ab", "filename": "w", "offset": "-1"}, "offset must be a whole number"),
    ({"node_id": "ab", "filename": "w", "offset": "1e3"}, "offset must be a whole number"),
    ({"node_id": "ab", "filename": "w", "offset": "9" * 20}, "offset must be a whole"),
    ({"node_id": "ab", "filename": "w", "tail": "0"}, "tail must be in 1..10000"),
    ({"node_id": "ab", "filename": "w", "tail": "10001"}, "tail must be in 1..10000"),
    ({"node_id": "ab", "filename": "w", "size": "0"}, "size must be in 1.."),
    ({"node_id": "ab", "filename": "w", "size": "lots"}, "size must be a whole number"),
])
def test_read_args_refuse_bad_input_with_a_message(query, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        views.log_read_args(query)


def test_find_log_node_by_id_or_unique_prefix():
    a = node_info(node_id=bytes.fromhex("aa" + "00" * 27))
    b = node_info(head=False, node_id=bytes.fromhex("ab" + "00" * 27))
    dead = node_info(alive=False, head=False, node_id=bytes.fromhex("cc" + "00" * 27))
    nodes = [a, b, dead]
    assert views.find_log_node(nodes, a.node_id.hex()) is a
    assert views.find_log_node(nodes, "ab") is b
    with pytest.raises(ValueError, match="ambiguous"):
        views.find_log_node(nodes, "a")
    with pytest.raises(ValueError, match="no node with id ff"):
        views.find_log_node(nodes, "ff")
    with pytest.raises(ValueError, match="is dead"):
        views.find_log_node(nodes, "cc")


# --- cutting reads --------------------------------------------------------------------------
def test_complete_utf8_holds_back_a_character_cut_short():
    euro, smile = "€".encode(), "😀".encode()            # 3 and 4 bytes
    assert views.complete_utf8(b"") == 0
    assert views.complete_utf8(b"abc") == 3
    assert views.complete_utf8(b"ab" + euro) == 5
    assert views.complete_utf8(b"ab" + euro[:2]) == 2
    assert views.complete_utf8(b"ab" + euro[:1]) == 2
    for cut in range(1, 4):
        assert views.complete_utf8(b"x" + smile[:cut]) == 1
    assert views.complete_utf8(b"x" + smile) == 5
    assert views.complete_utf8(b"\x80\x80\x80\x80\x80") == 5   # not UTF-8: decoded as is


def test_log_chunk_offsets_and_decoding():
    chunk = views.log_chunk("n", "f", b"one\ntwo\n", 10, 18)
    assert (chunk["offset"], chunk["next_offset"], chunk["eof"]) == (10, 18, True)
    assert chunk["text"] == "one\ntwo\n" and not chunk["reset"]
    # A character cut by the read's end: held back, read again next time.
    chunk = views.log_chunk("n", "f", b"a\xe2\x82", 0, 100)
    assert (chunk["text"], chunk["next_offset"], chunk["eof"]) == ("a", 1, False)
    # A read too small for one character still moves on (replaced).
    chunk = views.log_chunk("n", "f", b"\xe2\x82", 0, 3)
    assert chunk["next_offset"] == 2 and chunk["text"] == "\ufffd"
    # At the end of the file a cut character waits for the rest to be written.
    chunk = views.log_chunk("n", "f", b"\xe2\x82", 5, 7)
    assert chunk["next_offset"] == 5 and chunk["text"] == ""
    assert views.log_chunk("n", "f", b"\xff ok", 0, 4)["text"] == "\ufffd ok"


def test_drop_partial_first_line():
    assert views.drop_partial_first_line(b"tail of a line\nwhole\n") == (b"whole\n", 15)
    assert views.drop_partial_first_line(b"no newline") == (b"no newline", 0)
    assert views.drop_partial_first_line(b"only one line\n") == (b"only one line\n", 0)


# --- the file list --------------------------------------------------------------------------
def test_log_files_view_head_first_filtered_and_paged():
    head = node_info(ip="10.0.0.9", node_id=bytes.fromhex("ff" + "00" * 27))
    other = node_info(head=False, ip="10.0.0.1", node_id=bytes.fromhex("11" + "00" * 27))
    worker = "worker-" + "ab" * 28 + "-4242"
    listings = [
        (other, [("raylet.out", 10, 5)], None),
        (head, [(worker + ".out", 100, 1000), (worker + ".err", 0, 1000),
                ("gcs_server.out", 7, 9), ("dashboard.log", 3, 0)], None),
        (node_info(head=False, ip="10.0.0.5"), [], "could not list its logs (UNAVAILABLE)"),
    ]
    view = views.log_files_view(listings, {})
    assert [n["node_ip"] for n in view["nodes"]] == ["10.0.0.9", "10.0.0.1", "10.0.0.5"]
    assert view["nodes"][0]["num_files"] == 4 and view["nodes"][0]["total_size"] == 110
    assert view["nodes"][2]["error"] == "could not list its logs (UNAVAILABLE)"
    assert view["total"] == 5
    assert [(f["filename"], f["category"]) for f in view["files"]] == [
        ("dashboard.log", "misc"), ("gcs_server.out", "gcs_server"),
        (worker + ".err", "worker_err"), (worker + ".out", "worker_out"),
        ("raylet.out", "raylet")]
    assert view["files"][0]["mtime_ms"] is None
    only = views.log_files_view(listings, {"node_id": "11", "limit": "5"})
    assert [f["filename"] for f in only["files"]] == ["raylet.out"]
    assert len(only["nodes"]) == 3                       # the summary is of every node
    by_pid = views.log_files_view(listings, {"name": "-4242.OUT"})
    assert [f["filename"] for f in by_pid["files"]] == [worker + ".out"]
    page = views.log_files_view(listings, {"limit": "2", "offset": "2"})
    assert [f["filename"] for f in page["files"]] == [worker + ".err", worker + ".out"]
    assert page["total"] == 5
    with pytest.raises(ValueError, match="not a node id"):
        views.log_files_view(listings, {"node_id": "zz"})


# --- /api/logs/read against a fake raylet ---------------------------------------------------
class _RpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


class FakeSource:
    """The dashboard's source with one live node, whose "raylet" reads a
    temporary directory with the raylet's own read_log."""

    def __init__(self, directory):
        self.directory = directory
        self.node = node_info()
        self.reads = []

    def nodes(self):
        return [self.node]

    def read_log(self, node, filename, offset=0, max_bytes=0, tail_lines=0):
        self.reads.append((offset, max_bytes, tail_lines))
        try:
            worker_logs.check_log_name(filename)
            data, start, size = worker_logs.read_log(self.directory, filename, offset,
                                                     max_bytes, tail_lines)
        except InvalidArgument as exc:
            raise _RpcError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except FileNotFoundError:
            raise _RpcError(grpc.StatusCode.NOT_FOUND,
                            f"no log file {filename!r} on this node") from None
        return raylet_pb2.ReadLogReply(data=data, offset=start, file_size=size)


@pytest.fixture
def api(tmp_path):
    source = FakeSource(str(tmp_path))
    return Api(source), source, tmp_path


def test_read_follows_a_file_from_the_returned_offset(api):
    api, source, directory = api
    node = source.node.node_id.hex()
    log = directory / "worker.out"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    tail = api.logs_read({"node_id": node[:8], "filename": "worker.out", "tail": "3"})
    assert tail["text"] == "line 97\nline 98\nline 99\n"
    assert tail["node_id"] == node and tail["next_offset"] == tail["file_size"] == log.stat().st_size
    with log.open("ab") as f:
        f.write(b"new line\n")
    more = api.logs_read({"node_id": node, "filename": "worker.out",
                          "offset": str(tail["next_offset"])})
    assert more["text"] == "new line\n" and more["eof"]
    again = api.logs_read({"node_id": node, "filename": "worker.out",
                           "offset": str(more["next_offset"])})
    assert again["text"] == "" and again["next_offset"] == more["next_offset"]
    # Small reads walk the file; a truncated file is read again from its start.
    first = api.logs_read({"node_id": node, "filename": "worker.out", "size": "4"})
    assert (first["text"], first["next_offset"], first["eof"]) == ("line", 4, False)
    log.write_bytes(b"fresh\n")
    reset = api.logs_read({"node_id": node, "filename": "worker.out",
                           "offset": str(more["next_offset"])})
    assert reset["reset"] and reset["text"] == "fresh\n" and reset["offset"] == 0


def test_a_tail_longer_than_one_read_starts_at_a_whole_line(api):
    api, source, directory = api
    node = source.node.node_id.hex()
    (directory / "big.out").write_bytes(b"x" * 50 + b"\n" + b"y" * 30 + b"\n")
    # The last 2 lines are 82 bytes; a 40 byte read starts inside the x line.
    cut = api.logs_read({"node_id": node, "filename": "big.out", "tail": "2", "size": "40"})
    assert cut["text"] == "y" * 30 + "\n" and cut["skipped"] == 9
    assert cut["offset"] == 51 and cut["next_offset"] == 82
    # A read of exactly one whole line keeps it (the byte before is a newline).
    whole = api.logs_read({"node_id": node, "filename": "big.out", "tail": "2",
                           "size": "31"})
    assert whole["text"] == "y" * 30 + "\n" and whole["skipped"] == 0
    assert source.reads[-1] == (50, 1, 0)                  # that one byte, only


def test_read_errors_are_400_or_404(api):
    api, source, directory = api
    node = source.node.node_id.hex()
    with pytest.raises(HttpError) as missing:
        api.logs_read({"node_id": node, "filename": "nope.out"})
    assert missing.value.status == HTTPStatus.NOT_FOUND
    assert "no log file 'nope.out'" in str(missing.value)
    source.reads.clear()
    with pytest.raises(ValueError, match="no node with id 0123"):
        api.logs_read({"node_id": "0123", "filename": "w.out"})
    with pytest.raises(ValueError, match="not a log file name"):
        api.logs_read({"node_id": node, "filename": "../x"})
    assert not source.reads                                # refused before any RPC
    os.mkdir(directory / "adir")
    with pytest.raises(HttpError):                          # not a plain file
        api.logs_read({"node_id": node, "filename": "adir"})


# --- the page's trimming (JavaScript) -------------------------------------------------------
@pytest.mark.skipif(shutil.which("node") is None, reason="node (JavaScript) not installed")
def test_page_keeps_the_last_lines():
    script = resources.files("miniray.dashboard").joinpath("static", "app.js")
    cases = [["a\nb\nc\n", 2], ["a\nb\nc", 2], ["a\nb\nc\n", 3], ["a\nb\nc\n", 5],
             ["\n\nx", 3], ["\n\nx", 2], ["", 3], ["one", 1], ["a\nb\n", 0],
             ["".join(f"{i}\n" for i in range(5000)), 2000]]
    program = (f"const {{ keepLastLines }} = require({json.dumps(str(script))});"
               f"console.log(JSON.stringify({json.dumps(cases)}.map("
               f"([t, n]) => keepLastLines(t, n))));")
    out = subprocess.run(["node", "-e", program], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    results = json.loads(out)

    def expected(text, n):
        lines = text.splitlines(keepends=True)
        return "".join(lines[-n:]) if n > 0 else ""
    assert results == [expected(t, n) for t, n in cases]
    assert results[-1].count("\n") == 2000 and results[-1].startswith("3000\n")
