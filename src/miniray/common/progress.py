"""Progress bars as data: the state a bar reports, and its line of text.

A ``tqdm_ray.tqdm`` in a task or actor sends its state (never rendered
text) to the driver of its job, which draws every bar
(``core_worker/driver_output.py``). States travel in the PrintLines RPC as
lines ``MAGIC + JSON``. The line of a bar is tqdm's default layout::

    desc:  42%|████▏     | 21/50 [00:02<00:03,  9.80it/s]
    desc: 21it [00:02,  9.80it/s]                  (no total)
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

__all__ = [
    "MAGIC",
    "BarState",
    "decode_state",
    "encode_states",
    "format_bar",
    "format_interval",
    "format_sizeof",
]

# Starts a line of PrintLines text that carries bar states, not output.
MAGIC = "__miniray_tqdm_magic_token__"

PLAIN_BAR_WIDTH = 10                  # the bar's width when there is no terminal
_UNICODE_STEPS = " ▏▎▍▌▋▊▉█"
_ASCII_STEPS = " 123456789#"


@dataclass(frozen=True)
class BarState:
    """One bar at one moment, as its process reports it."""
    uuid: str
    desc: str = ""
    n: float = 0
    total: float | None = None
    unit: str = "it"
    unit_scale: bool | float = False
    initial: float = 0              # n at the start: rate = (n - initial) / elapsed
    postfix: str = ""
    pos: int = 0                    # tqdm's position: the row within its process
    elapsed: float = 0.0            # seconds since the bar started, on its process
    closed: bool = False
    leave: bool = True              # keep the final line once closed
    seq: int = 0                    # newer states of a bar have larger numbers
    pid: int = 0
    ip: str = ""
    task: str = ""                  # the task's name or actor's class, for the prefix

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


_FIELDS = {f.name for f in fields(BarState)}


def encode_states(states) -> str:
    """PrintLines text carrying ``states``: one line each."""
    return "".join(f"{MAGIC}{state.to_json()}\n" for state in states)


def decode_state(line: str) -> BarState | None:
    """The state in one line of ``encode_states``; None if it is not one.
    Unknown keys are ignored (a newer sender)."""
    if not line.startswith(MAGIC):
        return None
    try:
        raw = json.loads(line[len(MAGIC):])
    except ValueError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("uuid"), str):
        return None
    try:
        return BarState(**{k: v for k, v in raw.items() if k in _FIELDS})
    except TypeError:
        return None


# --- formatting -------------------------------------------------------------------
def format_interval(seconds: float) -> str:
    """[H:]MM:SS, as tqdm shows times."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_sizeof(num: float, suffix: str = "", divisor: float = 1000) -> str:
    """3 significant digits and an SI prefix, as tqdm's ``unit_scale``."""
    for prefix in ("", "k", "M", "G", "T", "P", "E", "Z"):
        if abs(num) < 999.5:
            if abs(num) < 99.95:
                if abs(num) < 9.995:
                    return f"{num:1.2f}{prefix}{suffix}"
                return f"{num:2.1f}{prefix}{suffix}"
            return f"{num:3.0f}{prefix}{suffix}"
        num /= divisor
    return f"{num:3.1f}Y{suffix}"


def _number(value: float, scale: bool | float) -> str:
    if scale:
        factor = 1 if scale is True else float(scale)
        return format_sizeof(value * factor)
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}"


def _rate(state: BarState) -> float | None:
    done = state.n - state.initial
    if state.elapsed <= 0 or done <= 0:
        return None
    return done / state.elapsed


def _rate_text(state: BarState, rate: float | None) -> str:
    unit = state.unit
    if rate is None:
        return f"?{unit}/s"
    if state.unit_scale:
        factor = 1 if state.unit_scale is True else float(state.unit_scale)
        return f"{format_sizeof(rate * factor)}{unit}/s"
    if rate < 1:
        return f"{1 / rate:5.2f}s/{unit}"
    return f"{rate:5.2f}{unit}/s"


def _bar(fraction: float, width: int, unicode: bool) -> str:
    steps = _UNICODE_STEPS if unicode else _ASCII_STEPS
    levels = len(steps) - 1
    filled, partial = divmod(int(fraction * width * levels), levels)
    text = steps[-1] * filled
    if filled < width:
        text += steps[partial]
    return text.ljust(width)


def format_bar(state: BarState, width: int | None = None, *, prefix: str = "",
               unicode: bool = True) -> str:
    """The bar's line: at most ``width`` characters, the bar filling what the
    text leaves; without a width (no terminal), a bar of 10."""
    desc = prefix + state.desc
    left = f"{desc}: " if desc else ""
    rate = _rate(state)
    elapsed = format_interval(state.elapsed)
    postfix = f", {state.postfix}" if state.postfix else ""
    n_text = _number(state.n, state.unit_scale)
    total = state.total
    if not total or total <= 0 or math.isinf(total) or math.isnan(total):
        line = f"{left}{n_text}{state.unit} [{elapsed}, {_rate_text(state, rate)}{postfix}]"
        return line if width is None else line[:width]
    fraction = min(max(state.n / total, 0.0), 1.0)
    if rate and state.n < total:
        remaining = format_interval((total - state.n) / rate)
    else:
        remaining = "00:00" if state.n >= total else "?"
    head = f"{left}{fraction * 100:3.0f}%|"
    tail = (f"| {n_text}/{_number(total, state.unit_scale)} "
            f"[{elapsed}<{remaining}, {_rate_text(state, rate)}{postfix}]")
    if width is None:
        return head + _bar(fraction, PLAIN_BAR_WIDTH, unicode) + tail
    room = width - len(head) - len(tail)
    if room < 1:
        return (head + tail)[:width]
    return head + _bar(fraction, room, unicode) + tail
