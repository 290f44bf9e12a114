"""Unit tests for miniray.exceptions (no cluster, no sockets)."""
from __future__ import annotations

import logging
import pickle
import threading
import traceback

import cloudpickle
import pytest

from miniray import exceptions as exc
from miniray.exceptions import (
    ActorDiedError, ActorUnavailableError, GetTimeoutError, ObjectLostError,
    OwnerDiedError, RayActorError, RayError, RayTaskError,
)

SERIALIZERS = [pytest.param(pickle, id="pickle"),
               pytest.param(cloudpickle, id="cloudpickle")]


class TwoArgError(Exception):
    """__init__ signature differs from the args it passes to Exception."""

    def __init__(self, a, b):
        super().__init__(f"a={a} b={b}")
        self.a = a
        self.b = b


class FinalError(Exception):
    """Refuses to be subclassed."""

    def __init_subclass__(cls, **kwargs):
        raise TypeError("FinalError cannot be subclassed")


class FrozenError(Exception):
    """Rejects attribute assignment after construction."""

    def __init__(self, msg):
        super().__init__(msg)
        object.__setattr__(self, "frozen", True)

    def __setattr__(self, name, value):
        raise AttributeError("frozen")


class DefaultAttrError(Exception):
    code = 0

    def __init__(self, code):
        super().__init__(code)
        self.code = code

    def describe(self):
        return f"code {self.code}"


def _task_error(cause: BaseException, name: str = "my_task",
                **kwargs) -> RayTaskError:
    """A RayTaskError built the way a worker builds one: inside `except`."""
    try:
        raise cause
    except BaseException as e:
        tb = traceback.format_exc()
        return RayTaskError(name, tb, e, pid=1234, ip="10.1.2.3", **kwargs)


# ---------------------------------------------------------------- hierarchy

@pytest.mark.parametrize("cls, bases", [
    (GetTimeoutError, (RayError, TimeoutError)),
    (OwnerDiedError, (ObjectLostError, RayError)),
    (exc.ObjectFetchTimedOutError, (ObjectLostError,)),
    (exc.ObjectFreedError, (ObjectLostError,)),
    (exc.ReferenceCountingAssertionError, (ObjectLostError, AssertionError)),
    (exc.ObjectReconstructionFailedError, (ObjectLostError,)),
    (exc.ObjectReconstructionFailedMaxAttemptsExceededError,
     (ObjectLostError,)),
    (exc.ObjectReconstructionFailedLineageEvictedError, (ObjectLostError,)),
    (ActorDiedError, (RayActorError, RayError)),
    (ActorUnavailableError, (RayActorError,)),
    (exc.ActorAlreadyExistsError, (ValueError, RayError)),
    (exc.RayChannelError, (exc.RaySystemError,)),
    (exc.RayChannelTimeoutError, (exc.RayChannelError, TimeoutError)),
    (RayTaskError, (RayError,)),
    (RayError, (Exception,)),
])
def test_hierarchy(cls, bases):
    for base in bases:
        assert issubclass(cls, base)


def test_all_public_names_are_ray_errors():
    for name in exc.__all__:
        assert issubclass(getattr(exc, name), RayError), name


# -------------------------------------------------------------- RayTaskError

def test_str_has_header_traceback_and_cause():
    err = _task_error(ValueError("bad value 42"), name="compute")
    text = str(err)
    lines = text.splitlines()
    assert lines[0] == "ray::compute() (pid=1234, ip=10.1.2.3)"
    assert "Traceback (most recent call last)" not in text
    assert 'File "' in text and "in _task_error" in text
    assert "raise cause" in text
    assert lines[-1] == "ValueError: bad value 42"
    assert text.count("bad value 42") == 1


def test_str_with_actor_and_proctitle():
    err = RayTaskError("Counter.incr", "Traceback (most recent call last):\n"
                       "  File \"x.py\", line 1, in incr\nKeyError: 'k'\n",
                       KeyError("k"), proctitle="ray::Counter.incr", pid=7,
                       ip="1.1.1.1", actor_repr="Counter(3)", actor_id="abc")
    assert str(err).splitlines()[0] == (
        "ray::Counter.incr() (pid=7, ip=1.1.1.1, actor_id=abc, "
        "repr=Counter(3))")


