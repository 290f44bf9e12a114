"""Token authentication of every RPC, and optional TLS.

A cluster has one secret token, made with ``secrets`` when its head starts
(``miniray start --head`` or ``init()`` of a new local cluster) and kept in
a 0600 file in the cluster's private directory (``paths.cluster_auth_dir``):
processes of the same user on this machine find it from the GCS address
alone. The processes a node starts (GCS, raylet, workers) get it in their
environment, never in their arguments. Other machines are given it with
``MINIRAY_AUTH_TOKEN`` or a file named by ``MINIRAY_AUTH_TOKEN_FILE``
(``miniray start --auth-token-file``).

Every client call carries ``authorization: Bearer <token>`` metadata (see
``channels``); every server checks it in ``AuthInterceptor`` with a
constant-time compare before any handler (or request deserializer) runs,
and answers UNAUTHENTICATED otherwise. ``MINIRAY_AUTH_MODE=disabled`` turns
this off for a trusted network (Ray: ``RAY_AUTH_MODE``).

TLS (Ray's ``RAY_USE_TLS`` and its ``RAY_TLS_*`` files, here
``MINIRAY_USE_TLS=1`` with ``MINIRAY_TLS_SERVER_CERT``,
``MINIRAY_TLS_SERVER_KEY`` and ``MINIRAY_TLS_CA_CERT``) switches every
server and channel to mutually authenticated TLS.
"""
from __future__ import annotations

import hmac
import logging
import os
import secrets

import grpc

from miniray.common import paths

log = logging.getLogger("miniray")

ENV_TOKEN = "MINIRAY_AUTH_TOKEN"
ENV_TOKEN_FILE = "MINIRAY_AUTH_TOKEN_FILE"
ENV_MODE = "MINIRAY_AUTH_MODE"           # "token" (default) or "disabled"
ENV_USE_TLS = "MINIRAY_USE_TLS"
ENV_TLS_CERT = "MINIRAY_TLS_SERVER_CERT"
ENV_TLS_KEY = "MINIRAY_TLS_SERVER_KEY"
ENV_TLS_CA = "MINIRAY_TLS_CA_CERT"
TOKEN_FILE_NAME = "auth_token"
METADATA_KEY = "authorization"
_PREFIX = "Bearer "

_token: str | None = None


class AuthTokenError(ConnectionError):
    """This process has no token for a cluster that needs one."""


# --- the token of this process -------------------------------------------------
def enabled() -> bool:
    mode = os.environ.get(ENV_MODE, "token").strip().lower()
    if mode not in ("token", "disabled"):
        raise ValueError(f"{ENV_MODE} must be 'token' or 'disabled', got {mode!r}")
    return mode == "token"


def current_token() -> str | None:
    return _token


def set_token(token: str | None) -> None:
    global _token
    if token is not None:
        _check_token(token)
    _token = token


def _check_token(token: str) -> None:
    if not 16 <= len(token) <= 512 or not token.isprintable() or " " in token:
        raise ValueError("an auth token must be 16 to 512 printable characters "
                         "without spaces")


def token_file(gcs_address: str, create: bool = False) -> str:
    return os.path.join(paths.cluster_auth_dir(gcs_address, create=create),
                        TOKEN_FILE_NAME)


def create_cluster_token(gcs_address: str) -> str | None:
    """A new cluster's token: made, stored 0600 for this user's other
    processes, and used by this one. None when auth is disabled."""
    if not enabled():
        set_token(None)
        return None
    token = os.environ.get(ENV_TOKEN) or _read_env_file() or secrets.token_urlsafe(32)
    _check_token(token)
    paths.write_private_file(token_file(gcs_address, create=True), token)
    set_token(token)
    return token


def load_for_cluster(gcs_address: str) -> str | None:
    """The token to reach the cluster at ``gcs_address``: from the
    environment, a token file named there, or the file its head wrote on
    this machine. Sets it for this process; None if auth is disabled or no
    token is found (then the cluster, if there is one, refuses us: see
    ``refused``)."""
    if not enabled():
        set_token(None)
        return None
    token = os.environ.get(ENV_TOKEN) or _read_env_file()
    if not token:
        try:
            data = paths.read_private_file(token_file(gcs_address), secret=True)
        except paths.UnsafePathError as exc:
            raise AuthTokenError(f"refusing the cluster's token file: {exc}") from None
        except OSError:
            data = None
        token = data.decode().strip() if data else None
    set_token(token or None)
    return token or None


