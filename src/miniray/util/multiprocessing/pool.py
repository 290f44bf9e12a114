"""``Pool``: ``multiprocessing.Pool`` on miniray actors, like
``ray.util.multiprocessing.Pool``.

The pool starts ``processes`` actors. As in Ray they ask for no CPU
(``num_cpus=0``): a pool never holds CPUs that tasks, or pools nested in its
own calls, wait for; instead a pool may not have more processes than the
cluster has CPUs.

Work is split into chunks of ``chunksize`` items; one chunk is one actor call
that runs the function over its items and returns an ``(ok, value)`` pair per
item. Chunks not started yet wait in a FIFO in the pool's own process, and each
actor runs one chunk at a time: whichever actor finishes first takes the next
chunk, the way multiprocessing's workers pull from a shared task queue. A
finished call is noticed through ``ObjectRef.future()``, whose callback
starts the next chunk and hands the outcomes to the job (``results.py``).
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import traceback
import weakref
from typing import Any, Callable, Dict, Iterable, Optional

import miniray as ray
from miniray.util.multiprocessing.results import AsyncResult, IMapIterator, PoolTaskError

__all__ = ["Pool", "AsyncResult", "IMapIterator", "PoolTaskError"]

logger = logging.getLogger(__name__)

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"

# imap keeps this many chunks per pool process in the pool (running or
# waiting for an actor), so no actor waits for the caller to send more.
_IMAP_CHUNKS_PER_PROCESS = 2


class _PoolActor:
    """One pool process: runs the initializer once, then chunks of calls."""

    def __init__(self, initializer: Optional[Callable], initargs: Iterable):
        if initializer is not None:
            initializer(*initargs)

    def ping(self) -> int:
        return os.getpid()

    def run_chunk(self, func: Callable, calls: list) -> list:
        """``(True, result)`` or ``(False, error)`` for each ``(args, kwargs)``.

        An error is a RayTaskError (with the remote traceback), which the
        caller turns into an instance of the user's exception class.
        """
        outcomes = []
        for args, kwargs in calls:
            try:
                outcomes.append((True, func(*args, **kwargs)))
            except Exception as exc:       # noqa: BLE001 - handed to the caller
                name = getattr(func, "__qualname__", None) or repr(func)
                outcomes.append((False, ray.exceptions.RayTaskError(
                    name, traceback.format_exc(), exc)))
        return outcomes


class _Slot:
    """One place in the pool: its current actor (``None`` after one wore out,
    until the next chunk needs a new one) and how many chunks it ran."""

    __slots__ = ("actor", "chunks_run")

    def __init__(self, actor):
        self.actor = actor
        self.chunks_run = 0


class Pool:
    """A pool of actor processes running a function over many arguments.

    Args:
        processes: number of actors; default: the cluster's CPU count. At
            most that many.
        initializer: run as ``initializer(*initargs)`` in each actor when it
            starts.
        initargs: arguments for ``initializer``.
        maxtasksperchild: an actor that has run this many chunks is replaced
            by a new one (default: never).
        context: ignored (accepted for multiprocessing compatibility).
        ray_address: cluster to connect to if miniray is not initialized yet
            (``"auto"``, ``"host:port"`` or ``"local"``). Without it a
            cluster named by ``RAY_ADDRESS``/``MINIRAY_ADDRESS`` or started
            with ``miniray start`` is used, else a local one with
            ``processes`` CPUs is started.
        ray_remote_args: actor options for the pool's actors, e.g.
            ``{"num_cpus": 1}`` or ``{"resources": {...}}``.

    Raises:
        ValueError: ``processes`` is below 1 or above the cluster's CPUs.
    """

    def __init__(self, processes: Optional[int] = None, initializer: Optional[Callable] = None,
                 initargs: Optional[Iterable] = None, maxtasksperchild: Optional[int] = None,
                 context: Any = None, ray_address: Optional[str] = None,
                 ray_remote_args: Optional[Dict[str, Any]] = None):
        if context is not None:
            logger.warning("Pool(context=...) is ignored on miniray.")
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        processes = _connect(processes, ray_address)
        self._initializer = initializer
        self._initargs = tuple(initargs or ())
        self._maxtasksperchild = maxtasksperchild
        self._actor_class = ray.remote(num_cpus=0)(_PoolActor).options(
            **(ray_remote_args or {}))
        self._lock = threading.Lock()
        self._state = RUN
        self._backlog: collections.deque = collections.deque()   # (job, index, func, calls)
        self._idle: collections.deque = collections.deque()      # slots with no chunk
        self._running = 0                  # chunks sent to an actor, not back yet
        # imap iterators still reading their input (close() reads the rest;
        # one its caller dropped is forgotten).
        self._open_jobs: weakref.WeakSet = weakref.WeakSet()
        self._stopping: list = []          # refs of __ray_terminate__ calls
        self._drained = threading.Event()  # closed or terminated, and nothing running
        self._slots = [_Slot(self._new_actor()) for _ in range(processes)]
        try:
            ray.get([slot.actor.ping.remote() for slot in self._slots])
        except BaseException:
            for slot in self._slots:
                ray.kill(slot.actor)
            raise
        self._idle.extend(self._slots)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} state={self._state} pool_size={len(self._slots)}>"

    # -- running work -------------------------------------------------------
    def apply(self, func: Callable, args: tuple = (), kwds: Optional[dict] = None, *,
              kwargs: Optional[dict] = None) -> Any:
        """``func(*args, **kwds)`` on one of the pool's actors; waits for it.
        (``kwargs=`` is Ray's name for ``kwds``.)"""
        return self.apply_async(func, args, kwds, kwargs=kwargs).get()

    def apply_async(self, func: Callable, args: tuple = (), kwds: Optional[dict] = None,
                    callback: Optional[Callable] = None,
                    error_callback: Optional[Callable] = None, *,
                    kwargs: Optional[dict] = None) -> AsyncResult:
        """Like :meth:`apply`, without waiting: returns an AsyncResult."""
        self._check_running()
        result = AsyncResult(1, callback, error_callback, single_result=True)
        call = (tuple(args or ()), {**(kwds or {}), **(kwargs or {})})
        self._submit(result, [(0, func, [call])])
        return result

    def map(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None) -> list:
        """``[func(x) for x in iterable]``, computed on the pool's actors."""
        return self.map_async(func, iterable, chunksize).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None,
                  callback: Optional[Callable] = None,
                  error_callback: Optional[Callable] = None) -> AsyncResult:
        """Like :meth:`map`, without waiting: returns an AsyncResult."""
        return self._map_async(func, iterable, chunksize, False, callback, error_callback)

    def starmap(self, func: Callable, iterable: Iterable,
                chunksize: Optional[int] = None) -> list:
        """``[func(*args) for args in iterable]``, computed on the pool's actors."""
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable, iterable: Iterable,
                      chunksize: Optional[int] = None, callback: Optional[Callable] = None,
                      error_callback: Optional[Callable] = None) -> AsyncResult:
        """Like :meth:`starmap`, without waiting: returns an AsyncResult."""
        return self._map_async(func, iterable, chunksize, True, callback, error_callback)

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        """An iterator of ``func(x)`` for each ``x``, in order, reading
        ``iterable`` lazily (see IMapIterator)."""
        return self._imap(func, iterable, chunksize, ordered=True)

    def imap_unordered(self, func: Callable, iterable: Iterable,
                       chunksize: int = 1) -> IMapIterator:
        """Like :meth:`imap`, yielding results as they complete."""
        return self._imap(func, iterable, chunksize, ordered=False)

    # -- lifetime -----------------------------------------------------------
    def close(self) -> None:
        """Accepts no more work; the actors exit once the work sent so far is
        done."""
        with self._lock:
            if self._state != RUN:
                return
            jobs = list(self._open_jobs)
        for job in jobs:                   # multiprocessing has read them all by now
            job._submit_rest()
        with self._lock:
            if self._state == RUN:
                self._state = CLOSE
                self._stop_if_drained_locked()

    def terminate(self) -> None:
        """Stops the actors now. Work not finished fails with ActorDiedError."""
        with self._lock:
            if self._state == TERMINATE:
                return
            self._state = TERMINATE
            backlog = list(self._backlog)
            self._backlog.clear()
            actors = [slot.actor for slot in self._slots if slot.actor is not None]
            self._open_jobs.clear()
            self._stop_if_drained_locked()
        stopping = []
        for actor in actors:
            # The call fails once the kill is known, which join() waits for.
            stopping.append(actor.__ray_terminate__.remote())
            ray.kill(actor)
        with self._lock:
            self._stopping.extend(stopping)
        error = ray.exceptions.ActorDiedError(
            "The pool was terminated before this work started.")
        for job, index, _, calls in backlog:
            self._deliver(job, index, [(False, error)] * len(calls))

    def join(self) -> None:
        """Waits until the work of a closed pool is done and its actors have
        exited (after terminate: until running calls have failed).

        Raises:
            ValueError: the pool was neither closed nor terminated.
        """
        with self._lock:
            if self._state == RUN:
                raise ValueError("Pool is still running")
        self._drained.wait()
        with self._lock:
            stopping = list(self._stopping)
        if stopping:
            ray.wait(stopping, num_returns=len(stopping))

    def __enter__(self) -> "Pool":
        self._check_running()
        return self

    def __exit__(self, *exc_info) -> None:
        self.terminate()

    # -- internals ----------------------------------------------------------
    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _new_actor(self):
        return self._actor_class.remote(self._initializer, self._initargs)

    def _map_async(self, func, iterable, chunksize, star, callback, error_callback):
        self._check_running()
        items = list(iterable)
        if chunksize is None:
            chunksize = -(-len(items) // (len(self._slots) * 4)) or 1
        elif chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize}")
        calls = [(tuple(item) if star else (item,), {}) for item in items]
        chunks = [calls[start:start + chunksize] for start in range(0, len(calls), chunksize)]
        result = AsyncResult(len(chunks), callback, error_callback)
        self._submit(result, [(index, func, chunk) for index, chunk in enumerate(chunks)])
        return result

    def _imap(self, func, iterable, chunksize, ordered):
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize}")
        window = _IMAP_CHUNKS_PER_PROCESS * len(self._slots)
        job = IMapIterator(self, func, iterable, chunksize, ordered, window)
        with self._lock:
            if not job._exhausted and self._state == RUN:
                self._open_jobs.add(job)
        return job

    def _job_exhausted(self, job) -> None:
        with self._lock:
            self._open_jobs.discard(job)

    def _submit(self, job, chunks: list) -> bool:
        """Queues ``(index, func, calls)`` chunks of ``job``; False (and
        nothing queued) once the pool is terminated."""
        with self._lock:
            if self._state == TERMINATE:
                return False
            self._backlog.extend((job, *chunk) for chunk in chunks)
            started, failed = self._start_chunks_locked()
        self._after_start(started, failed)
        return True

    def _start_chunks_locked(self) -> tuple:
        """Gives waiting chunks to idle actors; returns (started, failed)."""
        started, failed = [], []
        while self._backlog and self._idle:
            slot = self._idle.popleft()
            job, index, func, calls = chunk = self._backlog.popleft()
            if slot.actor is None:
                slot.actor, slot.chunks_run = self._new_actor(), 0
            try:
                ref = slot.actor.run_chunk.remote(func, calls)
            except Exception as exc:       # noqa: BLE001 - e.g. func cannot be pickled
                self._idle.appendleft(slot)
                failed.append((job, index, [(False, exc)] * len(calls)))
                continue
            self._running += 1
            started.append((slot, chunk, ref))
        return started, failed

    def _after_start(self, started: list, failed: list) -> None:
        """Outside the lock: watch the started calls, report the failed ones."""
        for slot, chunk, ref in started:
            ref.future().add_done_callback(
                lambda future, slot=slot, chunk=chunk: self._chunk_done(slot, chunk, future))
        for job, index, outcomes in failed:
            self._deliver(job, index, outcomes)

    def _chunk_done(self, slot: _Slot, chunk: tuple, future) -> None:
        job, index, _, calls = chunk
        actor_died = False
        try:
            outcomes = future.result()
        except Exception as exc:           # noqa: BLE001 - the whole call failed
            actor_died = isinstance(exc, ray.exceptions.RayActorError)
            outcomes = [(False, exc)] * len(calls)
        with self._lock:
            slot.chunks_run += 1
            if self._state != TERMINATE:
                worn_out = (self._maxtasksperchild is not None
                            and slot.chunks_run >= self._maxtasksperchild)
                if worn_out and not actor_died:
                    self._stopping.append(slot.actor.__ray_terminate__.remote())
                if worn_out or actor_died:
                    slot.actor = None      # replaced when it gets work again
                self._idle.append(slot)
            started, failed = self._start_chunks_locked()
        self._after_start(started, failed)
        self._deliver(job, index, outcomes)
        # Only now: join() returns once every result is in.
        with self._lock:
            self._running -= 1
            self._stop_if_drained_locked()

    def _stop_if_drained_locked(self) -> None:
        """Once closed (or terminated) and idle, let the actors exit."""
        if self._state == RUN or self._running or self._backlog or self._drained.is_set():
            return
        if self._state == CLOSE:
            self._stopping.extend(slot.actor.__ray_terminate__.remote()
                                  for slot in self._slots if slot.actor is not None)
        self._drained.set()

    @staticmethod
    def _deliver(job, index: int, outcomes: list) -> None:
        job._deliver(index, [(ok, value if ok else _as_raisable(value))
                             for ok, value in outcomes])


def _as_raisable(error: BaseException) -> BaseException:
    """A task error as an instance of the user's exception class too."""
    if isinstance(error, ray.exceptions.RayTaskError):
        return error.as_instanceof_cause()
    return error


def _connect(processes: Optional[int], ray_address: Optional[str]) -> int:
    """Initializes miniray if needed; returns the number of pool processes."""
    if processes is not None and (not isinstance(processes, int) or processes <= 0):
        raise ValueError("Processes in the pool must be >0.")
    if not ray.is_initialized():
        from miniray import api
        if ray_address == "local" or (ray_address is None and not (
                os.environ.get("MINIRAY_ADDRESS") or os.environ.get("RAY_ADDRESS")
                or api._running_cluster())):
            ray.init(address="local", num_cpus=processes)
        else:
            ray.init(address=ray_address)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if processes is None:
        processes = cpus
    if processes <= 0:
        raise ValueError("Processes in the pool must be >0.")
    if processes > cpus:
        raise ValueError(f"Tried to start a pool with {processes} processes on a "
                         f"cluster with only {cpus} CPUs.")
    return processes
