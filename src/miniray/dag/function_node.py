"""FunctionNode: ``f.bind(...)`` on a remote function; a task per execute()."""
from __future__ import annotations

from miniray.dag.dag_node import DAGNode


class _SpecCache:
    """Where RemoteFunction._submit keeps the task spec fields that only
    depend on the options; shared by a node and the copies execute() makes."""
    __slots__ = ("_template",)

    def __init__(self):
        self._template = None


class FunctionNode(DAGNode):
    """A call of a remote function with its options; each execute() submits
    it as one task and gives its ObjectRef(s)."""

    def __init__(self, remote_function, args, kwargs, options,
                 other_args_to_resolve=None, *, _cache: _SpecCache | None = None):
        self._remote_function = remote_function
        self._body = remote_function._function          # the plain function, as in Ray
        self._spec_cache = _cache or _SpecCache()
        super().__init__(args, kwargs, options, other_args_to_resolve)

    def _copy_impl(self, args, kwargs, options, other_args_to_resolve):
        return FunctionNode(self._remote_function, args, kwargs, options,
                            other_args_to_resolve, _cache=self._spec_cache)

    def _execute_impl(self, *args, **kwargs):
        return self._remote_function._submit(self._bound_args, self._bound_kwargs,
                                             self._bound_options, self._spec_cache)

    def _describe(self) -> str:
        return self._remote_function._qualified
