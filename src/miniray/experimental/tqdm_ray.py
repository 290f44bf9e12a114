"""Progress bars for tasks and actors, as Ray's ``ray.experimental.tqdm_ray``.

Use ``tqdm`` instead of ``tqdm.tqdm`` inside tasks and actors (and in the
driver)::

    from miniray.experimental import tqdm_ray

    @miniray.remote
    def work(name):
        for item in tqdm_ray.tqdm(range(100), desc=name):
            ...

A bar made in a task or actor sends its state (not text) to the driver of
its job, at most every ``flush_interval_s`` (0.1 s): a tight loop of
``update(1)`` costs an addition and a test. The driver draws every bar of
the job in one place at the bottom of its terminal, and writes what tasks
print above them; without a terminal it prints a bar's line now and then
and when the bar closes. ``safe_print`` prints in the driver without
breaking the bars (``print`` becomes ``safe_print`` once bars are shown,
as in Ray; ``MINIRAY_TQDM_PATCH_PRINT=0`` leaves ``print`` alone). The
``tqdm`` package is not needed.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid as uuid_module
from collections.abc import Iterable

from miniray.common import config
from miniray.common.progress import MAGIC, BarState, encode_states
from miniray.core_worker import driver_output
from miniray.core_worker import object_ref as object_ref_module

__all__ = ["RAY_TQDM_MAGIC", "safe_print", "tqdm"]

RAY_TQDM_MAGIC = MAGIC                  # Ray's name: marks lines that carry bar states
FLUSH_INTERVAL_S = 0.1                  # a bar reports at most this often
_SEND_TIMEOUT_S = 5.0

safe_print = driver_output.safe_print


class tqdm:
    """Experimental: a tqdm-like bar, drawn by the driver of the job.

    Supports tqdm's common arguments and methods: iteration, ``update``,
    ``set_description``, ``set_postfix``, ``refresh``, ``reset``, ``close``
    and use as a context manager.
    """

    def __init__(self, iterable: Iterable | None = None, desc: str | None = None,
                 total: float | None = None, position: int | None = None, *,
                 unit: str | None = "it", unit_scale: bool | float = False, initial: float = 0,
                 leave: bool = True, disable: bool = False,
                 postfix=None, flush_interval_s: float | None = None):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except (TypeError, AttributeError):
                total = None
        self.iterable = iterable
        self.desc = desc or ""
        self.total = total
        self.pos = position or 0
        self.unit = unit or "it"
        self.unit_scale = unit_scale
        self.initial = initial
        self.n = initial
        self.leave = leave
        self.disable = disable
        self.postfix = "" if postfix is None else (
            _postfix_text(postfix) if isinstance(postfix, dict) else str(postfix))
        self._uuid = uuid_module.uuid4().hex
        self._start = time.monotonic()
        self._closed = False
        self._seq = 0
        self._lock = threading.Lock()
        self._dirty = False          # a report is scheduled; it will read n then
        self._due = 0.0              # no report before this (monotonic)
        self._reporter = _reporter() if not disable else None
        self._interval = FLUSH_INTERVAL_S if flush_interval_s is None \
            else float(flush_interval_s)
        where = _where()
        self._pid, self._ip, self._task = os.getpid(), where[0], where[1]
        if not disable:
            self._changed()          # the bar shows up at once

    # --- tqdm's API ---------------------------------------------------------------
    def __iter__(self):
        if self.iterable is None:
            raise ValueError("No iterable provided")
        try:
            for item in self.iterable:
                yield item
                self.n += 1
                if not self._dirty and not self.disable:
                    self._changed()
        finally:
            self.close()

    def __len__(self) -> int:
        if self.total is not None:
            return int(self.total)
        return len(self.iterable)

    def __enter__(self) -> tqdm:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            if not self._closed:
                self._close(wait=False)
        except Exception:        # noqa: BLE001 - interpreter shutdown
            pass

    def update(self, n: float = 1) -> None:
        """Add ``n`` to the count (reported at most every 0.1 s)."""
        self.n += n
        if not self._dirty and not self.disable:
            self._changed()

    # Every change is reported within the flush interval, never sooner:
    # ``refresh`` arguments do not bypass the rate limit (a loop calling
    # set_description each step stays cheap).
    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""
        self._changed()

    set_description_str = set_description

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        """``key=value`` pairs shown after the rate, as tqdm does."""
        self.postfix = _postfix_text(dict(ordered_dict or {}, **kwargs))
        self._changed()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)
        self._changed()

    def refresh(self) -> None:
        """Report the bar's state (within the flush interval)."""
        self._changed()

    def reset(self, total: float | None = None) -> None:
        """Start over from 0 (with a new ``total`` if given)."""
        self.n = self.initial = 0
        self._start = time.monotonic()
        if total is not None:
            self.total = total
        self._changed()

    def clear(self, *args, **kwargs) -> None:
        """tqdm's clear: nothing to do, the driver draws the bars."""

    def close(self) -> None:
        """Close the bar: the driver shows its final line (``leave``) and
        forgets it. Waits until the driver has it, outside event loops."""
        if not self._closed:
            self._close(wait=_may_wait())

    @property
    def format_dict(self) -> dict:
        return {"n": self.n, "total": self.total, "elapsed": time.monotonic() - self._start,
                "unit": self.unit, "unit_scale": self.unit_scale, "initial": self.initial,
                "prefix": self.desc, "postfix": self.postfix}

    def __repr__(self) -> str:
        return f"tqdm_ray.tqdm(desc={self.desc!r}, n={self.n}, total={self.total})"

    # --- reporting ------------------------------------------------------------------
    def _state(self) -> BarState:
        """The state to send now; the caller holds ``_lock``."""
        self._seq += 1
        return BarState(uuid=self._uuid, desc=self.desc, n=self.n, total=self.total,
                        unit=self.unit, unit_scale=self.unit_scale, initial=self.initial,
                        postfix=self.postfix, pos=self.pos,
                        elapsed=time.monotonic() - self._start, closed=self._closed,
                        leave=self.leave, seq=self._seq, pid=self._pid, ip=self._ip,
                        task=self._task)

    def _take_state(self, now: float) -> BarState | None:
        """For the reporter: the state to send if the bar is due, and the
        next report's earliest time."""
        with self._lock:
            if not self._dirty or self._closed:
                return None
            self._dirty = False
            self._due = now + self._interval
            return self._state()

    def _changed(self) -> None:
        if self.disable or self._closed or self._reporter is None:
            return
        with self._lock:
            if self._dirty or self._closed:
                return
            self._dirty = True
            due = self._due
        self._reporter.schedule(self, due)

    def _close(self, wait: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._dirty = False
            if self.disable or self._reporter is None:
                return
            state = self._state()
        self._reporter.send([state], wait)


def _postfix_text(items: dict) -> str:
    parts = []
    for key, value in items.items():
        if isinstance(value, float):
            value = f"{value:.3g}"
        parts.append(f"{key}={str(value).strip()}")
    return ", ".join(parts)


def _may_wait() -> bool:
    """Blocking is fine unless this thread runs an event loop (an async
    actor's, or the io loop's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def _where() -> tuple[str, str]:
    """(node ip, the running task's name or actor's class) of this process."""
    worker = object_ref_module.core_worker()
    if worker is None:
        return config.NODE_IP, ""
    name = worker.current_task_name or ""
    executor = getattr(worker, "executor", None)
    actor = executor.actor if executor is not None else None
    if actor is not None:
        name = actor.class_name
    return worker.ip, name


class _Reporter:
    """Sends bars' states from one process, each bar at most once per its
    interval: a bar with news waits in ``_due`` until its time, and one
    thread sends what is due (several bars in one message).

    ``deliver(states, wait)`` does the sending; ``clock`` is injectable so
    the schedule can be tested without time passing (``flush_due``).
    """

    def __init__(self, deliver, clock=time.monotonic, start_thread: bool = True):
        self._deliver = deliver
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: dict[str, tuple[float, tqdm]] = {}     # uuid -> (due, bar)
        self._thread: threading.Thread | None = None
        self._start_thread = start_thread
        self.sent_messages = 0

    def schedule(self, bar: tqdm, due: float) -> None:
        with self._cond:
            self._waiting[bar._uuid] = (due, bar)
            if self._thread is None and self._start_thread:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="miniray-tqdm-reporter")
                self._thread.start()
            self._cond.notify()

    def flush_due(self, now: float | None = None) -> float | None:
        """Send the states of the bars that are due; returns when the next
        one is (None: nothing waits)."""
        now = self._clock() if now is None else now
        with self._cond:
            due = [bar for when, bar in self._waiting.values() if when <= now]
            for bar in due:
                del self._waiting[bar._uuid]
            upcoming = min((when for when, _ in self._waiting.values()), default=None)
        states = [state for state in (bar._take_state(now) for bar in due) if state]
        if states:
            self.send(states, wait=True)
        return upcoming

    def send(self, states: list[BarState], wait: bool) -> None:
        self.sent_messages += 1
        try:
            self._deliver(states, wait)
        except Exception:        # noqa: BLE001 - the driver is gone: nothing to show
            pass

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
                first = min(when for when, _ in self._waiting.values())
                delay = first - self._clock()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
            self.flush_due()


def _deliver(states: list[BarState], wait: bool) -> None:
    """To the driver of the job: in PrintLines from a worker, directly in
    the driver (or with no cluster)."""
    worker = object_ref_module.core_worker()
    if worker is None or worker.executor is None:
        driver_output.apply_states(states)
        return
    driver = worker.job_driver
    if driver is None:
        return
    from miniray.protocol import core_worker_pb2 as cw_pb2
    request = cw_pb2.PrintLinesRequest(text=encode_states(states))

    async def send():
        await worker.worker_stub(driver).PrintLines(request, timeout=_SEND_TIMEOUT_S)

    future = asyncio.run_coroutine_threadsafe(send(), worker.loop)
    if wait:
        future.result(_SEND_TIMEOUT_S)
    else:
        future.add_done_callback(lambda f: f.cancelled() or f.exception())


_the_reporter: _Reporter | None = None
_reporter_lock = threading.Lock()


def _reporter() -> _Reporter:
    global _the_reporter
    with _reporter_lock:
        if _the_reporter is None:
            _the_reporter = _Reporter(_deliver)
        return _the_reporter
