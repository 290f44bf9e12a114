"""The dashboard on a live cluster: init() reports its URL, the JSON
endpoints show the cluster's nodes, actors and tasks, /metrics parses as
Prometheus text with the system metrics and a user Counter incremented in a
task, the log endpoints list a worker's output file and follow it from an
offset, requests without the token are refused, and the page renders in a
real headless Chromium (its DOM checked, a log opened, a screenshot kept)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

import miniray as ray
from miniray.rpc import auth
from miniray.testing import wait_for_condition

NUM_TASKS = 25
MARK = "dashboard-log-line-7f3a"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@ray.remote
def square(x):
    from miniray.util.metrics import Counter
    Counter("squares_done", "squares computed", tag_keys=("kind",)).inc(
        tags={"kind": "int"})
    return x * x


@ray.remote
class Greeter:
    def hello(self):
        return "hi"


@ray.remote(num_cpus=0)
class Printer:
    def say(self, text):
        print(text, flush=True)
        return os.getpid()


@pytest.fixture(scope="module")
def cluster():
    context = ray.init(num_cpus=2, dashboard_port=_free_port())
    greeter = Greeter.remote()
    assert ray.get([square.remote(i) for i in range(NUM_TASKS)]) == \
        [i * i for i in range(NUM_TASKS)]
    assert ray.get(greeter.hello.remote()) == "hi"
    yield context, greeter
    ray.shutdown()


@pytest.fixture(scope="module")
def printer_log(cluster):
    """(node id, file name, pid) of the .out file of an actor that printed
    MARK-first."""
    context, _ = cluster
    printer = Printer.remote()
    pid = ray.get(printer.say.remote(f"{MARK} first"))
    node_id = context.address_info["node_id"]

    def listed():
        files = _api(context, f"/api/logs?node_id={node_id}&name=-{pid}.out")["files"]
        return files[0] if files else None
    wait_for_condition(listed, timeout=30)
    yield node_id, listed()["filename"], printer
    ray.kill(printer)


def _get(context, path: str, token: str | None = "default", cookie: str | None = None):
    """(status, headers, body) of a GET; ``token``: "default" sends the
    cluster's token, None none."""
    headers = {}
    if token == "default":
        token = auth.current_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = cookie
    request = urllib.request.Request(f"http://{context.dashboard_url}{path}",
                                     headers=headers)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=20) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _api(context, path: str):
    status, _, body = _get(context, path)
    assert status == 200, body
    return json.loads(body)


def test_init_reports_the_dashboard_url(cluster):
    context, _ = cluster
    host, _, port = context.dashboard_url.rpartition(":")
    assert host == "127.0.0.1" and port.isdigit()
    assert context.address_info["webui_url"] == context.dashboard_url
    status, headers, body = _get(context, "/", token=None)
    assert status == 200 and b"<title>miniray dashboard</title>" in body
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    # Recorded in the GCS, where a driver connecting to the cluster finds it.
    wait_for_condition(lambda: ray.api._recorded_dashboard(ray.api._worker()) ==
                       context.dashboard_url, timeout=15)


def test_json_endpoints_show_nodes_actors_and_tasks(cluster):
    context, greeter = cluster
    (node,) = _api(context, "/api/nodes")["nodes"]
    assert node["node_id"] == context.address_info["node_id"]
    assert node["state"] == "ALIVE" and node["resources_total"]["CPU"] == 2.0
    wait_for_condition(lambda: _api(context, "/api/nodes")["nodes"][0]["mem_total"],
                       timeout=15)
    actors = _api(context, "/api/actors")
    assert [(a["class_name"], a["state"]) for a in actors["actors"]] == [("Greeter", "ALIVE")]
    assert actors["actors"][0]["actor_id"] == greeter._actor_id.hex()

    def squares_finished():
        summary = _api(context, "/api/tasks/summary")["cluster"]["summary"]
        return summary.get("square", {}).get("state_counts", {}).get("FINISHED") == NUM_TASKS
    wait_for_condition(squares_finished, timeout=30)
    page = _api(context, "/api/tasks?name=square&state=FINISHED&limit=10&offset=20")
    assert page["total"] == NUM_TASKS and len(page["tasks"]) == 5
    assert {t["name"] for t in page["tasks"]} == {"square"}
    status, _, body = _get(context, "/api/tasks?state=BOGUS")
    assert status == 400 and b"unknown task state" in body
    wait_for_condition(lambda: any(e["name"] == "Greeter.hello"
                                   for e in _api(context, "/api/timeline")), timeout=30)
    trace = _api(context, "/api/timeline?limit=3")
    assert len(trace) == 3 and all(e["ph"] == "X" and e["dur"] >= 0 for e in trace)
    assert _api(context, "/api/jobs")["jobs"][0]["status"] == "RUNNING"
    assert _api(context, "/api/placement_groups")["total"] == 0
    assert _api(context, "/api/cluster_status")["num_nodes_alive"] == 1
    big = ray.put(b"x" * (4 << 20))            # in the node's store
    objects = _api(context, "/api/objects?limit=5")
    assert objects["stores"] and objects["stores"][0]["node_id"] == node["node_id"]
    if not objects["note"]:                    # the cluster lists single objects
        wait_for_condition(lambda: _api(context, "/api/objects?limit=1")["objects"][0][
            "object_id"] == big.hex(), timeout=15)


