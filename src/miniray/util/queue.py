"""A FIFO queue shared by tasks and actors (``ray.util.queue``).

The items live in an async actor that owns an ``asyncio.Queue``; a
:class:`Queue` object only holds that actor's handle, so it pickles and can be
passed to any task or actor, all of which then see the same queue. Blocking
``put``/``get`` calls wait inside the actor (an ``await`` on the asyncio
queue), so one caller blocking does not stop others from making progress.

The actor reports "full"/"empty" as return values rather than exceptions;
the caller's side turns them into :class:`Full`/:class:`Empty`.
"""
from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from collections.abc import Iterable
from typing import Any, Dict, List, Optional

import miniray as ray

__all__ = ["Empty", "Full", "Queue"]


class Empty(_stdlib_queue.Empty):
    """Raised by a get on an empty :class:`Queue` (no wait, or timed out)."""


class Full(_stdlib_queue.Full):
    """Raised by a put on a full :class:`Queue` (no wait, or timed out)."""


def _check_timeout(timeout: Optional[float]) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


class Queue:
    """A first-in, first-out queue usable from the driver, tasks and actors.

    Args:
        maxsize: capacity; ``0`` (or less) means unbounded.
        actor_options: options for the actor holding the items, as accepted
            by ``.options(...)`` of an actor class (resources, name, ...).
    """

    def __init__(self, maxsize: int = 0,
                 actor_options: Optional[Dict] = None) -> None:
        self.maxsize = maxsize
        actor_cls = ray.remote(_QueueActor)
        if actor_options:
            actor_cls = actor_cls.options(**actor_options)
        self.actor = actor_cls.remote(self.maxsize)

    # -- size --------------------------------------------------------------

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """How many items are in the queue."""
        return ray.get(self.actor.qsize.remote())

    def qsize(self) -> int:
        """How many items are in the queue (same as :meth:`size`)."""
        return self.size()

    def empty(self) -> bool:
        """Whether the queue holds no item."""
        return ray.get(self.actor.empty.remote())

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items (never, if unbounded)."""
        return ray.get(self.actor.full.remote())

    # -- put ---------------------------------------------------------------

    def put(self, item: Any, block: bool = True,
            timeout: Optional[float] = None) -> None:
        """Appends ``item``.

        With ``block`` (the default), waits for room: forever if ``timeout``
        is ``None``, else up to ``timeout`` seconds. Without ``block``,
        ``timeout`` is ignored and a full queue fails at once.

        Raises:
            Full: no room (immediately, or after ``timeout``).
            ValueError: ``timeout`` is negative.
        """
        if not block:
            ok = ray.get(self.actor.put_nowait.remote(item))
        else:
            _check_timeout(timeout)
            ok = ray.get(self.actor.put.remote(item, timeout))
        if not ok:
            raise Full

    async def put_async(self, item: Any, block: bool = True,
                        timeout: Optional[float] = None) -> None:
        """:meth:`put` for use in asyncio code (awaits instead of blocking)."""
        if not block:
            ok = await self.actor.put_nowait.remote(item)
        else:
            _check_timeout(timeout)
            ok = await self.actor.put.remote(item, timeout)
        if not ok:
            raise Full

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        return self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable) -> None:
        """Appends all of ``items`` in order, or none of them.

        Raises:
            Full: the queue has no room for the whole batch.
            TypeError: ``items`` is not iterable.
        """
        if not isinstance(items, Iterable):
            raise TypeError("Argument 'items' must be an Iterable")
        error = ray.get(self.actor.put_nowait_batch.remote(list(items)))
        if error is not None:
            raise Full(error)

    # -- get ---------------------------------------------------------------

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Removes and returns the oldest item.

        With ``block`` (the default), waits for an item: forever if
        ``timeout`` is ``None``, else up to ``timeout`` seconds. Without
        ``block``, ``timeout`` is ignored and an empty queue fails at once.

        Raises:
            Empty: no item (immediately, or after ``timeout``).
            ValueError: ``timeout`` is negative.
        """
        if not block:
            ok, item = ray.get(self.actor.get_nowait.remote())
        else:
            _check_timeout(timeout)
            ok, item = ray.get(self.actor.get.remote(timeout))
        if not ok:
            raise Empty
        return item

    async def get_async(self, block: bool = True,
                        timeout: Optional[float] = None) -> Any:
        """:meth:`get` for use in asyncio code (awaits instead of blocking)."""
        if not block:
            ok, item = await self.actor.get_nowait.remote()
        else:
            _check_timeout(timeout)
            ok, item = await self.actor.get.remote(timeout)
        if not ok:
            raise Empty
        return item

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> List[Any]:
        """Removes and returns the ``num_items`` oldest items, or none.

        Raises:
            Empty: fewer than ``num_items`` items are queued.
            TypeError: ``num_items`` is not an int.
            ValueError: ``num_items`` is negative.
        """
        if not isinstance(num_items, int):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        ok, result = ray.get(self.actor.get_nowait_batch.remote(num_items))
        if not ok:
            raise Empty(result)
        return result

    # -- lifetime ----------------------------------------------------------

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Stops the actor holding the queue, freeing its resources.

        Args:
            force: kill the actor at once. Otherwise ask it to exit after the
                calls already sent to it, and kill it if it has not exited
                within ``grace_period_s`` seconds.
        """
        actor, self.actor = self.actor, None
        if actor is None:
            return
        if not force:
            try:
                terminate = actor.__ray_terminate__
            except AttributeError:
                terminate = None
            if terminate is not None:
                _, not_done = ray.wait([terminate.remote()],
                                       timeout=grace_period_s)
                if not not_done:
                    return
        ray.kill(actor, no_restart=True)


class _QueueActor:
    """The actor owning the items. Async, so blocked puts/gets interleave.

    Outcomes come back as values (``put*``: ``True``/``False`` or an error
    message; ``get*``: ``(ok, value)``) so that callers never depend on how
    the runtime wraps exceptions raised by actor methods.
    """

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: Optional[float] = None) -> bool:
        # Try without waiting first: asyncio.wait_for(..., 0) would give up
        # even when there is room.
        if not self.queue.full():
            self.queue.put_nowait(item)
            return True
        if timeout is not None and timeout <= 0:
            return False
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def get(self, timeout: Optional[float] = None) -> tuple:
        if not self.queue.empty():
            return True, self.queue.get_nowait()
        if timeout is not None and timeout <= 0:
            return False, None
        try:
            return True, await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return False, None

    def put_nowait(self, item: Any) -> bool:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        return True

    def put_nowait_batch(self, items: list) -> Optional[str]:
        size = self.queue.qsize()
        if self.maxsize > 0 and size + len(items) > self.maxsize:
            return (f"Cannot add {len(items)} items to queue of size {size} "
                    f"and maxsize {self.maxsize}.")
        for item in items:
            self.queue.put_nowait(item)
        return None

    def get_nowait(self) -> tuple:
        try:
            return True, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return False, None

    def get_nowait_batch(self, num_items: int) -> tuple:
        size = self.queue.qsize()
        if num_items > size:
            return False, (f"Cannot get {num_items} items from queue of size "
                           f"{size}.")
        return True, [self.queue.get_nowait() for _ in range(num_items)]