def refused(gcs_address: str, who: str = "this process") -> AuthTokenError:
    """The error for a cluster that answered UNAUTHENTICATED (never naming
    the token itself)."""
    if _token is None:
        problem = f"{who} has no authentication token for it"
    else:
        problem = f"it refused the auth token {who} presented"
    return AuthTokenError(
        f"The miniray cluster at {gcs_address} requires token authentication and "
        f"{problem}. On the head's machine the token is found automatically (same "
        f"user); elsewhere set {ENV_TOKEN} or {ENV_TOKEN_FILE} (miniray start "
        f"--auth-token-file) to the cluster's token, or run every node with "
        f"{ENV_MODE}=disabled on a trusted network.")


def load_from_env() -> None:
    """For the daemons and workers a node starts: the token they were given."""
    if enabled():
        token = os.environ.get(ENV_TOKEN) or _read_env_file()
        if not token:
            raise AuthTokenError(f"{ENV_TOKEN} is not set for this miniray process")
        set_token(token)
    else:
        set_token(None)


def _read_env_file() -> str | None:
    path = os.environ.get(ENV_TOKEN_FILE)
    if not path:
        return None
    data = paths.read_private_file(os.path.expanduser(path), secret=True)
    if data is None:
        raise AuthTokenError(f"{ENV_TOKEN_FILE} names a missing file: {path}")
    return data.decode().strip() or None


def child_env(base: dict | None = None) -> dict:
    """The environment for a process this one starts: it inherits the token."""
    env = dict(os.environ if base is None else base)
    if _token is not None:
        env[ENV_TOKEN] = _token
    env.pop(ENV_TOKEN_FILE, None)
    return env


def call_metadata() -> tuple | None:
    return None if _token is None else ((METADATA_KEY, _PREFIX + _token),)


# --- the server side --------------------------------------------------------------
class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Answers UNAUTHENTICATED, before the handler or its deserializer
    runs, to any call without this cluster's token."""

    MAX_LOGGED_PEERS = 1024

    def __init__(self, token: str):
        self._expected = (_PREFIX + token).encode()
        self._logged: set[str] = set()

    async def intercept_service(self, continuation, details):
        for key, value in details.invocation_metadata or ():
            if key == METADATA_KEY:
                presented = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(presented, self._expected):
                    return await continuation(details)
                break
        handler = await continuation(details)
        if handler is None:
            return None             # unknown method: gRPC answers UNIMPLEMENTED
        return self._denied(handler, details.method)

    def _denied(self, handler, method: str):
        async def deny(request, context):
            peer = context.peer()
            if peer not in self._logged and len(self._logged) < self.MAX_LOGGED_PEERS:
                self._logged.add(peer)
                log.warning("refused an RPC without a valid auth token from %s (%s)",
                            peer, method)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or invalid miniray auth token")

        # Same call shape as the real method, but the raw request: nothing of
        # it is parsed for an unauthenticated caller.
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


def server_interceptors() -> list:
    return [] if _token is None else [AuthInterceptor(_token)]


# --- TLS -----------------------------------------------------------------------------
def tls_enabled() -> bool:
    return os.environ.get(ENV_USE_TLS, "").strip().lower() in ("1", "true", "yes")


_tls_cache: dict[tuple, tuple] = {}


def _tls_files() -> tuple[bytes, bytes, bytes]:
    names = (ENV_TLS_CERT, ENV_TLS_KEY, ENV_TLS_CA)
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise ValueError(f"{ENV_USE_TLS} is set but {', '.join(missing)} is not")
    key = tuple(os.environ[n] for n in names)
    if key not in _tls_cache:
        out = []
        for path in key:
            with open(path, "rb") as f:
                out.append(f.read())
        _tls_cache[key] = tuple(out)
    return _tls_cache[key]


def server_credentials():
    """Mutual TLS for a server (None without TLS)."""
    if not tls_enabled():
        return None
    cert, key, ca = _tls_files()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=True)


def channel_credentials():
    """Mutual TLS for a channel (None without TLS)."""
    if not tls_enabled():
        return None
    cert, key, ca = _tls_files()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


def server_ssl_context():
    """The ssl module's mutual TLS for a plain socket server (the object
    data plane), with the same files (None without TLS)."""
    if not tls_enabled():
        return None
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_context(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context():
    """Mutual TLS for a plain socket client (None without TLS)."""
    if not tls_enabled():
        return None
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _load_context(context)
    return context


def _load_context(context) -> None:
    _, _, ca = _tls_files()
    context.load_verify_locations(cadata=ca.decode())
    # The ssl module reads a key pair from files only: the configured ones.
    context.load_cert_chain(os.environ[ENV_TLS_CERT], os.environ[ENV_TLS_KEY])
