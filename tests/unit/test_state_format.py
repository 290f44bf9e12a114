"""The state API's filters (Ray's semantics) and the CLI's rendering:
tables that fit 80 columns, ids shortened without clashing, YAML that a
YAML parser reads back. Pure: no cluster."""
from __future__ import annotations

import json

import pytest

from miniray.cli.format import (
    ELLIPSIS, human_bytes, id_matches, render_table, short_id, shorten_ids, to_yaml,
    truncate)
from miniray.util.state.common import (
    TaskState, WorkerState, check_filters, filterable_columns, parse_filter, select)
from miniray.util.state.logs import categorize

pytestmark = pytest.mark.timeout(30)


def task(task_id="aa", state="RUNNING", name="f", pid=7, error_type=None):
    return TaskState(task_id=task_id, attempt_number=0, name=name, state=state,
                     job_id="01000000", actor_id=None, type="NORMAL_TASK",
                     func_or_class_name=name, parent_task_id=None, node_id="n1",
                     worker_id="w1", worker_pid=pid, error_type=error_type)


def worker(alive=True, kind="WORKER", pid=1):
    return WorkerState(worker_id=f"w{pid}", is_alive=alive, worker_type=kind,
                       exit_type=None, node_id="n", ip="127.0.0.1", pid=pid)


# --- filters ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("state=RUNNING", ("state", "=", "RUNNING")),
    ("state!=FINISHED", ("state", "!=", "FINISHED")),
    (" name = my task ", ("name", "=", "my task")),
    ("error_type=", ("error_type", "=", "")),
])
def test_parse_filter(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize("text", ["state", "=RUNNING", "state>RUNNING", ""])
def test_parse_filter_refuses_what_is_not_key_value(text):
    with pytest.raises(ValueError, match="key=value"):
        parse_filter(text)


def test_unknown_columns_and_predicates_are_refused():
    with pytest.raises(ValueError, match="supported columns: .*state"):
        check_filters([("no_such_column", "=", "x")], TaskState)
    with pytest.raises(ValueError, match="predicate"):
        check_filters([("state", ">", "x")], TaskState)
    with pytest.raises(ValueError):            # refused even with nothing to filter
        select(TaskState, [], [("state", "~", "x")], 10)
    assert "events" not in filterable_columns(TaskState)       # a list
    assert "required_resources" not in filterable_columns(TaskState)


def test_string_values_match_case_insensitively_as_in_ray():
    tasks = [task("a", "RUNNING"), task("b", "FINISHED"), task("c", "running")]
    assert [t.task_id for t in select(TaskState, tasks, [("state", "=", "running")],
                                      None)] == ["a", "c"]
    assert [t.task_id for t in select(TaskState, tasks, [("STATE", "!=", "Running")],
                                      None)] == ["b"]


def test_numbers_and_flags_compare_as_their_type():
    tasks = [task("a", pid=12), task("b", pid=123)]
    assert [t.task_id for t in select(TaskState, tasks, [("worker_pid", "=", "12")],
                                      None)] == ["a"]
    assert [t.task_id for t in select(TaskState, tasks, [("worker_pid", "=", 123)],
                                      None)] == ["b"]
    workers = [worker(True, pid=1), worker(False, pid=2), worker(True, "DRIVER", 3)]
    for value in ("true", "True", "1", True):
        assert [w.pid for w in select(WorkerState, workers, [("is_alive", "=", value)],
                                      None)] == [1, 3]
    assert [w.pid for w in select(WorkerState, workers,
                                  [("is_alive", "=", "true"),
                                   ("worker_type", "!=", "driver")], None)] == [1]
    assert select(WorkerState, workers, [("pid", "=", "not a number")], None) == []


def test_missing_values_and_limits():
    tasks = [task("a"), task("b", error_type="ValueError"), task("c")]
    assert [t.task_id for t in select(TaskState, tasks, [("error_type", "=", "")],
                                      None)] == ["a", "c"]
    assert [t.task_id for t in select(TaskState, tasks, [("error_type", "!=", "none")],
                                      None)] == ["b"]
    assert len(select(TaskState, tasks, None, 2)) == 2
    assert len(select(TaskState, tasks, None, -1)) == 3
    assert select(TaskState, tasks, None, 0) == []


def test_records_read_like_dicts():
    record = task("a")
    assert record["state"] == record.get("state") == "RUNNING"
    assert json.loads(json.dumps(record.to_dict()))["task_id"] == "a"


# --- rendering --------------------------------------------------------------------------
def test_tables_are_aligned_and_fit_the_width():
    headers = ["TASK_ID", "NAME", "STATE", "TYPE"]
    rows = [["abc", "a_function_with_a_rather_long_name_indeed", "RUNNING",
             "ACTOR_CREATION_TASK"],
            ["defghi", "f", "PENDING_NODE_ASSIGNMENT", "NORMAL_TASK"]]
    text = render_table(headers, rows, max_width=60)
    lines = text.splitlines()
    assert all(len(line) <= 60 for line in lines)
    starts = [lines[0].index(h) for h in headers]
    for line in lines[1:]:
        for start in starts[1:]:
            assert line[start - 2:start] == "  " and line[start] != " "
    assert ELLIPSIS in text                     # the long name was cut
    assert "RUNNING" in text and "NORMAL_TASK" in text
    # Without a width nothing is cut.
    assert ELLIPSIS not in render_table(headers, rows)


def test_truncate_and_short_ids():
    assert truncate("abcdef", 4) == "abc" + ELLIPSIS
    assert truncate("abc", 4) == "abc"
    assert short_id("0123456789abcdef") == "0123456789ab" + ELLIPSIS
    assert short_id("01234") == "01234"
    assert short_id(None) == ""


def test_ids_sharing_a_prefix_stay_distinct_and_can_be_found_again():
    prefix = "dc15879c682a1b2c3d4e5f6a"
    tasks = [f"{prefix}{i:016x}01000000" for i in (1, 2, 3, 17, 255)]
    shown = shorten_ids(tasks)
    assert len(set(shown.values())) == len(tasks)
    assert all(len(s) <= 13 for s in shown.values())
    for full, short in shown.items():
        assert id_matches(full, short)
        assert [t for t in tasks if id_matches(t, short)] == [full]
    assert shown[tasks[0]] == "dc1587" + ELLIPSIS + "00001"
    # Objects: puts of the driver (index) and returns of those tasks (counter).
    objects = [f"{'00' * 20}01000000{0x80000000 | i:08x}" for i in (1, 2, 3)] + \
        [f"{t}00000001" for t in tasks]
    shown = shorten_ids(objects)
    assert len(set(shown.values())) == len(objects)
    for full, short in shown.items():
        assert [o for o in objects if id_matches(o, short)] == [full]
    randoms = ["ab" * 28, "cd" * 28]
    assert shorten_ids(randoms) == {r: r[:12] + ELLIPSIS for r in randoms}
    assert id_matches("ab" * 28, "abab") and not id_matches("ab" * 28, "cd")


def test_human_bytes():
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024 ** 3) == "3.0 GiB"
    assert human_bytes(2 * 1000 ** 2, "MB") == "2.00 MB"       # decimal, as Ray's
    assert human_bytes(1536, "KB") == "1.54 KB"


