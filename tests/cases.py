"""Every cell gradflow ships, at small sizes, with inputs, and the brute-force reference for per-step
gradient norms: shared by the tests."""

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import cells

B, I, H, T = 3, 4, 5, 6


def _perturbed(params, key, scale=0.3):
    """Give every parameter (biases, peepholes too) a generic random value."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)]
    return jax.tree_util.tree_unflatten(tree, leaves)


CELLS = {
    "rnn-tanh": lambda dt: cells.get("rnn", hidden_size=H, dtype=dt),
    "rnn-relu": lambda dt: cells.get("rnn", hidden_size=H, activation="relu", dtype=dt),
    "rnn-sigmoid": lambda dt: cells.get("rnn", hidden_size=H, activation="sigmoid", dtype=dt),
    "lstm": lambda dt: cells.get("lstm", hidden_size=H, dtype=dt),
    "lstm-peephole": lambda dt: cells.get("lstm", hidden_size=H, peephole=True, dtype=dt),
    "lstm-nig": lambda dt: cells.get("lstm", hidden_size=H, input_gate=False, dtype=dt),
    "lstm-nfg": lambda dt: cells.get("lstm", hidden_size=H, forget_gate=False, dtype=dt),
    "lstm-nog": lambda dt: cells.get("lstm", hidden_size=H, output_gate=False, dtype=dt),
    "lstm-niaf": lambda dt: cells.get("lstm", hidden_size=H, input_activation=False, dtype=dt),
    "lstm-noaf": lambda dt: cells.get("lstm", hidden_size=H, output_activation=False, dtype=dt),
    "lstm-cifg": lambda dt: cells.get("lstm", hidden_size=H, coupled=True, dtype=dt),
    "lstm-fgr": lambda dt: cells.get("lstm", hidden_size=H, gate_recurrence=True, dtype=dt),
    "gru": lambda dt: cells.get("gru", hidden_size=H, dtype=dt),
    "mgu": lambda dt: cells.get("mgu", hidden_size=H, dtype=dt),
    "mgu-noreset": lambda dt: cells.get("mgu", hidden_size=H, reset_gate=False, dtype=dt),
    "residual": lambda dt: cells.get("residual", width=H, depth=T, dtype=dt),
    "residual-layernorm": lambda dt: cells.get("residual", width=H, depth=T, norm="layer", dtype=dt),
    "plain": lambda dt: cells.get("plain", width=H, depth=T, activation="relu", dtype=dt),
    "plain-batchnorm": lambda dt: cells.get("plain", width=H, depth=T, norm="batch", dtype=dt),
    "stacked-gru-lstm": lambda dt: cells.stacked(
        [cells.get("gru", hidden_size=H, dtype=dt), cells.get("lstm", hidden_size=H + 1, dtype=dt)]
    ),
    "bidirectional-lstm": lambda dt: cells.get("bidirectional", hidden_size=H, cell_options={"dtype": dt}),
}


def make(name, dtype="float64", seed=0):
    """``(cell, params, carry0, xs)`` with generic (non-zero) values everywhere."""
    cell = CELLS[name](dtype)
    k_p, k_c, k_x, k_q = jax.random.split(jax.random.key(seed), 4)
    dt = jnp.dtype(dtype)
    if cell.params_per_step:
        params = _perturbed(cell.init(k_p, H), k_q)
        carry0 = jax.random.normal(k_c, (B, H), dt)
        return cell, params, carry0, None
    params = _perturbed(cell.init(k_p, I), k_q)
    carry0 = _perturbed(cell.initial_carry(B), k_c, scale=0.5)
    xs = jax.random.normal(k_x, (T, B, I), dt)
    if name.startswith("bidirectional"):
        xs = cells.bidirectional_xs(xs)
    return cell, params, carry0, xs


def readout_loss(ys, carry):
    """A loss on every step's output and on the final carry (all leaves)."""
    y_leaves = jax.tree_util.tree_leaves(ys)
    c_leaves = jax.tree_util.tree_leaves(carry)
    per_step = sum(jnp.sum(jnp.sin(y) * jnp.arange(1, y.shape[0] + 1)[:, None, None]) for y in y_leaves)
    return per_step + sum(jnp.sum(jnp.cos(c) ** 2) for c in c_leaves)


def final_loss(ys, carry):
    return sum(
        jnp.sum(jnp.tanh(c) * (1 + jnp.arange(c.size).reshape(c.shape) % 3))
        for c in jax.tree_util.tree_leaves(carry)
    )


def every_step_loss(ys, carry):
    return sum(jnp.sum(y**2) for y in jax.tree_util.tree_leaves(ys))


def linear_readout_loss(ys, carry):
    """Squared error of a fixed linear readout of the last output."""
    total = 0.0
    for i, y in enumerate(jax.tree_util.tree_leaves(ys)):
        readout = jax.random.normal(jax.random.key(10 + i), (y.shape[-1], 2), y.dtype)
        total = total + jnp.sum((y[-1] @ readout - 1.0) ** 2)
    return total


LOSSES = {
    "final": final_loss,
    "every_step": every_step_loss,
    "readout": linear_readout_loss,
    "mixed": readout_loss,
}


def brute_force_log10_norms(cell, params, carry0, xs, loss_fn):
    """One jax.grad per t (vmapped over t): the gradient w.r.t. a zero perturbation of h_t."""
    length = jax.tree_util.tree_leaves(params if xs is None else xs)[0].shape[0]

    def loss_with_eps(eps, t):
        def body(carry, inp):
            s, p_s, x = inp
            carry = jax.tree_util.tree_map(lambda c, e: c + (s == t) * e, carry, eps)
            return cell.step(params if p_s is None else p_s, carry, x)

        stacked = params if cell.params_per_step else None
        carry, ys = jax.lax.scan(body, carry0, (jnp.arange(length), stacked, xs))
        carry = jax.tree_util.tree_map(lambda c, e: c + (t == length) * e, carry, eps)
        return loss_fn(ys, carry)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, carry0)
    grads = jax.jit(jax.vmap(jax.grad(loss_with_eps), in_axes=(None, 0)))(zeros, jnp.arange(length + 1))
    norm = lambda g: np.sqrt(np.sum(np.square(np.asarray(g)), axis=tuple(range(1, g.ndim))))  # noqa: E731
    with np.errstate(divide="ignore"):  # an exactly zero gradient is -inf
        return jax.tree_util.tree_map(lambda g: np.log10(norm(g)), grads)
