"""Exceptions raised by miniray, mirroring ``ray.exceptions``.

Application code sees these from ``ray.get``/``ray.wait`` and actor calls:

* a task or actor method that raises stores a :class:`RayTaskError` as
  its result; ``ray.get`` re-raises it through
  :meth:`RayTaskError.as_instanceof_cause`, so ``except ValueError`` still
  catches a remote ``ValueError``;
* the owner raises :class:`RayActorError` subclasses,
  :class:`WorkerCrashedError` or the :class:`ObjectLostError` family when
  processes, nodes or objects disappear, and :class:`GetTimeoutError` when
  ``ray.get`` times out;
* the scheduler and object store raise the remaining system errors.

Every exception here travels between processes, so all of them pickle (with
``pickle`` and ``cloudpickle``) without re-running their ``__init__``.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import traceback
from typing import Any, ClassVar

import cloudpickle

__all__ = [
    "RayError", "CrossLanguageError", "TaskCancelledError", "RayTaskError",
    "LocalRayletDiedError", "WorkerCrashedError", "RayActorError",
    "ActorDiedError", "ActorUnavailableError", "ActorAlreadyExistsError",
    "RaySystemError", "ObjectStoreFullError", "OutOfDiskError",
    "OutOfMemoryError", "NodeDiedError", "ObjectLostError",
    "ObjectFetchTimedOutError", "ReferenceCountingAssertionError",
    "ObjectFreedError", "OwnerDiedError", "ObjectReconstructionFailedError",
    "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectReconstructionFailedLineageEvictedError", "GetTimeoutError",
    "PlasmaObjectNotAvailable", "AsyncioActorExit", "RuntimeEnvSetupError",
    "TaskPlacementGroupRemoved", "ActorPlacementGroupRemoved",
    "PendingCallsLimitExceeded", "TaskUnschedulableError",
    "ActorUnschedulableError", "ObjectRefStreamEndOfStreamError",
    "RayChannelError", "RayChannelTimeoutError", "UnserializableException",
]

logger = logging.getLogger(__name__)

_Py_TPFLAGS_HEAPTYPE = 1 << 9


# --------------------------------------------------------------------------
# Pickling helpers
# --------------------------------------------------------------------------

def _bare_exception(cls: type[BaseException],
                    args: tuple[Any, ...]) -> BaseException:
    """An instance of ``cls`` holding ``args``, built without ``__init__``.

    Only the nearest built-in base's ``__new__``/``__init__`` run, so the C
    level fields (``args``, ``OSError.errno``, ...) are filled in while user
    constructors with arbitrary signatures are skipped.  Also the unpickling
    entry point of exceptions pickled by state; pickle then applies the
    instance ``__dict__``.
    """
    native = next(k for k in cls.__mro__
                  if not k.__flags__ & _Py_TPFLAGS_HEAPTYPE)
    exc = native.__new__(cls, *args)
    native.__init__(exc, *args)
    return exc


class _PickleByState:
    """Pickles an exception as (class, args, __dict__).

    Python's default exception pickling calls ``cls(*args)``, which breaks for
    classes whose ``__init__`` signature differs from the ``args`` they pass
    to ``Exception.__init__``.  Restoring by state sidesteps that; unpickling
    yields the exception itself, never this wrapper.
    """

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __reduce__(self):
        exc = self.exc
        return _bare_exception, (type(exc), exc.args), exc.__dict__ or None


def _uses_default_reduce(exc: BaseException) -> bool:
    """Whether ``exc`` pickles with BaseException's ``cls(*args)`` scheme."""
    cls = type(exc)
    return (cls.__reduce__ is BaseException.__reduce__
            and cls.__reduce_ex__ is object.__reduce_ex__)


# --------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------

class RayError(Exception):
    """Base class of every miniray exception."""

    def __reduce__(self):
        state = self.__dict__ or None
        return _bare_exception, (type(self), self.args), state

    def __reduce_ex__(self, protocol):
        return self.__reduce__()


class CrossLanguageError(RayError):
    """An exception raised by code written in another language."""

    def __init__(self, language: str, formatted_exception_string: str):
        super().__init__(language, formatted_exception_string)
        self.language = language
        self.formatted_exception_string = formatted_exception_string

    def __str__(self) -> str:
        return (f"An exception was raised from {self.language}:\n"
                f"{self.formatted_exception_string}")


