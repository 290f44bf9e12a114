"""Ray's DAG API (``miniray.dag``) on a real local cluster: ``.bind()``
builds nodes, ``execute()`` submits the graph, each node once, without
waiting between stages.

Concurrency is shown without timing: the tasks of two branches block on a
SignalActor until the test has seen both waiting at once, which a runtime
that ran the branches one after the other could never reach.
"""
from __future__ import annotations

import threading
import time

import pytest

import miniray as ray
from miniray.dag import (
    PARENT_CLASS_NODE_KEY,
    PREV_CLASS_METHOD_CALL_KEY,
    ClassMethodNode,
    ClassNode,
    DAGNode,
    FunctionNode,
    InputAttributeNode,
    InputNode,
    MultiOutputNode,
)
from miniray.testing import SignalActor, wait_for_condition

pytestmark = pytest.mark.usefixtures("ray_start")


@ray.remote(num_cpus=0)
class Calls:
    """Counts calls by name, from any task or actor."""

    def __init__(self):
        self.counts = {}

    def add(self, name):
        self.counts[name] = self.counts.get(name, 0) + 1

    def get(self):
        return dict(self.counts)


@ray.remote
def counted(calls, name, *values):
    ray.get(calls.add.remote(name))
    return sum(values)


@ray.remote
def ident(x):
    return x


@ray.remote
def add(x, y):
    return x + y


@ray.remote
class Adder:
    def __init__(self, start, calls=None):
        self.value = start
        if calls is not None:
            ray.get(calls.add.remote("Adder.__init__"))

    def add(self, x):
        self.value += x
        return self.value

    def get(self):
        return self.value

    def actor_id(self):
        return ray.get_runtime_context().get_actor_id()

    def name(self):
        return ray.get_runtime_context().get_actor_name()

    @ray.method(num_returns=2)
    def pair(self):
        return self.value, -self.value


def _waiters(signal):
    return ray.get(signal.cur_num_waiters.remote())


# -- functions ----------------------------------------------------------------


def test_a_node_shared_by_several_parents_runs_once_per_execute():
    calls = Calls.remote()
    with InputNode() as inp:
        a = counted.bind(calls, "a", inp)
        b = counted.bind(calls, "b", a, a)          # 2x
        c = counted.bind(calls, "c", a, 1)          # x + 1
        d = counted.bind(calls, "d", b, c)
        dag = counted.bind(calls, "top", d, d, a)
    # x=2: a=2, b=4, c=3, d=7, top=7+7+2
    assert ray.get(dag.execute(2)) == 16
    assert ray.get(calls.get.remote()) == {"a": 1, "b": 1, "c": 1, "d": 1, "top": 1}
    assert ray.get(dag.execute(3)) == 23
    assert ray.get(calls.get.remote()) == {"a": 2, "b": 2, "c": 2, "d": 2, "top": 2}


