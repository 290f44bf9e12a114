"""MultiOutputNode: several results of one graph, returned as a list."""
from __future__ import annotations

from miniray.dag.dag_node import DAGNode


class MultiOutputNode(DAGNode):
    """The end of a graph with several outputs: ``execute()`` gives the list
    of their results (ObjectRefs, or handles for ClassNodes), in order."""

    def __init__(self, args, other_args_to_resolve=None):
        if not isinstance(args, (list, tuple)):
            raise ValueError(  # noqa: TRY004 (Ray raises ValueError here)
                "MultiOutputNode takes a list (or tuple) of nodes, e.g. "
                f"MultiOutputNode([a, b]); got {type(args).__name__}.")
        super().__init__(args, {}, {}, other_args_to_resolve)

    def _copy_impl(self, args, kwargs, options, other_args_to_resolve):
        return MultiOutputNode(args, other_args_to_resolve)

    def _execute_impl(self, *args, **kwargs):
        return list(self._bound_args)

    def _describe(self) -> str:
        return f"{len(self._bound_args)} outputs"
