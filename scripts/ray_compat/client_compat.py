"""What Ray's tests ask of Ray Client (``ray://``), which miniray does not have.

The facts are honest (client mode is never on); a test that needs a client
connection is skipped.
"""
from __future__ import annotations

import contextlib


def client_mode_should_convert() -> bool:
    """Ray: whether calls go through Ray Client. Never, here."""
    return False


@contextlib.contextmanager
def connect_to_client_or_not(connect_to_client: bool):
    if connect_to_client:
        import pytest
        pytest.skip("Ray Client (ray://) is not part of miniray")
    yield


def create_remote_signal_actor(ray):
    """Ray's tests use this to get a SignalActor class for the given ``ray``."""
    from miniray.testing import SignalActor
    return SignalActor


def __getattr__(name):
    from ray_compat.aliases import unavailable, Internal, _state
    if _state["in_test"]:
        unavailable(f"ray.util.client.{name}")
    return Internal(f"ray.util.client.{name}")
