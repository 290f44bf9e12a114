"""``inspect_serializability``: find what makes an object unpicklable
(``ray.util.inspect_serializability``).

miniray ships functions, classes and values with cloudpickle. When that fails
the error names a type (``cannot pickle '_thread.lock' object``) but not
where it hides. This walks the object the way cloudpickle would: a function's
globals and closure variables, an object's or class's methods and
attributes, down to ``depth`` levels, following the first member that fails
at each level, and reports the innermost failures as ``FailureTuple``s while
printing the walk as an indented tree.
"""
from __future__ import annotations

import inspect
import sys
from typing import Any, Iterator, Optional, Set, Tuple

import cloudpickle

__all__ = ["FailureTuple", "inspect_serializability"]

_INDENT = "    "


class FailureTuple:
    """One object that does not serialize.

    Attributes:
        obj: the object.
        name: the name it was reached by (variable or attribute name).
        parent: the object that refers to it (``None`` at the top).
    """

    def __init__(self, obj: Any, name: str, parent: Any):
        self.obj = obj
        self.name = name
        self.parent = parent

    def __repr__(self) -> str:
        return f"FailTuple({self.name} [obj={self.obj}, parent={self.parent}])"


class _Report:
    """Prints indented lines to ``print_file`` (stdout when ``None``)."""

    def __init__(self, print_file: Any):
        self.print_file = print_file
        self.level = 0

    def line(self, text: str) -> None:
        print(_INDENT * self.level + text,
              file=self.print_file if self.print_file is not None else sys.stdout)


def inspect_serializability(base_obj: Any, name: Optional[str] = None, depth: int = 3,
                            print_file: Optional[Any] = None
                            ) -> Tuple[bool, Set[FailureTuple]]:
    """Checks whether ``base_obj`` serializes and, if not, finds out why.

    Args:
        base_obj: the object to check (a function, class, instance, ...).
        name: what to call it in the report; default ``str(base_obj)``.
        depth: how many levels of members to walk into.
        print_file: where to print the report (a file; stdout by default).

    Returns:
        ``(serializable, failures)``: ``failures`` is empty when it
        serializes, else holds the innermost non-serializable members found
        (the object itself when none of its members fails on its own).
    """
    report = _Report(print_file)
    title = f"Checking Serializability of {base_obj}"
    rule = "=" * min(len(title), 80)
    for text in (rule, title, rule):
        report.line(text)
    failures: Set[FailureTuple] = set()
    name = str(base_obj) if name is None else name
    if _inspect(base_obj, name, depth, None, failures, report):
        return True, failures
    report.line(rule)
    listed = "\n".join(f"\t{failure}" for failure in failures)
    report.line(f"Not serializable:\n\n{listed}\n")
    report.line("Other members may fail too; only the first failing one is "
                "followed at each level.")
    report.line("To fix it, create such objects inside the function or class "
                "that uses them (or in the actor's __init__) instead of "
                "capturing them, or make them picklable (__reduce__).")
    report.line(rule)
    return False, failures


def _inspect(obj: Any, name: str, depth: int, parent: Any,
             failures: Set[FailureTuple], report: _Report) -> bool:
    """True if ``obj`` serializes; otherwise records where it fails."""
    if parent is not None:
        report.line(f"Serializing '{name}' {obj}...")
    try:
        cloudpickle.dumps(obj)
        return True
    except Exception as exc:               # noqa: BLE001 - any failure is the answer
        report.line(f"!!! FAIL serialization: {exc}")
    if depth <= 0:
        failures.add(FailureTuple(obj, name, parent))
        return False
    known = len(failures)
    found = False
    for header, members in _member_groups(obj):
        if found:
            break
        if header:
            report.line(header)
        report.level += 1
        try:
            for member_name, member in members:
                if not _inspect(member, member_name, depth - 1, obj, failures, report):
                    found = True
                    break
        finally:
            report.level -= 1
    if not found:
        report.line(f"WARNING: no member of {obj} fails to serialize by itself; "
                    "the object itself is reported.")
    if len(failures) == known:
        failures.add(FailureTuple(obj, name, parent))
    return False


def _member_groups(obj: Any) -> Iterator[Tuple[str, list]]:
    """(header, [(name, member)]) groups to check, in order."""
    if inspect.isfunction(obj):
        closure = inspect.getclosurevars(obj)
        for kind, variables in (("global", closure.globals), ("nonlocal", closure.nonlocals)):
            if variables:
                yield (f"Detected {len(variables)} {kind} variables. "
                       "Checking serializability...", list(variables.items()))
        return
    try:
        members = inspect.getmembers(obj)
    except Exception:                      # noqa: BLE001 - e.g. a property that raises
        return
    # Skipped: dunders, builtins, and obj's own bound methods (they fail
    # only because obj does).
    members = [(n, m) for n, m in members
               if not (n.startswith("__") and n.endswith("__")) and not inspect.isbuiltin(m)
               and not (inspect.ismethod(m) and m.__self__ is obj)]
    # Methods first: a class fails through what its methods refer to.
    members.sort(key=lambda item: not inspect.isfunction(item[1]))
    yield "", members
