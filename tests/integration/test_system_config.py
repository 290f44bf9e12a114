"""init(_system_config=...) reaches the cluster's processes, as in Ray."""
from __future__ import annotations

import pytest

import miniray as ray
from miniray.common import config

pytestmark = pytest.mark.timeout(120)


@ray.remote
def seen():
    import sys
    from miniray.common import config as worker_config
    return "html.parser" in sys.modules, worker_config.MAX_INLINE_OBJECT_BYTES


def test_system_config_reaches_workers_and_the_driver_gets_its_own_back():
    before = config.MAX_INLINE_OBJECT_BYTES
    ray.init(num_cpus=1, _system_config={"preload_python_modules": ["html.parser"],
                                         "max_direct_call_object_size": 2048})
    try:
        assert config.MAX_INLINE_OBJECT_BYTES == 2048       # the driver too
        assert ray.get(seen.remote()) == (True, 2048)
    finally:
        ray.shutdown()
    assert config.MAX_INLINE_OBJECT_BYTES == before
    ray.init(num_cpus=1)
    try:
        assert ray.get(seen.remote())[1] == before
    finally:
        ray.shutdown()


def test_a_driver_that_connects_takes_the_clusters_system_config():
    """As in Ray, _system_config is the cluster's: given to the head, it
    holds for a driver that connects later (here: lost objects name where
    their refs were made, with record_ref_creation_sites)."""
    from miniray import exceptions
    from miniray.testing import Cluster
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1, _system_config={"record_ref_creation_sites": True})
        cluster.wait_for_nodes()
        assert config.RECORD_REF_CREATION_SITES is False
        cluster.connect()
        assert config.RECORD_REF_CREATION_SITES is True
        import numpy as np
        ref = ray.put(np.zeros(1_000_000))
        from miniray.core_worker.object_ref import core_worker
        worker = core_worker()
        worker.run(worker._free_plasma([bytes(ref.id)]))     # its only copy
        with pytest.raises(exceptions.ObjectLostError) as info:
            ray.get(ref, timeout=20)
        assert "(put object) | test_system_config.py:" \
               "test_a_driver_that_connects_takes_the_clusters_system_config" \
               in str(info.value)
    finally:
        cluster.shutdown()
    assert config.RECORD_REF_CREATION_SITES is False
