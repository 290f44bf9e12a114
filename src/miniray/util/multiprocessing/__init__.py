"""``multiprocessing.Pool`` on miniray actors (Ray's ``ray.util.multiprocessing``).

Import it explicitly: ``from miniray.util.multiprocessing import Pool``.
The pool runs in the caller's process (a driver, or a task that uses a pool
itself); its processes are actors, so they may sit on any node.
"""
from multiprocessing import JoinableQueue, TimeoutError

from miniray.util.multiprocessing.pool import Pool

__all__ = ["Pool", "TimeoutError", "JoinableQueue"]