class TaskCancelledError(RayError):
    """The task, or a task it depends on, was cancelled with ``ray.cancel``."""

    def __init__(self, task_id: Any = None, error_message: str | None = None):
        super().__init__(task_id, error_message)
        self.task_id = task_id
        self.error_message = error_message

    def __str__(self) -> str:
        if self.task_id is None:
            msg = "This task or one of its dependencies was cancelled."
        else:
            msg = f"Task: {self.task_id} was cancelled."
        if self.error_message:
            msg += f" {self.error_message}"
        return msg


# --------------------------------------------------------------------------
# Task errors
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _node_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


# Generated "RayTaskError(<cause class>)" classes, one per cause class.
_DUAL_CLASSES: dict[type[BaseException], type[RayTaskError]] = {}


class RayTaskError(RayError):
    """A task or actor method raised an exception while executing.

    The failing worker stores this as the task's result; ``ray.get`` raises
    ``as_instanceof_cause()`` of it, an object that is an instance of both
    ``RayTaskError`` and the class of the original exception (``cause``).
    """

    # True on the classes generated by as_instanceof_cause().
    _is_dual: ClassVar[bool] = False

    def __init__(self, function_name: str, traceback_str: str,
                 cause: BaseException, proctitle: str | None = None,
                 pid: int | None = None, ip: str | None = None,
                 actor_repr: str | None = None, actor_id: str | None = None):
        # A task that fails because an upstream task failed reports the
        # original exception rather than a RayTaskError wrapping it.
        if isinstance(cause, RayTaskError):
            cause = cause.cause
        super().__init__(function_name, traceback_str, cause, proctitle, pid,
                         ip, actor_repr, actor_id)
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle or f"ray::{function_name}"
        self.pid = pid or os.getpid()
        self.ip = ip or _node_ip()
        self.actor_repr = actor_repr
        self.actor_id = actor_id

    def __str__(self) -> str:
        header = f"{self.proctitle}() (pid={self.pid}, ip={self.ip}"
        if self.actor_repr:
            header += f", actor_id={self.actor_id}, repr={self.actor_repr})"
        else:
            header += ")"
        # Each "Traceback (most recent call last):" line (nested failures
        # carry several) becomes the header naming the process it ran in.
        body = self.traceback_str.strip("\n").rstrip()
        lines = [header if line.startswith("Traceback ") else line
                 for line in body.splitlines()]
        if not lines or lines[0] != header:
            lines.insert(0, header)
        cause_text = "".join(
            traceback.format_exception_only(type(self.cause), self.cause)
        ).strip()
        if cause_text not in self.traceback_str:
            lines.append(cause_text)
        return "\n".join(lines)

    def as_instanceof_cause(self) -> RayTaskError:
        """Return this error as an instance of the cause's class as well.

        The result's class, named ``RayTaskError(<cause class>)``, subclasses
        both ``RayTaskError`` and ``type(self.cause)``; it carries the cause's
        ``args`` and attributes and this error's message.  If the cause's
        class cannot be combined with ``RayTaskError`` this error is returned
        unchanged and the cause stays reachable as ``.cause``.
        """
        cause_cls = type(self.cause)
        if isinstance(self, cause_cls):
            return self
        try:
            dual_cls = _DUAL_CLASSES.get(cause_cls)
            if dual_cls is None:
                dual_cls = _DUAL_CLASSES.setdefault(
                    cause_cls, _make_dual_class(cause_cls))
            args = tuple(self.cause.args)
            if isinstance(self.cause, OSError):
                # OSError.args omits the file names; its reduce args keep them.
                args = OSError.__reduce__(self.cause)[1]
            dual = _bare_exception(dual_cls, args)
            # Update the dicts directly: the cause's class may customise
            # __setattr__.
            dual.__dict__.update(self.cause.__dict__)
            dual.__dict__.update(self.__dict__)
        except Exception as e:
            logger.warning(
                "User exception type %s in RayTaskError can't be subclassed (%s). "
                "This exception is raised as RayTaskError only. You can use "
                "`ray_task_error.cause` to access the user exception.",
                cause_cls.__name__, e)
            return self
        return dual

    def _picklable_cause(self) -> Any:
        payload = (_PickleByState(self.cause)
                   if _uses_default_reduce(self.cause) else self.cause)
        try:
            cloudpickle.dumps(payload)
        except Exception as e:
            cls = type(self.cause)
            return RayError(
                f"The exception {cls.__module__}.{cls.__qualname__} raised "
                f"by the task could not be serialized: {e!r}")
        return payload

    def __reduce__(self):
        fields = (self.function_name, self.traceback_str,
                  self._picklable_cause(), self.proctitle, self.pid, self.ip,
                  self.actor_repr, self.actor_id)
        if self._is_dual:
            return _rebuild_instanceof_cause, fields
        return type(self), fields