def test_str_appends_cause_when_traceback_lacks_it():
    err = RayTaskError("f", "", ValueError("no traceback"), pid=1, ip="h")
    assert str(err) == "ray::f() (pid=1, ip=h)\nValueError: no traceback"
    err = RayTaskError("f", '  File "x.py", line 3, in f\n', ValueError("v"),
                       pid=1, ip="h")
    assert str(err).splitlines() == [
        "ray::f() (pid=1, ip=h)", '  File "x.py", line 3, in f',
        "ValueError: v"]


def test_defaults_for_pid_and_proctitle():
    import os
    err = RayTaskError("f", "tb", ValueError(), ip="h")
    assert err.pid == os.getpid()
    assert err.proctitle == "ray::f"
    assert err.cause.__class__ is ValueError


def test_as_instanceof_cause_value_error():
    err = _task_error(ValueError("boom"))
    dual = err.as_instanceof_cause()
    assert isinstance(dual, ValueError)
    assert isinstance(dual, RayTaskError)
    assert type(dual).__name__ == "RayTaskError(ValueError)"
    assert dual.cause is err.cause
    assert dual.args == ("boom",)
    assert str(dual) == str(err)
    assert dual.function_name == "my_task" and dual.pid == 1234
    with pytest.raises(ValueError, match="boom"):
        raise dual


def test_generated_classes_are_cached():
    a = _task_error(ValueError("a")).as_instanceof_cause()
    b = _task_error(ValueError("b")).as_instanceof_cause()
    assert type(a) is type(b)
    other = _task_error(KeyError("c")).as_instanceof_cause()
    assert type(other) is not type(a)


def test_as_instanceof_cause_custom_init():
    dual = _task_error(TwoArgError(1, [2])).as_instanceof_cause()
    assert isinstance(dual, TwoArgError) and isinstance(dual, RayTaskError)
    assert dual.args == ("a=1 b=[2]",)
    assert (dual.a, dual.b) == (1, [2])
    assert "TwoArgError: a=1 b=[2]" in str(dual)


def test_as_instanceof_cause_key_error():
    dual = _task_error(KeyError("missing")).as_instanceof_cause()
    assert isinstance(dual, KeyError) and isinstance(dual, LookupError)
    assert dual.args == ("missing",)
    try:
        raise dual
    except KeyError as caught:
        assert caught.args[0] == "missing"


def test_as_instanceof_cause_unsubclassable(caplog):
    err = _task_error(FinalError("final"))
    with caplog.at_level(logging.WARNING, logger="miniray.exceptions"):
        result = err.as_instanceof_cause()
    assert result is err
    assert type(result) is RayTaskError
    assert isinstance(result.cause, FinalError)
    assert "FinalError" in caplog.text


def test_as_instanceof_cause_builtin_layouts():
    cause = FileNotFoundError(2, "gone", "/tmp/x")
    dual = _task_error(cause).as_instanceof_cause()
    assert isinstance(dual, FileNotFoundError)
    assert (dual.errno, dual.strerror, dual.filename) == (2, "gone", "/tmp/x")

    cause = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad byte")
    dual = _task_error(cause).as_instanceof_cause()
    assert isinstance(dual, UnicodeDecodeError)
    assert (dual.encoding, dual.reason) == ("utf-8", "bad byte")

    group = ExceptionGroup("several", [ValueError(1), KeyError(2)])
    dual = _task_error(group).as_instanceof_cause()
    assert isinstance(dual, ExceptionGroup)
    assert len(dual.exceptions) == 2


def test_as_instanceof_cause_keeps_instance_attributes():
    dual = _task_error(DefaultAttrError(7)).as_instanceof_cause()
    assert dual.code == 7
    assert dual.describe() == "code 7"
    dual = _task_error(FrozenError("ice")).as_instanceof_cause()
    assert isinstance(dual, FrozenError) and dual.frozen is True


def test_as_instanceof_cause_delegates_missing_attributes():
    cause = ValueError("v")
    err = RayTaskError("f", "tb", cause, pid=1, ip="h")
    dual = err.as_instanceof_cause()
    cause.added_later = "late"
    assert dual.added_later == "late"
    with pytest.raises(AttributeError):
        dual.no_such_attribute


def test_cause_that_is_base_of_ray_task_error_is_not_wrapped():
    err = _task_error(Exception("plain"))
    assert err.as_instanceof_cause() is err


