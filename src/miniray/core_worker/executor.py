"""Executing pushed tasks in a worker process.

PushTask requests arrive on the io thread and queue here; the process's
main thread runs them one at a time (user code always runs on the main
thread, so signals and thread-local state behave as users expect), then
hands the reply back to the io thread.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import queue
import signal
import sys
import threading
import traceback

from miniray import exceptions
from miniray.common.process import exit_worker
from miniray.common import config
from miniray.common.address import WorkerAddress
from miniray.common.ids import JobID, ObjectID, TaskID, WorkerID
from miniray.common.serialization import deserialize, serialize
from miniray.core_worker import task_events
from miniray.core_worker import accelerators, proctitle, task_context
from miniray.core_worker.object_ref import ObjectRef
from miniray.protocol import common_pb2, core_worker_pb2 as cw_pb2, gcs_pb2


# Frames of code under here are the runtime's, not the user's.
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

class TaskExecutor:
    def __init__(self, worker):
        self.worker = worker
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._running: TaskID | None = None
        self._cancelled: set[TaskID] = set()
        self._job_id: JobID | None = None
        self._exit = False
        self.actor = None                 # ActorRuntime once an actor lives here
        self._calls: dict[bytes, int] = {}   # function id -> runs (for max_calls)

    # --- io thread side ------------------------------------------------------
    def push(self, spec, sink: "ReplySink") -> None:
        """Start a pushed task; its reply (or the exception that stopped it)
        goes to ``sink`` on the io thread. No asyncio task per call: a task
        stream of a busy owner passes through here thousands of times a
        second."""
        if spec.type == common_pb2.ACTOR_TASK:
            if self.actor is None or self.actor.actor_id != spec.actor_id:
                raise RuntimeError("this worker does not host the actor")
            self.actor.submit(spec, sink)
        else:
            self._queue.put((lambda: self.execute(spec), sink))

    async def push_and_wait(self, spec) -> cw_pb2.PushTaskReply:
        """push, awaiting the reply (a unary PushTask)."""
        future = asyncio.get_running_loop().create_future()

        def settle(reply, error):
            if future.done():            # the caller gave up (the RPC was cancelled)
                return
            if error is None:
                future.set_result(reply)
            else:
                future.set_exception(error)
        self.push(spec, ReplySink(settle))
        return await future

    async def cancel(self, task_id: TaskID, force: bool, recursive: bool) -> bool:
        if recursive:
            await self.worker.submitter.cancel_children(task_id, force)
        if self.actor is not None:
            return self.actor.cancel(task_id)
        if force:
            exit_worker(1)     # the owner sees the worker die: TaskCancelledError
        self._cancelled.add(task_id)
        if self._running == task_id:
            # At the main thread itself: a signal sent to the process may be
            # taken by another thread, and then a sleep in the task is not
            # interrupted (the handler would run only once it returns).
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return True

    def stop(self) -> None:
        self._exit = True
        self._queue.put(None)

    # --- main thread side ---------------------------------------------------------
    def run_forever(self) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)
        loop = self.worker.loop
        while not self._exit:
            item = self._queue.get()
            if item is None:
                break
            job, sink = item
            try:
                reply = job()
            except Exception as exc:       # noqa: BLE001 - becomes the RPC's error
                loop.call_soon_threadsafe(sink.fail, exc)
                continue
            loop.call_soon_threadsafe(sink.set, reply)

    def _on_sigint(self, signum, frame):
        if self._running is not None and self._running in self._cancelled:
            raise exceptions.TaskCancelledError(self._running.hex())

    def execute(self, spec) -> cw_pb2.PushTaskReply:
        """Run a normal task or an actor's creation task (main thread)."""
        accelerators.apply(spec)      # its GPU ids, CUDA_VISIBLE_DEVICES
        if spec.type == common_pb2.ACTOR_CREATION_TASK:
            return self.run_task(spec, lambda: self._actor_constructor(spec))
        last_call = False
        if spec.max_calls > 0:
            calls = self._calls[spec.function_id] = self._calls.get(spec.function_id, 0) + 1
            last_call = calls >= spec.max_calls
        reply = self.run_task(spec, lambda: self.worker.functions.load(spec.function_id),
                              exits_after=spec.max_calls if last_call else 0)
        if last_call:
            reply.worker_exiting = True     # the owner ends the lease with us
            # This process ends with the lease: its task events go first.
            self.worker.flush_task_events()
        return reply

    def _actor_constructor(self, spec):
        from miniray.core_worker.actor_runtime import ActorRuntime

        def construct(*args, **kwargs):
            cls = self.worker.functions.load(spec.function_id)
            runtime = ActorRuntime(self, spec)     # context for __init__ code
            self.actor = runtime
            try:
                if inspect.iscoroutinefunction(getattr(cls, "__init__", None)):
                    runtime.instance = _construct_async(runtime, cls, args, kwargs)
                else:
                    runtime.instance = cls(*args, **kwargs)
            except BaseException:
                self.actor = None
                raise
        return construct

    def run_task(self, spec, target, exits_after: int = 0) -> cw_pb2.PushTaskReply:
        """Resolve args, call ``target()(*args)`` and package the results."""
        worker = self.worker
        task_id = TaskID(spec.task_id)
        caller = WorkerAddress.from_proto(spec.caller)
        return_ids = self.return_ids(spec)
        reply = cw_pb2.PushTaskReply()
        if task_id in self._cancelled:
            self._cancelled.discard(task_id)
            self._store_error(reply, return_ids, caller,
                              exceptions.TaskCancelledError(task_id.hex()))
            return reply
        self._bind_job(JobID(spec.job_id))
        context = task_context.enter(self.context_for(spec))
        self._running = task_id
        worker.task_events.record(spec, task_events.RUNNING, worker.event_location,
                                  describe=task_events.FULL)
        proctitle.set_title(proctitle.task_title(spec.function_name))
        failure = None
        try:
            try:
                function = target()
                args, kwargs = self._resolve_args(spec)
                result = function(*args, **kwargs)
                if spec.streaming:
                    self._stream(spec, reply, caller, result)
                else:
                    self._store_returns(spec, reply, return_ids, caller, result)
            except (exceptions.TaskCancelledError, KeyboardInterrupt) as exc:
                # Raised in the task's own code (as in Ray): a RayTaskError
                # that is also a TaskCancelledError, with the task's traceback.
                # The state API shows the task FINISHED, as Ray 2.60 does:
                # it ran to its end, which was the error (the owner shows a
                # task it cancelled before it ran as FAILED, TASK_CANCELLED).
                # A KeyboardInterrupt is one too: Ray cancels with SIGINT.
                if isinstance(exc, KeyboardInterrupt):
                    exc = exceptions.TaskCancelledError(task_id.hex())
                self._store_error(reply, return_ids, caller,
                                  self.task_error(spec.function_name, exc))
            except _ArgumentError as exc:
                # A failure of the call (not retried: the argument stays
                # failed); for an actor's constructor, the actor dies of it.
                failure = ("DEPENDENCY_RESOLUTION_FAILED", str(exc.error))
                reply.is_application_error = True
                self._store_error(reply, return_ids, caller, exceptions.dependency_failed(
                    spec.function_name, exc.error))
            except BaseException as exc:     # noqa: BLE001 - user code may raise anything
                if self.actor is not None and self.actor.exit_requested(exc):
                    self.actor.exit_after_reply(reply, return_ids, caller)
                elif isinstance(exc, SystemExit) and spec.type in (
                        common_pb2.ACTOR_TASK, common_pb2.NORMAL_TASK):
                    _exit_process(exc)
                else:
                    error = self.task_error(spec.function_name, exc)
                    # As in Ray: the message is the error's whole text.
                    failure = ("TASK_EXECUTION_EXCEPTION", str(error))
                    reply.is_application_error = True
                    reply.is_retryable_error = _is_retryable(spec, exc)
                    self._store_error(reply, return_ids, caller, error)
        finally:
            self._running = None
            self._cancelled.discard(task_id)
            task_context.leave(context)
            proctitle.set_title(self._idle_title())
        self._record_outcome(spec, failure, exits_after)
        worker.flush_borrows()
        return reply

    def _record_outcome(self, spec, failure: tuple[str, str] | None,
                        exits_after: int = 0) -> None:
        """FINISHED, or FAILED with Ray's error type and the message (which,
        as in Ray, also names the worker's exit when it ran its last call)."""
        if failure is None:
            self.worker.task_events.record(spec, task_events.FINISHED)
            return
        error_type, message = failure
        if exits_after:
            message = (f"User exception:\n{message}\n\nSystem error:\n"
                       f"IntentionalSystemExit: Worker exits with an exit code 0. Exited "
                       f"because worker reached max_calls={exits_after} for this method.")
        self.worker.task_events.record(spec, task_events.FAILED, {
            "error_type": error_type, "error_message": _clip(message)})

    async def run_task_async(self, spec, method) -> cw_pb2.PushTaskReply:
        """run_task for async actors: runs on the actor's event loop."""
        worker = self.worker
        task_id = TaskID(spec.task_id)
        caller = WorkerAddress.from_proto(spec.caller)
        return_ids = self.return_ids(spec)
        reply = cw_pb2.PushTaskReply()
        context = task_context.enter(self.context_for(spec))
        worker.task_events.record(spec, task_events.RUNNING, worker.event_location,
                                  describe=task_events.FULL)
        proctitle.set_title(proctitle.task_title(spec.function_name))
        failure = None
        try:
            if task_id in self.actor.canceled:
                raise exceptions.TaskCancelledError(task_id.hex())
            if any(arg.HasField("ref") for arg in spec.args):
                args, kwargs = await asyncio.to_thread(self._resolve_args, spec)
            else:
                args, kwargs = self._resolve_args(spec)
            result = method(*args, **kwargs)
            if spec.streaming and inspect.isasyncgen(result):
                await self._stream_async(spec, reply, caller, result)
            elif spec.streaming:
                self._stream(spec, reply, caller, result)
            else:
                # An `async def` method's coroutine, never any awaitable: a
                # method returning an ObjectRef returns the ref (as in Ray).
                if inspect.iscoroutine(result):
                    result = await result
                self._store_returns(spec, reply, return_ids, caller, result)
        except asyncio.CancelledError:
            # As in Ray 2.60: the cancelled coroutine raised it, so the
            # caller gets a RayTaskError that is also a TaskCancelledError,
            # and the state API shows an execution failure.
            cancelled = exceptions.TaskCancelledError(task_id.hex())
            error = self.task_error(spec.function_name, cancelled)
            failure = ("TASK_EXECUTION_EXCEPTION", str(error))
            reply.is_application_error = True
            self._store_error(reply, return_ids, caller, error)
        except exceptions.TaskCancelledError as exc:
            failure = ("TASK_CANCELLED", str(exc))
            self._store_error(reply, return_ids, caller, exc)
        except _ArgumentError as exc:
            failure = ("DEPENDENCY_RESOLUTION_FAILED", str(exc.error))
            reply.is_application_error = True
            self._store_error(reply, return_ids, caller, exceptions.dependency_failed(
                spec.function_name, exc.error))
        except BaseException as exc:     # noqa: BLE001 - user code may raise anything
            if self.actor.exit_requested(exc):
                self.actor.exit_after_reply(reply, return_ids, caller)
            elif isinstance(exc, SystemExit):
                _exit_process(exc)
            else:
                error = self.task_error(spec.function_name, exc)
                failure = ("TASK_EXECUTION_EXCEPTION", str(error))
                reply.is_application_error = True
                reply.is_retryable_error = _is_retryable(spec, exc)
                self._store_error(reply, return_ids, caller, error)
        finally:
            self.actor.canceled.discard(task_id)
            task_context.leave(context)
            proctitle.set_title(self._idle_title())
        self._record_outcome(spec, failure)
        worker.flush_borrows()
        return reply

    def _idle_title(self) -> str:
        """The title between tasks: the actor's class once one lives here."""
        if self.actor is not None:
            return proctitle.task_title(self.actor.class_name)
        return proctitle.IDLE

    def context_for(self, spec) -> task_context.TaskContext:
        """An actor's calls run in the actor's placement group."""
        actor = self.actor if spec.type == common_pb2.ACTOR_TASK else None
        if actor is None:
            return task_context.for_spec(spec)
        return task_context.for_spec(spec, actor.strategy, actor.root_detached,
                                     actor.class_descriptor)

    @staticmethod
    def return_ids(spec) -> list[ObjectID]:
        task_id = TaskID(spec.task_id)
        count = spec.num_returns
        if spec.type == common_pb2.ACTOR_CREATION_TASK:
            count = 1        # only ever holds the constructor's error
        return [ObjectID.for_return(task_id, i + 1) for i in range(count)]

    @staticmethod
    def task_error(function_name: str, exc: BaseException) -> exceptions.RayTaskError:
        # The traceback starts in the user's code: the runtime's own frames
        # that called it are left out (as Ray does).
        frames = exc.__traceback__
        while frames is not None and \
                frames.tb_frame.f_code.co_filename.startswith(_RUNTIME_DIR):
            frames = frames.tb_next
        tb = "".join(traceback.format_exception(type(exc), exc,
                                                frames or exc.__traceback__))
        if isinstance(exc, exceptions.RayTaskError):
            cause = exc.cause
        else:
            cause = exc
        return exceptions.RayTaskError(function_name, tb, cause, pid=os.getpid(),
                                       ip=config.NODE_IP)

    def _bind_job(self, job_id: JobID) -> None:
        """The first task of a job sets up sys.path and the working dir."""
        if self._job_id == job_id:
            return
        self._job_id = job_id
        worker = self.worker
        worker.job_id = job_id
        worker._outside_tasks = None
        reply = worker.call("gcs", "GetJobConfig", gcs_pb2.GetJobConfigRequest(job_id=job_id))
        if reply.found:
            paths = list(reply.config.code_search_path)
            if os.environ.get("MINIRAY_RUNTIME_ENV_WORKING_DIR"):
                # A runtime env's working_dir is the cwd and first import
                # path (with its py_modules after it, from PYTHONPATH); the
                # driver's directories come after those.
                sys.path.extend(p for p in paths if p not in sys.path)
            else:
                for path in reversed(paths[:2]):          # script dir and cwd first
                    if path not in sys.path:
                        sys.path.insert(0, path)
                sys.path.extend(p for p in paths[2:] if p not in sys.path)
                if reply.config.working_dir and os.path.isdir(reply.config.working_dir):
                    os.chdir(reply.config.working_dir)
            worker.namespace = reply.config.namespace
            if reply.driver.port:
                worker.job_driver = WorkerAddress.from_proto(reply.driver)

    def _resolve_args(self, spec):
        values = []
        refs = []
        for arg in spec.args:
            if arg.HasField("value"):
                value, is_error = deserialize(arg.value.data)
                if is_error:
                    raise _ArgumentError(value)
                values.append(value)
            else:
                ref = ObjectRef(ObjectID(arg.ref.object_id),
                                WorkerAddress.from_proto(arg.ref.owner))
                values.append(None)
                refs.append((len(values) - 1, ref))
        if refs:
            try:
                fetched = self.worker.get([r for _, r in refs])
            except exceptions.RayError as exc:
                raise _ArgumentError(exc) from None
            for (index, _), value in zip(refs, fetched):
                values[index] = value
        num_kwargs = len(spec.kwarg_names)
        if num_kwargs:
            kwargs = dict(zip(spec.kwarg_names, values[-num_kwargs:]))
            return values[:-num_kwargs], kwargs
        return values, {}

    def _store_returns(self, spec, reply, return_ids, caller, result) -> None:
        """Package a finished call's result as its return objects."""
        if spec.returns_dynamic:
            self._store_dynamic(spec, reply, return_ids[0], caller, result)
        elif inspect.isgenerator(result):
            self._store_generated(spec, reply, return_ids, caller, result)
        else:
            self._store_values(reply, return_ids, caller,
                               _split_returns(result, spec.num_returns))

    def _store_generated(self, spec, reply, return_ids, caller, generator) -> None:
        """A generator with a fixed num_returns, as in Ray: its values fill
        the returns in order, each stored as soon as it is yielded; if it
        raises part-way (or stops short) the returns it did not reach hold
        the error; values past num_returns are dropped with a logged error."""
        stored, error = 0, None
        try:
            for value in generator:
                if stored == len(return_ids):
                    print(f"Task {spec.function_name} yielded more than its "
                          f"num_returns={len(return_ids)} values; the rest are "
                          f"dropped", file=sys.stderr)
                    generator.close()
                    break
                self._store_values(reply, return_ids[stored:stored + 1], caller, [value])
                stored += 1
                del value
        except exceptions.TaskCancelledError:
            raise
        except Exception as exc:          # noqa: BLE001 - fills the remaining returns
            error = exc
        if error is None and stored < len(return_ids):
            error = ValueError(
                f"Task returned {stored} objects, but num_returns={len(return_ids)}.")
        if error is not None:
            reply.is_application_error = True
            reply.is_retryable_error = _is_retryable(spec, error)
            self._store_error(reply, return_ids[stored:], caller,
                              self.task_error(spec.function_name, error))

    def _store_dynamic(self, spec, reply, generator_id, caller, result) -> None:
        """num_returns="dynamic": each yielded value becomes an object of its
        own (owned by the caller, like any return), and the task's one
        return holds a DynamicObjectRefGenerator of their refs. An error
        part-way becomes the last item."""
        from miniray.core_worker.generator import DynamicObjectRefGenerator
        task_id = TaskID(spec.task_id)
        items = cw_pb2.PushTaskReply()
        try:
            if not inspect.isgenerator(result):
                raise ValueError(
                    f"Task {spec.function_name} has num_returns='dynamic' but "
                    f"returned a {type(result).__name__}, not a generator")
            for value in result:
                object_id = ObjectID.for_return(task_id, len(items.returns) + 2)
                self._store_values(items, [object_id], caller, [value])
                del value
        except exceptions.TaskCancelledError:
            raise
        except Exception as exc:          # noqa: BLE001 - becomes the last item
            object_id = ObjectID.for_return(task_id, len(items.returns) + 2)
            self._store_error(items, [object_id], caller,
                              self.task_error(spec.function_name, exc))
            reply.is_application_error = True
            reply.is_retryable_error = _is_retryable(spec, exc)
        refs = [ObjectRef(ObjectID(item.object_id), caller, _count=False)
                for item in items.returns]
        self._store_values(reply, [generator_id], caller,
                           [DynamicObjectRefGenerator(refs)])
        # After the generator: the owner stores it first, which makes the
        # items its contents (see Submitter._complete).
        reply.returns.extend(items.returns)

    def _store_values(self, reply, return_ids, caller, values) -> None:
        nested = []
        for object_id, value in zip(return_ids, values):
            serialized = serialize(value)
            nested.extend(serialized.nested_refs)
            reply.returns.append(self.worker.make_payload(object_id, serialized,
                                                          caller.worker_id))
        if nested:
            self._lend(caller.worker_id, nested)

    def _store_error(self, reply, return_ids, caller, error) -> None:
        try:
            serialized = serialize(error, is_error=True)
        except TypeError:
            error = exceptions.RayTaskError(
                getattr(error, "function_name", ""), str(error), None)
            serialized = serialize(error, is_error=True)
        for object_id in return_ids:
            reply.returns.append(self.worker.make_payload(object_id, serialized,
                                                          caller.worker_id))

    def _lend(self, borrower: WorkerID, refs) -> None:
        """Refs in return values: register the caller as a borrower first."""
        worker = self.worker
        local, remote = [], []
        for ref in refs:
            if ref.owner.worker_id == borrower:
                continue                  # the caller owns it: nothing to do
            (local if ref.owner.worker_id == worker.worker_id else remote).append(ref)
        if local:
            worker.handle_ref_updates([cw_pb2.RefCountUpdate(
                object_id=r.id, borrower_id=borrower, delta=1) for r in local])
        if remote:
            worker.run(worker.register_borrows(borrower, remote))

    def _stream(self, spec, reply, caller: WorkerAddress, result) -> None:
        """Report each yielded value to the owner as it is produced."""
        task_id = TaskID(spec.task_id)
        index = 0
        try:
            if not inspect.isgenerator(result) and not hasattr(result, "__next__"):
                raise TypeError(
                    f"streaming task {spec.function_name} must be a generator "
                    f"function, got {type(result).__name__}")
            for value in result:
                self._report_item(task_id, caller, index, serialize(value))
                index += 1
                del value
        except exceptions.TaskCancelledError as exc:
            self._end_stream(spec, reply, caller, index, exc, None)
        except Exception as exc:          # noqa: BLE001 - becomes the next item
            self._end_stream(spec, reply, caller, index, exc, exc)
        else:
            reply.num_dynamic_returns = index

    async def _stream_async(self, spec, reply, caller: WorkerAddress, result) -> None:
        """_stream for an async generator method of an async actor."""
        task_id = TaskID(spec.task_id)
        index = 0
        try:
            async for value in result:
                self._report_item(task_id, caller, index, serialize(value))
                index += 1
                del value
        except (exceptions.TaskCancelledError, asyncio.CancelledError):
            self._end_stream(spec, reply, caller, index,
                             exceptions.TaskCancelledError(task_id.hex()), None)
        except Exception as exc:          # noqa: BLE001 - becomes the next item
            self._end_stream(spec, reply, caller, index, exc, exc)
        else:
            reply.num_dynamic_returns = index

    def _end_stream(self, spec, reply, caller, index: int, exc, user_error) -> None:
        """A generator that raised: the error is its last item. If the
        exception is one to retry on, the error travels in the reply
        instead, for the owner to use only if it does not retry (a retry
        re-yields the items the owner has and goes on from there)."""
        task_id = TaskID(spec.task_id)
        error = exc if user_error is None else self.task_error(spec.function_name, exc)
        serialized = serialize(error, is_error=True)
        reply.num_dynamic_returns = index + 1
        if user_error is not None and _is_retryable(spec, user_error):
            reply.is_application_error = True
            reply.is_retryable_error = True
            reply.returns.append(self.worker.make_payload(
                ObjectID.for_return(task_id, index + 1), serialized, caller.worker_id))
            return
        self._report_item(task_id, caller, index, serialized)

    def _report_item(self, task_id: TaskID, caller: WorkerAddress, index: int,
                     serialized) -> None:
        worker = self.worker
        if serialized.nested_refs:
            self._lend(caller.worker_id, serialized.nested_refs)
        payload = worker.make_payload(ObjectID.for_return(task_id, index + 1),
                                      serialized, caller.worker_id)
        worker.call(caller, "ReportGeneratorItem", cw_pb2.ReportGeneratorItemRequest(
            task_id=task_id, index=index, item=payload))


