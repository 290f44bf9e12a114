"""@miniray.remote on a function: RemoteFunction, its options and .remote()."""
from __future__ import annotations

import functools
import inspect

import cloudpickle

from miniray import option_rules
from miniray.common import config
from miniray.common.resources import validate_request
from miniray.common.validation import MAX_NUM_RETURNS, InvalidArgument, check_amount
from miniray.core_worker.function_manager import module_name
from miniray.protocol import common_pb2
from miniray.util.scheduling_strategies import bundle_request, check_fits_bundles

# Ray's task options. The ones marked "accepted" are taken for compatibility
# and have no effect on a single node yet.
TASK_OPTIONS = {
    "num_cpus", "num_gpus", "resources", "memory", "num_returns", "max_retries",
    "retry_exceptions", "name", "scheduling_strategy",
    "placement_group", "placement_group_bundle_index",        # Ray's older form
    "placement_group_capture_child_tasks",
    "max_calls",
    "runtime_env", "accelerator_type", "label_selector",  # accepted
    "_metadata", "object_store_memory",
    "enable_task_events", "fallback_strategy", "_labels",
}


def validate_options(options: dict, valid: set, kind: str,
                     rules: dict = option_rules.TASK) -> None:
    for key in options:
        if key not in valid:
            raise ValueError(
                f"Invalid option keyword {key} for {kind}. "
                f"Valid ones are {sorted(valid)}.")
    option_rules.check(options, rules)          # Ray's types and values, Ray's words
    option_rules.warn_deprecated(options, for_actor=rules is option_rules.ACTOR)
    for key in ("num_cpus", "num_gpus", "memory", "object_store_memory"):
        value = options.get(key)
        if value is not None:
            try:
                check_amount(key, value, what="option")
            except InvalidArgument:
                raise ValueError(f"The {key} option must be a finite, non-negative "
                                 f"number, got {value!r}") from None
    resources = options.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            raise ValueError(f"The resources option must be a dict, got {resources!r}")
        for reserved in ("CPU", "GPU"):
            if reserved in resources:
                raise ValueError(
                    f"Use the 'num_{reserved.lower()}s' option instead of "
                    f"'{reserved}' in 'resources'")
        validate_request(resources)
    num_returns = options.get("num_returns")
    if isinstance(num_returns, int) and num_returns > MAX_NUM_RETURNS:
        raise ValueError(f"The num_returns option must be at most {MAX_NUM_RETURNS}, "
                         f"got {num_returns!r}")
    if isinstance(num_returns, str) and num_returns not in ("streaming", "dynamic"):
        raise ValueError(option_rules.TASK["num_returns"].value(-1))
    if "scheduling_strategy" in options or "placement_group" in options:
        from miniray.util.scheduling_strategies import to_proto
        to_proto(explicit_strategy(options))        # raises ValueError if bad
    if options.get("runtime_env") is not None:
        from miniray.runtime_env.runtime_env import validate
        # Checked once, where it is given; kept in its canonical form (a pip
        # requirements file is read here, on the caller's machine).
        options["runtime_env"] = validate(options["runtime_env"])


@functools.lru_cache(maxsize=4096)
def _signature(function) -> inspect.Signature | None:
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):     # some builtins and C callables
        return None


def check_arguments(function, args, kwargs, name: str) -> None:
    """As in Ray, a call whose arguments do not fit the function's signature
    fails at ``.remote()`` with TypeError, not later in the worker."""
    bind_or_raise(_signature(function), args, kwargs, name)


def bind_or_raise(signature: inspect.Signature | None, args, kwargs, name: str) -> None:
    """TypeError naming ``name`` if the arguments don't fit (None: unknown)."""
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{name}(): {exc}") from None


def submit_counts(num_returns) -> tuple[int, bool, bool]:
    """num_returns option -> (return objects, streaming, dynamic)."""
    if num_returns == "streaming":
        return 0, True, False
    if num_returns == "dynamic":        # one return: the DynamicObjectRefGenerator
        return 1, False, True
    return num_returns, False, False


