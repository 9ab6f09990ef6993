"""Many runs of one cell at initialization, compiled once per shape.

Runs that differ only in seeds or in scalar init options (``weight_scale``,
``bias_scale``, ``forget_bias``, ...) share one compiled call; those
options become array axes (vmapped on GPU/TPU; on CPU a ``lax.map`` over the
runs; ``run_batching`` says which and how to choose). With several devices, or several processes
(``gradflow.engine.processes``), each device computes its slice of the run axis (``engine.devices``)
and every process gets the whole result. Pure: returns arrays, never prints or writes.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import cells
from gradflow.config import DISTRIBUTIONS, LOSSES
from gradflow.config import Inputs as Inputs  # one definition: the config's inputs section
from gradflow.engine import devices, rng
from gradflow.measure.fit import DecayFit, decay_fit
from gradflow.measure.flow import gradient_flow

DYNAMIC_OPTIONS = ("weight_scale", "bias_scale", "input_scale", "forget_bias", "update_bias", "alpha")


class SweepResult(NamedTuple):
    """Per-run results, leading axis R (runs in the order given).

    ``log10_norms``: ``{carry part: [R, T+1]}`` (parts named 'h', or 'c'/'h'
    for an LSTM, else pytree paths); ``rate``, ``half_life``, ``r2``: ``{part: [R]}``
    and ``total_*`` the same over all parts; ``nonfinite_step: [R]``.
    """

    log10_norms: dict
    total_log10_norms: np.ndarray
    rate: dict
    half_life: dict
    r2: dict
    total_rate: np.ndarray
    total_half_life: np.ndarray
    total_r2: np.ndarray
    nonfinite_step: np.ndarray


def carry_part_names(cell_name: str, carry) -> list[str]:
    """Readable names of the carry leaves: 'h', 'c'/'h' for an LSTM, else pytree paths."""
    paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(carry)]
    if len(paths) == 1 and not paths[0]:
        return ["h"]
    if cell_name == "lstm":
        return [("c", "h", "gates")[p[0].idx] for p in paths]
    return [jax.tree_util.keystr(p) for p in paths]


def _loss(kind: str, batch: int):
    if kind == "final":
        return lambda ys, carry: sum(jnp.sum(c) for c in jax.tree_util.tree_leaves(carry)) / batch
    if kind == "every_step":
        return lambda ys, carry: sum(jnp.sum(y**2) for y in jax.tree_util.tree_leaves(ys)) / batch

    def readout(ys, carry):
        total = 0.0
        for i, y in enumerate(jax.tree_util.tree_leaves(ys)):
            w = jax.random.normal(jax.random.key(1000 + i), (y.shape[-1], 1), y.dtype) / y.shape[-1] ** 0.5
            total = total + jnp.sum((y[-1] @ w - 1.0) ** 2)
        return total / batch

    return readout


def _draw(key, shape, distribution, scale, dtype):
    if distribution == "normal":
        return scale * jax.random.normal(key, shape, dtype)
    if distribution == "uniform":
        return jax.random.uniform(key, shape, dtype, -scale, scale)
    return jnp.zeros(shape, dtype)


#: A group whose estimated work (``_group_flops``) is under this many FLOPs compiles at XLA:CPU's
#: optimization level 0: it compiles in about half the time and runs 2-4x slower, a net gain below
#: ~1 GFLOP (compare_cells' groups: 0.1-0.6 GFLOP, 0.1-0.5 s of compile saved each; tiny ones only
#: ever compile). Its numbers differ from level 2's at float32 rounding (ULPs of a log10 norm).
CHEAP_FLOPS = 1e9


def compiler_options(flops: float) -> dict:
    """XLA options for a measurement of ``flops`` estimated work: level 0 when cheap on CPU, else {}."""
    if jax.default_backend() == "cpu" and flops < CHEAP_FLOPS:
        return {"xla_backend_optimization_level": 0}
    return {}


def _group_flops(cell_name, options: dict, inputs: Inputs, runs: int) -> float:
    """Estimated FLOPs of ``runs`` measurements: 6 per parameter, example and step (forward and
    backward multiply-adds) over the steps the parameters are applied."""
    cell = cells.get(cell_name, **options)
    input_size = None if cell.params_per_step else inputs.size
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), input_size))
    n = sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(shapes))
    steps = 1 if cell.params_per_step else inputs.steps
    return 6.0 * float(n) * inputs.batch * steps * runs


@functools.lru_cache(maxsize=64)
def _compiled(cell_name, static_items, dynamic_names, inputs: Inputs, loss, fit_window, mode, options=()):
    """One jitted measurement over R runs per static signature (lru: compile once); ``options``:
    XLA compiler options as sorted items. Returns the log10 norms; the fits come after (``_fits``)."""
    static = dict(static_items)
    batch_loss = _loss(loss, inputs.batch)

    def one(seed, dynamic):
        cell = cells.get(cell_name, **static, **dict(zip(dynamic_names, dynamic, strict=True)))
        k_init, k_x, k_h = jax.random.split(rng.key(seed), 3)
        if cell.params_per_step:
            params = cell.init(k_init, None)
            width = jax.tree_util.tree_leaves(params)[0].shape[-1]
            dtype = jax.tree_util.tree_leaves(params)[0].dtype
            # the stack's input is its carry: never all zeros
            dist = "normal" if inputs.distribution == "zeros" else inputs.distribution
            carry0 = _draw(k_h, (inputs.batch, width), dist, inputs.scale or 1.0, dtype)
            xs = None
        else:
            params = cell.init(k_init, inputs.size)
            carry0 = cell.initial_carry(inputs.batch)
            dtype = jax.tree_util.tree_leaves(carry0)[0].dtype
            xs = _draw(
                k_x, (inputs.steps, inputs.batch, inputs.size), inputs.distribution, inputs.scale, dtype
            )
            if cell_name == "bidirectional":
                xs = cells.bidirectional_xs(xs)
        # the fit comes after, outside (fit_window only checked here)
        res = gradient_flow(cell, params, carry0, xs, batch_loss, fit_window=fit_window, step_shares=False)
        return res.log10_norms, res.total_log10_norms, res.nonfinite_step

    group = over_runs(one, mode)
    group.__name__ = group.__qualname__ = f"measure_{cell_name}"  # names the program in profiles
    return devices.over_devices(group, 2, compiler_options=dict(options))


def _fits(rows: list[np.ndarray], window) -> list[DecayFit]:
    """``decay_fit`` of every row of each ``[R, T+1]`` array, on the host (float64, nothing to compile)."""
    return [decay_fit(np.asarray(r), window, xp=np) for r in rows]


BATCHINGS = ("auto", "map", "vmap")
_BATCHING: contextvars.ContextVar[str | None] = contextvars.ContextVar("gradflow_run_batching", default=None)


def run_batching() -> str:
    """How the runs of one compiled call are batched: ``'map'`` or ``'vmap'``.

    Chosen by ``batching(mode)`` around the call, else the ``GRADFLOW_RUN_BATCHING`` environment
    variable, else ``'auto'``: ``'map'`` (``lax.map``, the runs one after another inside one
    compiled call) on CPU, ``'vmap'`` (all runs at once) on GPU/TPU.

    Why not vmap on CPU: on XLA:CPU (jaxlib 0.10.2) the vmapped sweep hung intermittently (the
    completion event of the call never fired, every worker thread idle: about 1 call in 8 under
    load; 0 in 50 with ``lax.map``), and on a few cores ``lax.map`` is also faster
    (lstm_forget_bias: 4.0 s vs 7.1 s). Both give the same numbers to float32 rounding (tested).
    """
    mode = _BATCHING.get() or os.environ.get("GRADFLOW_RUN_BATCHING") or "auto"
    if mode not in BATCHINGS:
        raise ValueError(
            f"run batching {mode!r}: expected one of {', '.join(BATCHINGS)} (GRADFLOW_RUN_BATCHING)"
        )
    if mode == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return mode


@contextlib.contextmanager
def batching(mode: str):
    """Batch the runs of the sweeps and training groups compiled inside the block with ``mode``
    (``'auto'``, ``'map'`` or ``'vmap'``; see ``run_batching``).

    Example::

        with batching("vmap"):
            res, _ = measure_runs("rnn", options, seeds)
    """
    if mode not in BATCHINGS:
        raise ValueError(f"run batching {mode!r}: expected one of {', '.join(BATCHINGS)}")
    token = _BATCHING.set(mode)
    try:
        yield
    finally:
        _BATCHING.reset(token)


MEMORY_FRACTION = 0.5  # vmap: the runs computed at once may use this fraction of a device's memory


def over_runs(one, mode: str | None = None):
    """``f(*args)`` over a leading run axis ``[R]`` of every argument's leaves: ``lax.map`` or
    ``vmap`` of ``one`` (``mode``, default ``run_batching()``); used by the sweep and by training's
    groups. ``vmap`` takes as many runs at once as fit in ``MEMORY_FRACTION`` of the device's memory
    (one run's need from XLA's memory analysis of its compiled program), the next batch after them
    (``lax.map`` with ``batch_size``): a 12,288-run phase diagram of 125 MB runs does not fit at once."""
    if (mode or run_batching()) == "map":
        return lambda *args: jax.lax.map(lambda run: one(*run), args)

    def batched(*args):
        n = jax.tree_util.tree_leaves(args)[0].shape[0]
        k = runs_at_once(one, args)
        if k >= n:
            return jax.vmap(one)(*args)
        return jax.lax.map(lambda run: one(*run), args, batch_size=k)

    return batched


def device_memory() -> int | None:
    """Bytes a program may use on this process's first device (None where JAX does not say, e.g. CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def run_bytes(one, args) -> int:
    """Bytes one run of ``one`` needs (arguments, outputs and temporaries of its compiled program;
    ``args`` with a leading run axis give the shapes)."""
    single = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), args)
    mem = jax.jit(one).lower(*single).compile().memory_analysis()
    fields = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
    return int(sum(getattr(mem, f, 0) or 0 for f in fields))


