"""Resource shapes and their arithmetic, as plain dicts name -> amount."""
from __future__ import annotations

import re
from typing import Mapping

from miniray.common.validation import (
    MAX_RESOURCE_NAME_LENGTH, check_amount, check_name)

Resources = dict[str, float]
_EPS = 1e-9

# Resources whose instances have ids, as Ray has them (GPU and the
# accelerators it treats as unit instances): a lease holds specific ids of
# these (GPU 0, GPU 1, ...), not just an amount.
ACCELERATOR_RESOURCES = ("GPU", "neuron_cores", "TPU", "NPU", "HPU")

# Names a reserved placement group bundle exposes (see bundle_resources).
_BUNDLE_INDEXED = re.compile(r"^(.+)_group_(\d+)_([0-9a-zA-Z]+)$")
_BUNDLE_WILDCARD = re.compile(r"^(.+)_group_([0-9a-zA-Z]+)$")


def fits(request: Mapping[str, float], available: Mapping[str, float]) -> bool:
    return all(available.get(k, 0.0) + _EPS >= v for k, v in request.items() if v > 0)


def subtract(available: Resources, request: Mapping[str, float]) -> None:
    for k, v in request.items():
        if v:
            available[k] = available.get(k, 0.0) - v


def add(available: Resources, request: Mapping[str, float]) -> None:
    for k, v in request.items():
        if v:
            available[k] = available.get(k, 0.0) + v


def shape_key(request: Mapping[str, float]) -> tuple:
    """A hashable key for a resource shape (zero amounts dropped)."""
    return tuple(sorted((k, float(v)) for k, v in request.items() if v))


# Names miniray uses itself, as Ray reserves them (its kBundle_ResourceLabel).
RESERVED_NAMES = frozenset({"bundle"})


def validate_request(resources: Mapping[str, float]) -> None:
    """Reject negative, NaN, infinite, absurd (validation.MAX_RESOURCE_AMOUNT)
    or fractional-above-one amounts, as Ray does."""
    for name, amount in resources.items():
        if not isinstance(name, str):
            raise ValueError(f"resource names must be strings, got {name!r}")
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} is a reserved resource name (placement "
                             f"group bundles use it); choose another name")
        check_name(name, "a resource name", allow_empty=False,
                   max_length=MAX_RESOURCE_NAME_LENGTH, printable=True)
        check_amount(name, amount)
        if amount > 1 and not (isinstance(amount, int) or amount.is_integer()):
            raise ValueError(
                f"resource {name!r}: amounts above 1 must be whole numbers, "
                f"got {amount!r}")


def bundle_resources(pg_id: bytes, index: int, resources: Mapping[str, float]) -> Resources:
    """The resources a reserved bundle exposes, named as Ray names them:
    ``GPU_group_<index>_<pg>`` (this bundle) and ``GPU_group_<pg>`` (any
    bundle of the group), plus ``bundle_group_...`` markers."""
    suffix = pg_id.hex()
    exposed = {"bundle_group_" + suffix: 1000.0, f"bundle_group_{index}_{suffix}": 1000.0}
    for name, amount in resources.items():
        exposed[f"{name}_group_{suffix}"] = amount
        exposed[f"{name}_group_{index}_{suffix}"] = amount
    return exposed


def parse_bundle_name(name: str) -> tuple[str, int | None]:
    """The resource a bundle name stands for and its bundle index:
    ("GPU", 0) for ``GPU_group_0_<pg>``, ("GPU", -1) for ``GPU_group_<pg>``,
    (name, None) for a name that is not a bundle's."""
    match = _BUNDLE_INDEXED.match(name)
    if match:
        return match.group(1), int(match.group(2))
    match = _BUNDLE_WILDCARD.match(name)
    if match:
        return match.group(1), -1
    return name, None