def test_execute_submits_the_whole_graph_without_waiting_between_stages():
    gate, barrier = SignalActor.remote(), SignalActor.remote()

    @ray.remote
    def first(signal):
        ray.get(signal.wait.remote())
        return 1

    @ray.remote
    def branch(x, signal):
        start = time.monotonic()
        ray.get(signal.wait.remote())
        return x, start, time.monotonic()

    @ray.remote
    def join(left, right):
        return left, right

    root = first.bind(gate)
    dag = join.bind(branch.bind(root, barrier), branch.bind(root, barrier))
    # execute() returns while `first` is still blocked (run in a thread so
    # that a wait inside it fails the test instead of hanging it).
    executed = []
    thread = threading.Thread(target=lambda: executed.append(dag.execute()), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert executed, "execute() waited for a task of the graph to finish"
    ref = executed[0]
    wait_for_condition(lambda: _waiters(gate) == 1, timeout=30)
    assert ray.wait([ref], timeout=0)[0] == []
    ray.get(gate.send.remote())
    # Both branches wait at once: neither waited for the other to finish.
    wait_for_condition(lambda: _waiters(barrier) == 2, timeout=30)
    ray.get(barrier.send.remote())
    (x1, start1, end1), (x2, start2, end2) = ray.get(ref, timeout=30)
    assert x1 == x2 == 1
    assert max(start1, start2) < min(end1, end2)


def test_nodes_nested_in_containers_become_refs_and_inputs_values():
    @ray.remote
    def inspect(top, nested, inputs):
        assert isinstance(nested["x"], ray.ObjectRef)
        assert isinstance(nested["y"][0], ray.ObjectRef)
        return top, ray.get(nested["x"]) + ray.get(nested["y"][0]), inputs

    with InputNode() as inp:
        x = ident.bind(inp[0])
        y = add.bind(inp[0], inp[1])
        dag = inspect.bind(x, {"x": x, "y": [y]}, (inp[1], {"k": inp[0]}))
    assert ray.get(dag.execute(2, 5)) == (2, 9, (5, {"k": 2}))


def test_options_apply_to_function_nodes():
    @ray.remote(max_retries=0)
    def context():
        runtime = ray.get_runtime_context()
        return runtime.get_task_name(), runtime.get_assigned_resources().get("CPU")

    node = context.options(num_cpus=2, name="dag_task").bind()
    assert node.get_options() == {"max_retries": 0, "num_cpus": 2, "name": "dag_task"}
    assert context.bind().get_options() == {"max_retries": 0}
    assert ray.get(node.execute()) == ("dag_task", 2.0)

    @ray.remote
    def two():
        return 1, 2

    refs = two.options(num_returns=2).bind().execute()
    assert isinstance(refs, list) and ray.get(refs) == [1, 2]
    # A node with two returns, as an argument, is the list of its refs.
    inner = ray.get(ident.bind(two.options(num_returns=2).bind()).execute())
    assert all(isinstance(r, ray.ObjectRef) for r in inner) and ray.get(inner) == [1, 2]


# -- inputs and outputs -----------------------------------------------------


def test_input_attribute_nodes_read_positional_keyword_and_single_inputs():
    @ray.remote
    def combine(a, b, c, d=None):
        return a + b + c + (d["deep"] if d else 0)

    with InputNode() as inp:
        assert isinstance(inp[0], InputAttributeNode) and inp[0] is inp[0]
        dag = combine.bind(inp[0], inp[1], inp.m3, inp["m4"])
    assert ray.get(dag.execute(1, 2, m3=3, m4={"deep": 4})) == 10

    with InputNode() as inp:
        by_index = combine.bind(inp[0], inp[1], inp[2])
        by_key = combine.bind(inp["a"], inp["b"], inp["c"])
        by_attr = combine.bind(inp.a, inp.b, inp.c)
        whole = ident.bind(inp)

    class Fields:
        a, b, c = 1, 20, 300

    assert ray.get(by_index.execute([1, 2, 3])) == 6
    assert ray.get(by_key.execute({"a": 1, "b": 2, "c": 4})) == 7
    assert ray.get(by_attr.execute(Fields())) == 321
    assert ray.get(whole.execute({"any": "value"})) == {"any": "value"}


def test_multi_output_node_returns_a_list_of_refs():
    calls = Calls.remote()
    shared = counted.bind(calls, "shared", 1)
    with InputNode() as inp:
        dag = MultiOutputNode([add.bind(shared, inp["x"]), add.bind(shared, inp["y"]),
                               ident.bind(inp["x"])])
    refs = dag.execute({"x": 10, "y": 20})
    assert isinstance(refs, list) and all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs) == [11, 21, 10]
    assert ray.get(calls.get.remote()) == {"shared": 1}
    assert ray.get(MultiOutputNode((ident.bind(1),)).execute()) == [1]
    with pytest.raises(ValueError):
        MultiOutputNode(ident.bind(1))


# -- actors -----------------------------------------------------------------


