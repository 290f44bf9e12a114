"""Actors: ``@miniray.remote`` on a class, handles, methods, exit_actor().

An ActorClass creates actors (``Cls.remote()`` registers the actor with the
GCS, which places it); an ActorHandle names one actor and submits method
calls straight to its worker. Handles are reference counted like
ObjectRefs: when the last handle anywhere is gone, a non-detached actor
exits.
"""
from __future__ import annotations

import functools
import inspect
import pickle

import cloudpickle

from miniray import option_rules
from miniray.common.ids import ActorID, ObjectID
from miniray.common.serialization import note_nested_ref
from miniray.core_worker.function_manager import module_name
from miniray.core_worker.submitter import RefInfo
from miniray.remote_function import (
    TASK_OPTIONS, bind_or_raise, explicit_strategy, resource_request, scheduling_strategy,
    submit_counts, unpack_returns, validate_options)
from miniray.util.scheduling_strategies import bundle_request, check_fits_bundles

ACTOR_OPTIONS = (TASK_OPTIONS - {"num_returns", "max_retries", "retry_exceptions",
                                 "max_calls"}) | {
    "max_restarts", "max_task_retries", "max_concurrency", "max_pending_calls",
    "namespace", "lifetime", "get_if_exists", "concurrency_groups",
    "allow_out_of_order_execution"}
METHOD_OPTIONS = {"num_returns", "concurrency_group", "max_task_retries",
                  "retry_exceptions", "_generator_backpressure_num_objects",
                  "enable_task_events", "tensor_transport", "name"}
TERMINATE = "__ray_terminate__"


class ActorClassInheritanceException(TypeError):
    """A class was defined with an actor class as a base (as in Ray, not
    supported: make the base an ordinary class instead)."""


handle_object_id = ObjectID.for_actor_handle


def check_method_options(options: dict) -> None:
    for key in options:
        if key not in METHOD_OPTIONS:
            raise ValueError(f"Invalid option keyword {key} for actor methods. "
                             f"Valid ones are {sorted(METHOD_OPTIONS)}.")


def method(*args, **options):
    """Per-method options: ``@miniray.method(num_returns=2)``."""
    def decorate(function):
        check_method_options(options)
        function.__miniray_method_options__ = options
        return function

    if len(args) == 1 and callable(args[0]) and not options:
        return decorate(args[0])
    if args:
        raise TypeError("@method takes keyword options only, e.g. "
                        "@miniray.method(num_returns=2)")
    return decorate


