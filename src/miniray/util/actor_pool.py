"""``ActorPool``: spread work over a fixed set of actors (``ray.util.ActorPool``).

The pool never talks to the runtime except through the public API
(``ray.wait``, ``ray.get``, ``ray.exceptions``). The user supplies
``fn(actor, value)``, which launches one actor method call and returns its
``ObjectRef`` (or a list of them); the actor counts as busy until the pool
hands that result back through ``get_next``/``get_next_unordered``.

Bookkeeping (the private attribute names are the ones Ray uses, because some
Ray programs peek at them):

* ``_idle_actors``: actors ready for work; ``submit`` takes from the end.
* ``_future_to_actor``: in-flight result key -> (submission index, actor).
* ``_index_to_future``: submission index -> in-flight result.
* ``_next_task_index`` / ``_next_return_index``: the next index to hand out
  to a submission, and the next index ``get_next`` returns (ordered mode).
* ``_pending_submits``: ``(fn, value)`` calls waiting for a free actor, FIFO.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator, List, Optional, TypeVar

import miniray as ray

__all__ = ["ActorPool"]

V = TypeVar("V")

_TIMEOUT_MSG = "Timed out waiting for result"


def _key(future: Any) -> Any:
    """A hashable key for what ``fn`` returned (lists become tuples)."""
    return tuple(future) if isinstance(future, list) else future


def _refs(future: Any) -> list:
    """The object refs making up one result."""
    return list(future) if isinstance(future, (list, tuple)) else [future]


class ActorPool:
    """Runs ``fn(actor, value)`` calls over a fixed pool of actors.

    Args:
        actors: the actor handles the pool may use.

    Example::

        pool = ActorPool([Doubler.remote(), Doubler.remote()])
        list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3]))  # [2, 4, 6]
    """

    def __init__(self, actors: list):
        self._idle_actors = list(actors)
        self._future_to_actor: dict = {}
        self._index_to_future: dict = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list = []

    # ------------------------------------------------------------------
    # Bulk helpers
    # ------------------------------------------------------------------

    def map(self, fn: Callable[[Any, V], Any], values: List[V]) -> Iterator[Any]:
        """Submits ``fn`` over every value; returns a generator of results
        in the order of ``values``.

        Results of earlier submissions that were never collected are
        discarded first. The work is submitted right away; iterating the
        generator collects the results (and blocks on each in turn).
        """
        self._discard_outstanding()
        for value in values:
            self.submit(fn, value)

        def results():
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: Callable[[Any, V], Any],
                      values: List[V]) -> Iterator[Any]:
        """Like :meth:`map`, but yields each result as soon as it is ready."""
        self._discard_outstanding()
        for value in values:
            self.submit(fn, value)

        def results():
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    # ------------------------------------------------------------------
    # Single submissions
    # ------------------------------------------------------------------

    def submit(self, fn: Callable[[Any, V], Any], value: V) -> None:
        """Schedules ``fn(actor, value)`` on an idle actor, or queues it until
        an actor is returned to the pool. Collect the result with
        :meth:`get_next` or :meth:`get_next_unordered`."""
        self._pending_submits.append((fn, value))
        self._dispatch_pending()

    def has_next(self) -> bool:
        """Whether any submitted result has not been returned yet."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: Optional[float] = None,
                 ignore_if_timedout: bool = False) -> Any:
        """Returns the next result in submission order.

        Args:
            timeout: seconds to wait for it; ``None`` waits forever.
            ignore_if_timedout: on timeout, give up on that result for good
                (its actor goes back to the pool) before raising.

        Raises:
            StopIteration: nothing is pending.
            TimeoutError: the result was not ready within ``timeout``.
            ValueError: ordered results can no longer be produced because
                :meth:`get_next_unordered` already returned later ones.
            Exception: whatever the task raised; the actor goes back to the
                pool unless the actor itself died.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after "
                             "get_next_unordered().")
        index = self._next_return_index
        future = self._index_to_future[index]
        timed_out = False
        if timeout is not None and not self._is_ready(future, timeout):
            if not ignore_if_timedout:
                raise TimeoutError(_TIMEOUT_MSG)
            timed_out = True
        _, actor = self._forget(future)
        if timed_out:
            self._return_actor(actor)
            raise TimeoutError(f"{_TIMEOUT_MSG}. The task {future} has been "
                               f"ignored.")
        return self._collect(future, actor)

    def get_next_unordered(self, timeout: Optional[float] = None,
                           ignore_if_timedout: bool = False) -> Any:
        """Returns whichever pending result is ready first.

        Args:
            timeout: seconds to wait for one; ``None`` waits forever.
            ignore_if_timedout: on timeout, give up on the oldest pending
                result (its actor goes back to the pool) before raising.

        Raises:
            StopIteration: nothing is pending.
            TimeoutError: no result was ready within ``timeout``.
            Exception: whatever the task raised (see :meth:`get_next`).
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        future = self._first_ready(timeout)
        if future is None:
            if not ignore_if_timedout:
                raise TimeoutError(_TIMEOUT_MSG)
            oldest = min(index for index, _ in self._future_to_actor.values())
            future = self._index_to_future[oldest]
            _, actor = self._forget(future)
            self._return_actor(actor)
            raise TimeoutError(f"{_TIMEOUT_MSG}. The task {future} has been "
                               f"ignored.")
        _, actor = self._forget(future)
        return self._collect(future, actor)

    # ------------------------------------------------------------------
    # Pool membership
    # ------------------------------------------------------------------

    def has_free(self) -> bool:
        """Whether an actor is idle and no submission is waiting for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Any:
        """Removes and returns an idle actor, or ``None`` if none is free."""
        if not self.has_free():
            return None
        return self._idle_actors.pop()

    def push(self, actor: Any) -> None:
        """Adds ``actor`` to the pool as an idle actor (it immediately picks
        up a queued submission, if any).

        Raises:
            ValueError: ``actor`` is already in this pool.
        """
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)

    # ------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------

    def _dispatch_pending(self) -> None:
        """Starts queued submissions, oldest first, while actors are idle."""
        while self._pending_submits and self._idle_actors:
            fn, value = self._pending_submits.pop(0)
            actor = self._idle_actors.pop()
            try:
                future = fn(actor, value)
            except BaseException:
                # fn failed before launching anything: the actor is still free.
                self._idle_actors.append(actor)
                raise
            index = self._next_task_index
            self._next_task_index += 1
            self._future_to_actor[_key(future)] = (index, actor)
            self._index_to_future[index] = future

    def _return_actor(self, actor: Any, alive: bool = True) -> None:
        if alive:
            self._idle_actors.append(actor)
        self._dispatch_pending()

    def _forget(self, future: Any) -> tuple:
        """Drops ``future`` from the in-flight tables; returns (index, actor)."""
        index, actor = self._future_to_actor.pop(_key(future))
        del self._index_to_future[index]
        self._next_return_index = max(self._next_return_index, index + 1)
        return index, actor

    def _collect(self, future: Any, actor: Any) -> Any:
        """``ray.get`` the result, then give the actor back to the pool
        (unless the error says the actor is gone)."""
        alive = True
        try:
            return ray.get(future)
        except ray.exceptions.ActorDiedError:
            alive = False
            raise
        finally:
            self._return_actor(actor, alive=alive)

    @staticmethod
    def _is_ready(future: Any, timeout: float) -> bool:
        refs = _refs(future)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        return len(ready) == len(refs)

    def _first_ready(self, timeout: Optional[float]) -> Any:
        """The first in-flight result that is complete, waiting up to
        ``timeout`` seconds (``None``: forever); ``None`` on timeout."""
        futures = list(self._index_to_future.values())
        if all(not isinstance(f, (list, tuple)) for f in futures):
            ready, _ = ray.wait(futures, num_returns=1, timeout=timeout)
            return ready[0] if ready else None
        # Some results are lists of refs: a result is ready once all its
        # refs are. Wait for any ref, then re-check, until the deadline.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            not_ready = []
            for future in futures:
                refs = _refs(future)
                done, rest = ray.wait(refs, num_returns=len(refs), timeout=0)
                if not rest:
                    return future
                not_ready.extend(rest)
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
            ray.wait(not_ready, num_returns=1, timeout=remaining)

    def _discard_outstanding(self) -> None:
        """Gives up on every result not collected yet (``map`` starts fresh).

        Queued submissions still run, as they would have anyway, but their
        results are dropped too. Results that already finished are checked
        only for a dead actor, which then leaves the pool; their values and
        task errors are discarded.
        """
        while self._future_to_actor or (self._pending_submits
                                        and self._idle_actors):
            for future in list(self._index_to_future.values()):
                _, actor = self._forget(future)
                alive = True
                if self._is_ready(future, 0):
                    try:
                        ray.get(future)
                    except ray.exceptions.ActorDiedError:
                        alive = False
                    except Exception:
                        pass
                self._return_actor(actor, alive=alive)
