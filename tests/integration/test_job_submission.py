"""Job submission on a live cluster started as `miniray start --head` starts
one (daemon processes, workers forwarding their output to their job's
driver): the Python client and the CLI submit jobs to the head's dashboard
port; a job's output is kept in its log; it ends SUCCEEDED, FAILED with
its exit code, or STOPPED with nothing of it left running; jobs stay
listed after they end until deleted; a dead supervisor fails its job; bad
requests get clear 4xx answers; the token is required."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import psutil
import pytest

from miniray.job_submission import JobStatus, JobSubmissionClient, JobType
from miniray.rpc import auth
from miniray.testing import wait_for_condition

pytestmark = pytest.mark.timeout(180)

JOB_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes_of_jobs(**env) -> list[psutil.Process]:
    """Live processes whose environment has these values (the processes
    that entrypoints started carry their job's MINIRAY_* variables)."""
    found = []
    for proc in psutil.process_iter():
        try:
            environ = proc.environ()
            if all(environ.get(k) == v for k, v in env.items()) \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def cluster():
    from miniray import node as node_module
    head = node_module.start_head(daemon=True, num_cpus=2, dashboard_port=_free_port())
    try:
        yield head
    finally:
        head.stop()
        # No job may outlive the cluster (kill any, then fail).
        left = _processes_of_jobs(MINIRAY_ADDRESS=head.gcs_address)
        for proc in left:
            proc.kill()
        assert not left, f"job processes left behind: {left}"


@pytest.fixture(scope="module")
def url(cluster):
    return f"http://{cluster.dashboard_url}"


@pytest.fixture(scope="module")
def client(url):
    return JobSubmissionClient(url)


def _wait_for_end(client, submission_id, timeout=JOB_TIMEOUT_S):
    wait_for_condition(lambda: client.get_job_status(submission_id).is_terminal(),
                       timeout=timeout)
    return client.get_job_info(submission_id)


def _script(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return f"{sys.executable} {path}"


def _http(url, method="GET", body=None, token=True, headers=None):
    """(status, parsed JSON body) of one request."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if token and auth.current_token():
        request.add_header("Authorization", f"Bearer {auth.current_token()}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _cli(*args, url):
    env = dict(os.environ, MINIRAY_AUTH_TOKEN=auth.current_token() or "")
    env.pop("MINIRAY_ADDRESS", None)
    command, *rest = args
    return subprocess.run([sys.executable, "-m", "miniray.cli", "job", command,
                           "--address", url, *rest], capture_output=True, text=True,
                          timeout=JOB_TIMEOUT_S + 30, env=env)


def test_submit_logs_succeeded(client, tmp_path):
    entrypoint = _script(tmp_path, "ok.py", """
        import os
        import miniray as ray
        ray.init()

        @ray.remote
        def double(x):
            return 2 * x

        print("sum", sum(ray.get([double.remote(i) for i in range(10)])), flush=True)
        print("submission", os.environ["MINIRAY_JOB_SUBMISSION_ID"], flush=True)
    """)
    submission_id = client.submit_job(entrypoint=entrypoint, metadata={"owner": "tests"})
    assert submission_id.startswith("raysubmit_")
    info = _wait_for_end(client, submission_id)
    assert info.status is JobStatus.SUCCEEDED, (info, client.get_job_logs(submission_id))
    assert info.type is JobType.SUBMISSION
    assert info.driver_exit_code == 0
    assert info.message == "Job finished successfully."
    assert info.metadata == {"owner": "tests"}
    assert info.start_time <= info.end_time
    logs = client.get_job_logs(submission_id)
    assert "sum 90" in logs
    assert f"submission {submission_id}" in logs


def test_failing_job_reports_its_exit_code(client):
    submission_id = client.submit_job(
        entrypoint=f"{sys.executable} -c \"import sys; print('going down'); sys.exit(3)\"")
    info = _wait_for_end(client, submission_id)
    assert info.status is JobStatus.FAILED
    assert info.driver_exit_code == 3
    assert "exit code 3" in info.message
    assert info.error_type == "JOB_ENTRYPOINT_COMMAND_ERROR"
    assert "going down" in client.get_job_logs(submission_id)


def test_stop_leaves_nothing_behind(client, tmp_path):
    entrypoint = _script(tmp_path, "forever.py", f"""
        import os, time
        import miniray as ray
        ray.init()

        @ray.remote
        class Holder:
            def pid(self):
                return os.getpid()

        @ray.remote
        def spin(n):
            open(os.path.join({str(tmp_path)!r}, f"task-{{n}}.pid"), "w").write(
                str(os.getpid()))
            while True:
                time.sleep(0.1)

        holder = Holder.remote()
        tasks = [spin.remote(n) for n in range(2)]
        print("actor", ray.get(holder.pid.remote()), "driver", os.getpid(), flush=True)
        while True:
            time.sleep(0.1)
    """)
    submission_id = client.submit_job(entrypoint=entrypoint)
    wait_for_condition(lambda: "actor" in client.get_job_logs(submission_id),
                       timeout=JOB_TIMEOUT_S)
    wait_for_condition(lambda: len(list(tmp_path.glob("task-*.pid"))) == 2,
                       timeout=JOB_TIMEOUT_S)
    line = next(x for x in client.get_job_logs(submission_id).splitlines()
                if x.startswith("actor"))
    words = line.split()
    pids = {int(words[1]), int(words[3])}
    pids |= {int(p.read_text()) for p in tmp_path.glob("task-*.pid")}
    assert all(psutil.pid_exists(pid) for pid in pids)
    assert client.get_job_status(submission_id) is JobStatus.RUNNING
    # The supervisor learns the driver's job id while it runs.
    wait_for_condition(lambda: client.get_job_info(submission_id).job_id is not None)

    assert client.stop_job(submission_id) is True
    info = _wait_for_end(client, submission_id)
    assert info.status is JobStatus.STOPPED
    assert info.message == "Job was intentionally stopped."

    def gone():
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return not alive
    wait_for_condition(gone, timeout=30)
    assert not _processes_of_jobs(MINIRAY_JOB_SUBMISSION_ID=submission_id)
    assert client.stop_job(submission_id) is False         # already ended


def test_cli_and_client_on_the_same_job(client, url, tmp_path):
    entrypoint = _script(tmp_path, "cli.py", """
        import miniray as ray
        ray.init()
        print("hello from", ray.get_runtime_context().get_job_id(), flush=True)
    """)
    done = _cli("submit", "--submission-id", "cli-job-1", "--", *entrypoint.split(), url=url)
    assert done.returncode == 0, done.stderr
    assert "Job 'cli-job-1' submitted successfully" in done.stdout
    assert "hello from" in done.stdout                   # followed its logs
    assert "Job 'cli-job-1' succeeded" in done.stdout
    assert client.get_job_status("cli-job-1") is JobStatus.SUCCEEDED
    assert "hello from" in client.get_job_logs("cli-job-1")

    status = _cli("status", "cli-job-1", url=url)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    logs = _cli("logs", "cli-job-1", url=url)
    assert logs.returncode == 0 and "hello from" in logs.stdout
    listed = _cli("list", url=url)
    assert listed.returncode == 0 and "cli-job-1" in listed.stdout

    failed = _cli("submit", "--", sys.executable, "-c", "import sys; sys.exit(5)", url=url)
    assert failed.returncode == 1
    assert "exit code 5" in failed.stderr

    # Submitted by the client, stopped by the CLI (logs followed meanwhile).
    submission_id = client.submit_job(
        entrypoint=f"{sys.executable} -c \"import time; print('up', flush=True); "
                   f"time.sleep(600)\"")
    wait_for_condition(lambda: "up" in client.get_job_logs(submission_id),
                       timeout=JOB_TIMEOUT_S)
    follow = subprocess.Popen(
        [sys.executable, "-m", "miniray.cli", "job", "logs", "--follow", submission_id,
         "--address", url], stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, MINIRAY_AUTH_TOKEN=auth.current_token() or ""))
    stopped = _cli("stop", submission_id, url=url)
    assert stopped.returncode == 0, stopped.stderr
    assert "STOPPED" in stopped.stdout
    out, _ = follow.communicate(timeout=JOB_TIMEOUT_S)
    assert follow.returncode == 0 and "up" in out
    assert client.get_job_status(submission_id) is JobStatus.STOPPED

    missing = _cli("status", "no-such-job", url=url)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    unreachable = _cli("list", url=f"http://127.0.0.1:{_free_port()}")
    assert unreachable.returncode == 1 and "Failed to connect" in unreachable.stderr


def test_tail_job_logs_is_an_async_generator(client):
    import asyncio
    submission_id = client.submit_job(
        entrypoint="echo first; echo second", submission_id="tail-job")

    async def collect():
        return "".join([text async for text in client.tail_job_logs(submission_id)])
    text = asyncio.run(collect())
    assert "first\nsecond\n" in text
    assert client.get_job_status(submission_id) is JobStatus.SUCCEEDED


def test_list_after_end_then_delete(client, cluster):
    submission_id = client.submit_job(entrypoint="echo listed", submission_id="to-delete")
    _wait_for_end(client, submission_id)
    jobs = {j.submission_id: j for j in client.list_jobs()}
    assert jobs["to-delete"].status is JobStatus.SUCCEEDED
    log_path = os.path.join(cluster.session_dir, "logs", "job-driver-to-delete.log")
    assert os.path.exists(log_path)
    assert os.stat(log_path).st_mode & 0o777 == 0o600

    assert client.delete_job(submission_id) is True
    assert "to-delete" not in {j.submission_id for j in client.list_jobs()}
    assert not os.path.exists(log_path)
    with pytest.raises(RuntimeError, match="does not exist"):
        client.get_job_info(submission_id)


def test_delete_refuses_running_jobs(client, url):
    submission_id = client.submit_job(entrypoint="sleep 600", submission_id="busy")
    wait_for_condition(lambda: client.get_job_status(submission_id) is JobStatus.RUNNING,
                       timeout=JOB_TIMEOUT_S)
    status, body = _http(f"{url}/api/jobs/busy", "DELETE")
    assert status == 400 and "non-terminal" in body["error"]
    client.stop_job(submission_id)
    _wait_for_end(client, submission_id)
    assert client.delete_job(submission_id) is True


def test_dead_supervisor_fails_its_job(client, cluster):
    import miniray
    from miniray.job_submission.manager import NAMESPACE, actor_name
    submission_id = client.submit_job(entrypoint="sleep 600", submission_id="orphan")
    wait_for_condition(lambda: client.get_job_status(submission_id) is JobStatus.RUNNING,
                       timeout=JOB_TIMEOUT_S)
    miniray.init(address=cluster.gcs_address)
    try:
        miniray.kill(miniray.get_actor(actor_name(submission_id), namespace=NAMESPACE))
    finally:
        miniray.shutdown()
    info = _wait_for_end(client, submission_id)
    assert info.status is JobStatus.FAILED
    assert info.error_type == "JOB_SUPERVISOR_ACTOR_DIED"
    assert "supervisor" in info.message

    wait_for_condition(lambda: not _processes_of_jobs(
        MINIRAY_JOB_SUBMISSION_ID=submission_id), timeout=30)


def test_bad_requests(client, url):
    status, body = _http(f"{url}/api/jobs/nope")
    assert status == 404 and body["error"] == "Job nope does not exist"
    for path, method in (("/api/jobs/nope/logs", "GET"), ("/api/jobs/nope/stop", "POST"),
                         ("/api/jobs/nope", "DELETE")):
        assert _http(url + path, method)[0] == 404, path

    status, body = _http(f"{url}/api/jobs/", "POST", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = _http(f"{url}/api/jobs/", "POST", {"entrypoint": ""})
    assert status == 400 and "entrypoint" in body["error"]
    status, body = _http(f"{url}/api/jobs/", "POST", {"entrypoint": "true", "color": 1})
    assert status == 400 and "color" in body["error"]
    status, body = _http(f"{url}/api/jobs/", "POST",
                         {"entrypoint": "true", "submission_id": "../etc"})
    assert status == 400 and "submission_id" in body["error"]
    status, body = _http(f"{url}/api/jobs/", "POST",
                         {"entrypoint": "true", "entrypoint_num_cpus": -1})
    assert status == 400 and "entrypoint_num_cpus" in body["error"]
    status, body = _http(f"{url}/api/jobs/", "POST",
                         {"entrypoint": "true", "runtime_env": "oops"})
    assert status == 400 and "runtime_env" in body["error"]

    status, body = _http(f"{url}/api/jobs/", "POST",
                         {"entrypoint": "true", "runtime_env": {"conda": "env"}})
    assert status == 400 and "conda" in body["error"]

    client.submit_job(entrypoint="true", submission_id="twice")
    with pytest.raises(RuntimeError, match="already exists"):
        client.submit_job(entrypoint="true", submission_id="twice")
    _wait_for_end(client, "twice")

    # A body over the limit is refused from its Content-Length, unread.
    import http.client
    host, port = url[len("http://"):].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", "/api/jobs/")
        connection.putheader("Authorization", f"Bearer {auth.current_token()}")
        connection.putheader("Content-Length", str(5 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert "over the limit" in json.loads(response.read())["error"]
    finally:
        connection.close()


def test_token_is_required(url):
    if auth.current_token() is None:
        pytest.skip("this cluster runs without token authentication")
    for path, method in (("/api/jobs/", "GET"), ("/api/version", "GET"),
                         ("/api/jobs/", "POST"), ("/api/jobs/x/stop", "POST")):
        status, body = _http(url + path, method, b"{}" if method == "POST" else None,
                             token=False)
        assert status == 401, path
        status, _ = _http(url + path, method, b"{}" if method == "POST" else None,
                          token=False, headers={"Authorization": "Bearer wrong-token-123456"})
        assert status == 401, path
    with pytest.raises(RuntimeError, match="401"):
        JobSubmissionClient(url, headers={"Authorization": "Bearer wrong-token-123456"})


def test_version_answers_like_rays(url):
    status, body = _http(f"{url}/api/version")
    assert status == 200
    assert body["version"] == "4"
    assert set(body) >= {"version", "ray_version", "ray_commit", "session_name"}


def test_working_dir_job(client, tmp_path):
    """A local project directory travels with the job: the entrypoint runs
    in it (a relative path), imports its module, and so do its tasks; the
    job's env_vars reach the driver and its tasks."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "helper.py").write_text("def shout(text):\n    return text.upper() + '!'\n")
    (project / "main.py").write_text(textwrap.dedent("""
        import os
        import helper
        import miniray as ray
        ray.init()

        @ray.remote
        def remote_shout(text):
            import helper
            return helper.shout(text), os.environ.get("GREETING")

        print("driver", helper.shout("hi"), os.environ.get("GREETING"), flush=True)
        print("task", *ray.get(remote_shout.remote("there")), flush=True)
    """))
    (project / "big.bin").write_bytes(b"x" * 1024)
    submission_id = client.submit_job(
        entrypoint="python main.py",
        runtime_env={"working_dir": str(project), "excludes": ["*.bin"],
                     "env_vars": {"GREETING": "hello"}})
    info = _wait_for_end(client, submission_id)
    logs = client.get_job_logs(submission_id)
    assert info.status is JobStatus.SUCCEEDED, logs
    assert "driver HI! hello" in logs
    assert "task THERE! hello" in logs
    assert info.runtime_env["working_dir"].startswith("gcs://")
    assert info.runtime_env["env_vars"] == {"GREETING": "hello"}


def test_jobs_die_with_their_cluster():
    """A cluster stopped under a running job takes the whole job with it:
    the supervisor's worker dies, and its launcher kills the job's group
    (here a shell running a pipeline of two processes)."""
    from miniray import node as node_module
    token = auth.current_token()
    head = node_module.start_head(daemon=True, num_cpus=1, dashboard_port=_free_port())
    try:
        client = JobSubmissionClient(f"http://{head.dashboard_url}")
        submission_id = client.submit_job(entrypoint="sleep 600 | cat; echo never")
        wait_for_condition(lambda: len(_processes_of_jobs(
            MINIRAY_JOB_SUBMISSION_ID=submission_id)) >= 3, timeout=JOB_TIMEOUT_S)
    finally:
        head.stop()
        auth.set_token(token)             # this module's cluster's, for the other tests
    wait_for_condition(lambda: not _processes_of_jobs(MINIRAY_ADDRESS=head.gcs_address),
                       timeout=30)


def test_jobs_outlive_a_dashboard_restart(tmp_path):
    """Records live in the GCS and supervisors are detached: a new dashboard
    lists the jobs, follows the one still running and can stop it."""
    from miniray import node as node_module
    token = auth.current_token()
    head = node_module.start_head(daemon=True, num_cpus=1, dashboard_port=_free_port())
    replacement = None
    try:
        client = JobSubmissionClient(f"http://{head.dashboard_url}")
        done = client.submit_job(entrypoint="echo finished", submission_id="before")
        _wait_for_end(client, done)
        running = client.submit_job(entrypoint="echo started; sleep 600",
                                    submission_id="across")
        wait_for_condition(lambda: "started" in client.get_job_logs(running),
                           timeout=JOB_TIMEOUT_S)
        dashboard = head.processes[-1]
        assert "miniray.dashboard" in dashboard.args
        dashboard.terminate()
        dashboard.wait(timeout=30)

        port = _free_port()
        replacement = subprocess.Popen(
            [sys.executable, "-m", "miniray.dashboard", "--gcs-address", head.gcs_address,
             "--port", str(port), "--session-dir", head.session_dir],
            env=auth.child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        wait_for_condition(lambda: _http(f"{url}/api/version")[0] == 200
                           if _port_open(port) else False, timeout=30)
        client = JobSubmissionClient(url)
        statuses = {j.submission_id: j.status for j in client.list_jobs()}
        assert statuses["before"] is JobStatus.SUCCEEDED
        assert statuses["across"] is JobStatus.RUNNING
        assert "finished" in client.get_job_logs("before")
        assert client.stop_job(running) is True
        assert _wait_for_end(client, running).status is JobStatus.STOPPED
        wait_for_condition(lambda: not _processes_of_jobs(
            MINIRAY_JOB_SUBMISSION_ID=running), timeout=30)
    finally:
        if replacement is not None:
            replacement.terminate()
            replacement.wait(timeout=30)
        head.stop()
        auth.set_token(token)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_client_finds_the_job_server(cluster, url, monkeypatch):
    """From MINIRAY_ADDRESS as a URL, or as the cluster's GCS address (the
    dashboard's address is read from the GCS); an unreachable one is a
    ConnectionError."""
    monkeypatch.setenv("MINIRAY_ADDRESS", url)
    assert JobSubmissionClient()._address == url
    monkeypatch.setenv("MINIRAY_ADDRESS", cluster.gcs_address)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert JobSubmissionClient()._address == url
    with pytest.raises(ConnectionError, match="Failed to connect"):
        JobSubmissionClient(f"http://127.0.0.1:{_free_port()}")
