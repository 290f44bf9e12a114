"""``ray.cluster_utils``: Ray's ``Cluster`` signature on ``miniray.testing.Cluster``.

Differences adapted here: Ray's constructor also takes ``shutdown_at_exit``
(miniray's nodes die with the process that started them anyway), and Ray's
node objects carry ``unique_id`` (the node id in hex) and ``address``.
"""
from __future__ import annotations

from miniray import testing

# Ray skips cluster tests on platforms where it cannot run several nodes.
cluster_not_supported = False


class Cluster(testing.Cluster):
    def __init__(self, initialize_head: bool = False, connect: bool = False,
                 head_node_args: dict | None = None, shutdown_at_exit: bool = True):
        super().__init__(initialize_head=initialize_head, connect=connect,
                         head_node_args=head_node_args)

    def add_node(self, wait: bool = True, **node_args):
        node = super().add_node(wait=wait, **node_args)
        node.unique_id = node.node_id.hex()
        node.address = node.gcs_address
        return node


def __getattr__(name):
    from ray_compat.aliases import InternalModule
    return InternalModule("ray.cluster_utils").__getattr__(name)
