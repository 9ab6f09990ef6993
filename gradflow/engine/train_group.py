"""One training group compiled once: every run's init, K train steps and evaluation, batched over
the runs (``over_runs``) and split over the devices (``engine.devices``), with the gradient flow of
every update from ``gradient_flow``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradflow.engine import devices, rng
from gradflow.engine.sweep import carry_part_names, over_runs, run_batching
from gradflow.learn.models import Model
from gradflow.learn.optim import Settings, optimizer
from gradflow.learn.tasks import Task
from gradflow.measure.flow import gradient_flow

PyTree = Any
EVAL_KEY = 0x5EED  # the held-out set: one fixed key for every run, so runs are compared on the same data


class TrainState(NamedTuple):
    """One run's state (leaves gain a leading run axis ``[R]`` in a group).

    ``active``: still updating (not solved with early stop, not diverged); ``solved_step`` /
    ``diverged_step``: the step, -1 if never.
    """

    params: PyTree
    opt_state: PyTree
    active: jax.Array
    solved_step: jax.Array
    diverged_step: jax.Array


class Hyper(NamedTuple):
    """Per-run values of a group: ``seed [R]`` uint32, ``learning_rate [R]``, ``clip [R]`` (inf: off),
    ``options [R, K]`` (scalar cell options, in ``option_names`` order)."""

    seed: jax.Array
    learning_rate: jax.Array
    clip: jax.Array
    options: jax.Array


def _host_float():
    """float64 when JAX has x64 on (float64 models get exact learning rates), else float32."""
    return np.float64 if jax.config.jax_enable_x64 else np.float32


def _as_param_dtype(params, *scalars):
    """Per-run scalars (float64 on the host) in the params' dtype, so updates keep that dtype."""
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    return tuple(jnp.asarray(x).astype(dtype) for x in scalars)


