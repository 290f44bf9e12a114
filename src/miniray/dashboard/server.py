"""The dashboard's HTTP server: the standard library's ThreadingHTTPServer
(one thread per request), routes, and the token check.

When the cluster uses token authentication, ``/api/`` and ``/metrics``
answer 401 unless the request carries the cluster's token, as an
``Authorization: Bearer <token>`` header or a ``miniray_token`` cookie;
visiting ``/?token=<token>`` sets that cookie (HttpOnly, SameSite=Strict)
and redirects to ``/``. The page itself (HTML, CSS, JS) holds no data and
is served to anyone who can reach the port (127.0.0.1 by default).
"""
from __future__ import annotations

import hmac
import http.cookies
import json
import logging
import math
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qsl, urlsplit

import grpc

from miniray.dashboard import views

log = logging.getLogger("miniray.dashboard")

INTERNAL_NAMESPACE_PREFIX = "_miniray_internal"     # the job server's driver

COOKIE = "miniray_token"
STATIC = {"index.html": "text/html; charset=utf-8",
          "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def token_ok(expected: str | None, authorization: str | None, cookie: str | None) -> bool:
    """Whether a request presents the cluster's token (always, without auth)."""
    if expected is None:
        return True
    wanted = expected.encode()
    if authorization and authorization.startswith("Bearer "):
        if hmac.compare_digest(authorization[len("Bearer "):].strip().encode(), wanted):
            return True
    if cookie:
        try:
            jar = http.cookies.SimpleCookie(cookie)
        except http.cookies.CookieError:
            return False
        morsel = jar.get(COOKIE)
        if morsel is not None and hmac.compare_digest(morsel.value.encode(), wanted):
            return True
    return False


def _clean(value):
    """JSON has no NaN or infinity: None instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class Api:
    """The ``/api/`` routes: each takes the query dict and returns JSON data."""

    def __init__(self, source):
        self.source = source
        self.routes = {
            "/api/cluster_status": self.cluster_status,
            "/api/nodes": self.nodes,
            "/api/actors": self.actors,
            "/api/tasks": self.tasks,
            "/api/tasks/summary": self.tasks_summary,
            "/api/actors/summary": self.actors_summary,
            "/api/placement_groups": self.placement_groups,
            "/api/jobs": self.jobs,
            "/api/objects": self.objects,
            "/api/timeline": self.timeline,
            "/api/logs": self.logs,
            "/api/logs/read": self.logs_read,
        }

    def _user_jobs(self) -> list:
        """The GCS's jobs but the job server's own driver (jobs.py)."""
        return [j for j in self.source.jobs()
                if not j.namespace.startswith(INTERNAL_NAMESPACE_PREFIX)]

    def cluster_status(self, query):
        jobs = self._user_jobs()
        return views.cluster_status(self.source.cluster(), self.source.node_stats(),
                                    sum(1 for j in jobs if not j.is_dead))

    def _node_records(self):
        source = self.source
        return views.node_records(source.nodes(), source.node_stats(),
                                  source.metric_reports())

    def nodes(self, query):
        return {"nodes": self._node_records(), "time": time.time()}

    def actors(self, query):
        return views.actors_view(self.source.actors(), query)

    def actors_summary(self, query):
        summary: dict = {}
        for actor in self.source.actors():
            record = views.actor_record(actor)
            entry = summary.setdefault(record["class_name"], {
                "class_name": record["class_name"], "state_counts": {}})
            entry["state_counts"][record["state"]] = \
                entry["state_counts"].get(record["state"], 0) + 1
        return {"cluster": {"summary": summary, "summary_by": "class",
                            "total_actors": len(self.source.actors())}}

    def tasks(self, query):
        return views.tasks_view(self.source.tasks(), query)

    def tasks_summary(self, query):
        return views.tasks_summary(self.source.tasks())

    def placement_groups(self, query):
        limit, offset = views.page_args(query)
        records = [views.placement_group_record(g) for g in self.source.placement_groups()]
        return views.paged("placement_groups", records, limit, offset)

    def jobs(self, query):
        limit, offset = views.page_args(query)
        records = [views.job_record(j) for j in self._user_jobs()]
        records.reverse()                       # newest first
        return views.paged("jobs", records, limit, offset)

    def objects(self, query):
        objects, why = self.source.objects()
        return views.objects_view(self._node_records(), objects, why, query)

    def timeline(self, query):
        limit = int(query.get("limit", 0))
        if limit < 0:
            raise ValueError("limit must be >= 0")
        return views.timeline(self.source.tasks(), query.get("job_id") or None, limit)


    def logs(self, query):
        return views.log_files_view(self.source.log_listings(), query)

    def logs_read(self, query):
        """Up to views.MAX_LOG_READ bytes of a log file, from ``offset`` or
        its last ``tail`` lines; the answer's ``next_offset`` is where to
        read on to follow it."""
        args = views.log_read_args(query)
        node = views.find_log_node(self.source.nodes(), args.node_id)
        node_hex = node.node_id.hex()

        def read(**kwargs):
            try:
                kwargs.setdefault("max_bytes", args.size)
                return self.source.read_log(node, args.filename, **kwargs)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise HttpError(HTTPStatus.NOT_FOUND, exc.details()) from None
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ValueError(exc.details()) from None
                raise

        reset = False
        skipped = 0
        if args.tail:
            reply = read(tail_lines=args.tail)
            data, start = reply.data, reply.offset
            if start > 0 and len(data) >= args.size:
                # The lines asked for are longer than one read: it may start
                # mid-line. Show whole lines only, unless it starts a line.
                before = read(offset=start - 1, max_bytes=1).data
                if before != b"\n":
                    data, skipped = views.drop_partial_first_line(data)
                    start += skipped
        else:
            reply = read(offset=args.offset)
            if reply.file_size < args.offset:       # truncated since: from its start
                reply, reset = read(offset=0), True
            data, start = reply.data, reply.offset
        return views.log_chunk(node_hex, args.filename, data, start, reply.file_size,
                               reset=reset, skipped=skipped)


class Handler(BaseHTTPRequestHandler):
    server_version = "miniray-dashboard"
    protocol_version = "HTTP/1.1"

    # --- plumbing -------------------------------------------------------------------------
    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, data) -> None:
        body = json.dumps(_clean(data), separators=(",", ":")).encode()
        self._send(status, body, "application/json")

    def _authorized(self) -> bool:
        return token_ok(self.server.token, self.headers.get("Authorization"),
                        self.headers.get("Cookie"))

    # --- requests -------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")

    def _serve(self, method: str):
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        path = url.path.rstrip("/") or "/"
        try:
            jobs = self.server.jobs
            if jobs is not None and jobs.handles(url.path):
                self._jobs(method, url.path)
            elif method not in ("GET", "HEAD"):
                self.close_connection = True        # its body is not read
                raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} {path} is not served")
            elif path == "/":
                self._index(query)
            elif path.startswith("/static/"):
                self._static(path[len("/static/"):])
            elif path == "/metrics":
                self._metrics()
            elif path.startswith("/api/"):
                self._api(path, query)
            elif path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            else:
                raise HttpError(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        except HttpError as exc:
            self._json(exc.status, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:
            log.exception("dashboard request %s failed", self.path)
            self._json(HTTPStatus.SERVICE_UNAVAILABLE,
                       {"error": f"could not read the cluster: {type(exc).__name__}"})

    def _index(self, query: dict) -> None:
        token = query.get("token")
        if token is not None:
            if not token_ok(self.server.token, f"Bearer {token}", None):
                raise HttpError(HTTPStatus.UNAUTHORIZED, "wrong token")
            headers = {"Location": "/"}
            if self.server.token is not None:
                jar = http.cookies.SimpleCookie()
                jar[COOKIE] = token
                jar[COOKIE].update({"path": "/", "httponly": True, "samesite": "Strict"})
                headers["Set-Cookie"] = jar[COOKIE].OutputString()
            self._send(HTTPStatus.FOUND, b"", "text/plain", headers)
            return
        self._static("index.html")

    def _static(self, name: str) -> None:
        content_type = STATIC.get(name)
        if content_type is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such file: {name}")
        body = self.server.static_file(name)
        self._send(HTTPStatus.OK, body, content_type)

    def _api(self, path: str, query: dict) -> None:
        if not self._authorized():
            raise HttpError(HTTPStatus.UNAUTHORIZED,
                            "this cluster requires its token: open the dashboard URL "
                            "that init() printed (with ?token=...), or send "
                            "'Authorization: Bearer <token>'")
        route = self.server.api.routes.get(path)
        if route is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        try:
            data = route(query)
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        self._json(HTTPStatus.OK, data)

    def _jobs(self, method: str, path: str) -> None:
        """The job server's routes (dashboard/jobs.py), token required."""
        if not self._authorized():
            self.close_connection = True
            raise HttpError(HTTPStatus.UNAUTHORIZED, "this cluster requires its token: "
                                                     "send 'Authorization: Bearer <token>'")
        reply = self.server.jobs.handle(method, path, self._read_body, self.headers)
        if reply.stream is None or self.command == "HEAD":
            if reply.stream is not None:
                reply.stream.close()
            self._json(reply.status, reply.data)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        for chunk in reply.stream:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _read_body(self, limit: int) -> bytes:
        """The request's body, at most ``limit`` bytes (else 413)."""
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                raise HttpError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length")
            return b""
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            self.close_connection = True
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
        if size > limit:
            self.close_connection = True
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"the request body is {size} bytes, over the limit of {limit}")
        return self.rfile.read(size)

    def _metrics(self) -> None:
        if not self._authorized():
            raise HttpError(HTTPStatus.UNAUTHORIZED, "this cluster requires its token: "
                                                     "send 'Authorization: Bearer <token>'")
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
        body = generate_latest(self.server.registry)
        self._send(HTTPStatus.OK, body, CONTENT_TYPE_LATEST)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], source, token: str | None,
                 bind_and_activate: bool = True, jobs=None):
        from miniray.dashboard.prometheus import registry_for
        self.source = source
        self.token = token
        self.jobs = jobs                # dashboard/jobs.py JobRoutes, or None
        self.api = Api(source)
        self.registry = registry_for(source)
        self._static_cache: dict[str, bytes] = {}
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler, bind_and_activate)

    @classmethod
    def on_socket(cls, sock: socket.socket, source, token: str | None):
        """A server on a socket that is already listening."""
        host, port = sock.getsockname()[:2]
        server = cls((host, port), source, token, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        return server

    def static_file(self, name: str) -> bytes:
        body = self._static_cache.get(name)
        if body is None:
            body = self._static_cache[name] = resources.files(
                "miniray.dashboard").joinpath("static", name).read_bytes()
        return body


def bind(host: str, port: int, source, token: str | None,
         tries: int = 100) -> DashboardServer:
    """A server on ``port``, or on the next free one (up to ``tries``)."""
    last = None
    for candidate in range(port, port + tries) if port else [0]:
        try:
            return DashboardServer((host, candidate), source, token)
        except OSError as exc:
            last = exc
    raise OSError(f"no free port for the dashboard in {port}..{port + tries - 1}: {last}")
