"""GCS waiters: woken per key, with timeouts and cancellation (no sockets)."""
from __future__ import annotations

import asyncio

from miniray.gcs.waiters import Waiters


def test_only_the_changed_key_wakes():
    async def main():
        waiters, state = Waiters(), {"a": 0, "b": 0}
        a = asyncio.ensure_future(waiters.wait("a", lambda: state["a"] == 1, 10))
        b = asyncio.ensure_future(waiters.wait("b", lambda: state["b"] == 1, 10))
        await asyncio.sleep(0)
        state["a"] = 1
        waiters.wake("a")
        await asyncio.wait_for(a, 5)
        assert not b.done()
        waiters.wake("b")                    # woken, but not done yet: waits on
        await asyncio.sleep(0.01)
        assert not b.done()
        state["b"] = 1
        waiters.wake("b")
        await asyncio.wait_for(b, 5)
        assert waiters.keys() == []
    asyncio.run(main())


def test_timeout_and_cancellation_leave_nothing_behind():
    async def main():
        waiters = Waiters()
        await waiters.wait("k", lambda: False, 0.01)          # times out quietly
        task = asyncio.ensure_future(waiters.wait("k", lambda: False, None))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert waiters.keys() == []
        await waiters.wait("k", lambda: True, None)            # already done
    asyncio.run(asyncio.wait_for(main(), 10))
