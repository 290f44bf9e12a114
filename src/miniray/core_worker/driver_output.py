"""What the driver shows: its tasks' output and their progress bars.

Runs in the driver. Worker output reaches it two ways: the raylets it
started send their workers' lines up a pipe (``forward_process_output``,
read by a thread here), and workers on nodes of ``miniray start`` call
PrintLines on it (``handle_print_lines``). Bars (``tqdm_ray``) send their
states in PrintLines too, as ``common.progress`` lines; bars of the
driver itself hand them over directly (``apply_states``).

All of it goes through one ``BarManager`` under one lock: on a terminal
the bars stay together at the bottom, one line each, redrawn in place
with ANSI cursor moves, and output is written above them (clear the bars,
write, redraw), so the two never mix. Without a terminal, output is
written as it comes and a bar shows as a plain line now and then and
once when it closes.
"""
from __future__ import annotations

import atexit
import builtins
import codecs
import collections
import io
import os
import shutil
import sys
import threading
import time

from miniray.common import config
from miniray.common.line_pump import LinePump, LineSink
from miniray.common.progress import MAGIC, BarState, decode_state, format_bar

__all__ = [
    "BarManager",
    "OutputSource",
    "StreamTerminal",
    "apply_states",
    "finish",
    "forward_process_output",
    "handle_print_lines",
    "safe_print",
    "write_output",
]

PLAIN_INTERVAL_S = 10.0               # no terminal: a running bar's line at most this often
_CLOSED_REMEMBERED = 4096             # closed bars whose late states are ignored


def _up(lines: int) -> str:
    return f"\x1b[{lines}A" if lines > 0 else ""


def _down(lines: int) -> str:
    return f"\x1b[{lines}B" if lines > 0 else ""


CLEAR_BELOW = "\r\x1b[J"              # erase from the cursor's line to the screen's end
CLEAR_LINE_END = "\x1b[K"


class StreamTerminal:
    """The driver's sys.stdout/sys.stderr, looked up at each write (so a
    redirection is honoured). Bars are drawn on stdout."""

    def write(self, text: str, is_stderr: bool = False) -> None:
        stream = sys.stderr if is_stderr else sys.stdout
        if stream is None:
            return
        try:
            stream.write(text)
            stream.flush()
        except (ValueError, OSError):   # closed (a test's capture gone): the real one
            fallback = sys.__stderr__ if is_stderr else sys.__stdout__
            if fallback is not None and fallback is not stream:
                try:
                    fallback.write(text)
                    fallback.flush()
                except (ValueError, OSError):
                    pass

    def is_tty(self) -> bool:
        stream = sys.stdout
        try:
            return bool(stream is not None and stream.isatty()) and \
                os.environ.get("TERM") != "dumb"
        except (ValueError, AttributeError):
            return False

    def columns(self) -> int:
        return shutil.get_terminal_size((80, 24)).columns

    def lines(self) -> int:
        return shutil.get_terminal_size((80, 24)).lines

    def unicode(self) -> bool:
        encoding = getattr(sys.stdout, "encoding", None) or ""
        return encoding.lower().replace("-", "").startswith("utf")


class _Row:
    __slots__ = ("arrival", "group", "plain_at", "state")

    def __init__(self, state: BarState, group: int, arrival: int, plain_at: float):
        self.state = state
        self.group = group
        self.arrival = arrival
        self.plain_at = plain_at          # no terminal: when its line was last shown


