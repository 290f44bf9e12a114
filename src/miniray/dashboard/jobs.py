"""The job server's HTTP routes (Ray's REST paths), served by the
dashboard process beside its other ``/api/`` routes: each request is
parsed and checked here, then handed to the job manager
(``miniray/job_submission/manager.py``) or the package store
(``miniray/runtime_env/packaging.py``). The token check happens before,
in ``server.py``.

    GET    /api/version                       {version, ray_version, ray_commit, session_name}
    POST   /api/jobs/                         submit: {submission_id, job_id}
    GET    /api/jobs/                         [JobDetails, ...]
    GET    /api/jobs/<id>                     JobDetails (submission id or driver job id)
    GET    /api/jobs/<id>/logs                {logs}
    GET    /api/jobs/<id>/logs/tail           the log, streamed (chunked) until the job ends
    POST   /api/jobs/<id>/stop                {stopped}
    DELETE /api/jobs/<id>                     {deleted} (ended jobs only)
    GET    /api/packages/<protocol>/<name>    200 if the package is stored, else 404
    PUT    /api/packages/<protocol>/<name>    store a working_dir/py_modules zip

``/api/jobs`` without the trailing slash stays the page's paged view of
the GCS job table (server.py). Ray's websocket log tail is not served: the
tail path answers a plain streaming GET.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable, Iterator

from miniray.job_submission.common import check_submission_id, parse_submit_request
from miniray.job_submission.manager import JobConflictError, JobManager, JobNotFoundError

log = logging.getLogger("miniray.dashboard")

# Ray's REST API version (ray.dashboard.modules.version), and the Ray release
# whose job API this server follows: Ray's client checks both.
API_VERSION = "4"
RAY_COMPATIBLE_VERSION = "2.60.0"
MAX_JSON_BODY_BYTES = 4 * 1024 * 1024
_ID_ROUTES = {("GET", ""), ("GET", "/logs"), ("GET", "/logs/tail"), ("POST", "/stop"),
              ("DELETE", "")}


@dataclass
class Reply:
    """What a route answers: JSON data, or a stream of bytes (chunked)."""
    status: HTTPStatus
    data: object = None
    stream: Iterator[bytes] | None = None
    content_type: str = "application/json"


def error(status: HTTPStatus, message: str) -> Reply:
    return Reply(status, {"error": message})


class JobRoutes:
    """``handle(method, path, read_body, headers) -> Reply``, or None for a
    path that is not one of these routes."""

    def __init__(self, manager: JobManager, call: Callable, session_name: str = ""):
        """``call(method_name, request) -> reply``: the GCS's RPCs."""
        self.manager = manager
        self._call = call
        self.session_name = session_name

    def handles(self, path: str) -> bool:
        return path == "/api/version" or path.startswith("/api/jobs/") \
            or path.startswith("/api/packages/")

    def handle(self, method: str, path: str, read_body: Callable[[int], bytes],
               headers) -> Reply:
        try:
            if path == "/api/version":
                return self._only(method, "GET") or self.version()
            if path.startswith("/api/packages/"):
                return self.packages(method, path[len("/api/packages/"):], read_body)
            rest = path[len("/api/jobs/"):]
            if rest == "":
                if method == "GET":
                    return Reply(HTTPStatus.OK, [d.to_dict() for d in
                                                 self.manager.list_details()])
                if method == "POST":
                    return self.submit(read_body)
                return error(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} {path} is not served")
            job_id, _, action = rest.partition("/")
            action = "/" + action if action else ""
            if (method, action) not in _ID_ROUTES:
                return error(HTTPStatus.NOT_FOUND if method in ("GET", "POST", "DELETE")
                             else HTTPStatus.METHOD_NOT_ALLOWED,
                             f"no such endpoint: {method} {path}")
            if action == "":
                if method == "GET":
                    return Reply(HTTPStatus.OK, self.manager.get_details(job_id).to_dict())
                return Reply(HTTPStatus.OK, {"deleted": self.manager.delete(
                    check_submission_id(job_id))})
            check_submission_id(job_id)
            if action == "/stop":
                return Reply(HTTPStatus.OK, {"stopped": self.manager.stop(job_id)})
            if action == "/logs":
                return Reply(HTTPStatus.OK, {"logs": self.manager.logs(job_id)})
            if headers.get("Upgrade", "").lower() == "websocket":
                return error(HTTPStatus.NOT_IMPLEMENTED,
                             "miniray's job server does not serve a websocket log tail: "
                             "GET this path without Upgrade for a streamed response, or "
                             "poll /api/jobs/<id>/logs")
            return Reply(HTTPStatus.OK, stream=self.manager.tail(job_id),
                         content_type="text/plain; charset=utf-8")
        except JobNotFoundError as exc:
            return error(HTTPStatus.NOT_FOUND, str(exc))
        except (JobConflictError, ValueError) as exc:
            return error(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception as exc:                 # noqa: BLE001 - reported to the client
            if isinstance(getattr(exc, "status", None), HTTPStatus):    # read_body's
                return error(exc.status, str(exc))
            log.exception("job request %s %s failed", method, path)
            return error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _only(method: str, allowed: str) -> Reply | None:
        if method != allowed:
            return error(HTTPStatus.METHOD_NOT_ALLOWED, f"use {allowed}")
        return None

    def version(self) -> Reply:
        from miniray import __version__
        return Reply(HTTPStatus.OK, {"version": API_VERSION,
                                     "ray_version": RAY_COMPATIBLE_VERSION,
                                     "ray_commit": "", "session_name": self.session_name,
                                     "miniray_version": __version__})

    def submit(self, read_body) -> Reply:
        body = read_body(MAX_JSON_BODY_BYTES)
        try:
            data = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error(HTTPStatus.BAD_REQUEST, f"the request body is not valid JSON: {exc}")
        request = parse_submit_request(data)
        submission_id = self.manager.submit(request)
        return Reply(HTTPStatus.OK, {"submission_id": submission_id,
                                     "job_id": submission_id})

    def packages(self, method: str, rest: str, read_body) -> Reply:
        from miniray.runtime_env import packaging
        kv = packaging.GcsKV(self._call)
        protocol, _, name = rest.partition("/")
        if protocol != "gcs":
            return error(HTTPStatus.BAD_REQUEST, f"unsupported package protocol "
                                                 f"{protocol!r}: only 'gcs' is served")
        uri = f"gcs://{name}"
        try:
            packaging.name_of(uri)
        except packaging.PackagingError as exc:
            return error(HTTPStatus.BAD_REQUEST, str(exc))
        if method == "GET":
            if packaging.exists(kv, uri):
                return Reply(HTTPStatus.OK, {"exists": True})
            return error(HTTPStatus.NOT_FOUND, f"Package {uri} does not exist")
        if method == "PUT":
            data = read_body(package_limit())
            try:
                packaging.upload(kv, uri, data)
            except packaging.PackagingError as exc:
                return error(HTTPStatus.BAD_REQUEST, str(exc))
            return Reply(HTTPStatus.OK, {"uploaded": uri})
        return error(HTTPStatus.METHOD_NOT_ALLOWED, "use GET or PUT")


def package_limit() -> int:
    from miniray.common import config
    return int(getattr(config, "RUNTIME_ENV_MAX_PACKAGE_BYTES", 500 * 1024 * 1024))


def session_name(session_dir: str | None) -> str:
    return os.path.basename(session_dir.rstrip("/")) if session_dir else ""
