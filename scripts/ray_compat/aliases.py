"""Make ``import ray`` load miniray, in every process of a conformance run.

``install()`` runs in the pytest process (the plugin calls it before
collection) and, through a generated shim directory placed first on
PYTHONPATH (a ``sitecustomize`` that calls it at interpreter start, and a
``ray/__init__.py`` for good measure), in every process that process starts:
miniray's daemons and workers (a worker runs functions that use ``ray.*``,
and imports Ray test modules by name) and the drivers that
``run_string_as_driver`` starts. The real ``ray`` package is never imported.

Each ``ray.<name>`` resolves to one of:

* a miniray module with the same public role (``ray.util.*``,
  ``ray.exceptions``, ``ray.actor``, ...): that very module object;
* a stand-in from ``ray_compat`` for Ray's test helpers that can honestly be
  provided (``ray._private.test_utils``, ``ray.cluster_utils``, ...);
* a Ray internal (``ray._private``, ``ray._raylet``, GCS, dashboard,
  autoscaler, Ray Client): an ``InternalModule`` whose attributes are
  placeholders. Using one inside a test skips the test with the name of the
  internal it needed; in any other process it raises ``RayInternalUnavailable``;
* anything else: ``ModuleNotFoundError``, as for a module miniray lacks.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

# ray.<name> -> module that stands in for it (ours, or a library Ray re-exports).
COMPAT_MODULES = {
    "ray._private.test_utils": "ray_compat.ray_test_utils",
    "ray._private.utils": "ray_compat.private_utils",
    "ray._private.client_mode_hook": "ray_compat.client_compat",
    "ray.util.client.ray_client_helpers": "ray_compat.client_compat",
    "ray.tests.client_test_utils": "ray_compat.client_compat",
    "ray.tests.conftest": "ray_compat.fixtures",
    "ray.cluster_utils": "ray_compat.cluster_utils",
    "ray.cloudpickle": "cloudpickle",                   # Ray vendors cloudpickle
    "ray.experimental.state.api": "miniray.util.state",  # Ray's older name for it
    "ray.experimental.internal_kv": "miniray.experimental.internal_kv",
}

# ray.<top>[.*] -> miniray.<top>[.*]: the public modules both have.
PUBLIC_ROOTS = ("util", "exceptions", "actor", "runtime_context", "remote_function",
                "job_config", "dag")

# Prefixes of Ray internals, with why a test using them is out of scope.
INTERNAL_PREFIXES = {
    "ray.util.client": "Ray Client (ray://) is not part of miniray",
    "ray.tests": "Ray's own test package",
    "ray._private": "Ray-internal API",
    "ray._raylet": "Ray-internal API (Cython core)",
    "ray._common": "Ray-internal API",
    "ray.core": "Ray-internal API (generated protobufs)",
    "ray.includes": "Ray-internal API (Cython core)",
    "ray.autoscaler": "Ray autoscaler",
    "ray.dashboard": "Ray dashboard",
    "ray.state": "Ray-internal API (deprecated alias of ray._private.state)",
    "ray.scripts": "Ray's CLI internals (ray.scripts)",
}

# Names an internal module exports that miniray has too: the public miniray
# object ("module:attr"), or a plain value miniray uses as well.
INTERNAL_OVERRIDES = {
    "ray._raylet": {"ObjectRef": "miniray:ObjectRef",
                    "ObjectRefGenerator": "miniray:ObjectRefGenerator",
                    "StreamingObjectRefGenerator": "miniray:ObjectRefGenerator"},
    # The resource only the head node has; miniray names it the same.
    "ray._private.resource_spec": {"HEAD_NODE_RESOURCE_NAME": ("node:__internal_head__",)},
}

# Packages that only exist as parents of the modules above.
_PARENTS = {"ray.experimental", "ray.experimental.state", "ray.util.client"}

_state = {"in_test": False}


class RayInternalUnavailable(RuntimeError):
    """A Ray internal was used outside of a test (for example in a worker)."""


def set_in_test(value: bool) -> None:
    """The plugin flips this while a test (and its fixtures) runs."""
    _state["in_test"] = value


def internal_reason(path: str) -> str:
    for prefix, why in INTERNAL_PREFIXES.items():
        if path == prefix or path.startswith(prefix + "."):
            return f"{why}: {path}"
    return f"Ray-internal API: {path}"


def unavailable(path: str):
    """Skip the running test (or fail, outside a test) for lack of ``path``."""
    reason = internal_reason(path)
    if _state["in_test"]:
        import pytest
        pytest.skip(reason)
    raise RayInternalUnavailable(f"not available in miniray: {reason}")


class Internal:
    """Placeholder for a Ray internal; any real use of it calls ``unavailable``.

    Outside a test, attribute access just chains (so ``from ray._private
    import ray_constants`` and module-level references import: skipping is
    only possible inside a test), and so do calls from a module's top level.
    """
    __slots__ = ("_path",)

    def __init__(self, path: str):
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name):
        if name == "_path" or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        path = f"{self._path}.{name}"
        if _state["in_test"]:
            unavailable(path)
        return Internal(path)

    def __reduce__(self):          # captured by a function shipped to a worker
        return Internal, (self._path,)

    def __setattr__(self, name, value):
        unavailable(f"{self._path}.{name}")

    def __repr__(self):
        return f"<Ray internal {self._path} (not in miniray)>"

    def _use(self, *args, **kwargs):
        unavailable(self._path)

    def __call__(self, *args, **kwargs):
        # Called by a test module's top-level code while it is imported, e.g.
        # ``@pytest.mark.skipif(ray_constants.flag(), ...)``: pytest reads the
        # condition in the test's setup, which then skips. Anywhere else a
        # call is a real use.
        caller = sys._getframe(1).f_code
        if (not _state["in_test"] and caller.co_name == "<module>"
                and os.path.basename(caller.co_filename).startswith("test_")):
            return Internal(f"{self._path}()")
        unavailable(self._path)

    __bool__ = __iter__ = __len__ = __getitem__ = __contains__ = _use
    __int__ = __float__ = __index__ = __enter__ = __eq__ = __ne__ = __lt__ = _use
    __le__ = __gt__ = __ge__ = __neg__ = __abs__ = _use
    # Arithmetic, e.g. ``time.monotonic() + ray_constants.SOME_TIMEOUT``.
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _use
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = _use

    def __mro_entries__(self, bases):
        # ``class Plugin(RuntimeEnvPlugin):`` at a test module's top level:
        # the class is made (on a placeholder base that fails when used), so
        # the module's other tests still run.
        return (_InternalBase,)

    def __hash__(self):            # e.g. a dict lookup with an internal constant
        if _state["in_test"]:
            unavailable(self._path)
        return object.__hash__(self)


class _InternalBase:
    """The base class of a test's subclass of a Ray internal class: making
    one (or calling its methods through super()) is using the internal."""

    def __init__(self, *args, **kwargs):
        unavailable(f"a subclass of a Ray internal class ({type(self).__name__})")


class InternalModule(types.ModuleType):
    """A Ray-internal module: every attribute is an ``Internal`` placeholder,
    except submodules we stand in for and ``INTERNAL_OVERRIDES``."""

    def __init__(self, name: str):
        super().__init__(name, f"Stand-in for {name}, a Ray internal miniray lacks.")
        self.__path__ = []

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        full = f"{self.__name__}.{name}"
        if full in COMPAT_MODULES or full in _PARENTS:
            return importlib.import_module(full)
        override = INTERNAL_OVERRIDES.get(self.__name__, {}).get(name)
        if isinstance(override, tuple):
            return override[0]
        if override:
            module, attr = override.split(":")
            return getattr(importlib.import_module(module), attr)
        if _state["in_test"]:
            unavailable(full)
        return Internal(full)

    def __setattr__(self, name, value):
        if (name.startswith("__") or isinstance(value, types.ModuleType)
                or not _state["in_test"]):
            super().__setattr__(name, value)     # the import system's bookkeeping
        else:
            unavailable(f"{self.__name__}.{name}")


def _is_internal(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in INTERNAL_PREFIXES)


def _target(fullname: str):
    """A zero-argument factory for the module ``fullname`` stands for, or None."""
    if fullname in COMPAT_MODULES:
        return lambda: importlib.import_module(COMPAT_MODULES[fullname])
    if _is_internal(fullname):
        return lambda: InternalModule(fullname)
    if fullname in _PARENTS:
        def parent():
            module = types.ModuleType(fullname, "Parent of modules ray_compat provides.")
            module.__path__ = []
            return module
        return parent
    rest = fullname[len("ray."):]
    if rest.split(".")[0] in PUBLIC_ROOTS:
        candidate = "miniray." + rest
        try:
            found = importlib.util.find_spec(candidate) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            return lambda: importlib.import_module(candidate)
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, factory, alias: str):
        self._factory = factory
        self._alias = alias
        self._spec = None

    def create_module(self, spec):
        module = self._factory()
        self._spec = getattr(module, "__spec__", None)
        return module

    def exec_module(self, module):
        # The import system stamped our alias spec on a module that may be
        # shared with its real name (miniray.util ...): give its own back.
        if self._spec is not None and not isinstance(module, InternalModule):
            module.__spec__ = self._spec
        _alias_loaded_children(module, self._alias)


def _alias_loaded_children(module, alias: str) -> None:
    """Register ``<alias>.<child>`` for submodules of ``module`` already loaded.

    Else importing ``ray.util.placement_group`` later would load it as a new
    module and the import system would then set ``miniray.util.placement_group``
    (the function ``miniray.util`` exports) to the module, as ``ray.util``'s
    child. Loaded under its own name first, it never does that.
    """
    real = getattr(module, "__name__", "")
    if not real.startswith("miniray") or not hasattr(module, "__path__"):
        return
    for name, child in list(sys.modules.items()):
        if name.startswith(real + ".") and child is not None:
            sys.modules.setdefault(alias + name[len(real):], child)


class _RayFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "ray":
            # ``ray`` was dropped from sys.modules (some tests do, to re-import
            # it): import miniray again, never the real ray on sys.path.
            factory = lambda: importlib.import_module("miniray")  # noqa: E731
        elif fullname.startswith("ray."):
            factory = _target(fullname)
        else:
            return None
        if factory is None:
            return None      # the path finder looks in miniray's dirs: not found
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(factory, fullname),
                                              is_package=True)


def _extend_top_level(miniray) -> None:
    """``ray.cloudpickle``, ``ray._raylet``, ``from ray import cluster_utils``:
    names of ``ray`` that are modules we stand in for, read as attributes."""
    original = miniray.__dict__["__getattr__"]
    if getattr(original, "_ray_compat", False):
        return

    def __getattr__(name):
        try:
            return original(name)
        except AttributeError:
            full = f"ray.{name}"
            if full in COMPAT_MODULES or full in _PARENTS or _is_internal(full):
                return importlib.import_module(full)
            raise

    __getattr__._ray_compat = True
    miniray.__getattr__ = __getattr__


def install() -> None:
    """Alias ``ray`` to miniray in this process (idempotent)."""
    import miniray
    from ray_compat.missing import install_import_hook
    if not any(isinstance(f, _RayFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _RayFinder())
    sys.modules["ray"] = miniray
    _alias_loaded_children(miniray, "ray")
    _extend_top_level(miniray)
    install_import_hook(lambda: _state["in_test"])


SHIM_SOURCE = '''"""Generated by ray_compat (scripts/ray_compat/aliases.py): in this process
``import ray`` loads miniray. Not Ray's code."""
from ray_compat.aliases import install as _install