def test_class_node_makes_a_new_actor_per_execute_and_chains_its_calls():
    calls = Calls.remote()
    counter = Adder.bind(10, calls)
    counter.add.bind(1)
    counter.add.bind(2)
    last = counter.add.bind(3)              # runs after the two bound before it
    dag = MultiOutputNode([last, counter.actor_id.bind(), counter])
    first_ref, first_id, handle = dag.execute()
    assert ray.get(first_ref) == 16
    assert isinstance(handle, ray.actor.ActorHandle)
    assert ray.get(handle.get.remote()) == 16
    second_ref, second_id, _ = dag.execute()
    assert ray.get(second_ref) == 16         # a fresh actor, not 22
    assert ray.get(first_id) != ray.get(second_id)
    # One actor per execute, even though four method nodes name it.
    assert ray.get(calls.get.remote()) == {"Adder.__init__": 2}

    chained = last.get_other_args_to_resolve()
    assert chained[PARENT_CLASS_NODE_KEY] is counter
    assert chained[PREV_CLASS_METHOD_CALL_KEY].get_args() == (2,)


def test_method_nodes_of_an_existing_handle_call_that_actor():
    adder = Adder.remote(10)
    with InputNode() as inp:
        dag = adder.add.bind(adder.add.bind(inp))
    assert isinstance(dag, ClassMethodNode) and dag._get_actor_handle() == adder
    assert ray.get(dag.execute(1)) == 22          # 10+1 = 11, then 11+11
    assert ray.get(dag.execute(0)) == 44          # the same actor kept its state
    ids = {ray.get(adder.actor_id.bind().execute()) for _ in range(2)}
    assert ids == {ray.get(adder.actor_id.remote())}


def test_actor_handles_and_class_nodes_as_arguments():
    @ray.remote
    def read(actor):
        return ray.get(actor.get.remote())

    assert ray.get(read.bind(Adder.bind(7)).execute()) == 7

    @ray.remote
    class Outer:
        def __init__(self, inner):
            self.inner = inner

        def get(self):
            return ray.get(self.inner.get.remote())

    assert ray.get(Outer.bind(Adder.bind(5)).get.bind().execute()) == 5


def test_options_apply_to_class_and_method_nodes():
    node = Adder.options(name="dag_named_adder", max_concurrency=2).bind(3)
    assert node.get_options() == {"name": "dag_named_adder", "max_concurrency": 2}
    name, handle = node.name.bind(), node
    name_ref, handle = MultiOutputNode([name, handle]).execute()
    assert ray.get(name_ref) == "dag_named_adder"
    assert ray.get(ray.get_actor("dag_named_adder").get.remote()) == 3
    del handle

    refs = Adder.bind(4).pair.options(num_returns=2).bind().execute()
    assert ray.get(refs) == [4, -4]
    adder = Adder.remote(5)
    method_node = adder.pair.options(num_returns=2, name="pair_call").bind()
    assert method_node.get_options() == {"num_returns": 2, "name": "pair_call"}
    assert ray.get(method_node.execute()) == [5, -5]


def test_actor_method_dir_lists_bind():
    @ray.remote
    class Foo:
        def method_one(self):
            pass

    assert {n for n in dir(Foo) if not n.startswith("_")} == {
        "method_one", "options", "remote", "bind"}
    foo = Foo.remote()
    assert {n for n in dir(foo.method_one) if not n.startswith("_")} == {
        "options", "remote", "bind"}


# -- errors -------------------------------------------------------------------


def test_bad_bind_arguments_fail_at_bind():
    with pytest.raises(TypeError, match="ident"):
        ident.bind(1, 2)
    with pytest.raises(TypeError, match="Adder.__init__"):
        Adder.bind()
    with pytest.raises(TypeError, match="Adder.add"):
        Adder.bind(1).add.bind()
    with pytest.raises(TypeError, match="Adder.add"):
        Adder.remote(1).add.bind(1, 2)
    with pytest.raises(AttributeError):
        _ = Adder.bind(1).no_such_method
    with pytest.raises(ValueError, match="num_cpus"):
        ident.options(num_cpus=-1).bind(1)
    with pytest.raises(ValueError, match="Invalid option"):
        Adder.bind(1).add.options(no_such_option=1)
    with pytest.raises(ValueError, match="should not take any args"):
        InputNode(1)
    with InputNode() as inp:
        with pytest.raises(ValueError, match="constructor"):
            Adder.bind(inp)
        with pytest.raises(AssertionError, match="int index or str"):
            inp[(1, 2)]
    with pytest.raises(AttributeError, match="cannot be used again"):
        _ = ident.bind(1).bind
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used"):
        ident.bind(1).remote()
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used"):
        Adder.bind(1).add.remote(1)
    with pytest.raises(AttributeError, match="'Adder' has no attribute 'remote'"):
        Adder.bind(1).remote()
    with pytest.raises(NotImplementedError, match="experimental_compile"):
        ident.bind(1).experimental_compile()


