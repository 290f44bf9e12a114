"""What the calling code is running, per call: the current task's id and
name, its placement group, and a counter for the ids of objects it puts.

Kept in a ``contextvars.ContextVar`` rather than a thread-local: a threaded
actor runs calls on several threads and an async actor interleaves many
calls as asyncio tasks on one thread; asyncio gives each task its own copy
of the context, so each call sees its own task. The executor enters a
context around each call; everything else reads it.
"""
from __future__ import annotations

import itertools
from contextvars import ContextVar, Token

from miniray.common.ids import ObjectID, TaskID
from miniray.protocol import common_pb2


class TaskContext:
    __slots__ = ("task_id", "name", "placement_group", "capture_child_tasks",
                 "depth", "root_detached", "_descriptor", "_method", "_puts")

    def __init__(self, task_id: TaskID, name: str = "", placement_group=None,
                 capture_child_tasks: bool = False, depth: int = 0,
                 root_detached: bytes = b"", function_descriptor: str = "",
                 method: str = ""):
        self.task_id = task_id
        self.depth = depth          # 0 outside tasks (the driver); see TaskSpec.depth
        self.name = name
        # The SchedulingStrategy (PLACEMENT_GROUP kind) of the task or of
        # the actor it runs on, or None.
        self.placement_group = placement_group
        self.capture_child_tasks = capture_child_tasks
        # The detached actor this code descends from (b"": the driver's job):
        # what it submits carries it (TaskSpec.root_detached_actor_id).
        self.root_detached = root_detached
        # TaskSpec.function_descriptor; for an actor's call, its class's
        # (<module>.<Class>) and the method, joined only when asked for.
        self._descriptor = function_descriptor
        self._method = method
        self._puts = itertools.count(1)       # next() is atomic under the GIL

    @property
    def function_descriptor(self) -> str:
        """<module>.<function>, or <module>.<Class>.<method> ("": unknown)."""
        if self._method and self._descriptor:
            return f"{self._descriptor}.{self._method}"
        return self._descriptor

    def next_put_id(self) -> ObjectID:
        return ObjectID.for_put(self.task_id, next(self._puts))


_current: ContextVar[TaskContext | None] = ContextVar("miniray_task", default=None)


def current() -> TaskContext | None:
    """The context of the task this code runs in, or None outside tasks."""
    return _current.get()


def enter(context: TaskContext) -> Token:
    return _current.set(context)


def leave(token: Token) -> None:
    _current.reset(token)


def for_spec(spec, actor_strategy=None, actor_root: bytes | None = None,
             actor_class: str = "") -> TaskContext:
    """The context of a task about to run; an actor's calls belong to the
    actor's placement group (``actor_strategy``, its creation strategy),
    descend from what the actor descends from (``actor_root``) and are
    methods of its class (``actor_class``, <module>.<Class>)."""
    strategy = actor_strategy if actor_strategy is not None else spec.scheduling_strategy
    if strategy.kind != strategy.PLACEMENT_GROUP:
        strategy = None
    return TaskContext(TaskID(spec.task_id), spec.function_name, strategy,
                       bool(strategy is not None and strategy.capture_child_tasks),
                       spec.depth, root_detached_of(spec) if actor_root is None
                       else actor_root,
                       actor_class or spec.function_descriptor,
                       spec.method_name if actor_class else "")


def root_detached_of(spec) -> bytes:
    """The detached actor a task descends from: a detached actor's creation
    is its own root; anything else inherits its submitter's."""
    if spec.type == common_pb2.ACTOR_CREATION_TASK and spec.actor_options.detached:
        return spec.actor_id
    return spec.root_detached_actor_id