_install()
'''

SITECUSTOMIZE_SOURCE = '''"""Generated by ray_compat (scripts/ray_compat/aliases.py):
every process of a conformance run aliases ``ray`` to miniray from the start, since a miniray
worker runs functions that reach ``ray.<name>`` without importing ``ray``."""
import importlib.machinery
import importlib.util
import os
import sys


def _run_next_sitecustomize():
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_run_next_sitecustomize()
try:
    from ray_compat.aliases import install

    install()
except Exception as exc:  # noqa: BLE001 - never stop the interpreter from starting
    print(f"ray_compat: could not alias ray to miniray: {exc!r}", file=sys.stderr)
'''


def write_shim(directory: str) -> str:
    """Write the shim (``<directory>/ray/__init__.py`` and a ``sitecustomize``
    that installs the aliases at interpreter start) and return ``directory``."""
    package = os.path.join(directory, "ray")
    os.makedirs(package, exist_ok=True)
    with open(os.path.join(package, "__init__.py"), "w") as f:
        f.write(SHIM_SOURCE)
    with open(os.path.join(directory, "sitecustomize.py"), "w") as f:
        f.write(SITECUSTOMIZE_SOURCE)
    return directory


def subprocess_pythonpath(shim_dir: str, existing: str | None = None) -> str:
    """PYTHONPATH for child processes: the shim first, then ray_compat's parent."""
    scripts_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = [shim_dir, scripts_dir] + [p for p in (existing or "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(parts))
