"""``ray._private.utils``: the one generic helper Ray's Core tests use from it.

The rest of that module is Ray-internal (see ``aliases.Internal``).
"""
from __future__ import annotations

import asyncio


def get_or_create_event_loop() -> asyncio.AbstractEventLoop:
    """The running event loop; else this thread's loop, made if it has none."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop


def __getattr__(name):
    from ray_compat.aliases import InternalModule
    return InternalModule("ray._private.utils").__getattr__(name)