def _call_shape(cls, name: str, function) -> tuple | None:
    """How a method may be called, as plain data that travels with handles:
    ``((parameter name, kind, has default), ...)`` without ``self``/``cls``;
    None if it cannot be told."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return None
    bound = not isinstance(inspect.getattr_static(cls, name, None), staticmethod)
    if bound and parameters and parameters[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        parameters = parameters[1:]          # self, or cls of a classmethod
    return tuple((p.name, int(p.kind), p.default is not p.empty) for p in parameters)


_KIND = type(inspect.Parameter.POSITIONAL_ONLY)


@functools.lru_cache(maxsize=4096)
def _signature_of(shape: tuple) -> inspect.Signature:
    return inspect.Signature([
        inspect.Parameter(name, _KIND(kind),
                          default=None if has_default else inspect.Parameter.empty)
        for name, kind, has_default in shape])


def _check_call(shape: tuple | None, args, kwargs, name: str) -> None:
    """As in Ray: arguments that do not fit fail at ``.remote()`` (TypeError)."""
    if shape is not None:
        bind_or_raise(_signature_of(shape), args, kwargs, name)


def _method_meta(cls) -> dict:
    meta = {}
    for name, member in inspect.getmembers(cls):
        if not callable(member) or (name.startswith("__") and name != "__call__"):
            continue
        function = getattr(member, "__func__", member)
        options = dict(getattr(function, "__miniray_method_options__", {}))
        meta[name] = {
            "signature": _call_shape(cls, name, function),
            "num_returns": options.get("num_returns",
                                       "streaming" if inspect.isgeneratorfunction(function)
                                       or inspect.isasyncgenfunction(function) else 1),
            "concurrency_group": options.get("concurrency_group", ""),
            "retry_exceptions": options.get("retry_exceptions", False),
            "max_task_retries": options.get("max_task_retries"),
            "is_async": inspect.iscoroutinefunction(function)
            or inspect.isasyncgenfunction(function),
        }
    # Built in on every actor, as in Ray: __ray_ready__() is True once the
    # actor is up; __ray_call__(fn, *args) runs fn(instance, *args) on it.
    for builtin in (TERMINATE, "__ray_ready__", "__ray_call__"):
        meta[builtin] = {"num_returns": 1, "concurrency_group": "", "is_async": False}
    return meta


class ActorClass:
    def __init__(self, cls, options: dict):
        _validate_actor_options(options)
        self._cls = cls
        self._options = options
        self._meta = _method_meta(cls)
        self._init_shape = (() if cls.__init__ is object.__init__
                            else _call_shape(cls, "__init__", cls.__init__))
        self._is_asyncio = any(m["is_async"] for m in self._meta.values())
        self._pickled = None
        self.__name__ = cls.__name__
        self.__doc__ = cls.__doc__

    def __getattr__(self, name):
        # As in Ray, whose actor class derives from the user's class: class
        # attributes, static and class methods are reachable through it.
        cls = self.__dict__.get("_cls")
        if cls is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(cls, name)

    def __mro_entries__(self, bases):
        # ``class Derived(SomeActor)``: SomeActor is an ActorClass object.
        raise ActorClassInheritanceException(
            f"Attempted to subclass the actor class '{self._cls.__name__}'. "
            "Inheriting from actor classes is not currently supported. You can "
            "instead inherit from a non-actor base class and make the derived "
            "class an actor class (with @remote).")

    def __dir__(self):
        # As in Ray, whose actor class derives from the user's class.
        return sorted(set(object.__dir__(self)) | set(dir(self._cls)))

    def __call__(self, *args, **kwargs):
        raise TypeError(
            "Actors cannot be instantiated directly. Instead of "
            f"'{self._cls.__name__}()', use '{self._cls.__name__}.remote()'.")

    def options(self, **options) -> "_BoundActorClass":
        _validate_actor_options(options)
        return _BoundActorClass(self, {**self._options, **options})

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._create(args, kwargs, self._options)

    def bind(self, *args, **kwargs):
        """A ClassNode of a lazy task graph (``miniray.dag``): the actor is
        created each time the graph is executed, not now."""
        return self._bind(args, kwargs, self._options)

    def _bind(self, args, kwargs, options: dict):
        from miniray.dag.class_node import ClassNode
        _check_call(self._init_shape, args, kwargs, f"{self._cls.__name__}.__init__")
        return ClassNode(self, args, kwargs, options)

    def _check_method_call(self, name: str, args, kwargs) -> None:
        _check_call(self._meta[name].get("signature"), args, kwargs,
                    f"{self._cls.__name__}.{name}")

    def _remote(self, args=None, kwargs=None, **options) -> "ActorHandle":
        """Ray's spelling of ``.options(**options).remote(*args, **kwargs)``."""
        bound = self.options(**options) if options else self
        return bound.remote(*(args or ()), **(kwargs or {}))

    def _create(self, args, kwargs, options: dict) -> "ActorHandle":
        from miniray import api
        from miniray.core_worker.function_manager import pickle_function
        from miniray.protocol import common_pb2

        _check_call(self._init_shape, args, kwargs, f"{self._cls.__name__}.__init__")
        worker = api.ensure_initialized()
        if self._pickled is None:
            self._pickled = pickle_function(self._cls)
        function_id, pickled = self._pickled
        worker.functions.export(function_id, pickled, self._cls.__qualname__)

        num_cpus = options.get("num_cpus")
        strategy = scheduling_strategy(options, worker)
        # To be placed, an actor without num_cpus needs 1 CPU (it holds 0 after).
        needed = resource_request(options, 0 if num_cpus is None else num_cpus)
        if num_cpus is None:
            needed["CPU"] = 1.0
        check_fits_bundles(needed, explicit_strategy(options), self._cls.__qualname__)
        lifetime = bundle_request(
            resource_request(options, 0 if num_cpus is None else num_cpus), strategy)
        placement = bundle_request({"CPU": 1.0}, strategy) if num_cpus is None else {}
        if strategy.kind == strategy.PLACEMENT_GROUP and num_cpus is None:
            lifetime = {k: v for k, v in lifetime.items() if not k.startswith("bundle_")}
        name = options.get("name") or ""
        namespace = options.get("namespace")
        if namespace is None:
            namespace = worker.namespace
        spec = common_pb2.TaskSpec(
            type=common_pb2.ACTOR_CREATION_TASK, function_id=function_id,
            function_name=f"{self._cls.__name__}.__init__", resources=lifetime,
            function_descriptor=f"{module_name(self._cls)}.{self._cls.__name__}.__init__",
            num_returns=0, name=name, scheduling_strategy=strategy,
            runtime_env=worker.task_runtime_env(options.get("runtime_env")))
        detached = (options["lifetime"] == "detached" if options.get("lifetime")
                    else worker.default_actor_detached())     # the job's default
        default_concurrency = 1000 if self._is_asyncio else 1
        max_concurrency = options.get("max_concurrency") or default_concurrency
        out_of_order = self._out_of_order(options, max_concurrency)
        spec.actor_options.CopyFrom(common_pb2.ActorCreationOptions(
            max_restarts=options.get("max_restarts", 0),
            max_task_retries=options.get("max_task_retries", 0),
            max_concurrency=max_concurrency, execute_out_of_order=out_of_order,
            max_pending_calls=options.get("max_pending_calls", -1),
            name=name, namespace=namespace,
            detached=detached,
            is_asyncio=self._is_asyncio,
            concurrency_groups=options.get("concurrency_groups") or {},
            placement_resources=placement, class_meta=pickle.dumps(self._meta),
            class_name=self._cls.__name__,
            get_if_exists=bool(options.get("get_if_exists"))))
        info = worker.create_actor(spec, args, kwargs)
        if info is not None:            # get_if_exists found a live actor
            return ActorHandle._from_info(info)
        return ActorHandle(ActorID(spec.actor_id), self._meta, self._cls.__name__,
                           worker.address, spec.actor_options.max_pending_calls,
                           out_of_order=out_of_order)

    def _out_of_order(self, options: dict, max_concurrency: int) -> bool:
        """Whether calls may run ahead of earlier ones still waiting for
        their arguments: Ray's default for async and threaded actors (which
        cannot run in order), ``allow_out_of_order_execution`` otherwise."""
        allowed = options.get("allow_out_of_order_execution")
        if allowed is None:
            return self._is_asyncio or max_concurrency > 1
        if not allowed and self._is_asyncio:
            raise ValueError(
                f"The actor {self._cls.__name__} is async: its calls cannot run in "
                f"order. Leave allow_out_of_order_execution unset or set it to True.")
        if not allowed and max_concurrency > 1:
            raise ValueError(
                f"The actor {self._cls.__name__} has max_concurrency="
                f"{max_concurrency}: its calls cannot run in order. Leave "
                f"allow_out_of_order_execution unset or set it to True.")
        return allowed


