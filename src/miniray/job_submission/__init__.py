"""Job submission, as Ray's ``ray.job_submission``: run a shell command
(usually ``python script.py``) on the head node as a driver of the cluster,
with its runtime env, its output kept in a log, its status kept by the
cluster.

- ``sdk.py``: ``JobSubmissionClient`` (user's process, HTTP to the head's
  dashboard port).
- ``common.py``: ``JobStatus``, ``JobInfo``, ``JobDetails`` and the pure
  rules (request checks, messages).
- ``manager.py``: the job manager (dashboard process): records, the
  supervisor actors, monitoring, stop, delete, logs.
- ``supervisor.py``: the supervisor actor (a worker on the head node) that
  runs one job's entrypoint.
- ``storage.py``: job records in the GCS's internal KV.

The HTTP routes are in ``miniray/dashboard/jobs.py``; see docs/jobs.md.
"""
from miniray.job_submission.common import (
    DriverInfo, JobDetails, JobErrorType, JobInfo, JobStatus, JobType)
from miniray.job_submission.sdk import JobSubmissionClient

__all__ = ["JobSubmissionClient", "JobStatus", "JobErrorType", "JobInfo", "JobDetails",
           "DriverInfo", "JobType"]