def test_missing_or_misused_inputs_fail_before_any_task_runs():
    calls = Calls.remote()
    with InputNode() as inp:
        first = counted.bind(calls, "first", 1)
        dag = counted.bind(calls, "second", first, inp[0], inp["k"])
    with pytest.raises(TypeError, match="got no input"):
        dag.execute()
    with pytest.raises(IndexError, match=r"input\[0\]"):
        dag.execute(k=1)
    with pytest.raises(KeyError, match="'k'"):
        dag.execute(1, 2)
    with pytest.raises(TypeError, match=r"input\[0\]"):
        dag.execute(5)                        # one int: inp[0] indexes it
    assert ray.get(calls.get.remote()) == {}  # nothing was submitted
    assert ray.get(dag.execute(1, k=2)) == 4
    assert ray.get(calls.get.remote()) == {"first": 1, "second": 1}

    with InputNode() as one, InputNode() as other:
        two_inputs = add.bind(one, other)
    with pytest.raises(AssertionError, match="one unique InputNode"):
        two_inputs.execute(1)
    not_entered = ident.bind(InputNode())
    with pytest.raises(AssertionError, match="with InputNode"):
        not_entered.execute(1)


def test_a_node_hidden_inside_an_object_is_a_clear_error():
    class Box:
        def __init__(self, node):
            self.node = node

    with pytest.raises(TypeError, match="cannot be serialized"):
        ident.bind(Box(ident.bind(1))).execute()


# -- the graph itself, no cluster needed ------------------------------------


def test_accessors_and_apply_recursive():
    @ray.remote
    def f(*args, **kwargs):
        pass

    t1, t2, t3 = f.bind(), f.bind(), f.bind()
    node = f.bind(1, t1, x=t2, y={"nested": [t3]})
    assert isinstance(node, FunctionNode) and isinstance(node, DAGNode)
    assert node.get_args() == (1, t1)
    assert node.get_kwargs() == {"x": t2, "y": {"nested": [t3]}}
    assert node.get_toplevel_child_nodes() == [t1, t2]
    assert node._get_all_child_nodes() == [t1, t2, t3]

    # Bottom-up, once per node, each seeing its children's results.
    seen = []

    def name(n):
        seen.append(n.get_stable_uuid())
        return n

    copy = node.apply_recursive(name)
    assert len(seen) == len(set(seen)) == 4 and seen[-1] == node.get_stable_uuid()
    assert copy is not node and copy.get_stable_uuid() == node.get_stable_uuid()
    assert copy.get_args()[1].get_stable_uuid() == t1.get_stable_uuid()

    shared = f.bind()
    a, b = shared, f.bind(shared)
    for _ in range(10):                      # 2^10 paths, 21 nodes
        a, b = f.bind(a, b), f.bind(a, b)
    visits = []
    a.apply_recursive(lambda n: visits.append(n) or len(visits))
    assert len(visits) == 21

    chain = f.bind()
    for _ in range(3000):                    # deeper than the recursion limit
        chain = f.bind(chain)
    assert chain.apply_recursive(lambda n: 1 + max(n.get_args(), default=0)) == 3001

    method = Adder.bind(1).add.bind(2)
    assert isinstance(method, ClassMethodNode)
    assert isinstance(method.get_other_args_to_resolve()[PARENT_CLASS_NODE_KEY], ClassNode)
    assert method.get_method_name() == "add"