class _BoundActorClass:
    def __init__(self, actor_class: ActorClass, options: dict):
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._actor_class._create(args, kwargs, self._options)

    def bind(self, *args, **kwargs):
        return self._actor_class._bind(args, kwargs, self._options)


def _validate_actor_options(options: dict) -> None:
    validate_options(options, ACTOR_OPTIONS, "actors", option_rules.ACTOR)
    if options.get("name") == "":
        raise ValueError("Actor name cannot be an empty string.")
    namespace = options.get("namespace")
    if namespace is not None:
        if not isinstance(namespace, str):
            raise TypeError(f"The namespace option must be a string, "
                            f"got {type(namespace).__name__}")
        if not namespace:
            raise ValueError("The namespace option must not be an empty string")
    lifetime = options.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError("actor `lifetime` argument must be one of 'detached', "
                         f"'non_detached' and 'None', got {lifetime!r}")
    concurrency = options.get("max_concurrency")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ValueError(f"max_concurrency must be a positive integer, got {concurrency!r}")
    pending = options.get("max_pending_calls")
    if pending is not None and (not isinstance(pending, int) or pending == 0
                                or pending < -1):
        raise ValueError(f"max_pending_calls must be -1 or a positive integer, "
                         f"got {pending!r}")
    groups = options.get("concurrency_groups")
    if groups is not None and not (isinstance(groups, dict) and all(
            isinstance(k, str) and isinstance(v, int) and v > 0
            for k, v in groups.items())):
        raise ValueError("concurrency_groups must map group names to positive integers")
    if options.get("get_if_exists") and not options.get("name"):
        raise ValueError("The actor name must be specified to use `get_if_exists`.")


