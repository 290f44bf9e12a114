"""The state CLI (`miniray list/get/summary/memory/logs/timeline`) and the
state API on a real cluster.

The module's cluster is a head started with ``miniray start --head --block``
(stopped by SIGTERM at the end, so only its own processes go; ``miniray
stop`` would end every miniray process on the machine), with
MINIRAY_TEMP_DIR private to the module as in test_cli.py. A driver
subprocess runs an actor that prints, tasks (one fails) and a large put,
then waits for commands on its stdin. Task events reach the GCS in batches,
so the tests wait for them with deadlines.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from miniray.node import free_port
from miniray.testing import wait_for_condition

pytestmark = pytest.mark.timeout(120)

DRIVER = textwrap.dedent("""
    import sys
    import numpy as np
    import miniray as ray

    ray.init(address="auto")

    @ray.remote
    class Printer:
        def say(self, text):
            print(text, flush=True)
            return text

    @ray.remote
    def square(x):
        return x * x

    @ray.remote(max_retries=0)
    def boom():
        raise ValueError("boom")

    printer = Printer.options(name="printer").remote()
    ray.get(printer.say.remote("hello from the actor"))
    assert ray.get([square.remote(i) for i in range(3)]) == [0, 1, 4]
    try:
        ray.get(boom.remote())
    except ValueError:
        pass
    big = ray.put(np.zeros(3 * 1024 * 1024, dtype=np.uint8))
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, text = line.strip().partition(" ")
        if command == "say":
            ray.get(printer.say.remote(text))
            print("said", flush=True)
        elif command == "exit":
            break
""")


def make_env(temp_root) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MINIRAY_ADDRESS", "RAY_ADDRESS")}
    env["MINIRAY_TEMP_DIR"] = str(temp_root)
    env["COLUMNS"] = "80"
    return env


def cli(env, *args, timeout=45, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "miniray.cli.main", *args], env=env,
                            capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, f"miniray {' '.join(args)}:\n" \
                                       f"{result.stdout}{result.stderr}"
    return result


def cli_json(env, *args):
    return json.loads(cli(env, *args, "--format", "json").stdout)


class Lines:
    """A process's stdout lines, read by a thread (so waits have deadlines)."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} not seen within {timeout}s: {self.lines}")
            try:
                self.lines.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    temp_root = tmp_path_factory.mktemp("miniray-state-cli")
    env = make_env(temp_root)
    port = free_port()
    head = subprocess.Popen(
        [sys.executable, "-m", "miniray.cli.main", "start", "--head", "--block",
         "--port", str(port), "--num-cpus", "2",
         "--object-store-memory", str(256 * 1024 * 1024)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL)
    driver = None
    try:
        wait_for_condition(lambda: head.poll() is None and cli(
            env, "status", check=False).returncode == 0, timeout=60)
        driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=env,
                                  cwd=str(temp_root), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        output = Lines(driver.stdout)
        output.wait_for("ready", timeout=60)
        yield {"env": env, "address": f"127.0.0.1:{port}", "driver": driver,
               "output": output, "temp_root": str(temp_root)}
    finally:
        if driver is not None and driver.poll() is None:
            try:
                driver.stdin.write("exit\n")
                driver.stdin.flush()
                driver.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                driver.kill()
                driver.wait()
        head.send_signal(signal.SIGTERM)
        try:
            head.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.communicate()
        shutil.rmtree(temp_root, ignore_errors=True)


def tasks_named(env, name) -> list:
    return cli_json(env, "list", "tasks", "--filter", f"func_or_class_name={name}")


def wait_for_tasks(env, name, count, state="FINISHED", timeout=30) -> list:
    found = {}

    def done():
        found["tasks"] = tasks_named(env, name)
        return sum(1 for t in found["tasks"] if t["state"] == state) >= count
    wait_for_condition(done, timeout=timeout)
    return found["tasks"]


def the_actor(env) -> dict:
    actors = cli_json(env, "list", "actors", "--filter", "name=printer")
    assert len(actors) == 1, actors
    return actors[0]


# --- tasks -----------------------------------------------------------------------------
def test_list_tasks_shows_each_task_and_its_states(cluster):
    env = cluster["env"]
    squares = wait_for_tasks(env, "square", 3)
    assert len(squares) == 3 and {t["type"] for t in squares} == {"NORMAL_TASK"}
    detail = cli_json(env, "list", "tasks", "--filter", "name=square", "--detail")
    states = [e["state"] for e in detail[0]["events"]]
    assert states[-1] == "FINISHED" and "RUNNING" in states
    assert detail[0]["start_time_ms"] <= detail[0]["end_time_ms"]
    # A failed task, found the way Ray users look for it (case-insensitive).
    failed = wait_for_tasks(env, "boom", 1, state="FAILED")
    assert failed[0]["error_type"]
    by_state = cli_json(env, "list", "tasks", "--filter", "state=failed")
    assert [t["func_or_class_name"] for t in by_state] == ["boom"]
    assert not cli_json(env, "list", "tasks", "--filter", "state=failed",
                        "--filter", "name!=boom")
    # The table: Ray's header, aligned columns, 80 columns wide, limits.
    table = cli(env, "list", "tasks", "--limit", "2").stdout
    assert "Total: 2+" in table and "there are more" in table
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("TASK_ID"))
    assert all(len(line) <= 80 for line in lines[header:header + 3])
    assert len(lines[header + 1:header + 3]) == 2
    state_column = lines[header].index("STATE")
    for row in lines[header + 1:header + 3]:
        assert row[state_column - 2:state_column] == "  " and row[state_column] != " "
    # A task by (the start of) its id, as the table shows it.
    task_id = squares[0]["task_id"]
    shown = cli_json(env, "list", "tasks", "--filter", f"task_id={task_id}")
    assert [t["task_id"] for t in shown] == [task_id]
    got = cli(env, "get", "tasks", task_id, "--format", "json").stdout
    assert json.loads(got)["task_id"] == task_id
    bad = cli(env, "list", "tasks", "--filter", "colour=red", check=False)
    assert bad.returncode == 1 and "supported columns" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_summaries(cluster):
    env = cluster["env"]
    wait_for_tasks(env, "square", 3)
    out = cli(env, "summary", "tasks").stdout
    assert re.search(r"square\s+FINISHED: 3\s+NORMAL_TASK", out), out
    assert "total_tasks:" in out
    actors = json.loads(cli(env, "summary", "actors", "--format", "json").stdout)
    assert actors["summary"]["Printer"]["state_counts"] == {"ALIVE": 1}
    objects = cli(env, "summary", "objects").stdout
    assert "total_objects:" in objects


