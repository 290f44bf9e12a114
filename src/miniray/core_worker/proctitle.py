"""A worker's process title, as Ray sets it, for ``ps``, ``top`` and py-spy:
``ray::IDLE`` while the worker waits, ``ray::<task name>`` while it runs a
task (the function's name, ``Class.method`` for an actor call, or the
call's ``name=`` option), ``ray::<Class>`` for an actor between calls.

Setting the title overwrites the command line (``-m miniray.core_worker
...``) that told a miniray worker apart; so workers also carry MARKER in
their environment, which `miniray stop` looks for in processes titled
``ray::`` (never touching a Ray worker, which lacks it).
"""
from __future__ import annotations

import os
import threading

MARKER = "MINIRAY_CORE_WORKER"
PREFIX = "ray::"
IDLE = PREFIX + "IDLE"


def set_title(title: str) -> None:
    """(Workers only: a driver keeps its own command line.) From any thread;
    as in Ray, only the main thread's name follows the title: a thread that
    runs calls (an async actor's loop, a threaded actor's pool) keeps its
    own name, so the actor's threads keep the names they started with."""
    global _spt
    if _spt is None:
        # The title goes in the command line's own memory only: by default
        # setproctitle may take over the environment's too, which would
        # wipe MARKER from /proc/<pid>/environ. Read on its first use.
        os.environ.setdefault("SPT_NOENV", "1")
        import setproctitle
        _spt = setproctitle
    if threading.current_thread() is threading.main_thread():
        _spt.setproctitle(title)
        return
    name = _spt.getthreadtitle()      # setproctitle renames the calling thread
    _spt.setproctitle(title)
    _spt.setthreadtitle(name)


_spt = None


def task_title(name: str) -> str:
    return PREFIX + name