def dependency_failed(function_name: str, error: BaseException) -> RayTaskError:
    """The error of a task one of whose arguments holds ``error``, as Ray
    words it: a RayTaskError of this task (so also an instance of the
    original cause's class) saying which argument error stopped it."""
    shown = ("miniray.exceptions.RayTaskError" if isinstance(error, RayTaskError)
             else f"{type(error).__module__}.{type(error).__qualname__}")
    return RayTaskError(
        function_name,
        "At least one of the input arguments for this task could not be "
        f"computed:\n{shown}: {error}", error)


def _delegate_to_cause(self: RayTaskError, name: str) -> Any:
    """__getattr__ of dual classes: fall back to the cause's attributes."""
    cause = self.__dict__.get("cause")
    if cause is None or name.startswith("__"):
        raise AttributeError(name)
    return getattr(cause, name)


def _make_dual_class(cause_cls: type[BaseException]) -> type[RayTaskError]:
    name = f"RayTaskError({cause_cls.__name__})"
    # RayTaskError comes first so its __str__, __reduce__ and fields win.
    return type(name, (RayTaskError, cause_cls), {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": RayTaskError.__doc__,
        "_is_dual": True,
        "__getattr__": _delegate_to_cause,
    })


def _rebuild_instanceof_cause(*fields: Any) -> RayTaskError:
    """Unpickling entry point for ``as_instanceof_cause()`` results."""
    return RayTaskError(*fields).as_instanceof_cause()


class LocalRayletDiedError(RayError):
    """The raylet of the node running the task died (``detail``, miniray:
    how its owner found out)."""

    def __init__(self, detail: str = ""):
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        text = "The task's local raylet died. Check the raylet log of that node for details."
        return f"{text}\n{self.detail}" if self.detail else text


class WorkerCrashedError(RayError):
    """The worker process died unexpectedly while executing the task."""

    def __str__(self) -> str:
        return ("The worker died unexpectedly while executing this task. "
                "Check the worker logs for details.")


# --------------------------------------------------------------------------
# Actor errors
# --------------------------------------------------------------------------

class RayActorError(RayError):
    """The actor failed before finishing the task.

    Raised as :class:`ActorDiedError` when the actor process is gone and as
    :class:`ActorUnavailableError` when it may come back.
    """

    BASE_ERROR_MSG: ClassVar[str] = (
        "The actor experienced an error before finishing this task.")

    def __init__(self, actor_id: str | None = None,
                 error_msg: str = BASE_ERROR_MSG,
                 actor_init_failed: bool = False, preempted: bool = False):
        super().__init__(actor_id, error_msg, actor_init_failed, preempted)
        self.actor_id = actor_id
        self.error_msg = error_msg
        self._actor_init_failed = actor_init_failed
        self._preempted = preempted

    def __str__(self) -> str:
        return self.error_msg

    @property
    def actor_init_failed(self) -> bool:
        """Whether the actor's ``__init__`` raised."""
        return self._actor_init_failed

    @property
    def preempted(self) -> bool:
        """Whether the actor died because its node was preempted."""
        return self._preempted


class ActorDiedError(RayActorError):
    """The actor died, either while running the task or before it was sent.

    ``cause`` is the :class:`RayTaskError` of a failed ``__init__``, a string
    describing a system failure (process exit, node death, ``ray.kill``), or
    ``None`` when unknown.
    """

    BASE_ERROR_MSG: ClassVar[str] = (
        "The actor died unexpectedly before finishing this task.")

    def __init__(self, cause: RayTaskError | str | None = None,
                 actor_id: str | None = None):
        if isinstance(cause, RayTaskError):
            super().__init__(
                actor_id or cause.actor_id,
                "The actor died because of an error raised in its creation "
                f"task, {cause}",
                actor_init_failed=True)
            return
        lines = [self.BASE_ERROR_MSG]
        if actor_id:
            lines.append(f"\tactor_id: {actor_id}")
        if cause:
            lines.append(cause)
        super().__init__(actor_id, "\n".join(lines))


