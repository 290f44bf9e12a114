"""The supervisor of one submitted job: a detached actor on the head node
(a worker process, started with the job's runtime env, so its current
directory is the job's working_dir) that runs the entrypoint as a shell
command in a session of its own, writes its output to
``<session>/logs/job-driver-<id>.log`` and records the job's status in the
GCS (``storage.py``) as it starts and ends. The job manager
(``manager.py``, in the dashboard process) creates it and asks it to stop.

The entrypoint joins the cluster as a driver: ``MINIRAY_ADDRESS`` names
the GCS, ``MINIRAY_JOB_SUBMISSION_ID`` the job and
``MINIRAY_JOB_RUNTIME_ENV`` (JSON) the job's runtime env, which ``init()``
uses as the job-level one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil

from miniray.common import paths
from miniray.job_submission.common import (
    JobErrorType, JobInfo, JobStatus, exit_message, log_file_name)
from miniray.job_submission.storage import JobInfoStorage
from miniray.protocol import gcs_pb2

# After SIGTERM, an entrypoint has this long to exit before SIGKILL (Ray: 3 s).
STOP_WAIT_S = float(os.environ.get("MINIRAY_JOB_STOP_WAIT_S", "3"))
POLL_S = 0.2
RPC_TIMEOUT_S = 10.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class JobSupervisor:
    """Threaded actor (``run`` blocks while ``stop`` and ``ping`` answer)."""

    def __init__(self, submission_id: str, gcs_address: str):
        from miniray import api
        worker = api.ensure_initialized()
        self._submission_id = submission_id
        self._gcs_address = gcs_address
        self._call = lambda method, request: worker.call("gcs", method, request,
                                                         timeout=RPC_TIMEOUT_S)
        self._storage = JobInfoStorage(self._call)
        self._node_id = worker.node_id.hex()
        self._log_path = os.path.join(worker.session_dir, "logs",
                                      log_file_name(submission_id))
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._stop_requested = False
        self._stopped = threading.Event()      # stop() finished its kills

    def ping(self) -> bool:
        return True

    # --- running ------------------------------------------------------------------------
    def run(self) -> None:
        """Run the entrypoint to its end, record the outcome, then exit the actor."""
        try:
            self._run()
        finally:
            from miniray.actor import exit_actor
            exit_actor()

    def _run(self) -> None:
        info = self._storage.get(self._submission_id)
        if info is None or info.status.is_terminal():
            return                            # deleted or decided meanwhile
        with self._lock:
            if self._stop_requested:
                self._finish(JobStatus.STOPPED)
                return
            try:
                self._process = self._start(info)
            except OSError as exc:
                self._finish(JobStatus.FAILED, error_type=
                             JobErrorType.JOB_ENTRYPOINT_COMMAND_START_ERROR,
                             message=f"Job entrypoint command could not start: {exc}")
                return
        self._update(status=JobStatus.RUNNING, driver_pid=self._process.pid,
                     driver_node_id=self._node_id)
        returncode = self._wait_for_exit()
        with self._lock:
            stopped = self._stop_requested
        if stopped:
            self._stopped.wait(STOP_WAIT_S + 5)
            self._finish(JobStatus.STOPPED, driver_exit_code=returncode)
        elif returncode == 0:
            self._finish(JobStatus.SUCCEEDED, driver_exit_code=0)
        else:
            self._finish(JobStatus.FAILED, driver_exit_code=returncode,
                         error_type=JobErrorType.JOB_ENTRYPOINT_COMMAND_ERROR,
                         message=exit_message(returncode))

    def _start(self, info: JobInfo) -> subprocess.Popen:
        env = dict(os.environ)
        env.pop("MINIRAY_FORWARD_OUTPUT", None)
        if not info.entrypoint_num_gpus:       # the driver may see every GPU
            env.pop("CUDA_VISIBLE_DEVICES", None)
        env.update({"MINIRAY_ADDRESS": self._gcs_address,
                    "MINIRAY_JOB_SUBMISSION_ID": self._submission_id,
                    "MINIRAY_JOB_RUNTIME_ENV": json.dumps(info.runtime_env or {}),
                    "PYTHONUNBUFFERED": "1"})
        output = paths.open_private_log(self._log_path)
        try:
            # The launcher makes the job die with this worker (no Python may
            # run between fork and exec in a threaded process: no preexec_fn).
            return subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()),
                 info.entrypoint], stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, env=env, close_fds=True,
                start_new_session=True)               # stop() signals its whole group
        finally:
            os.close(output)

    def _wait_for_exit(self) -> int:
        """Wait for the entrypoint; meanwhile learn the job id of the driver
        it started (the GCS job whose driver is it or one of its children)."""
        process = self._process
        job_id_known = False
        while True:
            try:
                return process.wait(timeout=POLL_S if not job_id_known else 1.0)
            except subprocess.TimeoutExpired:
                pass
            if not job_id_known:
                job_id = self._find_driver_job()
                if job_id is not None:
                    job_id_known = True
                    self._update(job_id=job_id)

    def _find_driver_job(self) -> str | None:
        pids = {self._process.pid}
        try:
            pids.update(p.pid for p in psutil.Process(self._process.pid).children(
                recursive=True))
        except psutil.Error:
            return None
        try:
            reply = self._call("GetAllJobs", gcs_pb2.GetAllJobsRequest())
        except Exception:                        # noqa: BLE001 - try again later
            return None
        for job in reply.jobs:
            if job.driver_pid in pids and not job.is_dead:
                return job.job_id.hex()
        return None

    # --- stopping -----------------------------------------------------------------------
    def stop(self) -> bool:
        """SIGTERM the entrypoint's process group, SIGKILL what is left after
        STOP_WAIT_S. False if it had already ended."""
        with self._lock:
            already = self._stop_requested
            self._stop_requested = True
            process = self._process
        if process is None:
            return True                          # run() records STOPPED without starting
        if already or process.poll() is not None:
            return False
        try:
            family = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            family = []
        try:
            _signal_group(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_WAIT_S
            while time.monotonic() < deadline and (process.poll() is None
                                                   or _any_alive(family)):
                time.sleep(0.05)
            _signal_group(process.pid, signal.SIGKILL)
            for proc in family:                   # any that left the group
                try:
                    proc.kill()
                except psutil.Error:
                    pass
        finally:
            self._stopped.set()
        return True

    # --- records ------------------------------------------------------------------------
    def _update(self, **changes) -> None:
        info = self._storage.get(self._submission_id)
        if info is None or info.status.is_terminal():
            return
        self._storage.put(info.updated(**changes))

    def _finish(self, status: JobStatus, **changes) -> None:
        self._update(status=status, end_time=_now_ms(), **changes)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _any_alive(procs: list[psutil.Process]) -> bool:
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            pass
    return False


# The entrypoint's launcher: ``python -c _LAUNCHER <supervisor pid> <command>``.
# It leads the entrypoint's process group, runs the command with /bin/sh as
# its child and exits as that child did (a signal that killed it included).
# When the supervisor's worker dies it kills the whole group (SIGKILL), so
# nothing the job started outlives its supervisor; SIGTERM/SIGINT/SIGHUP
# sent to the group (a stop) reach the command, and the launcher waits.
_LAUNCHER = """
import ctypes, os, signal, sys
def group_down(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGUSR1, group_down)
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGUSR1, 0, 0, 0)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    group_down()
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
child = os.fork()
if child == 0:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)
    os.execv("/bin/sh", ["/bin/sh", "-c", sys.argv[2]])
while True:
    try:
        _, status = os.waitpid(child, 0)
        break
    except InterruptedError:
        pass
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    if sig != signal.SIGKILL:
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
os._exit(os.waitstatus_to_exitcode(status))
"""
