"""A first miniray program: tasks, objects, errors and a large array.

Run it with:  python examples/quickstart.py
(unchanged, it also runs on Ray if you replace the import.)
"""
import time

import numpy as np

import miniray as ray

start = time.perf_counter()
ray.init()
print(f"cluster started in {time.perf_counter() - start:.2f}s "
      f"with {ray.cluster_resources()['CPU']:.0f} CPUs")


@ray.remote
def square(x):
    return x * x


# Tasks run in parallel worker processes; get() waits for their results.
print("squares:", ray.get([square.remote(i) for i in range(10)]))


# ObjectRefs can be passed to other tasks without fetching the values.
@ray.remote
def add(a, b):
    return a + b


print("chained:", ray.get(add.remote(square.remote(3), square.remote(4))))

# Large objects live in shared memory and come back without a copy.
matrix = np.random.default_rng(0).random((2000, 2000))
ref = ray.put(matrix)


@ray.remote
def trace(m):
    return float(np.trace(m))


print(f"trace computed remotely: {ray.get(trace.remote(ref)):.3f}")
print("zero-copy read-only view:", not ray.get(ref).flags.writeable)


# Errors raised in tasks are re-raised by get(), as the original type.
@ray.remote
def divide(a, b):
    return a / b


try:
    ray.get(divide.remote(1, 0))
except ZeroDivisionError as error:
    print("caught:", type(error).__name__)


# Generators stream their values back as they are produced.
@ray.remote
def countdown(n):
    for i in range(n, 0, -1):
        yield i


print("streamed:", [ray.get(r) for r in countdown.remote(5)])
ray.shutdown()
