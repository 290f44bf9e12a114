"""``@miniray.remote``, with or without options."""
from __future__ import annotations

import inspect

from miniray.remote_function import RemoteFunction


def remote(*args, **options):
    """Make a function a remote function (``f.remote(...)`` runs it as a task)
    or a class an actor class (``Cls.remote(...)`` creates an actor).

    Use as ``@remote`` or ``@remote(num_cpus=2, num_returns=2, ...)``.
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make(args[0], {})
    if args or not options:                 # @remote(1), @remote()
        raise TypeError("The @remote decorator must be applied either with no "
                        "arguments and no parentheses, or with keyword options, "
                        "e.g. @remote(num_cpus=1)")
    return lambda target: _make(target, options)


def _make(target, options: dict):
    if inspect.isclass(target):
        from miniray.actor import ActorClass
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@remote needs a function, got {target!r}")
    return RemoteFunction(target, options)