class ActorHandle:
    """A handle to an actor: call ``handle.method.remote(...)``."""

    def __init__(self, actor_id: ActorID, meta: dict, class_name: str, owner,
                 max_pending_calls: int = -1, *, out_of_order: bool = False,
                 _count: bool = True):
        from miniray.core_worker import object_ref
        self._actor_id = actor_id
        self._max_pending_calls = max_pending_calls
        self._out_of_order = out_of_order
        self._meta = meta
        self._class_name = class_name
        self._owner = owner
        self._handle_id = handle_object_id(actor_id)
        self._worker = object_ref.core_worker() if _count else None
        if self._worker is not None:
            self._worker.add_local_ref(self._handle_id, owner)

    @classmethod
    def _from_info(cls, info) -> "ActorHandle":
        from miniray.common.address import WorkerAddress
        return cls(ActorID(info.actor_id), pickle.loads(info.class_meta),
                   info.class_name, WorkerAddress.from_proto(info.owner),
                   info.max_pending_calls, out_of_order=info.execute_out_of_order)

    def __del__(self):
        worker = self.__dict__.get("_worker")
        if worker is not None:
            worker.remove_local_ref(self._handle_id)

    def __getattr__(self, name: str) -> "ActorMethod":
        meta = self.__dict__.get("_meta")
        if meta is None or name not in meta:
            raise AttributeError(
                f"'{self.__dict__.get('_class_name', 'Actor')}' object has no "
                f"attribute '{name}'")
        return ActorMethod(self, name, meta[name])

    def __dir__(self):
        # As in Ray: the actor's methods (for autocompletion).
        return sorted({"__init__", *self._meta})

    def __repr__(self):
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __hash__(self):
        return hash(self._actor_id)

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __reduce__(self):
        note_nested_ref(RefInfo(self._handle_id, self._owner))
        owner = self._owner
        return _rebuild_handle, (bytes(self._actor_id), self._meta, self._class_name,
                                 owner.ip, owner.port, bytes(owner.worker_id),
                                 bytes(owner.node_id), self._max_pending_calls,
                                 self._out_of_order)