class BarManager:
    """Every bar of the job, drawn on ``terminal``; call under one lock.

    On a terminal the bars are the last lines of the screen and the cursor
    rests at the start of the first one: a changed bar is rewritten in place
    (down k, the line, up k), a bar added or gone redraws the block, and
    output clears the block, is written, and the block is drawn below it.
    Bars are ordered by process (in the order they were first seen), then
    by tqdm's ``position``, then by age.
    """

    def __init__(self, terminal, *, pid: int | None = None, ip: str | None = None,
                 clock=time.monotonic, plain_interval: float = PLAIN_INTERVAL_S):
        self.terminal = terminal
        self.pid = os.getpid() if pid is None else pid
        self.ip = config.NODE_IP if ip is None else ip
        self._clock = clock
        self._plain_interval = plain_interval
        self._rows: dict[str, _Row] = {}
        self._groups: dict[tuple, int] = {}         # (ip, pid) -> order first seen
        self._next_group = 0
        self._next_arrival = 0
        self._closed: collections.OrderedDict = collections.OrderedDict()
        self._drawn: list[str] = []                 # the lines on screen, top first
        self._order: list[str] = []                 # their bars' uuids
        self._done = False                          # the driver is exiting

    # --- what comes in --------------------------------------------------------------
    def apply(self, state: BarState) -> None:
        """A bar's new state: newer than the last one seen, or ignored."""
        if self._done or state.uuid in self._closed:
            return
        row = self._rows.get(state.uuid)
        if row is not None and state.seq <= row.state.seq:
            return
        tty = self.terminal.is_tty()
        if state.closed:
            self._closed[state.uuid] = None
            while len(self._closed) > _CLOSED_REMEMBERED:
                self._closed.popitem(last=False)
            if row is not None:
                self._remove(row)
            if state.leave:
                if tty:
                    self._write_above(self._line(state, self._width()) + "\n", False)
                else:
                    self.terminal.write(self._line(state, None) + "\n")
            elif tty:
                self._render()
            return
        if row is None:
            key = (state.ip, state.pid)
            if key not in self._groups:
                self._groups[key] = self._next_group
                self._next_group += 1
            row = self._rows[state.uuid] = _Row(state, self._groups[key],
                                                self._next_arrival, self._clock())
            self._next_arrival += 1
            if tty:
                self._render()
            return
        row.state = state
        if tty:
            self._render_one(row)
        elif self._clock() - row.plain_at >= self._plain_interval:
            row.plain_at = self._clock()
            self.terminal.write(self._line(state, None) + "\n")

    def write(self, text: str, is_stderr: bool = False) -> None:
        """Output (a task's lines, the driver's prints): above the bars."""
        if not text:
            return
        if self._drawn:
            self._write_above(text if text.endswith("\n") else text + "\n", is_stderr)
        else:
            self.terminal.write(text, is_stderr)

    def finish(self, exiting: bool = False) -> None:
        """Each bar still open is left as its last line and forgotten; the
        cursor ends below them. ``exiting``: later states are ignored."""
        self._done = self._done or exiting
        rows = self._ordered()
        if not rows:
            return
        width = self._width() if self.terminal.is_tty() else None
        text = "".join(self._line(row.state, width) + "\n" for row in rows)
        if self._drawn:
            self.terminal.write(CLEAR_BELOW + text)
            self._drawn, self._order = [], []
        else:
            self.terminal.write(text)
        self._rows.clear()
        self._groups.clear()

    @property
    def bars(self) -> list[BarState]:
        """The open bars, in the order they are drawn."""
        return [row.state for row in self._ordered()]

    # --- drawing ------------------------------------------------------------------
    def _remove(self, row: _Row) -> None:
        del self._rows[row.state.uuid]
        key = (row.state.ip, row.state.pid)
        if not any((r.state.ip, r.state.pid) == key for r in self._rows.values()):
            self._groups.pop(key, None)

    def _ordered(self) -> list[_Row]:
        return sorted(self._rows.values(),
                      key=lambda r: (r.group, r.state.pos, r.arrival))

    def _prefix(self, state: BarState) -> str:
        if state.pid == self.pid and state.ip == self.ip:
            return ""
        name = f"{state.task} " if state.task else ""
        where = f", ip={state.ip}" if state.ip and state.ip != self.ip else ""
        return f"({name}pid={state.pid}{where}) "

    def _width(self) -> int:
        return max(self.terminal.columns() - 1, 10)   # never the last column: no wrap

    def _line(self, state: BarState, width: int | None) -> str:
        return format_bar(state, width, prefix=self._prefix(state),
                          unicode=self.terminal.unicode())

    def _layout(self) -> tuple[list[str], list[str]]:
        """The bars' uuids and lines to draw: as many as fit the screen
        (cursor moves cannot leave it), then a line saying how many more."""
        width = self._width()
        rows = self._ordered()
        room = max(self.terminal.lines() - 2, 1)
        hidden = len(rows) - room + 1 if len(rows) > room else 0
        if hidden:
            rows = rows[:room - 1]
        order = [r.state.uuid for r in rows]
        lines = [self._line(r.state, width) for r in rows]
        if hidden:
            order.append("")
            lines.append(f"... and {hidden} more bar{'s' if hidden > 1 else ''}"[:width])
        return order, lines

    def _render_one(self, row: _Row) -> None:
        """Rewrite one bar's line in place: down k, the line, back up k."""
        try:
            k = self._order.index(row.state.uuid)
        except ValueError:
            if not self._order or self._order[-1] != "":
                self._render()            # not drawn yet; else: one of the hidden
            return
        line = self._line(row.state, self._width())
        if line != self._drawn[k]:
            self.terminal.write(f"{_down(k)}\r{line}{CLEAR_LINE_END}\r{_up(k)}")
            self._drawn[k] = line

    def _render(self) -> None:
        """Redraw the whole block over what is on screen."""
        order, lines = self._layout()
        self.terminal.write(self._block(lines, len(self._drawn)))
        self._order, self._drawn = order, lines

    @staticmethod
    def _block(lines: list[str], shown: int) -> str:
        """Draw ``lines`` from the cursor over a block of ``shown`` lines;
        the cursor ends at the start of the first."""
        if not lines:
            return CLEAR_BELOW if shown else ""
        text = "\r" + f"{CLEAR_LINE_END}\n".join(lines) + CLEAR_LINE_END
        if len(lines) < shown:
            return text + "\n" + CLEAR_BELOW + _up(len(lines))
        return text + "\r" + _up(len(lines) - 1)

    def _write_above(self, text: str, is_stderr: bool) -> None:
        """Clear the bars, write ``text``, draw the bars below it: in one
        write when it all goes to stdout (no flicker)."""
        clear = CLEAR_BELOW if self._drawn else ""
        self._drawn, self._order = [], []
        if is_stderr:
            if clear:
                self.terminal.write(clear)
            self.terminal.write(text, True)
            clear = text = ""
        order, lines = self._layout() if self._rows else ([], [])
        if clear or text or lines:
            self.terminal.write(clear + text + self._block(lines, 0))
        self._order, self._drawn = order, lines