def unpack_returns(result, num_returns):
    """What ``.remote()`` returns: a generator, one ref, None or a list."""
    if num_returns == "streaming":
        return result
    if num_returns in (1, "dynamic"):
        return result[0]
    return None if num_returns == 0 else result


def explicit_strategy(options: dict):
    """The strategy the options name: ``scheduling_strategy``, or Ray's older
    ``placement_group=`` / ``placement_group_bundle_index=`` /
    ``placement_group_capture_child_tasks=`` options; None if neither."""
    from miniray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    strategy = options.get("scheduling_strategy")
    group = options.get("placement_group", "default")
    if group in ("default", None):
        index = options.get("placement_group_bundle_index", -1)
        if index != -1:
            raise ValueError(f"placement_group_bundle_index={index!r} needs a placement "
                             f"group: without one, the bundle index must be -1.")
        return strategy
    if strategy is not None:
        raise ValueError("The placement_group option and scheduling_strategy "
                         "cannot both be set; use scheduling_strategy="
                         "PlacementGroupSchedulingStrategy(...)")
    return PlacementGroupSchedulingStrategy(
        group, options.get("placement_group_bundle_index", -1),
        options.get("placement_group_capture_child_tasks"))


def scheduling_strategy(options: dict, worker=None):
    """The strategy proto; tasks started inside a placement group that
    captures child tasks default to that group."""
    from miniray.util.scheduling_strategies import to_proto
    strategy = explicit_strategy(options)
    if strategy is None and worker is not None and _inherits(options, worker):
        context = worker.task_context
        kinds = type(context.placement_group)
        return kinds(kind=kinds.PLACEMENT_GROUP, bundle_index=-1,
                     placement_group_id=context.placement_group.placement_group_id,
                     capture_child_tasks=True)
    return to_proto(strategy)


def _inherits(options: dict, worker) -> bool:
    """Does a call with these options run in the caller's placement group?"""
    # placement_group=None (Ray's older option) opts out, as in Ray.
    if options.get("scheduling_strategy") is not None or \
            options.get("placement_group", "default") != "default":
        return False
    if options.get("placement_group_capture_child_tasks") is False:
        return False
    return worker.task_context.capture_child_tasks


def resource_request(options: dict, default_cpus: float) -> dict:
    request = {"CPU": options.get("num_cpus", default_cpus)}
    if options.get("num_gpus"):
        request["GPU"] = options["num_gpus"]
    if options.get("memory"):
        request["memory"] = options["memory"]
    request.update(options.get("resources") or {})
    return {k: float(v) for k, v in request.items() if v}


def _check_streaming(function, options: dict) -> None:
    """As in Ray: num_returns="streaming" needs a generator function."""
    if options.get("num_returns") == "streaming" and not (
            inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)):
        raise ValueError(
            f"num_returns='streaming' can only be used with generator functions "
            f"(functions that use 'yield'); {function.__name__} is not one")


