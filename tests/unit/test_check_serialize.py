"""miniray.util.inspect_serializability: finds the member that cannot be pickled."""
from __future__ import annotations

import io
import threading

from miniray.util import inspect_serializability
from miniray.util.check_serialize import FailureTuple

LOCK = threading.Lock()


class _HoldsLock:
    def __init__(self):
        self.number = 1
        self.lock = threading.Lock()

    def method(self):
        return self.number


class _Outer:
    def __init__(self):
        self.inner = _HoldsLock()


def _only(failures: set) -> FailureTuple:
    assert len(failures) == 1, failures
    return next(iter(failures))


def _check(obj, **kwargs):
    out = io.StringIO()
    serializable, failures = inspect_serializability(obj, print_file=out, **kwargs)
    return serializable, failures, out.getvalue()


def test_serializable_object_reports_no_failures():
    serializable, failures, report = _check({"a": [1, 2.0, "x"]})
    assert serializable is True
    assert failures == set()
    assert "Checking Serializability of" in report
    assert "FAIL" not in report


def test_unserializable_object_is_itself_the_failure():
    serializable, failures, report = _check(LOCK, name="my_lock")
    assert serializable is False
    failure = _only(failures)
    assert failure.obj is LOCK
    assert failure.name == "my_lock"
    assert failure.parent is None
    assert "!!! FAIL serialization" in report


# Functions and classes defined inside a test are pickled by value, with the
# globals they use (module-level ones are pickled by reference).

def test_finds_the_global_a_function_uses():
    def uses_global_lock():
        return LOCK

    serializable, failures, report = _check(uses_global_lock)
    assert not serializable
    failure = _only(failures)
    assert (failure.obj, failure.name, failure.parent) == (LOCK, "LOCK", uses_global_lock)
    assert "Detected 1 global variables" in report
    assert "Serializing 'LOCK'" in report


def test_finds_the_variable_a_closure_captures():
    lock = threading.Lock()

    def closure():
        return lock

    serializable, failures, report = _check(closure)
    assert not serializable
    failure = _only(failures)
    assert failure.obj is lock and failure.name == "lock" and failure.parent is closure
    assert "nonlocal variables" in report


def test_finds_what_a_class_method_refers_to():
    class MethodUsesLock:
        def method(self):
            return LOCK

    serializable, failures, _ = _check(MethodUsesLock)
    assert not serializable
    failure = _only(failures)
    assert failure.obj is LOCK
    assert failure.parent is MethodUsesLock.__dict__["method"]


def test_finds_the_attribute_of_an_instance_through_levels():
    outer = _Outer()
    serializable, failures, report = _check(outer)
    assert not serializable
    failure = _only(failures)
    assert failure.obj is outer.inner.lock
    assert failure.name == "lock"
    assert failure.parent is outer.inner
    # The report is a tree: each level indented under the one that failed.
    assert "\n    Serializing 'inner'" in report
    assert "\n        Serializing 'lock'" in report


def test_depth_limits_the_walk():
    outer = _Outer()
    _, failures, _ = _check(outer, depth=1)
    failure = _only(failures)
    assert failure.obj is outer.inner and failure.name == "inner"
    _, failures, _ = _check(outer, depth=0)
    assert _only(failures).obj is outer


def test_failure_tuple_repr_names_the_member():
    failure = FailureTuple(obj=LOCK, name="LOCK", parent=None)
    assert repr(failure).startswith("FailTuple(LOCK [obj=")


def test_prints_to_stdout_by_default(capsys):
    inspect_serializability(LOCK)
    assert "Checking Serializability of" in capsys.readouterr().out
