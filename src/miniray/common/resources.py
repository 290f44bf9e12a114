"""Resource shapes and their arithmetic, as plain dicts name -> amount."""
from __future__ import annotations

import math
from typing import Mapping

Resources = dict[str, float]
_EPS = 1e-9


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


def validate_request(resources: Mapping[str, float]) -> None:
    """Reject negative, NaN or fractional-above-one amounts, as Ray does."""
    for name, amount in resources.items():
        if not isinstance(name, str):
            raise ValueError(f"resource names must be strings, got {name!r}")
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) \
                or math.isnan(amount) or amount < 0:
            raise ValueError(
                f"resource {name!r} must be a non-negative number, got {amount!r}")
        if amount > 1 and not (isinstance(amount, int) or amount.is_integer()):
            raise ValueError(
                f"resource {name!r}: amounts above 1 must be whole numbers, "
                f"got {amount!r}")
