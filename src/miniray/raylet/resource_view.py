"""What a raylet tells the GCS about its resources, and what it knows of the
other nodes' (pure: the heartbeat loop does the I/O).

Both directions carry deltas (see gcs/node_manager.py): a node with many
placement-group bundles has thousands of resource names, and one task
starting changes one or two of them.
"""
from __future__ import annotations

import time

from miniray.raylet.cluster_policy import NodeView


def delta(current: dict, sent: dict) -> tuple[dict, list]:
    """The amounts in ``current`` that differ from ``sent``, and the names
    ``sent`` had that ``current`` has not."""
    if current == sent:
        return {}, []
    changed = {name: amount for name, amount in current.items()
               if sent.get(name) != amount}
    return changed, [name for name in sent if name not in current]


class ResourceReport:
    """The resource part of this node's heartbeats: whole maps to a GCS
    that has none from us (the first heartbeat, or after it restarted),
    then what changed since the last heartbeat it took."""

    def __init__(self):
        self._sent: tuple[dict, dict] | None = None     # as the GCS has them

    def unchanged(self, available: dict, total: dict) -> bool:
        return self._sent is not None and self._sent == (available, total)

    def build(self, available: dict, total: dict):
        """(whole, (available set, removed), (total set, removed), snapshot);
        pass the snapshot to ``taken`` once the GCS took the heartbeat."""
        snapshot = (dict(available), dict(total))
        if self._sent is None:
            return True, (snapshot[0], []), (snapshot[1], []), snapshot
        return (False, delta(snapshot[0], self._sent[0]),
                delta(snapshot[1], self._sent[1]), snapshot)

    def taken(self, snapshot) -> None:
        self._sent = snapshot

    def reset(self) -> None:
        """The GCS lost what we told it (it restarted): whole maps next."""
        self._sent = None


class ClusterView:
    """The other nodes as the GCS last described them, for spillback: a
    whole view, then the changes since its version. Replies may arrive out
    of order (a heartbeat's and a refresh's): an older one is ignored."""

    def __init__(self, local_node_id: bytes):
        self.local_node_id = local_node_id
        self.nodes: dict[bytes, NodeView] = {}
        self.version = 0
        self.incarnation = b""             # of the GCS the view is from
        self.updated_at = 0.0              # time.monotonic() of the last reply

    def apply(self, reply, now: float | None = None) -> None:
        """Apply a HeartbeatReply or GetAllNodesReply (full_view, nodes,
        changes, view_version, gcs_incarnation)."""
        same = reply.gcs_incarnation == self.incarnation
        if same and reply.view_version < self.version:
            return
        if reply.full_view:
            self.nodes = {n.node_id: _node_view(n) for n in reply.nodes
                          if n.alive and n.node_id != self.local_node_id}
        elif not same or not self._update(reply.changes):
            self.version = 0           # cannot build on it: a whole view next
            return
        self.version, self.incarnation = reply.view_version, reply.gcs_incarnation
        self.updated_at = time.monotonic() if now is None else now

    def _update(self, changes) -> bool:
        """False if a change builds on a node this view does not have."""
        complete = True
        for change in changes:
            node = change.node
            if node.node_id == self.local_node_id:
                continue
            if not node.alive:
                self.nodes.pop(node.node_id, None)
                continue
            if change.full:
                self.nodes[node.node_id] = _node_view(node)
                continue
            view = self.nodes.get(node.node_id)
            if view is None:
                complete = False
                continue
            for mine, theirs in ((view.available, change.available),
                                 (view.total, change.total)):
                for name in theirs.removed:
                    mine.pop(name, None)
                mine.update(theirs.set)
        return complete


def _node_view(node) -> NodeView:
    return NodeView(node.node_id, f"{node.ip}:{node.raylet_port}",
                    dict(node.resources_total), dict(node.resources_available))
