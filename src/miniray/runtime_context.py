"""get_runtime_context(): what the calling process is running."""
from __future__ import annotations

from miniray import api


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
        if self._worker.mode == "driver":
            return None
        task_id = self._worker._ctx.task_id
        return task_id.hex() if task_id else None

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
        task_id = self._worker._ctx.task_id
        if actor is None or task_id is None:
            raise RuntimeError("This method is only available in an actor task.")
        return task_id in actor.canceled

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
        return actor.handle()

    def get_assigned_resources(self) -> dict:
        return {}

    def get_runtime_env_string(self) -> str:
        return "{}"

    def get_accelerator_ids(self) -> dict:
        return {"GPU": []}

    @property
    def gcs_address(self) -> str:
        return self._worker.gcs_address

    def get(self) -> dict:
        return {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
                "task_id": self.get_task_id(), "namespace": self.namespace}


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext(api.ensure_initialized())
