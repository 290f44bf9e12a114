"""One thread that reads many pipes and hands each pipe's output on a line
at a time: in drivers, the output of the raylets ``init()`` started
(core_worker/driver_output.py); in raylets, their workers' output
(raylet/worker_logs.py).

A pipe's ``LineSink`` gets each whole line as soon as it is complete, and
a line still without its newline once it has waited PARTIAL_LINE_FLUSH_S
(a prompt, a progress bar being redrawn), so lines of different pipes
never interleave and nothing waits for a newline that is not coming.
"""
from __future__ import annotations

import os
import selectors
import threading
import time

PARTIAL_LINE_FLUSH_S = 0.1
_BLOCK = 64 * 1024


class LineSink:
    """Where one pipe's output goes. ``newline`` is b"\\n" for bytes sinks
    and "\\n" for text ones (with ``decode`` turning the pipe's bytes into
    text); ``emit`` writes complete lines (or a partial one that waited);
    ``closed`` runs once the pipe has ended and everything is emitted."""
    newline = b"\n"

    def __init__(self):
        self.partial = self.newline[:0]       # the start of a line not ended yet
        self.since = 0.0                      # when it started waiting

    def decode(self, data: bytes, final: bool = False):
        return data

    def emit(self, text) -> None:
        raise NotImplementedError

    def closed(self) -> None:
        pass

    def feed(self, data: bytes) -> None:
        self._take(self.decode(data))

    def end(self) -> None:
        self._take(self.decode(b"", final=True))
        self.flush_partial()
        self.closed()

    def flush_partial(self) -> None:
        if self.partial:
            self.emit(self.partial)
            self.partial = self.newline[:0]

    def _take(self, text) -> None:
        end = text.rfind(self.newline)
        if end < 0:
            if text and not self.partial:
                self.since = time.monotonic()
            self.partial += text
            return
        self.emit(self.partial + text[:end + 1])
        self.partial = text[end + 1:]
        self.since = time.monotonic()


class LinePump(threading.Thread):
    """Reads the pipes given to ``add`` (their read ends, now owned here:
    closed at their end) until the process exits."""

    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._added: list[tuple[int, LineSink]] = []
        self._lock = threading.Lock()

    def add(self, read_end: int, sink: LineSink) -> None:
        with self._lock:
            self._added.append((read_end, sink))
        os.write(self._wake_w, b"x")

    def run(self) -> None:
        sinks: dict[int, LineSink] = {}
        while True:
            waiting = [s for s in sinks.values() if s.partial]
            for key, _ in self._selector.select(PARTIAL_LINE_FLUSH_S if waiting else None):
                fd = key.fd
                if fd == self._wake_r:
                    self._take_added(sinks)
                    continue
                sink = sinks[fd]
                try:
                    data = os.read(fd, _BLOCK)
                except OSError:
                    data = b""
                if data:
                    sink.feed(data)
                    continue
                self._selector.unregister(fd)          # the writer is gone
                os.close(fd)
                del sinks[fd]
                sink.end()
            now = time.monotonic()
            for sink in waiting:
                if sink.partial and now - sink.since >= PARTIAL_LINE_FLUSH_S:
                    sink.flush_partial()

    def _take_added(self, sinks: dict) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        with self._lock:
            added, self._added = self._added, []
        for fd, sink in added:
            sinks[fd] = sink
            self._selector.register(fd, selectors.EVENT_READ)
