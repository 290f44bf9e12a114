"""Object bytes between raylets, straight from the source's store file into
the destination's mapping (runs in raylets' event loops).

gRPC is the control plane: a raylet that pulls an object asks the source
raylet over the (authenticated) ``OpenObjectStream`` RPC, which opens the
object's file and answers with its size, a TCP port and a random one-time
ticket. The puller then connects to that port, sends the ticket and the
byte range it wants, and the source streams the range with ``sendfile``
(no copy through Python); the puller's ``BufferedProtocol`` receives it
straight into a memory map of the new store file. One copy per side, no
intermediate bytes objects, no per-chunk RPCs.

Tickets are unguessable (32 random bytes), single-use and expire after
TICKET_TTL_S; the port accepts nothing else. With TLS on (auth.tls_enabled)
the stream is mutually authenticated TLS with the cluster's certificates,
like every RPC (sendfile then falls back to reads and writes).
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import struct
from dataclasses import dataclass

from miniray.rpc import auth

log = logging.getLogger("miniray.data_plane")

TICKET_BYTES = 32
_HEADER = struct.Struct(f">{TICKET_BYTES}sQQ")     # ticket, offset, length
TICKET_TTL_S = 60.0
HEADER_TIMEOUT_S = 10.0
STALL_TIMEOUT_S = 30.0          # a stream that sends nothing this long has failed


@dataclass
class _Ticket:
    file: object              # the object's file, open while the ticket lives
    size: int
    expiry: asyncio.TimerHandle | None = None


class ObjectStreamServer:
    """The source side: hands out tickets, serves their byte ranges."""

    def __init__(self, host: str):
        self.host = host
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._tickets: dict[bytes, _Ticket] = {}

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._serve, self.host, 0, ssl=auth.server_ssl_context(),
            limit=_HEADER.size)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def issue(self, path: str) -> tuple[bytes, int]:
        """A ticket for the file at ``path`` (opened now: an object evicted or
        spilled meanwhile stays readable), and its size."""
        file = open(path, "rb")
        size = os.fstat(file.fileno()).st_size
        ticket = secrets.token_bytes(TICKET_BYTES)
        entry = _Ticket(file, size)
        entry.expiry = asyncio.get_running_loop().call_later(
            TICKET_TTL_S, self._expire, ticket)
        self._tickets[ticket] = entry
        return ticket, size

    def _expire(self, ticket: bytes) -> None:
        entry = self._tickets.pop(ticket, None)
        if entry is not None:
            entry.file.close()

    def _take(self, ticket: bytes) -> _Ticket | None:
        entry = self._tickets.pop(ticket, None)       # single use
        if entry is not None:
            entry.expiry.cancel()
        return entry

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        entry = None
        try:
            header = await asyncio.wait_for(reader.readexactly(_HEADER.size),
                                            HEADER_TIMEOUT_S)
            ticket, offset, length = _HEADER.unpack(header)
            entry = self._take(ticket)
            if entry is None:
                log.warning("refused an object stream from %s: unknown or expired "
                            "ticket", writer.get_extra_info("peername"))
                return
            if offset + length > entry.size:
                log.warning("refused an object stream: range %d+%d past the object's "
                            "%d bytes", offset, length, entry.size)
                return
            if length:
                await asyncio.get_running_loop().sendfile(
                    writer.transport, entry.file, offset, length)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError,
                OSError) as exc:
            log.info("object stream to %s ended early: %s",
                     writer.get_extra_info("peername"), exc)
        finally:
            if entry is not None:
                entry.file.close()
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for ticket in list(self._tickets):
            self._expire(ticket)


class _Receiver(asyncio.BufferedProtocol):
    """Reads one byte range straight into ``view``."""

    def __init__(self, view: memoryview, done: asyncio.Future):
        self.view = view
        self.size = len(view)
        self.received = 0
        self.done = done
        self.transport = None
        self.last_progress = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.last_progress = asyncio.get_running_loop().time()

    def get_buffer(self, sizehint: int):
        if self.received < self.size:
            return self.view[self.received:]
        return bytearray(1)          # past the end: only an error would send more

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        self.last_progress = asyncio.get_running_loop().time()
        if self.received >= self.size:
            self._finish(None if self.received == self.size
                         else OSError("the source sent more than asked"))

    def eof_received(self):
        self._finish(None if self.received == self.size else EOFError(
            f"the source ended the stream after {self.received} of "
            f"{self.size} bytes"))
        return False

    def connection_lost(self, exc) -> None:
        self._finish(exc or (None if self.received == self.size else EOFError(
            f"the stream closed after {self.received} of {self.size} bytes")))

    def _finish(self, error) -> None:
        self.view = memoryview(b"")        # the caller may unmap its buffer now
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)
        if self.transport is not None:
            self.transport.close()


async def receive(host: str, port: int, ticket: bytes, offset: int,
                  view: memoryview) -> None:
    """Fetch ``len(view)`` bytes from ``offset`` of the ticket's object into
    ``view``; raises OSError/EOFError if the stream fails or stalls."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    context = auth.client_ssl_context()
    transport, protocol = await loop.create_connection(
        lambda: _Receiver(view, done), host, port, ssl=context,
        server_hostname=host if context is not None else None)
    try:
        transport.write(_HEADER.pack(ticket, offset, len(view)))
        while not done.done():
            try:
                await asyncio.wait_for(asyncio.shield(done), STALL_TIMEOUT_S)
            except asyncio.TimeoutError:
                if loop.time() - protocol.last_progress > STALL_TIMEOUT_S:
                    raise OSError(f"the object stream from {host}:{port} stalled "
                                  f"for {STALL_TIMEOUT_S:g} s") from None
        await done
    finally:
        transport.close()
