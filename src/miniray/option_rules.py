"""What Ray accepts for each task and actor option, as data: the Python
types an option takes (anything else is a TypeError) and a rule on its
value (a broken rule is a ValueError), worded as Ray words them so code
that matches on Ray's messages keeps working. Pure: no I/O, no runtime.

miniray's own, stricter checks (finite amounts, upper bounds, empty names)
run after these, in remote_function.validate_options and actor.py.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple

_NONE = type(None)
Rule = Callable[[Any], "str | None"]     # the error message, or None if fine


class OptionRule(NamedTuple):
    types: tuple | None            # None: checked elsewhere (strategies, ...)
    value: Rule | None = None


def _counting(name: str, infinite: bool) -> OptionRule:
    """A count: None or an integer >= 0 (>= -1 when -1 means no limit)."""
    if infinite:
        return OptionRule((int, _NONE), lambda v: None if v is None or v >= -1 else (
            f"The keyword '{name}' only accepts None, 0, -1 or a positive integer, "
            "where -1 represents infinity."))
    return OptionRule((int, _NONE), lambda v: None if v is None or v >= 0 else (
        f"The keyword '{name}' only accepts None, 0 or a positive integer."))


# Resource amounts are counted in units of 1/RESOURCE_UNITS (as in Ray).
RESOURCE_UNITS = 10_000


def _quantity_message(name: str, amount) -> str | None:
    if amount < 0:
        return f"The quantity of resource {name} cannot be negative"
    if isinstance(amount, float) and 0.0 < amount < 1.0 / RESOURCE_UNITS:
        return (f"The precision of the fractional quantity of resource {name} cannot "
                "go beyond 0.0001")
    return None


def _quantity(name: str) -> OptionRule:
    return OptionRule((float, int, _NONE),
                      lambda v: None if v is None else _quantity_message(name, v))


def _gpus(amount) -> str | None:
    """A GPU is a whole device: a share of one, or whole ones (as in Ray)."""
    if amount is None:
        return None
    message = _quantity_message("num_gpus", amount)
    if message is None and amount > 1 and not float(amount).is_integer():
        message = (f"GPU resource quantities >1 must be whole numbers. The specified "
                   f"quantity {amount} is invalid.")
    return message


def _resources(resources) -> str | None:
    if resources is None:
        return None
    if "CPU" in resources or "GPU" in resources:
        return ("Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and "
                "'GPU' in 'resources' keyword")
    for name, amount in resources.items():
        if isinstance(amount, (int, float)) and not isinstance(amount, bool):
            message = _quantity_message(name, amount)
            if message:
                return message
    return None


def _num_returns(value) -> str | None:
    if value is None or value in ("dynamic", "streaming") or (
            isinstance(value, int) and value >= 0):
        return None
    return ("The keyword 'num_returns' only accepts None, a non-negative integer, "
            "'streaming' (for generators), or 'dynamic'. When None, it is 1 for a "
            "task or actor task and 'streaming' for generators.")


def _is_exception_class(value) -> bool:
    return isinstance(value, type) and issubclass(value, Exception)


def _retry_exceptions(value) -> str | None:
    if isinstance(value, bool) or all(_is_exception_class(v) for v in value):
        return None
    return "retry_exceptions must be either a boolean or a list of exceptions"


def _lifetime(value) -> str | None:
    if value in (None, "detached", "non_detached"):
        return None
    return ("actor `lifetime` argument must be one of 'detached', 'non_detached' "
            f"and 'None', got {value!r}")


def _not_for_tasks(value) -> str | None:
    return None if value is None else \
        "Setting 'object_store_memory' is not implemented for tasks"


COMMON = {
    "accelerator_type": OptionRule((str, _NONE)),
    "enable_task_events": OptionRule((bool,)),
    "fallback_strategy": OptionRule((list, _NONE)),
    "label_selector": OptionRule((dict, _NONE)),
    "_labels": OptionRule((dict, _NONE)),
    "memory": _quantity("memory"),
    "name": OptionRule((str, _NONE)),
    "num_cpus": _quantity("num_cpus"),
    "num_gpus": OptionRule((float, int, _NONE), _gpus),
    "placement_group": OptionRule(None),
    "placement_group_bundle_index": OptionRule((int,)),
    "placement_group_capture_child_tasks": OptionRule((bool, _NONE)),
    "resources": OptionRule((dict, _NONE), _resources),
    "runtime_env": OptionRule((dict, _NONE)),
    "scheduling_strategy": OptionRule(None),
    "_metadata": OptionRule((dict, _NONE)),
}

TASK = {
    **COMMON,
    "max_calls": _counting("max_calls", infinite=False),
    "max_retries": _counting("max_retries", infinite=True),
    "num_returns": OptionRule((int, str, _NONE), _num_returns),
    "object_store_memory": OptionRule((int, _NONE), _not_for_tasks),
    "retry_exceptions": OptionRule((bool, list, tuple), _retry_exceptions),
}

ACTOR = {
    **COMMON,
    "allow_out_of_order_execution": OptionRule((bool, _NONE)),
    "concurrency_groups": OptionRule((list, dict, _NONE)),
    "get_if_exists": OptionRule((bool,)),
    "lifetime": OptionRule((str, _NONE), _lifetime),
    "max_concurrency": _counting("max_concurrency", infinite=False),
    "max_pending_calls": _counting("max_pending_calls", infinite=True),
    "max_restarts": _counting("max_restarts", infinite=True),
    "max_task_retries": _counting("max_task_retries", infinite=True),
    "namespace": OptionRule((str, _NONE)),
    "object_store_memory": _counting("object_store_memory", infinite=False),
}


def check(options: dict, rules: dict) -> None:
    """Raise TypeError or ValueError, as Ray does, for the first option of
    ``options`` whose type or value its rule refuses. Unknown keys are left
    to the caller (it names what they were given for)."""
    for key, value in options.items():
        rule = rules.get(key)
        if rule is None:
            continue
        if rule.types is not None and not isinstance(value, rule.types):
            shown = rule.types[0] if len(rule.types) == 1 else rule.types
            raise TypeError(f"The type of keyword '{key}' must be {shown}, but "
                            f"received type {type(value)}")
        if rule.value is not None:
            message = rule.value(value)
            if message:
                raise ValueError(message)


def warn_deprecated(options: dict, for_actor: bool) -> None:
    """Ray's deprecation warnings for options it still takes."""
    if options.get("placement_group", "default") != "default":
        warnings.warn("placement_group parameter is deprecated. Use scheduling_strategy="
                      "PlacementGroupSchedulingStrategy(...) instead.",
                      DeprecationWarning, stacklevel=4)
    if options.get("placement_group_bundle_index", -1) != -1:
        warnings.warn("placement_group_bundle_index parameter is deprecated. Use "
                      "scheduling_strategy=PlacementGroupSchedulingStrategy(...) "
                      "instead.", DeprecationWarning, stacklevel=4)
    if options.get("placement_group_capture_child_tasks") is not None:
        warnings.warn("placement_group_capture_child_tasks parameter is deprecated. "
                      "Use scheduling_strategy=PlacementGroupSchedulingStrategy(...) "
                      "instead.", DeprecationWarning, stacklevel=4)
    if for_actor and options.get("object_store_memory") is not None:
        warnings.warn("Setting 'object_store_memory' for actors is deprecated since it "
                      "doesn't actually reserve the required object store memory; "
                      "objects that do not fit are spilled to disk instead.",
                      DeprecationWarning, stacklevel=4)
