"""``JobSubmissionClient``: Ray's job client for miniray's job server (the
head's dashboard port, ``http://host:8265``), over the standard library's
HTTP client. Runs in the user's process (scripts, ``miniray job ...``).

The address defaults to ``$MINIRAY_ADDRESS`` / ``$RAY_ADDRESS`` when it is
an http(s) URL; else the dashboard recorded in the GCS of the cluster named
there (a GCS ``host:port``) or of the cluster ``miniray start`` began on
this machine. The cluster's token goes in ``Authorization: Bearer``: from
``headers``, else from ``MINIRAY_AUTH_TOKEN`` / ``MINIRAY_AUTH_TOKEN_FILE``,
else this process's (a driver), else the token file of the cluster found.

A local ``working_dir`` or ``py_modules`` entry of a job's runtime env is
packed here and uploaded (``PUT /api/packages/gcs/<name>``), and replaced by
its ``gcs://`` URI.
"""
from __future__ import annotations

import asyncio
import codecs
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, AsyncIterator, Iterator

from miniray.job_submission.common import JobDetails, JobStatus

__all__ = ["JobSubmissionClient"]

DEFAULT_TIMEOUT_S = 60.0


class JobSubmissionClient:
    """Submit, inspect, stop and delete jobs on a miniray cluster."""

    def __init__(self, address: str | None = None, create_cluster_if_needed: bool = False,
                 cookies: dict | None = None, metadata: dict | None = None,
                 headers: dict | None = None, verify: bool | str = True,
                 timeout: float = DEFAULT_TIMEOUT_S):
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a string, got {type(address).__name__}")
        if create_cluster_if_needed:
            raise ValueError("create_cluster_if_needed is not supported: start a cluster "
                             "with `miniray start --head`")
        for name, value in (("cookies", cookies), ("metadata", metadata),
                            ("headers", headers)):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
        url, gcs_address = _resolve_address(address)
        self._address = url.rstrip("/")
        self._timeout = timeout
        self._default_metadata = dict(metadata or {})
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        if cookies:
            self._headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        if not any(k.lower() == "authorization" for k in self._headers):
            token = _find_token(gcs_address)
            if token:
                self._headers["Authorization"] = f"Bearer {token}"
        self._context = None
        if self._address.startswith("https://"):
            import ssl
            if verify is False:
                self._context = ssl._create_unverified_context()    # verify=False: asked for
            elif isinstance(verify, str):
                self._context = ssl.create_default_context(
                    cafile=verify if os.path.isfile(verify) else None,
                    capath=verify if os.path.isdir(verify) else None)
        self._version = self._request("GET", "/api/version")

    def __repr__(self) -> str:
        return f"JobSubmissionClient(address={self._address!r})"

    def get_version(self) -> str:
        return self._version.get("version", "")

    # --- jobs -------------------------------------------------------------------------
    def submit_job(self, *, entrypoint: str, job_id: str | None = None,
                   runtime_env: dict[str, Any] | None = None,
                   metadata: dict[str, str] | None = None,
                   submission_id: str | None = None,
                   entrypoint_num_cpus: float | None = None,
                   entrypoint_num_gpus: float | None = None,
                   entrypoint_memory: int | None = None,
                   entrypoint_resources: dict[str, float] | None = None) -> str:
        """Submit ``entrypoint`` (a shell command run on the head node);
        returns the submission id."""
        if job_id is not None:
            if submission_id is not None and submission_id != job_id:
                raise ValueError("job_id (deprecated) and submission_id differ: give "
                                 "only submission_id")
            submission_id = job_id
        if runtime_env is not None:
            if hasattr(runtime_env, "to_dict") and not isinstance(runtime_env, dict):
                runtime_env = runtime_env.to_dict()
            if not isinstance(runtime_env, dict):
                raise TypeError(f"runtime_env must be a dict, got "
                                f"{type(runtime_env).__name__}")
            runtime_env = self._upload_local_packages(runtime_env)
        body = {"entrypoint": entrypoint, "submission_id": submission_id,
                "runtime_env": runtime_env,
                "metadata": {**self._default_metadata, **(metadata or {})},
                "entrypoint_num_cpus": entrypoint_num_cpus,
                "entrypoint_num_gpus": entrypoint_num_gpus,
                "entrypoint_memory": entrypoint_memory,
                "entrypoint_resources": entrypoint_resources}
        body = {k: v for k, v in body.items() if v is not None}
        return self._request("POST", "/api/jobs/", body)["submission_id"]

    def stop_job(self, job_id: str) -> bool:
        """Ask the job to stop; False if it had already ended."""
        return bool(self._request("POST", f"/api/jobs/{_quote(job_id)}/stop")["stopped"])

    def delete_job(self, job_id: str) -> bool:
        """Forget an ended job (its record and log)."""
        return bool(self._request("DELETE", f"/api/jobs/{_quote(job_id)}")["deleted"])

    def get_job_info(self, job_id: str) -> JobDetails:
        return JobDetails.from_dict(self._request("GET", f"/api/jobs/{_quote(job_id)}"))

    def list_jobs(self) -> list[JobDetails]:
        return [JobDetails.from_dict(d) for d in self._request("GET", "/api/jobs/")]

    def get_job_status(self, job_id: str) -> JobStatus:
        return self.get_job_info(job_id).status

    def get_job_logs(self, job_id: str) -> str:
        return self._request("GET", f"/api/jobs/{_quote(job_id)}/logs")["logs"]

    async def tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        """The job's output from its start, chunk by chunk as it is written,
        until the job ends."""
        loop = asyncio.get_running_loop()
        chunks = self.iter_job_logs(job_id)
        done = object()
        try:
            while True:
                chunk = await loop.run_in_executor(None, next, chunks, done)
                if chunk is done:
                    return
                yield chunk
        finally:
            await loop.run_in_executor(None, chunks.close)

    def iter_job_logs(self, job_id: str) -> Iterator[str]:
        """``tail_job_logs`` for synchronous callers (miniray's own name)."""
        response = self._open("GET", f"/api/jobs/{_quote(job_id)}/logs/tail", None,
                              timeout=None)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while True:
                data = response.read1(64 * 1024)
                if not data:
                    break
                text = decoder.decode(data)
                if text:
                    yield text
            rest = decoder.decode(b"", final=True)
            if rest:
                yield rest
        finally:
            response.close()

    # --- packages ---------------------------------------------------------------------
    def _upload_local_packages(self, runtime_env: dict) -> dict:
        """The runtime env, checked, with local working_dir/py_modules packed,
        uploaded (unless the cluster has them) and replaced by their URIs."""
        from miniray.runtime_env import upload
        from miniray.runtime_env.runtime_env import validate
        return upload.prepare(validate(runtime_env), _PackageStore(self),
                              upload=self._put_package)

    def _package_path(self, uri: str) -> str:
        return "/api/packages/gcs/" + urllib.parse.quote(uri[len("gcs://"):], safe="")

    def _put_package(self, uri: str, data: bytes) -> None:
        self._request("PUT", self._package_path(uri), data)

    # --- HTTP -------------------------------------------------------------------------
    def _open(self, method: str, endpoint: str, body, timeout: float | None):
        headers = dict(self._headers)
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
            headers["Content-Type"] = "application/octet-stream"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        else:
            data = b"" if method in ("POST", "PUT") else None
        request = urllib.request.Request(self._address + endpoint, data=data,
                                         headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=timeout, context=self._context)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, method, endpoint) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionError(f"Failed to connect to the miniray job server at "
                                  f"{self._address}: {reason}. Is the cluster running, "
                                  f"with its dashboard (miniray start --head)?") from None

    def _request(self, method: str, endpoint: str, body=None):
        with self._open(method, endpoint, body, timeout=self._timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload else {}


class _NotFound(RuntimeError):
    pass


class _PackageStore:
    """The read side of ``packaging.GcsKV`` over the job server: a package
    record is "there" (b"") when ``GET /api/packages/gcs/<name>`` finds it."""

    def __init__(self, client: JobSubmissionClient):
        self._client = client

    def get(self, key: str) -> bytes | None:
        try:
            self._client._request("GET", self._client._package_path("gcs://" + key))
        except _NotFound:
            return None
        return b""


def _http_error(exc: urllib.error.HTTPError, method: str, endpoint: str) -> Exception:
    """A RuntimeError (as Ray's client raises) with the server's reason."""
    try:
        text = exc.read().decode("utf-8", errors="replace")
    except OSError:
        text = ""
    try:
        reason = json.loads(text).get("error", text)
    except (ValueError, AttributeError):
        reason = text
    message = f"Request failed with status code {exc.code}: {reason or exc.reason}"
    if exc.code == 401:
        message += (" (set MINIRAY_AUTH_TOKEN to the cluster's token, or pass "
                    "headers={'Authorization': 'Bearer <token>'})")
    return (_NotFound if exc.code == 404 else RuntimeError)(message)


def _quote(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"a job id must be a non-empty string, got {job_id!r}")
    return urllib.parse.quote(job_id, safe="")


def _resolve_address(address: str | None) -> tuple[str, str | None]:
    """(job server URL, the cluster's GCS address if known)."""
    if address in (None, "", "auto"):
        address = os.environ.get("MINIRAY_ADDRESS") or os.environ.get("RAY_ADDRESS") \
            or address or None
    if address and address.startswith(("http://", "https://")):
        return address, None
    if address and address.startswith("ray://"):
        raise ValueError("Ray Client (ray://) addresses are not supported: give the "
                         "dashboard's http://host:port")
    from miniray import node as node_module
    if address == "auto":
        gcs_address = node_module.auto_cluster_address()
    else:
        gcs_address = address or node_module.read_current_cluster()
    if not gcs_address:
        raise ConnectionError(
            "No job server address: pass address='http://<head>:8265', set "
            "MINIRAY_ADDRESS (or RAY_ADDRESS) to it, or start a cluster on this machine "
            "with `miniray start --head`.")
    return "http://" + _dashboard_of(gcs_address), gcs_address


def _dashboard_of(gcs_address: str) -> str:
    """host:port of the dashboard of the cluster whose GCS is ``gcs_address``."""
    from miniray.dashboard.source import KV_KEY, KV_NAMESPACE
    from miniray.protocol import gcs_pb2, gcs_pb2_grpc
    from miniray.rpc import auth
    from miniray.rpc.channels import authenticated, sync_channel
    previous = auth.current_token()
    try:
        auth.load_for_cluster(gcs_address)      # this cluster's token, for this call
        with sync_channel(gcs_address) as channel:
            stub = authenticated(gcs_pb2_grpc.GcsServiceStub(channel))
            reply = stub.KVGet(gcs_pb2.KVGetRequest(namespace=KV_NAMESPACE, key=KV_KEY),
                               timeout=10)
    except Exception as exc:                       # noqa: BLE001 - said plainly
        code = getattr(exc, "code", None)
        what = code().name if callable(code) else str(exc)
        raise ConnectionError(f"Could not reach the miniray cluster at {gcs_address} to "
                              f"find its job server: {what}") from None
    finally:
        auth.set_token(previous)
    if not reply.found:
        raise ConnectionError(f"The miniray cluster at {gcs_address} has no dashboard "
                              f"(its job server): start its head without "
                              f"--include-dashboard=false")
    return reply.value.decode()


def _find_token(gcs_address: str | None) -> str | None:
    """The token from the environment, else that of the cluster found by
    its GCS address (its token file on this machine), else this process's
    (a driver's), else that of the cluster `miniray start` began here."""
    from miniray.rpc import auth
    token = os.environ.get(auth.ENV_TOKEN)
    if token:
        return token
    try:
        token = auth._read_env_file()
    except Exception:                              # noqa: BLE001 - no token then
        token = None
    if token:
        return token
    if gcs_address is not None:
        token = _token_file_of(gcs_address)
        if token:
            return token
    if auth.current_token():
        return auth.current_token()
    from miniray import node as node_module
    current = node_module.read_current_cluster()
    return _token_file_of(current) if current else None


def _token_file_of(gcs_address: str) -> str | None:
    from miniray.common import paths
    from miniray.rpc import auth
    try:
        data = paths.read_private_file(auth.token_file(gcs_address), secret=True)
    except (OSError, paths.UnsafePathError):
        return None
    return (data.decode().strip() or None) if data else None