def _read(context, node_id: str, filename: str, **params):
    query = urllib.parse.urlencode({"node_id": node_id, "filename": filename, **params})
    return _get(context, f"/api/logs/read?{query}")


def test_logs_list_a_workers_output_and_follow_it(cluster, printer_log):
    context, _ = cluster
    node_id, filename, printer = printer_log
    listing = _api(context, f"/api/logs?node_id={node_id}")
    entry = next(f for f in listing["files"] if f["filename"] == filename)
    assert entry["category"] == "worker_out" and entry["node_id"] == node_id
    assert filename.startswith("worker-") and filename.endswith(".out")
    assert [n["node_id"] for n in listing["nodes"]] == [node_id]
    assert listing["nodes"][0]["num_files"] >= listing["total"] >= 1
    assert _api(context, "/api/logs?node_id=" + "0" * 56)["files"] == []

    def has_first():
        status, _, body = _read(context, node_id, filename, tail=100)
        assert status == 200, body
        chunk = json.loads(body)
        return chunk if f"{MARK} first" in chunk["text"] else None
    chunk = wait_for_condition(has_first, timeout=30) or has_first()
    assert chunk["next_offset"] <= chunk["file_size"]
    # (The file's lines may carry the "(Printer pid=...)" prefix of the driver's.)
    assert chunk["text"].splitlines()[-1].endswith(f"{MARK} first")
    ray.get(printer.say.remote(f"{MARK} second"))

    def new_text():
        status, _, body = _read(context, node_id, filename, offset=chunk["next_offset"])
        assert status == 200, body
        more = json.loads(body)
        return more if f"{MARK} second" in more["text"] else None
    more = wait_for_condition(new_text, timeout=30) or new_text()
    assert more["offset"] == chunk["next_offset"]
    (line,) = more["text"].splitlines()                       # only the new line
    assert line.endswith(f"{MARK} second")
    assert more["next_offset"] == more["offset"] + len(more["text"].encode())


def test_bad_log_requests_get_400_with_a_reason(cluster, printer_log):
    context, _ = cluster
    node_id, filename, _ = printer_log
    for params, reason in [
            ({"filename": "../x"}, b"not a log file name"),
            ({"filename": "/etc/passwd"}, b"never a path"),
            ({"filename": ""}, b"filename is required"),
            ({"node_id": "f" * 56}, b"no node with id"),
            ({"node_id": "not-hex"}, b"not a node id"),
            ({"offset": "-5"}, b"offset must be a whole number"),
            ({"offset": "1", "tail": "2"}, b"not both")]:
        status, _, body = _read(context, **{"node_id": node_id, "filename": filename,
                                            **params})
        assert status == 400 and reason in body, (params, body)
        assert json.loads(body)["error"]
    status, _, body = _read(context, node_id, "no-such-file.out")
    assert status == 404 and b"no log file" in body
    status, _, body = _get(context, "/api/logs?node_id=zz")
    assert status == 400 and b"not a node id" in body
    if auth.current_token() is not None:
        assert _get(context, "/api/logs", token=None)[0] == 401


