"""DAGNode: what every node of a lazy task graph has, and how a graph runs.

A node holds the arguments, keyword arguments and options it was bound
with, and "other args" that only its kind uses (the actor a method node
calls, the previous call on that actor, the input an attribute reads).
Nodes may appear anywhere in those, at the top level or nested in lists,
tuples, dicts and sets; they are the node's children. ``execute()`` visits
the graph children first, each node once, and replaces every child by what
it produced (an ObjectRef, an actor handle, an input value) before running
the node itself, so a node shared by several parents runs once per
``execute()``. Submitting does not wait for results: the whole graph is in
flight when ``execute()`` returns.
"""
from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DAGNode:
    """A node of a lazy task graph; see the module docstring."""

    # InputNode and InputAttributeNode: resolved from execute()'s arguments,
    # before any task of the graph is submitted.
    _reads_input = False

    def __init__(self, args, kwargs, options, other_args_to_resolve):
        self._bound_args = tuple(args or ())
        self._bound_kwargs = dict(kwargs or {})
        self._bound_options = dict(options or {})
        self._bound_other_args_to_resolve = dict(other_args_to_resolve or {})
        # Kept by the copies apply_recursive() makes: one node, one result.
        self._stable_uuid = uuid.uuid4().hex
        self.cache_from_last_execute: dict = {}

    # -- what the node was bound with -------------------------------------

    def get_args(self) -> tuple:
        return self._bound_args

    def get_kwargs(self) -> dict:
        return dict(self._bound_kwargs)

    def get_options(self) -> dict:
        return dict(self._bound_options)

    def get_other_args_to_resolve(self) -> dict:
        return dict(self._bound_other_args_to_resolve)

    def get_stable_uuid(self) -> str:
        return self._stable_uuid

    def _bound(self) -> list:
        return [self._bound_args, self._bound_kwargs, self._bound_other_args_to_resolve]

    def get_toplevel_child_nodes(self) -> list[DAGNode]:
        """Nodes given directly as an argument, keyword or other arg (not
        nested in a container), each once, in order."""
        found: list = []
        for value in (*self._bound_args, *self._bound_kwargs.values(),
                      *self._bound_other_args_to_resolve.values()):
            if isinstance(value, DAGNode) and not any(value is f for f in found):
                found.append(value)
        return found

    _get_toplevel_child_nodes = get_toplevel_child_nodes       # Ray's older name

    def _get_all_child_nodes(self) -> list[DAGNode]:
        """Every child, nested ones included, each once, in order."""
        return find_nodes(self._bound())

    # -- running the graph -------------------------------------------------

    def execute(self, *args, _ray_cache_refs: bool = False, **kwargs):
        """Submit the graph that ends here and return what this node gives:
        an ObjectRef (a list of them for ``num_returns`` > 1 and for a
        MultiOutputNode), or an actor handle for a ClassNode. ``args`` and
        ``kwargs`` are the graph's input (see InputNode). Actors of the
        graph's ClassNodes are created anew by each call."""
        order = topological_order(self)
        _check_inputs(order, args, kwargs)
        # Inputs first: a missing one fails before any task is submitted.
        order = ([n for n in order if n._reads_input]
                 + [n for n in order if not n._reads_input])
        results = _run(order, lambda node: node._execute_impl(*args, **kwargs))
        if _ray_cache_refs:
            self.cache_from_last_execute = results
        return results[self._stable_uuid]

    def apply_recursive(self, fn: Callable[[DAGNode], T]) -> T:
        """Call ``fn`` once on each node of the graph that ends here, children
        first. ``fn`` gets a copy of the node whose children are replaced by
        what ``fn`` returned for them; its result for this node is returned."""
        return _run(topological_order(self), fn)[self._stable_uuid]

    def _apply_and_replace_all_child_nodes(self, fn: Callable[[DAGNode], Any]) -> DAGNode:
        """A copy of this node with each child replaced by ``fn(child)`` (one
        level only; ``apply_recursive`` walks the whole graph)."""
        table = {id(child): fn(child) for child in self._get_all_child_nodes()}
        return self._replaced(table)

    def _replaced(self, table: dict) -> DAGNode:
        """A copy with the children whose ``id`` is in ``table`` replaced."""
        args, kwargs, other = replace_nodes(self._bound(), table)
        new = self._copy_impl(args, kwargs, self.get_options(), other)
        new._stable_uuid = self._stable_uuid
        return new

    async def get_object_refs_from_last_execute(self) -> dict:
        """What each node gave in the last ``execute(_ray_cache_refs=True)``,
        by stable uuid."""
        return dict(self.cache_from_last_execute)

    def clear_cache(self) -> None:
        self.cache_from_last_execute = {}

    def experimental_compile(self, *args, **kwargs):
        raise NotImplementedError(
            "Compiled graphs (experimental_compile) are not implemented in miniray; "
            "run the graph with .execute(), which submits its tasks as ordinary "
            "task and actor calls.")

    # -- what subclasses provide ---------------------------------------------

    def _execute_impl(self, *args, **kwargs):
        """Run this node, whose children are already replaced by their
        results; ``args``/``kwargs`` are execute()'s (the graph's input)."""
        raise NotImplementedError

    def _copy_impl(self, args, kwargs, options, other_args_to_resolve) -> DAGNode:
        raise NotImplementedError

    def _describe(self) -> str:
        return ""

    # -- misuse ------------------------------------------------------------

    def __getattr__(self, name: str):
        kind = type(self).__name__
        if name == "bind":
            raise AttributeError(f".bind() cannot be used again on a {kind}: it is "
                                 "already a node of the graph.")
        if name == "remote":
            raise AttributeError(f".remote() cannot be used on a {kind}: run the graph "
                                 "with .execute().")
        raise AttributeError(f"'{kind}' object has no attribute '{name}'")

    def __reduce__(self):
        raise TypeError(
            f"A {type(self).__name__} cannot be serialized. Nodes are replaced by "
            "their results only where the graph finds them: as arguments, or nested "
            "in lists, tuples, dicts and sets; not inside other objects.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()})[{self._stable_uuid[:8]}]"


# -- traversal -------------------------------------------------------------


def topological_order(root: DAGNode) -> list[DAGNode]:
    """The nodes of the graph that ends at ``root``, each before the nodes
    that use it, one per stable uuid. Iterative: long chains are fine."""
    order: list = []
    seen = {root._stable_uuid}
    stack = [(root, iter(root._get_all_child_nodes()))]
    while stack:
        node, children = stack[-1]
        for child in children:
            if child._stable_uuid not in seen:
                seen.add(child._stable_uuid)
                stack.append((child, iter(child._get_all_child_nodes())))
                break
        else:
            stack.pop()
            order.append(node)
    return order


def _run(order: list[DAGNode], fn: Callable[[DAGNode], Any]) -> dict:
    """``fn`` on each node of ``order`` (children first), each given the
    results of its children; the results by stable uuid."""
    results: dict = {}
    for node in order:
        table = {id(child): results[child._stable_uuid]
                 for child in node._get_all_child_nodes()}
        results[node._stable_uuid] = fn(node._replaced(table) if table else node)
    return results


def _check_inputs(order: list[DAGNode], args: tuple, kwargs: dict) -> None:
    from miniray.dag.input_node import InputNode
    roots = [n for n in order if isinstance(n, InputNode)]
    if len(roots) > 1:
        raise AssertionError(
            "Each DAG should only have one unique InputNode; this graph uses "
            f"{len(roots)}. Bind every input inside one `with InputNode() as inp:`.")
    if roots:
        if not roots[0]._in_context_manager():
            raise AssertionError(
                "The graph's InputNode was not entered: create it with "
                "`with InputNode() as inp:` and bind the graph inside that block.")
        if not args and not kwargs:
            raise TypeError(
                "execute() got no input, but the graph reads an InputNode: pass "
                "its value(s), e.g. dag.execute(x) or dag.execute(a, b, key=c).")


# -- nodes nested in values ------------------------------------------------

_SEQUENCES = (list, tuple, set, frozenset)


def find_nodes(value) -> list[DAGNode]:
    """The nodes in ``value`` (a node, or lists, tuples, dicts and sets that
    hold nodes, at any depth), each once, in order."""
    found: list = []
    seen: set = set()

    def visit(item):
        if isinstance(item, DAGNode):
            if id(item) not in seen:
                seen.add(id(item))
                found.append(item)
        elif isinstance(item, dict):
            for v in item.values():
                visit(v)
        elif isinstance(item, _SEQUENCES):
            for v in item:
                visit(v)

    visit(value)
    return found


def replace_nodes(value, table: dict):
    """``value`` with each node ``n`` replaced by ``table[id(n)]``; containers
    holding no replaced node are returned as they are, the others copied."""
    if isinstance(value, DAGNode):
        return table.get(id(value), value)
    if isinstance(value, dict):
        changed = {k: new for k, v in value.items()
                   if (new := replace_nodes(v, table)) is not v}
        if not changed:
            return value
        result = copy.copy(value)
        result.update(changed)
        return result
    if isinstance(value, _SEQUENCES):
        items = [replace_nodes(v, table) for v in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        if isinstance(value, list):
            result = copy.copy(value)
            result[:] = items
            return result
        if isinstance(value, tuple) and hasattr(value, "_fields"):   # namedtuple
            return type(value)._make(items)
        return type(value)(items)
    return value
