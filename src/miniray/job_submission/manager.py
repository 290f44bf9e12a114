"""The job manager: runs in the dashboard process on the head node and does
what the job server's routes ask (``dashboard/jobs.py``).

Submitting a job stores its record (PENDING) in the GCS (``storage.py``)
and creates its supervisor (``supervisor.py``): a detached actor in a
private namespace, pinned to the head node, holding the job's entrypoint
resources, with the job's runtime env. To create actors the manager joins
the cluster as a driver (``miniray.init``) on first use, as Ray's
dashboard does. A monitor thread pings each unfinished job's supervisor:
one that dies before its job ended fails the job, as does one that stays
unscheduled past ``START_TIMEOUT_S``. After a dashboard restart the
manager watches the unfinished jobs again.

Logs are read from the head's logs directory, where the supervisor
writes them.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from miniray.job_submission.common import (
    DriverInfo, JobDetails, JobErrorType, JobInfo, JobStatus, JobType, SubmitRequest,
    log_file_name, new_submission_id)
from miniray.job_submission.storage import JobInfoStorage
from miniray.protocol import gcs_pb2

log = logging.getLogger("miniray.dashboard.jobs")

NAMESPACE = "_miniray_internal_jobs"          # the manager's driver and the supervisors
ACTOR_NAME_PREFIX = "_miniray_internal_job_actor_"
INTERNAL_NAMESPACE_PREFIX = "_miniray_internal"
START_TIMEOUT_S = float(os.environ.get("MINIRAY_JOB_START_TIMEOUT_S", "900"))
MONITOR_PERIOD_S = 0.5
STOP_REPLY_TIMEOUT_S = 15.0
MAX_LOG_BYTES = 32 * 1024 * 1024              # GET .../logs returns at most the last 32 MiB
TAIL_POLL_S = 0.2


class JobNotFoundError(LookupError):
    """No job with that id (an HTTP 404)."""

    def __init__(self, job_id: str):
        super().__init__(f"Job {job_id} does not exist")


class JobConflictError(ValueError):
    """A request the job's state forbids (an HTTP 400)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def actor_name(submission_id: str) -> str:
    return ACTOR_NAME_PREFIX + submission_id


@dataclass
class _Watch:
    """An unfinished job the monitor keeps an eye on."""
    actor: object                  # the supervisor's ActorHandle
    ping: object = None            # the outstanding ping's ObjectRef, if any


