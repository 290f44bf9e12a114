"""The address of a core worker (driver or worker process)."""
from __future__ import annotations

from typing import NamedTuple

from miniray.common.ids import NodeID, WorkerID


class WorkerAddress(NamedTuple):
    ip: str
    port: int
    worker_id: WorkerID
    node_id: NodeID

    @property
    def target(self) -> str:
        """host:port, as gRPC wants it."""
        return f"{self.ip}:{self.port}"

    def to_proto(self, msg) -> None:
        msg.ip, msg.port = self.ip, self.port
        msg.worker_id, msg.node_id = self.worker_id, self.node_id

    @classmethod
    def from_proto(cls, msg) -> "WorkerAddress":
        return cls(msg.ip, msg.port, WorkerID(msg.worker_id), NodeID(msg.node_id))
