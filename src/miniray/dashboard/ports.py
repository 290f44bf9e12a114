"""The dashboard's listening socket, made by the process that starts the
dashboard (node.start_head) and handed to it, so the port it reports is
the port it serves."""
from __future__ import annotations

import socket


def listen(host: str, port: int, tries: int = 100, backlog: int = 64) -> socket.socket:
    """A listening socket on ``port`` or the next free port of ``host`` (as
    Ray moves its dashboard); any free port past ``tries``, or when
    ``port`` is 0. SO_REUSEADDR: a port whose old connections linger in
    TIME_WAIT is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = list(range(port, min(port + tries, 65536))) if port else []
    for candidate in candidates + [0]:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, candidate))
            sock.listen(backlog)
            return sock
        except OSError:
            sock.close()
            if candidate == 0:
                raise
    raise AssertionError("unreachable")
