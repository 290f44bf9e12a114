"""Job records in the GCS's internal KV (namespace ``job``), one JSON value
per submission: they survive the dashboard's and the GCS's restarts and
stay listed after their job ends, until ``delete``.

Used by the job manager (dashboard process, over its blocking GCS stub) and
by the supervisor actor (a worker on the head, over its core worker), each
passing ``call(method_name, request) -> reply``.
"""
from __future__ import annotations

import json
from typing import Callable

from miniray.job_submission.common import JobInfo
from miniray.protocol import gcs_pb2

KV_NAMESPACE = "job"
KEY_PREFIX = "job_info_"


def _key(submission_id: str) -> bytes:
    return (KEY_PREFIX + submission_id).encode()


class JobInfoStorage:
    def __init__(self, call: Callable):
        self._call = call

    def put(self, info: JobInfo, *, overwrite: bool = True) -> bool:
        """Store ``info``; False if ``overwrite`` is off and the job exists."""
        reply = self._call("KVPut", gcs_pb2.KVPutRequest(
            namespace=KV_NAMESPACE, key=_key(info.submission_id),
            value=json.dumps(info.to_dict()).encode(), overwrite=overwrite))
        return bool(reply.added) or overwrite

    def get(self, submission_id: str) -> JobInfo | None:
        reply = self._call("KVGet", gcs_pb2.KVGetRequest(namespace=KV_NAMESPACE,
                                                         key=_key(submission_id)))
        return JobInfo.from_dict(json.loads(reply.value)) if reply.found else None

    def delete(self, submission_id: str) -> None:
        self._call("KVDel", gcs_pb2.KVDelRequest(namespace=KV_NAMESPACE,
                                                 key=_key(submission_id)))

    def list(self) -> dict[str, JobInfo]:
        """Every job, by submission id (a record deleted meanwhile is left out)."""
        keys = self._call("KVKeys", gcs_pb2.KVKeysRequest(
            namespace=KV_NAMESPACE, prefix=KEY_PREFIX.encode())).keys
        found = {}
        for key in keys:
            submission_id = key.decode()[len(KEY_PREFIX):]
            info = self.get(submission_id)
            if info is not None:
                found[submission_id] = info
        return found
