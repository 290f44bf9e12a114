"""ClassNode and ClassMethodNode: actors and their method calls in a graph.

``A.bind(...)`` is a ClassNode: each execute() creates the actor anew.
``class_node.method.bind(...)`` is a ClassMethodNode on that actor; the calls
bound on one ClassNode are chained (each names the one bound before it), so
running any of them also runs the earlier ones, in the order they were
bound. ``handle.method.bind(...)`` calls an actor that already exists, the
same one at every execute(), and is not chained.
"""
from __future__ import annotations

from miniray.dag.dag_node import DAGNode

# Keys of ClassMethodNode.get_other_args_to_resolve(), Ray's names.
PARENT_CLASS_NODE_KEY = "parent_class_node"
PREV_CLASS_METHOD_CALL_KEY = "prev_class_method_call"


class ClassNode(DAGNode):
    """An actor to create with these constructor arguments and options."""

    def __init__(self, actor_class, args, kwargs, options, other_args_to_resolve=None):
        from miniray.dag.input_node import InputNode
        self._actor_class = actor_class
        self._body = actor_class._cls                  # the plain class, as in Ray
        self._last_call: ClassMethodNode | None = None
        super().__init__(args, kwargs, options, other_args_to_resolve)
        if any(isinstance(n, InputNode) for n in self._get_all_child_nodes()):
            raise ValueError(
                f"An InputNode cannot be an argument of {self._body.__name__}'s "
                "constructor: the graph's input is not known when .bind() makes the "
                "ClassNode. Pass the input to a method of the actor instead.")

    def _copy_impl(self, args, kwargs, options, other_args_to_resolve):
        return ClassNode(self._actor_class, args, kwargs, options, other_args_to_resolve)

    def _execute_impl(self, *args, **kwargs):
        return self._actor_class._create(self._bound_args, self._bound_kwargs,
                                         self._bound_options)

    def _describe(self) -> str:
        return self._body.__qualname__

    def __getattr__(self, name: str):
        actor_class = self.__dict__.get("_actor_class")
        if actor_class is None or name in ("bind", "remote") \
                or name not in actor_class._meta:
            if name == "remote":
                cls = self.__dict__.get("_body")
                raise AttributeError(
                    f"'{getattr(cls, '__name__', 'ClassNode')}' has no attribute "
                    "'remote' here: this is a ClassNode of a graph; its actor is "
                    "created when the graph runs (.execute()).")
            return super().__getattr__(name)
        return _ClassMethodBinder(self, name, {})


class _ClassMethodBinder:
    """``class_node.method``: ``.options(...)`` and ``.bind(...)`` make a
    ClassMethodNode; there is no actor to call ``.remote()`` on yet."""

    def __init__(self, class_node: ClassNode, name: str, options: dict):
        self._class_node = class_node
        self._name = name
        self._options = options

    def options(self, **options) -> _ClassMethodBinder:
        from miniray.actor import check_method_options
        check_method_options(options)
        return _ClassMethodBinder(self._class_node, self._name, {**self._options, **options})

    def bind(self, *args, **kwargs) -> ClassMethodNode:
        parent = self._class_node
        parent._actor_class._check_method_call(self._name, args, kwargs)
        node = ClassMethodNode(self._name, args, kwargs, self._options, {
            PARENT_CLASS_NODE_KEY: parent,
            PREV_CLASS_METHOD_CALL_KEY: parent._last_call})
        parent._last_call = node
        return node

    def __getattr__(self, name: str):
        if name == "remote":
            raise AttributeError(
                ".remote() cannot be used on ClassMethodNodes: the actor of a ClassNode "
                "exists only while its graph runs; use .bind() and .execute().")
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")


class ClassMethodNode(DAGNode):
    """A call of ``method_name`` on the actor named by the other arg
    PARENT_CLASS_NODE_KEY (a ClassNode, or an actor handle)."""

    def __init__(self, method_name: str, args, kwargs, options, other_args_to_resolve):
        self._method_name = method_name
        super().__init__(args, kwargs, options, other_args_to_resolve)

    @property
    def _parent_class_node(self):
        return self._bound_other_args_to_resolve.get(PARENT_CLASS_NODE_KEY)

    @property
    def _prev_class_method_call(self):
        return self._bound_other_args_to_resolve.get(PREV_CLASS_METHOD_CALL_KEY)

    def get_method_name(self) -> str:
        return self._method_name

    def _get_actor_handle(self):
        """The actor handle this node calls, or None if it is a ClassNode's."""
        parent = self._parent_class_node
        return None if isinstance(parent, DAGNode) else parent

    def _copy_impl(self, args, kwargs, options, other_args_to_resolve):
        return ClassMethodNode(self._method_name, args, kwargs, options,
                               other_args_to_resolve)

    def _execute_impl(self, *args, **kwargs):
        # The parent is an actor handle by now: the ClassNode's result, or
        # the handle this node was bound on.
        method = getattr(self._parent_class_node, self._method_name)
        if self._bound_options:
            method = method.options(**self._bound_options)
        return method.remote(*self._bound_args, **self._bound_kwargs)

    def _describe(self) -> str:
        return f"{self._method_name}()"