class ActorUnavailableError(RayActorError):
    """The actor is temporarily unreachable (e.g. restarting); retry later."""

    def __init__(self, error_message: str, actor_id: bytes | str | None):
        if isinstance(actor_id, bytes):
            actor_id = actor_id.hex()
        super().__init__(
            actor_id,
            f"The actor {actor_id} is unavailable: {error_message}. The task "
            "may or may not have been executed on the actor.")


class ActorAlreadyExistsError(ValueError, RayError):
    """A named actor with this name already exists in the namespace.

    Also a ``ValueError``, which is what Ray raised for this historically.
    """

    def __init__(self, error_message: str):
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self) -> str:
        return self.error_message


class ActorUnschedulableError(RayError):
    """The actor can never be scheduled (e.g. its affinity node is dead)."""

    def __init__(self, error_message: str):
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self) -> str:
        return f"The actor is not schedulable: {self.error_message}"


class TaskUnschedulableError(RayError):
    """The task can never be scheduled (e.g. its affinity node is dead)."""

    def __init__(self, error_message: str):
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self) -> str:
        return f"The task is not schedulable: {self.error_message}"


# --------------------------------------------------------------------------
# System errors
# --------------------------------------------------------------------------

class RaySystemError(RayError):
    """miniray itself failed (e.g. the raylet was killed)."""

    def __init__(self, client_exc: Any, traceback_str: str | None = None):
        super().__init__(client_exc, traceback_str)
        self.client_exc = client_exc
        self.traceback_str = traceback_str

    def __str__(self) -> str:
        msg = f"System error: {self.client_exc}"
        if self.traceback_str:
            msg += f"\ntraceback: {self.traceback_str}"
        return msg


class ObjectStoreFullError(RayError):
    """An object could not be stored: the store is full of live objects."""

    def __str__(self) -> str:
        return super().__str__() + (
            "\nThe local object store is full of objects that are still "
            "referenced, so none can be evicted or spilled to make room.")


class OutOfDiskError(RayError):
    """An object could not be stored or spilled: the local disk is full."""

    def __str__(self) -> str:
        return super().__str__() + (
            "\nThe object cannot be created because the local object store "
            "is full and the local disk has no room left to spill to.")


class OutOfMemoryError(RayError):
    """The node ran low on memory and killed the worker running the task."""

    def __init__(self, message: str = (
            "The task was killed because its node ran out of memory.")):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NodeDiedError(RayError):
    """The node running the task died or became unreachable."""

    def __init__(self, message: str = "The node died or became unreachable."):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------
# Object errors
# --------------------------------------------------------------------------

