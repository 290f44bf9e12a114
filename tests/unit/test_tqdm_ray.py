"""tqdm_ray without a cluster: bar states, their lines, the rate limit, and
what the driver's BarManager draws on a fake terminal."""
from __future__ import annotations

import os
import sys

import pytest

from miniray.common.progress import (
    MAGIC,
    BarState,
    decode_state,
    encode_states,
    format_bar,
    format_interval,
    format_sizeof,
)
from miniray.core_worker import driver_output
from miniray.core_worker.driver_output import CLEAR_BELOW, BarManager
from miniray.experimental import tqdm_ray
from miniray.testing import TerminalScreen, wait_for_condition

DRIVER_PID = 1000


class FakeTerminal:
    def __init__(self, tty: bool = True, columns: int = 61, lines: int = 24):
        self.tty = tty
        self.cols = columns
        self.rows = lines
        self.writes: list[tuple[str, bool]] = []     # since the last take()
        self.history: list[str] = []

    def write(self, text: str, is_stderr: bool = False) -> None:
        self.writes.append((text, is_stderr))
        self.history.append(text)

    def is_tty(self) -> bool:
        return self.tty

    def columns(self) -> int:
        return self.cols

    def lines(self) -> int:
        return self.rows

    def unicode(self) -> bool:
        return False

    @property
    def output(self) -> str:
        return "".join(text for text, _ in self.writes)

    def screen(self) -> list[str]:
        """The screen after everything written (empty lines at the end cut)."""
        lines = TerminalScreen().feed("".join(self.history)).lines
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def take(self) -> str:
        text = self.output
        self.writes.clear()
        return text


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(uuid="a", n=0, seq=1, **kwargs) -> BarState:
    kwargs.setdefault("desc", "work")
    kwargs.setdefault("total", 50)
    kwargs.setdefault("pid", 7)
    kwargs.setdefault("ip", "127.0.0.1")
    kwargs.setdefault("task", "f")
    return BarState(uuid=uuid, n=n, seq=seq, **kwargs)


def manager(tty=True, clock=None, **kwargs) -> tuple[BarManager, FakeTerminal]:
    terminal = FakeTerminal(tty=tty, **kwargs)
    return BarManager(terminal, pid=DRIVER_PID, ip="127.0.0.1",
                      clock=clock or FakeClock()), terminal


# --- state and its line -------------------------------------------------------------
def test_states_travel_as_magic_lines():
    states = [state("a", n=3), state("b", n=4, closed=True, postfix="loss=0.5")]
    text = encode_states(states)
    assert text.count("\n") == 2 and all(line.startswith(MAGIC)
                                         for line in text.splitlines())
    assert [decode_state(line) for line in text.splitlines()] == states


@pytest.mark.parametrize("line", ["hello", MAGIC, MAGIC + "{not json", MAGIC + "[1, 2]",
                                  MAGIC + '{"desc": "no uuid"}',
                                  "(f pid=7) " + MAGIC + '{"uuid": "a"}'])
def test_lines_that_are_not_states(line):
    assert decode_state(line) is None


def test_a_newer_sender_s_unknown_keys_are_ignored():
    parsed = decode_state(MAGIC + '{"uuid": "a", "n": 5, "colour": "green"}')
    assert parsed == BarState(uuid="a", n=5)


def test_bar_line_at_a_width():
    line = format_bar(state(n=21, elapsed=2.1), 60, unicode=False)
    assert line == "work:  42%|#######1         | 21/50 [00:02<00:02, 10.00it/s]"
    assert len(line) == 60
    wide = format_bar(state(n=21, elapsed=2.1), 80, unicode=True)
    assert len(wide) == 80 and "█" in wide and wide.endswith("| 21/50 [00:02<00:02, 10.00it/s]")


def test_bar_line_without_a_terminal_has_a_bar_of_ten():
    assert format_bar(state(n=50, elapsed=5), None, prefix="(f pid=7) ") == \
        "(f pid=7) work: 100%|██████████| 50/50 [00:05<00:00, 10.00it/s]"


def test_bar_line_too_narrow_for_the_bar_is_cut_at_the_width():
    line = format_bar(state(n=1, elapsed=1), 20)
    assert len(line) == 20 and line.startswith("work:   2%|")


def test_bar_line_without_total_units_postfix_and_slow_rates():
    assert format_bar(state(n=12, total=None, unit="img", elapsed=3, postfix="loss=0.1"),
                      None) == "work: 12img [00:03,  4.00img/s, loss=0.1]"
    assert format_bar(state(n=0, total=None, elapsed=0), None) == "work: 0it [00:00, ?it/s]"
    slow = format_bar(state(n=2, elapsed=10, total=10), None, unicode=False)
    assert slow.endswith("| 2/10 [00:10<00:40,  5.00s/it]")
    scaled = format_bar(state(n=2_500_000, total=10_000_000, unit="B", unit_scale=True,
                              elapsed=2), None, unicode=False)
    assert scaled.endswith("| 2.50M/10.0M [00:02<00:06, 1.25MB/s]")