def _metrics(context) -> dict:
    status, headers, body = _get(context, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def test_metrics_parse_and_carry_tasks_and_user_counters(cluster):
    context, _ = cluster

    def ready():
        found = _metrics(context)
        tasks = {(s.labels["Name"], s.labels["State"]): s.value
                 for s in found["miniray_tasks"].samples if s.labels["IsRetry"] == "0"}
        counts = [s for s in found.get("miniray_squares_done", None).samples
                  if s.name == "miniray_squares_done_total"] \
            if "miniray_squares_done" in found else []
        return tasks.get(("square", "FINISHED")) == NUM_TASKS and \
            sum(s.value for s in counts) == NUM_TASKS and found
    wait_for_condition(ready, timeout=30)
    found = _metrics(context)
    counters = [s for s in found["miniray_squares_done"].samples
                if s.name == "miniray_squares_done_total"]
    assert found["miniray_squares_done"].type == "counter"
    assert all(s.labels["kind"] == "int" and s.labels["Component"] == "core_worker"
               and len(s.labels["WorkerId"]) == 56 for s in counters)
    assert [(s.labels["Name"], s.labels["State"], s.value)
            for s in found["miniray_actors"].samples
            if s.labels["Name"] != "Printer"] == [("Greeter", "ALIVE", 1.0)]
    cpu = {s.labels["State"]: s.value for s in found["miniray_resources"].samples
           if s.labels["Name"] == "CPU"}
    assert cpu["USED"] + cpu["AVAILABLE"] == 2.0
    for name in ("miniray_node_cpu_utilization", "miniray_node_mem_used",
                 "miniray_node_mem_total", "miniray_object_store_memory"):
        assert found[name].samples, name


def test_requests_without_the_token_are_refused(cluster):
    context, _ = cluster
    if auth.current_token() is None:
        pytest.skip("this run has authentication disabled")
    for path in ("/api/nodes", "/api/tasks", "/metrics"):
        assert _get(context, path, token=None)[0] == 401, path
        assert _get(context, path, token="wrong-token-0123456789abcdef")[0] == 401, path
        assert _get(context, path, token=None, cookie="miniray_token=wrong")[0] == 401
    status, _, _ = _get(context, "/?token=wrong-token-0123456789abcdef", token=None)
    assert status == 401
    status, headers, _ = _get(context, f"/?token={auth.current_token()}", token=None)
    assert status == 302 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, _, _ = _get(context, "/api/nodes", token=None, cookie=cookie.split(";")[0])
    assert status == 200


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or \
        shutil.which("google-chrome")


def _browser(args: list[str], url: str, timeout: float = 90):
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
               "--no-first-run", "--virtual-time-budget=8000", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(_chromium() is None,
                    reason="no chromium on this machine (.ci/run installs Debian's "
                           "chromium package)")
def test_the_page_renders_in_a_real_browser(cluster, printer_log, tmp_path):
    context, _ = cluster
    node_id, filename, _ = printer_log
    token = auth.current_token()
    # The fragment opens that log's tail below the file list.
    url = f"http://{context.dashboard_url}/" + (f"?token={token}" if token else "") + \
        f"#log={node_id}/{filename}"
    wait_for_condition(lambda: _api(context, "/api/tasks/summary")["cluster"]["summary"]
                       .get("square"), timeout=30)

    def rendered():
        dom = _browser(["--dump-dom"], url).stdout
        return dom if "Greeter" in dom and "node-row" in dom and \
            f"FINISHED {NUM_TASKS}" in dom and "log-row" in dom and \
            f"{MARK} first" in dom else None
    wait_for_condition(rendered, timeout=120, retry_interval_ms=500)
    dom = rendered()
    assert context.address_info["node_id"][:8] in dom          # the node's row
    assert 'class="actor-class">Greeter<' in dom                # the actor, by class
    assert ">ALIVE<" in dom
    assert 'class="task-name">square<' in dom                   # tasks by name
    assert "not authorized" not in dom
    # The Logs section: a row per file (the first page of 25, by name), each a link.
    assert dom.count('class="log-row') == min(25, _api(context, "/api/logs")["total"])
    assert f'>{_api(context, "/api/logs?limit=1")["files"][0]["filename"]}</a>' in dom
    text = dom.split('id="log-text"', 1)[1].split("</pre>", 1)[0]
    assert f"{MARK} first" in text and "<span" not in text        # its tail, as text
    artifacts = os.environ.get("MINIRAY_TEST_ARTIFACTS") or str(tmp_path)
    os.makedirs(artifacts, exist_ok=True)
    shot = os.path.join(artifacts, "dashboard.png")
    _browser([f"--screenshot={shot}", "--window-size=1400,1600"], url)
    assert os.path.getsize(shot) > 10_000
    print(f"dashboard screenshot: {shot}")


# --- lifecycle ------------------------------------------------------------------------------
def test_a_taken_port_moves_the_dashboard_to_the_next_one(caplog):
    from miniray import node as node_module
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        node = node_module.start_head(num_cpus=0, dashboard_port=port)
    try:
        chosen = int(node.dashboard_url.rpartition(":")[2])
        assert chosen != port
        assert f"dashboard port {port} is in use" in caplog.text
        proc = node.processes[-1]
        from miniray.cli.stop import process_kind
        assert process_kind(proc.args) == "dashboard"          # miniray stop finds it
        assert proc.poll() is None, f"the dashboard exited with code {proc.returncode}"

        def answers():
            with socket.create_connection(("127.0.0.1", chosen), timeout=2):
                return True
        wait_for_condition(answers, timeout=20)
    finally:
        node.stop()
    assert proc.poll() is not None                  # stopped with the cluster


def test_no_dashboard_when_not_included():
    from miniray import node as node_module
    node = node_module.start_head(num_cpus=0, include_dashboard=False)
    try:
        assert node.dashboard_url == ""
        assert not [p for p in node.processes if "miniray.dashboard" in p.args]
    finally:
        node.stop()
    for bad in ({"include_dashboard": "yes"}, {"dashboard_host": 1}):
        with pytest.raises(TypeError):
            ray.api._dashboard_options(bad)
    with pytest.raises(ValueError):
        ray.api._dashboard_options({"dashboard_port": 70000})


DRIVER = textwrap.dedent("""
    import time
    import miniray as ray
    context = ray.init(num_cpus=0, dashboard_port=0)
    print(context.dashboard_url, flush=True)
    time.sleep(600)
""")


def test_the_dashboard_dies_with_the_driver_that_started_it(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("127.0.0.1:")
        dashboards = [c for c in psutil.Process(proc.pid).children()
                      if "miniray.dashboard" in c.cmdline()]
        assert len(dashboards) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    wait_for_condition(lambda: not dashboards[0].is_running() or
                       dashboards[0].status() == psutil.STATUS_ZOMBIE, timeout=15)
