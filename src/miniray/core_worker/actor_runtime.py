"""The actor living in a worker process: its instance, call ordering and
concurrency.

Calls arrive on the io thread numbered per caller; they are released to
execution strictly in each caller's order. Where they run depends on the
actor: a plain actor runs them one by one on the main thread; a threaded
actor (``max_concurrency`` > 1) or a concurrency group runs them on a
thread pool of that size; an async actor (any ``async def`` method) runs
them as tasks on event loops, as Ray does: one loop in its own thread per
concurrency group (the default group included), so a call that blocks one
group's loop never holds up another group; at most ``max_concurrency``
(or the group's limit) at once per group. The built-in ``_ray_system``
group always exists, so a call in it runs beside the actor's own.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import inspect
import pickle
import threading

from miniray import exceptions
from miniray.common.address import WorkerAddress
from miniray.common.ids import ActorID, TaskID
from miniray.common.process import exit_worker
from miniray.core_worker import task_context
from miniray.core_worker.executor import ReplySink
from miniray.protocol import core_worker_pb2 as cw_pb2, gcs_pb2

TERMINATE = "__ray_terminate__"
SYSTEM_GROUP = "_ray_system"


class ActorRuntime:
    def __init__(self, executor, spec):
        self.executor = executor
        self.worker = executor.worker
        options = spec.actor_options
        self.instance = None
        self.actor_id = ActorID(spec.actor_id)
        self.strategy = spec.scheduling_strategy      # its placement group, if any
        self.root_detached = task_context.root_detached_of(spec)
        # <module>.<Class>: what its calls' function descriptors start with.
        self.class_descriptor = spec.function_descriptor.rpartition(".")[0]
        self.name = options.name
        self.num_restarts = options.num_restarts
        self.class_name = options.class_name
        self.meta = pickle.loads(options.class_meta)
        self.owner = WorkerAddress.from_proto(spec.caller)
        self.is_asyncio = options.is_asyncio
        self.max_concurrency = options.max_concurrency or 1
        self.max_pending_calls = options.max_pending_calls
        self.out_of_order = options.execute_out_of_order
        self.groups = {SYSTEM_GROUP: 1, **options.concurrency_groups}
        self.should_exit = False
        self.canceled: set[TaskID] = set()
        self._expected: dict[bytes, int] = {}
        self._buffered: dict[bytes, dict[int, tuple]] = {}
        self._pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._async_tasks: dict[TaskID, asyncio.Task] = {}
        # Sync calls queued for a thread, not started: task id -> (spec, reply future)
        self._not_started: dict[TaskID, tuple] = {}
        # Async actors: concurrency group -> its event loop (own thread).
        self._loops: dict[str, asyncio.AbstractEventLoop] = {}
        self._loop_threads: set[int] = set()
        if self.is_asyncio:
            # The constructor runs with the default group's loop as the
            # thread's current loop, as in Ray (it may make asyncio objects).
            asyncio.set_event_loop(self._group_loop(""))
            # Each declared group's loop starts with the actor, as in Ray: the
            # actor's threads are there from the start, not grown by calls.
            for group in options.concurrency_groups:
                self._group_loop(group)
        self._exiting = False
        self._closing = False     # no new calls start: the actor is on its way out

    def _group_loop(self, group: str) -> asyncio.AbstractEventLoop:
        loop = self._loops.get(group)
        if loop is None:
            loop = self._loops[group] = asyncio.new_event_loop()
            started = threading.Event()

            def run():
                self._loop_threads.add(threading.get_ident())
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name=f"miniray-actor-{group or 'default'}",
                             daemon=True).start()
            started.wait()
        return loop

    def in_event_loop(self) -> bool:
        return threading.get_ident() in self._loop_threads

    # --- ordering (io thread) ------------------------------------------------------
    def submit(self, spec, sink) -> None:
        """Release ``spec`` to run once every earlier call from its caller
        has been; its reply goes to ``sink`` (executor.ReplySink)."""
        if spec.execute_out_of_order:     # no order to keep: run on arrival
            self._dispatch(spec, sink)
            return
        caller = spec.caller.worker_id
        expected = self._expected.get(caller, 0)
        seq = spec.sequence_number
        if seq > expected:
            self._buffered.setdefault(caller, {})[seq] = (spec, sink)
            return
        self._dispatch(spec, sink)
        if seq == expected:
            expected += 1
            buffered = self._buffered.get(caller)
            while buffered and expected in buffered:
                self._dispatch(*buffered.pop(expected))
                expected += 1
            self._expected[caller] = expected

    def _dispatch(self, spec, sink) -> None:
        try:
            self._start(spec, sink)
        except Exception as exc:      # noqa: BLE001 - this call's error, not the next's
            sink.fail(exc)

    def _start(self, spec, sink) -> None:
        io_loop = self.worker.loop
        if self._closing:
            sink.fail(RuntimeError("the actor is exiting"))
            return
        if spec.method_name == TERMINATE:
            self._closing = True
            self._queue_main(lambda: self._terminate(spec), sink)
            return
        group = spec.concurrency_group or self.meta.get(
            spec.method_name, {}).get("concurrency_group", "")
        limit = self.groups.get(group) if group else self.max_concurrency
        if limit is None:
            # The caller's mistake: this call fails with it (a RayTaskError
            # that is a ValueError); the actor carries on.
            known = ", ".join(sorted(g for g in self.groups if g != SYSTEM_GROUP))
            error = ValueError(f"The actor {self.class_name} has no concurrency group "
                               f"{group!r} (its groups: {known or 'none'})")

            def unknown_group():
                raise error
            self._queue_main(lambda: self.executor.run_task(spec, unknown_group), sink)
            return
        if self.is_asyncio:
            done = asyncio.run_coroutine_threadsafe(self._run_async(spec, group, limit),
                                                    self._group_loop(group))
            done.add_done_callback(lambda f: io_loop.call_soon_threadsafe(
                _copy_result, f, sink))
            return
        self._not_started[TaskID(spec.task_id)] = (spec, sink)
        if limit <= 1 and not group:
            self._queue_main(lambda: self._run_sync(spec), sink)
            return
        pool = self._pools.get(group)
        if pool is None:
            pool = self._pools[group] = concurrent.futures.ThreadPoolExecutor(
                max_workers=limit, thread_name_prefix=f"miniray-actor-{group or 'default'}")
        done = pool.submit(self._run_sync, spec)
        done.add_done_callback(lambda f: io_loop.call_soon_threadsafe(
            _copy_result, f, sink))

    def _queue_main(self, job, sink) -> None:
        self.executor._queue.put((job, sink))

    # --- running calls ---------------------------------------------------------------
    def _method(self, spec):
        name = spec.method_name
        if name == "__ray_ready__":
            return lambda: True
        if name == "__ray_call__":
            return lambda function, *args, **kwargs: function(self.instance, *args, **kwargs)
        # From the class, as Ray binds actor methods: an instance attribute
        # of the same name (self.done = False beside def done) can't shadow it.
        cls = type(self.instance)
        try:
            method = inspect.getattr_static(cls, name).__get__(self.instance, cls)
        except AttributeError:
            method = getattr(self.instance, name, None)
        if method is None:
            raise AttributeError(
                f"'{self.class_name}' object has no attribute '{spec.method_name}'")
        return method

    def _run_sync(self, spec) -> cw_pb2.PushTaskReply:
        if self._closing:      # queued behind exit_actor(): never starts
            raise RuntimeError("the actor is exiting")
        if self._not_started.pop(TaskID(spec.task_id), None) is None:
            return cw_pb2.PushTaskReply()     # cancelled while queued: answered already
        return self.executor.run_task(spec, lambda: self._method(spec))

    async def _run_async(self, spec, group: str, limit: int) -> cw_pb2.PushTaskReply:
        semaphore = self._semaphores.get(group)
        if semaphore is None:          # made on (and bound to) the group's loop
            semaphore = self._semaphores[group] = asyncio.Semaphore(limit)
        task_id = TaskID(spec.task_id)
        async with semaphore:
            if self._closing:
                raise RuntimeError("the actor is exiting")
            self._async_tasks[task_id] = asyncio.current_task()
            try:
                return await self.executor.run_task_async(spec, self._method(spec))
            finally:
                self._async_tasks.pop(task_id, None)

    def cancel(self, task_id: TaskID) -> bool:
        """Io thread. A call still queued here never starts and fails at
        once; a running one sees is_canceled() (async ones are cancelled)."""
        queued = self._not_started.pop(task_id, None)
        if queued is not None:
            spec, sink = queued
            reply = cw_pb2.PushTaskReply()
            self.executor._store_error(reply, self.executor.return_ids(spec),
                                       WorkerAddress.from_proto(spec.caller),
                                       exceptions.TaskCancelledError(task_id.hex()))
            sink.set(reply)
            return True
        self.canceled.add(task_id)
        task = self._async_tasks.get(task_id)
        if task is not None:
            task.get_loop().call_soon_threadsafe(task.cancel)
        return True

    # --- exiting ---------------------------------------------------------------------
    def exit_requested(self, exc: BaseException) -> bool:
        return self.should_exit and isinstance(
            exc, (SystemExit, exceptions.AsyncioActorExit))

    def exit_after_reply(self, reply, return_ids, caller) -> None:
        """exit_actor() ran: the caller sees the actor's death, then we exit."""
        error = exceptions.ActorDiedError(
            "The actor exited intentionally: exit_actor() was called.")
        self.executor._store_error(reply, return_ids, caller, error)
        reply.actor_exiting = True
        self._closing = True
        self.worker.loop.call_soon_threadsafe(self.worker.spawn, self.exit_process())

    def _terminate(self, spec) -> cw_pb2.PushTaskReply:
        reply = cw_pb2.PushTaskReply()
        self.executor._store_values(reply, self.executor.return_ids(spec),
                                    WorkerAddress.from_proto(spec.caller), [None])
        reply.actor_exiting = True
        self.worker.loop.call_soon_threadsafe(self.worker.spawn, self.exit_process())
        return reply

    def request_exit(self) -> None:
        """ExitWorker(force=False): exit after the calls queued so far (io thread)."""
        self._closing = True
        self._queue_main(lambda: self._graceful_exit(), ReplySink(lambda *_: None))

    def _graceful_exit(self) -> cw_pb2.PushTaskReply:
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self.worker.loop.call_soon_threadsafe(self.worker.spawn, self.exit_process())
        return cw_pb2.PushTaskReply()

    async def exit_process(self) -> None:
        """Tell the GCS this exit is intended, let replies go out, then exit."""
        if self._exiting:
            return
        self._exiting = True
        worker = self.worker
        try:
            await worker.gcs.ActorExiting(gcs_pb2.ActorExitingRequest(
                actor_id=self.actor_id), timeout=5)
        except Exception:
            pass
        try:
            await worker._server.stop(grace=0.5)
        except Exception:
            pass
        try:
            atexit._run_exitfuncs()
        finally:
            exit_worker(0)


def _copy_result(source: concurrent.futures.Future, sink: ReplySink) -> None:
    if source.cancelled():
        sink.fail(exceptions.TaskCancelledError())
    elif source.exception() is not None:
        sink.fail(source.exception())
    else:
        sink.set(source.result())