# --- actors, workers, jobs, nodes ---------------------------------------------------------
def test_actors_workers_jobs_and_nodes(cluster):
    env, driver = cluster["env"], cluster["driver"]
    actor = the_actor(env)
    assert actor["class_name"] == "Printer" and actor["state"] == "ALIVE"
    # get takes the start of an id, as tables show them.
    got = cli(env, "get", "actors", actor["actor_id"][:10]).stdout
    assert f"actor_id: {actor['actor_id']}" in got and "state: ALIVE" in got
    missing = cli(env, "get", "actors", "ffffffff", check=False)
    assert missing.returncode == 1 and "no actor" in missing.stderr

    workers = cli_json(env, "list", "workers")
    drivers = [w for w in workers if w["worker_type"] == "DRIVER"]
    assert [w["pid"] for w in drivers] == [driver.pid]
    assert drivers[0]["is_alive"] and drivers[0]["job_id"]
    hosting = [w for w in workers if w["actor_id"] == actor["actor_id"]]
    assert len(hosting) == 1 and hosting[0]["is_alive"]
    assert hosting[0]["worker_type"] == "WORKER" and hosting[0]["pid"] > 0
    alive = cli_json(env, "list", "workers", "--filter", "is_alive=true",
                     "--filter", "worker_type=worker")
    assert alive and all(w["is_alive"] and w["worker_type"] == "WORKER" for w in alive)
    table = cli(env, "list", "workers").stdout
    assert "WORKER_ID" in table and "DRIVER" in table
    assert all(len(line) <= 80 for line in table.splitlines())

    jobs = cli_json(env, "list", "jobs", "--filter", "status=running")
    assert driver.pid in [j["driver_pid"] for j in jobs]
    nodes = cli_json(env, "list", "nodes")
    assert len(nodes) == 1 and nodes[0]["is_head_node"] and nodes[0]["state"] == "ALIVE"
    yaml_text = cli(env, "list", "nodes", "--detail").stdout
    assert f"node_id: {nodes[0]['node_id']}" in yaml_text
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(yaml_text)[0]["node_id"] == nodes[0]["node_id"]