class ObjectLostError(RayError):
    """The object's value is gone from the cluster (node or system failure).

    ``detail`` (miniray): what was lost and why it could not be recovered,
    appended to the message.
    """

    def __init__(self, object_ref_hex: str, owner_address: Any = None,
                 call_site: str = "", detail: str = ""):
        super().__init__(object_ref_hex, owner_address, call_site, detail)
        self.object_ref_hex = object_ref_hex
        self.owner_address = owner_address
        self.call_site = call_site
        self.detail = detail

    def _base_str(self) -> str:
        msg = f"Failed to retrieve object {self.object_ref_hex}."
        if self.call_site:
            return f"{msg} The ObjectRef was created at: {self.call_site}"
        return (f"{msg} To see where this ObjectRef was created in Python, set "
                f"MINIRAY_RECORD_REF_CREATION_SITES=1 (or Ray's "
                f"RAY_record_ref_creation_sites=1) for `miniray start` and `init()`.")

    def _reason(self) -> str:
        return (f"All copies of {self.object_ref_hex} have been lost due to "
                "node failure. Check the cluster logs for details.")

    def __str__(self) -> str:
        text = f"{self._base_str()}\n\n{self._reason()}"
        detail = getattr(self, "detail", "")
        return f"{text}\n{detail}" if detail else text


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching the object timed out because no copy of it could be found."""

    def _reason(self) -> str:
        return (f"Fetch for object {self.object_ref_hex} timed out because no "
                "locations were found for the object.")


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """The object was deleted while a reference to it still existed."""

    def _reason(self) -> str:
        return ("The object was already deleted by reference counting; this "
                "indicates a bug in miniray.")


class ObjectFreedError(ObjectLostError):
    """The object was explicitly freed by the application."""

    def _reason(self) -> str:
        return ("The object was manually freed with the internal `free` call; "
                "only free objects that are no longer needed.")


class OwnerDiedError(ObjectLostError):
    """The worker that owns the object died while references remained."""

    def _reason(self) -> str:
        msg = ("The object's owner, the worker that created the ObjectRef via "
               "`.remote()` or `ray.put()`, has exited.")
        owner = _describe_owner(self.owner_address)
        if owner:
            msg += f" Owner: {owner}."
        return msg + " Check that worker's logs for details."


def _describe_owner(owner_address: Any) -> str:
    """Best-effort text for an owner address (serialized proto or string)."""
    if isinstance(owner_address, str):
        return owner_address
    if isinstance(owner_address, bytes) and owner_address:
        try:
            from miniray.protocol.common_pb2 import Address
            addr = Address.FromString(owner_address)
        except Exception:
            return ""
        return f"worker {addr.worker_id.hex()} at {addr.ip}:{addr.port}"
    return ""


class ObjectReconstructionFailedError(ObjectLostError):
    """The lost object cannot be recreated by re-running its task."""

    def _reason(self) -> str:
        return ("The object cannot be reconstructed because it was created by "
                "an actor or `ray.put()`, or its ObjectRef was created by a "
                "different worker.")


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectLostError):
    """The lost object cannot be recreated: its task is out of retries."""

    def _reason(self) -> str:
        return ("The object cannot be reconstructed because the maximum "
                "number of task retries has been exceeded; raise it with "
                "`@ray.remote(max_retries=N)` (`max_task_retries` for actor "
                "methods).")


class ObjectReconstructionFailedLineageEvictedError(ObjectLostError):
    """The lost object cannot be recreated: its lineage was evicted."""

    def _reason(self) -> str:
        return ("The object cannot be reconstructed because its lineage was "
                "evicted to reduce memory pressure.")


class GetTimeoutError(RayError, TimeoutError):
    """``ray.get`` (or another blocking call) timed out."""


class PlasmaObjectNotAvailable(RayError):
    """An object was not available within the given timeout."""


class ObjectRefStreamEndOfStreamError(RayError):
    """A streaming generator has no more ObjectRefs to return."""


# --------------------------------------------------------------------------
# Miscellaneous
# --------------------------------------------------------------------------

class AsyncioActorExit(RayError):
    """Raised inside an asyncio actor that exits via ``exit_actor()``."""


class RuntimeEnvSetupError(RayError):
    """The task's or actor's runtime environment could not be set up."""

    def __init__(self, error_message: str | None = None):
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self) -> str:
        msg = "Failed to set up runtime environment."
        if self.error_message:
            msg += f"\n{self.error_message}"
        return msg


class TaskPlacementGroupRemoved(RayError):
    """The placement group the task was scheduled into was removed."""

    def __str__(self) -> str:
        return ("The placement group corresponding to this task has been "
                "removed.")


class ActorPlacementGroupRemoved(RayError):
    """The placement group the actor was scheduled into was removed."""

    def __str__(self) -> str:
        return ("The placement group corresponding to this Actor has been "
                "removed.")


class PendingCallsLimitExceeded(RayError):
    """The caller has more pending calls to the actor than its
    ``max_pending_calls`` option allows."""


class RayChannelError(RaySystemError):
    """A system error in a compiled-graph channel."""


class RayChannelTimeoutError(RayChannelError, TimeoutError):
    """A compiled-graph channel operation timed out."""


class UnserializableException(RayError):
    """An exception raised remotely could not be deserialized.

    Carries the original exception's formatted text instead.
    """

    def __init__(self, original_stack_trace: str):
        super().__init__(original_stack_trace)
        self.original_stack_trace = original_stack_trace

    def __str__(self) -> str:
        return ("Failed to deserialize the exception raised remotely. "
                f"Original exception:\n{self.original_stack_trace}")
