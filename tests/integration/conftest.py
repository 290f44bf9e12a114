from __future__ import annotations

import pytest

import miniray


@pytest.fixture(scope="module")
def ray_start():
    """A 2-CPU local cluster shared by the tests of a module."""
    context = miniray.init(num_cpus=2, object_store_memory=512 * 1024 * 1024)
    yield context
    miniray.shutdown()


@pytest.fixture
def shutdown_only():
    """For tests that call init() themselves."""
    yield
    miniray.shutdown()
