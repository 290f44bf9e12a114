"""get_runtime_context(): what the calling process is running.

Per-call values (task id, placement group, ...) come from the task context
of the calling thread or asyncio task, so they are right in threaded and
async actors running many calls at once.
"""
from __future__ import annotations

import warnings

from miniray import api
from miniray.common.ids import PlacementGroupID
from miniray.core_worker import accelerators, task_context


class RuntimeContext:
    """A view of the current driver or worker (job, task, node, worker)."""

    def __init__(self, worker):
        self._worker = worker

    def get_job_id(self) -> str:
        return self._worker.job_id.hex()

    def get_node_id(self) -> str:
        return self._worker.node_id.hex()

    def get_worker_id(self) -> str:
        return self._worker.worker_id.hex()

    def get_task_id(self) -> str | None:
        """The running task's id (None in the driver). In a thread a task
        started, as in Ray, the id the worker uses for work done outside
        tasks (it carries the job's id)."""
        context = task_context.current()
        if context is not None:
            return context.task_id.hex()
        return self._worker.current_task_id.hex() if self._in_worker() else None

    def _in_worker(self) -> bool:
        from miniray.core_worker.core_worker import WORKER
        return self._worker.mode == WORKER

    def get_placement_group_id(self) -> str | None:
        """The placement group of the running task or actor, if any."""
        context = task_context.current()
        if context is None or context.placement_group is None:
            return None
        return context.placement_group.placement_group_id.hex()

    @property
    def should_capture_child_tasks_in_placement_group(self) -> bool:
        context = task_context.current()
        return bool(context is not None and context.capture_child_tasks)

    def _actor(self):
        executor = self._worker.executor
        return executor.actor if executor is not None else None

    def get_actor_id(self) -> str | None:
        actor = self._actor()
        return actor.actor_id.hex() if actor else None

    def get_actor_name(self) -> str | None:
        """The actor's name ("" for an unnamed actor, as in Ray); None
        outside actors."""
        actor = self._actor()
        return actor.name if actor else None

    def is_canceled(self) -> bool:
        """In an actor method: whether its call was cancelled."""
        actor = self._actor()
        context = task_context.current()
        if actor is None or context is None:
            raise RuntimeError("This method is only available in an actor task.")
        return context.task_id in actor.canceled

    def get_task_function_name(self) -> str | None:
        """<module>.<function> of the running task (<module>.<Class>.<method>
        in an actor); None in the driver."""
        context = task_context.current()
        if context is None or not context.function_descriptor:
            return None
        return context.function_descriptor

    def get_task_name(self) -> str | None:
        return self._worker.current_task_name or None

    @property
    def namespace(self) -> str:
        return self._worker.namespace

    def get_namespace(self) -> str:
        return self.namespace

    @property
    def was_current_actor_reconstructed(self) -> bool:
        actor = self._actor()
        return bool(actor and actor.num_restarts > 0)

    @property
    def current_actor(self):
        actor = self._actor()
        if actor is None:
            raise RuntimeError("This method is only available in an actor.")
        from miniray.actor import ActorHandle
        return ActorHandle(actor.actor_id, actor.meta, actor.class_name, actor.owner,
                           actor.max_pending_calls, out_of_order=actor.out_of_order)

    def get_assigned_resources(self) -> dict:
        return accelerators.assigned_resources()

    def get_runtime_env_string(self) -> str:
        """The runtime env this process runs in, as JSON ("{}": none)."""
        return self._worker.runtime_env_json or "{}"

    @property
    def runtime_env(self):
        """The runtime env this process runs in (a RuntimeEnv; packages as
        their gcs:// URIs), as Ray reports it."""
        from miniray.runtime_env import RuntimeEnv
        return RuntimeEnv(_validate=False, **self._worker.runtime_env)

    def get_accelerator_ids(self) -> dict:
        return accelerators.accelerator_ids()

    @property
    def gcs_address(self) -> str:
        return self._worker.gcs_address

    def get(self) -> dict:
        """Ray's summary dict (id objects): job and node, the task's id in
        workers, the actor's id in actors."""
        worker = self._worker
        info = {"job_id": worker.job_id, "node_id": worker.node_id,
                "namespace": self.namespace}
        context = task_context.current()
        if context is not None:
            info["task_id"] = context.task_id
        actor = self._actor()
        if actor is not None:
            info["actor_id"] = actor.actor_id
        return info

    # --- Ray's deprecated properties: id objects (use the get_*() methods) ------------
    @property
    def job_id(self):
        _deprecated("job_id", "get_job_id")
        return self._worker.job_id

    @property
    def node_id(self):
        _deprecated("node_id", "get_node_id")
        return self._worker.node_id

    @property
    def task_id(self):
        _deprecated("task_id", "get_task_id")
        context = task_context.current()
        if context is not None:
            return context.task_id
        return self._worker.current_task_id if self._in_worker() else None

    @property
    def actor_id(self):
        _deprecated("actor_id", "get_actor_id")
        actor = self._actor()
        return actor.actor_id if actor is not None else None

    @property
    def current_placement_group_id(self):
        _deprecated("current_placement_group_id", "get_placement_group_id")
        group = self.get_placement_group_id()
        return PlacementGroupID.from_hex(group) if group else None


def _deprecated(name: str, instead: str) -> None:
    warnings.warn(f"RuntimeContext.{name} is deprecated. Use {instead}() instead.",
                  DeprecationWarning, stacklevel=3)


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext(api.ensure_initialized())
