"""The conformance harness's ``ray`` -> miniray aliasing (scripts/ray_compat),
checked in a fresh interpreter: it rewires imports process-wide."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPTS = os.path.join(os.path.dirname(__file__), "..", "..", "scripts")

CHECKS = textwrap.dedent("""
    from ray_compat.aliases import install, Internal, set_in_test
    install()
    import miniray, ray, ray.util, ray.exceptions
    assert ray is miniray and ray.util is miniray.util
    assert ray.exceptions is miniray.exceptions

    # A submodule alias must not replace the function its package exports.
    import ray.util.placement_group
    from ray.util.placement_group import placement_group
    assert callable(placement_group) and ray.util.placement_group is placement_group
    assert sys.modules["ray.util.placement_group"] is \
        sys.modules["miniray.util.placement_group"]

    # Stand-ins, and Ray internals as placeholders.
    from ray._private.test_utils import SignalActor, wait_for_condition
    from ray.cluster_utils import Cluster
    assert Cluster().address is None
    from ray._private import ray_constants
    assert isinstance(ray_constants.SOME_FLAG, Internal)
    from ray import cloudpickle
    import cloudpickle as real_cloudpickle
    assert cloudpickle is real_cloudpickle

    # A real use of an internal outside a test raises.
    from ray_compat.aliases import RayInternalUnavailable
    try:
        ray._private.worker.global_worker.core_worker.object_exists(1)
    except RayInternalUnavailable:
        pass
    else:
        raise AssertionError("an internal was usable")

    # Dropping ``ray`` from sys.modules re-imports miniray, never Ray.
    del sys.modules["ray"]
    import ray as again
    assert again is miniray
    print("ok")
""")


def test_aliases_in_a_fresh_interpreter():
    env = dict(os.environ, PYTHONPATH=os.path.abspath(SCRIPTS))
    result = subprocess.run([sys.executable, "-c", "import sys\n" + CHECKS],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_public_names_become_placeholders(tmp_path):
    """``from ray.x import missing`` at the top of a test module binds a
    placeholder that fails on use, instead of failing the whole module."""
    module = tmp_path / "test_uses_missing.py"
    module.write_text("from ray.util.state import no_such_function\n"
                      "from ray.no_such_module import Thing\n")
    code = textwrap.dedent(f"""
        import sys
        from ray_compat.aliases import install
        install()
        sys.path.insert(0, {str(tmp_path)!r})
        import test_uses_missing as m
        from ray_compat.missing import MissingInMiniray
        for name in ("no_such_function", "Thing"):
            try:
                getattr(m, name)()
            except MissingInMiniray:
                pass
            else:
                raise AssertionError(name)
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=os.path.abspath(SCRIPTS))
    result = subprocess.run([sys.executable, "-c", code], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