class _Group:
    """The compiled functions of one group: ``init``, ``chunk`` (K train steps) and ``evaluate``."""

    def __init__(self, make_model, option_names, task: Task, settings: Settings):
        self.make_model, self.names, self.task, self.s = make_model, tuple(option_names), task, settings
        self.eval_batch = task.sample(jax.random.key(EVAL_KEY), settings.eval_batch)
        mode = run_batching()  # fixed when the group is built (see sweep.run_batching)
        # each device runs its slice of the runs (engine.devices); the step counter is shared
        self.init = devices.over_devices(over_runs(lambda h: self._init(*h), mode), 1)
        self.chunk = devices.over_devices(
            lambda st, h, start: over_runs(lambda a, b: self._chunk(a, b, start), mode)(st, h), 2, 1
        )
        self.evaluate = devices.over_devices(
            lambda st, h, step: over_runs(lambda a, b: self._evaluate(a, b, step), mode)(st, h), 2, 1
        )

    def model(self, options) -> Model:
        return self.make_model(dict(zip(self.names, options, strict=True)))

    def _init(self, seed, lr, clip, options):
        model = self.model(options)
        params = model.init(jax.random.fold_in(rng.key(seed), 0), self.task.input_size)
        lr, clip = _as_param_dtype(params, lr, clip)
        opt_state = optimizer(self.s, lr, clip).init(params)
        minus = jnp.array(-1, jnp.int32)
        return TrainState(params, opt_state, jnp.array(True), minus, minus)

    def _loss_and_flow(self, model: Model, params, batch, key=None):
        """``(GradientFlow, grads like params)`` of the training loss on ``batch``."""
        if model.cell.params_per_step:
            return self._depth_loss_and_flow(model, params, batch)
        carry0 = model.cell.initial_carry(batch.xs.shape[1])

        def loss_fn(ys, carry, readout):
            del carry
            return self.task.loss(model.outputs(readout, ys), batch)

        res = gradient_flow(
            model.cell.step,
            params["cell"],
            carry0,
            model.inputs(batch.xs, key),
            loss_fn,
            loss_params=params["readout"],
            step_shares=False,
        )
        return res, {"cell": res.grads[0], "readout": res.grads[1]}

    def _depth_loss_and_flow(self, model: Model, params, batch):
        """Depth stacks (``T = 1``): ``gradient_flow`` over the layers from the projected input; a
        learned projection's gradient takes a second backward pass (``jax.grad`` through ``x_0``)."""

        def loss_fn(ys, top, readout):
            del ys
            return self.task.loss((top @ readout["w"] + readout["b"])[None], batch)

        def flow(p):
            x0 = model.project(p, batch.xs[0])
            return gradient_flow(
                model.cell, p["cell"], x0, None, loss_fn, loss_params=p["readout"], step_shares=False
            )

        res = flow(params)
        grads = {"cell": res.grads[0], "readout": res.grads[1]}
        if "projection" in params:
            grads["projection"] = jax.grad(lambda w: flow({**params, "projection": w}).loss)(
                params["projection"]
            )
        return res, grads

    def _chunk(self, state: TrainState, hyper: Hyper, start):
        seed, lr, clip, options = hyper
        model = self.model(options)
        lr, clip = _as_param_dtype(state.params, lr, clip)
        tx = optimizer(self.s, lr, clip)
        k_data = jax.random.fold_in(rng.key(seed), 1)  # JAX's stream, faster programs (engine.rng)

        def body(st: TrainState, i):
            step = start + i
            k_step = jax.random.fold_in(k_data, step)
            batch = self.task.sample(k_step, self.s.batch)
            res, grads = self._loss_and_flow(model, st.params, batch, jax.random.fold_in(k_step, 1))
            g_norm = optax.tree.norm(grads)
            finite = jnp.isfinite(res.loss) & jnp.isfinite(g_norm)
            updates, opt_state = tx.update(grads, st.opt_state, st.params)
            params = optax.apply_updates(st.params, updates)
            go = st.active & finite
            keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(go, a, b), new, old)  # noqa: E731
            diverged = st.active & ~finite
            new = TrainState(
                keep(params, st.params),
                keep(opt_state, st.opt_state),
                st.active & finite,
                st.solved_step,
                jnp.where(diverged, step, st.diverged_step).astype(jnp.int32),
            )
            nan = jnp.array(jnp.nan, res.loss.dtype)
            record = (
                jnp.where(st.active, res.loss, nan),
                jnp.where(st.active, g_norm, nan),
                st.active & (g_norm > clip),
                st.active & finite,
                st.active,
            )
            flow = (res.log10_norms, res.total_log10_norms, res.total_fit)
            return new, (record, flow)

        state, (records, flow) = jax.lax.scan(body, state, jnp.arange(self.s.eval_every))
        first = jax.tree_util.tree_map(lambda a: a[0], flow)  # the flow at step `start`
        return state, records, first

    def _evaluate(self, state: TrainState, hyper: Hyper, step):
        model = self.model(hyper.options)
        batch = self.eval_batch
        outputs = model.apply(state.params, batch.xs)
        metrics = self.task.metrics(outputs, batch)
        loss = metrics["loss"]
        acc = metrics.get("accuracy", jnp.array(jnp.nan, loss.dtype))
        solved_now = (state.solved_step < 0) & (loss <= self.s.solved_fraction * self.task.baseline)
        solved_now = solved_now & (state.diverged_step < 0)
        solved_step = jnp.where(solved_now, step, state.solved_step).astype(jnp.int32)
        active = state.active & ~(solved_now & self.s.early_stop)
        gates = {}
        if model.cell.gates is not None and not model.bidirectional:
            carry0 = model.cell.initial_carry(batch.xs.shape[1])

            def body(carry, x):
                values = model.cell.gates(state.params["cell"], carry, x)
                carry, _ = model.cell.step(state.params["cell"], carry, x)
                return carry, values

            _, values = jax.lax.scan(body, carry0, batch.xs)
            for name, v in values.items():
                gates[f"{name}/mean"] = jnp.mean(v)
                gates[f"{name}/high"] = jnp.mean(v > 0.9)
                gates[f"{name}/low"] = jnp.mean(v < 0.1)
        return state._replace(active=active, solved_step=solved_step), (loss, acc, gates)


def _carry_parts(model: Model) -> list[str]:
    carry = jax.eval_shape(lambda: model.cell.initial_carry(1))
    paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(carry)]
    if len(paths) == 2 and model.cell.gates is not None and [p[0].idx for p in paths] == [0, 1]:
        return ["c", "h"]  # an LSTM's (c, h)
    return carry_part_names("", carry)