# --- objects ---------------------------------------------------------------------------
def test_objects_and_memory(cluster):
    env, driver = cluster["env"], cluster["driver"]
    size = 3 * 1024 * 1024
    objects = cli_json(env, "list", "objects")
    big = [o for o in objects if o["object_size"] >= size]
    assert len(big) == 1, objects
    put = big[0]
    assert put["object_size"] < size + 4096            # the array plus its pickle
    assert put["type"] == "DRIVER" and put["pid"] == driver.pid
    # Held by the driver's ObjectRef, never read back: a local reference
    # (Ray's type) to a value in the store.
    assert put["reference_type"] == "LOCAL_REFERENCE" and put["storage"] == "STORE"
    node_id = cli_json(env, "list", "nodes")[0]["node_id"]
    assert put["node_id"] == node_id and put["locations"] == [node_id]
    same = cli_json(env, "list", "objects", "--filter", f"pid={driver.pid}",
                    "--filter", "reference_type=local_reference")
    assert put["object_id"] in [o["object_id"] for o in same]
    # Every reference, not only store objects: the driver's handle to its actor.
    assert any(o["reference_type"] == "ACTOR_HANDLE" and o["pid"] == driver.pid
               for o in objects), objects

    memory = cli(env, "memory").stdout
    assert f"{driver.pid}  Driver  3.0 MiB" in memory, memory
    assert f"  {put['object_id']}" in memory.splitlines()
    assert "Aggregate object store stats" in memory
    assert all(len(line) <= 80 for line in memory.splitlines())
    summary = json.loads(cli(env, "summary", "objects", "--format", "json").stdout)
    assert summary["total_objects"] >= 1 and summary["total_size_mb"] >= 3