def test_yaml_reads_back_as_the_same_data():
    yaml = pytest.importorskip("yaml")
    data = [{"task_id": "00000001", "state": "FINISHED", "attempt_number": 0,
             "is_alive": True, "error_type": None, "name": "f: g #1",
             "required_resources": {"CPU": 1.0}, "events": [
                 {"state": "RUNNING", "created_ms": 1700000000000}],
             "empty": {}, "none": [], "yes": "yes", "text": "a\nb", "ip": "127.0.0.1",
             "nested": [[1, 2], []], "id": "532e202dde8860d8", "num": "12e45",
             "octal": "0o17", "hex": "0x1f", "date": "2024-01-02", "under": "1_000",
             "inf": ".inf", "neg": "-1", "path": "/tmp/a b"}]
    assert yaml.safe_load(to_yaml(data)) == data
    assert yaml.safe_load(to_yaml({"a": 1})) == {"a": 1}


def test_log_files_are_grouped_as_ray_groups_them():
    groups = categorize(["gcs.log", "raylet-1234.log", "worker-ab12-99.out",
                         "worker-ab12-99.err", "dashboard.log"])
    assert groups == {"gcs_server": ["gcs.log"], "raylet": ["raylet-1234.log"],
                      "worker_out": ["worker-ab12-99.out"],
                      "worker_err": ["worker-ab12-99.err"], "misc": ["dashboard.log"]}
