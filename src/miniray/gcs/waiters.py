"""Callers waiting for a change to one entry of a GCS table (an actor's
state, a placement group's placement), woken only by changes to that
entry. Runs in the GCS's event loop.

Plain futures rather than an ``asyncio.Condition`` shared by all: waking
every waiter on every change costs O(waiters) per change (O(n^2) to start
n actors), and a Condition waiter cancelled under ``wait_for`` can be left
re-acquiring its lock forever, which hung GCS shutdown.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Hashable


class Waiters:
    def __init__(self):
        self._by_key: dict[Hashable, list[asyncio.Future]] = {}

    async def wait(self, key: Hashable, done: Callable[[], bool],
                   timeout: float | None) -> None:
        """Return once ``done()`` holds (checked at each ``wake(key)``) or
        after ``timeout`` seconds (None: no limit)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not done():
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            waiter = loop.create_future()
            waiters = self._by_key.setdefault(key, [])
            waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                return
            finally:
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters and self._by_key.get(key) is waiters:
                    del self._by_key[key]

    def wake(self, key: Hashable) -> None:
        for waiter in self._by_key.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    def keys(self) -> list:
        return list(self._by_key)
