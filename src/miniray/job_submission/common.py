"""Job records and the rules about them: statuses, Ray's ``JobInfo`` and
``JobDetails`` field names, checking a submit request, the messages a job
ends with. Pure data and decisions, no I/O: used by the client
(``sdk.py``), the job manager in the dashboard process (``manager.py``) and
the supervisor actor (``supervisor.py``).
"""
from __future__ import annotations

import dataclasses
import math
import re
import secrets
import signal
import string
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["JobStatus", "JobErrorType", "JobType", "JobInfo", "JobDetails", "DriverInfo",
           "SubmitRequest", "parse_submit_request", "new_submission_id",
           "check_submission_id", "log_file_name", "exit_message", "default_message"]

# A submission id names the job's log file and its supervisor actor.
SUBMISSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
MAX_ENTRYPOINT_CHARS = 64 * 1024
MAX_METADATA_ITEMS = 64
MAX_METADATA_CHARS = 4096


class JobStatus(str, Enum):
    """Where a submitted job is in its life (Ray's values)."""
    PENDING = "PENDING"        # accepted; its supervisor or runtime env is not ready yet
    RUNNING = "RUNNING"        # the entrypoint runs
    STOPPED = "STOPPED"        # stopped by the user
    SUCCEEDED = "SUCCEEDED"    # the entrypoint exited 0
    FAILED = "FAILED"          # the entrypoint failed, or the job could not run

    def __str__(self) -> str:
        return self.value

    def is_terminal(self) -> bool:
        """A terminal status never changes again."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED})


class JobErrorType(str, Enum):
    """Why a FAILED job failed (Ray's values)."""
    RUNTIME_ENV_SETUP_FAILURE = "RUNTIME_ENV_SETUP_FAILURE"
    JOB_SUPERVISOR_ACTOR_START_TIMEOUT = "JOB_SUPERVISOR_ACTOR_START_TIMEOUT"
    JOB_SUPERVISOR_ACTOR_START_FAILURE = "JOB_SUPERVISOR_ACTOR_START_FAILURE"
    JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE = "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE"
    JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE = "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE"
    JOB_SUPERVISOR_ACTOR_DIED = "JOB_SUPERVISOR_ACTOR_DIED"
    JOB_ENTRYPOINT_COMMAND_START_ERROR = "JOB_ENTRYPOINT_COMMAND_START_ERROR"
    JOB_ENTRYPOINT_COMMAND_ERROR = "JOB_ENTRYPOINT_COMMAND_ERROR"

    def __str__(self) -> str:
        return self.value


class JobType(str, Enum):
    """A job submitted through the job server, or a driver started by hand."""
    SUBMISSION = "SUBMISSION"
    DRIVER = "DRIVER"

    def __str__(self) -> str:
        return self.value


def default_message(status: JobStatus, *, waits_for_resources: bool = False,
                    has_runtime_env: bool = False) -> str:
    """The message of a job whose status says it all."""
    if status is JobStatus.PENDING:
        text = "Job has not started yet."
        if waits_for_resources:
            text += (" It may be waiting for resources (CPUs, GPUs, memory, custom "
                     "resources) to become available.")
        if has_runtime_env:
            text += " It may be waiting for the runtime environment to be set up."
        return text
    return {JobStatus.RUNNING: "Job is currently running.",
            JobStatus.STOPPED: "Job was intentionally stopped.",
            JobStatus.SUCCEEDED: "Job finished successfully.",
            JobStatus.FAILED: "Job failed."}[status]


def exit_message(returncode: int) -> str:
    """The message of an entrypoint that exited with ``returncode`` (a
    negative one is the signal that killed it, as subprocess reports)."""
    if returncode == 0:
        return default_message(JobStatus.SUCCEEDED)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"Job entrypoint command was terminated by {name}."
    return f"Job entrypoint command failed with exit code {returncode}."


def _enum_or_none(cls, value):
    if value is None or isinstance(value, cls):
        return value
    return cls(value)


@dataclass
class JobInfo:
    """What the cluster keeps about a submitted job (Ray's ``JobInfo``
    fields, plus ``submission_id``, ``job_id`` and ``driver_pid``). Times are
    in milliseconds since the epoch."""
    status: JobStatus
    entrypoint: str
    message: str | None = None
    error_type: JobErrorType | None = None
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, Any] | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None
    driver_agent_http_address: str | None = None
    driver_node_id: str | None = None
    driver_exit_code: int | None = None
    submission_id: str | None = None
    job_id: str | None = None              # the driver's job id (hex), once it connected
    driver_pid: int | None = None          # the entrypoint's process (its group leader)

    def __post_init__(self):
        self.status = JobStatus(self.status)
        self.error_type = _enum_or_none(JobErrorType, self.error_type)
        if self.message is None:
            self.message = default_message(
                self.status, waits_for_resources=self.requests_resources(),
                has_runtime_env=bool(self.runtime_env))

    def requests_resources(self) -> bool:
        return bool((self.entrypoint_num_cpus or 0) > 0 or (self.entrypoint_num_gpus or 0) > 0
                    or (self.entrypoint_memory or 0) > 0 or self.entrypoint_resources)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        data["error_type"] = self.error_type.value if self.error_type else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobInfo":
        """From ``to_dict``'s output; keys it does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def updated(self, **changes) -> "JobInfo":
        """A copy with ``changes``; a new status without a message gets its
        default one."""
        if "status" in changes and "message" not in changes:
            changes["message"] = None
        return dataclasses.replace(self, **changes)


@dataclass
class DriverInfo:
    """The driver process of a job (Ray's fields)."""
    id: str
    node_ip_address: str
    pid: str


@dataclass
class JobDetails:
    """A job as ``list_jobs``/``get_job_info`` report it (Ray's fields):
    a submitted job (``type`` SUBMISSION) or a driver started by hand
    (DRIVER, no ``submission_id``)."""
    type: JobType
    status: JobStatus
    entrypoint: str
    job_id: str | None = None
    submission_id: str | None = None
    driver_info: DriverInfo | None = None
    message: str | None = None
    error_type: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, Any] | None = None
    driver_agent_http_address: str | None = None
    driver_node_id: str | None = None
    driver_exit_code: int | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None

    def __post_init__(self):
        self.type = JobType(self.type)
        self.status = JobStatus(self.status)
        if isinstance(self.driver_info, dict):
            self.driver_info = DriverInfo(**{k: self.driver_info.get(k) for k in
                                             ("id", "node_ip_address", "pid")})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["type"] = self.type.value
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobDetails":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def of_submission(cls, info: JobInfo, driver_info: DriverInfo | None = None
                      ) -> "JobDetails":
        return cls(type=JobType.SUBMISSION, status=info.status, entrypoint=info.entrypoint,
                   job_id=info.job_id, submission_id=info.submission_id,
                   driver_info=driver_info, message=info.message,
                   error_type=info.error_type.value if info.error_type else None,
                   start_time=info.start_time, end_time=info.end_time,
                   metadata=info.metadata, runtime_env=info.runtime_env,
                   driver_agent_http_address=info.driver_agent_http_address,
                   driver_node_id=info.driver_node_id,
                   driver_exit_code=info.driver_exit_code,
                   entrypoint_num_cpus=info.entrypoint_num_cpus,
                   entrypoint_num_gpus=info.entrypoint_num_gpus,
                   entrypoint_memory=info.entrypoint_memory,
                   entrypoint_resources=info.entrypoint_resources)


