"""Run Ray's own Core test files against miniray (see scripts/ray_conformance.py).

``aliases`` makes ``import ray`` load miniray in every process of a run;
``plugin`` is the pytest plugin with Ray's common fixtures; ``ray_test_utils``
and ``cluster_utils`` stand in for the Ray test helpers we can honestly provide.
Nothing here is Ray's code.
"""
