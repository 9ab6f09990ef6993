"""Training runs of a group in one compiled step, recording the gradient flow while they learn.

One jit-compiled train step serves all runs of a group (seeds, and settings that share shapes:
learning rate, clipping threshold and scalar init options such as ``forget_bias`` are per-run array
values): a ``vmap`` over the runs on GPU/TPU, a ``lax.map`` on CPU (see ``sweep.over_runs``), each
device (of every process, ``engine.processes``) running its slice of the runs. The
step's gradient comes from ``gradient_flow``, so the per-step norms ``||dL/dh_t||`` of the training
loss are a by-product of every update; every ``eval_every`` steps they are kept, with the held-out
loss and gate statistics.

Example::

    task = gradflow.tasks.get("adding", steps=50)
    model = gradflow.Model(gradflow.cells.get("lstm", hidden_size=32), task.output_size)
    res = gradflow.train(model, task, seeds=[0, 1], steps=500, learning_rate=3e-3)
    res.eval_loss[:, -1] / task.baseline      # [2]: final held-out loss relative to the baseline
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from gradflow.engine import devices, processes
from gradflow.engine.train_group import EVAL_KEY as EVAL_KEY
from gradflow.engine.train_group import Hyper, _carry_parts, _Group, _host_float
from gradflow.learn import depth as _depth
from gradflow.learn.checkpoint import checkpoint_from_bytes, save_checkpoint
from gradflow.learn.models import Model as Model
from gradflow.learn.models import check_depth_model
from gradflow.learn.optim import OPTIMIZERS as OPTIMIZERS
from gradflow.learn.optim import SCHEDULES as SCHEDULES
from gradflow.learn.optim import Settings as Settings
from gradflow.learn.optim import check_settings as check_settings
from gradflow.learn.optim import optimizer as optimizer
from gradflow.learn.tasks import Task

PyTree = Any
SPIKE_FACTOR = 2.0  # a training loss above SPIKE_FACTOR x baseline counts as a spike


def loss_spikes(train_loss: np.ndarray, baseline: float) -> int:
    """Steps whose training loss exceeds ``SPIKE_FACTOR x baseline`` after the loss first went below
    the baseline (the untrained readout's first steps do not count); ``train_loss: [steps]``."""
    loss = np.asarray(train_loss, np.float64)
    below = np.flatnonzero(loss < baseline)
    if below.size == 0:
        return 0
    return int(np.sum(loss[below[0] :] > SPIKE_FACTOR * baseline))


class TrainResult(NamedTuple):
    """Histories of R runs (leading axis R, runs in the order given).

    * ``train_loss``, ``grad_norm`` (global norm before clipping), ``clipped`` (bool): ``[R, steps]``;
      NaN / False after a run stopped (solved with early stop, or diverged).
    * ``eval_step: [E]``: the steps 0, K, 2K, ... where the held-out set was scored (before that step's
      update), ``eval_loss``, ``eval_accuracy`` (NaN for regression): ``[R, E]``. Once every run has
      stopped the loop ends; the params no longer change, so the last evaluation is carried forward.
    * ``flow_log10: {carry part: [R, E, T+1]}``, ``flow_total_log10: [R, E, T+1]``: log10
      ``||dL/dh_t||`` of the training loss at step ``eval_step[e]`` (depth stacks: ``[R, E, L+1]``,
      ``||dL/dx_l||`` per layer); ``flow_rate``, ``flow_half_life``, ``flow_r2: [R, E]``: its decay
      fit (ln per step).
    * ``gates: {'f/mean': [R, E], 'f/high': ..., 'f/low': ...}``: per gate, the mean over held-out steps,
      examples and units, and the fraction above 0.9 / below 0.1 (LSTM i, f, o; GRU r, z; MGU f).
    * ``solved_step``, ``diverged_step``: ``[R]`` (-1: never); ``steps_run: [R]`` updates applied.
    * ``param_count``: trainable scalars of one run; ``compile_s``; ``step_time_s``: wall time of one
      train step of the whole group (all R runs), median over the chunks run.
    * ``params``: the final params (``Model.init``'s pytree, leaves ``[R, ...]``): the last update of
      each run (a solved run keeps the params it was solved with, a diverged one its last finite ones).
    """

    train_loss: np.ndarray
    grad_norm: np.ndarray
    clipped: np.ndarray
    eval_step: np.ndarray
    eval_loss: np.ndarray
    eval_accuracy: np.ndarray
    flow_log10: dict
    flow_total_log10: np.ndarray
    flow_rate: np.ndarray
    flow_half_life: np.ndarray
    flow_r2: np.ndarray
    gates: dict
    solved_step: np.ndarray
    diverged_step: np.ndarray
    steps_run: np.ndarray
    param_count: int
    compile_s: float
    step_time_s: float
    params: PyTree = None


def train_runs(
    make_model: Callable[[dict], Model],
    task: Task,
    settings: Settings,
    runs: Sequence[Mapping[str, Any]],
    *,
    option_names: Sequence[str] = (),
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train R runs that share shapes together: one compiled step for all of them.

    Args:
      make_model: ``{option: value} -> Model`` for the scalar options in ``option_names`` (traced
        inside the step: they may only set values, not shapes).
      task: a ``gradflow.tasks.Task``.
      settings: ``Settings`` shared by all runs.
      runs: R mappings with ``seed`` (int), ``learning_rate`` (float), ``clip`` (float or None: off)
        and ``options`` (``{name: float}`` for ``option_names``).
      checkpoint: a file; the group's state and histories are saved there every ``checkpoint_every``
        steps (a multiple of ``eval_every``; default: every ``eval_every``) and, if it exists, training
        resumes from it (the result is bit-for-bit the uninterrupted one).
      progress: ``progress(step, steps)`` after each chunk of ``eval_every`` steps.
      should_stop: polled after each chunk; True saves the checkpoint and raises ``KeyboardInterrupt``.

    Returns:
      ``TrainResult``.
    """
    s = settings
    check_settings(s)
    if not runs:
        raise ValueError("train_runs: no runs given")
    names = tuple(option_names)
    hyper = Hyper(
        seed=np.asarray([int(r["seed"]) for r in runs], np.uint32),
        learning_rate=np.asarray([float(r["learning_rate"]) for r in runs], _host_float()),
        clip=np.asarray([np.inf if r.get("clip") is None else float(r["clip"]) for r in runs], _host_float()),
        options=np.asarray(
            [[float(r.get("options", {})[n]) for n in names] for r in runs], np.float32
        ).reshape(len(runs), len(names)),
    )
    group = _Group(make_model, names, task, s)
    probe = group.model(np.zeros(len(names), np.float32))
    if probe.cell.params_per_step:
        check_depth_model(probe, task)
    parts = _carry_parts(probe)
    K, R, E = s.eval_every, len(runs), s.steps // s.eval_every + 1
    every = K if checkpoint_every is None else int(checkpoint_every)
    if every < 1 or every % K:
        raise ValueError(f"checkpoint_every ({every}) must be a multiple of eval_every ({K})")

    t0 = time.perf_counter()
    hyper = devices.place(devices.pad(hyper, devices.padded(R)))  # the run axis over every device
    state = group.init(hyper)
    chunk = group.chunk.lower(state, hyper, np.int32(0)).compile()
    evaluate = group.evaluate.lower(state, hyper, np.int32(0)).compile()
    compile_s = time.perf_counter() - t0

    T = _depth.stack_depth(probe.cell) if probe.cell.params_per_step else task.steps  # flow: [T+1]
    hist = {
        "train_loss": np.full((R, s.steps), np.nan, np.float32),
        "grad_norm": np.full((R, s.steps), np.nan, np.float32),
        "clipped": np.zeros((R, s.steps), bool),
        "updated": np.zeros((R, s.steps), bool),
        "eval_loss": np.full((R, E), np.nan, np.float32),
        "eval_accuracy": np.full((R, E), np.nan, np.float32),
        "flow_total_log10": np.full((R, E, T + 1), np.nan, np.float32),
        "flow_rate": np.full((R, E), np.nan, np.float32),
        "flow_half_life": np.full((R, E), np.nan, np.float32),
        "flow_r2": np.full((R, E), np.nan, np.float32),
        "chunk_times": np.zeros((0,), np.float64),
    }
    for p in parts:
        hist[f"flow_log10/{p}"] = np.full((R, E, T + 1), np.nan, np.float32)
    start = 0
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None:  # process 0 reads it; every process resumes from what it read
        saved = processes.share(path.read_bytes() if processes.is_writer() and path.exists() else None)
        if saved:
            start, host_state, hist = checkpoint_from_bytes(saved, devices.gather(state, R), hist)
            state = devices.place(devices.pad(host_state, devices.padded(R)))

    step = start
    while True:
        e = step // K
        state, evaluated = evaluate(state, hyper, np.int32(step))
        loss, acc, gates = devices.gather(evaluated, R)
        hist["eval_loss"][:, e] = loss
        hist["eval_accuracy"][:, e] = acc
        for name, values in gates.items():
            hist.setdefault(f"gates/{name}", np.full((R, E), np.nan, np.float32))[:, e] = values
        if step >= s.steps or not devices.gather(state.active, R).any():
            break
        t_chunk = time.perf_counter()
        state, records, flow = chunk(state, hyper, np.int32(step))
        records = devices.gather(records, R)
        hist["chunk_times"] = np.append(hist["chunk_times"], time.perf_counter() - t_chunk)
        sl = slice(step, step + K)
        for key, values in zip(("train_loss", "grad_norm", "clipped", "updated"), records, strict=False):
            hist[key][:, sl] = values
        log10_parts, total, fit = devices.gather(flow, R)
        was_active = records[4][:, 0]  # the flow is kept for runs active at the chunk's first step
        for p, values in zip(parts, jax.tree_util.tree_leaves(log10_parts), strict=True):
            hist[f"flow_log10/{p}"][was_active, e] = values[was_active]
        hist["flow_total_log10"][was_active, e] = total[was_active]
        for key, values in (("flow_rate", fit.rate), ("flow_half_life", fit.half_life), ("flow_r2", fit.r2)):
            hist[key][was_active, e] = values[was_active]
        step += K
        if progress is not None:
            progress(step, s.steps)
        stop = should_stop is not None and processes.any_process(should_stop())
        if path is not None and (step % every == 0 or stop) and step < s.steps:
            host_state = devices.gather(state, R)  # every process takes part; process 0 writes
            if processes.is_writer():
                save_checkpoint(path, step, host_state, hist)
        if stop:
            raise KeyboardInterrupt(f"stopped at step {step}")

    state = devices.gather(state, R)
    # a stopped run's params no longer change and the held-out set is fixed: its later evaluations
    # would repeat the last one exactly, so the last one is carried forward (not recomputed)
    for key in [k for k in hist if k in ("eval_loss", "eval_accuracy") or k.startswith("gates/")]:
        hist[key] = _carry_forward(hist[key], last=e)
    times = hist.pop("chunk_times")
    flow_log10 = {p: hist.pop(f"flow_log10/{p}") for p in parts}
    gate_stats = {k.split("/", 1)[1]: hist.pop(k) for k in sorted(hist) if k.startswith("gates/")}
    updated = hist.pop("updated")
    n_params = sum(
        math.prod(a.shape)
        for a in jax.tree_util.tree_leaves(
            jax.eval_shape(lambda: probe.init(jax.random.key(0), task.input_size))
        )
    )
    return TrainResult(
        eval_step=np.arange(E) * K,
        flow_log10=flow_log10,
        gates=gate_stats,
        solved_step=np.asarray(state.solved_step),
        diverged_step=np.asarray(state.diverged_step),
        steps_run=updated.sum(axis=1),
        param_count=int(n_params),
        compile_s=float(compile_s),
        step_time_s=float(np.median(times) / K) if len(times) else float("nan"),
        params=state.params,
        **hist,
    )


def _carry_forward(values: np.ndarray, last: int) -> np.ndarray:
    """``values [R, E]``: entries after column ``last`` (not evaluated) take column ``last``'s value."""
    out = values.copy()
    out[:, last + 1 :] = out[:, last : last + 1]
    return out


# -------------------------------------------------------------------------------------------- the API
def train(
    model: Model,
    task: Task,
    *,
    seeds: Sequence[int] = (0,),
    steps: int = 1000,
    batch: int = 32,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    optimizer_options: Mapping[str, Any] | None = None,
    schedule: str | None = None,
    schedule_options: Mapping[str, Any] | None = None,
    clip: float | None = None,
    eval_every: int = 100,
    eval_batch: int = 512,
    solved_fraction: float = 0.1,
    early_stop: bool = True,
    checkpoint: str | Path | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` once per seed, all seeds in one compiled step.

    ``clip``: gradient clipping by global norm (Pascanu et al. 2013), None for off. Every
    ``eval_every`` steps the held-out loss, the gate statistics and the per-step gradient norms of the
    training loss are recorded; a run whose loss or gradient becomes non-finite is marked diverged and
    stops updating (the others go on). See ``TrainResult`` for the shapes.

    Example::

        res = train(Model(cells.get("lstm", hidden_size=32), 1, readout="last"),
                    tasks.get("adding", steps=50), seeds=[0, 1, 2], steps=1000, clip=1.0)
        res.solved_step        # [3], -1 where not solved
    """
    settings = Settings(
        steps=steps,
        batch=batch,
        optimizer=optimizer,
        optimizer_options=dict(optimizer_options or {}),
        schedule=schedule,
        schedule_options=dict(schedule_options or {}),
        eval_every=eval_every,
        eval_batch=eval_batch,
        solved_fraction=solved_fraction,
        early_stop=early_stop,
    )
    runs = [{"seed": s, "learning_rate": learning_rate, "clip": clip} for s in seeds]
    return train_runs(lambda _options: model, task, settings, runs, checkpoint=checkpoint)