class RemoteFunction:
    def __init__(self, function, options: dict):
        validate_options(options, TASK_OPTIONS, "remote functions")
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            # As in Ray: tasks are synchronous; async code belongs in actors.
            raise ValueError(
                f"'async def' should not be used for remote tasks ({function.__name__}). "
                "You can wrap the async function with `asyncio.run(f())`, or make it "
                "a method of an async actor.")
        _check_streaming(function, options)
        if (options.get("num_gpus") or 0) > 0 and options.get("max_calls") is None:
            # As in Ray: a GPU function's worker exits after each call, so
            # the GPU memory it may hold goes back (Ray's issue 29624).
            options = {**options, "max_calls": 1}
        self._function = function
        self._options = options
        self._name = function.__name__
        self._qualified = f"{function.__module__}.{function.__name__}"
        self._descriptor = f"{module_name(function)}.{function.__name__}"
        self._is_generator = inspect.isgeneratorfunction(function)
        self._pickled = None          # (FunctionID, bytes), made on first use
        self._template = None         # (core worker, TaskSpec) for self._options
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__
        self.__wrapped__ = function

    def __getstate__(self):
        return {**self.__dict__, "_template": None}     # per process, not pickled

    def __call__(self, *args, **kwargs):
        raise TypeError(
            "Remote functions cannot be called directly. Instead of running "
            f"'{self._qualified}()', try '{self._qualified}.remote()'.")

    def options(self, **options) -> "_BoundOptions":
        validate_options(options, TASK_OPTIONS, "remote functions")
        if "max_calls" in options:
            raise ValueError("Setting 'max_calls' is not supported in '.options()'.")
        _check_streaming(self._function, options)
        # max_calls belongs to the function (every call honours the
        # decorator's); as in Ray, the merged options do not list it.
        merged = {**self._options, **options}
        merged.pop("max_calls", None)
        return _BoundOptions(self, merged)

    def remote(self, *args, **kwargs):
        return self._submit(args, kwargs, self._options, self)

    def _remote(self, args=None, kwargs=None, **options):
        """Ray's spelling of ``.options(**options).remote(*args, **kwargs)``."""
        bound = self.options(**options) if options else self
        return bound.remote(*(args or ()), **(kwargs or {}))

    def bind(self, *args, **kwargs):
        """A FunctionNode of a lazy task graph (``miniray.dag``): the call
        runs each time the graph is executed, not now."""
        return self._bind(args, kwargs, self._options)

    def _bind(self, args, kwargs, options: dict):
        from miniray.dag.function_node import FunctionNode
        check_arguments(self._function, args, kwargs, self._qualified)
        return FunctionNode(self, args, kwargs, options)

    def _submit(self, args, kwargs, options: dict, holder):
        """Submit a call. ``holder`` (this function, or the object .options()
        returned) caches the spec fields its options fix, per core worker."""
        from miniray import api

        check_arguments(self._function, args, kwargs, self._qualified)
        worker = api.ensure_initialized()
        num_returns = options.get("num_returns")
        if num_returns is None:
            num_returns = "streaming" if self._is_generator else 1
        # A task inside a placement group that captures children inherits
        # it: then the strategy depends on the caller, so no caching.
        inherits = _inherits(options, worker)
        cached = holder._template
        if inherits or cached is None or cached[0] is not worker:
            template = self._make_template(options, worker)
            holder._template = None if inherits else (worker, template)
        else:
            template = cached[1]
        spec = common_pb2.TaskSpec()
        spec.CopyFrom(template)
        return unpack_returns(worker.submit_task(
            spec, args, kwargs, *submit_counts(num_returns)), num_returns)

    def _make_template(self, options: dict, worker):
        """The parts of the spec that only depend on the options (and on the
        caller's placement group), with the function exported."""
        from miniray.core_worker.function_manager import pickle_function
        if self._pickled is None:
            self._pickled = pickle_function(self._function)
        function_id, pickled = self._pickled
        worker.functions.export(function_id, pickled, self._qualified)
        retry = options.get("retry_exceptions", False)
        strategy = scheduling_strategy(options, worker)
        check_fits_bundles(resource_request(options, 1), explicit_strategy(options),
                           self._qualified)
        return common_pb2.TaskSpec(
            type=common_pb2.NORMAL_TASK, function_id=function_id,
            function_name=options.get("name") or self._name,
            resources=bundle_request(resource_request(options, 1), strategy),
            max_retries=options.get("max_retries", config.DEFAULT_MAX_RETRIES),
            retry_exceptions=bool(retry),
            retry_exception_types=cloudpickle.dumps(tuple(retry))
            if isinstance(retry, (list, tuple)) else b"",
            name=options.get("name") or "",
            scheduling_strategy=strategy, max_calls=self._options.get("max_calls") or 0,
            function_descriptor=self._descriptor,
            runtime_env=worker.task_runtime_env(options.get("runtime_env")))


class _BoundOptions:
    """What ``f.options(...)`` returns: call ``.remote()`` on it."""

    def __init__(self, function: RemoteFunction, options: dict):
        self._function = function
        self._options = options
        self._template = None

    def __getstate__(self):
        return {**self.__dict__, "_template": None}

    def remote(self, *args, **kwargs):
        return self._function._submit(args, kwargs, self._options, self)

    def bind(self, *args, **kwargs):
        return self._function._bind(args, kwargs, self._options)
