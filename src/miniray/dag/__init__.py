"""Lazy task graphs: Ray's DAG API (``ray.dag``).

``f.bind(...)``, ``A.bind(...)``, ``class_node.method.bind(...)`` and
``handle.method.bind(...)`` (in remote_function.py and actor.py) build nodes
instead of running anything; ``InputNode`` names the graph's input and
``MultiOutputNode`` groups several outputs. ``dag.execute(*args, **kwargs)``
submits the whole graph, children first and each node once, through the
ordinary ``.remote()`` calls of the driver (or of whichever worker executes
it), and returns ObjectRefs without waiting for any of them.

This package is API-level only: it runs in the caller's process, owns no
state beyond the nodes themselves, and the runtime (core_worker/, raylet/,
gcs/) never imports it. Compiled graphs (``experimental_compile``) are not
implemented.
"""
from miniray.dag.class_node import (
    PARENT_CLASS_NODE_KEY,
    PREV_CLASS_METHOD_CALL_KEY,
    ClassMethodNode,
    ClassNode,
)
from miniray.dag.dag_node import DAGNode
from miniray.dag.function_node import FunctionNode
from miniray.dag.input_node import DAGInputData, InputAttributeNode, InputNode
from miniray.dag.output_node import MultiOutputNode

__all__ = [
    "PARENT_CLASS_NODE_KEY",
    "PREV_CLASS_METHOD_CALL_KEY",
    "ClassMethodNode",
    "ClassNode",
    "DAGInputData",
    "DAGNode",
    "FunctionNode",
    "InputAttributeNode",
    "InputNode",
    "MultiOutputNode",
]