class JobManager:
    def __init__(self, gcs_address: str, call: Callable, logs_dir: str | None):
        """``call(method_name, request) -> reply``: the GCS's RPCs."""
        self.gcs_address = gcs_address
        self._call = call
        self.storage = JobInfoStorage(call)
        self.logs_dir = logs_dir
        self._lock = threading.RLock()
        self._connected = False
        self._actor_class = None
        self._watched: dict[str, _Watch] = {}
        self._closing = threading.Event()
        self._monitor: threading.Thread | None = None

    # --- life -------------------------------------------------------------------------
    def resume(self) -> None:
        """Watch the jobs left unfinished by an earlier dashboard (call once,
        off the serving threads: it may connect to the cluster)."""
        try:
            unfinished = [i for i in self.storage.list().values()
                          if not i.status.is_terminal()]
        except Exception as exc:                 # noqa: BLE001 - the GCS may be starting
            from miniray.rpc.channels import is_unavailable
            # Unreachable: the cluster is already going away (a short script).
            (log.debug if is_unavailable(exc) else log.warning)(
                "could not list the jobs to resume watching them: %s", exc)
            return
        if not unfinished:
            return
        import miniray
        self._connect()
        for info in unfinished:
            try:
                actor = miniray.get_actor(actor_name(info.submission_id), namespace=NAMESPACE)
            except ValueError:
                self._fail_if_unfinished(
                    info.submission_id, JobErrorType.JOB_SUPERVISOR_ACTOR_DIED,
                    "Job supervisor actor is gone (it died while the dashboard was down).")
                continue
            self._watch(info.submission_id, actor)

    def close(self) -> None:
        self._closing.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        if self._connected:
            import miniray
            miniray.shutdown()

    def _connect(self) -> None:
        """Join the cluster as a driver (once), quietly."""
        with self._lock:
            if self._connected:
                return
            import miniray
            from miniray.job_submission.supervisor import JobSupervisor
            with contextlib.redirect_stderr(io.StringIO()):
                miniray.init(address=self.gcs_address, namespace=NAMESPACE)
            self._actor_class = miniray.remote(JobSupervisor)
            self._connected = True
            self._monitor = threading.Thread(target=self._monitor_loop, name="job-monitor",
                                             daemon=True)
            self._monitor.start()

    # --- submit -----------------------------------------------------------------------
    def submit(self, request: SubmitRequest) -> str:
        """Store the job and start its supervisor; returns the submission id.
        JobConflictError if that id is taken, ValueError for a bad runtime env."""
        submission_id = request.submission_id or new_submission_id()
        self._connect()
        from miniray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        options = dict(
            name=actor_name(submission_id), namespace=NAMESPACE, lifetime="detached",
            num_cpus=request.entrypoint_num_cpus or 0, max_concurrency=4, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(self._head_node_id(),
                                                               soft=False))
        if request.entrypoint_num_gpus:
            options["num_gpus"] = request.entrypoint_num_gpus
        if request.entrypoint_memory:
            options["memory"] = request.entrypoint_memory
        if request.entrypoint_resources:
            options["resources"] = request.entrypoint_resources
        if request.runtime_env:
            options["runtime_env"] = request.runtime_env
        try:
            supervisor_class = self._actor_class.options(**options)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid job options: {exc}") from None
        info = JobInfo(status=JobStatus.PENDING, entrypoint=request.entrypoint,
                       submission_id=submission_id, start_time=_now_ms(),
                       metadata=request.metadata, runtime_env=request.runtime_env,
                       entrypoint_num_cpus=request.entrypoint_num_cpus,
                       entrypoint_num_gpus=request.entrypoint_num_gpus,
                       entrypoint_memory=request.entrypoint_memory,
                       entrypoint_resources=request.entrypoint_resources)
        if not self.storage.put(info, overwrite=False):
            raise JobConflictError(f"Job with submission_id {submission_id} already exists. "
                                   f"Please use a different submission_id.")
        try:
            actor = supervisor_class.remote(submission_id, self.gcs_address)
            actor.run.remote()
        except Exception as exc:
            self._fail_if_unfinished(submission_id,
                                     JobErrorType.JOB_SUPERVISOR_ACTOR_START_FAILURE,
                                     f"Failed to start the job supervisor actor: {exc}")
            raise
        self._watch(submission_id, actor)
        return submission_id

    def _head_node_id(self) -> str:
        reply = self._call("GetAllNodes", gcs_pb2.GetAllNodesRequest())
        for node in reply.nodes:
            if node.is_head and node.alive:
                return node.node_id.hex()
        raise RuntimeError("the cluster's head node is not alive")

    # --- reading ----------------------------------------------------------------------
    def get_info(self, submission_id: str) -> JobInfo:
        info = self.storage.get(submission_id)
        if info is None:
            raise JobNotFoundError(submission_id)
        return info

    def list_details(self) -> list[JobDetails]:
        """Submitted jobs (oldest first), then drivers started by hand."""
        infos = sorted(self.storage.list().values(), key=lambda i: i.start_time or 0)
        drivers = self._driver_jobs()
        submitted_job_ids = {i.job_id for i in infos if i.job_id}
        details = [JobDetails.of_submission(i, self._driver_info(i, drivers)) for i in infos]
        details += [self._driver_details(job) for job in drivers
                    if job.job_id.hex() not in submitted_job_ids]
        return details

    def get_details(self, job_id: str) -> JobDetails:
        """A job by submission id, or by the job id of its driver (as Ray)."""
        info = self.storage.get(job_id)
        drivers = self._driver_jobs()
        if info is not None:
            return JobDetails.of_submission(info, self._driver_info(info, drivers))
        for info in self.storage.list().values():
            if info.job_id == job_id:
                return JobDetails.of_submission(info, self._driver_info(info, drivers))
        for job in drivers:
            if job.job_id.hex() == job_id:
                return self._driver_details(job)
        raise JobNotFoundError(job_id)

    def _driver_jobs(self) -> list:
        try:
            jobs = self._call("GetAllJobs", gcs_pb2.GetAllJobsRequest()).jobs
        except Exception as exc:                  # noqa: BLE001 - submitted jobs still list
            log.warning("could not list the cluster's drivers: %s", exc)
            return []
        return [j for j in jobs if not j.namespace.startswith(INTERNAL_NAMESPACE_PREFIX)]

    @staticmethod
    def _driver_info(info: JobInfo, drivers: list) -> DriverInfo | None:
        for job in drivers:
            if info.job_id and job.job_id.hex() == info.job_id:
                return DriverInfo(id=info.job_id, node_ip_address="", pid=str(job.driver_pid))
        return None

    @staticmethod
    def _driver_details(job) -> JobDetails:
        status = JobStatus.SUCCEEDED if job.is_dead else JobStatus.RUNNING
        return JobDetails(type=JobType.DRIVER, status=status, entrypoint="",
                          job_id=job.job_id.hex(),
                          driver_info=DriverInfo(id=job.job_id.hex(), node_ip_address="",
                                                 pid=str(job.driver_pid)),
                          message=("Job finished." if job.is_dead
                                   else "Job is currently running."))

    # --- logs -------------------------------------------------------------------------
    def _log_path(self, submission_id: str) -> str:
        if not self.logs_dir:
            raise RuntimeError("the dashboard was started without --session-dir: it "
                               "cannot find job logs")
        return os.path.join(self.logs_dir, log_file_name(submission_id))

    def logs(self, submission_id: str) -> str:
        """The job's output so far (its last MAX_LOG_BYTES)."""
        self.get_info(submission_id)
        try:
            with open(self._log_path(submission_id), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > MAX_LOG_BYTES:
                    f.seek(size - MAX_LOG_BYTES)
                data = f.read(MAX_LOG_BYTES)
        except FileNotFoundError:
            return ""
        return data.decode("utf-8", errors="replace")

    def tail(self, submission_id: str, poll_s: float = TAIL_POLL_S) -> Iterator[bytes]:
        """The job's output from its start, as it is written, until the job
        has ended and all its output was read (or the job is deleted)."""
        self.get_info(submission_id)
        path = self._log_path(submission_id)
        handle = None
        try:
            while True:
                if handle is None:
                    try:
                        handle = open(path, "rb")
                    except FileNotFoundError:
                        pass
                chunk = handle.read(64 * 1024) if handle is not None else b""
                if chunk:
                    yield chunk
                    continue
                info = self.storage.get(submission_id)
                if info is None:
                    return
                if info.status.is_terminal():
                    if handle is None:
                        try:
                            handle = open(path, "rb")
                        except FileNotFoundError:
                            return
                    rest = handle.read()
                    if rest:
                        yield rest
                    return
                time.sleep(poll_s)
        finally:
            if handle is not None:
                handle.close()

    # --- stop and delete ----------------------------------------------------------------
    def stop(self, submission_id: str) -> bool:
        """Stop an unfinished job; False if it had already ended."""
        import miniray
        info = self.get_info(submission_id)
        if info.status.is_terminal():
            return False
        self._connect()
        actor = self._supervisor(submission_id)
        if actor is None:
            self._mark_stopped(submission_id)
            return True
        reply = actor.stop.remote()
        ready, _ = miniray.wait([reply], timeout=STOP_REPLY_TIMEOUT_S
                                if info.status is JobStatus.RUNNING else 2.0)
        if not ready:                       # never scheduled (e.g. waiting for resources)
            miniray.kill(actor)
            self._mark_stopped(submission_id)
            return True
        try:
            return bool(miniray.get(reply))
        except Exception:                    # noqa: BLE001 - it died meanwhile
            self._mark_stopped(submission_id)
            return True

    def delete(self, submission_id: str) -> bool:
        """Forget an ended job and remove its log."""
        info = self.get_info(submission_id)
        if not info.status.is_terminal():
            raise JobConflictError(
                f"Attempted to delete job '{submission_id}', but it is in a non-terminal "
                f"state {info.status.value}: stop it first.")
        self.storage.delete(submission_id)
        if self.logs_dir:
            try:
                os.unlink(self._log_path(submission_id))
            except FileNotFoundError:
                pass
        return True

    def _supervisor(self, submission_id: str):
        with self._lock:
            watch = self._watched.get(submission_id)
        if watch is not None:
            return watch.actor
        import miniray
        try:
            return miniray.get_actor(actor_name(submission_id), namespace=NAMESPACE)
        except ValueError:
            return None

    def _mark_stopped(self, submission_id: str) -> None:
        info = self.storage.get(submission_id)
        if info is not None and not info.status.is_terminal():
            self.storage.put(info.updated(status=JobStatus.STOPPED, end_time=_now_ms()))

    # --- monitoring -------------------------------------------------------------------
    def _watch(self, submission_id: str, actor) -> None:
        with self._lock:
            self._watched[submission_id] = _Watch(actor)

    def _monitor_loop(self) -> None:
        while not self._closing.wait(MONITOR_PERIOD_S):
            with self._lock:
                watched = list(self._watched.items())
            for submission_id, watch in watched:
                try:
                    if self._check(submission_id, watch):
                        with self._lock:
                            self._watched.pop(submission_id, None)
                except Exception as exc:          # noqa: BLE001 - try again next round
                    log.warning("checking job %s failed: %s", submission_id, exc)

    def _check(self, submission_id: str, watch: _Watch) -> bool:
        """One look at a job; True once it needs no more watching."""
        import miniray
        info = self.storage.get(submission_id)
        if info is None or info.status.is_terminal():
            return True
        if watch.ping is None:
            watch.ping = watch.actor.ping.remote()
        ready, _ = miniray.wait([watch.ping], timeout=0)
        if not ready:
            if info.status is JobStatus.PENDING and info.start_time and \
                    _now_ms() - info.start_time > START_TIMEOUT_S * 1000:
                miniray.kill(watch.actor)
                self._fail_if_unfinished(
                    submission_id, JobErrorType.JOB_SUPERVISOR_ACTOR_START_TIMEOUT,
                    f"Job supervisor actor failed to start within {START_TIMEOUT_S:g} s "
                    f"(MINIRAY_JOB_START_TIMEOUT_S): the cluster may lack the resources "
                    f"the job asked for, or its runtime env took too long to set up.")
                return True
            return False
        watch.ping = None
        try:
            miniray.get(ready[0])
            return False
        except Exception as exc:                  # noqa: BLE001 - the supervisor died
            error_type, message = supervisor_failure(exc)
            if self._fail_if_unfinished(submission_id, error_type, message):
                kill_entrypoint(info)
            return True

    def _fail_if_unfinished(self, submission_id: str, error_type: JobErrorType,
                            message: str) -> bool:
        """Mark the job FAILED unless it ended; whether it did that."""
        info = self.storage.get(submission_id)
        if info is None or info.status.is_terminal():
            return False
        self.storage.put(info.updated(status=JobStatus.FAILED, error_type=error_type,
                                      message=message, end_time=_now_ms()))
        return True


def kill_entrypoint(info: JobInfo) -> None:
    """SIGKILL what is left of a job whose supervisor died: the processes of
    the group its entrypoint led on this (the head) node that carry the
    job's id in their environment (its shell may be gone already)."""
    import signal

    import psutil
    if not info.driver_pid:
        return
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == info.driver_pid and proc.environ().get(
                    "MINIRAY_JOB_SUBMISSION_ID") == info.submission_id:
                proc.send_signal(signal.SIGKILL)
        except (psutil.Error, OSError):
            pass


def supervisor_failure(exc: BaseException) -> tuple[JobErrorType, str]:
    """The error type and message of a job whose supervisor died with ``exc``."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = str(exc).strip() or type(exc).__name__
    if "RuntimeEnvSetupError" in names or "RuntimeEnvSetupError" in text:
        return (JobErrorType.RUNTIME_ENV_SETUP_FAILURE,
                f"runtime_env setup failed: {text}")
    return (JobErrorType.JOB_SUPERVISOR_ACTOR_DIED,
            f"Job supervisor actor died unexpectedly: {text}")