def _rebuild_handle(actor_id, meta, class_name, ip, port, worker_id, node_id,
                    max_pending_calls, out_of_order=False):
    from miniray.common.address import WorkerAddress
    from miniray.common.ids import NodeID, WorkerID
    return ActorHandle(ActorID(actor_id), meta, class_name,
                       WorkerAddress(ip, port, WorkerID(worker_id), NodeID(node_id)),
                       max_pending_calls, out_of_order=out_of_order)


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, meta: dict, options=None):
        self._handle = handle
        self._name = name
        self._meta = meta
        self._options = options or {}

    def __call__(self, *args, **kwargs):
        raise TypeError("Actor methods cannot be called directly. Instead of running "
                        f"'object.{self._name}()', try 'object.{self._name}.remote()'.")

    def options(self, **options) -> "ActorMethod":
        check_method_options(options)
        return ActorMethod(self._handle, self._name, self._meta,
                           {**self._options, **options})

    def _remote(self, args=None, kwargs=None, **options):
        """Ray's spelling of ``.options(**options).remote(*args, **kwargs)``."""
        bound = self.options(**options) if options else self
        return bound.remote(*(args or ()), **(kwargs or {}))

    def bind(self, *args, **kwargs):
        """A ClassMethodNode of a lazy task graph (``miniray.dag``): this
        actor's method is called each time the graph is executed."""
        from miniray.dag.class_node import PARENT_CLASS_NODE_KEY, ClassMethodNode
        _check_call(self._meta.get("signature"), args, kwargs,
                    f"{self._handle._class_name}.{self._name}")
        return ClassMethodNode(self._name, args, kwargs, dict(self._options),
                               {PARENT_CLASS_NODE_KEY: self._handle})

    def remote(self, *args, **kwargs):
        from miniray import api
        from miniray.protocol import common_pb2
        _check_call(self._meta.get("signature"), args, kwargs,
                    f"{self._handle._class_name}.{self._name}")
        worker = api.ensure_initialized()
        handle = self._handle
        if handle._worker is not None and handle._worker is not worker:
            # Made before a shutdown(): this connection never knew the actor.
            raise ValueError(
                f"Failed to submit a task to actor {handle._actor_id.hex()}: it was "
                f"made in an earlier session (before shutdown() and init()). Can't "
                f"find actor {handle._actor_id.hex()}. It might be dead or it's from "
                f"a different cluster.")
        worker.actor_submitter.check_pending_limit(handle._actor_id,
                                                   handle._max_pending_calls)
        num_returns = self._options.get("num_returns")
        if num_returns is None:
            num_returns = self._meta["num_returns"]
        spec = common_pb2.TaskSpec(
            type=common_pb2.ACTOR_TASK, actor_id=handle._actor_id,
            method_name=self._name, execute_out_of_order=handle._out_of_order,
            function_name=self._options.get("name") or f"{handle._class_name}.{self._name}",
            concurrency_group=self._options.get(
                "concurrency_group", self._meta["concurrency_group"]))
        retry = self._options.get("retry_exceptions",
                                  self._meta.get("retry_exceptions", False))
        if retry:
            spec.retry_exceptions = True
            if isinstance(retry, (list, tuple)):
                spec.retry_exception_types = cloudpickle.dumps(tuple(retry))
        retries = self._options.get("max_task_retries", self._meta.get("max_task_retries"))
        if retries is not None:              # else the actor's max_task_retries
            spec.max_retries = retries
            spec.method_max_retries = True
        # The call holds the handle: the actor lives until it has run, even
        # if the caller drops its handle right away (`A.remote().f.remote()`).
        return unpack_returns(worker.submit_task(
            spec, args, kwargs, *submit_counts(num_returns),
            holds=RefInfo(handle._handle_id, handle._owner)), num_returns)


class _ActorExit(SystemExit):
    """Raised by exit_actor() in a sync actor method."""


def exit_actor() -> None:
    """Intentionally exit the current actor (from inside one of its methods)."""
    from miniray.core_worker import object_ref
    from miniray.exceptions import AsyncioActorExit
    worker = object_ref.core_worker()
    if worker is None or worker.executor is None or worker.executor.actor is None:
        raise TypeError("exit_actor API is called on a non-actor worker. Call this "
                        "API inside an actor method if you'd like to exit the actor "
                        "gracefully.")
    worker.executor.actor.should_exit = True
    if worker.executor.actor.in_event_loop():
        raise AsyncioActorExit()
    raise _ActorExit(0)