# --- the driver's one manager ----------------------------------------------------------
_lock = threading.RLock()
_manager: BarManager | None = None
_print = builtins.print


def _instance() -> BarManager:
    """The manager, made when the first bar shows up; as Ray does, it then
    makes ``print`` safe_print (MINIRAY_TQDM_PATCH_PRINT=0: not)."""
    global _manager
    if _manager is None:
        _manager = BarManager(StreamTerminal())
        atexit.register(finish, exiting=True)
        if os.environ.get("MINIRAY_TQDM_PATCH_PRINT", "1") != "0":
            builtins.print = safe_print
    return _manager


def apply_states(states) -> None:
    with _lock:
        manager = _instance()
        for state in states:
            manager.apply(state)


def write_output(text: str, is_stderr: bool = False) -> None:
    """Output for the driver's terminal: above the bars if there are any."""
    with _lock:
        if _manager is not None:
            _manager.write(text, is_stderr)
        else:
            StreamTerminal().write(text, is_stderr)


def handle_print_lines(text: str, is_stderr: bool = False) -> None:
    """PrintLines from a worker: bar states, or output."""
    if not text.startswith(MAGIC):
        write_output(text, is_stderr)
        return
    states, output = [], []
    for line in text.splitlines(keepends=True):
        state = decode_state(line) if line.startswith(MAGIC) else None
        if state is not None:
            states.append(state)
        else:
            output.append(line)
    if states:
        apply_states(states)
    if output:
        write_output("".join(output), is_stderr)


def finish(exiting: bool = False) -> None:
    """Leave the bars still open as their last lines (``exiting``: the
    driver is, and shows no more bars)."""
    with _lock:
        if _manager is not None:
            _manager.finish(exiting)


def safe_print(*args, **kwargs) -> None:
    """``print`` that keeps the progress bars intact: what it prints goes
    above them. Prints to other files than stdout/stderr are left alone."""
    target = kwargs.get("file")
    if target not in (None, sys.stdout, sys.stderr) or _manager is None:
        _print(*args, **kwargs)
        return
    buffer = io.StringIO()
    kwargs = dict(kwargs, file=buffer)
    kwargs.pop("flush", None)
    _print(*args, **kwargs)
    write_output(buffer.getvalue(), target is not None and target is sys.stderr)


# --- the raylets' output pipes ------------------------------------------------------------
class OutputSource:
    """The stdout and stderr pipes of one process this driver started."""

    def __init__(self, stdout_fd: int, stderr_fd: int):
        self.fds = {stdout_fd: False, stderr_fd: True}     # fd -> is_stderr
        self._open = len(self.fds)
        self._done = threading.Event()

    def _closed_one(self) -> None:
        self._open -= 1
        if self._open == 0:
            self._done.set()

    def wait_closed(self, timeout: float) -> bool:
        """Wait until the process's output has all been written (its pipes
        reached their end); False if that took longer than ``timeout``."""
        return self._done.wait(timeout)


class _SourcePipe(LineSink):
    """One pipe of an OutputSource, decoded as UTF-8, written out above the
    bars a line at a time."""
    newline = "\n"

    def __init__(self, source: OutputSource, is_stderr: bool):
        super().__init__()
        self.source = source
        self.is_stderr = is_stderr
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, data: bytes, final: bool = False) -> str:
        return self.decoder.decode(data, final=final)

    def emit(self, text: str) -> None:
        _write_safely(text, self.is_stderr)

    def closed(self) -> None:
        self.source._closed_one()


def _write_safely(text: str, is_stderr: bool) -> None:
    try:
        write_output(text, is_stderr)
    except Exception:        # noqa: BLE001 - never let the reader thread die
        pass


_forwarder: LinePump | None = None
_forwarder_lock = threading.Lock()


def forward_process_output(stdout_fd: int, stderr_fd: int) -> OutputSource:
    """Show what a child process writes to these pipes (their read ends,
    now owned here) as the driver's own output, above any bars."""
    global _forwarder
    source = OutputSource(stdout_fd, stderr_fd)
    with _forwarder_lock:
        if _forwarder is None:
            _forwarder = LinePump("miniray-driver-output")
            _forwarder.start()
        for fd, is_stderr in source.fds.items():
            _forwarder.add(fd, _SourcePipe(source, is_stderr))
    return source
