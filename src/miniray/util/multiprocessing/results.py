"""What ``Pool``'s asynchronous calls hand back: ``AsyncResult`` (``apply_async``,
``map_async``, ``starmap_async``) and ``IMapIterator`` (``imap``,
``imap_unordered``), with ``multiprocessing.pool``'s interface, and
``PoolTaskError``, what an ``imap`` iterator yields for an item that raised.

Both are *jobs*: the pool splits a job into numbered chunks, runs each chunk
as one call on a pool actor and calls ``job._deliver(index, outcomes)`` from a
callback thread when it comes back. ``outcomes`` has one ``(ok, value)`` pair
per item of the chunk; when ``ok`` is false, ``value`` is the exception to
raise (already of the user's exception class).
"""
from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from multiprocessing import TimeoutError
from typing import Any, Callable, Iterable, Optional

from miniray import exceptions

__all__ = ["AsyncResult", "IMapIterator", "PoolTaskError"]

logger = logging.getLogger(__name__)


class PoolTaskError(Exception):
    """An item's error, as ``imap``/``imap_unordered`` yield it (as in Ray):
    ``underlying`` is what the call raised, an instance of the user's
    exception class."""

    def __init__(self, underlying: BaseException):
        super().__init__(underlying)
        self.underlying = underlying


class AsyncResult:
    """The result of ``apply_async``/``map_async``/``starmap_async``.

    It becomes ready once every chunk has come back. Then ``callback`` runs
    with the value (``map``: the list of results), or, if any call raised,
    ``error_callback`` runs with the first error in item order; both run
    before ``get`` returns, as in multiprocessing.
    """

    def __init__(self, num_chunks: int, callback: Optional[Callable] = None,
                 error_callback: Optional[Callable] = None, single_result: bool = False):
        self._chunks: list = [None] * num_chunks
        self._left = num_chunks
        self._callback = callback
        self._error_callback = error_callback
        self._single_result = single_result
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._value: Any = None
        self._error: Optional[BaseException] = None
        if num_chunks == 0:
            self._finish()

    def _deliver(self, index: int, outcomes: list) -> None:
        with self._lock:
            self._chunks[index] = outcomes
            self._left -= 1
            last = self._left == 0
        if last:
            self._finish()

    def _finish(self) -> None:
        values = []
        for ok, value in itertools.chain.from_iterable(self._chunks):
            if ok:
                values.append(value)
            elif self._error is None:
                self._error = value
        self._chunks = []
        if self._error is None:
            self._value = values[0] if self._single_result else values
        _run_callback(self._callback if self._error is None else self._error_callback,
                      self._value if self._error is None else self._error)
        self._ready.set()

    def ready(self) -> bool:
        """Whether every call has finished."""
        return self._ready.is_set()

    def wait(self, timeout: Optional[float] = None) -> None:
        """Waits until the result is ready or ``timeout`` seconds pass (no error
        on timeout)."""
        self._ready.wait(timeout)

    def get(self, timeout: Optional[float] = None) -> Any:
        """The value; raises the call's error if one raised.

        Raises:
            multiprocessing.TimeoutError: not ready within ``timeout`` seconds.
        """
        if not self._ready.wait(timeout):
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._value

    def successful(self) -> bool:
        """Whether no call raised.

        Raises:
            ValueError: the result is not ready yet.
        """
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error is None


class IMapIterator:
    """Iterator over the results of ``imap`` (item order) or ``imap_unordered``
    (completion order, chunk by chunk).

    The iterable is read lazily: a few chunks per pool process are in the
    pool at a time, and each chunk that comes back lets one more in, so a
    huge or endless iterable is never read far ahead.

    As in Ray (where multiprocessing would raise), ``next()`` *returns* the
    error of an item whose call raised, as a ``PoolTaskError`` (its
    ``underlying`` is the user's exception), and iteration goes on past it;
    when the whole call failed (its pool process died), each of its items
    gives that error (a ``RayActorError``).
    """

    def __init__(self, pool, func: Callable, iterable: Iterable, chunksize: int,
                 ordered: bool, window: int):
        self._source = iter(iterable)      # TypeError now if not iterable
        self._pool = pool
        self._func = func
        self._chunksize = chunksize
        self._ordered = ordered
        self._arrived: queue.Queue = queue.Queue()   # (index, outcomes)
        self._held: dict = {}              # ordered: index -> outcomes not due yet
        self._items: collections.deque = collections.deque()   # due (ok, value)
        self._submitted = 0
        self._received = 0
        self._next_index = 0
        self._exhausted = False
        self._source_error: Optional[BaseException] = None
        for _ in range(window):
            self._submit_next_chunk()

    # -- called by the pool -------------------------------------------------
    def _deliver(self, index: int, outcomes: list) -> None:
        self._arrived.put((index, outcomes))

    def _submit_rest(self) -> None:
        """Sends everything left in the iterable (the pool is closing)."""
        while not self._exhausted:
            self._submit_next_chunk()

    # -- iteration ----------------------------------------------------------
    def _submit_next_chunk(self) -> None:
        if self._exhausted:
            return
        try:
            items = list(itertools.islice(self._source, self._chunksize))
        except Exception as exc:           # noqa: BLE001 - raised from next() in turn
            items, self._source_error = [], exc
        if len(items) < self._chunksize:
            self._exhausted = True
            self._pool._job_exhausted(self)
        if items:
            calls = [((item,), {}) for item in items]
            if self._pool._submit(self, [(self._submitted, self._func, calls)]):
                self._submitted += 1
            else:                           # the pool was terminated
                self._exhausted = True

    def __iter__(self):
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next result.

        Raises:
            StopIteration: no results are left.
            multiprocessing.TimeoutError: none came within ``timeout`` seconds.
            Exception: reading the input iterable raised it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._items:
            if self._next_index in self._held:
                self._items.extend(self._held.pop(self._next_index))
                self._next_index += 1
                continue
            if self._received == self._submitted:
                if not self._exhausted:
                    self._submit_next_chunk()
                    continue
                if self._source_error is not None:
                    error, self._source_error = self._source_error, None
                    raise error
                raise StopIteration
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                index, outcomes = self._arrived.get(timeout=remaining)
            except queue.Empty:
                raise TimeoutError from None
            self._received += 1
            self._submit_next_chunk()
            if self._ordered:
                self._held[index] = outcomes
            else:
                self._items.extend(outcomes)
        ok, value = self._items.popleft()
        if ok or not isinstance(value, exceptions.RayTaskError):
            return value        # a whole call's failure comes as it is, as in Ray
        return PoolTaskError(value)


def _run_callback(callback: Optional[Callable], argument: Any) -> None:
    if callback is None:
        return
    try:
        callback(argument)
    except Exception:                      # noqa: BLE001 - a callback must not kill the pool
        logger.exception("Pool callback %r raised", callback)