# --- logs ------------------------------------------------------------------------------
def test_actor_logs_and_follow(cluster):
    env, driver, output = cluster["env"], cluster["driver"], cluster["output"]
    actor_id = the_actor(env)["actor_id"]
    out = cli(env, "logs", "--actor-id", actor_id).stdout
    assert re.search(r"\(Printer pid=\d+\) hello from the actor", out), out

    follow = subprocess.Popen(
        [sys.executable, "-m", "miniray.cli.main", "logs", "--actor-id", actor_id,
         "--follow", "--tail", "0"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        lines = Lines(follow.stdout)
        # Lines printed from now on appear (the follower may not be reading
        # yet when the first is printed: keep printing until one shows).
        deadline = time.monotonic() + 45
        count = 0
        while True:
            count += 1
            driver.stdin.write(f"say followed line {count}\n")
            driver.stdin.flush()
            output.wait_for(f"followed line {count}", timeout=30)
            try:
                lines.wait_for("followed line", timeout=1.0)
                break
            except AssertionError:
                assert follow.poll() is None, follow.stderr.read()
                assert time.monotonic() < deadline, "--follow printed nothing new"
        driver.stdin.write("say one more line\n")
        driver.stdin.flush()
        lines.wait_for("one more line", timeout=30)
        assert not any("hello from the actor" in line for line in lines.lines)  # --tail 0
    finally:
        follow.kill()
        follow.communicate()


def test_logs_lists_files_and_prints_them(cluster):
    env, driver = cluster["env"], cluster["driver"]
    node_id = cli_json(env, "list", "nodes")[0]["node_id"]
    listing = cli(env, "logs").stdout
    assert f"Node {node_id}" in listing
    assert "worker_out:" in listing and "worker_err:" in listing
    assert max(len(line) for line in listing.splitlines()) <= 80     # 80 columns
    actor_worker = [w for w in cli_json(env, "list", "workers")
                    if w["actor_id"] == the_actor(env)["actor_id"]][0]
    name = f"worker-{actor_worker['worker_id']}-{actor_worker['pid']}.out"
    assert name in listing
    by_name = cli(env, "logs", name, "--tail", "-1").stdout
    assert "hello from the actor" in by_name
    assert by_name == cli(env, "logs", "--pid", str(actor_worker["pid"]), "--tail",
                          "-1").stdout
    assert cli(env, "logs", f"worker-{actor_worker['worker_id'][:20]}*.out").stdout \
        == cli(env, "logs", name).stdout                 # a glob matching one file
    # The files are the session's, private; nothing outside the logs directory
    # can be read.
    session = next(p for p in os.listdir(cluster["temp_root"]) if p.startswith("session_"))
    path = os.path.join(cluster["temp_root"], session, "logs", name)
    assert os.stat(path).st_mode & 0o777 == 0o600
    for bad in ("../../current_cluster", "/etc/passwd", "missing.out"):
        result = cli(env, "logs", bad, "--node-id", node_id, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    # --address and $MINIRAY_ADDRESS name the cluster as for `miniray status`.
    assert f"Node {node_id}" in cli(env, "logs", "--address", cluster["address"]).stdout
    assert f"Node {node_id}" in cli(dict(env, MINIRAY_ADDRESS=cluster["address"]),
                                    "logs").stdout


# --- timeline --------------------------------------------------------------------------
def test_timeline_has_a_slice_per_task_run(cluster, tmp_path):
    env = cluster["env"]
    wait_for_tasks(env, "square", 3)
    path = tmp_path / "timeline.json"
    seen = {}

    def settled():
        """The timeline and the task list agree (events of earlier tests'
        tasks may still be arriving between the two reads)."""
        out = cli(env, "timeline", "--output", str(path)).stdout
        assert str(path) in out
        seen["events"] = json.loads(path.read_text())
        seen["tasks"] = cli_json(env, "list", "tasks", "--detail", "--limit", "1000")
        seen["ran"] = {(t["task_id"], t["attempt_number"]) for t in seen["tasks"]
                       if t["start_time_ms"] and t["end_time_ms"]}
        slices = [e for e in seen["events"] if e["ph"] == "X"]
        return sorted((e["args"]["task_id"], e["args"]["attempt"]) for e in slices) \
            == sorted(seen["ran"])
    wait_for_condition(settled, timeout=30)
    events, tasks, ran = seen["events"], seen["tasks"], seen["ran"]
    slices = [e for e in events if e["ph"] == "X"]
    names = {e["name"] for e in slices}
    assert {"square", "boom", "Printer.say"} <= names
    rows = {(e["pid"], e["tid"]) for e in slices}
    for e in slices:
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert e["dur"] >= 0 and e["ts"] > 0
    # A row per worker, named by metadata events, as Perfetto shows them.
    threads = {(e["pid"], e["tid"]) for e in events
               if e["ph"] == "M" and e["name"] == "thread_name"}
    processes = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert rows <= threads and {pid for pid, _ in rows} <= processes
    pids = {t["worker_pid"] for t in tasks if (t["task_id"], t["attempt_number"]) in ran}
    assert {tid for _, tid in rows} == pids


# --- a cluster that init() started -----------------------------------------------------
INIT_DRIVER = textwrap.dedent("""
    import json, os, sys
    import miniray as ray
    from miniray.testing import wait_for_condition
    from miniray.util.state import get_log, list_logs, list_tasks

    ray.init(num_cpus=1)

    @ray.remote
    def shout():
        print("hello from a task")
        return os.getpid()

    pid = ray.get(shout.remote())
    files = list_logs(glob_filter=f"*-{pid}.out")["worker_out"]
    wait_for_condition(lambda: any("hello from a task" in line
                                   for line in get_log(pid=pid)), timeout=20)
    wait_for_condition(lambda: any(t.start_time_ms and t.end_time_ms
                                   for t in list_tasks()), timeout=20)
    events = ray.timeline()
    ray.timeline(filename=sys.argv[1])
    with open(sys.argv[1]) as f:
        assert json.load(f) == events
    print("FOUND", files[0], sum(1 for e in events if e["ph"] == "X"), flush=True)
""")


def test_init_cluster_logs_to_files_and_to_the_driver(tmp_path):
    """Workers of a cluster init() started print to the driver's terminal
    and, since this change, to their own log files too."""
    env = make_env(tmp_path / "root")
    result = subprocess.run([sys.executable, "-c", INIT_DRIVER, str(tmp_path / "t.json")],
                            env=env, capture_output=True, text=True, timeout=90,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(re.findall(r"\(shout pid=\d+\) hello from a task", result.stdout)) == 1, \
        result.stdout
    found = re.search(r"FOUND worker-[0-9a-f]+-\d+\.out (\d+)", result.stdout)
    assert found and int(found.group(1)) == 1, result.stdout
