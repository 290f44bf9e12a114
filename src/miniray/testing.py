"""Helpers for tests of programs that use miniray (like trio.testing)."""
from __future__ import annotations

import time
from typing import Callable


def wait_for_condition(condition: Callable[[], bool], timeout: float = 10.0,
                       retry_interval_ms: float = 20, **kwargs) -> None:
    """Poll ``condition(**kwargs)`` until it is true; raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            if condition(**kwargs):
                return
        except Exception as exc:       # noqa: BLE001 - retried until the deadline
            last_error = exc
        time.sleep(retry_interval_ms / 1000)
    message = f"condition not met within {timeout}s"
    if last_error is not None:
        message += f" (last error: {last_error!r})"
    raise RuntimeError(message)
