"""Workers' output files, and reading the node's logs for the state API.

Runs in the raylet. Every worker's stdout and stderr go to files of their
own in the node's logs directory (``<session>/logs``), named as Ray names
them: ``worker-<worker id>-<pid>.out`` and ``.err``, private (0600). On a
node that ``init()`` started (``tee``), the same output also goes on to the
raylet's own stdout/stderr, pipes the driver reads (it writes the lines
above its progress bars, ``core_worker/driver_output.py``): a thread of
the raylet copies each worker's pipes to its files and to those, whole
lines at a time (lines of different workers never interleave). On
nodes that ``miniray start`` started, workers write to their files
directly and forward what tasks print to the driver themselves.

``list_log_files`` and ``read_log`` serve ListLogs and ReadLog: only plain
files directly in the logs directory can be read (a name, never a path;
no symbolic link is followed).
"""
from __future__ import annotations

import errno
import fnmatch
import os
import stat
import threading

from miniray.common.line_pump import LinePump, LineSink
from miniray.common.paths import PRIVATE_FILE_MODE, ensure_private_dir
from miniray.common.validation import InvalidArgument, show

__all__ = ["WorkerLogs", "OutputFiles", "check_log_name", "list_log_files", "read_log",
           "MAX_READ_BYTES"]

MAX_READ_BYTES = 4 * 1024 * 1024       # one ReadLog reply
MAX_NAME_LENGTH = 255
_BLOCK = 64 * 1024


def _open_new(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                   | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)


class OutputFiles:
    """The stdout/stderr of one worker being started: pass ``stdout`` and
    ``stderr`` to Popen, then call ``started(pid)`` (or ``failed()``)."""

    def __init__(self, logs: "WorkerLogs", worker_hex: str):
        self._logs = logs
        self._paths = [os.path.join(logs.directory, f"worker-{worker_hex}.{suffix}")
                       for suffix in ("out", "err")]
        self._files = [_open_new(path) for path in self._paths]
        self._pipes: list[tuple[int, int]] = []
        if logs.tee:
            self._pipes = [os.pipe() for _ in self._paths]
            child = [w for _, w in self._pipes]
        else:
            child = list(self._files)
        self.stdout, self.stderr = child

    def started(self, pid: int) -> None:
        """The process runs: name its files after its pid, as Ray does."""
        final = []
        for path in self._paths:
            stem, suffix = path.rsplit(".", 1)
            target = f"{stem}-{pid}.{suffix}"
            try:
                os.rename(path, target)
            except OSError:
                target = path
            final.append(target)
        self._paths = final
        if self._pipes:
            for (read_end, write_end), file_fd, terminal in zip(
                    self._pipes, self._files, self._logs.terminals):
                os.close(write_end)
                self._logs.tee_thread().add(read_end, _WorkerStream(file_fd, terminal))
        else:
            for fd in self._files:
                os.close(fd)

    def failed(self) -> None:
        """The process did not start: remove its files."""
        for read_end, write_end in self._pipes:
            os.close(read_end)
            os.close(write_end)
        for fd, path in zip(self._files, self._paths):
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass


class WorkerLogs:
    """The node's logs directory, and where each new worker's output goes."""

    def __init__(self, directory: str, tee: bool, terminals: tuple[int, int] = (1, 2)):
        self.directory = ensure_private_dir(directory)
        self.tee = tee
        self.terminals = terminals        # where tee copies stdout and stderr
        self._tee: LinePump | None = None
        self._lock = threading.Lock()

    def open(self, worker_hex: str) -> OutputFiles:
        return OutputFiles(self, worker_hex)

    def tee_thread(self) -> LinePump:
        """The thread copying workers' pipes to their files and the terminal."""
        with self._lock:
            if self._tee is None:
                self._tee = LinePump("miniray-worker-output")
                self._tee.start()
            return self._tee


class _WorkerStream(LineSink):
    """One worker pipe: every byte to its file at once, whole lines to the
    raylet's terminal."""

    def __init__(self, file_fd: int, terminal: int):
        super().__init__()
        self.file_fd = file_fd
        self.terminal = terminal

    def feed(self, data: bytes) -> None:
        _write_all(self.file_fd, data)
        super().feed(data)

    def emit(self, text: bytes) -> None:
        _write_all(self.terminal, text)

    def closed(self) -> None:        # the worker exited
        os.close(self.file_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:         # a full disk or a closed terminal: drop it
            return
        view = view[written:]


# --- reading (ListLogs, ReadLog) ------------------------------------------------------
def check_log_name(name: str) -> str:
    """A file name directly in the logs directory: never a path."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH \
            or "/" in name or "\x00" in name or name in (".", ".."):
        raise InvalidArgument(f"not a log file name: {show(name)} (names come from "
                              f"ListLogs; paths are refused)")
    return name


def list_log_files(directory: str, glob_filter: str = "") -> list[tuple[str, int, int]]:
    """(name, size, mtime in ms) of the plain files in ``directory``."""
    found = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        if glob_filter and not fnmatch.fnmatchcase(entry.name, glob_filter):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((entry.name, st.st_size, int(st.st_mtime * 1000)))
    found.sort()
    return found


def read_log(directory: str, name: str, offset: int = 0, max_bytes: int = 0,
             tail_lines: int = 0) -> tuple[bytes, int, int]:
    """(data, where it starts, the file's size) of the log file ``name``:
    from ``offset``, or its last ``tail_lines`` lines; at most ``max_bytes``
    (and MAX_READ_BYTES). FileNotFoundError if there is no such file."""
    check_log_name(name)
    if offset < 0:
        raise InvalidArgument(f"offset must not be negative, got {offset}")
    limit = MAX_READ_BYTES if max_bytes <= 0 else min(max_bytes, MAX_READ_BYTES)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOENT, errno.EISDIR):
                raise FileNotFoundError(name) from None
            raise
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(name)
        size = st.st_size
        if tail_lines > 0:
            offset = _tail_start(fd, size, tail_lines, limit)
        offset = min(offset, size)
        return os.pread(fd, min(limit, size - offset), offset), offset, size
    finally:
        os.close(fd)


def _tail_start(fd: int, size: int, lines: int, limit: int) -> int:
    """Where the last ``lines`` lines of the file start (at most ``limit``
    bytes before its end). A last line without its newline counts."""
    floor = max(0, size - limit)
    position = size
    found = 0                            # newlines ending a line before the tail
    while position > floor:
        start = max(floor, position - _BLOCK)
        block = os.pread(fd, position - start, start)
        index = len(block)
        while True:
            index = block.rfind(b"\n", 0, index)
            if index < 0:
                break
            if start + index == size - 1:
                continue                 # the file's final newline ends the last line
            found += 1
            if found == lines:
                return start + index + 1
        position = start
    return floor
