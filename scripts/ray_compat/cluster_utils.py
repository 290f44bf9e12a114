"""``ray.cluster_utils``: Ray's ``Cluster`` signature on ``miniray.testing.Cluster``.

Differences adapted here: Ray's constructor also takes ``shutdown_at_exit``
(miniray's nodes die with the process that started them anyway); Ray's
``address`` is None before the head node is added; Ray's node objects carry
``unique_id`` (the node id in hex) and ``address``. (Both record the head
as the machine's current cluster; the run has its own miniray temp dir, so
that file is the run's, not the machine's.)
"""
from __future__ import annotations

from miniray import testing

# Ray skips cluster tests on platforms where it cannot run several nodes.
cluster_not_supported = False


_live: list = []        # clusters made and not shut down yet


def shutdown_leftovers() -> None:
    """Shut down every cluster still up (the plugin calls it after each test)."""
    while _live:
        cluster = _live.pop()
        try:
            cluster.shutdown()
        except Exception:          # noqa: BLE001 - best effort, between tests
            pass


class Cluster(testing.Cluster):
    def __init__(self, initialize_head: bool = False, connect: bool = False,
                 head_node_args: dict | None = None, shutdown_at_exit: bool = True):
        _live.append(self)
        super().__init__(initialize_head=initialize_head, connect=connect,
                         head_node_args=head_node_args)

    @property
    def address(self):
        # Ray: None until the head node is added (miniray raises).
        return None if self.head_node is None else self.head_node.gcs_address

    def add_node(self, wait: bool = True, **node_args):
        is_head = self.head_node is None
        node = super().add_node(wait=wait, **node_args)
        node.unique_id = node.node_id.hex()
        node.address = node.gcs_address
        # Ray's node objects can kill their own daemons (tests of failures).
        node.kill_raylet = lambda: _kill(node, "miniray.raylet")
        if is_head:
            # miniray's GCS needs no Redis to come back: its supervisor
            # restarts it at once, from its own store; "start" waits for that.
            node.kill_gcs_server = lambda: testing.kill_gcs(node.gcs_address)
            node.start_gcs_server = lambda: _wait_for_gcs(node.gcs_address)
        return node

    def shutdown(self) -> None:
        if self in _live:
            _live.remove(self)
        super().shutdown()


def _kill(node, module: str) -> None:
    """SIGKILL the node's process started as ``python -m <module>``, and reap it."""
    for proc in node.processes:
        if module in proc.args and proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_for_gcs(address: str, timeout: float = 60.0) -> None:
    from miniray.node import get_cluster
    get_cluster(address, wait_s=timeout)


def __getattr__(name):
    from ray_compat.aliases import InternalModule
    return InternalModule("ray.cluster_utils").__getattr__(name)
