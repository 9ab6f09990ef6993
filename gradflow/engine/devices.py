"""The run axis over every device of every process: one mesh, one ``shard_map`` per compiled group.

A group's runs are independent, so each device computes its own slice of the run axis (``over_runs``
inside ``jax.shard_map``: no collective inside the program) and the results are gathered afterwards,
so that every process holds the whole result. With one device this is a plain ``jax.jit``. The run
axis is padded to a multiple of the device count by repeating the last run; the padding is sliced
off again.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

RUNS = "runs"


def mesh() -> Mesh:
    """A 1-D mesh named ``'runs'`` over ``jax.devices()`` (every device of every process)."""
    return Mesh(np.array(jax.devices()), (RUNS,))


def over_devices(fn, n_sharded: int, n_replicated: int = 0, compiler_options: dict | None = None):
    """``jax.jit`` of ``fn(*sharded, *replicated)``: the first ``n_sharded`` arguments (and every
    output) carry the run axis ``[R]`` first, split over the devices; the others (scalars such as a
    step counter) are the same everywhere. One device: ``jax.jit(fn)``. ``compiler_options``: XLA
    options for the compile (``jax.jit``'s)."""
    options = compiler_options or None
    if jax.device_count() == 1:
        return jax.jit(fn, compiler_options=options)
    runs, same = PartitionSpec(RUNS), PartitionSpec()
    specs = (runs,) * n_sharded + (same,) * n_replicated
    return jax.jit(
        jax.shard_map(fn, mesh=mesh(), in_specs=specs, out_specs=runs, check_vma=False),
        compiler_options=options,
    )


def padded(n: int) -> int:
    """``n`` runs rounded up to a multiple of the device count."""
    return n + (-n) % jax.device_count()


def pad(tree, n: int):
    """Host arrays ``[R, ...]`` padded to ``[n, ...]`` by repeating the last run."""

    def one(a):
        a = np.asarray(a)
        return np.concatenate([a, np.repeat(a[-1:], n - a.shape[0], axis=0)]) if n > a.shape[0] else a

    return jax.tree_util.tree_map(one, tree)


def place(tree):
    """Host arrays ``[R, ...]`` (``R`` a multiple of the device count, the same on every process)
    as arrays split over the run axis of every device; one device: ``jax.device_put``."""
    if jax.device_count() == 1:
        return jax.device_put(tree)
    sharding = NamedSharding(mesh(), PartitionSpec(RUNS))

    def one(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree_util.tree_map(one, tree)


def gather(tree, n: int | None = None):
    """Arrays split over the run axis as host arrays on every process, the first ``n`` runs."""
    if jax.process_count() > 1:
        tree = multihost_utils.process_allgather(tree, tiled=True)
    host = jax.device_get(tree)
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[:n] if n is not None else np.asarray(a), host)


#: XLA compiles on this many background threads (``compile_ahead``). An XLA:CPU compile keeps about
#: 1.5 cores busy: on 2 cores, 2 threads gained nothing over 1 (compare_cells, cold).
COMPILE_THREADS = max(1, min(4, (os.cpu_count() or 2) // 2))


@functools.lru_cache(maxsize=1)
def _compile_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(COMPILE_THREADS, thread_name_prefix="gradflow-compile")


def compile_ahead(fn, *sharded, replicated=()) -> concurrent.futures.Future:
    """Trace and lower ``fn`` (from ``over_devices``) for these host arrays ``[R]`` now, and start
    XLA's compile on a background thread (``COMPILE_THREADS``); returns its future, whose result is
    the compiled program, to give ``call`` in place of ``fn``. Compiles run beside the caller's
    tracing of the next program and beside each other: XLA releases the GIL. An error in tracing or
    lowering is raised by the future's ``result()``, where the call would have raised it."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    try:
        n = jax.tree_util.tree_leaves(sharded)[0].shape[0]
        lowered = fn.lower(*place(pad(sharded, padded(n))), *replicated)
    except Exception as err:  # handed to whoever waits for the program
        future.set_exception(err)
        return future
    return _compile_pool().submit(lowered.compile)


def call(fn, *sharded, replicated=()):
    """``fn`` (from ``over_devices``, or its compiled program from ``compile_ahead``) on host arrays
    with a run axis ``[R]``; host results ``[R]``."""
    n = jax.tree_util.tree_leaves(sharded)[0].shape[0]
    args = place(pad(sharded, padded(n)))
    return gather(fn(*args, *replicated), n)
