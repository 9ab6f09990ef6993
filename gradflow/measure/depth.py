"""Gradient per layer of depth stacks at init: many (stack, sigma_w, depth L, seed) in one program.

The stacks are ``cells.get("residual")`` and ``cells.get("plain")`` (tanh, width D, ``b = 0``).
The loss is ``<x_L, r>`` with a fixed ``r: [B, D]``; measured is ``log10 ||dL/dx_l||``,
l = 0..L, from ``gradient_flow`` (log space throughout: 1e-30 does not underflow).

One compiled program per (stack kind, norm) covers every depth: the stack has ``L_max`` layers
and the loss reads the layer-L output ``ys[L-1] = x_L``, so layers above L get no gradient and
entries 0..L are those of the depth-L network (L may be traced, hence vmapped). The residual
branch scale ``alpha = 1/sqrt(L)`` of the depth-L stack is folded into the weights: an
``alpha = 1`` cell with ``W * alpha`` is, with ``b = 0``, the same function as
``cells.get("residual", depth=L)``. Every variant and depth reads one shared weight draw per seed
(common random numbers: stacks differ by architecture, not by the draw). Random draws use JAX's
``rbg`` PRNG (threefry's compile costs ~1 s per shape on a laptop CPU).

Example::

    variants = {"residual": ("residual", None, 1.0), "plain": ("plain", None, 1.0)}
    layers = stack_gradients(width=32, batch=32, seeds=3, depths=(10, 50), variants=variants)
    ratios = input_output_log10_ratios(layers, (10, 50))   # {label: [2, 3]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import cells
from gradflow.measure.flow import gradient_flow
from gradflow.seam import Cell


def rbg_key(seed: int) -> jax.Array:
    """A PRNG key of the ``rbg`` implementation (fast to compile on CPU)."""
    return jax.random.key(seed, impl="rbg")


def padded_stack(kind: str, width: int, depth: int, norm: str | None) -> Cell:
    """``depth`` layers of ``kind`` ('residual' or 'plain') with ``norm`` (None, 'batch', 'layer');
    residual with ``alpha = 1`` (the branch scale goes into the weights, see ``padded_params``)."""
    if kind == "residual":
        return cells.get("residual", width=width, depth=depth, norm=norm, alpha=1.0)
    return cells.get("plain", width=width, depth=depth, norm=norm)


def shared_params(width: int, depth: int, key: jax.Array) -> dict:
    """One draw of stack weights shared by every variant: ``cells.get("plain")``'s init at
    ``weight_scale = 1``: ``w: [depth, D, D] ~ N(0, 1/D)``, ``b: [depth, D] = 0``."""
    return cells.get("plain", width=width, depth=depth).init(key, width)


def padded_params(cell: Cell, kind: str, sigma_w, depth, base: Mapping) -> dict:
    """``cell``'s params on the shared draw ``base``: ``w * sigma_w`` (residual:
    ``w * sigma_w / sqrt(depth)``, the depth-scaled branch of a depth-``depth`` stack), ``b`` from
    ``base``, norm scale/shift from ``cell.init`` (ones/zeros). ``sigma_w``, ``depth`` may be traced."""
    params = dict(cell.init(rbg_key(0), base["w"].shape[-1]))
    scale = sigma_w / jnp.sqrt(depth) if kind == "residual" else sigma_w
    return {**params, "w": base["w"] * scale, "b": base["b"]}


def _pick_loss(ys, final_carry, lp):
    """``<x_L, r>``: ``ys[l - 1] = x_l``, ``lp["pick"]`` is one-hot on layer L."""
    del final_carry
    return jnp.sum(jnp.tensordot(lp["pick"], ys, axes=1) * lp["r"])


def layer_log10_norms(cell: Cell, params, x0: jax.Array, r: jax.Array, depth) -> jax.Array:
    """``[L_max + 1]``: ``log10 ||dL/dx_l||``, l = 0..L_max, for the loss ``<x_depth, r>`` on a stack
    of ``L_max >= depth`` layers (``x0, r: [B, D]``; ``depth`` may be traced). Entry ``depth`` is
    ``log10 ||r||`` (``dL/dx_L = r``); entries above it (layers the loss does not read) are NaN."""
    lmax = jax.tree_util.tree_leaves(params)[0].shape[0]
    pick = (jnp.arange(lmax) == depth - 1).astype(x0.dtype)
    res = gradient_flow(
        cell, params, x0, None, _pick_loss, step_shares=False, loss_params={"pick": pick, "r": r}
    )
    layer = jnp.arange(lmax + 1)
    log10 = jnp.where(layer == depth, 0.5 * jnp.log10(jnp.sum(r * r)), res.total_log10_norms)
    return jnp.where(layer > depth, jnp.nan, log10)


def stack_gradients(
    width: int,
    batch: int,
    seeds: int,
    depths: Sequence[int],
    variants: Mapping[str, tuple[str, str | None, float]],
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-layer ``log10 ||dL/dx_l||`` at init of each variant ``{label: (kind, norm, sigma_w)}``:
    ``{label: [len(depths), seeds, max(depths) + 1]}`` float64, NaN above each L; one compiled
    program for all variants, depths and seeds. ``x_0``, then ``r: [batch, width] ~ N(0, 1)`` from
    numpy's ``default_rng(seed)``; the weights of seed s are entry s of ``shared_params`` vmapped
    over ``split(rbg_key(seed), seeds)`` (rbg draws under ``vmap`` differ from unbatched ones)."""
    lmax, n_d = max(depths), len(depths)
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((batch, width)).astype(np.float32)
    r = rng.standard_normal((batch, width)).astype(np.float32)
    groups: dict = {}
    for label, (kind, norm, _) in variants.items():
        groups.setdefault((kind, norm), []).append(label)

    @jax.jit
    def run_all(keys, x0, r):
        base = jax.vmap(lambda k: shared_params(width, lmax, k))(keys)
        out = {}
        for (kind, norm), labels in groups.items():
            cell = padded_stack(kind, width, lmax, norm)
            n = len(labels) * n_d * seeds  # flat grid (variant, depth, seed)
            sw = jnp.repeat(jnp.array([variants[lb][2] for lb in labels], jnp.float32), n_d * seeds)
            dep = jnp.tile(jnp.repeat(jnp.array(depths, jnp.int32), seeds), len(labels))
            seed_of = jnp.asarray(np.arange(n) % seeds)

            def one(sigma_w, depth, s, cell=cell, kind=kind):
                base_s = jax.tree_util.tree_map(lambda a: a[s], base)
                params = padded_params(cell, kind, sigma_w, depth, base_s)
                return layer_log10_norms(cell, params, x0, r, depth)

            res = jax.vmap(one)(sw, dep, seed_of).reshape(len(labels), n_d, seeds, lmax + 1)
            out.update({lb: res[i] for i, lb in enumerate(labels)})
        return out

    out = run_all(jax.random.split(rbg_key(seed), seeds), x0, r)
    return {label: np.asarray(out[label], np.float64) for label in variants}


def input_output_log10_ratios(layers: Mapping[str, np.ndarray], depths: Sequence[int]) -> dict:
    """``{label: [len(depths), seeds]}`` of ``log10 ||dL/dx_0|| - log10 ||dL/dx_L||`` from
    ``stack_gradients``' ``{label: [len(depths), seeds, L_max + 1]}``."""
    return {
        label: np.stack([a[i, :, 0] - a[i, :, depth] for i, depth in enumerate(depths)])
        for label, a in layers.items()
    }