# --- submit requests -------------------------------------------------------------------
@dataclass
class SubmitRequest:
    """A checked ``POST /api/jobs/`` body."""
    entrypoint: str
    submission_id: str | None = None
    runtime_env: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None


_SUBMIT_FIELDS = {f.name for f in dataclasses.fields(SubmitRequest)} | {"job_id"}
# Ray's client sends these too; miniray has no use for them yet and refuses
# them only when they ask for something.
_IGNORED_WHEN_EMPTY = {"entrypoint_label_selector"}


def _amount(name: str, value, *, integer: bool = False):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if integer and value != int(value):
        raise ValueError(f"{name} must be a whole number of bytes, got {value!r}")
    return int(value) if integer else value


def parse_submit_request(data: object) -> SubmitRequest:
    """Check a submit request's JSON; ValueError naming the bad field."""
    if not isinstance(data, dict):
        raise ValueError("the request body must be a JSON object")
    unknown = set(data) - _SUBMIT_FIELDS - _IGNORED_WHEN_EMPTY
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in _IGNORED_WHEN_EMPTY:
        if data.get(name):
            raise ValueError(f"{name} is not supported by miniray")
    entrypoint = data.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise ValueError("entrypoint must be a non-empty string (a shell command)")
    if len(entrypoint) > MAX_ENTRYPOINT_CHARS or "\x00" in entrypoint:
        raise ValueError(f"entrypoint must be at most {MAX_ENTRYPOINT_CHARS} characters "
                         f"without NUL")
    submission_id = data.get("submission_id")
    job_id = data.get("job_id")               # Ray's old name for it
    if submission_id is None:
        submission_id = job_id
    elif job_id is not None and job_id != submission_id:
        raise ValueError("submission_id and job_id differ: give only submission_id")
    if submission_id is not None:
        check_submission_id(submission_id)
    runtime_env = data.get("runtime_env")
    if runtime_env is not None and not isinstance(runtime_env, dict):
        raise ValueError(f"runtime_env must be a JSON object, got "
                         f"{type(runtime_env).__name__}")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError("metadata must be a JSON object of strings to strings")
    if len(metadata) > MAX_METADATA_ITEMS or any(
            len(k) + len(v) > MAX_METADATA_CHARS for k, v in metadata.items()):
        raise ValueError(f"metadata must hold at most {MAX_METADATA_ITEMS} entries of at "
                         f"most {MAX_METADATA_CHARS} characters each")
    resources = data.get("entrypoint_resources")
    if resources is not None:
        if not isinstance(resources, dict):
            raise ValueError("entrypoint_resources must be a JSON object of resource "
                             "name -> amount")
        for name, amount in resources.items():
            if not isinstance(name, str) or not name:
                raise ValueError("entrypoint_resources names must be non-empty strings")
            if name in ("CPU", "GPU", "memory"):
                raise ValueError(f"entrypoint_resources must not hold {name!r}: use "
                                 f"entrypoint_num_cpus/entrypoint_num_gpus/"
                                 f"entrypoint_memory")
            _amount(f"entrypoint_resources[{name!r}]", amount)
    return SubmitRequest(
        entrypoint=entrypoint, submission_id=submission_id, runtime_env=runtime_env,
        metadata=dict(metadata),
        entrypoint_num_cpus=_amount("entrypoint_num_cpus", data.get("entrypoint_num_cpus")),
        entrypoint_num_gpus=_amount("entrypoint_num_gpus", data.get("entrypoint_num_gpus")),
        entrypoint_memory=_amount("entrypoint_memory", data.get("entrypoint_memory"),
                                  integer=True),
        entrypoint_resources=dict(resources) if resources else None)


def check_submission_id(submission_id: object) -> str:
    if not isinstance(submission_id, str) or not SUBMISSION_ID_PATTERN.match(submission_id):
        raise ValueError(
            f"submission_id must be 1 to 128 letters, digits, '_', '-' or '.' (not "
            f"starting with '_', '-' or '.'), got {submission_id!r}")
    return submission_id


_ID_ALPHABET = string.ascii_letters + string.digits


def new_submission_id() -> str:
    """A fresh id in Ray's form, ``raysubmit_<16 random characters>``."""
    return "raysubmit_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def log_file_name(submission_id: str) -> str:
    """The job's output file in the head node's logs directory (as Ray)."""
    return f"job-driver-{check_submission_id(submission_id)}.log"
