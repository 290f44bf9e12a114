"""InputNode and InputAttributeNode: the input of a graph, given to execute().

``with InputNode() as inp:`` declares it. ``dag.execute(x)`` with one value
makes ``inp`` that value, and ``inp[0]``, ``inp["key"]``, ``inp.attr`` index
it. With several values (``dag.execute(a, b, key=c)``) ``inp[i]`` is the
i-th positional value and ``inp["key"]`` / ``inp.key`` a keyword value.
"""
from __future__ import annotations

from miniray.dag.dag_node import DAGNode

_ENTERED = "__in_context_manager__"


class InputNode(DAGNode):
    """The input of a graph; one per graph, used as ``with InputNode() as inp``."""

    _reads_input = True

    def __init__(self, *args, input_type=None, _other_args_to_resolve=None, **kwargs):
        if args or kwargs:
            raise ValueError(
                "InputNode should not take any args or kwargs: the graph's input is "
                "given to dag.execute(...), not to InputNode().")
        self.input_type = input_type
        self._attribute_nodes: dict = {}
        super().__init__((), {}, {}, _other_args_to_resolve)

    def __enter__(self) -> InputNode:  # noqa: PYI034
        self._bound_other_args_to_resolve[_ENTERED] = True
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def _in_context_manager(self) -> bool:
        return bool(self._bound_other_args_to_resolve.get(_ENTERED))

    def _copy_impl(self, args, kwargs, options, other_args_to_resolve):
        return InputNode(_other_args_to_resolve=other_args_to_resolve)

    def _execute_impl(self, *args, **kwargs):
        if len(args) == 1 and not kwargs:
            return args[0]
        return DAGInputData(*args, **kwargs)

    def _describe(self) -> str:
        return "input"

    def _attribute(self, key, accessor: str) -> InputAttributeNode:
        nodes = self.__dict__["_attribute_nodes"]
        if (accessor, key) not in nodes:
            nodes[(accessor, key)] = InputAttributeNode(self, key, accessor)
        return nodes[(accessor, key)]

    def __getitem__(self, key) -> InputAttributeNode:
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise AssertionError(  # noqa: TRY004 (Ray raises AssertionError here)
                "Please only use int index or str as first-level key of the graph's "
                f"input (inp[0], inp['name']); got {key!r}.")
        return self._attribute(key, "__getitem__")

    def __getattr__(self, name: str):
        # Names starting with "_" are Python's and ours (inp["_x"] reads such a key).
        if name.startswith("_") or name in ("bind", "remote") \
                or "_attribute_nodes" not in self.__dict__:
            return super().__getattr__(name)
        return self._attribute(name, "__getattr__")


class InputAttributeNode(DAGNode):
    """One part of the graph's input: ``inp[0]``, ``inp["key"]`` or ``inp.key``."""

    _reads_input = True

    def __init__(self, dag_input_node, key, accessor_method: str, input_type=None):
        super().__init__((), {}, {}, {
            "dag_input_node": dag_input_node, "key": key,
            "accessor_method": accessor_method, "result_type_string": input_type})

    @property
    def _key(self):
        return self._bound_other_args_to_resolve["key"]

    @property
    def _accessor_method(self) -> str:
        return self._bound_other_args_to_resolve["accessor_method"]

    def _copy_impl(self, args, kwargs, options, other_args_to_resolve):
        other = other_args_to_resolve
        return InputAttributeNode(other["dag_input_node"], other["key"],
                                  other["accessor_method"], other["result_type_string"])

    def _execute_impl(self, *args, **kwargs):
        value = self._bound_other_args_to_resolve["dag_input_node"]   # resolved by now
        if isinstance(value, DAGInputData):
            return value[self._key]
        return _read(value, self._key, self._accessor_method)

    def _describe(self) -> str:
        key = self._key
        return f"input.{key}" if self._accessor_method == "__getattr__" else f"input[{key!r}]"


def _read(value, key, accessor: str):
    """``value[key]`` or ``getattr(value, key)``, failing with a message that
    says which part of the graph's input is missing."""
    what = f"input.{key}" if accessor == "__getattr__" else f"input[{key!r}]"
    kind = type(value).__name__
    try:
        if accessor == "__getattr__":
            return getattr(value, key)
        return value[key]
    except AttributeError:
        raise AttributeError(f"The graph reads {what}, but the {kind} given to "
                             "execute() has no such attribute.") from None
    except IndexError:
        raise IndexError(f"The graph reads {what}, but the {kind} given to execute() "
                         f"has no index {key!r}.") from None
    except KeyError:
        raise KeyError(f"The graph reads {what}, but the {kind} given to execute() "
                       f"has no key {key!r}.") from None
    except TypeError as exc:
        raise TypeError(f"The graph reads {what} from the {kind} given to execute(): "
                        f"{exc}") from None


class DAGInputData:
    """The graph's input when execute() got several values: ``[i]`` is the
    i-th positional value, ``["key"]`` a keyword value."""

    def __init__(self, *args, **kwargs):
        self._args = list(args)
        self._kwargs = kwargs

    def __getitem__(self, key):
        if isinstance(key, int) and not isinstance(key, bool):
            if -len(self._args) <= key < len(self._args):
                return self._args[key]
            raise IndexError(f"The graph reads input[{key}], but execute() got "
                             f"{len(self._args)} positional input(s).")
        if isinstance(key, str):
            if key in self._kwargs:
                return self._kwargs[key]
            raise KeyError(f"The graph reads input[{key!r}] (or input.{key}), but "
                           f"execute() got no keyword input {key!r}; it got "
                           f"{sorted(self._kwargs) or 'none'}.")
        raise TypeError(f"The graph's input is read by int index or str key, "
                        f"not {key!r}.")

    def __repr__(self) -> str:
        return f"DAGInputData(args={self._args!r}, kwargs={self._kwargs!r})"
