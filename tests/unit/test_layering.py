"""The runtime sits below the public API: nothing in the processes' packages
imports the user-facing modules (api, actor, remote_function, ...)."""
from __future__ import annotations

import ast
import pathlib

import miniray

SRC = pathlib.Path(miniray.__file__).parent
RUNTIME = ("core_worker", "raylet", "gcs", "object_store", "common", "rpc")
API = {"miniray.api", "miniray.actor", "miniray.remote_function", "miniray.decorators",
       "miniray.runtime_context", "miniray.util", "miniray.dag"}


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name


def test_runtime_packages_do_not_import_the_public_api():
    offenders = []
    for package in RUNTIME:
        for path in (SRC / package).rglob("*.py"):
            for name in _imports(path):
                if any(name == api or name.startswith(api + ".") for api in API):
                    offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert not offenders, offenders
