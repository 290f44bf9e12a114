"""The worker pool's start line (Ray's maximum_startup_concurrency), without
processes: ``_spawn`` is replaced by a stand-in that records the starts."""
import asyncio

import pytest

from miniray.common.ids import WorkerID
from miniray.raylet.worker_pool import WorkerPool

pytestmark = pytest.mark.timeout(30)


class _Process:
    pid = 4242

    def __init__(self):
        self.code = None

    def poll(self):
        return self.code

    def kill(self):
        self.code = -9


class LinePool(WorkerPool):
    def __init__(self, concurrency: int, soft_limit: int = 16):
        super().__init__("127.0.0.1:1", "127.0.0.1:2", soft_limit=soft_limit,
                         startup_concurrency=concurrency)
        self.spawned: list[WorkerID] = []

    def _spawn(self, worker_id, runtime_env):
        self.spawned.append(worker_id)
        return _Process()

    def register(self, index: int) -> None:
        assert self.on_registered(self.spawned[index], 1000 + index)


async def _settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_at_most_the_concurrency_start_at_once_and_the_rest_wait_in_line():
    async def main():
        pool = LinePool(concurrency=2)
        pops = [asyncio.create_task(pool.pop(b"job")) for _ in range(5)]
        await _settle()
        assert len(pool.spawned) == 2
        assert not any(p.done() for p in pops)
        pool.register(0)                    # one slot frees: one more starts
        await _settle()
        assert len(pool.spawned) == 3
        assert pops[0].done() and pops[0].result().worker_id == pool.spawned[0]
        for i in (1, 2):
            pool.register(i)
        await _settle()
        assert len(pool.spawned) == 5
        for i in (3, 4):
            pool.register(i)
        workers = [await p for p in pops]
        assert [w.worker_id for w in workers] == pool.spawned   # first come, first served
    asyncio.run(main())


def test_a_waiting_pop_takes_a_worker_that_goes_idle_and_its_process_still_starts():
    async def main():
        pool = LinePool(concurrency=1)
        first = asyncio.create_task(pool.pop(b"job"))
        await _settle()
        pool.register(0)
        done = await first
        second = asyncio.create_task(pool.pop(b"job"))
        third = asyncio.create_task(pool.pop(b"job"))
        await _settle()
        assert len(pool.spawned) == 2           # second's process; third waits
        pool.push_idle(done)                     # a lease ended
        assert await third is done               # third took the idle worker
        assert len(pool.spawned) == 2
        pool.register(1)
        assert (await second).worker_id == pool.spawned[1]
        # The process third waited to start starts anyway, into the pool:
        # the pool grows with demand, as without the line.
        await _settle()
        assert len(pool.spawned) == 3
        pool.register(2)
        await _settle()
        assert pool.num_idle() == 1
    asyncio.run(main())


def test_a_worker_dying_while_it_starts_frees_its_slot():
    async def main():
        pool = LinePool(concurrency=1)
        first = asyncio.create_task(pool.pop(b"job"))
        second = asyncio.create_task(pool.pop(b"job"))
        await _settle()
        assert len(pool.spawned) == 1
        pool.kill(pool.workers[pool.spawned[0]])
        await _settle()
        assert len(pool.spawned) == 2            # the slot went to the next in line
        with pytest.raises(Exception, match="killed during startup"):
            await first
        pool.register(1)
        assert (await second).worker_id == pool.spawned[1]
    asyncio.run(main())


def test_an_actor_in_line_never_takes_a_worker_that_ran_tasks():
    async def main():
        pool = LinePool(concurrency=1)
        first = asyncio.create_task(pool.pop(b"job"))
        await _settle()
        pool.register(0)
        task_worker = await first
        task_worker.used = True
        actor = asyncio.create_task(pool.pop(b"job", for_actor=True))
        blocker = asyncio.create_task(pool.pop(b"job"))
        await _settle()
        pool.push_idle(task_worker)             # the blocker may take it, the actor not
        assert await blocker is task_worker
        assert not actor.done()
        pool.register(1)
        assert (await actor).worker_id == pool.spawned[1]
    asyncio.run(main())


def test_a_cancelled_pop_leaves_the_line():
    async def main():
        pool = LinePool(concurrency=1)
        first = asyncio.create_task(pool.pop(b"job"))
        gone = asyncio.create_task(pool.pop(b"job"))
        last = asyncio.create_task(pool.pop(b"job"))
        await _settle()
        gone.cancel()
        await _settle()
        pool.register(0)
        await first
        await _settle()
        assert len(pool.spawned) == 2           # for `last`, none for `gone`
        pool.register(1)
        assert (await last).worker_id == pool.spawned[1]
    asyncio.run(main())


def test_a_worker_that_never_registers_is_killed_and_frees_its_slot(monkeypatch):
    from miniray.common import config
    from miniray.raylet.worker_pool import WorkerStartFailed
    monkeypatch.setattr(config, "WORKER_REGISTER_TIMEOUT_S", 0.05)

    async def main():
        pool = LinePool(concurrency=1)
        hung = asyncio.create_task(pool.pop(b"job"))
        waiting = asyncio.create_task(pool.pop(b"job"))
        with pytest.raises(WorkerStartFailed) as failed:
            await hung
        assert not failed.value.killed      # a startup failure, not an outside kill
        assert len(pool.spawned) == 2
        assert pool.exited[-1].exit_detail.startswith("did not register")
        pool.register(1)
        assert (await waiting).worker_id == pool.spawned[1]
    asyncio.run(main())


def test_backlog_prestarts_use_free_slots_after_the_pops_in_line():
    async def main():
        pool = LinePool(concurrency=2)
        pops = [asyncio.create_task(pool.pop(b"job")) for _ in range(3)]
        await _settle()
        pool.prestart_for_backlog(4)            # 4 more wanted, nothing usable yet
        assert len(pool.spawned) == 2           # the slots are busy
        pool.register(0)
        await _settle()
        assert len(pool.spawned) == 3           # the third pop went first
        for i in (1, 2):
            pool.register(i)
        await _settle()
        assert len(pool.spawned) == 5           # then two prestarts
        for i in (3, 4):
            pool.register(i)
        await _settle()
        assert len(pool.spawned) == 7
        for i in (5, 6):
            pool.register(i)
        await _settle()
        assert len(pool.spawned) == 7           # four prestarted, no more
        assert pool.num_idle() == 4
        for p in pops:
            await p
        pool.prestart_for_backlog(3)            # idle workers cover it
        assert len(pool.spawned) == 7
    asyncio.run(main())


def test_prestarts_never_take_the_pool_past_its_soft_limit():
    async def main():
        pool = LinePool(concurrency=2, soft_limit=3)
        pool.prestart_for_backlog(10)
        await _settle()
        assert len(pool.spawned) == 2
        pool.register(0)
        pool.register(1)
        await _settle()
        assert len(pool.spawned) == 3           # the soft limit
        pool.register(2)
        await _settle()
        assert len(pool.spawned) == 3 and pool.num_idle() == 3
    asyncio.run(main())