def test_time_and_size_formats():
    assert format_interval(0) == "00:00"
    assert format_interval(75.9) == "01:15"
    assert format_interval(3 * 3600 + 62) == "3:01:02"
    assert [format_sizeof(x) for x in (5, 42.42, 999, 1234, 5_600_000)] == \
        ["5.00", "42.4", "999", "1.23k", "5.60M"]


# --- the bar and its rate limit ---------------------------------------------------------
class Sent:
    def __init__(self):
        self.messages: list[tuple[list, bool]] = []

    def __call__(self, states, wait):
        self.messages.append((list(states), wait))

    @property
    def states(self) -> list[BarState]:
        return [s for states, _ in self.messages for s in states]


@pytest.fixture
def reporter(monkeypatch):
    """The process's reporter, with a fake clock and no thread: the test
    says when time passes (flush_due)."""
    clock = FakeClock()
    sent = Sent()
    fake = tqdm_ray._Reporter(sent, clock=clock, start_thread=False)
    monkeypatch.setattr(tqdm_ray, "_the_reporter", fake)
    fake.clock, fake.sent = clock, sent
    return fake


def test_a_tight_loop_of_updates_sends_one_state_per_interval(reporter):
    scheduled = []
    real_schedule = reporter.schedule
    reporter.schedule = lambda bar, due: (scheduled.append(due), real_schedule(bar, due))
    bar = tqdm_ray.tqdm(total=10_000, desc="tight")
    assert reporter.flush_due(reporter.clock.now) is None
    assert [s.n for s in reporter.sent.states] == [0]             # shown at once
    for _ in range(10_000):
        bar.update(1)
    assert len(scheduled) == 2            # creation, then one per interval: not per update
    assert reporter.flush_due(reporter.clock.now + 0.05) == pytest.approx(
        reporter.clock.now + tqdm_ray.FLUSH_INTERVAL_S)
    assert len(reporter.sent.states) == 1                          # not due yet
    reporter.flush_due(reporter.clock.now + 0.1)
    assert [s.n for s in reporter.sent.states] == [0, 10_000]
    bar.update(5)                                                  # due 0.1 s later
    assert reporter.flush_due(reporter.clock.now + 0.15) is not None
    assert len(reporter.sent.states) == 2
    reporter.flush_due(reporter.clock.now + 0.25)
    assert [s.n for s in reporter.sent.states] == [0, 10_000, 10_005]
    assert [s.seq for s in reporter.sent.states] == [1, 2, 3]
    assert all(wait for _, wait in reporter.sent.messages)


def test_close_sends_the_final_state_at_once_and_nothing_after(reporter):
    bar = tqdm_ray.tqdm(range(3), desc="x")
    assert list(bar) == [0, 1, 2]           # the iteration closes the bar
    final = reporter.sent.states[-1]
    assert final.closed and final.n == 3 and final.total == 3 and final.desc == "x"
    assert reporter.sent.messages[-1][1] is True       # close waits for the driver
    count = len(reporter.sent.states)
    bar.update(1)
    bar.close()
    reporter.flush_due(reporter.clock.now + 10)
    assert len(reporter.sent.states) == count


def test_context_manager_description_postfix_and_reset(reporter):
    with tqdm_ray.tqdm(total=4, unit="img", position=2, leave=False) as bar:
        bar.update(2)
        bar.set_description("phase 2")
        bar.set_postfix(loss=0.12345, step=3)
        reporter.flush_due(reporter.clock.now + 1)
        latest = reporter.sent.states[-1]
        assert (latest.desc, latest.n, latest.postfix, latest.unit, latest.pos,
                latest.leave) == ("phase 2", 2, "loss=0.123, step=3", "img", 2, False)
        bar.reset(total=8)
        reporter.flush_due(reporter.clock.now + 2)
        assert (reporter.sent.states[-1].n, reporter.sent.states[-1].total) == (0, 8)
    assert reporter.sent.states[-1].closed
    assert reporter.sent.states[-1].pid == os.getpid()


def test_disabled_bars_and_bars_without_iterable(reporter):
    for _ in tqdm_ray.tqdm(range(5), disable=True):
        pass
    assert reporter.sent.states == []
    with pytest.raises(ValueError):
        list(tqdm_ray.tqdm(total=3))
    assert tqdm_ray.tqdm(iter([1, 2])).total is None


