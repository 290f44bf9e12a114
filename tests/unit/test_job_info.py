"""Job submission's pure parts, without a cluster: statuses and records,
submit request checks, messages, the KV storage, the manager's reads, logs,
delete and stop rules over a fake GCS, and the HTTP routes' answers."""
from __future__ import annotations

import json
from http import HTTPStatus

import pytest

from miniray.dashboard.jobs import JobRoutes
from miniray.job_submission.common import (
    JobDetails, JobErrorType, JobInfo, JobStatus, JobType, check_submission_id,
    exit_message, log_file_name, new_submission_id, parse_submit_request)
from miniray.job_submission.manager import (
    JobConflictError, JobManager, JobNotFoundError, supervisor_failure)
from miniray.job_submission.storage import KV_NAMESPACE, JobInfoStorage
from miniray.protocol import gcs_pb2


class FakeGcs:
    """The GCS RPCs the job code uses: KV and GetAllJobs."""

    def __init__(self):
        self.kv: dict[tuple[str, bytes], bytes] = {}
        self.jobs: list = []

    def __call__(self, method, request):
        if method == "KVPut":
            key = (request.namespace, request.key)
            added = key not in self.kv
            if added or request.overwrite:
                self.kv[key] = request.value
            return gcs_pb2.KVPutReply(added=added)
        if method == "KVGet":
            value = self.kv.get((request.namespace, request.key))
            return gcs_pb2.KVGetReply(value=value or b"", found=value is not None)
        if method == "KVDel":
            deleted = self.kv.pop((request.namespace, request.key), None) is not None
            return gcs_pb2.KVDelReply(deleted=int(deleted))
        if method == "KVKeys":
            return gcs_pb2.KVKeysReply(keys=[k for ns, k in self.kv if ns == request.namespace
                                             and k.startswith(request.prefix)])
        if method == "GetAllJobs":
            return gcs_pb2.GetAllJobsReply(jobs=self.jobs)
        raise AssertionError(f"unexpected RPC {method}")


def _info(submission_id="job1", status=JobStatus.RUNNING, **kwargs) -> JobInfo:
    kwargs.setdefault("start_time", 1000)
    return JobInfo(status=status, entrypoint="python run.py", submission_id=submission_id,
                   **kwargs)


# --- records -----------------------------------------------------------------------------
def test_status_is_a_str_enum_with_terminal_states():
    assert JobStatus("RUNNING") is JobStatus.RUNNING
    assert str(JobStatus.FAILED) == "FAILED" and JobStatus.FAILED == "FAILED"
    assert {s for s in JobStatus if s.is_terminal()} == {
        JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED}


def test_job_info_default_messages():
    assert _info(status="PENDING").message == "Job has not started yet."
    waiting = _info(status="PENDING", entrypoint_num_cpus=1, runtime_env={"env_vars": {}})
    assert "waiting for resources" in waiting.message
    assert "runtime environment" in waiting.message
    assert _info().message == "Job is currently running."
    assert _info(status="SUCCEEDED").message == "Job finished successfully."
    assert _info(status="STOPPED").message == "Job was intentionally stopped."
    assert _info(status="FAILED", message="boom").message == "boom"


def test_job_info_round_trips_and_updates():
    info = _info(error_type="JOB_ENTRYPOINT_COMMAND_ERROR", metadata={"k": "v"},
                 entrypoint_resources={"accel": 1.0})
    assert info.error_type is JobErrorType.JOB_ENTRYPOINT_COMMAND_ERROR
    data = json.loads(json.dumps(info.to_dict()))
    assert data["status"] == "RUNNING"
    assert data["error_type"] == "JOB_ENTRYPOINT_COMMAND_ERROR"
    assert JobInfo.from_dict({**data, "from_a_newer_version": 1}) == info
    done = info.updated(status=JobStatus.SUCCEEDED, end_time=2000)
    assert done.message == "Job finished successfully."      # not the RUNNING one
    assert info.status is JobStatus.RUNNING                  # a copy
    assert done.updated(end_time=3000).message == done.message


def test_job_details_of_a_submission():
    info = _info(job_id="01000000", driver_exit_code=None, runtime_env={"env_vars": {}})
    details = JobDetails.of_submission(info)
    assert details.type is JobType.SUBMISSION
    assert (details.submission_id, details.job_id, details.status) == \
        ("job1", "01000000", JobStatus.RUNNING)
    data = details.to_dict()
    assert data["type"] == "SUBMISSION" and data["status"] == "RUNNING"
    again = JobDetails.from_dict({**data, "driver_info": {"id": "01000000",
                                                          "node_ip_address": "",
                                                          "pid": "12"}})
    assert again.driver_info.pid == "12"


def test_exit_messages():
    assert exit_message(0) == "Job finished successfully."
    assert exit_message(3) == "Job entrypoint command failed with exit code 3."
    assert exit_message(-9) == "Job entrypoint command was terminated by SIGKILL."


