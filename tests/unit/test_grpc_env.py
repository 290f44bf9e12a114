"""miniray turns gRPC's EventEngine client and listener off (a stream round
trip crosses two fewer threads) where the installed grpcio knows those
experiments, and never overrides the user's own GRPC_EXPERIMENTS."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

PROBE = ("import miniray, os, grpc; grpc.insecure_channel('127.0.0.1:1').close(); "
         "print(os.environ.get('GRPC_EXPERIMENTS'))")


def _run(env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=50)


def test_experiments_off_for_this_grpcio_and_grpc_accepts_them():
    import grpc
    done = _run({})
    assert done.returncode == 0, done.stderr
    major, minor = (int(x) for x in grpc.__version__.split(".")[:2])
    if (1, 85) <= (major, minor) <= (1, 89):
        assert done.stdout.strip() == "-event_engine_client,-event_engine_listener"
    else:
        assert done.stdout.strip() == "None"
    # gRPC logs an unknown experiment name as an error: none here.
    assert "Unknown experiment" not in done.stderr


def test_the_users_setting_wins():
    done = _run({"GRPC_EXPERIMENTS": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