def runs_at_once(one, args) -> int:
    """How many runs of ``one`` (args with a leading run axis) fit in ``MEMORY_FRACTION`` of
    ``device_memory()``; all of them when the device does not say."""
    n = jax.tree_util.tree_leaves(args)[0].shape[0]
    limit = device_memory()
    if not limit:
        return n
    need = run_bytes(one, args)
    return int(max(1, min(n, MEMORY_FRACTION * limit // max(need, 1))))


def measure_runs(
    cell_name: str,
    options: list[dict],
    seeds: list[int],
    inputs: Inputs | None = None,
    *,
    loss: str = "final",
    fit_window: tuple[int, int] | None = None,
) -> tuple[SweepResult, int]:
    """Measure ``gradient_flow`` at init for R runs: ``options[r]`` with seed ``seeds[r]``.

    Args:
      cell_name: a name from ``gradflow.cells.names()``.
      options: R dicts of cell options (the size option included).
      seeds: R ints; run r uses ``jax.random.key(seeds[r])``.
      inputs: input shape and distribution, shared by all runs (default ``Inputs()``).
      loss: 'final' (sum of the final carry), 'every_step' (sum of y_t^2),
        'readout' (squared error of a fixed linear readout of y_T).
      fit_window: ``(k_min, k_max)`` steps back for the decay fit.

    Returns:
      ``(SweepResult, n_compiles)``: n_compiles is the number of distinct
      compiled calls (static signatures), not of runs.

    Example::

        res, n = measure_runs("rnn", [{"hidden_size": 64, "weight_scale": s} for s in (0.5, 1, 2)],
                              [0, 0, 0], Inputs(steps=200))
    """
    inputs = Inputs() if inputs is None else inputs
    plan = _plan(cell_name, options, seeds, inputs, loss, fit_window)
    window = None if fit_window is None else tuple(int(k) for k in fit_window)
    rows: dict = {}
    for fn, runs, seed_arr, dyn_arr in plan:
        program = _program(fn, *dyn_arr.shape).result()
        log10_norms, total_log10_norms, nonfinite_step = devices.call(program, seed_arr, dyn_arr)
        leaves = jax.tree_util.tree_leaves(log10_norms)
        *fits, total_fit = _fits([*leaves, total_log10_norms], window)
        columns = {
            "total_log10_norms": total_log10_norms,
            "total_rate": total_fit.rate,
            "total_half_life": total_fit.half_life,
            "total_r2": total_fit.r2,
            "nonfinite_step": nonfinite_step,
        }
        for i, leaf in enumerate(leaves):
            columns[("log10_norms", i)] = leaf
            for field in ("rate", "half_life", "r2"):
                columns[(field, i)] = getattr(fits[i], field)
        for name, values in columns.items():
            values = np.asarray(values)
            rows.setdefault(name, np.zeros((len(options), *values.shape[1:]), values.dtype))[runs] = values
    carry = jax.eval_shape(lambda: cells.get(cell_name, **options[0]).initial_carry(1))
    parts = carry_part_names(cell_name, carry)
    per_part = lambda field: {p: rows[(field, i)] for i, p in enumerate(parts)}  # noqa: E731
    result = SweepResult(
        log10_norms=per_part("log10_norms"),
        total_log10_norms=rows["total_log10_norms"],
        rate=per_part("rate"),
        half_life=per_part("half_life"),
        r2=per_part("r2"),
        total_rate=rows["total_rate"],
        total_half_life=rows["total_half_life"],
        total_r2=rows["total_r2"],
        nonfinite_step=rows["nonfinite_step"],
    )
    return result, len(plan)


def _plan(cell_name, options, seeds, inputs, loss, fit_window) -> list:
    """Check the arguments of ``measure_runs`` and group its runs by static signature:
    ``[(jitted program, run indices, seeds [R] uint32, dynamic options [R, D] float32)]``."""
    if len(options) != len(seeds) or not options:
        raise ValueError(f"need one seed per run: got {len(options)} option sets and {len(seeds)} seeds")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {list(LOSSES)}")
    if inputs.distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {inputs.distribution!r}; choose from {list(DISTRIBUTIONS)}")
    groups: dict = {}
    for r, opts in enumerate(options):
        dynamic = tuple(sorted(k for k in opts if k in DYNAMIC_OPTIONS and opts[k] is not None))
        static = tuple(sorted((k, v) for k, v in opts.items() if k not in dynamic))
        groups.setdefault((static, dynamic), []).append(r)
    window = None if fit_window is None else tuple(int(k) for k in fit_window)
    plan = []
    for (static, dynamic), runs in groups.items():
        xla = compiler_options(_group_flops(cell_name, options[runs[0]], inputs, len(runs)))
        xla = tuple(sorted(xla.items()))
        fn = _compiled(cell_name, static, dynamic, inputs, loss, window, run_batching(), xla)
        seed_arr = np.asarray([seeds[r] for r in runs], np.uint32)
        dyn_arr = np.asarray([[float(options[r][k]) for k in dynamic] for r in runs], np.float32)
        plan.append((fn, runs, seed_arr, dyn_arr.reshape(len(runs), len(dynamic))))
    return plan


@functools.lru_cache(maxsize=16)
def _program(fn, runs: int, n_dynamic: int):
    """The future compiled program of ``fn`` for ``runs`` runs (``devices.compile_ahead``)."""
    return devices.compile_ahead(fn, np.zeros(runs, np.uint32), np.zeros((runs, n_dynamic), np.float32))


def prepare(
    cell_name: str,
    options: list[dict],
    seeds: list[int],
    inputs: Inputs | None = None,
    *,
    loss: str = "final",
    fit_window: tuple[int, int] | None = None,
) -> None:
    """Start compiling what ``measure_runs`` with these arguments will run: traced and lowered now,
    XLA's compile on a background thread (``devices.compile_ahead``). A caller that knows its next
    groups prepares them before measuring the current one, so that their compiles overlap; the
    later ``measure_runs`` waits for its program. Errors are raised by ``measure_runs``, not here."""
    try:
        plan = _plan(cell_name, options, seeds, Inputs() if inputs is None else inputs, loss, fit_window)
    except ValueError:
        return
    for fn, _, _, dyn_arr in plan:
        _program(fn, *dyn_arr.shape)