def test_supervisor_failures_are_classified():
    class RuntimeEnvSetupError(Exception):
        pass
    error_type, message = supervisor_failure(RuntimeEnvSetupError("pip failed"))
    assert error_type is JobErrorType.RUNTIME_ENV_SETUP_FAILURE and "pip failed" in message
    error_type, message = supervisor_failure(RuntimeError("worker died"))
    assert error_type is JobErrorType.JOB_SUPERVISOR_ACTOR_DIED
    assert "supervisor" in message and "worker died" in message


# --- submit requests ---------------------------------------------------------------------
def test_parse_a_full_submit_request():
    request = parse_submit_request({
        "entrypoint": "python a.py", "submission_id": "my-job.1",
        "runtime_env": {"env_vars": {"A": "1"}}, "metadata": {"who": "me"},
        "entrypoint_num_cpus": 1, "entrypoint_num_gpus": 0.5,
        "entrypoint_memory": 1024, "entrypoint_resources": {"accel": 1},
        "entrypoint_label_selector": None})
    assert request.submission_id == "my-job.1"
    assert request.entrypoint_memory == 1024
    assert request.entrypoint_resources == {"accel": 1}
    assert parse_submit_request({"entrypoint": "x", "job_id": "old"}).submission_id == "old"
    assert parse_submit_request({"entrypoint": "x"}).metadata == {}


@pytest.mark.parametrize("body, field", [
    ([], "JSON object"),
    ({}, "entrypoint"),
    ({"entrypoint": "  "}, "entrypoint"),
    ({"entrypoint": 3}, "entrypoint"),
    ({"entrypoint": "x", "colour": 1}, "colour"),
    ({"entrypoint": "x", "submission_id": "../x"}, "submission_id"),
    ({"entrypoint": "x", "submission_id": "a" * 200}, "submission_id"),
    ({"entrypoint": "x", "submission_id": "a", "job_id": "b"}, "submission_id"),
    ({"entrypoint": "x", "runtime_env": []}, "runtime_env"),
    ({"entrypoint": "x", "metadata": {"a": 1}}, "metadata"),
    ({"entrypoint": "x", "entrypoint_num_cpus": -1}, "entrypoint_num_cpus"),
    ({"entrypoint": "x", "entrypoint_num_gpus": "1"}, "entrypoint_num_gpus"),
    ({"entrypoint": "x", "entrypoint_num_cpus": True}, "entrypoint_num_cpus"),
    ({"entrypoint": "x", "entrypoint_memory": 1.5}, "entrypoint_memory"),
    ({"entrypoint": "x", "entrypoint_resources": {"CPU": 1}}, "entrypoint_resources"),
    ({"entrypoint": "x", "entrypoint_resources": {"a": float("nan")}}, "entrypoint_resources"),
    ({"entrypoint": "x", "entrypoint_label_selector": {"a": "b"}},
     "entrypoint_label_selector"),
])
def test_bad_submit_requests_name_the_field(body, field):
    with pytest.raises(ValueError, match=field):
        parse_submit_request(body)


def test_submission_ids_and_log_names():
    generated = new_submission_id()
    assert generated.startswith("raysubmit_") and len(generated) == 26
    assert check_submission_id(generated) == generated
    assert log_file_name("abc") == "job-driver-abc.log"
    for bad in ("", "a/b", "..", ".hidden", "a b", None, 5):
        with pytest.raises(ValueError):
            log_file_name(bad)


# --- storage -----------------------------------------------------------------------------
def test_storage_keeps_records_in_the_job_namespace():
    gcs = FakeGcs()
    storage = JobInfoStorage(gcs)
    assert storage.put(_info("a"), overwrite=False) is True
    assert storage.put(_info("a"), overwrite=False) is False       # taken
    storage.put(_info("b", status=JobStatus.SUCCEEDED))
    assert {ns for ns, _ in gcs.kv} == {KV_NAMESPACE}
    assert storage.get("a") == _info("a")
    assert set(storage.list()) == {"a", "b"}
    storage.delete("a")
    assert storage.get("a") is None and set(storage.list()) == {"b"}


# --- the manager, over a fake GCS ------------------------------------------------------
@pytest.fixture
def manager(tmp_path):
    return JobManager("127.0.0.1:1", FakeGcs(), str(tmp_path))


def test_manager_reads_and_lists(manager):
    manager.storage.put(_info("late", start_time=2000))
    manager.storage.put(_info("early", status=JobStatus.SUCCEEDED, start_time=1000,
                              job_id="01000000"))
    manager._call.jobs = [
        gcs_pb2.JobInfo(job_id=bytes.fromhex("01000000"), namespace="x", driver_pid=7),
        gcs_pb2.JobInfo(job_id=bytes.fromhex("02000000"), namespace="y", driver_pid=8,
                        is_dead=True),
        gcs_pb2.JobInfo(job_id=bytes.fromhex("03000000"),
                        namespace="_miniray_internal_jobs", driver_pid=9)]
    details = manager.list_details()
    assert [(d.type, d.submission_id, d.job_id) for d in details] == [
        (JobType.SUBMISSION, "early", "01000000"),
        (JobType.SUBMISSION, "late", None),
        (JobType.DRIVER, None, "02000000")]          # the manager's own driver is hidden
    assert details[0].driver_info.pid == "7"
    assert details[2].status is JobStatus.SUCCEEDED
    assert manager.get_details("01000000").submission_id == "early"   # by job id too
    assert manager.get_details("02000000").type is JobType.DRIVER
    with pytest.raises(JobNotFoundError, match="Job nope does not exist"):
        manager.get_details("nope")


