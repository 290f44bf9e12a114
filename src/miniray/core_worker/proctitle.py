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

MARKER = "MINIRAY_CORE_WORKER"
PREFIX = "ray::"
IDLE = PREFIX + "IDLE"


def set_title(title: str) -> None:
    """(Workers only: a driver keeps its own command line.)"""
    global _setproctitle
    if _setproctitle is None:
        # The title goes in the command line's own memory only: by default
        # setproctitle may take over the environment's too, which would
        # wipe MARKER from /proc/<pid>/environ. Read on its first use.
        os.environ.setdefault("SPT_NOENV", "1")
        from setproctitle import setproctitle
        _setproctitle = setproctitle
    _setproctitle(title)


_setproctitle = None


def task_title(name: str) -> str:
    return PREFIX + name
