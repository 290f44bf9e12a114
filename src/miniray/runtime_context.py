"""get_runtime_context(): what the calling process is running.

Per-call values (task id, placement group, ...) come from the task context
of the calling thread or asyncio task, so they are right in threaded and
async actors running many calls at once.
"""
from __future__ import annotations

from miniray import api
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
        """The running task's id (None in the driver)."""
        context = task_context.current()
        return context.task_id.hex() if context is not None else None

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
        actor = self._actor()
        return (actor.name or None) if actor else None

    def is_canceled(self) -> bool:
        """In an actor method: whether its call was cancelled."""
        actor = self._actor()
        context = task_context.current()
        if actor is None or context is None:
            raise RuntimeError("This method is only available in an actor task.")
        return context.task_id in actor.canceled

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
                           actor.max_pending_calls)

    def get_assigned_resources(self) -> dict:
        return accelerators.assigned_resources()

    def get_runtime_env_string(self) -> str:
        return "{}"

    @property
    def runtime_env(self) -> dict:
        return {}

    def get_accelerator_ids(self) -> dict:
        return accelerators.accelerator_ids()

    @property
    def gcs_address(self) -> str:
        return self._worker.gcs_address

    def get(self) -> dict:
        """Ray's summary dict of the above."""
        info = {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
                "namespace": self.namespace}
        if self._worker.mode != "driver":
            info["task_id"] = self.get_task_id()
            info["actor_id"] = self.get_actor_id()
        return info


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext(api.ensure_initialized())