def test_nested_task_error_keeps_innermost_cause():
    inner = _task_error(ValueError("root cause"), name="upstream")
    outer = _task_error(inner.as_instanceof_cause(), name="downstream")
    assert type(outer.cause) is ValueError
    dual = outer.as_instanceof_cause()
    assert type(dual).__name__ == "RayTaskError(ValueError)"
    assert type(dual).__mro__.count(RayTaskError) == 1
    text = str(dual)
    assert text.startswith("ray::downstream() (pid=1234, ip=10.1.2.3)")
    assert "ray::upstream() (pid=1234, ip=10.1.2.3)" in text
    assert "ValueError: root cause" in text
    assert dual.as_instanceof_cause() is dual


# ------------------------------------------------------------------ pickling

@pytest.mark.parametrize("ser", SERIALIZERS)
@pytest.mark.parametrize("cause", [
    ValueError("boom"), KeyError("k"), TwoArgError(1, 2),
    FileNotFoundError(2, "gone", "/tmp/x"),
    ExceptionGroup("grp", [ValueError(1)]),
], ids=lambda c: type(c).__name__)
def test_task_error_round_trip(ser, cause):
    err = _task_error(cause, actor_repr="A()", actor_id="ff")
    for original in (err, err.as_instanceof_cause()):
        restored = ser.loads(ser.dumps(original))
        assert type(restored) is type(original)
        assert str(restored) == str(original)
        assert type(restored.cause) is type(cause)
        assert (restored.pid, restored.ip, restored.actor_id) == (
            1234, "10.1.2.3", "ff")
    # repr: exceptions nested in args (ExceptionGroup) compare by identity.
    assert repr(restored.args) == repr(restored.cause.args) == repr(cause.args)


def test_task_error_round_trip_with_local_cause_class():
    class LocalError(Exception):
        def __init__(self, x, y):
            super().__init__(x + y)
            self.x = x

    dual = _task_error(LocalError(1, 2)).as_instanceof_cause()
    restored = cloudpickle.loads(cloudpickle.dumps(dual))
    assert isinstance(restored, RayTaskError)
    assert type(restored).__name__ == "RayTaskError(LocalError)"
    assert restored.args == (3,) and restored.x == 1
    assert str(restored) == str(dual)


def test_unpicklable_cause_is_replaced():
    cause = ValueError("holds a lock")
    cause.lock = threading.Lock()
    err = _task_error(cause)
    restored = cloudpickle.loads(cloudpickle.dumps(err.as_instanceof_cause()))
    assert type(restored) is RayTaskError
    assert type(restored.cause) is RayError
    assert "could not be serialized" in str(restored.cause)
    text = str(restored)
    assert "ValueError: holds a lock" in text
    assert "could not be serialized" in text


OBJ = "ab" * 14

INSTANCES = [
    RayError("generic"),
    exc.CrossLanguageError("JAVA", "java.lang.RuntimeException: x"),
    exc.TaskCancelledError(),
    exc.TaskCancelledError("task-1", "cancelled by user"),
    exc.LocalRayletDiedError(),
    exc.WorkerCrashedError(),
    RayActorError(),
    RayActorError("aa", "custom", True, True),
    ActorDiedError(),
    ActorDiedError("the process exited", actor_id="aa"),
    ActorDiedError(_task_error(ValueError("init failed"), actor_id="bb")),
    ActorUnavailableError("restarting", b"\x01\x02"),
    exc.ActorAlreadyExistsError("actor 'x' already exists"),
    exc.ActorUnschedulableError("node is dead"),
    exc.TaskUnschedulableError("node is dead"),
    exc.RaySystemError("raylet died", "trace"),
    exc.ObjectStoreFullError("no room"),
    exc.OutOfDiskError("disk"),
    exc.OutOfMemoryError(),
    exc.OutOfMemoryError("node used 99% of memory"),
    exc.NodeDiedError(),
    ObjectLostError(OBJ, None, "f() at x.py:3"),
    ObjectLostError(OBJ, None, "", detail="It was created by put()."),
    exc.ObjectFetchTimedOutError(OBJ, None, ""),
    exc.ReferenceCountingAssertionError(OBJ, None, ""),
    exc.ObjectFreedError(OBJ, None, ""),
    OwnerDiedError(OBJ, "10.0.0.1:1234", ""),
    exc.ObjectReconstructionFailedError(OBJ),
    exc.ObjectReconstructionFailedMaxAttemptsExceededError(OBJ),
    exc.ObjectReconstructionFailedLineageEvictedError(OBJ),
    GetTimeoutError("Get timed out: some object(s) not ready."),
    exc.PlasmaObjectNotAvailable(),
    exc.ObjectRefStreamEndOfStreamError(),
    exc.UnserializableException("Traceback ...\nBadError: x"),
    exc.AsyncioActorExit(),
    exc.RuntimeEnvSetupError(),
    exc.RuntimeEnvSetupError("pip failed"),
    exc.TaskPlacementGroupRemoved(),
    exc.ActorPlacementGroupRemoved(),
    exc.PendingCallsLimitExceeded("too many calls"),
    exc.RayChannelError("channel closed"),
    exc.RayChannelTimeoutError("channel timed out"),
]


