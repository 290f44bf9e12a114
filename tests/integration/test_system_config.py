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