def test_manager_logs_tail_and_delete(manager, tmp_path):
    manager.storage.put(_info("done", status=JobStatus.FAILED))
    log_path = tmp_path / "job-driver-done.log"
    log_path.write_text("line 1\nline 2\n")
    assert manager.logs("done") == "line 1\nline 2\n"
    assert b"".join(manager.tail("done")) == b"line 1\nline 2\n"   # ended: all, then stop
    manager.storage.put(_info("quiet", status=JobStatus.SUCCEEDED))
    assert manager.logs("quiet") == "" and list(manager.tail("quiet")) == []

    manager.storage.put(_info("busy"))
    with pytest.raises(JobConflictError, match="non-terminal state RUNNING"):
        manager.delete("busy")
    assert manager.delete("done") is True
    assert not log_path.exists()
    with pytest.raises(JobNotFoundError):
        manager.get_info("done")
    with pytest.raises(JobNotFoundError):
        manager.logs("done")


def test_stopping_an_ended_job_is_a_no_op(manager):
    manager.storage.put(_info("over", status=JobStatus.SUCCEEDED))
    assert manager.stop("over") is False
    with pytest.raises(JobNotFoundError):
        manager.stop("missing")


# --- HTTP routes -------------------------------------------------------------------------
def _handle(routes, method, path, body=b"", headers=None):
    return routes.handle(method, path, lambda limit: body[:limit], headers or {})


def test_routes_answer_like_rays(manager):
    routes = JobRoutes(manager, manager._call, "session_x")
    manager.storage.put(_info("j1", status=JobStatus.SUCCEEDED))
    reply = _handle(routes, "GET", "/api/version")
    assert reply.status == HTTPStatus.OK and reply.data["version"] == "4"
    assert reply.data["session_name"] == "session_x"
    reply = _handle(routes, "GET", "/api/jobs/")
    assert reply.status == HTTPStatus.OK and [j["submission_id"] for j in reply.data] == ["j1"]
    reply = _handle(routes, "GET", "/api/jobs/j1")
    assert reply.data["status"] == "SUCCEEDED" and reply.data["type"] == "SUBMISSION"
    assert _handle(routes, "GET", "/api/jobs/j1/logs").data == {"logs": ""}
    assert _handle(routes, "POST", "/api/jobs/j1/stop").data == {"stopped": False}
    assert _handle(routes, "DELETE", "/api/jobs/j1").data == {"deleted": True}

    assert _handle(routes, "GET", "/api/jobs/j1").status == HTTPStatus.NOT_FOUND
    reply = _handle(routes, "POST", "/api/jobs/", b"{oops")
    assert reply.status == HTTPStatus.BAD_REQUEST and "not valid JSON" in reply.data["error"]
    reply = _handle(routes, "POST", "/api/jobs/", b'{"entrypoint": ""}')
    assert reply.status == HTTPStatus.BAD_REQUEST and "entrypoint" in reply.data["error"]
    assert _handle(routes, "PUT", "/api/jobs/").status == HTTPStatus.METHOD_NOT_ALLOWED
    assert _handle(routes, "GET", "/api/jobs/x/nothing").status == HTTPStatus.NOT_FOUND
    assert _handle(routes, "POST", "/api/jobs/a%2Fb/stop").status == HTTPStatus.BAD_REQUEST

    manager.storage.put(_info("j2"))
    reply = _handle(routes, "GET", "/api/jobs/j2/logs/tail", headers={"Upgrade": "websocket"})
    assert reply.status == HTTPStatus.NOT_IMPLEMENTED and "websocket" in reply.data["error"]


def test_package_routes_check_names(manager):
    routes = JobRoutes(manager, manager._call)
    reply = _handle(routes, "GET", "/api/packages/s3/_miniray_pkg_ab.zip")
    assert reply.status == HTTPStatus.BAD_REQUEST and "protocol" in reply.data["error"]
    reply = _handle(routes, "GET", "/api/packages/gcs/../../etc")
    assert reply.status == HTTPStatus.BAD_REQUEST
    reply = _handle(routes, "GET", "/api/packages/gcs/_miniray_pkg_0123abcd.zip")
    assert reply.status == HTTPStatus.NOT_FOUND
    reply = _handle(routes, "PUT", "/api/packages/gcs/_miniray_pkg_0123abcd.zip", b"not a zip")
    assert reply.status == HTTPStatus.BAD_REQUEST and "hash" in reply.data["error"]