def test_the_reporter_thread_sends_what_is_due(monkeypatch):
    sent = Sent()
    monkeypatch.setattr(tqdm_ray, "_the_reporter", tqdm_ray._Reporter(sent))
    bar = tqdm_ray.tqdm(total=3)
    bar.update(2)                       # after the first state: within 0.1 s
    wait_for_condition(lambda: sent.states and sent.states[-1].n == 2, timeout=5)
    assert [s.n for s in sent.states] in ([0, 2], [2])
    assert sent.messages[-1][1] is True


# --- the driver's manager ---------------------------------------------------------------
def test_tty_bars_are_drawn_in_place_and_output_goes_above():
    bars, terminal = manager(tty=True, columns=61)
    bars.apply(state("a", n=0, seq=1))
    first = terminal.take()
    assert first == "\r" + format_bar(state("a"), 60, prefix="(f pid=7) ", unicode=False) \
        + "\x1b[K\r"                      # one line drawn, the cursor back at its start
    bars.apply(state("b", n=0, seq=1, pid=8, desc="other", total=None))
    assert terminal.take().count("\x1b[K\n") == 1         # the block is redrawn: 2 lines
    bars.apply(state("b", n=5, seq=2, pid=8, desc="other", total=None, elapsed=1))
    update = terminal.take()
    assert update.startswith("\x1b[1B\r(f pid=8) other: 5it") and \
        update.endswith("\x1b[K\r\x1b[1A")              # down 1, the line, up 1
    bars.apply(state("b", n=4, seq=1, pid=8))              # older: ignored
    assert terminal.take() == ""

    bars.write("(f pid=7) hello\n")
    assert terminal.output.startswith(CLEAR_BELOW + "(f pid=7) hello\n")
    bars.write("no newline")                           # ended so the bars start a line
    assert terminal.screen() == ["(f pid=7) hello", "no newline",
                                 bars._drawn[0], bars._drawn[1]]


def test_tty_close_leaves_the_final_line_above_the_others():
    bars, terminal = manager(tty=True)
    bars.apply(state("a", seq=1))
    bars.apply(state("b", seq=1, pid=8, desc="other"))
    bars.apply(state("c", seq=1, pid=9, desc="gone", leave=False))
    bars.apply(state("a", n=50, seq=9, closed=True, elapsed=5))
    bars.apply(state("c", seq=2, pid=9, desc="gone", leave=False, closed=True))
    bars.apply(state("a", n=20, seq=5))                    # late: the bar is closed
    screen = terminal.screen()
    assert screen[0].startswith("(f pid=7) work: 100%|") and "50/50" in screen[0]
    assert screen[1].startswith("(f pid=8) other:   0%|")
    assert len(screen) == 2 and [s.uuid for s in bars.bars] == ["b"]
    bars.apply(state("b", n=50, seq=2, pid=8, desc="other", closed=True))
    assert [line.split(":")[0] for line in terminal.screen()] == \
        ["(f pid=7) work", "(f pid=8) other"]
    assert bars._drawn == []


def test_tty_bars_are_ordered_by_process_then_position():
    bars, terminal = manager(tty=True)
    bars.apply(state("p7-second", seq=1, pos=1, desc="inner"))
    bars.apply(state("p8", seq=1, pid=8, desc="eight"))
    bars.apply(state("p7-first", seq=1, pos=0, desc="outer"))
    bars.apply(state("mine", seq=1, pid=DRIVER_PID, desc="driver"))
    assert [b.uuid for b in bars.bars] == ["p7-first", "p7-second", "p8", "mine"]
    screen = terminal.screen()
    assert [line.split(":")[0] for line in screen] == \
        ["(f pid=7) outer", "(f pid=7) inner", "(f pid=8) eight", "driver"]
    bars.apply(state("p8", seq=2, pid=8, closed=True, leave=False))
    assert [line.split(":")[0] for line in terminal.screen()] == \
        ["(f pid=7) outer", "(f pid=7) inner", "driver"]


def test_tty_bars_beyond_the_screen_s_height_are_counted_not_drawn():
    bars, terminal = manager(tty=True, lines=5)          # room for 3 lines
    for i in range(5):
        bars.apply(state(f"bar{i}", seq=1, desc=f"b{i}"))
    assert [line.split(":")[0] for line in terminal.screen()] == \
        ["(f pid=7) b0", "(f pid=7) b1", "... and 3 more bars"]
    terminal.take()
    bars.apply(state("bar4", n=9, seq=2, desc="b4"))      # hidden: nothing to draw
    assert terminal.take() == ""
    bars.apply(state("bar1", n=9, seq=2, desc="b1"))
    assert terminal.take().startswith("\x1b[1B\r(f pid=7) b1:  18%")
    for i in range(3):
        bars.apply(state(f"bar{i}", seq=3, closed=True, leave=False))
    assert [line.split(":")[0] for line in terminal.screen()] == \
        ["(f pid=7) b3", "(f pid=7) b4"]