def test_every_public_class_is_covered():
    covered = {type(e) for e in INSTANCES} | {RayTaskError}
    assert {getattr(exc, name) for name in exc.__all__} <= covered


@pytest.mark.parametrize("ser", SERIALIZERS)
@pytest.mark.parametrize("error", INSTANCES, ids=lambda e: type(e).__name__)
def test_round_trip(ser, error):
    restored = ser.loads(ser.dumps(error))
    assert type(restored) is type(error)
    assert str(restored) == str(error)
    assert restored.args == error.args
    assert vars(restored) == vars(error)


# ------------------------------------------------------------- other errors

@pytest.mark.parametrize("cls", [
    exc.TaskCancelledError, exc.LocalRayletDiedError, exc.WorkerCrashedError,
    RayActorError, ActorDiedError, exc.ObjectStoreFullError,
    exc.OutOfDiskError, exc.OutOfMemoryError, exc.NodeDiedError,
    exc.RuntimeEnvSetupError, exc.TaskPlacementGroupRemoved,
    exc.ActorPlacementGroupRemoved,
], ids=lambda c: c.__name__)
def test_default_message(cls):
    assert str(cls()).strip()


def test_actor_died_error_messages():
    assert str(ActorDiedError()) == (
        "The actor died unexpectedly before finishing this task.")
    died = ActorDiedError("worker process exited with code 1", actor_id="aa")
    assert died.actor_id == "aa"
    assert "actor_id: aa" in str(died)
    assert "exited with code 1" in str(died)
    assert not died.actor_init_failed and not died.preempted

    init_error = _task_error(ValueError("bad arg"), name="A.__init__",
                             actor_id="cc")
    died = ActorDiedError(init_error)
    assert died.actor_init_failed
    assert died.actor_id == "cc"
    assert "error raised in its creation task" in str(died)
    assert "ValueError: bad arg" in str(died)
    restored = pickle.loads(pickle.dumps(died))
    assert restored.actor_init_failed and str(restored) == str(died)


def test_actor_unavailable_error_hexes_bytes_id():
    err = ActorUnavailableError("connection lost", b"\xab\xcd")
    assert err.actor_id == "abcd"
    assert "The actor abcd is unavailable: connection lost" in str(err)


def test_task_cancelled_error_messages():
    assert "cancelled" in str(exc.TaskCancelledError())
    err = exc.TaskCancelledError("T1")
    assert str(err) == "Task: T1 was cancelled."
    assert err.task_id == "T1"


def test_object_lost_error_messages():
    err = ObjectLostError(OBJ, None, "created at x.py:10")
    text = str(err)
    assert text.startswith(f"Failed to retrieve object {OBJ}.")
    assert "created at x.py:10" in text
    assert (err.object_ref_hex, err.owner_address) == (OBJ, None)
    assert "owner" in str(OwnerDiedError(OBJ, None, ""))
    detailed = exc.ObjectReconstructionFailedError(OBJ, detail="A.f cannot retry.")
    assert str(detailed).endswith("\nA.f cannot retry.")


def test_owner_died_error_describes_proto_address():
    from miniray.protocol.common_pb2 import Address
    address = Address(ip="10.0.0.9", port=7000, worker_id=b"\x0f" * 4)
    text = str(OwnerDiedError(OBJ, address.SerializeToString(), ""))
    assert "10.0.0.9:7000" in text and "0f0f0f0f" in text


def test_get_timeout_error_caught_as_timeout_error():
    with pytest.raises(TimeoutError):
        raise GetTimeoutError("Get timed out")
