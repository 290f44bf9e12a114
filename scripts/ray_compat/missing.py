"""Public Ray names miniray lacks, reported per test instead of per file.

A Ray test file that starts with ``from ray.util.state import list_tasks``
would fail to import as a whole when miniray has no ``list_tasks``, and
every test in it would be lost to one collection error. So, while a test
module is imported (``from ray... import ...`` at its top level, in the
pytest process or in a worker), a public name or module miniray lacks is
bound to a ``Missing`` placeholder instead. Any use of the placeholder
raises ``MissingInMiniray`` (an AttributeError), so exactly the tests that
need the name fail, with its name in the message. It never makes a test
pass: calling it, reading its attributes, or matching an exception against
it (``pytest.raises``) all raise.

Imports made while a test runs are left alone (a test may check that an
import fails), as are imports from any module that is not a test file.
"""
from __future__ import annotations

import builtins
import importlib
import os
import types


class MissingInMiniray(AttributeError):
    """Raised on use of a public Ray name that miniray does not provide."""


def _fail(ray_name: str):
    raise MissingInMiniray(f"miniray has no {ray_name} (public Ray API)")


class _MissingMeta(type):
    def __call__(cls, *args, **kwargs):
        _fail(cls._ray_name)

    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        _fail(f"{cls._ray_name} (used as {cls._ray_name}.{name})")

    def __instancecheck__(cls, obj):
        _fail(cls._ray_name)

    def __subclasscheck__(cls, sub):
        _fail(cls._ray_name)

    def __repr__(cls):
        return f"<{cls._ray_name}: missing in miniray>"


def missing(ray_name: str) -> type:
    """A placeholder class for ``ray_name`` (a class, so it can sit where an
    exception type is expected and still fail when it is matched)."""
    return _MissingMeta(ray_name.rsplit(".", 1)[-1], (Exception,), {"_ray_name": ray_name})


class MissingModule(types.ModuleType):
    """A public Ray module miniray lacks, as seen by ``from <it> import ...``."""

    def __init__(self, name: str):
        super().__init__(name, f"{name}: missing in miniray")

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return missing(f"{self.__name__}.{name}")


class _FromImport:
    """What ``from <ray module> import a, b`` reads names from: the module's
    own attribute, else its submodule, else a ``missing`` placeholder."""

    def __init__(self, module, ray_name: str):
        self._module = module
        self._ray_name = ray_name

    def __getattr__(self, name):
        try:
            return getattr(self._module, name)
        except AttributeError:
            pass
        try:
            return importlib.import_module(f"{self._ray_name}.{name}")
        except ImportError:
            return missing(f"{self._ray_name}.{name}")


_original_import = builtins.__import__


def _from_test_module(name, globals_, level, in_test) -> bool:
    if in_test() or level != 0 or not (name == "ray" or name.startswith("ray.")):
        return False
    filename = os.path.basename((globals_ or {}).get("__file__") or "")
    return filename.startswith("test_") and filename.endswith(".py")


def install_import_hook(in_test) -> None:
    """Wrap ``__import__`` (once); ``in_test()`` tells when a test is running."""
    if getattr(builtins.__import__, "_ray_compat", False):
        return

    def _import(name, globals=None, locals=None, fromlist=(), level=0):
        lenient = fromlist and _from_test_module(name, globals, level, in_test)
        try:
            module = _original_import(name, globals, locals, fromlist, level)
        except ModuleNotFoundError as exc:
            if lenient and exc.name and (exc.name == name or name.startswith(exc.name + ".")):
                return MissingModule(name)
            raise
        if lenient and isinstance(module, types.ModuleType) and \
                not isinstance(module, MissingModule):
            if any(n != "*" and not hasattr(module, n) for n in fromlist):
                return _FromImport(module, name)
        return module

    _import._ray_compat = True
    builtins.__import__ = _import