def test_bars_of_other_nodes_say_where_they_run():
    bars, terminal = manager(tty=False)
    bars.apply(state("a", seq=1, ip="10.0.0.2", closed=True, n=50))
    assert terminal.output.startswith("(f pid=7, ip=10.0.0.2) work: 100%")


def test_finish_leaves_open_bars_and_the_cursor_below_them():
    bars, terminal = manager(tty=True)
    bars.apply(state("a", n=3, seq=1))
    bars.apply(state("b", n=4, seq=1, pid=8))
    bars.finish()
    screen = TerminalScreen().feed(terminal.output)
    assert screen.row == 2 and screen.col == 0
    assert [line[:16] for line in screen.lines[:2]] == ["(f pid=7) work: ", "(f pid=8) work: "]
    assert bars.bars == []
    terminal.take()
    bars.write("after\n")
    assert terminal.output == "after\n"


def test_without_a_terminal_bars_are_plain_lines_now_and_then():
    clock = FakeClock()
    bars, terminal = manager(tty=False, clock=clock)
    bars.apply(state("a", n=1, seq=1))
    bars.write("(f pid=7) hello\n")
    bars.apply(state("a", n=2, seq=2))
    assert terminal.output == "(f pid=7) hello\n"          # no bar yet, no escapes
    clock.now += driver_output.PLAIN_INTERVAL_S
    bars.apply(state("a", n=30, seq=3, elapsed=10))
    bars.apply(state("a", n=31, seq=4, elapsed=10))
    bars.apply(state("a", n=50, seq=5, elapsed=12, closed=True))
    lines = terminal.output.splitlines()
    assert len(lines) == 3 and "\x1b" not in terminal.output
    assert lines[1].startswith("(f pid=7) work:  60%|") and "30/50" in lines[1]
    assert lines[2].startswith("(f pid=7) work: 100%|") and "50/50" in lines[2]


def test_print_lines_split_states_from_output(monkeypatch):
    bars, terminal = manager(tty=False)
    monkeypatch.setattr(driver_output, "_manager", bars)
    driver_output.handle_print_lines("(f pid=7) plain\n")
    text = encode_states([state("a", n=50, seq=3, closed=True)])
    driver_output.handle_print_lines(text + "(f pid=7) after\n")
    lines = terminal.output.splitlines()
    assert lines[0] == "(f pid=7) plain"
    assert "50/50" in lines[1] and lines[2] == "(f pid=7) after"


def test_safe_print_goes_above_the_bars(monkeypatch):
    bars, terminal = manager(tty=True)
    monkeypatch.setattr(driver_output, "_manager", bars)
    bars.apply(state("a", n=3, seq=1))
    driver_output.safe_print("result", 42, sep="=")
    driver_output.safe_print("to stderr", file=sys.stderr)
    assert ("to stderr\n", True) in terminal.writes     # stderr: a write of its own
    assert not any("result" in text for text, err in terminal.writes if err)
    screen = terminal.screen()
    assert screen[:2] == ["result=42", "to stderr"] and screen[2].startswith("(f pid=7)")


def test_driver_bars_are_drawn_by_the_local_manager(monkeypatch):
    terminal = FakeTerminal(tty=False)
    bars = BarManager(terminal)                 # this process's: no prefix
    monkeypatch.setattr(driver_output, "_manager", bars)
    # The real delivery, with no thread: only close() sends, at once.
    monkeypatch.setattr(tqdm_ray, "_the_reporter",
                        tqdm_ray._Reporter(tqdm_ray._deliver, start_thread=False))
    for _ in tqdm_ray.tqdm(range(4), desc="local"):
        pass
    assert terminal.output.startswith("local: 100%|##########| 4/4 [00:00<00:00, ")


def test_child_output_pipes_reach_the_driver_in_whole_lines(monkeypatch):
    bars, terminal = manager(tty=False)
    monkeypatch.setattr(driver_output, "_manager", bars)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    source = driver_output.forward_process_output(out_r, err_r)
    os.write(out_w, b"(f pid=7) one\n(f pid=7) tw")
    os.write(out_w, "o é\n".encode())
    os.write(err_w, b"(f pid=7) oops\nno end")
    os.close(out_w)
    os.close(err_w)
    assert source.wait_closed(5)
    stdout = [text for text, err in terminal.writes if not err]
    stderr = [text for text, err in terminal.writes if err]
    assert "".join(stdout) == "(f pid=7) one\n(f pid=7) two é\n"
    assert all(text.endswith("\n") for text in stdout)        # whole lines only
    assert stderr == ["(f pid=7) oops\n", "no end"]          # the rest at the end
