"""Setting runtime environments up on a node (runs in the raylet's loop).

For a serialized runtime_env, ``setup`` makes sure its resources exist in
the node's cache (``<session>/runtime_resources``) and returns how to start
a worker inside it (``WorkerEnv``):

- ``working_dir``: the package unpacked once; the worker's cwd and first
  import path;
- ``py_modules``: each package unpacked once, on the worker's import path;
- ``pip``: a virtualenv per distinct requirement set, made once (it sees
  the packages of the interpreter miniray runs on, after its own); the
  worker runs its python, with the venv's bin first on PATH;
- ``env_vars``: set in the worker's environment.

Concurrent setups of one resource share the work; a failed one is not
cached (the next task tries again) and raises RuntimeEnvSetupError with
the reason (pip's own output, for a failed install). Workers acquire the
resources they were started with and release them when they exit;
uri_cache.URICache decides which unused ones to delete.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import site
import sys
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from miniray.exceptions import RuntimeEnvSetupError
from miniray.runtime_env import packaging
from miniray.runtime_env.runtime_env import deserialize, setup_timeout
from miniray.runtime_env.uri_cache import URICache

log = logging.getLogger("miniray.runtime_env")
PIP_OUTPUT_TAIL = 4000          # characters of pip's output an error carries


@dataclass(frozen=True)
class WorkerEnv:
    """How to start a worker for one runtime env."""
    key: str                                  # the serialized env ("": none)
    python: str = sys.executable
    cwd: str | None = None
    env: dict = field(default_factory=dict)   # variables to set
    resources: tuple = ()                     # cache entries it uses


NO_ENV = WorkerEnv("")


class RuntimeEnvManager:
    def __init__(self, root: str, fetch: Callable[[str], Awaitable[bytes]],
                 capacity: int):
        self.root = root
        self._fetch = fetch
        self._cache = URICache(capacity)
        self._paths: dict[str, str] = {}               # resource -> its directory
        self._pending: dict[str, asyncio.Future] = {}  # resource -> its setup
        self._procs: set[asyncio.subprocess.Process] = set()

    # --- the environment -----------------------------------------------------------
    async def setup(self, serialized: str) -> WorkerEnv:
        if not serialized:
            return NO_ENV
        env = deserialize(serialized)
        timeout = setup_timeout(env)
        try:
            return await asyncio.wait_for(self._setup(serialized, env), timeout)
        except asyncio.TimeoutError:
            raise RuntimeEnvSetupError(
                f"setting up the runtime environment took longer than {timeout:g} s "
                f"(runtime_env config setup_timeout_seconds)") from None

    async def _setup(self, serialized: str, env: dict) -> WorkerEnv:
        resources = []
        variables = dict(env.get("env_vars") or {})
        paths = []
        cwd = None
        python = sys.executable
        if env.get("working_dir"):
            resource = "working_dir:" + env["working_dir"]
            cwd = await self._ensure(resource, lambda: self._unpack(env["working_dir"],
                                                                    "working_dir_files"))
            resources.append(resource)
            paths.append(cwd)
            variables["MINIRAY_RUNTIME_ENV_WORKING_DIR"] = cwd
        for uri in env.get("py_modules") or []:
            resource = "py_modules:" + uri
            paths.append(await self._ensure(
                resource, lambda uri=uri: self._unpack(uri, "py_modules_files")))
            resources.append(resource)
        if env.get("pip"):
            digest = hashlib.sha1(json.dumps(env["pip"], sort_keys=True).encode()).hexdigest()
            resource = "pip:" + digest
            venv = await self._ensure(resource, lambda: self._make_venv(env["pip"], digest))
            resources.append(resource)
            python = os.path.join(venv, "bin", "python")
            variables["VIRTUAL_ENV"] = venv
            variables["PATH"] = os.path.join(venv, "bin") + os.pathsep + \
                os.environ.get("PATH", "")
        if paths:
            variables["PYTHONPATH"] = os.pathsep.join(
                paths + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        variables["MINIRAY_RUNTIME_ENV"] = serialized
        return WorkerEnv(serialized, python, cwd, variables, tuple(resources))

    # --- the cache -------------------------------------------------------------------------
    def acquire(self, env: WorkerEnv) -> None:
        for resource in env.resources:
            if resource in self._cache:
                self._cache.acquire(resource)

    def release(self, env: WorkerEnv) -> None:
        for resource in env.resources:
            for gone in self._cache.release(resource):
                self._delete(gone)

    def in_use(self, resource: str) -> int:
        return self._cache.users(resource)

    def path_of(self, resource: str) -> str | None:
        return self._paths.get(resource)

    def _delete(self, resource: str) -> None:
        path = self._paths.pop(resource, None)
        if path is not None:
            log.info("deleting unused runtime env resource %s (%s)", resource, path)
            shutil.rmtree(path, ignore_errors=True)

    async def _ensure(self, resource: str, make) -> str:
        """The resource's directory, made once (concurrent callers share it)."""
        if resource in self._cache:
            return self._paths[resource]
        pending = self._pending.get(resource)
        if pending is None:
            pending = asyncio.ensure_future(make())
            self._pending[resource] = pending
            pending.add_done_callback(lambda f: self._made(resource, f))
        return await asyncio.shield(pending)

    def _made(self, resource: str, future: asyncio.Future) -> None:
        self._pending.pop(resource, None)
        if future.cancelled() or future.exception() is not None:
            return
        path = future.result()
        self._paths[resource] = path
        self._cache.add(resource, packaging.directory_size(path))
        for gone in self._cache.evictable(keep=resource):
            self._delete(gone)

    # --- making resources ------------------------------------------------------------------
    async def _unpack(self, uri: str, kind: str) -> str:
        try:
            name = packaging.name_of(uri)
            data = await self._fetch(uri)
            target = os.path.join(self.root, kind, name[:-len(".zip")])
            if not os.path.isdir(target):
                await asyncio.to_thread(packaging.unpack, data, target)
            return target
        except packaging.PackagingError as exc:
            raise RuntimeEnvSetupError(str(exc)) from None
        except OSError as exc:
            raise RuntimeEnvSetupError(f"could not unpack {uri}: {exc}") from None

    async def _make_venv(self, pip: dict, digest: str) -> str:
        venv = os.path.join(self.root, "pip", digest)
        if os.path.isfile(os.path.join(venv, ".ready")):
            return venv
        shutil.rmtree(venv, ignore_errors=True)     # a half-made one
        os.makedirs(os.path.dirname(venv), mode=0o700, exist_ok=True)
        await self._run("creating the virtualenv", sys.executable, "-m", "venv",
                        "--without-pip", venv)
        python = os.path.join(venv, "bin", "python")
        _link_base_packages(python)
        requirements = os.path.join(venv, "requirements.txt")
        with open(requirements, "w") as f:
            f.write("\n".join(pip["packages"]) + "\n")
        await self._run("pip install", sys.executable, "-m", "pip", "--python", python,
                        "install", "--disable-pip-version-check", "--no-input",
                        *pip.get("pip_install_options", []), "-r", requirements)
        if pip.get("pip_check"):
            await self._run("pip check", sys.executable, "-m", "pip", "--python", python,
                            "check", "--disable-pip-version-check")
        open(os.path.join(venv, ".ready"), "w").close()
        return venv

    async def _run(self, what: str, *argv: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self._procs.add(process)
        try:
            output, _ = await process.communicate()
        finally:
            self._procs.discard(process)
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0:
            text = output.decode(errors="replace").strip()[-PIP_OUTPUT_TAIL:]
            raise RuntimeEnvSetupError(f"{what} failed (exit code {process.returncode}):\n"
                                       f"{text}")

    def close(self) -> None:
        """Stop installs still running (the raylet is shutting down)."""
        for process in list(self._procs):
            try:
                process.kill()
            except ProcessLookupError:
                pass

    def remove_all(self) -> None:
        """Delete the node's whole cache (its workers are gone)."""
        shutil.rmtree(self.root, ignore_errors=True)


def _link_base_packages(python: str) -> None:
    """Let the venv see the packages of the interpreter miniray runs on
    (miniray itself and its dependencies), after its own: a ``.pth`` file
    that adds their site directories (their ``.pth`` files, editable
    installs included, are processed too)."""
    bin_dir = os.path.dirname(python)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = os.path.join(os.path.dirname(bin_dir), "lib", version, "site-packages")
    dirs = [d for d in site.getsitepackages() + [site.getusersitepackages()]
            if os.path.isdir(d)]
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "_miniray_base.pth"), "w") as f:
        f.write("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs)
                + "\n")
