"""``as_completed`` and ``map_unordered``: consume task results as they finish
(Ray's ``ray.util.as_completed`` / ``ray.util.map_unordered``, alpha there).

Both are generators over ``ray.wait``: each round waits for up to
``chunk_size`` refs and yields their values (or the refs themselves with
``yield_obj_refs=True``). Within a round, values come in the order the refs
were given, as ``ray.wait`` keeps it. Extra keyword arguments
(``timeout``, ``fetch_local``) go to every ``ray.wait``; a round that times
out yields what is ready and the next round waits again.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Sequence

import miniray as ray

__all__ = ["as_completed", "map_unordered"]

DEFAULT_CHUNK_SIZE = 10
DEFAULT_BACKPRESSURE_SIZE = 100


def as_completed(refs: Sequence, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 yield_obj_refs: bool = False, **kwargs) -> Iterator[Any]:
    """Yields the values of ``refs`` as soon as batches of them are ready.

    Args:
        refs: the object refs to wait for.
        chunk_size: ``num_returns`` of each ``ray.wait``: values are handed
            out once that many are ready (or all that are left).
        yield_obj_refs: yield the ready refs instead of their values.
        **kwargs: passed to ``ray.wait`` (``timeout``, ``fetch_local``).

    Raises (on first iteration):
        ValueError: ``chunk_size`` < 1, or ``num_returns`` was passed.
        Exception: what a task raised, when its value is reached.
    """
    _check_options(chunk_size, kwargs)
    pending = list(refs)
    while pending:
        ready, pending = _next_batch(pending, chunk_size, kwargs)
        yield from ready if yield_obj_refs else ray.get(ready)


def map_unordered(fn, items: Iterable, *,
                  backpressure_size: Optional[int] = DEFAULT_BACKPRESSURE_SIZE,
                  chunk_size: int = DEFAULT_CHUNK_SIZE, yield_obj_refs: bool = False,
                  **kwargs) -> Iterator[Any]:
    """Runs ``fn.remote(item)`` for each item; yields results as they finish.

    At most ``backpressure_size`` tasks are in flight: on reaching it, the
    generator waits for a batch of ``chunk_size`` results and yields them
    before submitting more. So ``items`` is read lazily, as results are
    consumed.

    Args:
        fn: a remote function of one argument.
        items: the arguments, one task each.
        backpressure_size: most tasks in flight; ``None``: no limit.
        chunk_size: ``num_returns`` of each ``ray.wait``.
        yield_obj_refs: yield refs instead of values.
        **kwargs: passed to ``ray.wait`` (``timeout``, ``fetch_local``).

    Raises (on first iteration):
        ValueError: ``backpressure_size`` <= 0, ``chunk_size`` < 1, or
            ``num_returns`` was passed.
    """
    if backpressure_size is not None and backpressure_size <= 0:
        raise ValueError("backpressure_size must be positive.")
    _check_options(chunk_size, kwargs)
    in_flight: list = []
    for item in items:
        in_flight.append(fn.remote(item))
        if backpressure_size is not None and len(in_flight) >= backpressure_size:
            ready, in_flight = _next_batch(in_flight, chunk_size, kwargs)
            yield from ready if yield_obj_refs else ray.get(ready)
    yield from as_completed(in_flight, chunk_size=chunk_size,
                            yield_obj_refs=yield_obj_refs, **kwargs)


def _check_options(chunk_size: int, wait_kwargs: dict) -> None:
    if chunk_size < 1:
        raise ValueError("`chunk_size` must be >= 1")
    if "num_returns" in wait_kwargs:
        raise ValueError("Use the `chunk_size` argument instead of `num_returns`.")


def _next_batch(refs: list, chunk_size: int, wait_kwargs: dict) -> tuple:
    """``ray.wait`` for up to ``chunk_size`` of ``refs``: (ready, not ready)."""
    return ray.wait(refs, num_returns=min(chunk_size, len(refs)), **wait_kwargs)
