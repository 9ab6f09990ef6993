"""A model to train: a cell (or a depth stack) and a linear readout.

Example::

    model = Model(gradflow.cells.get("lstm", hidden_size=32), output_size=1, readout="last")
    params = model.init(jax.random.key(0), input_size=2)
    outputs = model.apply(params, xs)        # xs: [T, B, I] -> [T, B, O]
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow.cells import bidirectional_xs, bidirectional_ys, dropout_inputs
from gradflow.learn import depth as _depth
from gradflow.learn.tasks import Task
from gradflow.seam import Cell, unroll

PyTree = Any


class Model(NamedTuple):
    """A cell and a linear readout: ``outputs [T, B, O] = y_t W + b``; or a depth stack.

    * ``cell``: any ``Cell``. A depth stack (``residual``, ``plain``: ``params_per_step``) makes a
      feed-forward model for tasks with ``T = 1`` (e.g. ``tasks.get("teacher")``): the input
      projected into the width, the stack over its layers, the readout of the top layer
      (``gradflow.learn.depth``); the recorded flow is then per layer, ``||dL/dx_l||``, l = 0..L.
    * ``output_size``: ``O`` (regression outputs, or classes as logits).
    * ``readout``: ``'every'`` (a prediction at every step) or ``'last'`` (only ``t = T-1``; the other
      steps output 0, so use it with tasks scored at the last step only).
    * ``bidirectional``: the cell is ``cells.bidirectional(...)``: inputs are paired with their time
      reversal and both directions' outputs are aligned in time before the readout.
    * ``dropout``: the cell is ``cells.stacked(..., dropout=p)``: training steps pair the inputs with
      per-step dropout keys (``cells.dropout_inputs``); evaluation runs without dropout.

    * ``projection`` (depth stacks): ``'fixed'`` (``N(0, 1/I)`` from key 0, not trained) or
      ``'learned'`` (``params['projection']['w']: [I, D]``, same init from the run's key).

    Params: ``{'cell': ..., 'readout': {'w': [Y, O], 'b': [O]}}`` (``Y``: the width of ``y``).

    Example::

        model = Model(cells.get("gru", hidden_size=64), output_size=1, readout="last")
        params = model.init(jax.random.key(0), input_size=2)
        outputs = model.apply(params, xs)                   # xs: [T, B, 2] -> [T, B, 1]
    """

    cell: Cell
    output_size: int
    readout: str = "every"
    bidirectional: bool = False
    dropout: bool = False
    projection: str = "fixed"

    def init(self, key: jax.Array, input_size: int) -> dict:
        """Params of the cell (``cell.init``) and of the readout (``N(0, 1/Y)`` weights, zero bias)."""
        k_cell, k_out = jax.random.split(key)
        if self.cell.params_per_step:
            _depth.check_projection(self.projection)
            width = _depth.stack_width(self.cell)
            cell_params = self.cell.init(k_cell, width)
            dtype = jax.tree_util.tree_leaves(cell_params)[0].dtype
            w = jax.random.normal(k_out, (width, self.output_size), dtype) / math.sqrt(width)
            params = {"cell": cell_params, "readout": {"w": w, "b": jnp.zeros((self.output_size,), dtype)}}
            if self.projection == "learned":
                k_proj = jax.random.fold_in(key, 2)
                params["projection"] = {"w": _depth.projection_weights(k_proj, input_size, width, dtype)}
            return params
        cell_params = self.cell.init(k_cell, input_size)
        carry = jax.eval_shape(lambda: self.cell.initial_carry(1))
        dtype = jax.tree_util.tree_leaves(carry)[0].dtype
        x = jax.ShapeDtypeStruct((1, input_size), dtype)
        x = (x, x) if self.bidirectional else x
        _, y = jax.eval_shape(self.cell.step, cell_params, carry, x)
        width = sum(leaf.shape[-1] for leaf in jax.tree_util.tree_leaves(y))
        w = jax.random.normal(k_out, (width, self.output_size), dtype) / math.sqrt(width)
        return {"cell": cell_params, "readout": {"w": w, "b": jnp.zeros((self.output_size,), dtype)}}

    def inputs(self, xs: jax.Array, key: jax.Array | None = None):
        """What the scan reads: ``xs [T, B, I]``, paired with its reversal when bidirectional, with
        per-step dropout keys when ``dropout`` and a ``key`` is given (training)."""
        if self.dropout and key is not None:
            xs = dropout_inputs(xs, key)
        return bidirectional_xs(xs) if self.bidirectional else xs

    def outputs(self, readout: dict, ys) -> jax.Array:
        """``ys`` from the scan -> ``[T, B, O]``."""
        y = bidirectional_ys(ys) if self.bidirectional else ys
        if self.readout == "last":
            last = y[-1] @ readout["w"] + readout["b"]
            return jnp.zeros((y.shape[0], *last.shape), last.dtype).at[-1].set(last)
        return y @ readout["w"] + readout["b"]

    def project(self, params: dict, xs: jax.Array) -> jax.Array:
        """Depth stacks: the input projected into the width, ``[..., I] -> [..., D]``."""
        if "projection" in params:
            return xs @ params["projection"]["w"]
        width = _depth.stack_width(self.cell)
        return xs @ _depth.projection_weights(None, xs.shape[-1], width, xs.dtype)

    def apply(self, params: dict, xs: jax.Array) -> jax.Array:
        """Run the model on ``xs [T, B, I]`` from the zero carry; returns ``[T, B, O]`` (depth stacks:
        each step's inputs through the whole stack, independently)."""
        if self.cell.params_per_step:
            top = jax.vmap(lambda x: unroll(self.cell, params["cell"], x, None)[0])(self.project(params, xs))
            return top @ params["readout"]["w"] + params["readout"]["b"]
        carry0 = self.cell.initial_carry(xs.shape[1])
        _, ys = jax.lax.scan(lambda c, x: self.cell.step(params["cell"], c, x), carry0, self.inputs(xs))
        return self.outputs(params["readout"], ys)


def check_depth_model(model: Model, task: Task) -> None:
    """One-line errors for a depth stack on a task it cannot read."""
    _depth.check_projection(model.projection)
    if task.steps != 1:
        raise ValueError(
            f"train: a depth stack reads one input per example; task {task.name!r} has steps={task.steps}, "
            "expected a feed-forward task with steps=1 (e.g. tasks.get('teacher'))"
        )
    if model.bidirectional or model.dropout:
        raise ValueError("train: bidirectional/dropout apply to recurrent cells, not to a depth stack")
