"""The short chaos run of CI (the long one: ``python tests/chaos/chaos.py
--seed S --duration 600``). The suite-wide guard (tests/conftest.py) then
checks that nothing is left: processes, shared memory, session files."""
from __future__ import annotations

import pytest

from chaos import GCS_KILLS, run_chaos


@pytest.mark.timeout(300)
def test_short_chaos_run_checks_every_result():
    stats = run_chaos(seed=20261130, duration=20.0)
    assert stats["kills"]["gcs"] == GCS_KILLS
    assert stats["kills"]["raylet"] == 1
    assert stats["kills"]["worker"] > 0
    assert stats["rounds"] > 0 and stats["tasks_checked"] > 0