class _ArgumentError(Exception):
    """An argument's value is an error: the task fails with that error."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def _exit_process(exc: SystemExit) -> None:
    """sys.exit() in a task or an actor method: as in Ray, the process ends,
    a system failure: a task is retried within max_retries, then fails with
    WorkerCrashedError (a generator's stream too, after the items it had
    made); an actor restarts within max_restarts and the call is retried
    within max_task_retries. exit_actor() is an actor's intended exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    exit_worker(exc.code if isinstance(exc.code, int) else 1)


def _split_returns(values, num_returns: int) -> list:
    if num_returns == 1:
        return [values]
    if num_returns == 0:
        return []
    try:
        count = len(values)
    except TypeError:
        raise ValueError(
            f"Task returned a {type(values).__name__}, but num_returns="
            f"{num_returns} needs a sequence of {num_returns} values") from None
    if count != num_returns:
        raise ValueError(
            f"Task returned {count} objects, but num_returns={num_returns}.")
    return list(values)


def _is_retryable(spec, exc: BaseException) -> bool:
    if not spec.retry_exceptions or not isinstance(exc, Exception):
        return False
    if not spec.retry_exception_types:
        return True
    import pickle
    types = pickle.loads(spec.retry_exception_types)
    return isinstance(exc, types)


def _construct_async(runtime, cls, args, kwargs):
    """An ``async def __init__`` (Ray runs it): awaited on the actor's own
    event loop when it is an async actor, else on a loop of its own."""
    instance = cls.__new__(cls)
    constructing = cls.__init__(instance, *args, **kwargs)
    if runtime.is_asyncio:
        asyncio.run_coroutine_threadsafe(constructing, runtime._group_loop("")).result()
    else:
        asyncio.run(constructing)
    return instance


class ReplySink:
    """Where a pushed task's reply goes: ``callback(reply, error)``, called
    once, on the io thread (later calls are ignored: a call cancelled while
    queued is answered at once, and its job then finds nothing to do)."""
    __slots__ = ("_callback", "done")

    def __init__(self, callback):
        self._callback = callback
        self.done = False

    def set(self, reply) -> None:
        if not self.done:
            self.done = True
            self._callback(reply, None)

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.done = True
            self._callback(None, error)


def _clip(message: str, limit: int = 4096) -> str:
    """An error message for a task event: its start (where it was raised)
    and its end (the exception), if it is long."""
    if len(message) <= limit:
        return message
    half = (limit - 5) // 2
    return f"{message[:half]}\n...\n{message[-half:]}"
