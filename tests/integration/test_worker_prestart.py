"""The raylet starts workers ahead for an owner's backlog, as Ray does: an
owner that queues more tasks than it has lease requests out (at most 10 per
shape) tells the raylet, which starts plain workers for them. Without it,
short tasks all run on the leases already granted and the pool never grows
to the node's CPUs, so later bursts cannot run at once."""
from __future__ import annotations

import pytest

import miniray as ray
from miniray.testing import wait_for_condition
from miniray.util.state import list_workers

NUM_CPUS = 14
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=NUM_CPUS)
    yield
    ray.shutdown()


@ray.remote
def quick():
    return 1


def _live_workers() -> int:
    return sum(1 for w in list_workers(detail=True)
               if w.is_alive and w.worker_type == "WORKER")


def test_a_backlog_of_short_tasks_grows_the_pool_to_the_cpus(cluster):
    # 14 queued tasks: 10 lease requests go out, the other 4 are the
    # backlog. The requests alone would bring 10 workers at most (2 were
    # prestarted); the backlog brings the rest.
    assert ray.get([quick.remote() for _ in range(NUM_CPUS)]) == [1] * NUM_CPUS
    wait_for_condition(lambda: _live_workers() >= NUM_CPUS, timeout=120)
